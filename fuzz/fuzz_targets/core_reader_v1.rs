//! Fuzzer bytes as a `kitsune2/1` peer, into the core's reader, over the
//! in-memory backend: a node of the core (`CoreTransport` under kitsune2's
//! `DefaultTransport`, speaking `/1`) accepts a raw peer whose control
//! stream starts with a valid preflight. The input is a script of
//! operations on the peer's streams: open a message stream, queue a
//! well-formed module message, raw bytes, a frame header or filler, write
//! the next bytes queued, finish or reset a stream, let time pass. Paused
//! time: every wait is bounded.
//!
//! Checked after every step and at the end:
//!
//! - no panic, no hang;
//! - memory: the transport's partial-frame budget never holds more than its
//!   limit, and the connection's partial frames stay within the budget's
//!   bound (the free share, the budget, one read);
//! - every message delivered is one the peer wrote whole as a data frame
//!   (the first frame of a message stream, or a frame of the control
//!   stream), intact, at most as often as written; those from the control
//!   stream in the order written;
//! - unless the node closed the connection for a violation, every whole
//!   message the peer wrote (on the control stream, or alone on a message
//!   stream it finished, and, when it finished its control stream, that
//!   the node had taken all of by then) is delivered;
//! - a connection the node ended was closed with an application close
//!   naming its error.
//!
//! The oracle parses frames itself (type, length, payload) rather than
//! with the codec, so that a bug in the codec's stream rules shows: with
//! the codec's one-frame rule for message streams removed, it reports the
//! second frame's message within a few hundred runs (seconds); with the
//! partial-frame budget disabled, `seed-budget` fails the memory check.
//!
//! # Input
//!
//! Operations, each an op byte (mod 9) and its arguments; `s` picks one of
//! the peer's streams (mod the number opened; 0 is the control stream,
//! whose preflight is queued first), `u16` is little-endian, bytes past the
//! end of the input read as 0:
//!
//! | op | arguments | does |
//! |---|---|---|
//! | 0 | | open a message stream |
//! | 1 | `s`, tag, `u16` n | queue a module message of 4n bytes (mod the frame limit + 4 KiB), tagged with a sequence number |
//! | 2 | `s`, `u16` n | write the next n bytes queued (0: all) in one write, abandoned after 1 s |
//! | 3 | `s`, k, k bytes | queue the next k input bytes |
//! | 4 | `s`, byte, `u16` n | queue 4n copies of the byte |
//! | 5 | `s` | finish the stream |
//! | 6 | `s` | reset the stream |
//! | 7 | secs | let secs (mod 64) seconds pass |
//! | 8 | `s`, type (mod 3), `u16` n | queue a frame header claiming 8n payload bytes |
//!
//! The seeds (`fuzz/corpus/core_reader_v1/seed-*`) are `kitsune2/1`
//! exchanges in this form: large and small messages interleaved, a reset
//! and a stalled message stream, the control stream's end after message
//! streams, streams before the preflight, partial frames filling the
//! budget.
//!
//! `V1_DEBUG=1` prints each run's outcome (budget peak, messages
//! delivered and expected, how the connection ended), to see what a
//! corpus covers.
#![no_main]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kitsune2_api::{DefaultTransport, K2Proto, K2WireType, SpaceId, TxImpHnd};
use kitsune2_iroh_core::mem::{MemNetwork, MemSendStream, mem_url};
use kitsune2_iroh_core::{
    CloseCode, Connection, CoreConfig, CoreTransport, MAX_READ_CHUNK, SendStream,
    UNBUDGETED_PARTIAL_BYTES, WallClock, WireVersion,
};
use kitsune2_iroh_test_support::Recorder;
use libfuzzer_sys::fuzz_target;

/// The node's frame limit: above the free share of partial-frame bytes a
/// connection has ([`UNBUDGETED_PARTIAL_BYTES`], 64 KiB), so that one
/// partial frame can reach the budget, and small enough that frames over
/// it are cheap to make.
const MAX_FRAME: usize = 256 * 1024;
/// The node's partial-frame budget: the least it may be.
const BUDGET: usize = MAX_FRAME;
/// Message streams the node takes at once.
const MAX_STREAMS: usize = 8;
const MODULE: &str = "m";

#[derive(Debug)]
struct Clock;

impl WallClock for Clock {
    fn now_micros(&self) -> i64 {
        1_700_000_000_000_000
    }
}

