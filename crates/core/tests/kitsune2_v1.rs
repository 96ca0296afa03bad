//! `kitsune2/1` on the in-memory network: negotiation, a large message on
//! a stream of its own, small ones overtaking it, the stream limit, a peer
//! past it, a reset and a stalled message stream, and a ledger over random
//! interleavings (every `Ok` send delivered once, small ones in order).

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use kitsune2_iroh_codec::{Frame, FrameOrder, Limits, StreamDecoder};
use kitsune2_iroh_core::mem::{MemConnection, MemNetwork, MemRecvStream, mem_url};
use kitsune2_iroh_core::{
    CloseCode, ConnState, Connection, CoreConfig, RecvStream, SendStream, WireVersion,
};
use proptest::prelude::*;

/// A module message of `len` bytes, each byte its index mod 251 plus
/// `tag`, so that a cut or mixed message shows.
fn body(tag: u8, len: usize) -> Bytes {
    (0..len)
        .map(|i| (i % 251) as u8 ^ tag)
        .collect::<Vec<u8>>()
        .into()
}

/// The data frame's wire bytes carrying `data` as a module message.
fn module_wire(data: Bytes) -> Bytes {
    let msg = kitsune2_api::K2Proto {
        ty: kitsune2_api::K2WireType::Module as i32,
        data,
        space_id: Some(space().into()),
        module_id: Some(MODULE.to_owned()),
    }
    .encode()
    .unwrap();
    wire(Frame::data(msg))
}

/// A network where `ids` speak `kitsune2/1`.
fn v1_net(ids: &[u8]) -> Arc<MemNetwork> {
    let net = MemNetwork::new();
    for id in ids {
        net.set_wire_version([*id; 32], WireVersion::V1);
    }
    net
}

/// A raw peer (id 9, `/1`) that dialed `b` and sent its preflight on its
/// control stream; `b` answered. Returns the connection and its control
/// stream.
async fn raw_peer(
    net: &Arc<MemNetwork>,
    b: &Node,
) -> (Arc<MemConnection>, kitsune2_iroh_core::mem::MemSendStream) {
    net.set_wire_version([9; 32], WireVersion::V1);
    let raw = net.endpoint([9; 32]);
    let conn = raw.connect_raw(&b.id).await.unwrap();
    let mut control = conn.open_raw().unwrap();
    control
        .write_raw(preflight_frame(mem_url(&[9; 32]).as_str()))
        .await
        .unwrap();
    settle().await;
    assert_eq!(
        b.imp.connection_states(),
        vec![([9; 32], ConnState::Active)]
    );
    (conn, control)
}

/// Every frame of `stream` up to its end, checked against `order`.
async fn read_frames(stream: &mut MemRecvStream, order: FrameOrder) -> Vec<Frame> {
    let mut d = StreamDecoder::with_order(Limits::default(), order);
    let mut frames = Vec::new();
    loop {
        while let Some(f) = d.next_frame().unwrap() {
            frames.push(f);
        }
        match stream.read_chunk().await.unwrap() {
            Some(chunk) => d.feed(chunk),
            None => break,
        }
    }
    d.finish().unwrap();
    frames
}

#[tokio::test(start_paused = true)]
async fn v1_is_negotiated_when_both_speak_it_and_v0_otherwise() {
    let net = v1_net(&[1, 2]);
    let a = Node::new(&net, 1);
    let mut b = Node::new(&net, 2);
    let mut c = Node::new(&net, 3);
    let big = body(1, 200 * 1024);
    for to in [&mut b, &mut c] {
        a.tx.send_module(to.url.clone(), space(), MODULE.to_owned(), big.clone())
            .await
            .unwrap();
        assert_eq!(to.recv().await.1, big);
    }
    let versions: HashMap<_, _> = a
        .imp
        .connections()
        .into_iter()
        .map(|c| (c.remote_id, c.wire_version))
        .collect();
    assert_eq!(versions[&b.id], WireVersion::V1);
    assert_eq!(versions[&c.id], WireVersion::V0, "c speaks /0 only");
}

