//! The embedded relay: starts on loopback, serves HTTP, stops.

use kitsune2_iroh::relay::EmbeddedRelay;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

const BOUND: Duration = Duration::from_secs(10);

/// Sends `GET /generate_204` (the relay's captive-portal probe) and returns
/// the status line.
async fn probe(addr: SocketAddr) -> std::io::Result<String> {
    let mut tcp = TcpStream::connect(addr).await?;
    tcp.write_all(b"GET /generate_204 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await?;
    let mut buf = Vec::new();
    tcp.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf);
    Ok(text.lines().next().unwrap_or_default().to_owned())
}

#[tokio::test]
async fn starts_on_loopback_with_http_url() {
    let relay = timeout(BOUND, EmbeddedRelay::start())
        .await
        .unwrap()
        .unwrap();
    let addr = relay.addr();
    assert!(addr.ip().is_loopback());
    assert_ne!(addr.port(), 0);
    assert_eq!(relay.url().to_string(), format!("http://{addr}/"));
    let status = timeout(BOUND, probe(addr)).await.unwrap().unwrap();
    assert!(status.starts_with("HTTP/1.1 204"), "{status}");
    timeout(BOUND, relay.shutdown()).await.unwrap().unwrap();
    assert!(timeout(BOUND, probe(addr)).await.unwrap().is_err());
}

#[tokio::test]
async fn binds_the_given_address() {
    // Take a free port, release it, and ask the relay for it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let want = SocketAddr::from(([127, 0, 0, 1], port));
    let relay = timeout(BOUND, EmbeddedRelay::start_on(want))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(relay.addr(), want);
    // A second relay on the same address fails with a typed error.
    let err = timeout(BOUND, EmbeddedRelay::start_on(want))
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(err, kitsune2_iroh::IrohTransportError::RelaySpawn { .. }),
        "{err:?}"
    );
    timeout(BOUND, relay.shutdown()).await.unwrap().unwrap();
}

#[tokio::test]
async fn drop_stops_the_server() {
    let relay = timeout(BOUND, EmbeddedRelay::start())
        .await
        .unwrap()
        .unwrap();
    let addr = relay.addr();
    timeout(BOUND, probe(addr)).await.unwrap().unwrap();
    drop(relay);
    // The listener goes away once the aborted tasks are dropped; poll a
    // bounded number of times.
    let mut stopped = false;
    for _ in 0..50 {
        if TcpStream::connect(addr).await.is_err() {
            stopped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(stopped, "relay still accepting connections after drop");
}
