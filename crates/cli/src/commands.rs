//! The subcommands.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use kitsune2_api::Url;
use kitsune2_iroh::RelayUrl;
use kitsune2_iroh::relay::EmbeddedRelay;
use serde_json::json;
use tokio::time::Instant;

use crate::error::CliError;
use crate::node::{Node, parse_peer_url, parse_relay_url};
use crate::stats::{Summary, ms, ms_f64};

/// How long to wait for every acknowledgement after the last send.
const ACK_WAIT: Duration = Duration::from_secs(30);

fn progress(total: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} ({elapsed})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_message(what.to_owned());
    bar
}

/// Deterministic payload for message `seq` of `size` bytes, so receivers can
/// check content.
fn payload(seq: u64, size: usize) -> Vec<u8> {
    (0..size)
        .map(|i| (seq as usize).wrapping_add(i) as u8)
        .collect()
}

async fn start_relay() -> Result<EmbeddedRelay, CliError> {
    EmbeddedRelay::start()
        .await
        .map_err(|e| CliError::Relay(e.to_string()))
}

/// Messages and bytes delivered, by (sender, receiver).
type PairCounts = HashMap<(usize, usize), (u64, u64)>;

/// One ordered pair's results.
#[derive(Debug, Default)]
struct PairResult {
    sent: u64,
    acked: u64,
    bytes: u64,
    rtts: Vec<Duration>,
    connect: Option<Duration>,
}

