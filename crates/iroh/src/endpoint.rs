//! The iroh endpoint as the kitsune2 wire protocol needs it.
//!
//! - ALPNs: a dialer offers [`ALPN_V1`] (`kitsune2/1`) and [`ALPN`]
//!   (`kitsune2/0`, the incumbent's); the acceptor decides. An endpoint
//!   accepts only `/0` unless [`accept_kitsune2_v1`] was called on it (the
//!   config's `kitsune2V1`), and then prefers `/1`; a peer that speaks only
//!   `/0` gets `/0`, byte for byte, either way.
//! - At most [`max_uni_streams`] uni streams from the peer open at once:
//!   the `/1` message streams the core allows (the config's
//!   `maxMessageStreams`, given to [`bind_endpoint_with`]), plus the
//!   control stream.
//! - At most [`RECEIVE_WINDOW`] (2.5 MB) unread or in flight from the peer
//!   over all its streams of a connection, twice QUIC's window of one
//!   stream.
//! - QUIC keep-alive after [`KEEP_ALIVE_INTERVAL`] (1 s) without a packet
//!   from the peer, so a live peer is heard from every second; the core
//!   takes a peer silent for its `silence_timeout` (10 s) as dead, and
//!   QUIC's idle timeout [`MAX_IDLE_TIMEOUT`] (30 s) bounds handshakes
//!   (see `docs/architecture.md`, "Dead peers and come-back").
//! - Home relay: the configured relay alone (a custom relay map); iroh's
//!   default relays only when no relay URL is given.
//! - TLS through rustls with the ring provider; no address lookup services
//!   (no DNS, no pkarr) and no port mapping.
//! - QUIC address discovery (QAD) against the relay, except for a relay on a
//!   loopback address (see `relay_config`).

use crate::error::{IrohTransportError, Result};
use crate::iroh_types::{
    Endpoint, Minimal, PortmapperConfig, QuicTransportConfig, RelayConfig, RelayMap, RelayMode,
    RelayUrl, SecretKey, VarInt,
};
use crate::url::is_loopback_relay;
use kitsune2_iroh_core::DEFAULT_MAX_MESSAGE_STREAMS;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// The ALPN of the kitsune2 iroh wire protocol, `kitsune2/0`: the
/// incumbent's, and ours with a peer that speaks only it.
pub const ALPN: &[u8] = kitsune2_iroh_core::ALPN_V0;

/// The ALPN of `kitsune2/1` (a large message on a stream of its own; see
/// `docs/wire-format.md`), preferred between two nodes of this crate.
pub const ALPN_V1: &[u8] = kitsune2_iroh_core::ALPN_V1;

/// QUIC's `max_concurrent_uni_streams` for an endpoint whose core takes
/// `max_message_streams` message streams at once: that plus the control
/// stream (saturating at `u32::MAX`). A peer that has as many open waits to
/// open another (back-pressure), so an honest peer never trips the core's
/// own check. The default: 17.
pub fn max_uni_streams(max_message_streams: usize) -> u32 {
    u32::try_from(max_message_streams)
        .unwrap_or(u32::MAX)
        .saturating_add(1)
}

/// QUIC's connection receive window (`receive_window`): the bytes the peer
/// may have sent us over all its streams of a connection and we have not
/// read yet, 2.5 MB; QUIC's default is unlimited. A single stream is held to
/// QUIC's stream window (1.25 MB, the default of `stream_receive_window`),
/// so this changes nothing on `kitsune2/0` (one stream each way) and leaves
/// a `/1` control stream room beside any one message stream; what it bounds
/// is a `/1` sender's several message streams, which without it had up to
/// QUIC's send window (10 MB) in flight at once instead of `/0`'s 1.25 MB.
/// On loopback that halved the throughput of a stream per 1 MiB message,
/// bare iroh's as well as ours (with no packet lost; see
/// `docs/benchmarks.md`, issue 15). It also bounds what a peer can make us
/// buffer on one connection (17 streams at their window: 21 MB).
/// Advertised in the handshake; applies to what the peer sends us.
pub const RECEIVE_WINDOW: u32 = 2_500_000;

/// Time without a packet from the peer after which QUIC sends a keep-alive
/// (a PING the peer acknowledges): 1 s. A live peer is so heard from at
/// least every second plus a round trip, idle or not. Local behaviour, not
/// negotiated (the incumbent sends one after 5 s).
pub const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(1);

