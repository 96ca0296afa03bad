//! Sans-I/O frame codec for the kitsune2 iroh transport wire protocol.
//!
//! The protocol (ALPN `kitsune2/0`) carries every message of one direction of
//! a connection over a single QUIC uni stream as a sequence of frames:
//!
//! ```text
//! +------+-----------------+-------------------------+
//! | type | length (u32 BE) | payload (length bytes)  |
//! +------+-----------------+-------------------------+
//!   1 B        4 B
//! ```
//!
//! Type `0` is a preflight, whose payload is `url_len (u32 BE) | url (UTF-8) |
//! preflight bytes`; type `1` is data, whose payload is opaque. The normative
//! specification with worked examples is `docs/wire-format.md`.
//!
//! This crate does no I/O, spawns nothing and knows nothing of kitsune2 or
//! iroh: bytes go in, [`Frame`]s come out, and the other way round.
//!
//! # Encoding
//!
//! [`Frame::encode`] returns an [`EncodedFrame`]: a small head (header, and for
//! a preflight the URL) and the untouched payload [`Bytes`](bytes::Bytes), ready for one
//! vectored write. [`Frame::encode_into`] writes the whole frame into one
//! [`BytesMut`](bytes::BytesMut) for callers that want a single buffer.
//!
//! # Decoding
//!
//! - [`StreamDecoder`] takes the chunks a transport reads, as they come, and
//!   yields frames. A payload that arrived inside one chunk is handed out as a
//!   slice of that chunk, without a copy.
//! - [`FrameDecoder`] follows the `tokio_util::codec::Decoder` contract over a
//!   caller-owned [`BytesMut`](bytes::BytesMut); with the `tokio-codec`
//!   feature, [`FrameCodec`] plugs it into `FramedRead` / `FramedWrite`.
//!
//! Both check a frame's announced length against [`Limits`] before buffering
//! any of its payload, and grow their memory only with bytes actually
//! received. With [`FrameOrder::PreflightThenData`] they also enforce the
//! protocol order: one preflight first, data after it.
//!
//! ```
//! use bytes::Bytes;
//! use kitsune2_iroh_codec::{Frame, Limits, StreamDecoder};
//!
//! let limits = Limits::default();
//! let frame = Frame::data(Bytes::from_static(b"hello"));
//! let wire = frame.clone().encode(&limits)?.to_bytes();
//! assert_eq!(&wire[..], b"\x01\x00\x00\x00\x05hello");
//!
//! let mut decoder = StreamDecoder::new(limits);
//! decoder.feed(wire.slice(..3));
//! assert_eq!(decoder.next_frame()?, None);
//! decoder.feed(wire.slice(3..));
//! assert_eq!(decoder.next_frame()?, Some(frame));
//! # Ok::<(), kitsune2_iroh_codec::CodecError>(())
//! ```

mod decode;
mod encode;
mod error;
mod frame;
mod limits;
#[cfg(feature = "tokio-codec")]
mod tokio_codec;

pub use decode::{FrameDecoder, FrameOrder, StreamDecoder};
pub use encode::{EncodedFrame, encode_header};
pub use error::CodecError;
pub use frame::{
    FRAME_HEADER_LEN, Frame, FrameHeader, FrameType, PREFLIGHT_URL_LEN_LEN, Preflight,
};
pub use limits::{DEFAULT_MAX_FRAME_BYTES, Limits, RESERVE_STEP};
#[cfg(feature = "tokio-codec")]
pub use tokio_codec::{FrameCodec, FramedError};
