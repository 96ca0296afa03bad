//! A peer that accepts our connection and never answers our preflight.
//! Ours: at the end of the connect timeout (here 15 s; the dialer waits
//! at least the 10 s preflight timeout) the send fails with
//! `PreflightTimeout` and the peer is marked unresponsive; no
//! `peer_disconnect`, since the connection never became active. The
//! incumbent: its send returns `Ok` (the message is lost), and it marks the
//! peer unresponsive and reports a lost connection.

use kitsune2_iroh::Endpoint;
use kitsune2_iroh::url::peer_url;
use kitsune2_iroh_test_support::prelude::*;

/// The nodes' `connectTimeoutS`.
const CONNECT_TIMEOUT_S: u32 = 15;

/// Longer than the connect timeout, with room for the dial.
const SEND_BOUND: Duration = Duration::from_secs(40);

/// How long events of the failed attempt may take to arrive.
const GRACE: Duration = Duration::from_secs(1);

/// An iroh endpoint on `relay` speaking the kitsune2 ALPN that accepts
/// every connection, keeps it open and never reads or writes; its peer URL.
async fn silent_peer(relay: &EmbeddedRelay) -> (Endpoint, tokio::task::JoinHandle<()>, Url) {
    let endpoint = loopback_endpoint(relay.url()).await;
    timeout(BOUND, endpoint.online())
        .await
        .expect("silent peer did not reach the relay in time");
    let url = peer_url(relay.url(), endpoint.id()).unwrap();
    let acceptor = endpoint.clone();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        // Ends when the endpoint closes; a test makes at most a few dials.
        while let Some(incoming) = acceptor.accept().await {
            if let Ok(conn) = incoming.await {
                held.push(conn);
            }
        }
    });
    (endpoint, task, url)
}

/// What the dialer saw.
struct Seen {
    send: K2Result<()>,
    unresponsive: Option<Url>,
    disconnected: Option<(Url, Option<String>)>,
}

async fn unanswered(factory: DynTransportFactory, ours: bool) -> Seen {
    let relay = EmbeddedRelay::start().await.unwrap();
    let (silent, task, silent_url) = silent_peer(&relay).await;
    let config = IrohTransportConfig {
        relay_url: Some(relay.url().to_string()),
        relay_allow_plain_text: true,
        connect_timeout_s: CONNECT_TIMEOUT_S,
        ..Default::default()
    };
    let mut a = try_node(Arc::new(builder_with(factory, config, ours)))
        .await
        .expect("the node is built");
    let send = timeout(
        SEND_BOUND,
        a.transport
            .send_space_notify(silent_url.clone(), TEST_SPACE_ID, Bytes::from_static(b"x")),
    )
    .await
    .expect("send to a silent peer did not end in time");
    tokio::time::sleep(GRACE).await;
    let seen = Seen {
        send,
        unresponsive: a.unresponsive.try_recv().ok(),
        disconnected: a.disconnected.try_recv().ok(),
    };
    if let Some(url) = &seen.unresponsive {
        assert_eq!(*url, silent_url);
    }
    timeout(BOUND, a.transport.close()).await.unwrap();
    silent.close().await;
    task.abort();
    relay.shutdown().await.unwrap();
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_preflight_fails_the_send_and_marks_the_peer() {
    let seen = unanswered(ours(), true).await;
    let err = seen.send.expect_err("send to a silent peer succeeded");
    assert!(
        err.to_string()
            .contains("no preflight from the peer within"),
        "{err}"
    );
    assert!(seen.unresponsive.is_some(), "silent peer not marked");
    assert_eq!(seen.disconnected, None);
}

#[test]
fn the_incumbent_returns_ok_for_an_unanswered_preflight() {
    in_netns(
        "the_incumbent_returns_ok_for_an_unanswered_preflight",
        || {
            runtime().block_on(async {
                let seen = unanswered(theirs(), false).await;
                seen.send
                    .expect("the incumbent's send reports an unanswered preflight as Ok");
                assert!(seen.unresponsive.is_some(), "silent peer not marked");
                assert!(seen.disconnected.is_some(), "no lost connection reported");
            });
        },
    );
}