/// `k2iroh demo`.
pub(crate) async fn demo(
    nodes: usize,
    messages: u64,
    size: usize,
    json_out: bool,
) -> Result<(), CliError> {
    if nodes < 2 {
        return Err(CliError::Zero("--nodes minus one"));
    }
    if messages == 0 {
        return Err(CliError::Zero("--messages"));
    }
    let relay = start_relay().await?;
    if !json_out {
        println!("relay: {} (embedded, loopback)", relay.url());
    }
    // Nodes start concurrently: each waits a few seconds for its relay.
    let starting: Vec<_> = (0..nodes)
        .map(|_| {
            let url = relay.url().clone();
            tokio::spawn(async move { Node::start(&url).await })
        })
        .collect();
    let mut started = Vec::new();
    for s in starting {
        started.push(s.await.map_err(|e| CliError::Transport(e.to_string()))??);
    }
    let started = std::sync::Arc::new(started);
    let urls: Vec<Url> = started.iter().map(|n| n.url().clone()).collect();
    // Receivers count and check what reaches them.
    let delivered: std::sync::Arc<std::sync::Mutex<PairCounts>> = std::sync::Arc::default();
    let mut counters = Vec::new();
    for (j, node) in started.iter().enumerate() {
        let mut inbox = node.take_inbox();
        let from_index: HashMap<Url, usize> = urls
            .iter()
            .cloned()
            .enumerate()
            .map(|(i, u)| (u, i))
            .collect();
        let delivered = delivered.clone();
        counters.push(tokio::spawn(async move {
            let mut next: HashMap<usize, u64> = HashMap::new();
            while let Some(r) = inbox.recv().await {
                let Some(&i) = from_index.get(&r.from) else {
                    continue;
                };
                // Content and order check: message n carries payload(n).
                let n = next.entry(i).or_default();
                let ok = r.payload[..] == payload(*n, r.payload.len())[..];
                *n += 1;
                if ok {
                    let mut d = delivered.lock().expect("poisoned");
                    let e = d.entry((i, j)).or_default();
                    e.0 += 1;
                    e.1 += r.payload.len() as u64;
                }
            }
        }));
    }
    let total = (nodes * (nodes - 1)) as u64 * messages;
    let bar = if json_out {
        ProgressBar::hidden()
    } else {
        progress(total, "messages")
    };
    let t0 = Instant::now();
    let mut pairs = Vec::new();
    for i in 0..nodes {
        for (j, to) in urls.iter().enumerate() {
            if i == j {
                continue;
            }
            let nodes_ref = started.clone();
            let to = to.clone();
            let bar = bar.clone();
            pairs.push(tokio::spawn(async move {
                let node = &nodes_ref[i];
                let mut r = PairResult::default();
                let mut in_flight = Vec::new();
                for seq in 0..messages {
                    match node.send(&to, &payload(seq, size)).await {
                        Ok(f) => in_flight.push(f),
                        Err(e) => tracing::warn!(%e, "send failed"),
                    }
                    r.sent += 1;
                }
                let deadline = Instant::now() + ACK_WAIT;
                for f in in_flight {
                    if let Some(rtt) = f.acked(deadline).await {
                        r.connect.get_or_insert(rtt);
                        r.rtts.push(rtt);
                        r.acked += 1;
                        r.bytes += size as u64;
                        bar.inc(1);
                    }
                }
                (i, j, r)
            }));
        }
    }
    let mut results = Vec::new();
    for p in pairs {
        results.push(p.await.map_err(|e| CliError::Transport(e.to_string()))?);
    }
    let elapsed = t0.elapsed();
    bar.finish_and_clear();
    let mut direct: HashMap<(usize, usize), bool> = HashMap::new();
    for (i, node) in started.iter().enumerate() {
        for (key, is_direct) in node.direct_paths().await {
            if let Some(j) = urls.iter().position(|u| u.peer_id() == Some(key.as_str())) {
                direct.insert((i, j), is_direct);
            }
        }
    }
    // Every acknowledged message was counted before its acknowledgement
    // left the receiver; give the counting tasks a moment to drain.
    let acked_total: u64 = results_acked(&results);
    for _ in 0..100 {
        let counted: u64 = delivered
            .lock()
            .expect("poisoned")
            .values()
            .map(|v| v.0)
            .sum();
        if counted >= acked_total {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for c in &counters {
        c.abort();
    }
    // Every peer was alive throughout: any mark or disconnect so far is
    // false (closing, next, reports disconnects on purpose).
    let (false_unresponsive, false_disconnects) = started
        .iter()
        .map(|n| n.fault_reports())
        .fold((0, 0), |(u, d), (nu, nd)| (u + nu, d + nd));
    // One after the other, as separate processes would close.
    let closing = Instant::now();
    let mut close_times = Vec::with_capacity(started.len());
    for node in started.iter() {
        let t = Instant::now();
        node.close().await;
        close_times.push(t.elapsed());
    }
    let closed_in = closing.elapsed();
    let close_summary = Summary::of(&close_times);
    let delivered = delivered.lock().expect("poisoned").clone();
    let _ = relay.shutdown().await;

    results.sort_by_key(|(i, j, _)| (*i, *j));
    let sent: u64 = results.iter().map(|(_, _, r)| r.sent).sum();
    let got: u64 = results
        .iter()
        .map(|(i, j, _)| delivered.get(&(*i, *j)).map_or(0, |v| v.0))
        .sum();
    let acked: u64 = results.iter().map(|(_, _, r)| r.acked).sum();
    let lost = sent - got.min(acked);
    let bytes: u64 = results
        .iter()
        .map(|(i, j, _)| delivered.get(&(*i, *j)).map_or(0, |v| v.1))
        .sum();
    let all_rtts: Vec<Duration> = results
        .iter()
        .flat_map(|(_, _, r)| r.rtts.iter().copied())
        .collect();
    let summary = Summary::of(&all_rtts);
    let mbps = bytes as f64 / elapsed.as_secs_f64() / 1e6;

    if json_out {
        let rows: Vec<_> = results
            .iter()
            .map(|(i, j, r)| {
                let d = delivered.get(&(*i, *j)).copied().unwrap_or((0, 0));
                let s = Summary::of(&r.rtts);
                json!({
                    "from": i, "to": j, "sent": r.sent, "delivered": d.0, "bytes": d.1,
                    "lost": r.sent - d.0.min(r.acked),
                    "connect_ms": r.connect.map(ms_f64),
                    "rtt_p50_ms": s.map(|s| ms_f64(s.p50)), "rtt_p99_ms": s.map(|s| ms_f64(s.p99)),
                    "is_direct": direct.get(&(*i, *j)),
                })
            })
            .collect();
        let out = json!({
            "nodes": nodes, "messages_per_pair": messages, "size": size,
            "sent": sent, "delivered": got, "lost": lost, "bytes": bytes,
            "elapsed_ms": ms_f64(elapsed), "throughput_mb_s": mbps,
            "rtt_p50_ms": summary.map(|s| ms_f64(s.p50)), "rtt_p99_ms": summary.map(|s| ms_f64(s.p99)),
            "false_unresponsive": false_unresponsive, "false_disconnects": false_disconnects,
            "close_all_ms": ms_f64(closed_in),
            "close_p50_ms": close_summary.map(|s| ms_f64(s.p50)),
            "close_p99_ms": close_summary.map(|s| ms_f64(s.p99)),
            "pairs": rows,
        });
        println!("{out}");
    } else {
        println!(
            "{:>4} {:>4} {:>10} {:>9} {:>11} {:>5} {:>10} {:>10} {:>7}",
            "from", "to", "connect", "delivered", "bytes", "lost", "rtt p50", "rtt p99", "direct"
        );
        for (i, j, r) in &results {
            let d = delivered.get(&(*i, *j)).copied().unwrap_or((0, 0));
            let s = Summary::of(&r.rtts);
            println!(
                "{:>4} {:>4} {:>10} {:>9} {:>11} {:>5} {:>10} {:>10} {:>7}",
                i,
                j,
                r.connect.map_or("-".to_owned(), ms),
                d.0,
                d.1,
                r.sent - d.0.min(r.acked),
                s.map_or("-".to_owned(), |s| ms(s.p50)),
                s.map_or("-".to_owned(), |s| ms(s.p99)),
                direct
                    .get(&(*i, *j))
                    .map_or("-", |d| if *d { "yes" } else { "relay" }),
            );
        }
        println!(
            "\n{nodes} nodes, {sent} messages of {size} B sent, {got} delivered, {lost} lost, {:.2} MB/s, rtt p50 {} p99 {}, in {}",
            mbps,
            summary.map_or("-".to_owned(), |s| ms(s.p50)),
            summary.map_or("-".to_owned(), |s| ms(s.p99)),
            ms(elapsed),
        );
        println!(
            "{false_unresponsive} false unresponsive marks, {false_disconnects} false disconnects; \
             closed all in {}, per node p50 {} p99 {}",
            ms(closed_in),
            close_summary.map_or("-".to_owned(), |s| ms(s.p50)),
            close_summary.map_or("-".to_owned(), |s| ms(s.p99)),
        );
    }
    if lost > 0 {
        return Err(CliError::Lost { lost, sent });
    }
    if false_unresponsive > 0 || false_disconnects > 0 {
        return Err(CliError::FalseReports {
            unresponsive: false_unresponsive,
            disconnects: false_disconnects,
        });
    }
    Ok(())
}

fn results_acked(results: &[(usize, usize, PairResult)]) -> u64 {
    results.iter().map(|(_, _, r)| r.acked).sum()
}

/// `k2iroh relay`.
pub(crate) async fn relay(bind: SocketAddr) -> Result<(), CliError> {
    let relay = EmbeddedRelay::start_on(bind)
        .await
        .map_err(|e| CliError::Relay(e.to_string()))?;
    println!("relay listening; give peers: --relay {}", relay.url());
    let _ = tokio::signal::ctrl_c().await;
    relay
        .shutdown()
        .await
        .map_err(|e| CliError::Relay(e.to_string()))?;
    println!("relay stopped");
    Ok(())
}

/// `k2iroh listen`.
pub(crate) async fn listen(relay: &str) -> Result<(), CliError> {
    let relay = parse_relay_url(relay)?;
    let node = Node::start(&relay).await?;
    println!("{}", node.url());
    let mut inbox = node.take_inbox();
    loop {
        tokio::select! {
            msg = inbox.recv() => {
                let Some(msg) = msg else { break };
                match std::str::from_utf8(&msg.payload) {
                    Ok(text) => println!("from {}: {} bytes: {text}", msg.from, msg.payload.len()),
                    Err(_) => println!("from {}: {} bytes (binary)", msg.from, msg.payload.len()),
                }
            }
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    node.close().await;
    Ok(())
}

/// `k2iroh send`.
pub(crate) async fn send(
    relay: &str,
    peer: &str,
    message: Option<String>,
    file: Option<String>,
) -> Result<(), CliError> {
    let peer = parse_peer_url(peer)?;
    let relay = parse_relay_url(relay)?;
    let body = match (message, file) {
        (_, Some(path)) => std::fs::read(&path).map_err(|e| CliError::File {
            path,
            why: e.to_string(),
        })?,
        (Some(m), None) => m.into_bytes(),
        (None, None) => Vec::new(),
    };
    let node = Node::start(&relay).await?;
    let result = node.request(&peer, &body, ACK_WAIT).await;
    node.close().await;
    let rtt = result?;
    println!(
        "delivered {} bytes to {peer} (acknowledged in {})",
        body.len(),
        ms(rtt)
    );
    Ok(())
}

/// `k2iroh ping`.
pub(crate) async fn ping(
    relay: &str,
    peer: &str,
    count: u64,
    json_out: bool,
) -> Result<(), CliError> {
    if count == 0 {
        return Err(CliError::Zero("--count"));
    }
    let peer = parse_peer_url(peer)?;
    let relay = parse_relay_url(relay)?;
    let node = Node::start(&relay).await?;
    let mut rtts = Vec::new();
    let mut failure = None;
    for seq in 0..count {
        match node.request(&peer, &payload(seq, 100), ACK_WAIT).await {
            Ok(rtt) => {
                if !json_out {
                    println!("seq={seq} time={}", ms(rtt));
                }
                rtts.push(rtt);
            }
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    node.close().await;
    if let Some(e) = failure {
        return Err(e);
    }
    // INVARIANT: count >= 1 and every request succeeded.
    let s = Summary::of(&rtts).expect("at least one sample");
    if json_out {
        println!(
            "{}",
            json!({"peer": peer.as_str(), "count": s.count, "min_ms": ms_f64(s.min), "p50_ms": ms_f64(s.p50), "p99_ms": ms_f64(s.p99)})
        );
    } else {
        println!(
            "{} round trips: min {} p50 {} p99 {}",
            s.count,
            ms(s.min),
            ms(s.p50),
            ms(s.p99)
        );
    }
    Ok(())
}

/// `k2iroh bench`.
pub(crate) async fn bench(
    relay: Option<String>,
    size: usize,
    count: u64,
    connects: u64,
    json_out: bool,
) -> Result<(), CliError> {
    if count == 0 {
        return Err(CliError::Zero("--count"));
    }
    let embedded = match relay {
        Some(_) => None,
        None => Some(start_relay().await?),
    };
    let relay_url = match (&relay, &embedded) {
        (Some(r), _) => parse_relay_url(r)?,
        (None, Some(e)) => e.url().clone(),
        (None, None) => unreachable!("one of the two is set"),
    };
    let (a, b) = tokio::join!(Node::start(&relay_url), Node::start(&relay_url));
    let (a, b) = (a?, b?);
    let mut inbox = b.take_inbox();
    let counts: std::sync::Arc<[std::sync::atomic::AtomicU64; 2]> = std::sync::Arc::default();
    let checker = {
        let counts = counts.clone();
        tokio::spawn(async move {
            use std::sync::atomic::Ordering::Relaxed;
            // The warm-up message, then the bulk messages, then the pings.
            let mut n = 0u64;
            while let Some(r) = inbox.recv().await {
                let expected = match n {
                    0 => b"warm-up".to_vec(),
                    k if k <= count => payload(k - 1, size),
                    k => payload(k - 1 - count, 100),
                };
                if r.payload[..] != expected[..] {
                    counts[1].fetch_add(1, Relaxed);
                }
                n += 1;
                counts[0].store(n, Relaxed);
            }
        })
    };
    // Warm up the connection, so the figures are about transfer.
    a.request(b.url(), b"warm-up", ACK_WAIT).await?;
    let bar = if json_out {
        ProgressBar::hidden()
    } else {
        progress(count, "throughput")
    };
    let t0 = Instant::now();
    let mut in_flight = Vec::with_capacity(count as usize);
    for seq in 0..count {
        in_flight.push(a.send(b.url(), &payload(seq, size)).await?);
        bar.inc(1);
    }
    let deadline = Instant::now() + ACK_WAIT;
    let mut acked = 0u64;
    for f in in_flight {
        if f.acked(deadline).await.is_some() {
            acked += 1;
        }
    }
    let elapsed = t0.elapsed();
    bar.finish_and_clear();
    let mut rtts = Vec::new();
    for seq in 0..100 {
        rtts.push(a.request(b.url(), &payload(seq, 100), ACK_WAIT).await?);
    }
    // Each acknowledged message was counted before its acknowledgement left.
    for _ in 0..100 {
        if counts[0].load(std::sync::atomic::Ordering::Relaxed) >= acked + 101 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    checker.abort();
    // B acknowledges every message whether or not its inbox is read.
    let connect_times = connect_times(&relay_url, &b, connects).await;
    a.close().await;
    b.close().await;
    let received = counts[0].load(std::sync::atomic::Ordering::Relaxed);
    let corrupt = counts[1].load(std::sync::atomic::Ordering::Relaxed);
    if let Some(e) = embedded {
        let _ = e.shutdown().await;
    }
    // The warm-up and the 100 pings are counted by the checker too.
    let received_bulk = received.saturating_sub(101);
    let lost = count - received_bulk.min(acked);
    let mb_s = (received_bulk * size as u64) as f64 / elapsed.as_secs_f64() / 1e6;
    let msgs_s = received_bulk as f64 / elapsed.as_secs_f64();
    // INVARIANT: 100 pings succeeded above.
    let s = Summary::of(&rtts).expect("100 samples");
    let c = Summary::of(&connect_times?);
    if json_out {
        println!(
            "{}",
            json!({"size": size, "count": count, "delivered": received_bulk, "lost": lost, "corrupt": corrupt,
                   "elapsed_ms": ms_f64(elapsed), "throughput_mb_s": mb_s, "messages_per_s": msgs_s,
                   "rtt_100b_p50_ms": ms_f64(s.p50), "rtt_100b_p99_ms": ms_f64(s.p99),
                   "connects": connects, "connect_p50_ms": c.map(|c| ms_f64(c.p50)),
                   "connect_p99_ms": c.map(|c| ms_f64(c.p99))})
        );
    } else {
        println!(
            "{count} messages of {size} B: {received_bulk} delivered, {lost} lost, {corrupt} corrupt, in {}",
            ms(elapsed)
        );
        println!("throughput: {mb_s:.2} MB/s, {msgs_s:.0} msgs/s");
        println!("100-byte round trip: p50 {} p99 {}", ms(s.p50), ms(s.p99));
        if let Some(c) = c {
            println!(
                "connect ({connects} fresh connections, first message and its acknowledgement): p50 {} p99 {}",
                ms(c.p50),
                ms(c.p99)
            );
        }
    }
    if lost > 0 || corrupt > 0 {
        return Err(CliError::Lost {
            lost: lost + corrupt,
            sent: count,
        });
    }
    Ok(())
}

/// The connect time of `n` fresh connections to `to`: each from a new
/// node (started beforehand, all at once), the round trip of its first
/// message, which dials, handshakes, exchanges preflights, delivers and is
/// acknowledged on the new connection.
async fn connect_times(relay: &RelayUrl, to: &Node, n: u64) -> Result<Vec<Duration>, CliError> {
    let starting: Vec<_> = (0..n)
        .map(|_| {
            let relay = relay.clone();
            tokio::spawn(async move { Node::start(&relay).await })
        })
        .collect();
    let mut times = Vec::with_capacity(starting.len());
    let mut first_err = None;
    for node in starting {
        let node = node.await.map_err(|e| CliError::Transport(e.to_string()))?;
        match node {
            Ok(node) => {
                match node.request(to.url(), b"connect", ACK_WAIT).await {
                    Ok(t) => times.push(t),
                    Err(e) => {
                        first_err.get_or_insert(e);
                    }
                }
                node.close().await;
            }
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(times),
    }
}
