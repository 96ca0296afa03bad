//! Simultaneous open over many interleavings: both sides keep the same
//! connection (the one dialed by the larger id), no message is lost or
//! reordered, and no disconnect or unresponsive event fires.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use kitsune2_iroh_core::ConnState;
use kitsune2_iroh_core::mem::MemNetwork;
use proptest::prelude::*;

#[derive(Debug, Clone)]
struct Case {
    a_id: u8,
    b_id: u8,
    a_connect_delay_ms: u64,
    b_connect_delay_ms: u64,
    b_start_ms: u64,
    a_msgs: u32,
    b_msgs: u32,
}

fn arb_case() -> impl Strategy<Value = Case> {
    (
        1u8..=254,
        0u64..40,
        0u64..40,
        0u64..20,
        1u32..6,
        1u32..6,
        any::<bool>(),
    )
        .prop_map(|(x, da, db, start, na, nb, flip)| Case {
            a_id: if flip { x } else { x + 1 },
            b_id: if flip { x + 1 } else { x },
            a_connect_delay_ms: da,
            b_connect_delay_ms: db,
            b_start_ms: start,
            a_msgs: na,
            b_msgs: nb,
        })
}

/// Runs one interleaving; returns whether `a` kept the connection it dialed.
async fn run(case: Case) -> bool {
    let net = MemNetwork::new();
    let mut a = Node::with_config(&net, [case.a_id; 32], config());
    let mut b = Node::with_config(&net, [case.b_id; 32], config());
    // Connects towards b take a's delay; towards a, b's.
    net.delay_connects(b.id, Some(Duration::from_millis(case.a_connect_delay_ms)));
    net.delay_connects(a.id, Some(Duration::from_millis(case.b_connect_delay_ms)));
    let send_all = |from: &Node, to_url: kitsune2_api::Url, n: u32| {
        let tx = from.tx.clone();
        async move {
            for i in 0..n {
                tx.send_module(
                    to_url.clone(),
                    space(),
                    MODULE.to_owned(),
                    Bytes::from(i.to_be_bytes().to_vec()),
                )
                .await
                .unwrap_or_else(|e| panic!("send {i} failed: {e}"));
            }
        }
    };
    let a_sends = send_all(&a, b.url.clone(), case.a_msgs);
    let b_sends = send_all(&b, a.url.clone(), case.b_msgs);
    let b_start = case.b_start_ms;
    tokio::join!(a_sends, async move {
        tokio::time::sleep(Duration::from_millis(b_start)).await;
        b_sends.await;
    });
    for i in 0..case.a_msgs {
        assert_eq!(&b.recv().await.1[..], &i.to_be_bytes(), "a->b message {i}");
    }
    for i in 0..case.b_msgs {
        assert_eq!(&a.recv().await.1[..], &i.to_be_bytes(), "b->a message {i}");
    }
    settle().await;
    assert!(
        a.inbox.try_recv().is_err() && b.inbox.try_recv().is_err(),
        "no duplicates"
    );
    let ca = a.imp.connections();
    let cb = b.imp.connections();
    assert_eq!(ca.len(), 1, "a keeps one connection: {ca:?}");
    assert_eq!(cb.len(), 1, "b keeps one connection: {cb:?}");
    assert_eq!(
        (ca[0].state, cb[0].state),
        (ConnState::Active, ConnState::Active)
    );
    assert_ne!(
        ca[0].dialed_by_us, cb[0].dialed_by_us,
        "both sides kept the same connection"
    );
    for n in [&a, &b] {
        let ev = n.events();
        assert!(
            ev.disconnects.is_empty(),
            "spurious disconnect: {:?}",
            ev.disconnects
        );
        assert!(
            ev.unresponsive.is_empty(),
            "spurious unresponsive: {:?}",
            ev.unresponsive
        );
    }
    ca[0].dialed_by_us
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn both_sides_agree_and_nothing_is_lost(case in arb_case()) {
        let _ = block_on_paused(run(case));
    }
}

#[tokio::test(start_paused = true)]
async fn exactly_simultaneous_first_sends() {
    for (x, y) in [(1, 2), (2, 1)] {
        let a_kept_own = run(Case {
            a_id: x,
            b_id: y,
            a_connect_delay_ms: 10,
            b_connect_delay_ms: 10,
            b_start_ms: 0,
            a_msgs: 3,
            b_msgs: 3,
        })
        .await;
        assert_eq!(a_kept_own, x > y, "the larger id's dial survives");
    }
}

/// One run of rounds in which both sides send to each other at once, wait
/// for both sends, then both disconnect at once. Every send must return
/// `Ok` (a send that finds its connection being closed redials), and
/// every message is delivered exactly once (a ledger).
#[derive(Debug, Clone)]
struct RaceCase {
    flip: bool,
    /// Per round: its timing and how the nodes judge preflights. A node
    /// busy at the start of a round judges the peer's dial after its own
    /// dial has won, been used and been disconnected.
    rounds: Vec<(Timing, Judging)>,
}

/// A round's connect delays (a's, b's), b's disconnect delay, and one-way
/// latencies (a's, b's), in ms.
type Timing = (u64, u64, u64, u64, u64);

/// How long a and b judge the preflights that arrive in the first
/// `judged_for` ms of the round (the later ones at once), and `judged_for`.
type Judging = (u64, u64, u64);

fn arb_race() -> impl Strategy<Value = RaceCase> {
    let slow = || prop_oneof![2 => Just(0u64), 1 => 1u64..60];
    (
        any::<bool>(),
        proptest::collection::vec(
            (
                (0u64..5, 0u64..5, 0u64..3, 0u64..4, 0u64..4),
                (slow(), slow(), 0u64..4),
            ),
            2..12,
        ),
    )
        .prop_map(|(flip, rounds)| RaceCase { flip, rounds })
}

