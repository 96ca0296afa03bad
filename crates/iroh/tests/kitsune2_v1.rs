//! `kitsune2/1` over iroh: negotiation (two nodes of this crate pick `/1`,
//! a peer that speaks only `/0`, as the incumbent, gets `/0` in both dial
//! directions), a small message overtaking a large one, large sends
//! cancelled mid-message that leave the connection and every other message
//! alone, and more concurrent large sends than the receiver's
//! `maxMessageStreams` (default and 2) held back without loss. The interop
//! tests (`interop*.rs`) show the incumbent unaffected: they send messages
//! above the large-message threshold both ways.

use kitsune2_iroh::endpoint::{ALPN, ALPN_V1, accept_kitsune2_v1};
use kitsune2_iroh::url::peer_url;
use kitsune2_iroh::{IrohEndpoint, RelayUrl};
use kitsune2_iroh_core::{Endpoint, PeerAddr, WireVersion};
use kitsune2_iroh_test_support::loopback_endpoint;
use kitsune2_iroh_test_support::prelude::*;

/// An [`IrohEndpoint`] on `relay` that accepts `/1`, and the iroh
/// endpoint it wraps.
async fn endpoint(relay: &RelayUrl) -> (IrohEndpoint, kitsune2_iroh::Endpoint) {
    let ep = loopback_endpoint(relay).await;
    accept_kitsune2_v1(&ep);
    (IrohEndpoint::new(ep.clone()), ep)
}

/// Two nodes of ours with `kitsune2V1` on, connected by a first message.
async fn connected_v1() -> (EmbeddedRelay, Node, Node) {
    connected_v1_with(IrohTransportConfig::default().max_message_streams).await
}

/// As [`connected_v1`], `b` with `maxMessageStreams` at `b_streams`.
async fn connected_v1_with(b_streams: usize) -> (EmbeddedRelay, Node, Node) {
    let relay = EmbeddedRelay::start().await.expect("the relay starts");
    let v1 = |max_message_streams| {
        let config = IrohTransportConfig {
            relay_url: Some(relay.url().as_str().to_owned()),
            relay_allow_plain_text: true,
            kitsune2_v1: true,
            max_message_streams,
            ..Default::default()
        };
        Arc::new(builder_with(factory(true), config, true))
    };
    let a = try_node(v1(IrohTransportConfig::default().max_message_streams))
        .await
        .unwrap();
    let mut b = try_node(v1(b_streams)).await.unwrap();
    notify(&a, &b.url, Bytes::from_static(b"hi")).await;
    next(&mut b.received, "first message").await;
    (relay, a, b)
}

async fn addr_of(ep: &IrohEndpoint) -> PeerAddr {
    let mut rx = ep.watch_url();
    let url = timeout(BOUND, rx.wait_for(Option::is_some))
        .await
        .expect("no URL published in time")
        .unwrap()
        .clone()
        .unwrap();
    PeerAddr::parse(&url).unwrap()
}

