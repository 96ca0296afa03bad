//! Wire compatibility under load: a node on this crate and a node on
//! `kitsune2_transport_iroh` 0.6.0-dev.3, over one embedded relay, echo
//! 1000 distinct module messages, with either crate as the sender.
//!
//! Like `interop.rs`, each test re-runs itself under `unshare -rn` so the
//! incumbent's port mapper cannot reach past loopback.

use kitsune2_iroh_test_support::prelude::*;

const ECHO_BOUND: Duration = Duration::from_secs(40);
const MODULE: &str = "echo";
const COUNT: u32 = 1000;
static SENT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
static ECHOED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
static CHECKED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// A node built by `factory` with the config both crates share, taking the
/// echo module's messages (its space handler asserts they are the test
/// space's).
async fn echo_node(factory: DynTransportFactory, relay: &EmbeddedRelay, ours: bool) -> Node {
    let node = node(factory, relay, ours).await;
    node.register_module(MODULE);
    node
}

/// Message `i`: distinct content and length (1 to 4000 bytes), so a lost,
/// duplicated, reordered or corrupted message fails the check.
fn message(i: u32) -> Bytes {
    let len = 1 + (i as usize * 37) % 4000;
    let mut data = Vec::with_capacity(len);
    data.extend_from_slice(&i.to_be_bytes());
    data.extend((0..len).map(|j| (i as usize * 31 + j) as u8));
    Bytes::from(data)
}

/// `sender` sends `COUNT` module messages to `echoer`, which sends each one
/// back as it arrives; `sender` checks every echo, in order.
async fn echo(mut sender: Node, mut echoer: Node) {
    let sender_url = sender.url.clone();
    let echoer_url = echoer.url.clone();
    let echo_task = tokio::spawn(async move {
        for i in 0..COUNT {
            let (from, module, data) = echoer.module_received.recv().await.unwrap();
            assert_eq!(from, sender_url, "message {i} from the wrong peer");
            assert_eq!(module, MODULE);
            ECHOED.fetch_add(1, Ordering::Relaxed);
            echoer
                .transport
                .send_module(from, TEST_SPACE_ID, module, data)
                .await
                .unwrap();
        }
        echoer
    });
    let check = async {
        for i in 0..COUNT {
            sender
                .transport
                .send_module(
                    echoer_url.clone(),
                    TEST_SPACE_ID,
                    MODULE.to_string(),
                    message(i),
                )
                .await
                .unwrap();
            SENT.fetch_add(1, Ordering::Relaxed);
        }
        for i in 0..COUNT {
            let (from, module, data) = sender.module_received.recv().await.unwrap();
            assert_eq!(from, echoer_url, "echo {i} from the wrong peer");
            assert_eq!(module, MODULE);
            assert_eq!(data, message(i), "echo {i} has the wrong content");
            CHECKED.fetch_add(1, Ordering::Relaxed);
        }
    };
    if timeout(ECHO_BOUND, check).await.is_err() {
        panic!(
            "echoes not back in time: sent {SENT:?}, echoer received {ECHOED:?}, checked {CHECKED:?}"
        );
    }
    let echoer = timeout(BOUND, echo_task).await.unwrap().unwrap();
    // Nothing beyond the COUNT echoes arrived.
    assert!(sender.module_received.try_recv().is_err());
    close_all(&[&sender, &echoer]).await;
}

#[test]
fn ours_sends_1000_incumbent_echoes() {
    in_netns("ours_sends_1000_incumbent_echoes", || {
        runtime().block_on(async {
            let relay = EmbeddedRelay::start().await.unwrap();
            let a = echo_node(ours(), &relay, true).await;
            let b = echo_node(theirs(), &relay, false).await;
            echo(a, b).await;
            relay.shutdown().await.unwrap();
        });
    });
}

#[test]
fn incumbent_sends_1000_ours_echoes() {
    in_netns("incumbent_sends_1000_ours_echoes", || {
        runtime().block_on(async {
            let relay = EmbeddedRelay::start().await.unwrap();
            let a = echo_node(theirs(), &relay, false).await;
            let b = echo_node(ours(), &relay, true).await;
            echo(a, b).await;
            relay.shutdown().await.unwrap();
        });
    });
}
