//! Per-space URLs (a space on a relay of its own): published to that space
//! alone, presented in preflights to peers on that relay, withdrawn again.

mod common;

use common::*;
use kitsune2_api::{Config, TxImp, Url};
use kitsune2_iroh_core::id_to_hex;
use kitsune2_iroh_core::mem::MemNetwork;

/// The relay the tests' spaces name; nodes start on `http://mem:1/`.
const SPACE_RELAY: &str = "http://mem:2/";

fn url_on(relay: &str, node: &Node) -> Url {
    Url::from_str(format!("{relay}{}", id_to_hex(&node.id))).unwrap()
}

/// Moves `node`'s global URL to `relay`.
fn move_to(node: &mut Node, relay: &str) {
    node.url = url_on(relay, node);
    node.ep.set_url(Some(node.url.clone()));
}

/// Gives `node` the test space's own relay.
async fn configure_space_relay(node: &Node) {
    node.ep.set_space_relay(space(), Some(SPACE_RELAY));
    node.tx
        .configure_for_space(space(), &Config::default())
        .await
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn space_url_goes_to_that_space_alone_and_into_stats() {
    let net = MemNetwork::new();
    let a = Node::new(&net, 1);
    settle().await;
    configure_space_relay(&a).await;
    let space_url = url_on(SPACE_RELAY, &a);
    {
        let ev = a.events();
        assert_eq!(ev.space_listening.last(), Some(&space_url));
        assert!(
            !ev.listening.contains(&space_url),
            "the global handler heard the space url: {:?}",
            ev.listening
        );
    }
    let stats = a.tx.dump_network_stats().await.unwrap();
    assert_eq!(
        stats.transport_stats.peer_urls,
        vec![a.url.clone(), space_url]
    );
    // The global URL stays what it was.
    assert_eq!(a.imp.url(), Some(a.url.clone()));
}

#[tokio::test(start_paused = true)]
async fn dialer_presents_its_space_url_to_a_peer_on_the_space_relay() {
    let net = MemNetwork::new();
    let a = Node::new(&net, 1);
    let mut on_space = Node::new(&net, 2);
    let mut on_global = Node::new(&net, 3);
    move_to(&mut on_space, SPACE_RELAY);
    configure_space_relay(&a).await;

    a.send(&on_space, b"space").await.unwrap();
    let (from, data) = on_space.recv().await;
    assert_eq!(&data[..], b"space");
    assert_eq!(from, url_on(SPACE_RELAY, &a));
    assert_eq!(on_space.events().preflights[0].0, url_on(SPACE_RELAY, &a));

    a.send(&on_global, b"global").await.unwrap();
    let (from, _) = on_global.recv().await;
    assert_eq!(
        from, a.url,
        "a peer on the global relay gets the global url"
    );
}

#[tokio::test(start_paused = true)]
async fn acceptor_answers_with_its_space_url_to_a_peer_on_the_space_relay() {
    let net = MemNetwork::new();
    let mut a = Node::new(&net, 1);
    let mut on_space = Node::new(&net, 2);
    move_to(&mut on_space, SPACE_RELAY);
    configure_space_relay(&a).await;
    // The peer dials a at its space URL.
    a.url = url_on(SPACE_RELAY, &a);

    on_space.send(&a, b"to a").await.unwrap();
    let (from, _) = a.recv().await;
    assert_eq!(from, on_space.url);
    a.send(&on_space, b"answer").await.unwrap();
    let (from, data) = on_space.recv().await;
    assert_eq!(&data[..], b"answer");
    assert_eq!(from, url_on(SPACE_RELAY, &a));
    assert_eq!(on_space.events().preflights[0].0, url_on(SPACE_RELAY, &a));
}

#[tokio::test(start_paused = true)]
async fn a_peer_on_an_unknown_relay_gets_the_global_url() {
    let net = MemNetwork::new();
    let a = Node::new(&net, 1);
    let mut elsewhere = Node::new(&net, 2);
    move_to(&mut elsewhere, "http://mem:3/");
    configure_space_relay(&a).await;
    a.send(&elsewhere, b"x").await.unwrap();
    assert_eq!(elsewhere.recv().await.0, a.url);
}

#[tokio::test(start_paused = true)]
async fn unconfigure_withdraws_the_space_url() {
    let net = MemNetwork::new();
    let mut a = Node::new(&net, 1);
    let mut on_space = Node::new(&net, 2);
    move_to(&mut on_space, SPACE_RELAY);
    configure_space_relay(&a).await;

    // While the space has a URL of its own, global changes pass it by.
    move_to(&mut a, "http://mem:4/");
    settle().await;
    assert_eq!(a.events().listening.last(), Some(&a.url));
    assert_eq!(
        a.events().space_listening.last(),
        Some(&url_on(SPACE_RELAY, &a))
    );

    a.tx.unconfigure_for_space(space()).await.unwrap();
    let stats = a.tx.dump_network_stats().await.unwrap();
    assert_eq!(stats.transport_stats.peer_urls, vec![a.url.clone()]);
    // New connections present the global URL again...
    a.send(&on_space, b"after").await.unwrap();
    assert_eq!(on_space.recv().await.0, a.url);
    // ...and the space hears global changes again.
    move_to(&mut a, "http://mem:5/");
    settle().await;
    assert_eq!(a.events().space_listening.last(), Some(&a.url));
}

#[tokio::test(start_paused = true)]
async fn a_bad_space_relay_is_an_error_and_changes_nothing() {
    let net = MemNetwork::new();
    let a = Node::new(&net, 1);
    settle().await;
    let heard = a.events().space_listening.len();
    a.ep.set_space_relay(space(), Some("not a url/"));
    let err =
        a.tx.configure_for_space(space(), &Config::default())
            .await
            .unwrap_err();
    assert!(err.to_string().contains("not a url"), "{err}");
    assert_eq!(a.events().space_listening.len(), heard);
    let stats = a.tx.dump_network_stats().await.unwrap();
    assert_eq!(stats.transport_stats.peer_urls, vec![a.url.clone()]);
}

#[tokio::test(start_paused = true)]
async fn configure_after_close_is_an_error() {
    let net = MemNetwork::new();
    let a = Node::new(&net, 1);
    a.ep.set_space_relay(space(), Some(SPACE_RELAY));
    a.tx.close().await;
    let err =
        a.tx.configure_for_space(space(), &Config::default())
            .await
            .unwrap_err();
    assert!(err.to_string().contains("closed"), "{err}");
}
