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

/// What the drain counts on (`docs/architecture.md`, "Drain"): once the
/// peer's QUIC acknowledged a stream's FIN, everything on that stream is
/// in our QUIC's receive buffer, and it stays readable to the FIN after
/// the peer closes the connection (with code 1, as a drain ends): QUIC
/// keeps a closed connection's received streams, and a read takes what
/// is buffered before it reports the close. Also for a stream accepted
/// only after the close (a `kitsune2/1` message stream).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_data_stays_readable_after_the_peers_close() {
    const LEN: usize = 256 * 1024;
    let relay = EmbeddedRelay::start().await.unwrap();
    let (a, _) = endpoint(relay.url()).await;
    let (b, _) = endpoint(relay.url()).await;
    let peer = PeerAddr::parse(&published_url(&b).await).unwrap();
    let (a_conn, b_conn) = timeout(BOUND, async { tokio::join!(a.connect(&peer), b.accept()) })
        .await
        .expect("connect timed out");
    let (a_conn, b_conn) = (a_conn.unwrap(), b_conn.expect("endpoint closed").unwrap());

    let payload = |i: usize| Bytes::from((0..LEN).map(|j| (i + j) as u8).collect::<Vec<_>>());
    // Stream 1: b accepts it before the close (as the reader does with
    // the control stream); stream 2: only after.
    let mut first = a_conn.open_uni().await.unwrap();
    timeout(BOUND, first.write_chunks(&mut [Bytes::from_static(b"x")]))
        .await
        .unwrap()
        .unwrap();
    let mut recv_first = timeout(BOUND, b_conn.accept_uni()).await.unwrap().unwrap();
    let mut second = a_conn.open_uni().await.unwrap();
    for (s, i) in [(&mut first, 1), (&mut second, 2)] {
        timeout(BOUND, s.write_chunks(&mut [payload(i)]))
            .await
            .unwrap()
            .unwrap();
        // Resolves once b's QUIC acknowledged the FIN and all before it.
        timeout(BOUND, s.finish()).await.unwrap().unwrap();
    }
    a_conn.close(CloseCode::Graceful, b"bye");
    // b's QUIC has the close before b reads a byte more.
    timeout(BOUND, async {
        while b_conn.remote_close().is_none() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the close did not arrive");

    let read_all = async |recv: &mut kitsune2_iroh_core::DynRecvStream| {
        let mut got = Vec::new();
        for _ in 0..=LEN {
            match timeout(BOUND, recv.read_chunks()).await.unwrap() {
                Ok(Some(chunks)) => chunks.iter().for_each(|c| got.extend_from_slice(c)),
                Ok(None) => return Ok(got),
                Err(e) => return Err((got.len(), e)),
            }
        }
        panic!("more reads than bytes");
    };
    let got = read_all(&mut recv_first).await.expect("stream 1 cut short");
    assert_eq!(got.len(), 1 + LEN);
    assert_eq!(&got[1..], &payload(1)[..]);
    let mut recv_second = timeout(BOUND, b_conn.accept_uni())
        .await
        .unwrap()
        .expect("a received stream is accepted after the close");
    let got = read_all(&mut recv_second)
        .await
        .expect("stream 2 cut short");
    assert_eq!(got, payload(2));
    // Then, and only then, the connection's end.
    assert!(timeout(BOUND, b_conn.accept_uni()).await.unwrap().is_err());
    assert_eq!(
        b_conn.remote_close(),
        Some((CloseCode::Graceful, Bytes::from_static(b"bye")))
    );
    timeout(BOUND, async { tokio::join!(a.close(), b.close()) })
        .await
        .unwrap();
    relay.shutdown().await.unwrap();
}
