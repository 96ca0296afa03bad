//! Sends are cancel-safe: a send dropped mid-frame (a `timeout` around
//! it, as kitsune2 does) never corrupts the stream. Sends of 1 KiB to
//! 8 MiB cancelled at random points, interleaved with normal sends: every
//! send that returned `Ok` is delivered intact, and nothing arrives
//! corrupted.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use proptest::prelude::*;

const SIZES: [usize; 4] = [1024, 64 * 1024, 1024 * 1024, 8 * 1024 * 1024];

/// `size` bytes: the index, then a fill byte derived from it.
fn payload(index: u32, size: usize) -> Bytes {
    let mut v = vec![(index % 251) as u8; size.max(4)];
    v[..4].copy_from_slice(&index.to_be_bytes());
    Bytes::from(v)
}

fn intact(data: &[u8]) -> Option<u32> {
    let index = u32::from_be_bytes(data.get(..4)?.try_into().ok()?);
    data[4..]
        .iter()
        .all(|b| *b == (index % 251) as u8)
        .then_some(index)
}

async fn run(steps: Vec<(usize, u64)>) {
    let (net, a, mut b) = connected_pair().await;
    net.set_latency(a.id, Some(Duration::from_micros(300)));
    let mut acked = Vec::new();
    let mut index = 0u32;
    for (size, cancel_after_us) in steps {
        let big = payload(index, SIZES[size]);
        let sent = tokio::time::timeout(
            Duration::from_micros(cancel_after_us),
            a.tx.send_module(b.url.clone(), space(), MODULE.to_owned(), big),
        )
        .await;
        if matches!(sent, Ok(Ok(()))) {
            acked.push(index);
        }
        index += 1;
        a.tx.send_module(
            b.url.clone(),
            space(),
            MODULE.to_owned(),
            payload(index, 16),
        )
        .await
        .unwrap_or_else(|e| panic!("normal send {index} failed: {e}"));
        acked.push(index);
        index += 1;
    }
    settle().await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut got = Vec::new();
    while let Ok((_, data)) = b.inbox.try_recv() {
        let i = intact(&data).unwrap_or_else(|| panic!("a corrupted message arrived"));
        got.push(i);
    }
    for i in &acked {
        assert_eq!(
            got.iter().filter(|g| *g == i).count(),
            1,
            "message {i} returned Ok: delivered once, intact (got {got:?})"
        );
    }
    assert!(
        b.events().disconnects.is_empty(),
        "the stream stayed whole: {:?}",
        b.events().disconnects
    );
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 48,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn cancelled_sends_never_corrupt_the_stream(
        steps in proptest::collection::vec((0usize..4, 0u64..3000), 1..12)
    ) {
        block_on_paused(run(steps));
    }
}
