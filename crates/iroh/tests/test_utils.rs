//! The `test-utils` feature: the harness connects two transports over its
//! embedded relay, and `MockTxHandler`'s closures see what happens.

use bytes::Bytes;
use kitsune2_api::{K2Result, SpaceId, Timestamp, TxBaseHandler, TxHandler, TxSpaceHandler, Url};
use kitsune2_iroh::TRANSPORT_CLOSED_REASON;
use kitsune2_iroh::test_utils::{IrohTransportTestHarness, MockTxHandler, dummy_url};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::timeout;

const BOUND: Duration = Duration::from_secs(30);

/// What one transport's [`MockTxHandler`] reports.
struct Observed {
    handler: Arc<MockTxHandler>,
    url: watch::Receiver<Option<Url>>,
    connected: mpsc::UnboundedReceiver<Url>,
    received: mpsc::UnboundedReceiver<(Url, SpaceId, Bytes)>,
    disconnected: mpsc::UnboundedReceiver<(Url, Option<String>)>,
    unresponsive: mpsc::UnboundedReceiver<Url>,
}

/// A handler whose closures forward every event the test looks at.
fn observed() -> Observed {
    let (url_tx, url) = watch::channel(None);
    let (connected_tx, connected) = mpsc::unbounded_channel();
    let (received_tx, received) = mpsc::unbounded_channel();
    let (disconnected_tx, disconnected) = mpsc::unbounded_channel();
    let (unresponsive_tx, unresponsive) = mpsc::unbounded_channel();
    let handler = Arc::new(MockTxHandler {
        new_listening_address: Arc::new(move |url| {
            url_tx.send_replace(Some(url));
        }),
        peer_connect: Arc::new(move |peer| {
            let _ = connected_tx.send(peer);
            Ok(())
        }),
        recv_space_notify: Arc::new(move |peer, space, data| {
            let _ = received_tx.send((peer, space, data));
            Ok(())
        }),
        peer_disconnect: Arc::new(move |peer, reason| {
            let _ = disconnected_tx.send((peer, reason));
        }),
        set_unresponsive: Arc::new(move |peer, _| {
            let _ = unresponsive_tx.send(peer);
            Ok(())
        }),
        ..MockTxHandler::default()
    });
    Observed {
        handler,
        url,
        connected,
        received,
        disconnected,
        unresponsive,
    }
}

async fn next<T>(rx: &mut mpsc::UnboundedReceiver<T>, what: &str) -> T {
    timeout(BOUND, rx.recv())
        .await
        .unwrap_or_else(|_| panic!("no {what} in time"))
        .expect("handler gone")
}

