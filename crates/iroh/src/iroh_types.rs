//! The seam to iroh: every iroh and iroh-relay type this crate uses is
//! imported here and nowhere else.

pub use iroh::{Endpoint, EndpointId, RelayUrl, SecretKey};

pub(crate) use iroh::endpoint::{
    BindError, ConnectError, ConnectionError, InvalidSocketAddr, PortmapperConfig,
    QuicTransportConfig, presets::Minimal,
};
pub(crate) use iroh::{KeyParsingError, RelayMap, RelayMode, RelayUrlParseError};
pub(crate) use iroh_relay::server::{
    RelayConfig as RelayHttpConfig, Server as RelayServer, ServerConfig as RelayServerConfig,
    SpawnError as RelaySpawnError, SupervisorError as RelaySupervisorError,
};
