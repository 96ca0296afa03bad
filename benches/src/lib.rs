//! Benchmarks for kitsune2-iroh (`cargo bench -p kitsune2-iroh-benches`).
//!
//! The library part holds the inputs the benchmarks share, so that every
//! benchmark measures the same bytes.

use bytes::{Buf, Bytes, BytesMut};
use kitsune2_iroh_codec::{Frame, Limits};

/// Payload sizes the codec benchmarks use: 64 B, 1 KiB, 64 KiB, 1 MiB.
pub const PAYLOAD_SIZES: [usize; 4] = [64, 1024, 64 * 1024, 1024 * 1024];

/// A typical QUIC packet's worth of stream data.
pub const CHUNK: usize = 1500;

/// A `size`-byte payload.
pub fn payload(size: usize) -> Bytes {
    Bytes::from(vec![0x5a; size])
}

/// A data frame with a `size`-byte payload.
pub fn data_frame(size: usize) -> Frame {
    Frame::data(payload(size))
}

/// An empty buffer with room for `len` bytes whose start lies half a page
/// (mod 4096) after `src`'s start.
///
/// Copy baselines write here so that their speed does not depend on where
/// the allocator happened to put the destination: on the benchmark machine
/// (AMD EPYC, glibc 2.36) a copy whose destination is 16 bytes past the
/// source mod 4096, as two back-to-back heap allocations often are, runs at
/// about 2.4 GiB/s instead of about 40 GiB/s.
pub fn copy_destination(src: &[u8], len: usize) -> BytesMut {
    const PAGE: usize = 4096;
    let mut buf = BytesMut::zeroed(len + PAGE);
    let base = buf.as_ptr() as usize;
    let want = (src.as_ptr() as usize).wrapping_add(PAGE / 2);
    let offset = want.wrapping_sub(base) % PAGE;
    buf.advance(offset);
    buf.clear();
    debug_assert!(buf.capacity() >= len);
    buf
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
