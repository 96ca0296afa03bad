//! Two transports on this crate over real iroh on loopback, each scenario
//! through both the embedded relay and kitsune2's bootstrap server relay:
//! messages both ways with stats and a direct path, reconnect after a
//! disconnect, simultaneous first sends, preflight rejection and a spoofed
//! preflight identity. And, over the embedded relay, which can be stopped:
//! connected peers keep talking over the direct path when the relay goes
//! down, and a dial through the dead relay fails fast without an
//! unresponsive mark.
//!
//! `disconnect_during_traffic_*` and `rejection_reason_reaches_the_dialer_*`
//! guard a fixed bug: a local close used to hide the peer's close code and
//! reason (iroh's QUIC replaces the close reason on a local close).

use iroh::endpoint::ConnectionError;
use iroh::{EndpointAddr, TransportAddr};
use kitsune2_api::{K2Proto, K2WireType};
use kitsune2_iroh::SecretKey;
use kitsune2_iroh::endpoint::ALPN;
use kitsune2_iroh::url::{normalize_relay_url, parse_peer_url, peer_url};
use kitsune2_iroh_codec::{Frame, Limits};
use kitsune2_iroh_test_support::prelude::*;
use kitsune2_test_utils::bootstrap::TestBootstrapSrv;
use std::fmt::Debug;

/// The module the nodes register a handler for.
const MODULE: &str = "mod";

/// How long a test waits for an event that must not come.
const GRACE: Duration = Duration::from_secs(1);

/// How long a connection may take to go direct (polled in 200 ms steps).
const DIRECT_WITHIN: Duration = Duration::from_secs(30);

/// Two nodes on this crate with `relay_url` as their home relay, each
/// listening for the test module's messages.
async fn pair(relay_url: &str) -> (Node, Node) {
    let (a, b) = tokio::join!(
        node_at(ours(), relay_url, true),
        node_at(ours(), relay_url, true)
    );
    a.register_module(MODULE);
    b.register_module(MODULE);
    assert_ne!(a.url, b.url);
    (a, b)
}

fn msg(text: String) -> Bytes {
    Bytes::from(text.into_bytes())
}

async fn send_module(from: &Node, to: &Url, data: Bytes) {
    timeout(
        BOUND,
        from.transport
            .send_module(to.clone(), TEST_SPACE_ID, MODULE.to_owned(), data),
    )
    .await
    .expect("module send timed out")
    .expect("module send failed");
}

/// Nothing is waiting on `rx`.
fn assert_none<T: Debug>(rx: &mut mpsc::UnboundedReceiver<T>, what: &str) {
    if let Ok(event) = rx.try_recv() {
        panic!("unexpected {what}: {event:?}");
    }
}

/// No disconnect and no unresponsive mark waiting on `node`.
fn assert_calm(node: &mut Node) {
    assert_none(&mut node.disconnected, "peer_disconnect");
    assert_none(&mut node.unresponsive, "set_unresponsive");
}

async fn peers(node: &Node) -> Vec<Url> {
    timeout(BOUND, node.transport.get_connected_peers())
        .await
        .expect("get_connected_peers timed out")
        .unwrap()
}

