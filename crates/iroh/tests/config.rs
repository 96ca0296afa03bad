//! Config: JSON compatibility with `kitsune2_transport_iroh` and validation.

use kitsune2_iroh::config::{MAX_MESSAGE_STREAMS_LIMIT, MIN_SILENCE_TIMEOUT_S};
use kitsune2_iroh::{
    IrohTransportConfig, IrohTransportError, IrohTransportModConfig, PlainTextPolicy,
};
use kitsune2_iroh_core::{
    DEFAULT_MAX_CONCURRENT_DIALS, DEFAULT_MAX_MESSAGE_STREAMS, DEFAULT_SILENCE_TIMEOUT,
};
use kitsune2_transport_iroh as incumbent;

fn incumbent_full() -> incumbent::IrohTransportModConfig {
    incumbent::IrohTransportModConfig {
        iroh_transport: incumbent::IrohTransportConfig {
            relay_url: Some("http://127.0.0.1:4433/relay/".into()),
            relay_allow_plain_text: true,
            max_frame_bytes: 12_345,
            connect_timeout_s: 7,
            auth_material_relay_base64: Some("c2VjcmV0".into()),
            relay_keepalive_interval_s: 33,
        },
    }
}

fn ours_full() -> IrohTransportModConfig {
    IrohTransportModConfig {
        iroh_transport: IrohTransportConfig {
            relay_url: Some("http://127.0.0.1:4433/relay/".into()),
            relay_allow_plain_text: true,
            max_frame_bytes: 12_345,
            connect_timeout_s: 7,
            auth_material_relay_base64: Some("c2VjcmV0".into()),
            relay_keepalive_interval_s: 33,
            ..IrohTransportConfig::default()
        },
    }
}

#[test]
fn defaults_serialize_identically() {
    let theirs = serde_json::to_value(incumbent::IrohTransportModConfig::default()).unwrap();
    let ours = serde_json::to_value(IrohTransportModConfig::default()).unwrap();
    assert_eq!(ours, theirs);
}

#[test]
fn keys_are_the_documented_ones() {
    let v = serde_json::to_value(ours_full()).unwrap();
    let inner = v["irohTransport"].as_object().unwrap();
    let mut keys: Vec<&str> = inner.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "authMaterialRelayBase64",
            "connectTimeoutS",
            "maxFrameBytes",
            "relayAllowPlainText",
            "relayKeepaliveIntervalS",
            "relayUrl",
        ]
    );
    assert_eq!(inner["relayUrl"], "http://127.0.0.1:4433/relay/");
    assert_eq!(inner["relayKeepaliveIntervalS"], 33);
}

#[test]
fn incumbent_json_reads_as_ours() {
    let json = serde_json::to_string(&incumbent_full()).unwrap();
    let ours: IrohTransportModConfig = serde_json::from_str(&json).unwrap();
    assert_eq!(ours, ours_full());
}

#[test]
fn our_json_reads_as_incumbent() {
    let json = serde_json::to_string(&ours_full()).unwrap();
    let theirs: incumbent::IrohTransportModConfig = serde_json::from_str(&json).unwrap();
    assert_eq!(
        serde_json::to_value(theirs).unwrap(),
        serde_json::to_value(incumbent_full()).unwrap()
    );
}

#[test]
fn optional_fields_default_like_incumbent() {
    // The fields with serde defaults in the incumbent may be left out.
    let json = r#"{"irohTransport":{"relayUrl":null,"relayAllowPlainText":false,
        "maxFrameBytes":1000,"connectTimeoutS":5}}"#;
    let theirs: incumbent::IrohTransportModConfig = serde_json::from_str(json).unwrap();
    let ours: IrohTransportModConfig = serde_json::from_str(json).unwrap();
    assert_eq!(ours.iroh_transport.relay_keepalive_interval_s, 120);
    assert_eq!(ours.iroh_transport.auth_material_relay_base64, None);
    assert_eq!(
        serde_json::to_value(ours).unwrap(),
        serde_json::to_value(theirs).unwrap()
    );
}

