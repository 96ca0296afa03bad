//! The test-only relay-only mode (`IrohTransportFactory::create_relay_only`):
//! two such nodes reach each other through the relay alone, both ways,
//! and their connection never becomes direct (the benchmarks' relayed
//! path rests on that).

use kitsune2_iroh_test_support::prelude::*;

async fn relay_only_pair_talks_through_the_relay() {
    let relay = EmbeddedRelay::start().await.unwrap();
    let mut a = node(IrohTransportFactory::create_relay_only(), &relay, true).await;
    let mut b = node(IrohTransportFactory::create_relay_only(), &relay, true).await;
    for i in 0..20u8 {
        notify(&a, &b.url, Bytes::from(vec![i; 10_000])).await;
        notify(&b, &a.url, Bytes::from(vec![i; 100])).await;
    }
    for i in 0..20u8 {
        let (_, data) = next(&mut b.received, "a's message").await;
        assert_eq!(data, Bytes::from(vec![i; 10_000]));
        let (_, data) = next(&mut a.received, "b's message").await;
        assert_eq!(data, Bytes::from(vec![i; 100]));
    }
    // Holepunching has had its chance meanwhile (on loopback it takes a
    // few milliseconds): with no IP transport there is nothing to punch.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for s in [stats(&a).await, stats(&b).await] {
        assert_eq!(s.connections.len(), 1, "{s:?}");
        assert!(!s.connections[0].is_direct, "{s:?}");
    }
    close_all(&[&a, &b]).await;
    relay.shutdown().await.unwrap();
}

#[test]
fn relay_only_pair_talks_through_the_relay_alone() {
    runtime().block_on(relay_only_pair_talks_through_the_relay());
}
