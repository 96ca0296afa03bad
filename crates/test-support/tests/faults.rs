//! The fault kit (issue 13): peers in child processes (`k2peer`) that are
//! SIGKILLed, frozen (SIGSTOP) and started again under the same key, on
//! an embedded relay on 127.0.0.1. Each test is bounded in time; the
//! assertions are on counts (messages lost or duplicated, errors, events),
//! never on wall-clock time; the times are printed (`--nocapture`) and
//! recorded in `docs/benchmarks.md`.

use std::collections::{HashMap, HashSet};
use std::process::Stdio;
use std::time::{Duration, Instant};

use kitsune2_iroh::SecretKey;
use kitsune2_iroh::relay::EmbeddedRelay;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;

/// Bound on any one wait for a peer's line.
const WAIT: Duration = Duration::from_secs(45);

/// A `k2peer` child process and its line protocol.
struct Peer {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::UnboundedReceiver<(Instant, String)>,
    /// Every line read so far, in order.
    log: Vec<(Instant, String)>,
    url: String,
}

impl Peer {
    async fn start(relay: &str, key: &[u8; 32], write_timeout_s: Option<u32>) -> Self {
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_k2peer"));
        cmd.arg(relay).arg(hex);
        if let Some(w) = write_timeout_s {
            cmd.arg(w.to_string());
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("k2peer starts");
        let stdin = child.stdin.take().expect("piped");
        let stdout = child.stdout.take().expect("piped");
        let (tx, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut out = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = out.next_line().await {
                if tx.send((Instant::now(), line)).is_err() {
                    return;
                }
            }
        });
        let mut peer = Self {
            child,
            stdin,
            lines,
            log: Vec::new(),
            url: String::new(),
        };
        let (_, line) = peer.wait_for(|l| l.starts_with("url ")).await;
        peer.url = line["url ".len()..].to_owned();
        peer
    }

    async fn command(&mut self, line: &str) {
        self.stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .expect("k2peer reads its stdin");
    }

    /// The first line ever read matching `pred`, waiting (at most
    /// [`WAIT`]) for it when none has come yet.
    async fn wait_for(&mut self, pred: impl Fn(&str) -> bool) -> (Instant, String) {
        if let Some(found) = self.log.iter().find(|(_, l)| pred(l)) {
            return found.clone();
        }
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let next = tokio::time::timeout_at(deadline, self.lines.recv())
                .await
                .unwrap_or_else(|_| panic!("no matching line within {WAIT:?}"))
                .expect("k2peer's stdout open");
            self.log.push(next.clone());
            if pred(&next.1) {
                return next;
            }
        }
    }

    /// Reads every line until the process's stdout closes (it died).
    async fn drain_until_exit(&mut self) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while let Ok(Some(next)) = tokio::time::timeout_at(deadline, self.lines.recv()).await {
            self.log.push(next);
        }
    }

    /// Lines read so far that start with `prefix`, with the prefix cut.
    fn seen<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = (Instant, &'a str)> + 'a {
        self.log
            .iter()
            .filter_map(move |(t, l)| l.strip_prefix(prefix).map(|rest| (*t, rest)))
    }

    /// Payloads `TAG:SEQ` received with `tag`, as sequence numbers.
    fn received(&self, tag: &str) -> Vec<u64> {
        let want = format!("{tag}:");
        self.seen("recv ")
            .filter_map(|(_, rest)| rest.split(' ').nth(1))
            .filter_map(|p| p.strip_prefix(&want))
            .map(|s| s.parse().expect("seq"))
            .collect()
    }

    /// Sequence numbers of `tag` whose send returned `Ok`.
    fn oks(&self, tag: &str) -> Vec<u64> {
        self.seen("ok ")
            .filter_map(|(_, rest)| rest.strip_prefix(tag)?.strip_prefix(' '))
            .map(|s| s.parse().expect("seq"))
            .collect()
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.id().expect("running").to_string();
        let status = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {sig} {pid}");
    }
}

/// Two keys, the first of the larger endpoint id: that side's dials win
/// resolution, the case a restarted peer's new dial has to win against.
fn keys() -> ([u8; 32], [u8; 32]) {
    let id = |k: &[u8; 32]| *SecretKey::from_bytes(k).public().as_bytes();
    let (a, b) = ([7u8; 32], [9u8; 32]);
    if id(&a) > id(&b) { (a, b) } else { (b, a) }
}

