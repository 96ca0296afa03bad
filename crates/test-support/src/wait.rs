//! Bounded waits.

use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::timeout;

/// How long a test waits for anything that must happen.
pub const BOUND: Duration = Duration::from_secs(30);

/// The next event on `rx`, which must come within [`BOUND`].
///
/// # Panics
///
/// When none comes in time (naming `what`), or every sender is gone.
pub async fn next<T>(rx: &mut mpsc::UnboundedReceiver<T>, what: &str) -> T {
    timeout(BOUND, rx.recv())
        .await
        .unwrap_or_else(|_| panic!("no {what} in time"))
        .expect("handler gone")
}