#[tokio::test(start_paused = true)]
async fn a_large_message_goes_on_a_stream_of_its_own_and_small_ones_on_the_control_stream() {
    let net = v1_net(&[2]);
    let b = Node::new(&net, 2);
    let (conn, _control) = raw_peer(&net, &b).await;
    let raw_url = mem_url(&[9; 32]);
    let large = body(3, 64 * 1024 + 1);
    let small = body(4, 60 * 1024);
    for data in [large.clone(), small.clone()] {
        b.tx.send_module(raw_url.clone(), space(), MODULE.to_owned(), data)
            .await
            .unwrap();
    }
    // b's control stream: its preflight, then the small message, in order.
    let mut b_control = conn.accept_raw().await.unwrap();
    let mut d = StreamDecoder::with_order(Limits::default(), FrameOrder::PreflightThenData);
    let mut frames = Vec::new();
    while frames.len() < 2 {
        d.feed(b_control.read_chunk().await.unwrap().unwrap());
        while let Some(f) = d.next_frame().unwrap() {
            frames.push(f);
        }
    }
    assert!(matches!(frames[0], Frame::Preflight(_)));
    assert_eq!(frames[1], Frame::data(module_payload(&module_wire(small))));
    // The large one: a stream of its own, one frame, then the end.
    let mut message = conn.accept_raw().await.unwrap();
    let frames = read_frames(&mut message, FrameOrder::OneData).await;
    assert_eq!(
        frames,
        vec![Frame::data(module_payload(&module_wire(large)))]
    );
}

/// The payload of a data frame's wire bytes.
fn module_payload(wire: &Bytes) -> Bytes {
    wire.slice(5..)
}

#[tokio::test(start_paused = true)]
async fn a_small_message_overtakes_a_large_one_in_flight() {
    let net = MemNetwork::new();
    net.set_wire_version([2; 32], WireVersion::V1);
    let mut b = Node::new(&net, 2);
    let (conn, mut control) = raw_peer(&net, &b).await;
    let large = module_wire(body(5, 1024 * 1024));
    let mut message = conn.open_raw().unwrap();
    message
        .write_raw(large.slice(..large.len() / 2))
        .await
        .unwrap();
    control.write_raw(module_wire(body(6, 100))).await.unwrap();
    settle().await;
    assert_eq!(b.recv().await.1, body(6, 100), "the small one first");
    assert!(
        b.inbox.try_recv().is_err(),
        "the large one is not whole yet"
    );
    message
        .write_raw(large.slice(large.len() / 2..))
        .await
        .unwrap();
    message.finish();
    assert_eq!(b.recv().await.1, body(5, 1024 * 1024));
}