async fn relay() -> EmbeddedRelay {
    EmbeddedRelay::start().await.expect("relay starts")
}

/// `big` sends one message to `small` and waits for it: `big` dialed.
async fn warm(big: &mut Peer, small: &mut Peer) {
    big.command(&format!("send {} 1 warm", small.url)).await;
    small.wait_for(|l| l.ends_with(" warm:0")).await;
}

fn assert_no_duplicates(seqs: &[u64], what: &str) {
    let unique: HashSet<_> = seqs.iter().collect();
    assert_eq!(unique.len(), seqs.len(), "{what}: duplicates delivered");
}

/// SIGKILL mid-traffic: the sender gets an error and a `peer_disconnect`
/// within seconds (no 60 s hang), and once the peer is started again
/// under the same key the sender's next sends reach it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_traffic_is_detected_and_the_restarted_peer_gets_the_rest() {
    let relay = relay().await;
    let r = relay.url().to_string();
    let (ka, kb) = keys();
    let mut a = Peer::start(&r, &ka, None).await;
    let mut b = Peer::start(&r, &kb, None).await;
    warm(&mut a, &mut b).await;

    const N: u64 = 3000;
    a.command(&format!("send {} {N} load 512", b.url)).await;
    b.wait_for(|l| l.ends_with(" load:200")).await;
    b.signal("-KILL");
    let killed = Instant::now();
    b.drain_until_exit().await;
    let first_err = a.wait_for(|l| l.starts_with("err load ")).await;
    let (detected, _) = a
        .wait_for(|l| l.starts_with(&format!("disconnect {}", b.url)))
        .await;
    let err_at = first_err.0.duration_since(killed);
    let disconnect_at = detected.duration_since(killed);
    let delivered_before: HashSet<u64> = b.received("load").into_iter().collect();
    let ok_before_err = a.oks("load");
    let lost_before = ok_before_err
        .iter()
        .filter(|s| !delivered_before.contains(s))
        .count();

    // The same key again: the sender's next sends reach the new process.
    let mut b2 = Peer::start(&r, &kb, None).await;
    assert_eq!(b2.url, b.url, "same key, same URL");
    a.wait_for(|l| l == "done load").await;
    let errs = a.seen("err load ").count();
    let ok_after: Vec<u64> = a
        .oks("load")
        .into_iter()
        .filter(|s| !ok_before_err.contains(s))
        .collect();
    if let Some(last) = ok_after.last() {
        b2.wait_for(|l| l.ends_with(&format!(" load:{last}"))).await;
    }
    let delivered_after = b2.received("load");
    let lost_after = ok_after
        .iter()
        .filter(|s| !delivered_after.contains(s))
        .count();
    println!(
        "SIGKILL: first send error after {err_at:?}, peer_disconnect after {disconnect_at:?}; \
         {lost_before} messages Ok but lost before the error ({} Ok, {} delivered), \
         {errs} sends failed, {} Ok after; {lost_after} of those lost",
        ok_before_err.len(),
        delivered_before.len(),
        ok_after.len()
    );
    assert_no_duplicates(&b.received("load"), "before the kill");
    assert_no_duplicates(&delivered_after, "after the restart");
    assert!(errs >= 1, "a send towards the dead peer failed");
    assert_eq!(
        a.seen(&format!("disconnect {}", b.url)).count(),
        1,
        "one peer_disconnect"
    );
    assert!(!ok_after.is_empty(), "sends after the restart went through");
    assert_eq!(lost_after, 0, "every Ok after the restart is delivered");
}

