//! The seam to iroh: every iroh and iroh-relay type this crate uses is
//! imported here and nowhere else.

pub use iroh::{Endpoint, EndpointId, RelayUrl, SecretKey};

pub(crate) use iroh::endpoint::{
    BindError, ConnectError, ConnectOptions, ConnectingError, Connection as QuicConnection,
    ConnectionError, IncomingAddr, InvalidSocketAddr, PortmapperConfig, QuicTransportConfig,
    ReadError, RecvStream as QuicRecvStream, SendStream as QuicSendStream, StoppedError,
    TransportErrorCode, VarInt, WriteError, presets::Minimal,
};
pub(crate) use iroh::{
    EndpointAddr, KeyParsingError, RelayConfig, RelayMap, RelayMode, RelayUrlParseError,
    TransportAddr, Watcher,
};
#[cfg(feature = "relay")]
pub(crate) use iroh_relay::server::{
    RelayConfig as RelayHttpConfig, Server as RelayServer, ServerConfig as RelayServerConfig,
    SpawnError as RelaySpawnError, SupervisorError as RelaySupervisorError,
};
