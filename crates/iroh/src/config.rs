//! Transport configuration, in the JSON shape of `kitsune2_transport_iroh`.
//!
//! The module config lives under the key `irohTransport`; field names are
//! camelCase. Defaults match `kitsune2_transport_iroh` 0.6.0-dev.3, so a
//! config written for it reads the same here and the other way round.
//!
//! # JSON schema
//!
//! With the `schema` feature both types implement `schemars::JsonSchema`
//! (schemars 1.2, properties in declaration order), in the shape of
//! `kitsune2_transport_iroh`'s: the same keys in the same order with the
//! same types, `irohTransport` required, no key under it required. Two
//! differences, both on purpose:
//!
//! - Ours names every key; the incumbent's leaves out
//!   `authMaterialRelayBase64`.
//! - Each key's `default` is the value [`IrohTransportConfig::default`]
//!   gives it (`maxFrameBytes` 104857600, `connectTimeoutS` 60,
//!   `relayKeepaliveIntervalS` 120); the incumbent's schema states 0 for
//!   those three, the zero of their type, not its actual defaults.

use crate::error::{IrohTransportError, Result};
use crate::iroh_types::RelayUrl;
use crate::url::{is_loopback_relay, peer_url_len};
use kitsune2_iroh_codec::{FRAME_HEADER_LEN, PREFLIGHT_URL_LEN_LEN};
use kitsune2_iroh_core::{
    CoreConfig, DEFAULT_CONNECT_TIMEOUT, DEFAULT_FRAME_PROGRESS_TIMEOUT,
    DEFAULT_LARGE_MESSAGE_BYTES, DEFAULT_MAX_CONCURRENT_DIALS, DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_MESSAGE_STREAMS, DEFAULT_MAX_PENDING_CONNECTIONS, DEFAULT_PARTIAL_FRAME_BUDGET,
    DEFAULT_SILENCE_TIMEOUT, DEFAULT_WRITE_TIMEOUT,
};
use std::time::Duration;

/// Default `maxFrameBytes`: 100 MiB, header included (the codec's default,
/// through the core).
pub use kitsune2_iroh_core::DEFAULT_MAX_FRAME_BYTES;

/// Default `connectTimeoutS`: 60 s, the core's [`DEFAULT_CONNECT_TIMEOUT`]
/// in whole seconds.
// `as` in a const; the assertion below proves it loses nothing.
pub const DEFAULT_CONNECT_TIMEOUT_S: u32 = DEFAULT_CONNECT_TIMEOUT.as_secs() as u32;

const _: () = assert!(
    DEFAULT_CONNECT_TIMEOUT.subsec_nanos() == 0
        && DEFAULT_CONNECT_TIMEOUT.as_secs() == DEFAULT_CONNECT_TIMEOUT_S as u64,
    "the core's default connect timeout must be whole seconds that fit connectTimeoutS"
);

/// Default `relayKeepaliveIntervalS`: 120 s, well inside the bootstrap
/// server's 5-minute auth token idle timeout.
pub const DEFAULT_RELAY_KEEPALIVE_INTERVAL_S: u32 = 120;

/// Largest `maxMessageStreams`: QUIC's `max_concurrent_uni_streams`
/// (this plus one for the control stream) is a varint, and more streams
/// than this at once only cost memory per connection without letting
/// large messages through any faster.
pub const MAX_MESSAGE_STREAMS_LIMIT: usize = 1024;

/// Smallest `silenceTimeoutS`: 3 s, three QUIC keep-alive rounds
/// ([`KEEP_ALIVE_INTERVAL`](crate::endpoint::KEEP_ALIVE_INTERVAL), 1 s) and
/// the silence after which the come-back probe already takes a peer as
/// gone ([`COME_BACK_SILENCE`](crate::endpoint::COME_BACK_SILENCE)). A live
/// peer is heard from about every second plus a round trip; a shorter
/// timeout would close healthy connections on one lost keep-alive.
pub const MIN_SILENCE_TIMEOUT_S: u32 = 3;