/// The peer restarts under the same key right after a SIGKILL, before
/// its old connection is noticed dead, and dials us: its new connection
/// replaces the dead one at once, no send of either side fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_peer_replaces_the_dead_connection_at_once() {
    let relay = relay().await;
    let r = relay.url().to_string();
    let (ka, kb) = keys();
    let mut a = Peer::start(&r, &ka, None).await;
    let mut b = Peer::start(&r, &kb, None).await;
    warm(&mut a, &mut b).await;

    b.signal("-KILL");
    b.drain_until_exit().await;
    let killed = Instant::now();
    let mut b2 = Peer::start(&r, &kb, None).await;
    let started = Instant::now();
    b2.command(&format!("send {} 10 back", a.url)).await;
    let (first, _) = a.wait_for(|l| l.ends_with(" back:0")).await;
    b2.wait_for(|l| l == "done back").await;
    a.command(&format!("send {} 10 again", b2.url)).await;
    a.wait_for(|l| l == "done again").await;
    b2.wait_for(|l| l.ends_with(" again:9")).await;
    println!(
        "come-back: restarted {:?} after the kill; its first message arrived {:?} after its send",
        started.duration_since(killed),
        first.duration_since(started)
    );
    a.wait_for(|l| l.ends_with(" back:9")).await;
    assert_eq!(
        b2.seen("err ").count(),
        0,
        "no send of the restarted peer failed"
    );
    assert_eq!(a.seen("err ").count(), 0, "no send towards it failed");
    assert_eq!(b2.oks("back").len(), 10);
    assert_eq!(b2.received("again").len(), 10);
    assert_eq!(
        a.seen("unresponsive ").count(),
        0,
        "no false unresponsive mark"
    );
}

/// SIGSTOP: a frozen peer (alive, reading nothing) costs the sender an
/// error within the write timeout (2 s here) or the idle timeout, not a
/// 60 s hang; after SIGCONT the sender's next sends reach it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_peer_fails_sends_then_recovers() {
    let relay = relay().await;
    let r = relay.url().to_string();
    let (ka, kb) = keys();
    let mut a = Peer::start(&r, &ka, Some(2)).await;
    let mut b = Peer::start(&r, &kb, None).await;
    warm(&mut a, &mut b).await;

    b.signal("-STOP");
    let frozen = Instant::now();
    a.command(&format!("send {} 200 big 65536", b.url)).await;
    let (err_at, line) = a.wait_for(|l| l.starts_with("err big ")).await;
    println!(
        "SIGSTOP: first send error {:?} after the freeze: {line}",
        err_at.duration_since(frozen)
    );
    // Thawed: the sends still queued (and their redial) reach the peer,
    // none blocks for the connect timeout.
    b.signal("-CONT");
    a.wait_for(|l| l == "done big").await;
    a.command(&format!("send {} 5 after", b.url)).await;
    a.wait_for(|l| l == "done after").await;
    b.wait_for(|l| l.ends_with(" after:4")).await;
    let delivered: HashSet<u64> = b.received("big").into_iter().collect();
    let oks = a.oks("big");
    println!(
        "SIGSTOP: {} of 200 sends failed, {} Ok, {} of those never delivered",
        a.seen("err big ").count(),
        oks.len(),
        oks.iter().filter(|s| !delivered.contains(s)).count()
    );
    assert!(
        a.seen("err big ").count() >= 1,
        "a send to the frozen peer failed"
    );
    assert_eq!(a.seen("err after ").count(), 0, "sends after SIGCONT work");
    assert_eq!(b.received("after"), vec![0, 1, 2, 3, 4], "in order, once");
    assert_no_duplicates(&b.received("big"), "frozen");
}

/// A peer whose transport is dropped without `close()`: the other side
/// hears `peer_disconnect` promptly (the close with code 0 leaves).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_peer_is_reported_promptly() {
    let relay = relay().await;
    let r = relay.url().to_string();
    let (ka, kb) = keys();
    let mut a = Peer::start(&r, &ka, None).await;
    let mut b = Peer::start(&r, &kb, None).await;
    warm(&mut a, &mut b).await;
    b.command("drop").await;
    let dropped = Instant::now();
    let (t, _) = a
        .wait_for(|l| l.starts_with(&format!("disconnect {}", b.url)))
        .await;
    println!(
        "drop without close: peer_disconnect after {:?}",
        t.duration_since(dropped)
    );
    let by_peer: HashMap<&str, usize> =
        a.seen("disconnect ")
            .fold(HashMap::new(), |mut m, (_, rest)| {
                *m.entry(rest.split(' ').next().unwrap_or_default())
                    .or_default() += 1;
                m
            });
    assert_eq!(by_peer.get(b.url.as_str()), Some(&1), "one peer_disconnect");
}
