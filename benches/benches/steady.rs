//! Steady-state throughput of 64 KiB and 1 MiB messages, ours against bare
//! iroh, the incumbent and bare iroh with kitsune2's wrap (`bare_k2`),
//! measured so that a 5 % difference shows on a noisy machine.
//!
//! ```text
//! cargo bench -p kitsune2-iroh-benches --bench steady
//! RELAY_ONLY=1 cargo bench -p kitsune2-iroh-benches --bench steady
//! STEADY_ROUNDS=30 STEADY_BATCH_MIB=128 cargo bench -p kitsune2-iroh-benches --bench steady
//! ```
//!
//! The `transport` bench measures one pair after the other, each for a
//! few seconds, so a change of the machine's load between two pairs moves
//! their ratio (single runs gave 0.72-1.31 for pairs that should be
//! equal). Here every pair is started once, up front, over one embedded
//! relay on 127.0.0.1 (the pairs of `common::pair`, as `transport` builds
//! them: `ours`, `theirs` (the incumbent), `bare`, `bare_k2`; with
//! `RELAY_ONLY=1` ours and the two bare pairs bound without IP transports,
//! `ours_relay`, `bare_relay`, `bare_k2_relay`, and no incumbent, which has
//! no such mode). Each pair is connected by one round trip and warmed up
//! by one unrecorded batch of each size; then come `STEADY_ROUNDS` rounds.
//! In each round, for each size, every pair moves one batch, the pairs in
//! a rotating order (round `r` starts at pair `r mod n`, so that no pair
//! always goes first or last), each batch after a 50 ms pause.
//!
//! A batch: A sends `STEADY_BATCH_MIB` MiB of `size`-byte messages one
//! after the other (`send_space_notify(..).await`, or one frame written
//! per message on the bare pairs) while B's handler (reader) hands them to
//! the bench, which takes each off its channel as it comes
//! (`Pair::stream`: a handler that keeps up, so a batch does not pile up
//! in memory); the time runs from the first send until B has received
//! the last message. With `STEADY_DRAIN=end` the bench takes them off
//! only once A has sent them all, as the `transport` bench does (the
//! batch then sits in memory until then). Recorded per batch:
//!
//! - MB/s: payload bytes (10^6 per MB) over that time;
//! - CPU ns per byte: the process's CPU time during the batch
//!   (`common::cpu::process_cpu_ns`, the sum of the per-thread scheduler
//!   times in `/proc/self/task/*/schedstat`, read just before the first
//!   send and just after the last receipt) over the payload bytes. The
//!   process holds both nodes, the relay and the bench, so this is the
//!   whole cost of moving the bytes from A's caller to B's handler.
//!
//! Printed (Markdown): the load average (`/proc/loadavg`) at the start and
//! the end; per size and pair the median and quartiles of MB/s and of CPU
//! ns per byte over the rounds; per size the ratios ours / `bare_k2`,
//! ours / `bare` and ours / incumbent of MB/s, each taken within one round
//! (the two batches of a ratio ran seconds apart, so a load change between
//! rounds cancels out) with their median, quartiles and range over the
//! rounds, the same for ours / `bare_k2` of CPU per byte, and `bare_k2` /
//! `bare` of MB/s as a control (the two differ only by kitsune2's two
//! copies). Progress, one line per round, goes to stderr.
//!
//! Environment:
//!
//! - `STEADY_ROUNDS`: recorded rounds (default 15);
//! - `STEADY_BATCH_MIB`: MiB per batch (default 256: 4096 messages of 64
//!   KiB, 256 of 1 MiB, about 0.5 s each at 500 MB/s);
//! - `STEADY_DRAIN`: `end` to take B's messages off after the last send
//!   (see above);
//! - `RELAY_ONLY`: set (to anything but `0`) for the relayed path.
//!
//! Every wait is bounded: a node's start by `STARTUP_BOUND`, a batch by
//! `MESSAGE_BOUND` or the time it takes at 5 MB/s, whichever is longer,
//! the last look at the connections and each close by 10 s; a message
//! that does not arrive in time is a panic that says which.
//!
//! Without `--bench` on the command line (`cargo bench` passes it, `cargo
//! test --benches` does not) the binary checks that it works and no more:
//! one round of 4 MiB batches, the `STEADY_*` sizes ignored. `--list`
//! prints nothing and exits.

use std::time::{Duration, Instant};

use bytes::Bytes;
use kitsune2_iroh::relay::EmbeddedRelay;
use tokio::time::{sleep, timeout};

mod common;
use common::cpu::{load_average, process_cpu_ns};
use common::pair::{Kind, Pair, relay_only};
use common::stats::summary;
use common::{MESSAGE_BOUND, SINK, STARTUP_BOUND, runtime, tagged};

/// Payload sizes measured: 64 KiB and 1 MiB.
const SIZES: [usize; 2] = [64 * 1024, 1024 * 1024];

/// Recorded rounds unless `STEADY_ROUNDS` says otherwise.
const ROUNDS: usize = 15;