fn space() -> SpaceId {
    SpaceId::from(Bytes::from_static(b"space-for-core-fuzz-32-bytes!!!!"))
}

/// A frame's bytes: type, big-endian length, payload.
fn frame(ty: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(5 + payload.len());
    v.push(ty);
    v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    v.extend_from_slice(payload);
    v
}

fn preflight(url: &str) -> Vec<u8> {
    let pf = K2Proto {
        ty: K2WireType::Preflight as i32,
        data: Bytes::from_static(b"agent-infos"),
        space_id: None,
        module_id: None,
    }
    .encode()
    .expect("encode");
    let mut payload = (url.len() as u32).to_be_bytes().to_vec();
    payload.extend_from_slice(url.as_bytes());
    payload.extend_from_slice(&pf);
    frame(0, &payload)
}

/// The data frame of a module message carrying `data`.
fn module_message(data: Bytes) -> Vec<u8> {
    let msg = K2Proto {
        ty: K2WireType::Module as i32,
        data,
        space_id: Some(space().into()),
        module_id: Some(MODULE.to_owned()),
    }
    .encode()
    .expect("encode");
    frame(1, &msg)
}

/// What a data frame's payload delivers to the module handler, if it is a
/// module message for our space and module.
fn module_data(payload: &[u8]) -> Option<Bytes> {
    let msg = K2Proto::decode(payload).ok()?;
    let ours = msg.ty() == K2WireType::Module
        && msg.space_id.as_deref() == Some(&space()[..])
        && msg.module_id.as_deref() == Some(MODULE);
    ours.then_some(msg.data)
}

/// One well-formed frame at the start of `bytes`: `(type, payload, size)`,
/// `None` when it is not whole, over the limit or of an unknown type.
fn parse_frame(bytes: &[u8]) -> Option<(u8, &[u8], usize)> {
    let ty = *bytes.first()?;
    let len = u32::from_be_bytes(bytes.get(1..5)?.try_into().ok()?) as usize;
    if ty > 1 || len + 5 > MAX_FRAME {
        return None;
    }
    Some((ty, bytes.get(5..5 + len)?, 5 + len))
}

/// Bytes a stream may have queued and written in all: two frames of the
/// node's limit, and a cap on what one input can make the target
/// allocate.
const STREAM_BYTES: usize = 2 * MAX_FRAME;

/// One of the peer's streams, as the peer wrote it.
struct Stream {
    send: MemSendStream,
    /// Bytes queued, not written yet.
    outbox: Vec<u8>,
    /// Bytes written (the node may have them).
    written: Vec<u8>,
    finished: bool,
    reset: bool,
    /// Finished, and all taken by the node, before the control stream
    /// was finished (message streams).
    acked_before_control: bool,
}

impl Stream {
    fn new(send: MemSendStream) -> Self {
        Self {
            send,
            outbox: Vec::new(),
            written: Vec::new(),
            finished: false,
            reset: false,
            acked_before_control: false,
        }
    }

    fn done(&self) -> bool {
        self.finished || self.reset
    }

    /// Queues `bytes` unless the stream is done or would pass
    /// [`STREAM_BYTES`].
    fn queue(&mut self, bytes: impl IntoIterator<Item = u8>, len: usize) {
        if !self.done() && self.outbox.len() + self.written.len() + len <= STREAM_BYTES {
            self.outbox.extend(bytes);
        }
    }

    /// Writes the next `n` queued bytes (all with 0), in one write, bounded
    /// in time: a write the node does not take within a second is
    /// abandoned, and the mem stream's write is cancel-safe (a chunk is
    /// taken whole or not at all).
    async fn write(&mut self, n: usize) {
        if self.done() || self.outbox.is_empty() {
            return;
        }
        let n = if n == 0 {
            self.outbox.len()
        } else {
            n.min(self.outbox.len())
        };
        let chunk: Vec<u8> = self.outbox[..n].to_vec();
        let sent = tokio::time::timeout(
            Duration::from_secs(1),
            self.send.write_raw(Bytes::from(chunk.clone())),
        )
        .await;
        if matches!(sent, Ok(Ok(()))) {
            self.outbox.drain(..n);
            self.written.extend_from_slice(&chunk);
        }
    }
}

/// A little-endian u16 from the input, 0 past its end.
fn u16_at(input: &[u8], i: &mut usize) -> usize {
    let lo = input.get(*i).copied().unwrap_or(0);
    let hi = input.get(*i + 1).copied().unwrap_or(0);
    *i += 2;
    usize::from(u16::from_le_bytes([lo, hi]))
}

