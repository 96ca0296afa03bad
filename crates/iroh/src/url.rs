//! Peer URLs: the relay URL, path kept, with the endpoint id appended as the
//! last path segment.
//!
//! The format is the one `kitsune2_transport_iroh` uses, byte for byte:
//! `{scheme}://{host}:{port}{relay path without trailing '/'}/{endpoint id}`,
//! where the port is always written out (the scheme's default if the relay
//! URL has none), an IPv6 host is bracketed and the endpoint id is 64
//! lowercase hex digits. For example relay `http://127.0.0.1:4433/relay/`
//! and an endpoint id of all `0xaa` bytes give
//! `http://127.0.0.1:4433/relay/aaaa…aaaa`.
//!
//! The core owns the format ([`format_peer_url`] joins a relay part and an
//! id, [`PeerAddr::parse`] splits a peer URL into them); this module adds
//! what is iroh's: writing a [`RelayUrl`] as the relay part (port always
//! written, IPv6 bracketed) and reading the parts back as a [`RelayUrl`]
//! and an [`EndpointId`].

use crate::error::{IrohTransportError, Result};
use crate::iroh_types::{EndpointId, RelayUrl};
use kitsune2_api::{K2Error, Url};
use kitsune2_iroh_core::{PeerAddr, format_peer_url};
use std::str::FromStr;

/// Length in characters of an endpoint id in a peer URL (hex); the core's.
pub use kitsune2_iroh_core::ENDPOINT_ID_HEX_LEN;

/// Parses and checks a relay URL: it must parse, use `http` or `https` and
/// have a host.
///
/// # Errors
///
/// [`IrohTransportError::InvalidRelayUrl`],
/// [`IrohTransportError::UnsupportedRelayScheme`] or
/// [`IrohTransportError::RelayUrlWithoutHost`].
pub fn parse_relay_url(url: &str) -> Result<RelayUrl> {
    let relay = RelayUrl::from_str(url).map_err(|source| IrohTransportError::InvalidRelayUrl {
        url: url.to_owned(),
        source,
    })?;
    match relay.scheme() {
        "http" | "https" => {}
        other => {
            return Err(IrohTransportError::UnsupportedRelayScheme {
                url: url.to_owned(),
                scheme: other.to_owned(),
            });
        }
    }
    if relay.host().is_none() {
        return Err(IrohTransportError::RelayUrlWithoutHost {
            url: url.to_owned(),
        });
    }
    Ok(relay)
}

/// True when `relay`'s host is a loopback address: an IPv4 address in
/// 127.0.0.0/8, the IPv6 address `::1`, or the name `localhost` (any case).
///
/// Such a relay is reachable from this machine only, so neither plain http
/// to it ([`PlainTextPolicy::AllowLoopback`](crate::config::PlainTextPolicy))
/// nor QUIC address discovery against it (`endpoint.rs`) exposes anything.
pub fn is_loopback_relay(relay: &RelayUrl) -> bool {
    match relay.host() {
        Some(::url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(::url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(::url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// Parses a configured relay URL as the transport uses it: a missing
/// trailing `/` is added first, so that the last path segment is kept (as
/// `kitsune2_transport_iroh` does).
///
/// # Errors
///
/// As [`parse_relay_url`].
pub fn normalize_relay_url(url: &str) -> Result<RelayUrl> {
    if url.ends_with('/') {
        parse_relay_url(url)
    } else {
        parse_relay_url(&format!("{url}/"))
    }
}

/// The relay part of a peer URL: `{scheme}://{host}:{port}{path}` with the
/// path's trailing `/` removed.
fn relay_prefix(relay: &RelayUrl) -> Result<String> {
    let host = match relay.host() {
        Some(::url::Host::Ipv6(addr)) => format!("[{addr}]"),
        Some(other) => other.to_string(),
        None => {
            return Err(IrohTransportError::RelayUrlWithoutHost {
                url: relay.to_string(),
            });
        }
    };
    let port =
        relay
            .port_or_known_default()
            .ok_or_else(|| IrohTransportError::RelayUrlWithoutPort {
                url: relay.to_string(),
            })?;
    let path = relay.path().trim_end_matches('/');
    Ok(format!("{}://{host}:{port}{path}", relay.scheme()))
}

/// Length in bytes of the peer URL of any endpoint on `relay`.
///
/// # Errors
///
/// As [`peer_url`].
pub fn peer_url_len(relay: &RelayUrl) -> Result<usize> {
    Ok(relay_prefix(relay)?.len() + 1 + ENDPOINT_ID_HEX_LEN)
}

/// The peer URL of `endpoint_id` on `relay`.
///
/// # Errors
///
/// [`IrohTransportError::RelayUrlWithoutHost`],
/// [`IrohTransportError::RelayUrlWithoutPort`], or
/// [`IrohTransportError::InvalidPeerUrl`] if kitsune2 rejects the result.
pub fn peer_url(relay: &RelayUrl, endpoint_id: EndpointId) -> Result<Url> {
    let url = format_peer_url(&relay_prefix(relay)?, endpoint_id.as_bytes());
    Url::from_str(&url).map_err(|source| IrohTransportError::InvalidPeerUrl { url, source })
}

/// Splits a peer URL into its relay URL and endpoint id, with the core's
/// [`PeerAddr::parse`].
///
/// # Errors
///
/// [`IrohTransportError::PeerUrlWithoutEndpointId`] if there is no non-empty
/// last path segment, [`IrohTransportError::InvalidEndpointId`] if it is not
/// an endpoint id, or a relay URL error for what comes before it.
pub fn parse_peer_url(url: &Url) -> Result<(RelayUrl, EndpointId)> {
    let addr = PeerAddr::parse(url).map_err(|refusal| refused(url, refusal))?;
    let endpoint_id = EndpointId::from_bytes(&addr.id).map_err(|source| {
        IrohTransportError::InvalidEndpointId {
            url: url.as_str().to_owned(),
            source,
        }
    })?;
    let relay = parse_relay_url(&addr.relay_url)?;
    Ok((relay, endpoint_id))
}

/// This crate's error for a peer URL that [`PeerAddr::parse`] refused
/// (`refusal`), with iroh's reading of the last segment as the source.
fn refused(url: &Url, refusal: kitsune2_iroh_core::CoreError) -> IrohTransportError {
    let text = url.as_str().to_owned();
    match url.peer_id().map(EndpointId::from_str) {
        None => IrohTransportError::PeerUrlWithoutEndpointId { url: text },
        Some(Err(source)) => IrohTransportError::InvalidEndpointId { url: text, source },
        // iroh also reads base32 ids; a peer URL carries hex only.
        Some(Ok(_)) => IrohTransportError::InvalidPeerUrl {
            url: text,
            source: K2Error::other_src("peer URL", refusal),
        },
    }
}
