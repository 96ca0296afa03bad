//! A plain `http` relay on loopback without `relayAllowPlainText`, set up as
//! kitsune2's own tests set it up: `with_default_config()`, then
//! `set_module_config` with only `relayUrl`, then `create` without
//! `validate_config`.
//!
//! `validate_config` refuses that config in both crates; `create` accepts it
//! in both, and refuses (ours only) plain http to any other host.

use kitsune2_iroh_test_support::prelude::*;

/// Both crates' `validate_config` refuse a plain http relay without
/// `relayAllowPlainText`, loopback or not.
fn assert_validate_refuses(builder: &Builder, ours: bool) {
    let err = builder.validate_config().unwrap_err().to_string();
    let expected = if ours {
        "relayAllowPlainText is false"
    } else {
        "Disallowed plaintext relay URL"
    };
    assert!(err.contains(expected), "{err}");
}

/// A node on `factory` with the relay at `relay_url` and no
/// `relayAllowPlainText`, checked to fail `validate_config` and built by
/// `create` anyway.
async fn unflagged_node(factory: DynTransportFactory, relay_url: &str, ours: bool) -> Node {
    let builder = builder_for(factory, relay_url, ours, false);
    assert_validate_refuses(&builder, ours);
    try_node(Arc::new(builder))
        .await
        .expect("create accepts a plain http relay on loopback")
}

/// `from` sends `data` to `to`, which must receive it from `from`.
async fn deliver(from: &Node, to: &mut Node, data: &'static [u8]) {
    notify(from, &to.url, Bytes::from_static(data)).await;
    let (sender, got) = next(&mut to.received, "message").await;
    assert_eq!(sender, from.url);
    assert_eq!(&got[..], data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_accepts_a_plain_loopback_relay_without_the_flag() {
    let relay = EmbeddedRelay::start().await.unwrap();
    let relay_url = relay.url().to_string();
    assert!(relay_url.starts_with("http://127.0.0.1:"), "{relay_url}");
    let mut a = unflagged_node(ours(), &relay_url, true).await;
    let mut b = unflagged_node(ours(), &relay_url, true).await;
    deliver(&a, &mut b, b"over plain http on loopback").await;
    deliver(&b, &mut a, b"and back").await;
    close_all(&[&a, &b]).await;
    relay.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_refuses_a_plain_relay_elsewhere_without_the_flag() {
    for remote in ["http://10.0.0.1:3340/", "http://example.org/relay"] {
        let builder = builder_for(ours(), remote, true, false);
        assert_validate_refuses(&builder, true);
        let err = match timeout(BOUND, try_node(Arc::new(builder))).await {
            Ok(Err(err)) => err.to_string(),
            Ok(Ok(_)) => panic!("create accepted plain http to {remote}"),
            Err(_) => panic!("create did not refuse {remote} before any I/O"),
        };
        assert!(err.contains("relayAllowPlainText is false"), "{err}");
        assert!(err.contains(remote), "{err}");
    }
}

/// The incumbent accepts the same config at `create` (and refuses it at
/// `validate_config`); its node and ours, both so configured, talk. It also
/// accepts plain http to a host other than loopback, which ours refuses.
#[test]
fn incumbent_create_accepts_the_same_config() {
    in_netns("incumbent_create_accepts_the_same_config", || {
        runtime().block_on(async {
            let relay = EmbeddedRelay::start().await.unwrap();
            let relay_url = relay.url().to_string();
            let mut theirs_node = unflagged_node(theirs(), &relay_url, false).await;
            let mut ours_node = unflagged_node(ours(), &relay_url, true).await;
            deliver(&theirs_node, &mut ours_node, b"incumbent to ours").await;
            deliver(&ours_node, &mut theirs_node, b"ours to incumbent").await;

            // Nothing answers on 10.0.0.1 inside the namespace; the
            // incumbent's `create` does not look.
            let builder = builder_for(theirs(), "http://10.0.0.1:3340/", false, false);
            assert_validate_refuses(&builder, false);
            let builder = Arc::new(builder);
            let handler = theirs_node.handler.clone();
            let elsewhere = timeout(BOUND, builder.transport.create(builder.clone(), handler))
                .await
                .expect("incumbent create timed out")
                .expect("the incumbent's create has no plain-text check");
            timeout(BOUND, async {
                elsewhere.close().await;
                theirs_node.transport.close().await;
                ours_node.transport.close().await;
            })
            .await
            .unwrap();
            relay.shutdown().await.unwrap();
        });
    });
}
