//! Drop-in, wire-compatible Kitsune2 transport backed by iroh.
//!
//! This crate is the thin adapter between iroh and the transport core
//! (`kitsune2-iroh-core`), which holds all protocol logic:
//!
//! - [`IrohTransportFactory`]: the `kitsune2_api::TransportFactory` to plug
//!   into a kitsune2 `Builder`, a drop-in for
//!   `kitsune2_transport_iroh::IrohTransportFactory`.
//! - [`IrohEndpoint`], [`IrohConnection`], [`IrohSendStream`],
//!   [`IrohRecvStream`]: the core's network traits implemented over iroh
//!   (vectored `write_many_chunks` out, `read_chunk` in, no copies).
//! - [`HandshakeLimits`], [`HandshakeStats`]: the bounds on incoming QUIC
//!   handshakes (a deadline, per source, in flight) and what became of them.
//! - [`config`]: [`IrohTransportConfig`] and [`IrohTransportModConfig`], with
//!   the same JSON shape and defaults as `kitsune2_transport_iroh`, plus typed
//!   validation: [`IrohTransportConfig::validate`] at `validate_config`
//!   (the incumbent's rules), [`IrohTransportConfig::validate_for_create`]
//!   at `create`, which also accepts a plain `http` relay on loopback
//!   ([`PlainTextPolicy`]).
//! - [`url`]: peer URL = relay URL (path kept) + endpoint id as last segment,
//!   formatted and parsed exactly like `kitsune2_transport_iroh`.
//! - [`endpoint`]: the iroh endpoint as the wire protocol needs it (ALPN
//!   `kitsune2/0`, keep-alive 5 s, idle timeout 60 s, the configured relay as
//!   home relay, ring TLS).
//! - `relay` (feature `relay`): an embedded iroh-relay server on loopback
//!   with plain HTTP, for tests, demos and benchmarks that must not need the
//!   internet.
//!
//! # Features
//!
//! As `kitsune2_transport_iroh`'s:
//!
//! - `schema`: `schemars::JsonSchema` for the config types (see
//!   [`config`]).
//! - `test-utils`: the `test_utils` module, a test harness on an embedded
//!   relay and a `MockTxHandler`, with the names of the incumbent's
//!   `test_utils`. Turns on `relay`.
//!
//! And one of its own:
//!
//! - `relay`: the `relay` module, `EmbeddedRelay`. It compiles iroh-relay's
//!   server, which a transport does not need; off by default.
//!
//! Every iroh type the crate uses enters through one private module, so the
//! seam to iroh is visible at a glance; the ones that appear in the public API
//! are re-exported here.

mod accept;
pub mod config;
mod connection;
pub mod endpoint;
mod error;
mod factory;
mod iroh_endpoint;
mod iroh_types;
#[cfg(feature = "relay")]
pub mod relay;
mod relay_auth;
mod space_endpoints;
mod space_relays;
#[cfg(feature = "test-utils")]
pub mod test_utils;
pub mod url;

pub use accept::{HandshakeLimits, HandshakeStats};
pub use config::{IrohTransportConfig, IrohTransportModConfig, PlainTextPolicy};
pub use connection::{IrohConnection, IrohRecvStream, IrohSendStream};
pub use error::{IrohTransportError, Result};
pub use factory::{IrohTransportFactory, create_transport};
pub use iroh_endpoint::IrohEndpoint;
pub use iroh_types::{Endpoint, EndpointId, RelayUrl, SecretKey};
/// Reason text of the graceful close `close()` sends every peer, as
/// `kitsune2_transport_iroh::TRANSPORT_CLOSED_REASON` (`"Transport closed"`).
pub use kitsune2_iroh_core::TRANSPORT_CLOSED_REASON;