async fn url_of(o: &mut Observed) -> Url {
    let url = timeout(BOUND, o.url.wait_for(Option::is_some))
        .await
        .expect("no listening address in time")
        .expect("handler gone")
        .clone()
        .expect("waited for Some");
    // `current_url` follows the closure.
    assert_eq!(*o.handler.current_url.lock().unwrap(), url);
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn harness_transports_exchange_messages_seen_by_mock_closures() {
    let harness = IrohTransportTestHarness::new().await;
    // Its builder's config is valid as it stands.
    harness.builder.validate_config().unwrap();
    let space = SpaceId::from(Bytes::from_static(&[9; 32]));

    let mut a = observed();
    let mut b = observed();
    let ta = harness.build_transport(a.handler.clone()).await;
    let tb = harness.build_transport(b.handler.clone()).await;
    ta.register_space_handler(space.clone(), a.handler.clone());
    tb.register_space_handler(space.clone(), b.handler.clone());
    let (a_url, b_url) = (url_of(&mut a).await, url_of(&mut b).await);
    let relay = harness.relay.url().as_str().trim_end_matches('/');
    assert!(a_url.as_str().starts_with(relay), "{a_url} not on {relay}");
    assert!(b_url.as_str().starts_with(relay), "{b_url} not on {relay}");

    timeout(
        BOUND,
        ta.send_space_notify(b_url.clone(), space.clone(), Bytes::from_static(b"to b")),
    )
    .await
    .expect("send timed out")
    .unwrap();
    // Each side's peer_connect names the other.
    assert_eq!(next(&mut a.connected, "peer_connect on a").await, b_url);
    assert_eq!(next(&mut b.connected, "peer_connect on b").await, a_url);
    let (from, got_space, data) = next(&mut b.received, "message on b").await;
    assert_eq!(
        (from, got_space, &data[..]),
        (a_url.clone(), space.clone(), &b"to b"[..])
    );

    timeout(
        BOUND,
        tb.send_space_notify(a_url.clone(), space.clone(), Bytes::from_static(b"to a")),
    )
    .await
    .expect("send timed out")
    .unwrap();
    let (from, _, data) = next(&mut a.received, "message on a").await;
    assert_eq!((from, &data[..]), (b_url.clone(), &b"to a"[..]));

    // A graceful close: b hears a's reason (the incumbent's text), nobody
    // is marked unresponsive.
    assert_eq!(TRANSPORT_CLOSED_REASON, "Transport closed");
    timeout(BOUND, ta.close()).await.expect("close timed out");
    let (peer, reason) = next(&mut b.disconnected, "peer_disconnect on b").await;
    assert_eq!(peer, a_url);
    assert_eq!(reason.as_deref(), Some(TRANSPORT_CLOSED_REASON));
    timeout(BOUND, tb.close()).await.expect("close timed out");
    assert!(a.unresponsive.try_recv().is_err());
    assert!(b.unresponsive.try_recv().is_err());
}

/// Every field named, as the incumbent's `MockTxHandler` has them: code that
/// builds one ports by changing the import.
#[test]
fn mock_handler_has_the_incumbents_fields() {
    let seen = Arc::new(Mutex::new(Vec::<&'static str>::new()));
    let log = |name: &'static str| {
        let seen = seen.clone();
        move || seen.lock().unwrap().push(name)
    };
    let (l1, l2, l3, l4, l5, l6, l7, l8, l9, l10) = (
        log("new_listening_address"),
        log("peer_connect"),
        log("peer_disconnect"),
        log("preflight_gather_outgoing"),
        log("preflight_validate_incoming"),
        log("recv_space_notify"),
        log("recv_module_msg"),
        log("set_unresponsive"),
        log("is_any_agent_at_url_blocked"),
        log("has_local_agents"),
    );
    let handler = MockTxHandler {
        new_listening_address: Arc::new(move |_: Url| l1()),
        peer_connect: Arc::new(move |_: Url| -> K2Result<()> {
            l2();
            Ok(())
        }),
        peer_disconnect: Arc::new(move |_: Url, _: Option<String>| l3()),
        preflight_gather_outgoing: Arc::new(move |_: Url| -> K2Result<Bytes> {
            l4();
            Ok(Bytes::from_static(b"pf"))
        }),
        preflight_validate_incoming: Arc::new(move |_: Url, _: Bytes| -> K2Result<()> {
            l5();
            Ok(())
        }),
        recv_space_notify: Arc::new(move |_: Url, _: SpaceId, _: Bytes| -> K2Result<()> {
            l6();
            Ok(())
        }),
        recv_module_msg: Arc::new(
            move |_: Url, _: SpaceId, _: String, _: Bytes| -> K2Result<()> {
                l7();
                Ok(())
            },
        ),
        set_unresponsive: Arc::new(move |_: Url, _: Timestamp| -> K2Result<()> {
            l8();
            Ok(())
        }),
        is_any_agent_at_url_blocked: Arc::new(move |_: &Url| -> K2Result<bool> {
            l9();
            Ok(true)
        }),
        has_local_agents: Arc::new(move || -> K2Result<bool> {
            l10();
            Ok(false)
        }),
        current_url: Arc::new(Mutex::new(dummy_url())),
    };
    let url = Url::from_str("http://127.0.0.1:1/peer").unwrap();
    let space = SpaceId::from(Bytes::from_static(&[1; 32]));
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(async {
            use kitsune2_api::TxModuleHandler;
            handler.new_listening_address(url.clone()).await;
            handler.peer_connect(url.clone()).unwrap();
            handler.peer_disconnect(url.clone(), None);
            let pf = handler.preflight_gather_outgoing(url.clone()).await;
            assert_eq!(pf.unwrap(), Bytes::from_static(b"pf"));
            handler
                .preflight_validate_incoming(url.clone(), Bytes::new())
                .await
                .unwrap();
            handler
                .recv_space_notify(url.clone(), space.clone(), Bytes::new())
                .unwrap();
            handler
                .recv_module_msg(url.clone(), space.clone(), "m".into(), Bytes::new())
                .unwrap();
            handler
                .set_unresponsive(url.clone(), Timestamp::now())
                .await
                .unwrap();
            assert!(handler.is_any_agent_at_url_blocked(&url).unwrap());
            assert!(!TxSpaceHandler::has_local_agents(&handler).await.unwrap());
        });
    assert_eq!(*handler.current_url.lock().unwrap(), url);
    assert_eq!(
        *seen.lock().unwrap(),
        [
            "new_listening_address",
            "peer_connect",
            "peer_disconnect",
            "preflight_gather_outgoing",
            "preflight_validate_incoming",
            "recv_space_notify",
            "recv_module_msg",
            "set_unresponsive",
            "is_any_agent_at_url_blocked",
            "has_local_agents",
        ]
    );
}

/// The defaults are the incumbent's.
#[tokio::test]
async fn mock_handler_defaults_are_the_incumbents() {
    use kitsune2_api::TxModuleHandler;
    let handler = MockTxHandler::default();
    let url = Url::from_str("http://127.0.0.1:1/peer").unwrap();
    let space = SpaceId::from(Bytes::from_static(&[1; 32]));
    assert_eq!(dummy_url().as_str(), "http://url.not.set:0/0");
    assert_eq!(*handler.current_url.lock().unwrap(), dummy_url());
    handler.peer_connect(url.clone()).unwrap();
    assert!(
        handler
            .preflight_gather_outgoing(url.clone())
            .await
            .unwrap()
            .is_empty()
    );
    handler
        .preflight_validate_incoming(url.clone(), Bytes::from_static(b"x"))
        .await
        .unwrap();
    handler
        .recv_space_notify(url.clone(), space.clone(), Bytes::new())
        .unwrap();
    handler
        .recv_module_msg(url.clone(), space, "m".into(), Bytes::new())
        .unwrap();
    handler
        .set_unresponsive(url.clone(), Timestamp::now())
        .await
        .unwrap();
    assert!(!handler.is_any_agent_at_url_blocked(&url).unwrap());
    assert!(TxSpaceHandler::has_local_agents(&handler).await.unwrap());
}
