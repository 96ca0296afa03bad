//! Wire compatibility of connection teardown between a node on this crate
//! and a node on `kitsune2_transport_iroh` 0.6.0-dev.3 over one embedded
//! relay: `disconnect` with a reason reaches the other side's
//! `peer_disconnect`, and `close` is a graceful disconnect that marks no
//! peer unresponsive, with either crate on either side.
//!
//! Like `interop.rs`, each test re-runs itself under `unshare -rn`.

use kitsune2_iroh_test_support::prelude::*;

#[test]
fn ours_disconnects_incumbent_with_reason() {
    in_netns("ours_disconnects_incumbent_with_reason", || {
        runtime().block_on(disconnect_with_reason(true, false));
    });
}

#[test]
fn incumbent_disconnects_ours_with_reason() {
    in_netns("incumbent_disconnects_ours_with_reason", || {
        runtime().block_on(disconnect_with_reason(false, true));
    });
}

#[test]
fn ours_close_is_graceful_for_incumbent() {
    in_netns("ours_close_is_graceful_for_incumbent", || {
        runtime().block_on(close_is_graceful(true, false));
    });
}

#[test]
fn incumbent_close_is_graceful_for_ours() {
    in_netns("incumbent_close_is_graceful_for_ours", || {
        runtime().block_on(close_is_graceful(false, true));
    });
}
