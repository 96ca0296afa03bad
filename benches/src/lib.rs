//! Benchmarks for kitsune2-iroh (`cargo bench -p kitsune2-iroh-benches`).
//!
//! The library part holds the inputs the benchmarks share, so that every
//! benchmark measures the same bytes.

use bytes::{Bytes, BytesMut};
use kitsune2_iroh_codec::{Frame, Limits};

/// Payload sizes the codec benchmarks use: 64 B, 1 KiB, 64 KiB, 1 MiB.
pub const PAYLOAD_SIZES: [usize; 4] = [64, 1024, 64 * 1024, 1024 * 1024];

/// A typical QUIC packet's worth of stream data.
pub const CHUNK: usize = 1500;

/// A data frame with a `size`-byte payload.
pub fn data_frame(size: usize) -> Frame {
    Frame::data(Bytes::from(vec![0x5a; size]))
}

/// The wire bytes of `frames` back to back.
pub fn wire(frames: &[Frame]) -> Bytes {
    let limits = Limits::default();
    let mut buf = BytesMut::new();
    for f in frames {
        // INVARIANT: benchmark frames are at most 1 MiB, under the default limit.
        f.encode_into(&mut buf, &limits)
            .expect("benchmark frame fits");
    }
    buf.freeze()
}

/// `wire` split into `chunk`-byte pieces (zero-copy slices).
pub fn chunks(wire: &Bytes, chunk: usize) -> Vec<Bytes> {
    (0..wire.len())
        .step_by(chunk)
        .map(|i| wire.slice(i..(i + chunk).min(wire.len())))
        .collect()
}
