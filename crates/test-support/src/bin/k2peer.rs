//! `k2peer`: one node on this workspace's transport in a process of its
//! own, for the fault kit (`tests/faults.rs`): a test can SIGKILL it,
//! freeze it (SIGSTOP) and start it again under the same key.
//!
//! ```text
//! k2peer RELAY_URL KEY_HEX [WRITE_TIMEOUT_S]
//! ```
//!
//! Line protocol. On stdin:
//!
//! - `send URL COUNT TAG [SIZE]`: sends COUNT module messages `TAG:SEQ`
//!   (SEQ from 0; padded with `.` to SIZE bytes when given) to URL, one
//!   after the other, on a task of their own;
//! - `drop`: drops the transport without `close()`, then exits after 2 s;
//! - `close`: closes the transport and exits.
//!
//! On stdout, one event per line:
//!
//! - `url URL` once the node has its peer URL;
//! - `recv FROM_URL PAYLOAD` for each module message;
//! - `ok TAG SEQ` / `err TAG SEQ MILLIS ERROR` for each send (MILLIS: how
//!   long the send took);
//! - `done TAG` once a `send` command ended;
//! - `disconnect URL REASON` / `unresponsive URL` as kitsune2 hears them.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kitsune2_api::{DefaultTransport, DynTransport, SpaceId, TxImpHnd, Url};
use kitsune2_iroh::endpoint::{EndpointOptions, bind_endpoint};
use kitsune2_iroh::{IrohEndpoint, IrohTransportConfig, SecretKey};
use kitsune2_iroh_core::{CoreTransport, SystemClock};
use kitsune2_iroh_test_support::Recorder;
use tokio::io::AsyncBufReadExt;

/// The module the kit's messages use.
const MODULE: &str = "kit";

/// The space the kit's messages use.
fn space() -> SpaceId {
    SpaceId::from(Bytes::from_static(b"space-of-the-fault-kit-32-bytes!"))
}

/// Prints one protocol line and flushes it.
fn emit(line: &str) {
    let mut out = std::io::stdout().lock();
    // A closed stdout (the test went away) ends nothing here: the test
    // kills the process.
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn parse_key(hex: &str) -> SecretKey {
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("key is hex"))
        .collect();
    let bytes: [u8; 32] = bytes.try_into().expect("key is 32 bytes");
    SecretKey::from_bytes(&bytes)
}

async fn send_batch(tx: DynTransport, to: Url, count: u64, tag: String, size: usize) {
    for seq in 0..count {
        let started = Instant::now();
        let data = Bytes::from(format!("{tag}:{seq} {}", ".".repeat(size)));
        match tx
            .send_module(to.clone(), space(), MODULE.to_owned(), data)
            .await
        {
            Ok(()) => emit(&format!("ok {tag} {seq}")),
            Err(e) => emit(&format!(
                "err {tag} {seq} {} {}",
                started.elapsed().as_millis(),
                e.to_string().replace('\n', " ")
            )),
        }
    }
    emit(&format!("done {tag}"));
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let relay = args
        .get(1)
        .expect("usage: k2peer RELAY_URL KEY_HEX [WRITE_TIMEOUT_S]");
    let key = parse_key(args.get(2).expect("KEY_HEX"));
    let mut config = IrohTransportConfig {
        relay_url: Some(relay.clone()),
        relay_allow_plain_text: true,
        ..Default::default()
    };
    if let Some(w) = args.get(3) {
        config.write_timeout_s = w.parse().expect("WRITE_TIMEOUT_S is a number");
    }
    let endpoint = bind_endpoint(&EndpointOptions {
        relay_url: Some(relay.parse().expect("relay url")),
        bind_addr: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        secret_key: Some(key),
        defer_relay: false,
    })
    .await
    .expect("endpoint binds");
    let (rec, mut taps) = Recorder::new();
    rec.set_preflight(Bytes::from_static(b"kit-agent-infos"));
    let hnd = TxImpHnd::new(rec.clone());
    let imp = CoreTransport::create(
        Arc::new(IrohEndpoint::new(endpoint)),
        hnd.clone(),
        config.core_config(),
        Arc::new(SystemClock),
    )
    .expect("transport starts");
    let tx = DefaultTransport::create(&hnd, imp);
    let side = rec.space_side(space());
    tx.register_space_handler(space(), side.clone());
    tx.register_module_handler(space(), MODULE.to_owned(), side);

    let url = taps
        .url
        .wait_for(Option::is_some)
        .await
        .expect("recorder alive")
        .clone()
        .expect("waited for some");
    emit(&format!("url {url}"));

    tokio::spawn(async move {
        loop {
            tokio::select! {
                Some((from, _module, data)) = taps.module_msgs.recv() => {
                    let text = String::from_utf8_lossy(&data);
                    let payload = text.split(' ').next().unwrap_or_default();
                    emit(&format!("recv {from} {payload}"));
                }
                Some((peer, reason)) = taps.disconnects.recv() => {
                    let reason = reason.unwrap_or_default().replace('\n', " ");
                    emit(&format!("disconnect {peer} {reason}"));
                }
                Some(peer) = taps.unresponsive.recv() => emit(&format!("unresponsive {peer}")),
                else => return,
            }
        }
    });

    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut tx = Some(tx);
    while let Ok(Some(line)) = lines.next_line().await {
        let words: Vec<&str> = line.split_whitespace().collect();
        match (words.as_slice(), &tx) {
            (["send", to, count, tag, rest @ ..], Some(t)) => {
                let to = Url::from_str(*to).expect("peer url");
                let count = count.parse().expect("count");
                let size = rest.first().map_or(0, |s| s.parse().expect("size"));
                tokio::spawn(send_batch(t.clone(), to, count, (*tag).to_owned(), size));
            }
            (["drop"], _) => {
                drop(tx.take());
                tokio::time::sleep(Duration::from_secs(2)).await;
                return;
            }
            (["close"], Some(t)) => {
                t.close().await;
                return;
            }
            _ => emit(&format!("bad-command {line}")),
        }
    }
}
