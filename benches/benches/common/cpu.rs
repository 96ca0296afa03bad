//! The process's CPU time and the machine's load, from Linux's `/proc`.

use std::fs;

/// Nanoseconds this process has spent on a CPU: the sum over its live
/// threads of the first field of `/proc/self/task/<tid>/schedstat` (time
/// on CPU, in ns, kept by the scheduler: nanosecond resolution, unlike
/// `/proc/self/stat`'s clock ticks).
///
/// A thread that exits between two readings takes its time with it, so a
/// difference of two readings can come out low, and is only a measure of
/// work done while the same threads are alive (tokio's workers live as
/// long as the runtime; its blocking threads are kept 10 s after their
/// last job). A thread that exits while this reads is skipped.
///
/// # Panics
///
/// If `/proc/self/task` cannot be listed (not Linux).
pub fn process_cpu_ns() -> u64 {
    fs::read_dir("/proc/self/task")
        .expect("/proc/self/task lists this process's threads (Linux only)")
        .filter_map(|task| {
            let path = task.ok()?.path().join("schedstat");
            let stat = fs::read_to_string(path).ok()?;
            stat.split_whitespace().next()?.parse::<u64>().ok()
        })
        .sum()
}

/// The 1, 5 and 15 minute load averages as `/proc/loadavg` gives them,
/// or `unknown` when it cannot be read.
pub fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .filter(|l| !l.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}
