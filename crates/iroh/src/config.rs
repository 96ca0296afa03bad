//! Transport configuration, in the JSON shape of `kitsune2_transport_iroh`.
//!
//! The module config lives under the key `irohTransport`; field names are
//! camelCase. Defaults match `kitsune2_transport_iroh` 0.6.0-dev.3, so a
//! config written for it reads the same here and the other way round.

use crate::error::{IrohTransportError, Result};
use crate::url::peer_url_len;
use kitsune2_iroh_codec::{FRAME_HEADER_LEN, PREFLIGHT_URL_LEN_LEN};

/// Default `maxFrameBytes`: 100 MiB, header included.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 100 * 1024 * 1024;

/// Default `connectTimeoutS`: 60 s.
pub const DEFAULT_CONNECT_TIMEOUT_S: u32 = 60;

/// Default `relayKeepaliveIntervalS`: 120 s, well inside the bootstrap
/// server's 5-minute auth token idle timeout.
pub const DEFAULT_RELAY_KEEPALIVE_INTERVAL_S: u32 = 120;

/// Length assumed for this node's peer URL when no relay URL is configured
/// (the relay is then one of iroh's defaults, whose URLs are shorter).
pub const DEFAULT_RELAY_PEER_URL_ALLOWANCE: usize = 256;

/// Configuration of the iroh transport.
///
/// The same type serves as global config and as per-space override; in an
/// override only the relay fields (`relayUrl`, `relayAllowPlainText`,
/// `authMaterialRelayBase64`) are used.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IrohTransportConfig {
    /// Relay to use as home relay. `None` uses iroh's default relays.
    ///
    /// Default: `None`.
    pub relay_url: Option<String>,

    /// Allow a plain `http` relay URL instead of requiring `https`.
    ///
    /// Default: `false`.
    pub relay_allow_plain_text: bool,

    /// Largest frame the transport sends or accepts, header included.
    ///
    /// Default: [`DEFAULT_MAX_FRAME_BYTES`] (100 MiB).
    pub max_frame_bytes: usize,

    /// Timeout for establishing a connection to a peer, in seconds.
    ///
    /// Default: [`DEFAULT_CONNECT_TIMEOUT_S`] (60 s).
    pub connect_timeout_s: u32,

    /// Base64-encoded auth material for relay registration; used with
    /// `relayUrl` in a per-space override.
    ///
    /// Default: `None`.
    #[serde(default)]
    pub auth_material_relay_base64: Option<String>,

    /// Interval in seconds of the keepalive that re-registers this
    /// endpoint's key with an authenticated relay's bootstrap server.
    ///
    /// Default: [`DEFAULT_RELAY_KEEPALIVE_INTERVAL_S`] (120 s).
    #[serde(default = "default_relay_keepalive_interval_s")]
    pub relay_keepalive_interval_s: u32,
}

fn default_relay_keepalive_interval_s() -> u32 {
    DEFAULT_RELAY_KEEPALIVE_INTERVAL_S
}

impl Default for IrohTransportConfig {
    fn default() -> Self {
        Self {
            relay_url: None,
            relay_allow_plain_text: false,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            connect_timeout_s: DEFAULT_CONNECT_TIMEOUT_S,
            auth_material_relay_base64: None,
            relay_keepalive_interval_s: DEFAULT_RELAY_KEEPALIVE_INTERVAL_S,
        }
    }
}

impl IrohTransportConfig {
    /// Checks the config, reporting the first problem found.
    ///
    /// # Errors
    ///
    /// - [`IrohTransportError::ZeroKeepaliveInterval`]
    /// - [`IrohTransportError::InvalidRelayUrl`],
    ///   [`IrohTransportError::UnsupportedRelayScheme`],
    ///   [`IrohTransportError::RelayUrlWithoutHost`],
    ///   [`IrohTransportError::RelayUrlWithoutPort`]
    /// - [`IrohTransportError::PlainTextRelayDisallowed`]
    /// - [`IrohTransportError::MaxFrameBytesTooSmall`]
    pub fn validate(&self) -> Result<()> {
        if self.relay_keepalive_interval_s == 0 {
            return Err(IrohTransportError::ZeroKeepaliveInterval);
        }
        let url_len = match &self.relay_url {
            Some(relay_url) => {
                let relay = crate::url::parse_relay_url(relay_url)?;
                if relay.scheme() == "http" && !self.relay_allow_plain_text {
                    return Err(IrohTransportError::PlainTextRelayDisallowed {
                        url: relay_url.clone(),
                    });
                }
                peer_url_len(&relay)?
            }
            None => DEFAULT_RELAY_PEER_URL_ALLOWANCE,
        };
        let min = FRAME_HEADER_LEN + PREFLIGHT_URL_LEN_LEN + url_len;
        if self.max_frame_bytes < min {
            return Err(IrohTransportError::MaxFrameBytesTooSmall {
                max_frame_bytes: self.max_frame_bytes,
                min,
            });
        }
        Ok(())
    }
}

/// Module-level wrapper: the config sits under the key `irohTransport`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IrohTransportModConfig {
    /// The transport config.
    pub iroh_transport: IrohTransportConfig,
}
