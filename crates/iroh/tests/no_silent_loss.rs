//! No silent loss over real iroh, through the embedded relay: every send
//! that returned `Ok` is delivered when the sender then calls `close()` or
//! `disconnect()` at once, and when both sides send and disconnect at the
//! same moment, round after round. Against the incumbent the same
//! scenarios run to the end (they never hang); what the incumbent loses is
//! printed, not asserted.

use std::collections::HashSet;

use kitsune2_iroh_test_support::prelude::*;

const SENDS: u32 = 1000;

fn msg(i: u32) -> Bytes {
    let mut v = vec![0xa5; 1024];
    v[..4].copy_from_slice(&i.to_be_bytes());
    Bytes::from(v)
}

fn index(data: &Bytes) -> u32 {
    u32::from_be_bytes(data[..4].try_into().unwrap())
}

/// Collects what `node` received from `from` until `want` distinct
/// messages came or nothing more arrived for 3 s (bounded by [`BOUND`]).
async fn collect(node: &mut Node, from: &Url, want: usize) -> HashSet<u32> {
    let mut got = HashSet::new();
    let deadline = tokio::time::Instant::now() + BOUND;
    while got.len() < want {
        match tokio::time::timeout_at(
            deadline.min(tokio::time::Instant::now() + Duration::from_secs(3)),
            node.received.recv(),
        )
        .await
        {
            Ok(Some((peer, data))) => {
                assert_eq!(&peer, from);
                assert!(got.insert(index(&data)), "duplicate {}", index(&data));
            }
            _ => break,
        }
    }
    got
}

#[derive(Debug, Clone, Copy)]
enum End {
    Close,
    Disconnect,
}

/// a sends [`SENDS`] messages of 1 KiB to b, every one returning `Ok`,
/// then ends at once as `end` says; returns how many b received.
async fn sends_then(end: End, a_ours: bool, b_ours: bool) -> usize {
    let relay = EmbeddedRelay::start().await.unwrap();
    let a = node(factory(a_ours), &relay, a_ours).await;
    let mut b = node(factory(b_ours), &relay, b_ours).await;
    for i in 0..SENDS {
        notify(&a, &b.url, msg(i)).await;
    }
    match end {
        End::Close => timeout(BOUND, a.transport.close()).await.unwrap(),
        End::Disconnect => timeout(BOUND, a.transport.disconnect(b.url.clone(), None))
            .await
            .unwrap(),
    }
    let got = collect(&mut b, &a.url, SENDS as usize).await;
    close_all(&[&a, &b]).await;
    relay.shutdown().await.unwrap();
    got.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_sends_then_close_are_all_delivered() {
    for _ in 0..3 {
        assert_eq!(sends_then(End::Close, true, true).await, SENDS as usize);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_sends_then_disconnect_are_all_delivered() {
    for _ in 0..3 {
        assert_eq!(
            sends_then(End::Disconnect, true, true).await,
            SENDS as usize
        );
    }
}

/// Ours against the incumbent, either side sending: the scenarios end
/// (bounded), and ours as the receiver of the incumbent's messages is no
/// worse than the incumbent with itself. The counts are printed.
#[test]
fn against_the_incumbent_the_scenarios_end() {
    in_netns("against_the_incumbent_the_scenarios_end", || {
        runtime().block_on(async {
            for end in [End::Close, End::Disconnect] {
                for (a_ours, b_ours) in [(true, false), (false, true)] {
                    let got = sends_then(end, a_ours, b_ours).await;
                    println!(
                        "{end:?}: a {} -> b {}: {got} of {SENDS} delivered",
                        if a_ours { "ours" } else { "incumbent" },
                        if b_ours { "ours" } else { "incumbent" },
                    );
                    if a_ours {
                        // Our FIN reaches the incumbent, which reads to it;
                        // it never answers with one, so our close waits
                        // out the drain timeout and closes.
                        assert_eq!(got, SENDS as usize, "{end:?}: ours -> incumbent");
                    }
                }
            }
        });
    });
}

/// Both send to each other at once, await both sends, then both
/// disconnect at once; every message whose send returned `Ok` arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_disconnect_and_resend_delivers_everything() {
    for run in 0..25 {
        let relay = EmbeddedRelay::start().await.unwrap();
        let mut a = node(ours(), &relay, true).await;
        let mut b = node(ours(), &relay, true).await;
        const ROUNDS: u32 = 40;
        for round in 0..ROUNDS {
            let barrier = tokio::sync::Barrier::new(2);
            let send = |from: &Node, to: Url| {
                let tx = from.transport.clone();
                let barrier = &barrier;
                async move {
                    barrier.wait().await;
                    timeout(BOUND, tx.send_space_notify(to, TEST_SPACE_ID, msg(round))).await
                }
            };
            let (ra, rb) = tokio::join!(send(&a, b.url.clone()), send(&b, a.url.clone()));
            ra.expect("a's send timed out")
                .unwrap_or_else(|e| panic!("run {run} round {round}: a's send failed: {e}"));
            rb.expect("b's send timed out")
                .unwrap_or_else(|e| panic!("run {run} round {round}: b's send failed: {e}"));
            let (ta, tb) = (a.transport.clone(), b.transport.clone());
            let (au, bu) = (a.url.clone(), b.url.clone());
            let barrier = tokio::sync::Barrier::new(2);
            tokio::join!(
                async {
                    barrier.wait().await;
                    timeout(BOUND, ta.disconnect(bu, None)).await.unwrap();
                },
                async {
                    barrier.wait().await;
                    timeout(BOUND, tb.disconnect(au, None)).await.unwrap();
                }
            );
        }
        let (a_url, b_url) = (a.url.clone(), b.url.clone());
        let at_b = collect(&mut b, &a_url, ROUNDS as usize).await;
        let at_a = collect(&mut a, &b_url, ROUNDS as usize).await;
        assert_eq!(
            at_b.len(),
            ROUNDS as usize,
            "run {run}: a -> b lost messages"
        );
        assert_eq!(
            at_a.len(),
            ROUNDS as usize,
            "run {run}: b -> a lost messages"
        );
        close_all(&[&a, &b]).await;
        relay.shutdown().await.unwrap();
    }
}