const _: () = assert!(
    MIN_SILENCE_TIMEOUT_S as u128 * 1000 >= crate::endpoint::COME_BACK_SILENCE.as_millis()
        && MIN_SILENCE_TIMEOUT_S as u128 * 1000
            > 2 * crate::endpoint::KEEP_ALIVE_INTERVAL.as_millis(),
    "the smallest silence timeout covers the come-back silence and two keep-alive rounds"
);

/// Length assumed for this node's peer URL when no relay URL is configured
/// (the relay is then one of iroh's defaults, whose URLs are shorter).
pub const DEFAULT_RELAY_PEER_URL_ALLOWANCE: usize = 256;

/// Configuration of the iroh transport.
///
/// The keys after `relayKeepaliveIntervalS` are ours alone (limits the
/// incumbent does not have). They are written out only when they differ
/// from their defaults, so a default config serializes exactly as the
/// incumbent's, and the incumbent reads a config with them (ignoring them).
///
/// The same type serves as global config and as per-space override; in an
/// override only the relay fields (`relayUrl`, `relayAllowPlainText`,
/// `authMaterialRelayBase64`) are used.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
// Schema only: every key optional, defaults from `Default`. Deserializing
// still requires the keys the incumbent requires.
#[cfg_attr(feature = "schema", schemars(default))]
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

    /// Seconds a send may wait with the peer taking none of our bytes
    /// before it fails, the connection is closed and the peer is marked
    /// unresponsive. Not in the incumbent, whose sends wait without bound.
    ///
    /// Default: 20 s ([`DEFAULT_WRITE_TIMEOUT`]).
    #[serde(
        default = "default_write_timeout_s",
        skip_serializing_if = "is_default_write_timeout_s"
    )]
    pub write_timeout_s: u32,

    /// Incoming connections that may wait for their preflight at once;
    /// more are refused. Not in the incumbent.
    ///
    /// Default: [`DEFAULT_MAX_PENDING_CONNECTIONS`] (128).
    #[serde(
        default = "default_max_pending_connections",
        skip_serializing_if = "is_default_max_pending_connections"
    )]
    pub max_pending_connections: usize,

    /// Live connections above which incoming ones are refused (our own
    /// dials are not limited). Not in the incumbent.
    ///
    /// Default: [`DEFAULT_MAX_CONNECTIONS`] (4096).
    #[serde(
        default = "default_max_connections",
        skip_serializing_if = "is_default_max_connections"
    )]
    pub max_connections: usize,

    /// Bytes that partially received frames may hold across all
    /// connections (beyond 64 KiB free per connection); must be at least
    /// `maxFrameBytes`. Not in the incumbent, where it is unbounded.
    ///
    /// Default: [`DEFAULT_PARTIAL_FRAME_BUDGET`] (256 MiB).
    #[serde(
        default = "default_partial_frame_budget_bytes",
        skip_serializing_if = "is_default_partial_frame_budget_bytes"
    )]
    pub partial_frame_budget_bytes: usize,

    /// Seconds a partially received frame may go without a byte from the
    /// peer before the connection is closed (twice that while it waits for
    /// room in the partial-frame budget). Not in the incumbent.
    ///
    /// Default: 30 s ([`DEFAULT_FRAME_PROGRESS_TIMEOUT`]).
    #[serde(
        default = "default_frame_progress_timeout_s",
        skip_serializing_if = "is_default_frame_progress_timeout_s"
    )]
    pub frame_progress_timeout_s: u32,

    /// On a `kitsune2/1` connection (two nodes of this crate), a message
    /// larger than this many bytes goes on a QUIC stream of its own, so that
    /// it does not hold up the small ones sent after it. Not in the
    /// incumbent, which speaks only `kitsune2/0`.
    ///
    /// Default: 65536 ([`DEFAULT_LARGE_MESSAGE_BYTES`]).
    #[serde(
        default = "default_large_message_bytes",
        skip_serializing_if = "is_default_large_message_bytes"
    )]
    pub large_message_bytes: usize,

    /// On a `kitsune2/1` connection, how many message streams (large
    /// messages, one each) the peer may have open towards us at once; QUIC's
    /// `max_concurrent_uni_streams` is this plus one (the control stream),
    /// so an honest peer waits for a stream and the two limits always
    /// agree. From 1 to [`MAX_MESSAGE_STREAMS_LIMIT`]. Not in the
    /// incumbent, which speaks only `kitsune2/0` (one stream).
    ///
    /// Default: 16 ([`DEFAULT_MAX_MESSAGE_STREAMS`]).
    #[serde(
        default = "default_max_message_streams",
        skip_serializing_if = "is_default_max_message_streams"
    )]
    pub max_message_streams: usize,

    /// Seconds an established connection may hear nothing from the peer
    /// (not even the acknowledgement of a QUIC keep-alive, sent after 1 s
    /// of silence) before it is closed as lost and the peer is marked
    /// unresponsive. At least [`MIN_SILENCE_TIMEOUT_S`] (3 s); there is no
    /// "off": a value at or above QUIC's idle timeout (30 s,
    /// [`MAX_IDLE_TIMEOUT`](crate::endpoint::MAX_IDLE_TIMEOUT)) leaves it to
    /// the idle timeout. Not in the incumbent, which has no watchdog.
    ///
    /// Default: 10 s ([`DEFAULT_SILENCE_TIMEOUT`]).
    #[serde(
        default = "default_silence_timeout_s",
        skip_serializing_if = "is_default_silence_timeout_s"
    )]
    pub silence_timeout_s: u32,

    /// Handshakes of our own dials that may be under way at once; a dial
    /// past it waits for one to finish or to have run for 1 s
    /// ([`DIAL_SLOT_HOLD`](kitsune2_iroh_core::DIAL_SLOT_HOLD)), within its connect timeout. A burst of first
    /// sends to many new peers so starts a few handshakes at a time (all at
    /// once, 100 nodes on 2 cores lost thousands to overflowing relay
    /// queues). At least 1. Not in the incumbent, which dials all at once.
    ///
    /// Default: 4 ([`DEFAULT_MAX_CONCURRENT_DIALS`]).
    #[serde(
        default = "default_max_concurrent_dials",
        skip_serializing_if = "is_default_max_concurrent_dials"
    )]
    pub max_concurrent_dials: usize,

    /// Accept `kitsune2/1` (preferred) besides `kitsune2/0`: between two
    /// nodes of this crate with it on, a large message no longer holds up
    /// the small ones behind it. Off by default for now; a peer that
    /// speaks only `kitsune2/0` (the incumbent) is unaffected either way.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub kitsune2_v1: bool,
}

