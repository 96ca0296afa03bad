//! Decodes a kitsune2/0 byte stream given as hex and prints its frames.
//!
//! ```text
//! cargo run -p kitsune2-iroh-codec --example decode -- 0100000005 68656c6c6f
//! cargo run -p kitsune2-iroh-codec --example decode          # a sample stream
//! ```
//!
//! The stream is fed in 3-byte chunks to show the incremental decoder at work.
//! Exits non-zero, with the codec's error, on a malformed stream.

use bytes::{Bytes, BytesMut};
use kitsune2_iroh_codec::{Frame, FrameOrder, Limits, StreamDecoder};
use std::process::ExitCode;

fn sample_stream() -> Vec<u8> {
    let limits = Limits::default();
    let mut buf = BytesMut::new();
    let frames = [
        Frame::preflight(
            "http://127.0.0.1:4433/relay/5c7b3a8e0d0c",
            Bytes::from_static(b"agent-info"),
        ),
        Frame::data(Bytes::from_static(b"hello")),
        Frame::data(Bytes::from_static(b"world")),
    ];
    for f in &frames {
        // INVARIANT: the sample frames are far below the default limit.
        f.encode_into(&mut buf, &limits).expect("sample frame fits");
    }
    buf.to_vec()
}

fn parse_hex(args: &[String]) -> Result<Vec<u8>, String> {
    let digits: String = args
        .concat()
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    if !digits.len().is_multiple_of(2) {
        return Err(format!("odd number of hex digits ({})", digits.len()));
    }
    (0..digits.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(&digits[i..i + 2], 16)
                .map_err(|_| format!("not hex at digit {i}: {:?}", &digits[i..i + 2]))
        })
        .collect()
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let wire = if args.is_empty() {
        sample_stream()
    } else {
        match parse_hex(&args) {
            Ok(w) => w,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        }
    };
    println!("{} bytes, fed in 3-byte chunks", wire.len());
    let wire = Bytes::from(wire);
    let mut decoder = StreamDecoder::with_order(Limits::default(), FrameOrder::Any);
    let mut count = 0usize;
    for start in (0..wire.len()).step_by(3) {
        decoder.feed(wire.slice(start..(start + 3).min(wire.len())));
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => {
                    count += 1;
                    match frame {
                        Frame::Preflight(p) => println!(
                            "frame {count}: preflight url={:?} data={} bytes",
                            p.url,
                            p.data.len()
                        ),
                        Frame::Data(d) => println!(
                            "frame {count}: data {} bytes {:?}",
                            d.len(),
                            String::from_utf8_lossy(&d)
                        ),
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    eprintln!("error after {count} frame(s): {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
    }
    if let Err(e) = decoder.finish() {
        eprintln!("error after {count} frame(s): {e}");
        return ExitCode::FAILURE;
    }
    println!("{count} frame(s), stream ended cleanly");
    ExitCode::SUCCESS
}
