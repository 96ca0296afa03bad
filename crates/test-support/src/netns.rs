//! Running a test offline: inside a private network namespace, since the
//! incumbent probes the LAN gateway, and on a runtime of its own.

use std::process::Command;

/// Set in the environment of a test binary re-run inside a namespace.
pub const NETNS_ENV: &str = "KITSUNE2_IROH_TEST_IN_NETNS";

/// Runs `body` inside a private network namespace: re-executes this test
/// binary for `test_name` under `unshare -rn` (loopback up) and asserts it
/// passed. Inside the namespace, runs `body`.
///
/// # Panics
///
/// When `unshare` is missing or the re-run test fails.
pub fn in_netns(test_name: &str, body: impl FnOnce()) {
    if std::env::var_os(NETNS_ENV).is_some() {
        body();
        return;
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let out = Command::new("unshare")
        .args(["-rn", "sh", "-c", "ip link set lo up && exec \"$0\" \"$@\""])
        .arg(exe)
        .args(["--exact", test_name, "--test-threads=1"])
        .env(NETNS_ENV, "1")
        .output()
        .expect("`unshare` is needed to run interop tests offline");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "in-namespace run failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A multi-threaded runtime with two workers, for tests that cannot be
/// `#[tokio::test]` (those that run inside [`in_netns`]).
///
/// # Panics
///
/// When the runtime cannot be built.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}