/// MiB per batch unless `STEADY_BATCH_MIB` says otherwise.
const BATCH_MIB: usize = 256;

/// MiB per batch when run as a test (without `--bench`), in one round.
const TEST_BATCH_MIB: usize = 4;

/// Pause before each batch, so that what the previous batch left behind
/// (acknowledgements in flight, memory being handed back) is not charged
/// to the next one.
const SETTLE: Duration = Duration::from_millis(50);

/// The slowest rate at which a batch still counts as moving: a batch gets
/// `MESSAGE_BOUND` or the time it takes at this rate, whichever is longer.
const SLOWEST_BYTES_PER_S: f64 = 5e6;

/// Bound on closing one pair and on the relay's shutdown.
const CLOSE_BOUND: Duration = Duration::from_secs(10);

/// What one batch of one pair gave.
#[derive(Clone, Copy, Debug)]
struct Sample {
    /// Payload MB (10^6 bytes) per second.
    mbs: f64,
    /// Process CPU nanoseconds per payload byte.
    cpu_ns_per_byte: f64,
}

/// The value of the environment variable `name` as a count of at least
/// 1, or `default` when it is unset or not a number.
fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
        .max(1)
}

/// Whether B's messages are taken off while A sends: yes unless
/// `STEADY_DRAIN=end`.
fn drain() -> bool {
    std::env::var("STEADY_DRAIN").map_or(true, |v| v != "end")
}

/// `size` as the tables show it.
fn size_label(size: usize) -> String {
    if size >= 1024 * 1024 {
        format!("{} MiB", size / (1024 * 1024))
    } else {
        format!("{} KiB", size / 1024)
    }
}

/// Moves one batch of `n` copies of `msg` through `pair`.
async fn measure(pair: &mut Pair, msg: &Bytes, n: usize) -> Sample {
    let bytes = (msg.len() * n) as f64;
    let bound = MESSAGE_BOUND.max(Duration::from_secs_f64(bytes / SLOWEST_BYTES_PER_S));
    let cpu_before = process_cpu_ns();
    let elapsed = pair.stream(msg, n, bound, drain()).await;
    let cpu_after = process_cpu_ns();
    Sample {
        mbs: bytes / elapsed.as_secs_f64() / 1e6,
        cpu_ns_per_byte: cpu_after.saturating_sub(cpu_before) as f64 / bytes,
    }
}

/// The pairs and, per pair, size and round, what its batch gave.
struct Results {
    /// Each pair's name and kind, in the order of `samples`.
    pairs: Vec<(&'static str, Kind)>,
    /// `samples[pair][size][round]`, sizes as in [`SIZES`].
    samples: Vec<[Vec<Sample>; 2]>,
}

impl Results {
    /// The index of the pair of `kind`, if it ran.
    fn find(&self, kind: Kind) -> Option<usize> {
        self.pairs.iter().position(|&(_, k)| k == kind)
    }