/// Time without a packet from the peer after which QUIC closes the
/// connection as timed out: 30 s. It also bounds a handshake that hears
/// nothing, and handshakes on a loaded node (100 nodes dialing each other
/// at once on two cores) went quiet for longer than 8 s while their
/// packets were dropped and retransmitted with back-off; 8 s failed tens
/// of thousands of them. An established connection's dead peer is found
/// sooner by the core's silence watchdog (`silence_timeout`, 10 s, from
/// [`IrohConnection`](crate::IrohConnection)'s `silent_for`). It is
/// advertised in the handshake and the smaller of the two sides' values
/// applies, so a connection with the incumbent (60 s) uses 30 s.
pub const MAX_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a connection must stay silent (no packet from the peer) for
/// the peer to be taken as gone when the same peer dials us anew: 3 s,
/// three keep-alive rounds. See [`IrohConnection`](crate::IrohConnection)'s
/// `probe_gone` and `docs/architecture.md`, "Dead peers and come-back".
pub const COME_BACK_SILENCE: Duration = Duration::from_secs(3);

// The come-back probe waits out more than two keep-alive rounds and ends
// before the idle timeout would end the old connection anyway.
const _: () = assert!(
    COME_BACK_SILENCE.as_millis() > 2 * KEEP_ALIVE_INTERVAL.as_millis()
        && COME_BACK_SILENCE.as_millis() < MAX_IDLE_TIMEOUT.as_millis()
);

/// How to build an endpoint.
#[derive(Debug, Clone, Default)]
pub struct EndpointOptions {
    /// The home relay. `None` uses iroh's default relays.
    pub relay_url: Option<RelayUrl>,
    /// Bind the UDP socket to this address only, instead of all interfaces.
    /// Tests use `127.0.0.1:0` so that no traffic leaves loopback.
    pub bind_addr: Option<SocketAddr>,
    /// The endpoint's key; a fresh one is generated when `None`.
    pub secret_key: Option<SecretKey>,
    /// Start with an empty relay map even when `relay_url` is set, so that
    /// nothing reaches the relay before it is inserted (with a token) later.
    pub defer_relay: bool,
}

/// How an endpoint uses the relay `url`, presenting `token` as bearer token
/// on its websocket when given.
///
/// QUIC address discovery (QAD) tells an endpoint its address as the relay
/// sees it, on the relay's QUIC port. A relay on a loopback address (IP or
/// `localhost`) can only report a loopback address, which the endpoint knows
/// already, and a relay without a QAD server (such as the embedded one) lets
/// each probe run into iroh's 3 s probe timeout before the home relay is
/// chosen; so QAD is off for loopback relays and on for all others.
pub(crate) fn relay_config(url: &RelayUrl, token: Option<String>) -> RelayConfig {
    let mut config = if is_loopback_relay(url) {
        RelayConfig::new(url.clone(), None)
    } else {
        RelayConfig::from(url.clone())
    };
    if let Some(token) = token {
        config = config.with_auth_token(token);
    }
    config
}

/// Adds `url` to `endpoint`'s relays as [`relay_config`] describes it,
/// presenting `token` as bearer token on its websocket when given.
pub(crate) async fn insert_relay(endpoint: &Endpoint, url: RelayUrl, token: Option<String>) {
    let config = relay_config(&url, token);
    endpoint.insert_relay(url, Arc::new(config)).await;
}

/// Makes `endpoint` accept `kitsune2/1` too, preferred over `kitsune2/0`
/// (a dialer that offers only `/0` still gets it).
///
/// Off by default while the no-silent-loss guarantee over `/1` is not yet
/// shown to hold over iroh (see `docs/compatibility.md`).
pub fn accept_kitsune2_v1(endpoint: &Endpoint) {
    endpoint.set_alpns(vec![ALPN_V1.to_vec(), ALPN.to_vec()]);
}

/// Binds an iroh endpoint configured for the kitsune2 wire protocol, for a
/// core with the default `max_message_streams`
/// ([`DEFAULT_MAX_MESSAGE_STREAMS`], 16).
///
/// # Errors
///
/// [`IrohTransportError::BindAddr`] or [`IrohTransportError::Bind`] if the
/// socket cannot be bound; [`IrohTransportError::TimeoutOutOfRange`] if the
/// idle timeout does not fit QUIC's varint.
pub async fn bind_endpoint(options: &EndpointOptions) -> Result<Endpoint> {
    bind_endpoint_with(options, DEFAULT_MAX_MESSAGE_STREAMS).await
}

