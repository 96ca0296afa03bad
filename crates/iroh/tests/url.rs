//! Peer URL formatting and parsing, against the format of
//! `kitsune2_transport_iroh` (relay URL, path kept, port always written,
//! endpoint id in lowercase hex as last segment).

use kitsune2_api::Url;
use kitsune2_iroh::url::{parse_peer_url, parse_relay_url, peer_url, peer_url_len};
use kitsune2_iroh::{EndpointId, IrohTransportError, RelayUrl, SecretKey};
use proptest::prelude::*;
use std::str::FromStr;

const ID_AA: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

fn id_aa() -> EndpointId {
    EndpointId::from_str(ID_AA).unwrap()
}

fn relay(s: &str) -> RelayUrl {
    RelayUrl::from_str(s).unwrap()
}

/// (relay URL, expected peer URL for endpoint id `aa…aa`), as the
/// incumbent's documented and tested canonical form gives them.
const VECTORS: &[(&str, &str)] = &[
    ("https://example.com:444", "https://example.com:444/"),
    ("http://example.com", "http://example.com:80/"),
    ("http://example.com:444", "http://example.com:444/"),
    ("https://[2001:db8::1]", "https://[2001:db8::1]:443/"),
    ("https://[2001:db8::1]:8443/", "https://[2001:db8::1]:8443/"),
    (
        "http://127.0.0.1:4433/relay/",
        "http://127.0.0.1:4433/relay/",
    ),
    (
        "http://127.0.0.1:4433/relay",
        "http://127.0.0.1:4433/relay/",
    ),
    (
        "https://boot.example.com:443/relay/",
        "https://boot.example.com:443/relay/",
    ),
    (
        "https://use1-1.relay.n0.iroh-canary.iroh.link./",
        "https://use1-1.relay.n0.iroh-canary.iroh.link.:443/",
    ),
];

#[test]
fn format_vectors() {
    for (relay_str, prefix) in VECTORS {
        let url = peer_url(&relay(relay_str), id_aa()).unwrap();
        assert_eq!(
            url.as_str(),
            format!("{prefix}{ID_AA}"),
            "relay {relay_str}"
        );
        assert_eq!(
            peer_url_len(&relay(relay_str)).unwrap(),
            url.as_str().len(),
            "relay {relay_str}"
        );
    }
}

#[test]
fn parse_vectors() {
    for (_, prefix) in VECTORS {
        let url = Url::from_str(format!("{prefix}{ID_AA}")).unwrap();
        let (relay_url, id) = parse_peer_url(&url).unwrap();
        assert_eq!(id, id_aa());
        // The url crate drops a scheme's default port; the relay is the same.
        assert_eq!(relay_url, relay(prefix));
        // And back, exactly.
        assert_eq!(peer_url(&relay_url, id).unwrap(), url);
    }
}

#[test]
fn endpoint_id_is_lowercase_hex() {
    let key = SecretKey::from_bytes(&[7; 32]);
    let id = key.public();
    let url = peer_url(&relay("http://127.0.0.1:1/"), id).unwrap();
    let last = url.peer_id().unwrap();
    assert_eq!(last.len(), 64);
    assert!(
        last.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    );
    let bytes: Vec<u8> = (0..32)
        .map(|i| u8::from_str_radix(&last[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    assert_eq!(bytes, id.as_bytes());
}

#[test]
fn url_without_endpoint_id_is_rejected() {
    let url = Url::from_str("http://127.0.0.1:4433").unwrap();
    assert!(matches!(
        parse_peer_url(&url),
        Err(IrohTransportError::PeerUrlWithoutEndpointId { .. })
    ));
}

#[test]
fn url_with_bad_endpoint_id_is_rejected() {
    for bad in ["nothex", "aaaa", &"g".repeat(64), &"a".repeat(66)] {
        let url = Url::from_str(format!("http://127.0.0.1:4433/relay/{bad}")).unwrap();
        let err = parse_peer_url(&url).unwrap_err();
        assert!(
            matches!(err, IrohTransportError::InvalidEndpointId { .. }),
            "{bad}: {err:?}"
        );
        assert!(std::error::Error::source(&err).is_some());
    }
}

#[test]
fn peer_url_on_non_http_scheme_is_rejected() {
    let url = Url::from_str(format!("ws://127.0.0.1:4433/{ID_AA}")).unwrap();
    assert!(matches!(
        parse_peer_url(&url),
        Err(IrohTransportError::UnsupportedRelayScheme { .. })
    ));
}

#[test]
fn relay_url_errors() {
    assert!(matches!(
        parse_relay_url("::"),
        Err(IrohTransportError::InvalidRelayUrl { .. })
    ));
    assert!(matches!(
        parse_relay_url("file:///tmp/x"),
        Err(IrohTransportError::UnsupportedRelayScheme { .. })
    ));
}

fn host() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z][a-z0-9]{0,10}(\\.[a-z][a-z0-9]{0,10}){0,3}",
        any::<[u8; 4]>().prop_map(|o| format!("{}.{}.{}.{}", o[0], o[1], o[2], o[3])),
        any::<[u16; 8]>().prop_map(|s| format!("[{}]", std::net::Ipv6Addr::from(s))),
    ]
}

proptest! {
    #[test]
    fn round_trip(
        https in any::<bool>(),
        host in host(),
        port in proptest::option::of(1u16..),
        path in proptest::collection::vec("[a-zA-Z0-9_-]{1,8}", 0..4),
        trailing in any::<bool>(),
        key in any::<[u8; 32]>(),
    ) {
        let scheme = if https { "https" } else { "http" };
        let port = port.map(|p| format!(":{p}")).unwrap_or_default();
        let mut relay_str = format!("{scheme}://{host}{port}/{}", path.join("/"));
        if trailing && !path.is_empty() {
            relay_str.push('/');
        }
        let relay_url = relay(&relay_str);
        let id = SecretKey::from_bytes(&key).public();
        let url = peer_url(&relay_url, id).unwrap();
        prop_assert_eq!(url.as_str().len(), peer_url_len(&relay_url).unwrap());
        let (parsed_relay, parsed_id) = parse_peer_url(&url).unwrap();
        prop_assert_eq!(parsed_id, id);
        // The parsed relay URL names the same relay (same scheme, host,
        // port, path), and formats to the same peer URL.
        prop_assert_eq!(parsed_relay.scheme(), relay_url.scheme());
        prop_assert_eq!(parsed_relay.host_str(), relay_url.host_str());
        prop_assert_eq!(parsed_relay.port_or_known_default(), relay_url.port_or_known_default());
        prop_assert_eq!(
            parsed_relay.path().trim_end_matches('/'),
            relay_url.path().trim_end_matches('/')
        );
        prop_assert_eq!(peer_url(&parsed_relay, parsed_id).unwrap(), url);
    }
}
