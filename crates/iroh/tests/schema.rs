//! The `schema` feature: the JSON schema of the config names every key with
//! its real default, in the shape of `kitsune2_transport_iroh`'s schema.

use kitsune2_iroh::config::{
    DEFAULT_CONNECT_TIMEOUT_S, DEFAULT_MAX_FRAME_BYTES, DEFAULT_RELAY_KEEPALIVE_INTERVAL_S,
};
use kitsune2_iroh::{IrohTransportConfig, IrohTransportModConfig};
use serde_json::{Map, Value, json};

/// Every key under `irohTransport`, in declaration order.
const KEYS: [&str; 16] = [
    "relayUrl",
    "relayAllowPlainText",
    "maxFrameBytes",
    "connectTimeoutS",
    "authMaterialRelayBase64",
    "relayKeepaliveIntervalS",
    "writeTimeoutS",
    "maxPendingConnections",
    "maxConnections",
    "partialFrameBudgetBytes",
    "frameProgressTimeoutS",
    "largeMessageBytes",
    "maxMessageStreams",
    "silenceTimeoutS",
    "maxConcurrentDials",
    "kitsune2V1",
];

/// The keys the incumbent does not have: limits of ours, after its keys.
const OURS_ONLY: [&str; 11] = [
    "authMaterialRelayBase64",
    "writeTimeoutS",
    "maxPendingConnections",
    "maxConnections",
    "partialFrameBudgetBytes",
    "frameProgressTimeoutS",
    "largeMessageBytes",
    "maxMessageStreams",
    "silenceTimeoutS",
    "maxConcurrentDials",
    "kitsune2V1",
];

/// The schema of `irohTransport`'s value, its `$ref` followed.
fn inner(schema: &Value) -> &Map<String, Value> {
    assert_eq!(schema["required"], json!(["irohTransport"]), "{schema:#}");
    let reference = schema["properties"]["irohTransport"]["$ref"]
        .as_str()
        .unwrap_or_else(|| panic!("irohTransport is not a $ref: {schema:#}"));
    let name = reference
        .strip_prefix("#/$defs/")
        .unwrap_or_else(|| panic!("unexpected $ref {reference}"));
    schema["$defs"][name]
        .as_object()
        .unwrap_or_else(|| panic!("no definition {name}: {schema:#}"))
}

fn properties(inner: &Map<String, Value>) -> &Map<String, Value> {
    inner["properties"].as_object().unwrap()
}

fn ours() -> Value {
    serde_json::to_value(schemars::schema_for!(IrohTransportModConfig)).unwrap()
}

fn theirs() -> Value {
    serde_json::to_value(schemars::schema_for!(
        kitsune2_transport_iroh::IrohTransportModConfig
    ))
    .unwrap()
}

#[test]
fn schema_names_every_key_under_iroh_transport_none_required() {
    let schema = ours();
    let inner = inner(&schema);
    let keys: Vec<&str> = properties(inner).keys().map(String::as_str).collect();
    assert_eq!(keys, KEYS);
    assert!(inner.get("required").is_none(), "{inner:#?}");
}

#[test]
fn schema_defaults_are_the_config_defaults() {
    let schema = ours();
    let props = properties(inner(&schema));
    let defaults = serde_json::to_value(IrohTransportConfig::default()).unwrap();
    for key in KEYS {
        assert_eq!(props[key]["default"], defaults[key], "{key}");
    }
    assert_eq!(props["relayUrl"]["default"], Value::Null);
    assert_eq!(props["relayAllowPlainText"]["default"], json!(false));
    assert_eq!(
        props["maxFrameBytes"]["default"],
        json!(DEFAULT_MAX_FRAME_BYTES)
    );
    assert_eq!(
        props["connectTimeoutS"]["default"],
        json!(DEFAULT_CONNECT_TIMEOUT_S)
    );
    assert_eq!(props["authMaterialRelayBase64"]["default"], Value::Null);
    assert_eq!(
        props["relayKeepaliveIntervalS"]["default"],
        json!(DEFAULT_RELAY_KEEPALIVE_INTERVAL_S)
    );
}

/// Same keys, order and types as the incumbent's schema; ours adds
/// `authMaterialRelayBase64` and its own limits ([`OURS_ONLY`]) and states
/// the real defaults where the incumbent's states 0.
#[test]
fn schema_has_the_incumbents_shape() {
    let (ours, theirs) = (ours(), theirs());
    let (ours_inner, theirs_inner) = (inner(&ours), inner(&theirs));
    assert_eq!(ours_inner.get("required"), theirs_inner.get("required"));
    let (ours_props, theirs_props) = (properties(ours_inner), properties(theirs_inner));
    let ours_keys: Vec<&str> = ours_props
        .keys()
        .map(String::as_str)
        .filter(|k| !OURS_ONLY.contains(k))
        .collect();
    let theirs_keys: Vec<&str> = theirs_props.keys().map(String::as_str).collect();
    assert_eq!(ours_keys, theirs_keys);
    for key in theirs_keys {
        for facet in ["type", "format", "minimum"] {
            assert_eq!(
                ours_props[key].get(facet),
                theirs_props[key].get(facet),
                "{key} {facet}"
            );
        }
    }
    for key in ["relayUrl", "relayAllowPlainText"] {
        assert_eq!(
            ours_props[key]["default"], theirs_props[key]["default"],
            "{key}"
        );
    }
    // The incumbent's schema states its fields' type defaults here.
    for key in [
        "maxFrameBytes",
        "connectTimeoutS",
        "relayKeepaliveIntervalS",
    ] {
        assert_eq!(theirs_props[key]["default"], json!(0), "{key}");
        assert_ne!(ours_props[key]["default"], json!(0), "{key}");
    }
}