/// Polls until every connection `node` has is direct, bounded by
/// [`DIRECT_WITHIN`].
async fn wait_direct(node: &Node) {
    let steps = DIRECT_WITHIN.as_millis() / 200;
    let mut last = None;
    for _ in 0..steps {
        let stats = node
            .transport
            .dump_network_stats()
            .await
            .unwrap()
            .transport_stats;
        if !stats.connections.is_empty() && stats.connections.iter().all(|c| c.is_direct) {
            return;
        }
        last = Some(stats);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!(
        "{}: no direct path within {DIRECT_WITHIN:?}: {last:?}",
        node.url
    );
}

async fn close(nodes: &[&Node]) {
    timeout(BOUND, async {
        for n in nodes {
            n.transport.close().await;
        }
    })
    .await
    .expect("close timed out");
}

// ---------------------------------------------------------------------------
// 1. Messages

/// Space notifies and module messages both ways, in order, from the right
/// sender; one connected peer each, stats that mirror each other, and a
/// direct path on both sides.
async fn scenario_messages(relay_url: &str) {
    const N: u64 = 5;
    let (mut a, mut b) = pair(relay_url).await;
    for i in 0..N {
        notify(&a, &b.url, msg(format!("notify a->b {i}"))).await;
        send_module(&a, &b.url, msg(format!("module a->b {i}"))).await;
        notify(&b, &a.url, msg(format!("notify b->a {i}"))).await;
        send_module(&b, &a.url, msg(format!("module b->a {i}"))).await;
    }
    let (a_url, b_url) = (a.url.clone(), b.url.clone());
    for (to, from, dir) in [(&mut b, &a_url, "a->b"), (&mut a, &b_url, "b->a")] {
        for i in 0..N {
            let got = next(&mut to.received, "notify").await;
            assert_eq!(got, (from.clone(), msg(format!("notify {dir} {i}"))));
            let got = next(&mut to.module_received, "module message").await;
            assert_eq!(
                got,
                (
                    from.clone(),
                    MODULE.to_owned(),
                    msg(format!("module {dir} {i}"))
                )
            );
        }
    }
    assert_eq!(next(&mut a.connected, "peer_connect").await, b.url);
    assert_eq!(next(&mut b.connected, "peer_connect").await, a.url);
    assert_eq!(peers(&a).await, vec![b.url.clone()]);
    assert_eq!(peers(&b).await, vec![a.url.clone()]);

    let sa = stats(&a).await;
    let sb = stats(&b).await;
    assert_eq!(sa.connections.len(), 1, "{sa:?}");
    assert_eq!(sb.connections.len(), 1, "{sb:?}");
    let (ca, cb) = (&sa.connections[0], &sb.connections[0]);
    assert_eq!(ca.pub_key, b.url.peer_id().unwrap(), "{ca:?}");
    assert_eq!(cb.pub_key, a.url.peer_id().unwrap(), "{cb:?}");
    assert_eq!(ca.send_message_count, 2 * N, "{ca:?}");
    assert_eq!(cb.send_message_count, 2 * N, "{cb:?}");
    assert_eq!(ca.send_message_count, cb.recv_message_count);
    assert_eq!(cb.send_message_count, ca.recv_message_count);
    assert_eq!(ca.send_bytes, cb.recv_bytes);
    assert_eq!(cb.send_bytes, ca.recv_bytes);

    wait_direct(&a).await;
    wait_direct(&b).await;
    // A direct path carries messages too.
    notify(&a, &b.url, msg("direct a->b".into())).await;
    assert_eq!(
        next(&mut b.received, "notify").await,
        (a.url.clone(), msg("direct a->b".into()))
    );

    assert_none(&mut a.connected, "second peer_connect");
    assert_none(&mut b.connected, "second peer_connect");
    assert_calm(&mut a);
    assert_calm(&mut b);
    close(&[&a, &b]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_via_embedded_relay() {
    let relay = EmbeddedRelay::start().await.unwrap();
    scenario_messages(relay.url().as_str()).await;
    relay.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_via_bootstrap_relay() {
    let srv = TestBootstrapSrv::new(false).await;
    scenario_messages(&format!("{}/relay", srv.addr())).await;
}

// ---------------------------------------------------------------------------
// 2. Reconnect

/// After b disconnects a, a's next send opens a fresh connection that b
/// accepts; nobody is marked unresponsive.
async fn scenario_reconnect(relay_url: &str) {
    let (mut a, mut b) = pair(relay_url).await;
    notify(&a, &b.url, msg("first a->b".into())).await;
    assert_eq!(
        next(&mut b.received, "notify").await,
        (a.url.clone(), msg("first a->b".into()))
    );
    notify(&b, &a.url, msg("first b->a".into())).await;
    assert_eq!(
        next(&mut a.received, "notify").await,
        (b.url.clone(), msg("first b->a".into()))
    );

    timeout(BOUND, b.transport.disconnect(a.url.clone(), None))
        .await
        .expect("disconnect timed out");
    assert_eq!(
        next(&mut a.disconnected, "peer_disconnect on a").await,
        (b.url.clone(), None)
    );
    assert_eq!(
        next(&mut b.disconnected, "local peer_disconnect on b").await,
        (a.url.clone(), None)
    );
    assert_eq!(peers(&a).await, Vec::<Url>::new());
    assert_eq!(peers(&b).await, Vec::<Url>::new());

    notify(&a, &b.url, msg("again a->b".into())).await;
    assert_eq!(
        next(&mut b.received, "notify on the fresh connection").await,
        (a.url.clone(), msg("again a->b".into()))
    );
    notify(&b, &a.url, msg("again b->a".into())).await;
    assert_eq!(
        next(&mut a.received, "notify on the fresh connection").await,
        (b.url.clone(), msg("again b->a".into()))
    );
    assert_eq!(peers(&a).await, vec![b.url.clone()]);
    assert_eq!(peers(&b).await, vec![a.url.clone()]);
    // One peer_connect per connection on each side.
    for _ in 0..2 {
        assert_eq!(next(&mut a.connected, "peer_connect").await, b.url);
        assert_eq!(next(&mut b.connected, "peer_connect").await, a.url);
    }

    tokio::time::sleep(GRACE).await;
    assert_none(&mut a.connected, "third peer_connect");
    assert_none(&mut b.connected, "third peer_connect");
    assert_calm(&mut a);
    assert_calm(&mut b);
    close(&[&a, &b]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_via_embedded_relay() {
    let relay = EmbeddedRelay::start().await.unwrap();
    scenario_reconnect(relay.url().as_str()).await;
    relay.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_via_bootstrap_relay() {
    let srv = TestBootstrapSrv::new(false).await;
    scenario_reconnect(&format!("{}/relay", srv.addr())).await;
}

/// b disconnects a, with a reason, while a is sending to b as fast as it
/// can: a still sees a graceful disconnect (b's reason) and marks nobody
/// unresponsive. Several rounds, as the outcome depends on which of a's
/// tasks notices the close first.
async fn scenario_disconnect_during_traffic(relay_url: &str) {
    const ROUNDS: usize = 6;
    /// Flood messages b receives before it disconnects.
    const BEFORE: usize = 50;
    const MAX_SENDS: usize = 100_000;
    for round in 0..ROUNDS {
        let (mut a, mut b) = pair(relay_url).await;
        let reason = format!("leaving in round {round}");
        let a_url = a.url.clone();
        let b_url = b.url.clone();
        let flood = async {
            // Until a send fails or a hears of the disconnect, bounded.
            for i in 0..MAX_SENDS {
                let sent = a
                    .transport
                    .send_space_notify(b_url.clone(), TEST_SPACE_ID, msg(format!("flood {i}")))
                    .await;
                if sent.is_err() {
                    return next(&mut a.disconnected, "peer_disconnect on a").await;
                }
                if let Ok(event) = a.disconnected.try_recv() {
                    return event;
                }
            }
            panic!("round {round}: {MAX_SENDS} sends and no disconnect");
        };
        let leave = async {
            for _ in 0..BEFORE {
                next(&mut b.received, "flood message").await;
            }
            b.transport
                .disconnect(a_url.clone(), Some(reason.clone()))
                .await;
        };
        let (seen, ()) = timeout(BOUND, async { tokio::join!(flood, leave) })
            .await
            .expect("flood and disconnect did not end in time");
        assert_eq!(
            seen,
            (b_url.clone(), Some(reason.clone())),
            "round {round}: a did not see a graceful disconnect"
        );
        assert_eq!(
            next(&mut b.disconnected, "local peer_disconnect on b").await,
            (a_url, Some(reason))
        );
        tokio::time::sleep(GRACE).await;
        assert_calm(&mut a);
        assert_calm(&mut b);
        close(&[&a, &b]).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_during_traffic_via_embedded_relay() {
    let relay = EmbeddedRelay::start().await.unwrap();
    scenario_disconnect_during_traffic(relay.url().as_str()).await;
    relay.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_during_traffic_via_bootstrap_relay() {
    let srv = TestBootstrapSrv::new(false).await;
    scenario_disconnect_during_traffic(&format!("{}/relay", srv.addr())).await;
}

// ---------------------------------------------------------------------------
// 3. Simultaneous first sends

/// On fresh nodes, a and b send to each other at the same moment, then
/// again on the surviving connection; every message arrives once, and each
/// side ends with the other as its only peer, without a disconnect or an
/// unresponsive mark.
async fn scenario_simultaneous(relay_url: &str) {
    const ROUNDS: usize = 3;
    for round in 0..ROUNDS {
        let (mut a, mut b) = pair(relay_url).await;
        for k in 0..2 {
            let to_b = msg(format!("a->b {round}.{k}"));
            let to_a = msg(format!("b->a {round}.{k}"));
            let (sent_a, sent_b) = timeout(BOUND, async {
                tokio::join!(
                    a.transport
                        .send_space_notify(b.url.clone(), TEST_SPACE_ID, to_b.clone()),
                    b.transport
                        .send_space_notify(a.url.clone(), TEST_SPACE_ID, to_a.clone()),
                )
            })
            .await
            .expect("simultaneous sends timed out");
            sent_a.unwrap_or_else(|e| panic!("round {round}.{k}: a's send: {e}"));
            sent_b.unwrap_or_else(|e| panic!("round {round}.{k}: b's send: {e}"));
            assert_eq!(next(&mut b.received, "notify").await, (a.url.clone(), to_b));
            assert_eq!(next(&mut a.received, "notify").await, (b.url.clone(), to_a));
        }
        // Let the losing connection of the race close, then check.
        tokio::time::sleep(GRACE).await;
        // One peer_connect per connection that reached the preflight: one
        // or, when both dials got that far, two; the superseded one ends
        // without a peer_disconnect (docs/architecture.md).
        let (a_url, b_url) = (a.url.clone(), b.url.clone());
        for (node, other) in [(&mut a, b_url), (&mut b, a_url)] {
            let mut connects = 0;
            while let Ok(url) = node.connected.try_recv() {
                assert_eq!(url, other, "round {round}");
                connects += 1;
            }
            assert!((1..=2).contains(&connects), "round {round}: {connects}");
        }
        assert_eq!(peers(&a).await, vec![b.url.clone()], "round {round}");
        assert_eq!(peers(&b).await, vec![a.url.clone()], "round {round}");
        assert_none(&mut a.received, "duplicate notify");
        assert_none(&mut b.received, "duplicate notify");
        assert_calm(&mut a);
        assert_calm(&mut b);
        close(&[&a, &b]).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_first_sends_via_embedded_relay() {
    let relay = EmbeddedRelay::start().await.unwrap();
    scenario_simultaneous(relay.url().as_str()).await;
    relay.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_first_sends_via_bootstrap_relay() {
    let srv = TestBootstrapSrv::new(false).await;
    scenario_simultaneous(&format!("{}/relay", srv.addr())).await;
}

// ---------------------------------------------------------------------------
// 4. Preflight validation errors

/// b's handler rejects a's preflight: a's send fails, b delivers nothing,
/// neither lists the other. Once b accepts again, a gets through.
async fn scenario_rejected_preflight(relay_url: &str) {
    let (mut a, mut b) = pair(relay_url).await;
    b.handler.reject_preflights.store(true, Ordering::SeqCst);
    let sent = timeout(
        BOUND,
        a.transport
            .send_space_notify(b.url.clone(), TEST_SPACE_ID, msg("rejected".into())),
    )
    .await
    .expect("send to a rejecting peer did not end in time");
    assert!(sent.is_err(), "send to a rejecting peer succeeded");
    assert_eq!(next(&mut b.preflights, "preflight on b").await, a.url);

    tokio::time::sleep(GRACE).await;
    assert_none(&mut b.received, "notify past a rejected preflight");
    assert_none(&mut b.connected, "peer_connect for a rejected preflight");
    assert_eq!(peers(&a).await, Vec::<Url>::new());
    assert_eq!(peers(&b).await, Vec::<Url>::new());
    assert_calm(&mut b);
    assert_none(&mut a.disconnected, "peer_disconnect");

    b.handler.reject_preflights.store(false, Ordering::SeqCst);
    notify(&a, &b.url, msg("accepted".into())).await;
    assert_eq!(
        next(&mut b.received, "notify once accepted").await,
        (a.url.clone(), msg("accepted".into()))
    );
    assert_eq!(peers(&a).await, vec![b.url.clone()]);
    assert_eq!(peers(&b).await, vec![a.url.clone()]);
    close(&[&a, &b]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_preflight_via_embedded_relay() {
    let relay = EmbeddedRelay::start().await.unwrap();
    scenario_rejected_preflight(relay.url().as_str()).await;
    relay.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_preflight_via_bootstrap_relay() {
    let srv = TestBootstrapSrv::new(false).await;
    scenario_rejected_preflight(&format!("{}/relay", srv.addr())).await;
}

/// The dialer's error for a rejected preflight carries the acceptor's
/// close reason.
async fn scenario_rejection_reason(relay_url: &str) {
    let (a, b) = pair(relay_url).await;
    b.handler.reject_preflights.store(true, Ordering::SeqCst);
    let err = timeout(
        BOUND,
        a.transport
            .send_space_notify(b.url.clone(), TEST_SPACE_ID, msg("rejected".into())),
    )
    .await
    .expect("send to a rejecting peer did not end in time")
    .expect_err("send to a rejecting peer succeeded");
    assert!(
        err.to_string().contains("preflight rejected by test"),
        "the dialer's error lost the acceptor's reason: {err}"
    );
    close(&[&a, &b]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejection_reason_reaches_the_dialer_via_embedded_relay() {
    let relay = EmbeddedRelay::start().await.unwrap();
    scenario_rejection_reason(relay.url().as_str()).await;
    relay.shutdown().await.unwrap();
}

/// A frame's bytes on the wire.
fn wire(frame: Frame) -> [Bytes; 2] {
    let encoded = frame.encode(&Limits::default()).unwrap();
    [encoded.head().clone(), encoded.body().clone()]
}

fn k2proto(ty: K2WireType, space: bool, data: &'static [u8]) -> Bytes {
    K2Proto {
        ty: ty as i32,
        data: Bytes::from_static(data),
        space_id: space.then_some(TEST_SPACE_ID.0.0),
        module_id: None,
    }
    .encode()
    .unwrap()
}

/// A raw iroh endpoint connects to b and presents a preflight naming a's
/// URL (another endpoint id than its own), followed by a notify: b closes
/// the connection and reports nothing for it. a itself still reaches b.
async fn scenario_spoofed_preflight(relay_url: &str) {
    let (a, mut b) = pair(relay_url).await;
    let relay = normalize_relay_url(relay_url).unwrap();
    let spoofer = loopback_endpoint(&relay).await;
    timeout(BOUND, spoofer.online())
        .await
        .expect("raw endpoint did not reach the relay in time");
    let (b_relay, b_id) = parse_peer_url(&b.url).unwrap();
    assert_eq!(b_relay, relay);
    let conn = timeout(
        BOUND,
        spoofer.connect(
            EndpointAddr::from_parts(b_id, [TransportAddr::Relay(b_relay)]),
            ALPN,
        ),
    )
    .await
    .expect("connect to b timed out")
    .expect("connect to b failed");
    let claimed = a.url.clone();
    assert_ne!(claimed.peer_id().unwrap(), spoofer.id().to_string());
    let [h1, b1] = wire(Frame::preflight(
        claimed.as_str(),
        k2proto(K2WireType::Preflight, false, b"spoofed"),
    ));
    let [h2, b2] = wire(Frame::data(k2proto(
        K2WireType::Notify,
        true,
        b"from a spoofer",
    )));
    let mut chunks = [h1, b1, h2, b2];
    let mut send = conn.open_uni().await.unwrap();
    // b may close before the write completes; what matters is what b does.
    let written = timeout(BOUND, send.write_all_chunks(&mut chunks))
        .await
        .expect("write to b timed out");
    let closed = timeout(BOUND, conn.closed())
        .await
        .expect("b did not close a connection with a spoofed preflight");
    assert!(
        matches!(closed, ConnectionError::ApplicationClosed(_)),
        "connection ended otherwise than by b's close: {closed:?} (write: {written:?})"
    );

    tokio::time::sleep(GRACE).await;
    assert_none(&mut b.received, "notify from the spoofer");
    assert_none(&mut b.connected, "peer_connect for the spoofer");
    assert_none(&mut b.preflights, "spoofed preflight handed to validation");
    assert_calm(&mut b);
    assert_eq!(peers(&b).await, Vec::<Url>::new());

    // a, whose URL was claimed, still connects to b as itself.
    notify(&a, &b.url, msg("the real a".into())).await;
    assert_eq!(
        next(&mut b.received, "notify from a").await,
        (a.url.clone(), msg("the real a".into()))
    );
    assert_eq!(next(&mut b.connected, "peer_connect").await, a.url);
    timeout(BOUND, spoofer.close())
        .await
        .expect("raw endpoint close timed out");
    close(&[&a, &b]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_preflight_via_embedded_relay() {
    let relay = EmbeddedRelay::start().await.unwrap();
    scenario_spoofed_preflight(relay.url().as_str()).await;
    relay.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_preflight_via_bootstrap_relay() {
    let srv = TestBootstrapSrv::new(false).await;
    scenario_spoofed_preflight(&format!("{}/relay", srv.addr())).await;
}

// ---------------------------------------------------------------------------
// 5. Relay down with peers connected

/// a and b, connected directly, lose their relay: they keep exchanging
/// messages and mark nobody unresponsive; a dial to a peer that never
/// existed fails fast (once iroh knows the relay is down) without an
/// unresponsive mark. Embedded relay only: it is the one a test can stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_down_with_peers_connected_via_embedded_relay() {
    let relay = EmbeddedRelay::start().await.unwrap();
    let relay_url = relay.url().clone();
    let (mut a, mut b) = pair(relay_url.as_str()).await;
    notify(&a, &b.url, msg("before a->b".into())).await;
    next(&mut b.received, "notify").await;
    notify(&b, &a.url, msg("before b->a".into())).await;
    next(&mut a.received, "notify").await;
    wait_direct(&a).await;
    wait_direct(&b).await;

    timeout(BOUND, relay.shutdown())
        .await
        .expect("relay shutdown timed out")
        .unwrap();

    for round in 0..2 {
        for i in 0..3 {
            let text = format!("relay down {round}.{i}");
            notify(&a, &b.url, msg(format!("{text} a->b"))).await;
            notify(&b, &a.url, msg(format!("{text} b->a"))).await;
            assert_eq!(
                next(&mut b.received, "notify over the direct path").await,
                (a.url.clone(), msg(format!("{text} a->b")))
            );
            assert_eq!(
                next(&mut a.received, "notify over the direct path").await,
                (b.url.clone(), msg(format!("{text} b->a")))
            );
        }
        if round == 0 {
            // A few seconds on the direct path alone, keep-alives included.
            tokio::time::sleep(3 * GRACE).await;
            assert_calm(&mut a);
            assert_calm(&mut b);
        }
    }
    assert_eq!(peers(&a).await, vec![b.url.clone()]);
    assert_eq!(peers(&b).await, vec![a.url.clone()]);

    // A peer that never existed, on the dead relay. Until iroh has noticed
    // the relay is gone a dial may hang: retry, bounded, until it fails
    // fast with the relay error.
    let ghost = peer_url(&relay_url, SecretKey::generate().public()).unwrap();
    let mut attempts = Vec::new();
    let err = loop {
        assert!(
            attempts.len() < 10,
            "a dial through the dead relay never failed fast: {attempts:?}"
        );
        let sent = timeout(
            Duration::from_secs(2),
            a.transport
                .send_space_notify(ghost.clone(), TEST_SPACE_ID, msg("ghost".into())),
        )
        .await;
        match sent {
            Ok(Err(e)) if e.to_string().contains("home relay") => break e,
            other => {
                // An earlier dial may rightly mark the ghost: the relay was
                // not known down yet. Only the fast failure must not.
                let mut marks = Vec::new();
                while let Ok(url) = a.unresponsive.try_recv() {
                    marks.push(url);
                }
                attempts.push(format!("{other:?}, marks {marks:?}"));
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    if !attempts.is_empty() {
        eprintln!("dials before the fast failure: {attempts:?}");
    }
    assert_none(&mut a.unresponsive, "set_unresponsive after a fast failure");
    assert!(!err.to_string().is_empty());

    // The direct connection outlives the failed dial.
    notify(&a, &b.url, msg("after the ghost".into())).await;
    assert_eq!(
        next(&mut b.received, "notify").await,
        (a.url.clone(), msg("after the ghost".into()))
    );
    assert_calm(&mut a);
    assert_calm(&mut b);
    close(&[&a, &b]).await;
}
