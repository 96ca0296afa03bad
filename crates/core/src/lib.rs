//! The connection state machine of the kitsune2 iroh transport.
//!
//! [`CoreTransport`] implements `kitsune2_api::TxImp` over four small traits
//! ([`Endpoint`], [`Connection`], [`SendStream`], [`RecvStream`]), so that it
//! holds every protocol rule and no iroh type. The `kitsune2-iroh` crate maps
//! iroh onto the traits; the `mem` feature maps an in-process network onto
//! them for tests and fault injection.
//!
//! Frames come from `kitsune2-iroh-codec`; the rules on top of them
//! (handshake order, preflight identity check, simultaneous-open
//! resolution, close codes, which kitsune2 event fires when) live here. See
//! `docs/architecture.md` for the tasks and the connection lifecycle.

mod close;
mod config;
mod conn;
mod error;
#[cfg(feature = "mem")]
pub mod mem;
mod peer_url;
mod registry;
mod traits;
mod transport;

pub use close::{CloseCode, SUPERSEDED_REASON, TRANSPORT_CLOSED_REASON, TRANSPORT_DROPPED_REASON};
pub use config::{CoreConfig, PREFLIGHT_TIMEOUT};
pub use conn::ConnState;
pub use error::CoreError;
pub use peer_url::{PeerAddr, id_to_hex, parse_hex_id};
pub use traits::{
    Connection, DynConnection, DynRecvStream, DynSendStream, Endpoint, EndpointId, RecvStream,
    SendStream, SystemClock, WallClock,
};
pub use transport::{ConnInfo, CoreTransport, DROP_FLUSH_TIMEOUT};