/// Our limits beyond the incumbent's keys: written only when not at their
/// defaults, read back, ignored by the incumbent, and passed to the core.
#[test]
fn our_own_limits_round_trip_and_the_incumbent_ignores_them() {
    let mut ours = ours_full();
    let c = &mut ours.iroh_transport;
    c.write_timeout_s = 3;
    c.max_pending_connections = 7;
    c.max_connections = 70;
    c.partial_frame_budget_bytes = 1 << 20;
    c.frame_progress_timeout_s = 9;
    c.max_message_streams = 2;
    c.silence_timeout_s = 4;
    c.max_concurrent_dials = 2;
    let json = serde_json::to_value(&ours).unwrap();
    let inner = &json["irohTransport"];
    assert_eq!(inner["writeTimeoutS"], 3);
    assert_eq!(inner["maxPendingConnections"], 7);
    assert_eq!(inner["maxConnections"], 70);
    assert_eq!(inner["partialFrameBudgetBytes"], 1 << 20);
    assert_eq!(inner["frameProgressTimeoutS"], 9);
    assert_eq!(inner["maxMessageStreams"], 2);
    assert_eq!(inner["silenceTimeoutS"], 4);
    assert_eq!(inner["maxConcurrentDials"], 2);
    assert_eq!(ours.iroh_transport.core_config().max_concurrent_dials, 2);
    let back: IrohTransportModConfig = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(back, ours);
    let theirs: incumbent::IrohTransportModConfig = serde_json::from_value(json).unwrap();
    assert_eq!(
        serde_json::to_value(theirs).unwrap(),
        serde_json::to_value(incumbent_full()).unwrap()
    );
    let core = ours.iroh_transport.core_config();
    assert_eq!(core.write_timeout.as_secs(), 3);
    assert_eq!(core.max_pending_connections, 7);
    assert_eq!(core.max_connections, 70);
    assert_eq!(core.partial_frame_budget, 1 << 20);
    assert_eq!(core.frame_progress_timeout.as_secs(), 9);
    assert_eq!(core.max_message_streams, 2);
    assert_eq!(core.silence_timeout, std::time::Duration::from_secs(4));
    assert_eq!(core.max_frame_bytes, 12_345);
    assert_eq!(core.connect_timeout.as_secs(), 7);
}

#[test]
fn our_own_limits_are_checked() {
    let zero = |f: fn(&mut IrohTransportConfig)| {
        let mut c = IrohTransportConfig::default();
        f(&mut c);
        c.validate().unwrap_err()
    };
    for (err, key) in [
        (zero(|c| c.write_timeout_s = 0), "writeTimeoutS"),
        (
            zero(|c| c.frame_progress_timeout_s = 0),
            "frameProgressTimeoutS",
        ),
        (
            zero(|c| c.max_pending_connections = 0),
            "maxPendingConnections",
        ),
        (zero(|c| c.max_connections = 0), "maxConnections"),
        (zero(|c| c.max_concurrent_dials = 0), "maxConcurrentDials"),
        (
            zero(|c| c.partial_frame_budget_bytes = c.max_frame_bytes - 1),
            "partialFrameBudgetBytes",
        ),
    ] {
        assert!(
            matches!(err, IrohTransportError::OutOfRange { key: k, .. } if k == key),
            "{key}: {err:?}"
        );
        assert!(err.to_string().starts_with(key), "{err}");
    }
}

#[test]
fn defaults_are_valid() {
    IrohTransportConfig::default().validate().unwrap();
}

/// The default config gives the core its own defaults for the two keys,
/// and writes neither (checked against the incumbent's JSON above).
#[test]
fn message_streams_and_silence_default_to_the_cores() {
    let c = IrohTransportConfig::default();
    assert_eq!(c.max_message_streams, DEFAULT_MAX_MESSAGE_STREAMS);
    assert_eq!(
        u64::from(c.silence_timeout_s),
        DEFAULT_SILENCE_TIMEOUT.as_secs()
    );
    let core = c.core_config();
    assert_eq!(core.max_message_streams, DEFAULT_MAX_MESSAGE_STREAMS);
    assert_eq!(core.silence_timeout, DEFAULT_SILENCE_TIMEOUT);
    let json = serde_json::to_value(&c).unwrap();
    assert!(json.get("maxMessageStreams").is_none(), "{json}");
    assert!(json.get("silenceTimeoutS").is_none(), "{json}");
    assert!(json.get("maxConcurrentDials").is_none(), "{json}");
    assert_eq!(core.max_concurrent_dials, DEFAULT_MAX_CONCURRENT_DIALS);
    let read: IrohTransportConfig = serde_json::from_value(
        serde_json::json!({"relayUrl": null, "relayAllowPlainText": false,
            "maxFrameBytes": 1000, "connectTimeoutS": 5, "maxMessageStreams": 3,
            "silenceTimeoutS": 30}),
    )
    .unwrap();
    assert_eq!(read.max_message_streams, 3);
    assert_eq!(read.silence_timeout_s, 30);
}

