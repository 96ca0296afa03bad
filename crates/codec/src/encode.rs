//! Encoding frames.

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::CodecError;
use crate::frame::{FRAME_HEADER_LEN, Frame, FrameHeader, FrameType, PREFLIGHT_URL_LEN_LEN};
use crate::limits::Limits;

/// The 5-byte header for a frame of `frame_type` with `payload_len` payload
/// bytes, checked against `limits`.
///
/// # Errors
///
/// [`CodecError::FrameTooLarge`] when header plus payload exceed the limit.
pub fn encode_header(
    frame_type: FrameType,
    payload_len: u64,
    limits: &Limits,
) -> Result<[u8; FRAME_HEADER_LEN], CodecError> {
    limits.check_payload_len(payload_len)?;
    // INVARIANT: the effective limit is at most u32::MAX + 5, so a payload
    // that passed the check fits in a u32.
    let payload_len = u32::try_from(payload_len).expect("checked against the wire limit");
    Ok(FrameHeader {
        frame_type,
        payload_len,
    }
    .to_bytes())
}

/// An encoded frame as two buffers, for one vectored write.
///
/// `head` holds the header and, for a preflight, the URL length and URL;
/// `body` is the caller's payload [`Bytes`], untouched. Writing `head` then
/// `body` puts the frame on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedFrame {
    head: Bytes,
    body: Bytes,
}

impl EncodedFrame {
    /// The header (and, for a preflight, URL length and URL).
    pub fn head(&self) -> &Bytes {
        &self.head
    }

    /// The payload bytes the frame was built from (the preflight bytes for a
    /// preflight), the same allocation the caller passed in.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// The two buffers, in wire order, e.g. for `write_all_chunks`.
    pub fn into_chunks(self) -> [Bytes; 2] {
        [self.head, self.body]
    }

    /// Total length on the wire.
    pub fn len(&self) -> usize {
        self.head.len() + self.body.len()
    }

    /// Always false: an encoded frame holds at least its header.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The frame as one contiguous buffer (copies; for tests and logs).
    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(self.len());
        out.extend_from_slice(&self.head);
        out.extend_from_slice(&self.body);
        out.freeze()
    }
}

impl Frame {
    /// Encodes the frame without copying its payload.
    ///
    /// # Errors
    ///
    /// [`CodecError::FrameTooLarge`] when header plus payload exceed
    /// `limits`, or when the URL does not fit a 32-bit length.
    pub fn encode(self, limits: &Limits) -> Result<EncodedFrame, CodecError> {
        let header = encode_header(self.frame_type(), self.payload_len(), limits)?;
        Ok(match self {
            Self::Data(body) => EncodedFrame {
                head: Bytes::copy_from_slice(&header),
                body,
            },
            Self::Preflight(p) => {
                let mut head =
                    BytesMut::with_capacity(FRAME_HEADER_LEN + PREFLIGHT_URL_LEN_LEN + p.url.len());
                head.put_slice(&header);
                put_url(&mut head, &p.url);
                EncodedFrame {
                    head: head.freeze(),
                    body: p.data,
                }
            }
        })
    }

    /// Appends the whole frame to `dst` (copies the payload).
    ///
    /// On error `dst` is left as it was.
    ///
    /// # Errors
    ///
    /// [`CodecError::FrameTooLarge`] when header plus payload exceed `limits`.
    pub fn encode_into(&self, dst: &mut BytesMut, limits: &Limits) -> Result<(), CodecError> {
        let header = encode_header(self.frame_type(), self.payload_len(), limits)?;
        // INVARIANT: the frame passed the limit check, which is at most
        // u32::MAX + 5, so its length fits in usize on 32- and 64-bit targets.
        let len = usize::try_from(self.encoded_len()).expect("checked against the wire limit");
        dst.reserve(len);
        dst.put_slice(&header);
        match self {
            Self::Data(body) => dst.put_slice(body),
            Self::Preflight(p) => {
                put_url(dst, &p.url);
                dst.put_slice(&p.data);
            }
        }
        Ok(())
    }
}

/// Writes a preflight's URL length and URL. The caller checked the frame
/// length, which bounds the URL length.
fn put_url(dst: &mut BytesMut, url: &str) {
    // INVARIANT: the whole payload passed the limit check, so the URL, a part
    // of it, fits in a u32.
    let url_len = u32::try_from(url.len()).expect("checked against the wire limit");
    dst.put_u32(url_len);
    dst.put_slice(url.as_bytes());
}
