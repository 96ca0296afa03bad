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
//!
//! | module      | owns                                                        |
//! |-------------|-------------------------------------------------------------|
//! | `budget`    | the transport-wide budget for bytes in partially received frames |
//! | `proto`     | one connection's protocol, synchronous: states, preflight rule, identity check, deadline, end report |
//! | `conn`      | a live connection: the protocol object behind a lock, frame writes, the close |
//! | `registry`  | which connection carries each peer's data; simultaneous-open resolution; the per-peer dial gate |
//! | `reader`    | the reader task: moves bytes into `proto`, acts on its events |
//! | `dial`      | sending: finding or making the active connection |
//! | `shared`    | what the tasks share; ending and reporting a connection |
//! | `space`     | per-space URLs |
//! | `transport` | the `TxImp` surface, close, disconnect, drop |
//! | `version`   | the wire versions (`kitsune2/0`, `kitsune2/1`) and their ALPNs |

mod budget;
mod close;
mod config;
mod conn;
mod dial;
mod error;
#[cfg(feature = "mem")]
pub mod mem;
mod peer_url;
mod proto;
mod reader;
mod registry;
mod shared;
mod space;
mod traits;
mod transport;
mod version;

pub use budget::{FrameBudgetUsage, UNBUDGETED_PARTIAL_BYTES};
pub use close::{CloseCode, SUPERSEDED_REASON, TRANSPORT_CLOSED_REASON, TRANSPORT_DROPPED_REASON};
pub use config::{
    CoreConfig, DEFAULT_CONNECT_TIMEOUT, DEFAULT_DRAIN_TIMEOUT, DEFAULT_FRAME_PROGRESS_TIMEOUT,
    DEFAULT_LARGE_MESSAGE_BYTES, DEFAULT_MAX_CONCURRENT_DIALS, DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_MESSAGE_STREAMS, DEFAULT_MAX_PENDING_CONNECTIONS, DEFAULT_PARTIAL_FRAME_BUDGET,
    DEFAULT_SILENCE_TIMEOUT, DEFAULT_WRITE_TIMEOUT, DIAL_SLOT_HOLD, PREFLIGHT_TIMEOUT,
};
pub use error::{BackendError, CoreError, Initiator};
pub use kitsune2_iroh_codec::DEFAULT_MAX_FRAME_BYTES;
pub use peer_url::{ENDPOINT_ID_HEX_LEN, PeerAddr, format_peer_url, id_to_hex, parse_hex_id};
pub use proto::ConnState;
pub use traits::{
    Connection, DynConnection, DynRecvStream, DynSendStream, Endpoint, EndpointId, MAX_READ_CHUNK,
    RecvStream, SendStream, SystemClock, WallClock,
};
#[cfg(feature = "mem")]
pub use transport::ConnInfo;
pub use transport::{CoreTransport, DROP_FLUSH_TIMEOUT, ENDPOINT_CLOSE_WAIT};
pub use version::{ALPN_V0, ALPN_V1, WireVersion};