/// `maxMessageStreams` from 1 to `MAX_MESSAGE_STREAMS_LIMIT`; 0 would let
/// no large message through at all.
#[test]
fn max_message_streams_is_range_checked() {
    let with = |n: usize| IrohTransportConfig {
        max_message_streams: n,
        ..IrohTransportConfig::default()
    };
    for bad in [0, MAX_MESSAGE_STREAMS_LIMIT + 1, usize::MAX] {
        let err = with(bad).validate().unwrap_err();
        assert!(
            matches!(
                err,
                IrohTransportError::OutOfRange {
                    key: "maxMessageStreams",
                    ..
                }
            ),
            "{bad}: {err:?}"
        );
        assert!(
            err.to_string()
                .starts_with("maxMessageStreams must be from 1 to 1024"),
            "{err}"
        );
        // `create` applies it too.
        assert!(with(bad).validate_for_create().is_err());
    }
    for good in [1, 2, 16, MAX_MESSAGE_STREAMS_LIMIT] {
        with(good).validate().unwrap();
    }
}

/// `silenceTimeoutS` below 3 (0 included: there is no "off") is refused:
/// a live peer is heard from about every second, so a shorter timeout
/// would close healthy connections.
#[test]
fn silence_timeout_is_range_checked_and_zero_is_not_off() {
    let with = |s: u32| IrohTransportConfig {
        silence_timeout_s: s,
        ..IrohTransportConfig::default()
    };
    for bad in 0..MIN_SILENCE_TIMEOUT_S {
        let err = with(bad).validate().unwrap_err();
        assert!(
            matches!(
                err,
                IrohTransportError::OutOfRange {
                    key: "silenceTimeoutS",
                    ..
                }
            ),
            "{bad}: {err:?}"
        );
        assert!(
            err.to_string()
                .starts_with("silenceTimeoutS must be at least 3"),
            "{err}"
        );
        assert!(with(bad).validate_for_create().is_err());
    }
    assert_eq!(MIN_SILENCE_TIMEOUT_S, 3);
    for good in [MIN_SILENCE_TIMEOUT_S, 10, 30, u32::MAX] {
        with(good).validate().unwrap();
        assert_eq!(
            with(good).core_config().silence_timeout.as_secs(),
            u64::from(good)
        );
    }
}

fn with_relay(url: &str, plain: bool) -> IrohTransportConfig {
    IrohTransportConfig {
        relay_url: Some(url.into()),
        relay_allow_plain_text: plain,
        ..Default::default()
    }
}

#[test]
fn https_relay_is_valid_and_http_needs_plain_text() {
    with_relay("https://relay.example:443/relay/", false)
        .validate()
        .unwrap();
    with_relay("http://127.0.0.1:1/", true).validate().unwrap();
    let err = with_relay("http://127.0.0.1:1/", false)
        .validate()
        .unwrap_err();
    assert!(
        matches!(err, IrohTransportError::PlainTextRelayDisallowed { ref url } if url == "http://127.0.0.1:1/"),
        "{err:?}"
    );
}

const LOOPBACK_RELAYS: [&str; 5] = [
    "http://127.0.0.1:3340/",
    "http://127.5.6.7:3340/relay",
    "http://[::1]:3340/",
    "http://localhost:3340/",
    "http://LocalHost/relay/",
];

const REMOTE_RELAYS: [&str; 4] = [
    "http://10.0.0.1:3340/",
    "http://example.org/relay",
    "http://[2001:db8::1]:3340/",
    // Not loopback: only the name `localhost` itself is.
    "http://localhost.example.org/",
];

fn assert_plain_text_refused(result: kitsune2_iroh::Result<()>, relay: &str) {
    match result {
        Err(IrohTransportError::PlainTextRelayDisallowed { ref url }) => assert_eq!(url, relay),
        other => panic!("{relay}: expected PlainTextRelayDisallowed, got {other:?}"),
    }
}

#[test]
fn create_accepts_plain_http_on_loopback_without_the_flag() {
    for relay in LOOPBACK_RELAYS {
        let config = with_relay(relay, false);
        config.validate_for_create().unwrap();
        config
            .validate_with(PlainTextPolicy::AllowLoopback)
            .unwrap();
        // validate_config's rule is the incumbent's: refused, loopback or not.
        assert_plain_text_refused(config.validate(), relay);
        assert_plain_text_refused(config.validate_with(PlainTextPolicy::Strict), relay);
    }
}

#[test]
fn create_refuses_plain_http_elsewhere_without_the_flag() {
    for relay in REMOTE_RELAYS {
        let config = with_relay(relay, false);
        assert_plain_text_refused(config.validate_for_create(), relay);
        assert_plain_text_refused(config.validate(), relay);
        let k2: kitsune2_api::K2Error = config.validate_for_create().unwrap_err().into();
        assert!(
            k2.to_string().contains("relayAllowPlainText is false"),
            "{k2}"
        );
        // The flag allows it under either policy.
        let flagged = with_relay(relay, true);
        flagged.validate().unwrap();
        flagged.validate_for_create().unwrap();
    }
    // https needs no flag anywhere.
    for relay in ["https://example.org/relay", "https://127.0.0.1:443/"] {
        with_relay(relay, false).validate().unwrap();
        with_relay(relay, false).validate_for_create().unwrap();
    }
}