/// Binds an endpoint as [`bind_endpoint`] does, for a core that takes
/// `max_message_streams` message streams at once (the config's
/// `maxMessageStreams`): QUIC lets a peer open at most
/// [`max_uni_streams`]`(max_message_streams)` uni streams towards it, so
/// the two limits agree.
///
/// # Errors
///
/// As [`bind_endpoint`].
pub async fn bind_endpoint_with(
    options: &EndpointOptions,
    max_message_streams: usize,
) -> Result<Endpoint> {
    bind(options, true, max_message_streams).await
}

/// Test-only: binds an endpoint as [`bind_endpoint`] does, but with no IP
/// transport at all (`options.bind_addr` is ignored), so that every packet
/// to and from it goes through its home relay and no direct path can form.
///
/// This is the path two peers get when holepunching fails; the benchmarks
/// use it to measure the relayed path on loopback, where a direct path
/// would otherwise always win. A node bound this way can only reach, and
/// be reached by, peers on the same relay. Not for production use.
///
/// # Errors
///
/// As [`bind_endpoint`].
pub async fn bind_relay_only_endpoint(options: &EndpointOptions) -> Result<Endpoint> {
    bind_relay_only_endpoint_with(options, DEFAULT_MAX_MESSAGE_STREAMS).await
}

/// Test-only: [`bind_relay_only_endpoint`] for a core that takes
/// `max_message_streams` message streams at once (see
/// [`bind_endpoint_with`]).
///
/// # Errors
///
/// As [`bind_endpoint`].
pub async fn bind_relay_only_endpoint_with(
    options: &EndpointOptions,
    max_message_streams: usize,
) -> Result<Endpoint> {
    bind(options, false, max_message_streams).await
}

/// [`bind_endpoint`], with IP transports (UDP sockets) when `ip` is true,
/// QUIC's uni stream limit for `max_message_streams`.
async fn bind(options: &EndpointOptions, ip: bool, max_message_streams: usize) -> Result<Endpoint> {
    let idle = MAX_IDLE_TIMEOUT
        .try_into()
        .map_err(|_| IrohTransportError::TimeoutOutOfRange {
            secs: MAX_IDLE_TIMEOUT.as_secs(),
        })?;
    let transport = QuicTransportConfig::builder()
        .keep_alive_interval(KEEP_ALIVE_INTERVAL)
        .max_idle_timeout(Some(idle))
        .max_concurrent_uni_streams(VarInt::from_u32(max_uni_streams(max_message_streams)))
        .receive_window(VarInt::from_u32(RECEIVE_WINDOW))
        .build();
    let relay_mode = match &options.relay_url {
        Some(_) if options.defer_relay => RelayMode::Custom(RelayMap::empty()),
        Some(url) => RelayMode::Custom(RelayMap::from_iter([relay_config(url, None)])),
        None => RelayMode::Default,
    };
    let mut builder = Endpoint::builder(Minimal)
        .relay_mode(relay_mode)
        .alpns(vec![ALPN.to_vec()])
        .transport_config(transport)
        .portmapper_config(PortmapperConfig::Disabled);
    if !ip {
        builder = builder.clear_ip_transports();
    } else if let Some(addr) = options.bind_addr {
        builder = builder
            .clear_ip_transports()
            .bind_addr(addr)
            .map_err(|source| IrohTransportError::BindAddr { source })?;
    }
    if let Some(key) = &options.secret_key {
        builder = builder.secret_key(key.clone());
    }
    builder
        .bind()
        .await
        .map_err(|source| IrohTransportError::Bind { source })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(url: &str) -> RelayConfig {
        relay_config(&url.parse().unwrap(), None)
    }

    #[test]
    fn qad_is_off_for_loopback_relays_only() {
        for loopback in [
            "http://127.0.0.1:3340/",
            "http://127.8.9.1/relay/",
            "http://[::1]:3340/",
            "https://localhost/",
            "http://LOCALHOST:1/",
        ] {
            assert!(config(loopback).quic.is_none(), "{loopback}");
        }
        for remote in [
            "https://relay.example.org/",
            "http://10.1.2.3:3340/",
            "http://[2001:db8::1]/",
        ] {
            assert!(config(remote).quic.is_some(), "{remote}");
        }
    }

    #[test]
    fn uni_streams_are_the_message_streams_and_the_control_stream() {
        assert_eq!(max_uni_streams(DEFAULT_MAX_MESSAGE_STREAMS), 17);
        assert_eq!(max_uni_streams(2), 3);
        assert_eq!(max_uni_streams(usize::MAX), u32::MAX);
    }

    #[test]
    fn token_is_kept() {
        let c = relay_config(
            &"http://127.0.0.1:1/".parse().unwrap(),
            Some("t".to_owned()),
        );
        assert_eq!(c.auth_token.as_deref(), Some("t"));
    }
}
