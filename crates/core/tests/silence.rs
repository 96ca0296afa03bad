//! A peer that falls silent on an established connection (crashed, frozen,
//! its network gone) is taken as lost after the silence timeout, whatever
//! QUIC's idle timeout: the connection is closed, `peer_disconnect` names
//! the silence and the peer is marked unresponsive; a live peer, however
//! idle, is never taken as silent.

mod common;

use std::time::Duration;

use common::*;
use kitsune2_iroh_core::DEFAULT_SILENCE_TIMEOUT;

#[tokio::test(start_paused = true)]
async fn a_crashed_peer_is_taken_as_lost_after_the_silence_timeout() {
    let (net, a, b) = connected_pair().await;
    assert_eq!(net.crash(b.id), 1);
    let crashed = tokio::time::Instant::now();
    tokio::time::sleep(DEFAULT_SILENCE_TIMEOUT - Duration::from_secs(1)).await;
    settle().await;
    assert_eq!(a.imp.connections().len(), 1, "still up before the timeout");
    assert!(a.events().disconnects.is_empty());
    // Checked every second: at most one check late.
    tokio::time::sleep(Duration::from_secs(2)).await;
    settle().await;
    let taken = crashed.elapsed();
    assert!(a.imp.connections().is_empty(), "closed after {taken:?}");
    let events = a.events();
    assert_eq!(events.disconnects.len(), 1, "{:?}", events.disconnects);
    let reason = events.disconnects[0].1.clone().unwrap_or_default();
    assert!(
        reason.contains("nothing from the peer for 10 s"),
        "{reason}"
    );
    assert_eq!(events.unresponsive.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn an_idle_live_peer_is_never_taken_as_silent() {
    let (_net, a, b) = connected_pair().await;
    tokio::time::sleep(DEFAULT_SILENCE_TIMEOUT * 10).await;
    settle().await;
    assert_eq!(a.imp.connections().len(), 1);
    assert_eq!(b.imp.connections().len(), 1);
    assert!(a.events().disconnects.is_empty());
    assert!(b.events().disconnects.is_empty());
}
