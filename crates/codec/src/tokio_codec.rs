//! `tokio_util::codec` integration (feature `tokio-codec`).

use bytes::BytesMut;
use tokio_util::codec::{Decoder, Encoder};

use crate::decode::{FrameDecoder, FrameOrder};
use crate::error::CodecError;
use crate::frame::Frame;
use crate::limits::Limits;

/// Error of [`FrameCodec`]: tokio-util's traits need `From<io::Error>`,
/// which [`CodecError`] deliberately does not have.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FramedError {
    /// The underlying reader or writer failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// The bytes were not valid frames.
    #[error(transparent)]
    Codec(#[from] CodecError),
}

/// [`Encoder`] and [`Decoder`] for `FramedRead` / `FramedWrite`.
///
/// Decoding has [`FrameDecoder`]'s invariants; encoding copies the frame into
/// the write buffer (use [`Frame::encode`] for vectored writes without copies).
#[derive(Debug, Clone)]
pub struct FrameCodec {
    decoder: FrameDecoder,
}

impl FrameCodec {
    /// A codec accepting any sequence of frames within `limits`.
    pub fn new(limits: Limits) -> Self {
        Self::with_order(limits, FrameOrder::Any)
    }

    /// A codec whose decoder also enforces `order`.
    pub fn with_order(limits: Limits, order: FrameOrder) -> Self {
        Self {
            decoder: FrameDecoder::with_order(limits, order),
        }
    }
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = FramedError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FramedError> {
        Ok(self.decoder.decode(src)?)
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FramedError> {
        Ok(self.decoder.decode_eof(src)?)
    }
}

impl Encoder<Frame> for FrameCodec {
    type Error = FramedError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), FramedError> {
        Ok(frame.encode_into(dst, self.decoder.limits())?)
    }
}