/// `a` dials `b`: the wire version each side sees.
async fn dial(a: &IrohEndpoint, b: &IrohEndpoint) -> (WireVersion, WireVersion) {
    let peer = addr_of(b).await;
    let (ac, bc) = timeout(BOUND, async { tokio::join!(a.connect(&peer), b.accept()) })
        .await
        .expect("connect timed out");
    let (ac, bc) = (ac.unwrap(), bc.expect("endpoint open").unwrap());
    (ac.wire_version(), bc.wire_version())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ours_pick_v1_and_a_peer_that_speaks_only_v0_gets_v0_both_ways() {
    let relay = EmbeddedRelay::start().await.unwrap();
    let (a, _) = endpoint(relay.url()).await;
    let (b, b_iroh) = endpoint(relay.url()).await;
    assert_eq!(
        dial(&a, &b).await,
        (WireVersion::V1, WireVersion::V1),
        "ours with ours"
    );

    // An acceptor that lists only `kitsune2/0`, as the incumbent does (and
    // ours without `kitsune2V1`).
    let old_iroh = loopback_endpoint(relay.url()).await;
    let old = IrohEndpoint::new(old_iroh.clone());
    assert_eq!(
        dial(&a, &old).await,
        (WireVersion::V0, WireVersion::V0),
        "our dial to a /0-only acceptor"
    );

    // A dialer that offers only `kitsune2/0`, as the incumbent does.
    let b_addr = iroh::EndpointAddr::from_parts(
        b_iroh.id(),
        [iroh::TransportAddr::Relay(relay.url().clone())],
    );
    let (raw, accepted) = timeout(BOUND, async {
        tokio::join!(old_iroh.connect(b_addr, ALPN), b.accept())
    })
    .await
    .expect("connect timed out");
    assert_eq!(raw.unwrap().alpn(), ALPN);
    let accepted = accepted.expect("endpoint open").unwrap();
    assert_eq!(accepted.wire_version(), WireVersion::V0, "a /0-only dialer");
    assert_eq!(ALPN_V1, b"kitsune2/1");
    assert_eq!(
        peer_url(relay.url(), b_iroh.id()).unwrap(),
        addr_of(&b).await.url
    );
    relay.shutdown().await.unwrap();
}

/// Tags `n` bytes with `tag` in the first byte.
fn tagged(tag: u8, n: usize) -> Bytes {
    let mut v = vec![0x5a; n];
    v[0] = tag;
    v.into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_small_message_overtakes_a_large_one() {
    let (relay, a, mut b) = connected_v1().await;
    let large = tagged(1, 32 * 1024 * 1024);
    let tx = a.transport.clone();
    let to = b.url.clone();
    let big = large.clone();
    let large_send =
        tokio::spawn(async move { tx.send_space_notify(to, TEST_SPACE_ID, big).await });
    // The large message's stream is open and filling (its peer has taken
    // bytes of it) before the small one goes.
    tokio::time::sleep(Duration::from_millis(20)).await;
    notify(&a, &b.url, tagged(2, 100)).await;
    let (_, first) = next(&mut b.received, "first").await;
    let (_, second) = next(&mut b.received, "second").await;
    assert_eq!(first, tagged(2, 100), "the small one first");
    assert_eq!(second.len(), large.len());
    assert!(second == large, "the large one whole");
    timeout(BOUND, large_send).await.unwrap().unwrap().unwrap();
    close_all(&[&a, &b]).await;
    relay.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn large_sends_cancelled_mid_message_leave_everything_else_alone() {
    let (relay, a, mut b) = connected_v1().await;
    // Tags of the large sends that returned `Ok` (not cancelled in time).
    let mut completed = Vec::new();
    for i in 0..5u8 {
        // Cancelled, in all likelihood, while its 8 MiB are still going out.
        let sent = timeout(
            Duration::from_millis(2),
            a.transport
                .send_space_notify(b.url.clone(), TEST_SPACE_ID, tagged(100 + i, 8 << 20)),
        )
        .await;
        if matches!(sent, Ok(Ok(()))) {
            completed.push(100 + i);
        }
        notify(&a, &b.url, tagged(i, 100)).await;
    }
    assert!(completed.len() < 5, "no send was cancelled mid-message");
    let whole = tagged(200, 4 << 20);
    notify(&a, &b.url, whole.clone()).await;
    let mut small = Vec::new();
    let mut large = Vec::new();
    loop {
        let (_, data) = next(&mut b.received, "message").await;
        if data.len() == 100 {
            small.push(data[0]);
            continue;
        }
        assert!(
            data[1..].iter().all(|b| *b == 0x5a),
            "a large message arrived corrupted"
        );
        if data == whole {
            break;
        }
        large.push(data[0]);
    }
    assert_eq!(large, completed, "the cancelled ones never arrive");
    assert_eq!(small, vec![0, 1, 2, 3, 4], "every small one, in order");
    assert!(
        b.disconnected.try_recv().is_err(),
        "the connection was never closed"
    );
    close_all(&[&a, &b]).await;
    relay.shutdown().await.unwrap();
}

/// More concurrent large sends than the reader takes message streams
/// (16, the default `maxMessageStreams`): QUIC's stream limit makes the
/// extra ones wait, and the reader's own check (one stream too many ends
/// the connection) never fires between two nodes of ours.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn more_concurrent_large_sends_than_message_streams_all_arrive() {
    let (relay, a, mut b) = connected_v1().await;
    concurrent_large_sends_all_arrive(&a, &mut b, 64).await;
    close_all(&[&a, &b]).await;
    relay.shutdown().await.unwrap();
}

/// The same with the receiver's `maxMessageStreams` at 2: its QUIC stream
/// limit follows the key (3, with the control stream), so the sender never
/// has more message streams open than the receiver's core takes, and the
/// connection stays. With QUIC's limit left at its default (17) the
/// sender opens up to 16 and the receiver closes the connection at the
/// third.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_low_max_message_streams_holds_senders_back_and_loses_nothing() {
    let (relay, a, mut b) = connected_v1_with(2).await;
    concurrent_large_sends_all_arrive(&a, &mut b, 32).await;
    close_all(&[&a, &b]).await;
    relay.shutdown().await.unwrap();
}

/// `sends` concurrent sends of 256 KiB from `a` to `b` (each above the
/// large-message threshold, so each on a message stream of its own): every
/// one returns `Ok`, arrives once, and `b` never loses the connection.
async fn concurrent_large_sends_all_arrive(a: &Node, b: &mut Node, sends: u8) {
    let tasks: Vec<_> = (0..sends)
        .map(|i| {
            let tx = a.transport.clone();
            let to = b.url.clone();
            tokio::spawn(async move {
                tx.send_space_notify(to, TEST_SPACE_ID, tagged(i, 256 * 1024))
                    .await
            })
        })
        .collect();
    for t in tasks {
        timeout(BOUND, t).await.unwrap().unwrap().unwrap();
    }
    let mut got = Vec::new();
    for _ in 0..sends {
        let (_, data) = next(&mut b.received, "large message").await;
        assert_eq!(data.len(), 256 * 1024);
        got.push(data[0]);
    }
    got.sort_unstable();
    assert_eq!(got, (0..sends).collect::<Vec<_>>(), "each once");
    assert!(
        b.disconnected.try_recv().is_err(),
        "the connection was never closed"
    );
}
