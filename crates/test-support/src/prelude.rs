//! Everything a test file of the iroh suite needs, for one glob import:
//! this crate's items and the kitsune2, iroh-adapter, std and tokio names
//! the tests use most.

pub use crate::*;
pub use bytes::Bytes;
pub use kitsune2_api::{
    BoxFut, Builder, DynTransport, DynTransportFactory, K2Error, K2Result, SpaceId, Timestamp,
    TxBaseHandler, TxHandler, TxModuleHandler, TxSpaceHandler, Url,
};
pub use kitsune2_iroh::relay::EmbeddedRelay;
pub use kitsune2_iroh::{IrohTransportConfig, IrohTransportFactory, IrohTransportModConfig};
pub use kitsune2_test_utils::space::TEST_SPACE_ID;
pub use std::net::SocketAddr;
pub use std::process::Command;
pub use std::sync::Arc;
pub use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
pub use std::time::Duration;
pub use tokio::sync::{mpsc, watch};
pub use tokio::time::timeout;
