//! What the kitsune2-iroh test suites share (unpublished, as h2's
//! `h2-support`): a recording kitsune2 handler, and with the `iroh`
//! feature a node harness over both transports and the helpers around it.
//!
//! | module     | owns | feature |
//! |------------|------|---------|
//! | `recorder` | [`Recorder`]: records every kitsune2 handler call, as a log ([`Events`]) and on channels ([`Taps`]); [`SpaceSide`], its space and module face | |
//! | `wait`     | [`BOUND`] and [`next`]: bounded waits | |
//! | `node`     | `Node`: a transport of either crate with a recorder, built as kitsune2's tests build one (`node`, `node_at`, `builder_for`, `builder_with`, `try_node`); `notify`, `stats`, `close_all` | `iroh` |
//! | `pair`     | two connected nodes (`connected`) and the teardown scenarios both suites run | `iroh` |
//! | `endpoint` | `loopback_options`, `loopback_endpoint`: raw iroh endpoints as the transport binds them, on loopback | `iroh` |
//! | `netns`    | `in_netns`, `runtime`: running offline beside the incumbent | `iroh` |
//! | `prelude`  | one glob import for a test file of the iroh suite | `iroh` |
//!
//! The core's tests (`crates/core/tests`, on the in-memory backend) use the
//! recorder without the `iroh` feature, so they build no iroh.

mod recorder;
mod wait;

#[cfg(feature = "iroh")]
mod endpoint;
#[cfg(feature = "iroh")]
mod netns;
#[cfg(feature = "iroh")]
mod node;
#[cfg(feature = "iroh")]
mod pair;
#[cfg(feature = "iroh")]
pub mod prelude;

#[cfg(feature = "iroh")]
pub use endpoint::{loopback_endpoint, loopback_options};
#[cfg(feature = "iroh")]
pub use netns::{NETNS_ENV, in_netns, runtime};
#[cfg(feature = "iroh")]
pub use node::{
    Node, builder_for, builder_with, close_all, factory, node, node_at, notify, ours, stats,
    theirs, try_node,
};
#[cfg(feature = "iroh")]
pub use pair::{assert_not_unresponsive, close_is_graceful, connected, disconnect_with_reason};
pub use recorder::{Events, Recorder, SpaceSide, Taps};
pub use wait::{BOUND, next};
