//! Test utilities for integrators (feature `test-utils`), in place of
//! `kitsune2_transport_iroh::test_utils`: the same names, so that tests
//! port by changing the import.
//!
//! - [`IrohTransportTestHarness`]: starts an [`EmbeddedRelay`] on 127.0.0.1
//!   (the incumbent's harness starts a kitsune2 bootstrap server with a
//!   relay) and builds transports with [`IrohTransportFactory`] bound to
//!   127.0.0.1 through a kitsune2 `Builder`, so nothing leaves loopback.
//! - [`MockTxHandler`]: every kitsune2 transport handler method as a
//!   replaceable closure, with the incumbent's field names and defaults.
//! - [`dummy_url`]: the URL a [`MockTxHandler`] reports before it hears one.
//!
//! # Example
//!
//! Two transports on one harness; the receiver's closures report its
//! address and what it receives. Both register the space (kitsune2 drops a
//! message to a space the sender has no handler for).
//!
//! ```
//! use bytes::Bytes;
//! use kitsune2_api::SpaceId;
//! use kitsune2_iroh::test_utils::{IrohTransportTestHarness, MockTxHandler};
//! use std::sync::Arc;
//! use std::time::Duration;
//! use tokio::sync::{mpsc, watch};
//! use tokio::time::timeout;
//!
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() {
//! let harness = IrohTransportTestHarness::new().await;
//! let space = SpaceId::from(Bytes::from_static(&[7; 32]));
//!
//! let (url_tx, mut url_rx) = watch::channel(None);
//! let (recv_tx, mut recv_rx) = mpsc::unbounded_channel();
//! let bob_handler = Arc::new(MockTxHandler {
//!     new_listening_address: Arc::new(move |url| {
//!         url_tx.send_replace(Some(url));
//!     }),
//!     recv_space_notify: Arc::new(move |peer, _space, data| {
//!         let _ = recv_tx.send((peer, data));
//!         Ok(())
//!     }),
//!     ..MockTxHandler::default()
//! });
//! let bob = harness.build_transport(bob_handler.clone()).await;
//! bob.register_space_handler(space.clone(), bob_handler.clone());
//! let alice_handler = Arc::new(MockTxHandler::default());
//! let alice = harness.build_transport(alice_handler.clone()).await;
//! alice.register_space_handler(space.clone(), alice_handler);
//!
//! let bound = Duration::from_secs(30);
//! let bob_url = timeout(bound, url_rx.wait_for(Option::is_some))
//!     .await
//!     .expect("bob has an address")
//!     .unwrap()
//!     .clone()
//!     .unwrap();
//! timeout(bound, alice.send_space_notify(bob_url, space, Bytes::from_static(b"hi")))
//!     .await
//!     .expect("send in time")
//!     .unwrap();
//! let (_from, data) = timeout(bound, recv_rx.recv()).await.unwrap().unwrap();
//! assert_eq!(data, Bytes::from_static(b"hi"));
//!
//! alice.close().await;
//! bob.close().await;
//! # }
//! ```
//!
//! [`EmbeddedRelay`]: crate::relay::EmbeddedRelay
//! [`IrohTransportFactory`]: crate::IrohTransportFactory

mod harness;
mod mock_handler;

pub use harness::IrohTransportTestHarness;
pub use mock_handler::{MockTxHandler, dummy_url};