#[tokio::test(start_paused = true)]
async fn a_reset_message_stream_is_discarded_alone() {
    let net = MemNetwork::new();
    net.set_wire_version([2; 32], WireVersion::V1);
    let mut b = Node::new(&net, 2);
    let (conn, mut control) = raw_peer(&net, &b).await;
    let large = module_wire(body(7, 512 * 1024));
    let mut message = conn.open_raw().unwrap();
    message
        .write_raw(large.slice(..large.len() / 3))
        .await
        .unwrap();
    settle().await;
    message.reset(0);
    control.write_raw(module_wire(body(8, 10))).await.unwrap();
    settle().await;
    assert_eq!(b.recv().await.1, body(8, 10));
    assert!(
        b.inbox.try_recv().is_err(),
        "the reset message is discarded"
    );
    assert_eq!(
        b.imp.connections()[0].partial_frame_bytes,
        0,
        "its bytes are freed"
    );
    // The connection carries on, message streams too.
    let mut again = conn.open_raw().unwrap();
    again.write_raw(large.clone()).await.unwrap();
    again.finish();
    assert_eq!(b.recv().await.1, body(7, 512 * 1024));
    assert_eq!(
        b.imp.connection_states(),
        vec![([9; 32], ConnState::Active)]
    );
    assert!(b.events().disconnects.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_message_stream_that_never_ends_is_dropped_after_the_progress_timeout() {
    let net = MemNetwork::new();
    net.set_wire_version([2; 32], WireVersion::V1);
    let mut b = Node::new(&net, 2);
    let (conn, mut control) = raw_peer(&net, &b).await;
    let large = module_wire(body(9, 256 * 1024));
    // One stalls mid-frame, one sends its whole frame but never its end.
    let mut stalled = conn.open_raw().unwrap();
    stalled.write_raw(large.slice(..1000)).await.unwrap();
    let mut endless = conn.open_raw().unwrap();
    endless.write_raw(large.clone()).await.unwrap();
    settle().await;
    assert_eq!(b.recv().await.1, body(9, 256 * 1024), "whole: delivered");
    tokio::time::sleep(Duration::from_secs(29)).await;
    assert!(b.imp.connections()[0].partial_frame_bytes > 0);
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Both dropped: the peer's writes on them fail; nothing else changes.
    assert!(stalled.write_raw(Bytes::from_static(b"x")).await.is_err());
    assert!(endless.write_raw(Bytes::from_static(b"x")).await.is_err());
    assert_eq!(b.imp.connections()[0].partial_frame_bytes, 0);
    control.write_raw(module_wire(body(1, 10))).await.unwrap();
    assert_eq!(b.recv().await.1, body(1, 10));
    assert!(b.inbox.try_recv().is_err());
    assert_eq!(
        b.imp.connection_states(),
        vec![([9; 32], ConnState::Active)]
    );
}

#[tokio::test(start_paused = true)]
async fn a_peer_with_more_message_streams_than_allowed_is_closed() {
    let net = MemNetwork::new();
    net.set_wire_version([2; 32], WireVersion::V1);
    let config = CoreConfig {
        max_message_streams: 2,
        ..config()
    };
    let b = Node::with_config(&net, [2; 32], config);
    let (conn, _control) = raw_peer(&net, &b).await;
    let large = module_wire(body(2, 100 * 1024));
    let mut open = Vec::new();
    for _ in 0..2 {
        let mut s = conn.open_raw().unwrap();
        s.write_raw(large.slice(..10)).await.unwrap();
        open.push(s);
    }
    settle().await;
    assert_eq!(b.imp.connection_states().len(), 1, "two are allowed");
    let mut third = conn.open_raw().unwrap();
    third.write_raw(large.slice(..10)).await.unwrap();
    settle().await;
    assert!(b.imp.connection_states().is_empty(), "the third closes it");
    let (code, reason) = conn.remote_close().expect("b closed it");
    assert_eq!(code, CloseCode::Unspecified);
    assert_eq!(
        String::from_utf8_lossy(&reason),
        "the peer opened more than 2 message streams at once"
    );
}

#[tokio::test(start_paused = true)]
async fn the_stream_limit_holds_senders_back_and_loses_nothing() {
    init_logs();
    let net = v1_net(&[1, 2]);
    let config = CoreConfig {
        max_message_streams: 2,
        ..config()
    };
    // Two message streams and the control stream, as the iroh adapter
    // sets QUIC's limit.
    net.set_stream_limit([2; 32], Some(3));
    net.set_latency([1; 32], Some(Duration::from_millis(5)));
    let a = Node::with_config(&net, [1; 32], config.clone());
    let mut b = Node::with_config(&net, [2; 32], config);
    let sends: Vec<_> = (0..12u8)
        .map(|i| {
            let tx = a.tx.clone();
            let url = b.url.clone();
            tokio::spawn(async move {
                tx.send_module(url, space(), MODULE.to_owned(), body(i, 100 * 1024))
                    .await
            })
        })
        .collect();
    for s in sends {
        tokio::time::timeout(Duration::from_secs(30), s)
            .await
            .expect("back-pressure, not a deadlock")
            .unwrap()
            .unwrap();
    }
    let mut got = Vec::new();
    for _ in 0..12 {
        got.push(b.recv().await.1);
    }
    got.sort();
    let mut want: Vec<Bytes> = (0..12u8).map(|i| body(i, 100 * 1024)).collect();
    want.sort();
    assert_eq!(got, want);
    assert_eq!(
        b.imp.connections()[0].wire_version,
        WireVersion::V1,
        "over /1"
    );
}

// ---- the ledger -----------------------------------------------------------

/// Large messages in the ledger: above this many bytes (kept small, so
/// that most cases mix both kinds cheaply).
const LARGE_ABOVE: usize = 64;

#[derive(Debug, Clone)]
enum Op {
    /// Messages from node `from` to the other, one after another, of these
    /// sizes.
    Send { from: usize, sizes: Vec<usize> },
    /// Node `from` disconnects the other.
    Disconnect { from: usize },
}

#[derive(Debug, Clone)]
struct Case {
    ids: (u8, u8),
    latency_ms: (u64, u64),
    ops: Vec<(u64, Op)>,
}

fn arb_case() -> impl Strategy<Value = Case> {
    let op = prop_oneof![
        8 => (0usize..2, proptest::collection::vec(
            prop_oneof![Just(0usize), 1usize..LARGE_ABOVE, LARGE_ABOVE + 1..4096], 1..8))
            .prop_map(|(from, sizes)| Op::Send { from, sizes }),
        2 => (0usize..2).prop_map(|from| Op::Disconnect { from }),
    ];
    (
        any::<bool>(),
        (0u64..6, 0u64..6),
        proptest::collection::vec((0u64..30, op), 1..8),
    )
        .prop_map(|(flip, latency_ms, ops)| Case {
            ids: if flip { (1, 2) } else { (2, 1) },
            latency_ms,
            ops,
        })
}

/// Whether kitsune2's module message around `data` (what the transport
/// sends) is above the threshold: it goes on a stream of its own.
fn is_large(data: &Bytes) -> bool {
    module_payload(&module_wire(data.clone())).len() > LARGE_ABOVE
}

/// `len` bytes (at least 8) starting with `from` and `seq`.
fn tagged(from: usize, seq: u32, len: usize) -> Bytes {
    let mut v = vec![0xAB; len.max(8)];
    v[..4].copy_from_slice(&(from as u32).to_be_bytes());
    v[4..8].copy_from_slice(&seq.to_be_bytes());
    v.into()
}

fn untag(data: &[u8]) -> (usize, u32) {
    let from = u32::from_be_bytes(data[..4].try_into().unwrap()) as usize;
    (from, u32::from_be_bytes(data[4..8].try_into().unwrap()))
}

async fn run_ledger(case: Case) {
    let net = v1_net(&[case.ids.0, case.ids.1]);
    let config = CoreConfig {
        large_message_bytes: LARGE_ABOVE,
        ..config()
    };
    let mut nodes = [
        Node::with_config(&net, [case.ids.0; 32], config.clone()),
        Node::with_config(&net, [case.ids.1; 32], config),
    ];
    net.set_latency(nodes[0].id, Some(Duration::from_millis(case.latency_ms.0)));
    net.set_latency(nodes[1].id, Some(Duration::from_millis(case.latency_ms.1)));
    let with_disconnects = case
        .ops
        .iter()
        .any(|(_, op)| matches!(op, Op::Disconnect { .. }));
    // (from, seq) -> large?
    let acked: Arc<Mutex<HashMap<(usize, u32), bool>>> = Arc::default();
    let mut next_seq = [0u32; 2];
    // Each send task's (from, seqs): its sends are in order.
    let mut ranges = Vec::new();
    let mut tasks = Vec::new();
    for (start, op) in case.ops {
        let start = Duration::from_millis(start);
        match op {
            Op::Send { from, sizes } => {
                let tx = nodes[from].tx.clone();
                let url = nodes[1 - from].url.clone();
                let acked = acked.clone();
                let first = next_seq[from];
                next_seq[from] += sizes.len() as u32;
                ranges.push((from, first..next_seq[from]));
                tasks.push(tokio::spawn(async move {
                    tokio::time::sleep(start).await;
                    for (seq, len) in (first..).zip(sizes) {
                        let data = tagged(from, seq, len);
                        let large = is_large(&data);
                        let sent = tx
                            .send_module(url.clone(), space(), MODULE.to_owned(), data)
                            .await;
                        if sent.is_ok() {
                            acked.lock().unwrap().insert((from, seq), large);
                        }
                    }
                }));
            }
            Op::Disconnect { from } => {
                let tx = nodes[from].tx.clone();
                let url = nodes[1 - from].url.clone();
                tasks.push(tokio::spawn(async move {
                    tokio::time::sleep(start).await;
                    tx.disconnect(url, None).await;
                }));
            }
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(30)).await;
    let acked = acked.lock().unwrap();
    // from -> (seq, went on a stream of its own), in delivery order.
    let mut delivered: HashMap<usize, Vec<(u32, bool)>> = HashMap::new();
    for node in &mut nodes {
        while let Ok((_, data)) = node.inbox.try_recv() {
            let (from, seq) = untag(&data);
            delivered
                .entry(from)
                .or_default()
                .push((seq, is_large(&data)));
        }
    }
    for (&(from, seq), _) in acked.iter() {
        let got = delivered.get(&from).cloned().unwrap_or_default();
        let n = got.iter().filter(|(s, _)| *s == seq).count();
        assert_eq!(
            n, 1,
            "{from}:{seq} returned Ok, delivered {n} times ({got:?})"
        );
    }
    for (from, got) in &delivered {
        let mut seqs: Vec<u32> = got.iter().map(|(s, _)| *s).collect();
        seqs.sort_unstable();
        seqs.dedup();
        assert_eq!(seqs.len(), got.len(), "{from}: duplicates in {got:?}");
    }
    if !with_disconnects {
        // One connection: each task's small ones in the order it sent them.
        for (from, range) in &ranges {
            let small: Vec<u32> = delivered
                .get(from)
                .into_iter()
                .flatten()
                .filter(|(seq, large)| !large && range.contains(seq))
                .map(|(seq, _)| *seq)
                .collect();
            assert!(
                small.is_sorted(),
                "{from}: small messages out of order: {small:?}"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 2000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    // The network enforces the stream limit, as QUIC does: without it
    // (`set_stream_limit(id, None)`) four concurrent send tasks open more
    // message streams than the reader takes, the reader ends the
    // connection, and messages that returned Ok are lost.
    #[test]
    fn every_ok_send_is_delivered_once_and_small_ones_in_order(case in arb_case()) {
        block_on_paused(run_ledger(case));
    }
}

/// The peer's close seen before its last bytes, on `/1` (the `/0` case
/// is `no_silent_loss.rs::the_peers_close_seen_before_its_last_bytes_loses_nothing`):
/// b sends a large message (a stream of its own) and a small one, both
/// sides disconnect at once, b's drain is through (our FIN received,
/// its message stream acknowledged) and b closes, all before a's reader
/// ran again. a still delivers both: what QUIC acknowledged stays
/// readable after the close, and a reads its streams out first.
#[tokio::test(start_paused = true)]
async fn a_message_stream_held_when_the_peer_closes_is_still_delivered() {
    static LARGE: [u8; 4 * LARGE_ABOVE] = [7; 4 * LARGE_ABOVE];
    let net = v1_net(&[1, 2]);
    let config = CoreConfig {
        large_message_bytes: LARGE_ABOVE,
        ..config()
    };
    let mut a = Node::with_config(&net, [1; 32], config.clone());
    let mut b = Node::with_config(&net, [2; 32], config);
    for n in [&a, &b] {
        net.set_latency(n.id, Some(Duration::from_millis(1)));
    }
    a.send(&b, b"first").await.unwrap();
    assert_eq!(&b.recv().await.1[..], b"first");
    peer_closes_before_our_reader_runs(&net, &a, &b, &[&LARGE, b"last"]).await;
    let mut got: Vec<Bytes> =
        std::iter::from_fn(|| a.inbox.try_recv().ok().map(|(_, d)| d)).collect();
    got.sort_by_key(Bytes::len);
    assert_eq!(
        got,
        vec![Bytes::from_static(b"last"), Bytes::from_static(&LARGE)],
        "b's sends returned Ok: a delivers both"
    );
    assert!(a.imp.connections().is_empty(), "a closed too");
}