fn is_default_max_concurrent_dials(v: &usize) -> bool {
    *v == default_max_concurrent_dials()
}

fn default_max_concurrent_dials() -> usize {
    DEFAULT_MAX_CONCURRENT_DIALS
}

fn is_default_max_message_streams(v: &usize) -> bool {
    *v == default_max_message_streams()
}

fn default_max_message_streams() -> usize {
    DEFAULT_MAX_MESSAGE_STREAMS
}

fn is_default_silence_timeout_s(v: &u32) -> bool {
    *v == default_silence_timeout_s()
}

fn default_silence_timeout_s() -> u32 {
    whole_secs(DEFAULT_SILENCE_TIMEOUT)
}

fn is_default_large_message_bytes(v: &usize) -> bool {
    *v == default_large_message_bytes()
}

fn default_large_message_bytes() -> usize {
    DEFAULT_LARGE_MESSAGE_BYTES
}

fn default_relay_keepalive_interval_s() -> u32 {
    DEFAULT_RELAY_KEEPALIVE_INTERVAL_S
}

fn is_default_write_timeout_s(v: &u32) -> bool {
    *v == default_write_timeout_s()
}

fn default_write_timeout_s() -> u32 {
    whole_secs(DEFAULT_WRITE_TIMEOUT)
}