async fn race(case: RaceCase) {
    let net = MemNetwork::new();
    let (x, y) = if case.flip { (1, 2) } else { (2, 1) };
    let mut a = Node::with_config(&net, [x; 32], config());
    let mut b = Node::with_config(&net, [y; 32], config());
    let rounds = case.rounds.len();
    let judge = |node: &Node, ms: u64| node.rec.validate_delay_ms.store(ms, Ordering::SeqCst);
    for (round, ((a_delay, b_delay, disc_delay, a_lat, b_lat), (a_judge, b_judge, judged_for))) in
        case.rounds.into_iter().enumerate()
    {
        judge(&a, a_judge);
        judge(&b, b_judge);
        let (ra, rb) = (a.rec.clone(), b.rec.clone());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(judged_for)).await;
            ra.validate_delay_ms.store(0, Ordering::SeqCst);
            rb.validate_delay_ms.store(0, Ordering::SeqCst);
        });
        net.delay_connects(b.id, Some(Duration::from_millis(a_delay)));
        net.delay_connects(a.id, Some(Duration::from_millis(b_delay)));
        net.set_latency(a.id, Some(Duration::from_millis(a_lat)));
        net.set_latency(b.id, Some(Duration::from_millis(b_lat)));
        let msg = Bytes::from(format!("round {round}"));
        let send = |from: &Node, to: kitsune2_api::Url| {
            let tx = from.tx.clone();
            let msg = msg.clone();
            async move { tx.send_module(to, space(), MODULE.to_owned(), msg).await }
        };
        let (ra, rb) = tokio::join!(send(&a, b.url.clone()), send(&b, a.url.clone()));
        ra.unwrap_or_else(|e| panic!("round {round}: a's send failed: {e}"));
        rb.unwrap_or_else(|e| panic!("round {round}: b's send failed: {e}"));
        let (ta, tb) = (a.tx.clone(), b.tx.clone());
        let (au, bu) = (a.url.clone(), b.url.clone());
        tokio::join!(ta.disconnect(bu, None), async move {
            tokio::time::sleep(Duration::from_millis(disc_delay)).await;
            tb.disconnect(au, None).await;
        });
    }
    // Drains, redials and their timeouts run out (paused time).
    tokio::time::sleep(Duration::from_secs(30)).await;
    for (to, name) in [(&mut b, "a -> b"), (&mut a, "b -> a")] {
        let mut got = Vec::new();
        while let Ok((_, data)) = to.inbox.try_recv() {
            got.push(String::from_utf8(data.to_vec()).unwrap());
        }
        let want: Vec<String> = (0..rounds).map(|r| format!("round {r}")).collect();
        let mut sorted = got.clone();
        sorted.sort_by_key(|m| m[6..].parse::<usize>().unwrap());
        assert_eq!(
            sorted, want,
            "{name}: every Ok send delivered once (got {got:?})"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn simultaneous_disconnect_and_resend_delivers_everything(case in arb_race()) {
        block_on_paused(race(case));
    }
}

/// Found over iroh (`simultaneous_disconnect_and_resend_delivers_everything`):
/// a connection that lost resolution on the peer's side must not become
/// active on ours later, once the connection it lost to is gone.
///
/// b dials a while a dials b; a (the larger id) judges b's dial slowly.
/// Meanwhile a's dial wins on both sides (b supersedes its own dial and
/// drains it), both send on it, and both disconnect. When a's judgment of
/// b's dial ends, the slot is empty: a made it its active connection and
/// answered b's preflight on it, a connection b had long given up. Sends
/// then went out on a connection the peer was closing (over iroh: a send
/// failed, "connection is draining", and one returned `Ok` and was lost).
#[tokio::test(start_paused = true)]
async fn a_dial_the_peer_superseded_is_not_revived_after_a_disconnect() {
    init_logs();
    let net = MemNetwork::new();
    let mut a = Node::new(&net, 2);
    let mut b = Node::new(&net, 1);
    // a's dial to b takes 5 ms; b's to a is at once.
    net.delay_connects(b.id, Some(Duration::from_millis(5)));
    // a judges the first preflight (on b's dial) for 50 ms, the next ones
    // (b's answer on a's dial) at once.
    a.rec.validate_delay_ms.store(50, Ordering::SeqCst);
    let fast = {
        let rec = a.rec.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(1)).await;
            rec.validate_delay_ms.store(0, Ordering::SeqCst);
        }
    };
    let (ra, rb, ()) = tokio::join!(a.send(&b, b"from a"), b.send(&a, b"from b"), fast);
    ra.unwrap();
    rb.unwrap();
    assert_eq!(a.events().preflights.len(), 2, "b's dial is still judged");
    let (ta, tb) = (a.tx.clone(), b.tx.clone());
    tokio::join!(
        ta.disconnect(b.url.clone(), None),
        tb.disconnect(a.url.clone(), None)
    );
    // a's judgment of b's dial ends; drains and closes run out.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(&a.recv().await.1[..], b"from b");
    assert_eq!(&b.recv().await.1[..], b"from a");
    // b heard a's preflight once: on a's dial. Answered on b's own dial,
    // the one b superseded, there would be a second.
    assert_eq!(
        b.events().preflights.len(),
        1,
        "a answered on the dial b had superseded"
    );
    for n in [&a, &b] {
        assert!(n.imp.connections().is_empty(), "all closed");
    }
    // And the next round finds a fresh connection.
    let (ra, rb) = tokio::join!(a.send(&b, b"again a"), b.send(&a, b"again b"));
    ra.unwrap();
    rb.unwrap();
    assert_eq!(&a.recv().await.1[..], b"again b");
    assert_eq!(&b.recv().await.1[..], b"again a");
}
