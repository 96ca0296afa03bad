//! Two real iroh endpoints, as `bind_endpoint` builds them, connect through
//! the embedded relay on loopback and move bytes over a uni stream.

use bytes::Bytes;
use iroh::{EndpointAddr, TransportAddr};
use kitsune2_iroh::endpoint::{ALPN, bind_endpoint};
use kitsune2_iroh::relay::EmbeddedRelay;
use kitsune2_iroh_test_support::loopback_options;
use std::time::Duration;
use tokio::time::timeout;

const BOUND: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_endpoints_exchange_bytes_through_embedded_relay() {
    let relay = EmbeddedRelay::start().await.unwrap();
    let a = bind_endpoint(&loopback_options(relay.url())).await.unwrap();
    let b = bind_endpoint(&loopback_options(relay.url())).await.unwrap();
    timeout(BOUND, async { tokio::join!(a.online(), b.online()) })
        .await
        .expect("endpoints did not reach the relay in time");

    // B is dialled by id and relay URL only, as a peer URL gives them.
    let b_addr = EndpointAddr::from_parts(b.id(), [TransportAddr::Relay(relay.url().clone())]);

    let accept = async {
        let incoming = b.accept().await.expect("endpoint closed");
        let conn = incoming.await.unwrap();
        assert_eq!(conn.alpn(), ALPN);
        let mut recv = conn.accept_uni().await.unwrap();
        let mut got = Vec::new();
        // Bounded: the stream is finished after a known number of bytes.
        while let Some(chunk) = recv.read_chunk(usize::MAX).await.unwrap() {
            got.extend_from_slice(&chunk);
            assert!(got.len() <= 5 + 11);
        }
        (conn, got)
    };
    let dial = async {
        let conn = a.connect(b_addr, ALPN).await.unwrap();
        assert_eq!(conn.remote_id(), b.id());
        let mut send = conn.open_uni().await.unwrap();
        let mut chunks = [
            Bytes::from_static(&[1, 0, 0, 0, 11]),
            Bytes::from_static(b"hello world"),
        ];
        send.write_all_chunks(&mut chunks).await.unwrap();
        send.finish().unwrap();
        send.stopped().await.unwrap();
        conn
    };
    let ((b_conn, got), a_conn) = timeout(BOUND, async { tokio::join!(accept, dial) })
        .await
        .expect("exchange did not finish in time");
    assert_eq!(got, b"\x01\x00\x00\x00\x0bhello world");
    assert_eq!(b_conn.remote_id(), a.id());

    a_conn.close(1u32.into(), b"graceful");
    timeout(BOUND, async { tokio::join!(a.close(), b.close()) })
        .await
        .unwrap();
    relay.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_alpn_is_refused() {
    let relay = EmbeddedRelay::start().await.unwrap();
    let a = bind_endpoint(&loopback_options(relay.url())).await.unwrap();
    let b = bind_endpoint(&loopback_options(relay.url())).await.unwrap();
    timeout(BOUND, async { tokio::join!(a.online(), b.online()) })
        .await
        .unwrap();
    let b_addr = EndpointAddr::from_parts(b.id(), [TransportAddr::Relay(relay.url().clone())]);
    // B accepts whatever arrives; a handshake with a foreign ALPN fails.
    let b_accept = b.clone();
    let acceptor = tokio::spawn(async move {
        while let Some(incoming) = b_accept.accept().await {
            assert!(incoming.await.is_err(), "foreign ALPN accepted");
        }
    });
    let res = timeout(BOUND, a.connect(b_addr, b"not-kitsune2/0"))
        .await
        .expect("refusal did not arrive in time");
    assert!(res.is_err());
    timeout(BOUND, async { tokio::join!(a.close(), b.close()) })
        .await
        .unwrap();
    timeout(BOUND, acceptor).await.unwrap().unwrap();
}
