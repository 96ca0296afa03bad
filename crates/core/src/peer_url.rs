//! Peer URLs: `<relay url>/<endpoint id as 64 lowercase hex digits>`.

use kitsune2_api::Url;

use crate::error::CoreError;
use crate::traits::EndpointId;

/// Length in characters of an endpoint id in a peer URL (hex).
pub const ENDPOINT_ID_HEX_LEN: usize = 64;

/// Joins a relay URL and an endpoint id into a peer URL's text:
/// `relay` with any trailing `/` removed, then `/`, then the id as
/// [`ENDPOINT_ID_HEX_LEN`] lowercase hex digits. The one place the format
/// is written; [`PeerAddr::parse`] is its inverse.
pub fn format_peer_url(relay: &str, id: &EndpointId) -> String {
    format!("{}/{}", relay.trim_end_matches('/'), id_to_hex(id))
}

/// A peer URL split into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerAddr {
    /// The endpoint id named by the URL's last path segment.
    pub id: EndpointId,
    /// The relay URL: the peer URL without its last segment, with a
    /// trailing `/` (e.g. `http://127.0.0.1:4433/relay/`).
    pub relay_url: String,
    /// The whole peer URL.
    pub url: Url,
}

impl PeerAddr {
    /// Splits a peer URL.
    ///
    /// # Errors
    ///
    /// [`CoreError::InvalidPeerUrl`] when the last segment is not 64 hex
    /// digits.
    pub fn parse(url: &Url) -> Result<Self, CoreError> {
        let invalid = |why| CoreError::InvalidPeerUrl {
            url: url.as_str().to_owned(),
            why,
        };
        let id_text = url
            .peer_id()
            .ok_or_else(|| invalid("no endpoint id path segment"))?;
        let id =
            parse_hex_id(id_text).ok_or_else(|| invalid("endpoint id is not 64 hex digits"))?;
        let s = url.as_str();
        let cut = s.len() - id_text.len();
        Ok(Self {
            id,
            relay_url: s[..cut].to_owned(),
            url: url.clone(),
        })
    }
}

/// Formats an endpoint id as 64 lowercase hex digits, as iroh prints it.
pub fn id_to_hex(id: &EndpointId) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(ENDPOINT_ID_HEX_LEN);
    for b in id {
        s.push(HEX[usize::from(b >> 4)] as char);
        s.push(HEX[usize::from(b & 0xf)] as char);
    }
    s
}

/// Parses 64 hex digits (either case) into an endpoint id.
pub fn parse_hex_id(s: &str) -> Option<EndpointId> {
    let bytes = s.as_bytes();
    if bytes.len() != ENDPOINT_ID_HEX_LEN {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16);
    let mut id = [0u8; 32];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        let hi = digit(pair[0])?;
        let lo = digit(pair[1])?;
        // INVARIANT: two hex digits make a value below 256.
        id[i] = u8::try_from(hi * 16 + lo).expect("two hex digits fit a byte");
    }
    Some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_format() {
        let id = [0xab; 32];
        let url = Url::from_str(format!("http://127.0.0.1:4433/relay/{}", id_to_hex(&id))).unwrap();
        let addr = PeerAddr::parse(&url).unwrap();
        assert_eq!(addr.id, id);
        assert_eq!(addr.relay_url, "http://127.0.0.1:4433/relay/");
        let root = Url::from_str(format!("http://h:1/{}", id_to_hex(&[1; 32]))).unwrap();
        assert_eq!(PeerAddr::parse(&root).unwrap().relay_url, "http://h:1/");
    }

    #[test]
    fn rejects_bad_ids() {
        for bad in [
            "http://h:1/abc",
            "http://h:1",
            &format!("http://h:1/{}", "g".repeat(64)),
        ] {
            let url = Url::from_str(bad).unwrap();
            assert!(
                matches!(PeerAddr::parse(&url), Err(CoreError::InvalidPeerUrl { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn format_and_parse_are_inverse() {
        let id = [0x5a; 32];
        for relay in [
            "http://127.0.0.1:4433/relay",
            "http://127.0.0.1:4433/relay/",
        ] {
            let url = Url::from_str(format_peer_url(relay, &id)).unwrap();
            let addr = PeerAddr::parse(&url).unwrap();
            assert_eq!(addr.id, id);
            assert_eq!(addr.relay_url, "http://127.0.0.1:4433/relay/");
        }
    }

    #[test]
    fn hex_round_trip() {
        let id: EndpointId = core::array::from_fn(|i| i as u8 * 7);
        assert_eq!(parse_hex_id(&id_to_hex(&id)), Some(id));
        assert_eq!(parse_hex_id(&id_to_hex(&id).to_uppercase()), Some(id));
    }
}