fn is_default_max_pending_connections(v: &usize) -> bool {
    *v == default_max_pending_connections()
}

fn default_max_pending_connections() -> usize {
    DEFAULT_MAX_PENDING_CONNECTIONS
}

fn is_default_max_connections(v: &usize) -> bool {
    *v == default_max_connections()
}

fn default_max_connections() -> usize {
    DEFAULT_MAX_CONNECTIONS
}

fn is_default_partial_frame_budget_bytes(v: &usize) -> bool {
    *v == default_partial_frame_budget_bytes()
}

fn default_partial_frame_budget_bytes() -> usize {
    DEFAULT_PARTIAL_FRAME_BUDGET
}

fn is_default_frame_progress_timeout_s(v: &u32) -> bool {
    *v == default_frame_progress_timeout_s()
}

fn default_frame_progress_timeout_s() -> u32 {
    whole_secs(DEFAULT_FRAME_PROGRESS_TIMEOUT)
}

/// A core default in whole seconds (all of them are, and fit a `u32`).
fn whole_secs(d: Duration) -> u32 {
    u32::try_from(d.as_secs()).unwrap_or(u32::MAX)
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
            write_timeout_s: default_write_timeout_s(),
            max_pending_connections: DEFAULT_MAX_PENDING_CONNECTIONS,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            partial_frame_budget_bytes: DEFAULT_PARTIAL_FRAME_BUDGET,
            frame_progress_timeout_s: default_frame_progress_timeout_s(),
            large_message_bytes: DEFAULT_LARGE_MESSAGE_BYTES,
            max_message_streams: DEFAULT_MAX_MESSAGE_STREAMS,
            silence_timeout_s: default_silence_timeout_s(),
            max_concurrent_dials: DEFAULT_MAX_CONCURRENT_DIALS,
            kitsune2_v1: false,
        }
    }
}

/// When a plain `http` relay URL is accepted without `relayAllowPlainText`.
///
/// `kitsune2_transport_iroh` refuses plain http without the flag in
/// `TransportFactory::validate_config` only, and builds a transport from such
/// a config when `create` is called without validating first, as kitsune2's
/// own tests do with a local bootstrap server's relay. The two policies keep
/// both behaviours while refusing plain http to any other host at `create`.
///
/// # Usage
///
/// [`IrohTransportConfig::validate`] uses [`Strict`](Self::Strict) (what
/// `validate_config` runs); [`IrohTransportConfig::validate_for_create`] and
/// per-space relays (`configure_for_space`) use
/// [`AllowLoopback`](Self::AllowLoopback).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlainTextPolicy {
    /// Plain http needs `relayAllowPlainText`, whatever the host: the
    /// incumbent's `validate_config` rule.
    Strict,
    /// Plain http to a loopback host (127.0.0.0/8, `::1`, `localhost`; see
    /// [`is_loopback_relay`]) is accepted
    /// without the flag; to any other host it still needs
    /// `relayAllowPlainText`.
    AllowLoopback,
}

impl PlainTextPolicy {
    /// Checks the parsed relay URL `relay` (`url` as given, for the error)
    /// against this policy, with `allow_plain_text` the config's
    /// `relayAllowPlainText`.
    ///
    /// # Errors
    ///
    /// [`IrohTransportError::PlainTextRelayDisallowed`] when `relay` is
    /// plain http, `allow_plain_text` is false and the policy does not
    /// excuse its host.
    pub fn check(self, relay: &RelayUrl, url: &str, allow_plain_text: bool) -> Result<()> {
        let excused = match self {
            Self::Strict => false,
            Self::AllowLoopback => is_loopback_relay(relay),
        };
        if relay.scheme() == "http" && !allow_plain_text && !excused {
            return Err(IrohTransportError::PlainTextRelayDisallowed {
                url: url.to_owned(),
            });
        }
        Ok(())
    }
}