    /// Per round, `value` of pair `a`'s batch over pair `b`'s, for the
    /// size at index `s`.
    fn ratios(&self, a: usize, b: usize, s: usize, value: fn(&Sample) -> f64) -> Vec<f64> {
        self.samples[a][s]
            .iter()
            .zip(&self.samples[b][s])
            .map(|(x, y)| value(x) / value(y))
            .collect()
    }
}

/// Starts the relay and the pairs, warms them up, runs `rounds` rounds of
/// batches of `batch_bytes` bytes and closes everything.
async fn run(rounds: usize, batch_bytes: usize) -> Results {
    let relay = timeout(STARTUP_BOUND, EmbeddedRelay::start())
        .await
        .unwrap_or_else(|_| panic!("embedded relay not started within {STARTUP_BOUND:?}"))
        .expect("embedded relay");
    let mut pairs = Pair::all(&relay).await;
    let msgs = SIZES.map(|size| tagged(SINK, size));
    let counts = SIZES.map(|size| (batch_bytes / size).max(1));

    for (s, msg) in msgs.iter().enumerate() {
        for pair in &mut pairs {
            sleep(SETTLE).await;
            let sample = measure(pair, msg, counts[s]).await;
            eprintln!(
                "warm-up: {} {}: {:.0} MB/s",
                pair.name,
                size_label(SIZES[s]),
                sample.mbs
            );
        }
    }

    let n = pairs.len();
    let mut samples: Vec<[Vec<Sample>; 2]> = (0..n).map(|_| [Vec::new(), Vec::new()]).collect();
    for round in 0..rounds {
        let t = Instant::now();
        for (s, msg) in msgs.iter().enumerate() {
            for i in 0..n {
                let p = (round + i) % n;
                sleep(SETTLE).await;
                let sample = measure(&mut pairs[p], msg, counts[s]).await;
                samples[p][s].push(sample);
            }
        }
        let line = SIZES
            .iter()
            .enumerate()
            .map(|(s, &size)| {
                let mbs = pairs
                    .iter()
                    .zip(&samples)
                    .map(|(pair, got)| format!("{} {:.0}", pair.name, got[s][round].mbs))
                    .collect::<Vec<_>>()
                    .join(", ");
                format!("{}: {mbs}", size_label(size))
            })
            .collect::<Vec<_>>()
            .join("; ");
        eprintln!(
            "round {}/{rounds} ({:.1} s, starting at {}): MB/s {line}",
            round + 1,
            t.elapsed().as_secs_f64(),
            pairs[round % n].name
        );
    }

    let names = pairs.iter().map(|p| (p.name, p.kind)).collect();
    for pair in pairs {
        let name = pair.name;
        match timeout(CLOSE_BOUND, pair.direct()).await {
            Ok(direct) => eprintln!("{name}: direct at the end: {direct}"),
            Err(_) => eprintln!("{name}: no network stats within {CLOSE_BOUND:?}"),
        }
        if timeout(CLOSE_BOUND, pair.close()).await.is_err() {
            eprintln!("{name}: not closed within {CLOSE_BOUND:?}");
        }
    }
    if timeout(CLOSE_BOUND, relay.shutdown()).await.is_err() {
        eprintln!("relay not shut down within {CLOSE_BOUND:?}");
    }
    Results {
        pairs: names,
        samples,
    }
}

/// Prints the tables (see the module docs).
fn report(results: &Results, rounds: usize, batch_bytes: usize, loads: [&str; 2], wall: Duration) {
    let counts = SIZES
        .iter()
        .map(|&size| format!("{} x {}", (batch_bytes / size).max(1), size_label(size)))
        .collect::<Vec<_>>()
        .join(", ");
    println!(
        "steady state: {rounds} round{}, batches of {} MiB ({counts}), taken off {}, relay-only: {}, {:.0} s",
        if rounds == 1 { "" } else { "s" },
        batch_bytes / (1024 * 1024),
        if drain() {
            "while sent"
        } else {
            "after the last send"
        },
        if relay_only() { "yes" } else { "no" },
        wall.as_secs_f64()
    );
    println!(
        "load average at the start: {}; at the end: {}",
        loads[0], loads[1]
    );
    println!();
    println!("| pair | payload | MB/s median | MB/s q1-q3 | CPU ns/B median | CPU ns/B q1-q3 |");
    println!("|---|---|---|---|---|---|");
    for (s, &size) in SIZES.iter().enumerate() {
        for (p, &(name, _)) in results.pairs.iter().enumerate() {
            let got = &results.samples[p][s];
            let mbs: Vec<f64> = got.iter().map(|x| x.mbs).collect();
            let cpu: Vec<f64> = got.iter().map(|x| x.cpu_ns_per_byte).collect();
            let [mbs_med, mbs_q1, mbs_q3, ..] = summary(&mbs);
            let [cpu_med, cpu_q1, cpu_q3, ..] = summary(&cpu);
            println!(
                "| {name} | {} | {mbs_med:.0} | {mbs_q1:.0}-{mbs_q3:.0} | {cpu_med:.2} | {cpu_q1:.2}-{cpu_q3:.2} |",
                size_label(size)
            );
        }
    }
    println!();
    println!("| ratio, within one round | payload | median | q1 | q3 | min | max |");
    println!("|---|---|---|---|---|---|---|");
    let mbs: fn(&Sample) -> f64 = |x| x.mbs;
    let cpu: fn(&Sample) -> f64 = |x| x.cpu_ns_per_byte;
    let rows = [
        (Kind::Ours, Kind::BareK2, "MB/s", mbs),
        (Kind::Ours, Kind::Bare, "MB/s", mbs),
        (Kind::Ours, Kind::Incumbent, "MB/s", mbs),
        (Kind::Ours, Kind::BareK2, "CPU per byte", cpu),
        (Kind::BareK2, Kind::Bare, "MB/s (control)", mbs),
    ];
    for (a, b, what, value) in rows {
        let (Some(a), Some(b)) = (results.find(a), results.find(b)) else {
            continue;
        };
        for (s, &size) in SIZES.iter().enumerate() {
            let [med, q1, q3, min, max] = summary(&results.ratios(a, b, s, value));
            println!(
                "| {} / {} {what} | {} | {med:.3} | {q1:.3} | {q3:.3} | {min:.3} | {max:.3} |",
                results.pairs[a].0,
                results.pairs[b].0,
                size_label(size)
            );
        }
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        // `cargo test --benches` lists: nothing to list here.
        return;
    }
    let (rounds, batch_mib) = if std::env::args().any(|a| a == "--bench") {
        (
            env_count("STEADY_ROUNDS", ROUNDS),
            env_count("STEADY_BATCH_MIB", BATCH_MIB),
        )
    } else {
        (1, TEST_BATCH_MIB)
    };
    let batch_bytes = batch_mib * 1024 * 1024;
    let load_start = load_average();
    let t = Instant::now();
    let results = runtime().block_on(run(rounds, batch_bytes));
    let wall = t.elapsed();
    let load_end = load_average();
    report(
        &results,
        rounds,
        batch_bytes,
        [&load_start, &load_end],
        wall,
    );
}