fn u8_at(input: &[u8], i: &mut usize) -> u8 {
    let b = input.get(*i).copied().unwrap_or(0);
    *i += 1;
    b
}

/// Lets every task run without moving the clock on.
async fn settle() {
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_nanos(1)).await;
    }
}

/// The memory invariants.
fn check_memory(imp: &CoreTransport) {
    let usage = imp.frame_budget_usage();
    assert!(
        usage.peak <= usage.limit,
        "the budget held {} of {}",
        usage.peak,
        usage.limit
    );
    for c in imp.connections() {
        assert!(
            c.partial_frame_bytes <= UNBUDGETED_PARTIAL_BYTES + BUDGET + MAX_READ_CHUNK,
            "a connection holds {} bytes of partial frames",
            c.partial_frame_bytes
        );
    }
}

async fn run(input: &[u8]) {
    let net = MemNetwork::new();
    let node_id = [2; 32];
    let raw_id = [9; 32];
    net.set_wire_version(node_id, WireVersion::V1);
    net.set_wire_version(raw_id, WireVersion::V1);
    let (rec, mut taps) = Recorder::new();
    let hnd = TxImpHnd::new(rec.clone());
    let config = CoreConfig {
        backend: "mem".to_owned(),
        max_frame_bytes: MAX_FRAME,
        partial_frame_budget: BUDGET,
        max_message_streams: MAX_STREAMS,
        ..CoreConfig::default()
    };
    let imp = CoreTransport::create(net.endpoint(node_id), hnd.clone(), config, Arc::new(Clock))
        .expect("core");
    let tx = DefaultTransport::create(&hnd, imp.clone());
    let side = rec.space_side(space());
    tx.register_space_handler(space(), side.clone());
    tx.register_module_handler(space(), MODULE.to_owned(), side);

    let raw = net.endpoint(raw_id);
    let conn = raw.connect_raw(&node_id).await.expect("mem connect");
    let mut streams = vec![Stream::new(conn.open_raw().expect("control stream"))];
    streams[0].outbox = preflight(mem_url(&raw_id).as_str());
    let mut delivered: Vec<Bytes> = Vec::new();
    let mut seq = 0u32;

    let mut i = 0;
    while i < input.len() {
        let op = input[i] % 9;
        i += 1;
        let pick = |b: u8, n: usize| usize::from(b) % n;
        match op {
            0 => {
                if let Ok(s) = conn.open_raw() {
                    streams.push(Stream::new(s));
                }
            }
            1 => {
                let s = pick(u8_at(input, &mut i), streams.len());
                let tag = u8_at(input, &mut i);
                let len = u16_at(input, &mut i) * 4 % (MAX_FRAME + 4096);
                let mut data = vec![tag; len.max(4)];
                data[..4].copy_from_slice(&seq.to_be_bytes());
                seq += 1;
                let m = module_message(data.into());
                let len = m.len();
                streams[s].queue(m, len);
            }
            2 => {
                let s = pick(u8_at(input, &mut i), streams.len());
                let n = u16_at(input, &mut i);
                streams[s].write(n).await;
            }
            3 => {
                let s = pick(u8_at(input, &mut i), streams.len());
                let k = usize::from(u8_at(input, &mut i));
                let start = i.min(input.len());
                let end = (start + k).min(input.len());
                streams[s].queue(input[start..end].iter().copied(), end - start);
                i = end;
            }
            4 => {
                let s = pick(u8_at(input, &mut i), streams.len());
                let byte = u8_at(input, &mut i);
                let len = u16_at(input, &mut i) * 4;
                streams[s].queue(std::iter::repeat_n(byte, len), len);
            }
            5 => {
                let s = pick(u8_at(input, &mut i), streams.len());
                if s == 0 && !streams[0].done() {
                    // An honest sender finishes its control stream only
                    // once the node took all of each message stream it
                    // finished before (QUIC's acknowledgement); those count.
                    for m in streams.iter_mut().skip(1) {
                        if m.finished && !m.reset {
                            let acked = tokio::time::timeout(
                                Duration::ZERO,
                                SendStream::finish(&mut m.send),
                            )
                            .await;
                            m.acked_before_control = matches!(acked, Ok(Ok(())));
                        }
                    }
                }
                if !streams[s].done() {
                    streams[s].send.finish();
                    streams[s].finished = true;
                }
            }
            6 => {
                let s = pick(u8_at(input, &mut i), streams.len());
                if !streams[s].done() {
                    streams[s].send.reset(0);
                    streams[s].reset = true;
                }
            }
            7 => {
                let secs = u8_at(input, &mut i) % 64;
                tokio::time::sleep(Duration::from_secs(u64::from(secs))).await;
            }
            _ => {
                let s = pick(u8_at(input, &mut i), streams.len());
                let ty = u8_at(input, &mut i) % 3;
                let len = u16_at(input, &mut i) * 8;
                let mut head = vec![ty];
                head.extend_from_slice(&(len as u32).to_be_bytes());
                streams[s].queue(head, 5);
            }
        }
        settle().await;
        check_memory(&imp);
        while let Ok((_, _, data)) = taps.module_msgs.try_recv() {
            delivered.push(data);
        }
    }
    // Every timeout (preflight, frame progress, budget wait, drain) runs out.
    for _ in 0..14 {
        tokio::time::sleep(Duration::from_secs(10)).await;
        check_memory(&imp);
    }
    settle().await;
    while let Ok((_, _, data)) = taps.module_msgs.try_recv() {
        delivered.push(data);
    }

    // The whole frames the peer wrote: on the control stream every data
    // frame after the preflight, in order, up to the first bad one; on a
    // message stream its first frame. `expected` are those the node must
    // deliver unless it ended the connection for a violation.
    let mut written: HashMap<Bytes, usize> = HashMap::new();
    let mut control_order: HashMap<Bytes, usize> = HashMap::new();
    let mut expected: Vec<Bytes> = Vec::new();
    let mut all_module_messages = true;
    for (n, s) in streams.iter().enumerate() {
        let mut rest = &s.written[..];
        let mut first = true;
        while let Some((ty, payload, size)) = parse_frame(rest) {
            rest = &rest[size..];
            let is_preflight = n == 0 && first;
            first = false;
            if is_preflight {
                if ty != 0 {
                    break;
                }
                continue;
            }
            if ty != 1 {
                break;
            }
            let Some(data) = module_data(payload) else {
                all_module_messages = false;
                if n == 0 {
                    continue;
                }
                break;
            };
            *written.entry(data.clone()).or_default() += 1;
            if n == 0 {
                control_order.insert(data.clone(), control_order.len());
                expected.push(data);
            } else {
                let counts = !streams[0].finished || s.acked_before_control;
                let alone = rest.is_empty() && s.finished && !s.reset && counts;
                if alone {
                    expected.push(data);
                }
                break;
            }
        }
    }

    let mut times: HashMap<Bytes, usize> = HashMap::new();
    let mut last_control = None;
    for data in &delivered {
        let n = times.entry(data.clone()).or_default();
        *n += 1;
        assert!(
            *n <= written.get(data).copied().unwrap_or(0),
            "delivered a message ({} bytes) {} times, written whole {} times",
            data.len(),
            n,
            written.get(data).copied().unwrap_or(0)
        );
        if let Some(&at) = control_order.get(data) {
            if written[data] == 1 {
                assert!(
                    last_control < Some(at),
                    "control stream messages out of order"
                );
                last_control = Some(at);
            }
        }
    }

    let open = !imp.connections().is_empty();
    let close = conn.remote_close();
    if !open {
        let (code, reason) = close
            .clone()
            .expect("the node closed the connection with a code");
        if code == CloseCode::Unspecified {
            assert!(!reason.is_empty(), "a failure close names its error");
        }
    }
    // The peer never closes, so a close naming the peer's close
    // (`connection closed`) is the node ending its drain after the peer's
    // control FIN: not a violation.
    let violation = matches!(
        &close,
        Some((CloseCode::Unspecified, reason)) if !reason.starts_with(b"connection closed")
    );
    if std::env::var_os("V1_DEBUG").is_some() {
        eprintln!(
            "budget peak {} delivered {} expected {} written {} open {open} close {close:?} \
             all module messages {all_module_messages}",
            imp.frame_budget_usage().peak,
            delivered.len(),
            expected.len(),
            written.len()
        );
    }
    if !violation && all_module_messages {
        for data in &expected {
            let got = times.get(data).copied().unwrap_or(0);
            assert!(
                got >= 1,
                "a whole message ({} bytes) was never delivered; connection {}, close {:?}",
                data.len(),
                if open { "open" } else { "closed" },
                close
            );
        }
    }
    drop(taps);
    tx.close().await;
}

fuzz_target!(|data: &[u8]| {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("runtime");
    rt.block_on(run(data));
});
