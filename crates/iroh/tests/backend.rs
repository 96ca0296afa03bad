//! The iroh implementations of the core's traits, over real endpoints and
//! the embedded relay on loopback.

use bytes::Bytes;
use kitsune2_iroh::relay::EmbeddedRelay;
use kitsune2_iroh::url::peer_url;
use kitsune2_iroh::{IrohEndpoint, RelayUrl};
use kitsune2_iroh_core::{CloseCode, Endpoint, PeerAddr};
use kitsune2_iroh_test_support::loopback_endpoint;
use std::time::Duration;
use tokio::time::timeout;

const BOUND: Duration = Duration::from_secs(20);

/// An [`IrohEndpoint`] on `relay`, and the iroh endpoint it wraps.
async fn endpoint(relay: &RelayUrl) -> (IrohEndpoint, kitsune2_iroh::Endpoint) {
    let ep = loopback_endpoint(relay).await;
    (IrohEndpoint::new(ep.clone()), ep)
}

async fn published_url(ep: &IrohEndpoint) -> kitsune2_api::Url {
    let mut rx = ep.watch_url();
    timeout(BOUND, rx.wait_for(Option::is_some))
        .await
        .expect("no URL published in time")
        .unwrap()
        .clone()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_peer_url_and_moves_frames_and_close_codes() {
    let relay = EmbeddedRelay::start().await.unwrap();
    let (a, _) = endpoint(relay.url()).await;
    let (b, b_iroh) = endpoint(relay.url()).await;

    let b_url = published_url(&b).await;
    let b_id = *b_iroh.id().as_bytes();
    assert_eq!(b.local_id(), b_id);
    assert_eq!(b_url, peer_url(relay.url(), b_iroh.id()).unwrap());
    assert!(!a.is_home_relay_known_down());

    let peer = PeerAddr::parse(&b_url).unwrap();
    let (a_conn, b_conn) = timeout(BOUND, async { tokio::join!(a.connect(&peer), b.accept()) })
        .await
        .expect("connect timed out");
    let a_conn = a_conn.unwrap();
    let b_conn = b_conn.expect("endpoint closed").unwrap();
    assert_eq!(a_conn.remote_id(), b_id);
    assert_eq!(b_conn.remote_id(), a.local_id());

    // A header and a payload in one vectored write; read back as chunks.
    let mut send = a_conn.open_uni().await.unwrap();
    let mut chunks = [
        Bytes::from_static(&[1, 0, 0, 0, 3]),
        Bytes::from_static(b"abc"),
    ];
    timeout(BOUND, send.write_chunks(&mut chunks))
        .await
        .unwrap()
        .unwrap();
    let mut recv = timeout(BOUND, b_conn.accept_uni()).await.unwrap().unwrap();
    let mut got = Vec::new();
    while got.len() < 8 {
        let chunk = timeout(BOUND, recv.read_chunk())
            .await
            .unwrap()
            .unwrap()
            .expect("stream ended early");
        got.extend_from_slice(&chunk);
    }
    assert_eq!(got, b"\x01\x00\x00\x00\x03abc");

    // An application close carries its code and reason to the peer.
    assert_eq!(b_conn.remote_close(), None);
    a_conn.close(CloseCode::Superseded, b"superseded");
    // The peer sees the connection fail, then reports the close.
    let err = timeout(BOUND, recv.read_chunk()).await.unwrap();
    assert!(err.is_err(), "{err:?}");
    assert_eq!(
        b_conn.remote_close(),
        Some((CloseCode::Superseded, Bytes::from_static(b"superseded")))
    );
    assert!(a_conn.remote_close().is_none());

    timeout(BOUND, async { tokio::join!(a.close(), b.close()) })
        .await
        .unwrap();
    assert!(timeout(BOUND, a.accept()).await.unwrap().is_none());
    relay.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn home_relay_known_down_after_relay_stops() {
    let relay = EmbeddedRelay::start().await.unwrap();
    let (ep, ep_iroh) = endpoint(relay.url()).await;
    published_url(&ep).await;
    // The relay must have been up: wait until the endpoint is connected to it.
    timeout(BOUND, ep_iroh.online())
        .await
        .expect("endpoint did not come online");
    assert!(!ep.is_home_relay_known_down());
    relay.shutdown().await.unwrap();
    let mut down = false;
    for _ in 0..400 {
        if ep.is_home_relay_known_down() {
            down = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        down,
        "relay shut down but not reported down within 20 s: {:?}",
        iroh::Watcher::get(&mut ep_iroh.home_relay_status())
    );
    timeout(BOUND, ep.close()).await.unwrap();
}