impl IrohTransportConfig {
    /// Checks the config as `TransportFactory::validate_config` does, with
    /// the incumbent's plain-text rule ([`PlainTextPolicy::Strict`]): a
    /// plain `http` relay needs `relayAllowPlainText`, even on loopback.
    ///
    /// # Errors
    ///
    /// As [`Self::validate_with`].
    pub fn validate(&self) -> Result<()> {
        self.validate_with(PlainTextPolicy::Strict)
    }

    /// Checks the config as `create` does ([`PlainTextPolicy::AllowLoopback`]):
    /// like [`Self::validate`], except that a plain `http` relay on a
    /// loopback host is accepted without `relayAllowPlainText`, as the
    /// incumbent's `create` accepts it.
    ///
    /// # Errors
    ///
    /// As [`Self::validate_with`].
    pub fn validate_for_create(&self) -> Result<()> {
        self.validate_with(PlainTextPolicy::AllowLoopback)
    }

    /// Checks the config with the plain-text rule `plain_text`, reporting
    /// the first problem found.
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
    /// - [`IrohTransportError::OutOfRange`]
    pub fn validate_with(&self, plain_text: PlainTextPolicy) -> Result<()> {
        if self.relay_keepalive_interval_s == 0 {
            return Err(IrohTransportError::ZeroKeepaliveInterval);
        }
        let out_of_range = |key, why: &str| {
            Err(IrohTransportError::OutOfRange {
                key,
                why: why.to_owned(),
            })
        };
        for (key, value) in [
            ("writeTimeoutS", self.write_timeout_s as usize),
            (
                "frameProgressTimeoutS",
                self.frame_progress_timeout_s as usize,
            ),
            ("maxPendingConnections", self.max_pending_connections),
            ("maxConnections", self.max_connections),
            ("maxConcurrentDials", self.max_concurrent_dials),
        ] {
            if value == 0 {
                return out_of_range(key, "must be greater than zero");
            }
        }
        if !(1..=MAX_MESSAGE_STREAMS_LIMIT).contains(&self.max_message_streams) {
            return out_of_range(
                "maxMessageStreams",
                &format!("must be from 1 to {MAX_MESSAGE_STREAMS_LIMIT}"),
            );
        }
        if self.silence_timeout_s < MIN_SILENCE_TIMEOUT_S {
            return out_of_range(
                "silenceTimeoutS",
                &format!(
                    "must be at least {MIN_SILENCE_TIMEOUT_S} (a live peer is heard from about \
                     every second; there is no \"off\", 30 or more leaves it to QUIC's idle \
                     timeout)"
                ),
            );
        }
        if self.partial_frame_budget_bytes < self.max_frame_bytes {
            return out_of_range(
                "partialFrameBudgetBytes",
                "must be at least maxFrameBytes, or the largest frame could never arrive",
            );
        }
        let url_len = match &self.relay_url {
            Some(relay_url) => {
                let relay = crate::url::parse_relay_url(relay_url)?;
                plain_text.check(&relay, relay_url, self.relay_allow_plain_text)?;
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

impl IrohTransportConfig {
    /// The core's settings this config gives (the relay fields are the
    /// adapter's own).
    pub fn core_config(&self) -> CoreConfig {
        let secs = |s: u32| Duration::from_secs(u64::from(s));
        CoreConfig {
            max_frame_bytes: self.max_frame_bytes,
            connect_timeout: secs(self.connect_timeout_s),
            write_timeout: secs(self.write_timeout_s),
            max_pending_connections: self.max_pending_connections,
            max_connections: self.max_connections,
            partial_frame_budget: self.partial_frame_budget_bytes,
            large_message_bytes: self.large_message_bytes,
            max_message_streams: self.max_message_streams,
            frame_progress_timeout: secs(self.frame_progress_timeout_s),
            silence_timeout: secs(self.silence_timeout_s),
            max_concurrent_dials: self.max_concurrent_dials,
            ..CoreConfig::default()
        }
    }
}

/// Module-level wrapper: the config sits under the key `irohTransport`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct IrohTransportModConfig {
    /// The transport config.
    pub iroh_transport: IrohTransportConfig,
}