/// `create` runs every other check of `validate_config` too.
#[test]
fn create_applies_the_other_checks_too() {
    let zero_keepalive = IrohTransportConfig {
        relay_keepalive_interval_s: 0,
        ..Default::default()
    };
    assert!(matches!(
        zero_keepalive.validate_for_create(),
        Err(IrohTransportError::ZeroKeepaliveInterval)
    ));
    assert!(matches!(
        with_relay("ftp://127.0.0.1:1/", false).validate_for_create(),
        Err(IrohTransportError::UnsupportedRelayScheme { .. })
    ));
    let tiny_frames = IrohTransportConfig {
        max_frame_bytes: 16,
        ..with_relay("http://127.0.0.1:1/", false)
    };
    assert!(matches!(
        tiny_frames.validate_for_create(),
        Err(IrohTransportError::MaxFrameBytesTooSmall { .. })
    ));
}

/// `TransportFactory::validate_config` refuses a plain http relay on
/// loopback without the flag, in both crates.
#[test]
fn validate_config_refuses_plain_loopback_like_the_incumbent() {
    use kitsune2_api::{Builder, DynTransportFactory};
    let check = |factory: DynTransportFactory, ours: bool, relay: &str| {
        let builder = Builder {
            transport: factory,
            ..kitsune2_core::default_test_builder()
        }
        .with_default_config()
        .unwrap();
        let json = serde_json::to_value(IrohTransportModConfig {
            iroh_transport: with_relay(relay, false),
        })
        .unwrap();
        if ours {
            let config: IrohTransportModConfig = serde_json::from_value(json).unwrap();
            builder.config.set_module_config(&config).unwrap();
        } else {
            let config: incumbent::IrohTransportModConfig = serde_json::from_value(json).unwrap();
            builder.config.set_module_config(&config).unwrap();
        }
        builder.validate_config().unwrap_err().to_string()
    };
    for relay in LOOPBACK_RELAYS {
        let ours = check(kitsune2_iroh::IrohTransportFactory::create(), true, relay);
        assert!(ours.contains("relayAllowPlainText is false"), "{ours}");
        let theirs = check(incumbent::IrohTransportFactory::create(), false, relay);
        assert!(
            theirs.contains("Disallowed plaintext relay URL"),
            "{theirs}"
        );
    }
}

#[test]
fn bad_relay_urls_are_rejected() {
    let err = with_relay("not a url", true).validate().unwrap_err();
    assert!(
        matches!(err, IrohTransportError::InvalidRelayUrl { .. }),
        "{err:?}"
    );
    assert!(std::error::Error::source(&err).is_some());

    let err = with_relay("ftp://relay.example/", true)
        .validate()
        .unwrap_err();
    assert!(
        matches!(err, IrohTransportError::UnsupportedRelayScheme { ref scheme, .. } if scheme == "ftp"),
        "{err:?}"
    );
}

#[test]
fn zero_keepalive_is_rejected() {
    let config = IrohTransportConfig {
        relay_keepalive_interval_s: 0,
        ..Default::default()
    };
    assert!(matches!(
        config.validate(),
        Err(IrohTransportError::ZeroKeepaliveInterval)
    ));
}

#[test]
fn max_frame_bytes_must_carry_a_preflight() {
    // Peer URL on this relay: "http://127.0.0.1:4433/relay/" + 64 hex = 92
    // bytes; a preflight frame adds a 5-byte header and a 4-byte URL length.
    let min = 5 + 4 + "http://127.0.0.1:4433/relay/".len() + 64;
    let mut config = with_relay("http://127.0.0.1:4433/relay/", true);
    config.max_frame_bytes = min;
    config.validate().unwrap();
    config.max_frame_bytes = min - 1;
    match config.validate() {
        Err(IrohTransportError::MaxFrameBytesTooSmall {
            max_frame_bytes,
            min: reported,
        }) => {
            assert_eq!(max_frame_bytes, min - 1);
            assert_eq!(reported, min);
        }
        other => panic!("expected MaxFrameBytesTooSmall, got {other:?}"),
    }
    let no_relay = IrohTransportConfig {
        max_frame_bytes: 16,
        ..Default::default()
    };
    assert!(matches!(
        no_relay.validate(),
        Err(IrohTransportError::MaxFrameBytesTooSmall { .. })
    ));
}

#[test]
fn errors_convert_to_k2error_with_message() {
    let err = IrohTransportConfig {
        relay_keepalive_interval_s: 0,
        ..Default::default()
    }
    .validate()
    .unwrap_err();
    let k2: kitsune2_api::K2Error = err.into();
    assert!(k2.to_string().contains("relayKeepaliveIntervalS"), "{k2}");
}
