//! Fuzzer bytes as a peer's streams, into the core's reader, over the
//! in-memory backend: a node of the core (`CoreTransport` under kitsune2's
//! `DefaultTransport`) accepts a raw peer that sends a valid preflight (or
//! not, when the first input byte says so) and then the input, cut into
//! chunks and streams as the input says. Never panics, never hangs (paused
//! time, every wait bounded), and the node still serves an honest peer
//! afterwards.
#![no_main]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kitsune2_api::{DefaultTransport, K2Proto, K2WireType, SpaceId, TxImpHnd};
use kitsune2_iroh_codec::{Frame, Limits};
use kitsune2_iroh_core::mem::{MemNetwork, mem_url};
use kitsune2_iroh_core::{CoreConfig, CoreTransport, WallClock};
use kitsune2_iroh_test_support::Recorder;
use libfuzzer_sys::fuzz_target;

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

fn preflight(url: &str) -> Bytes {
    let pf = K2Proto {
        ty: K2WireType::Preflight as i32,
        data: Bytes::from_static(b"agent-infos"),
        space_id: None,
        module_id: None,
    }
    .encode()
    .expect("encode");
    Frame::preflight(url, pf)
        .encode(&Limits::default())
        .expect("frame")
        .to_bytes()
}

async fn run(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let net = MemNetwork::new();
    let node_id = [2; 32];
    let (rec, _taps) = Recorder::new();
    let hnd = TxImpHnd::new(rec.clone());
    let config = CoreConfig {
        backend: "mem".to_owned(),
        max_frame_bytes: 64 * 1024,
        ..CoreConfig::default()
    };
    let imp = CoreTransport::create(net.endpoint(node_id), hnd.clone(), config, Arc::new(Clock))
        .expect("core");
    let tx = DefaultTransport::create(&hnd, imp);
    let side = rec.space_side(space());
    tx.register_space_handler(space(), side.clone());
    tx.register_module_handler(space(), "m".to_owned(), side);

    let raw_id = [9; 32];
    let raw = net.endpoint(raw_id);
    let Ok(conn) = raw.connect_raw(&node_id).await else {
        return;
    };
    let Ok(mut stream) = conn.open_raw() else {
        return;
    };
    if mode & 1 == 0 {
        let _ = stream.write_raw(preflight(mem_url(&raw_id).as_str())).await;
    }
    // The rest, in chunks whose sizes come from the input: a byte < 8
    // starts a new stream, others give the next chunk's length.
    let mut i = 0;
    while i < rest.len() {
        let len = usize::from(rest[i]);
        i += 1;
        if len < 8 {
            stream.finish();
            match conn.open_raw() {
                Ok(s) => stream = s,
                Err(_) => break,
            }
            continue;
        }
        let end = (i + len).min(rest.len());
        if stream
            .write_raw(Bytes::copy_from_slice(&rest[i..end]))
            .await
            .is_err()
        {
            break;
        }
        i = end;
    }
    if mode & 2 == 0 {
        stream.finish();
    }
    tokio::time::sleep(Duration::from_secs(30)).await;

    // An honest peer is still served.
    let honest_id = [3; 32];
    let honest = net.endpoint(honest_id);
    let conn = honest.connect_raw(&node_id).await.expect("honest connect");
    let mut s = conn.open_raw().expect("honest stream");
    s.write_raw(preflight(mem_url(&honest_id).as_str()))
        .await
        .expect("honest preflight");
    let mut answer = conn.accept_raw().await.expect("the node answers");
    let first = tokio::time::timeout(
        Duration::from_secs(30),
        kitsune2_iroh_core::RecvStream::read_chunk(&mut answer),
    )
    .await;
    assert!(
        matches!(first, Ok(Ok(Some(_)))),
        "the node answers an honest peer"
    );
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
