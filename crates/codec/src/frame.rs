//! Frame types.

use bytes::Bytes;
use std::fmt;

use crate::error::CodecError;

/// Length of a frame header: 1 type byte and a 4-byte big-endian length.
pub const FRAME_HEADER_LEN: usize = 5;

/// Length of the URL length field that starts a preflight payload.
pub const PREFLIGHT_URL_LEN_LEN: usize = 4;

/// The type byte of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameType {
    /// The handshake frame: the sender's URL and its kitsune2 preflight bytes.
    Preflight = 0,
    /// An opaque kitsune2 message.
    Data = 1,
}

impl FrameType {
    /// The type's byte on the wire.
    pub const fn as_u8(self) -> u8 {
        self as u8
    }
}

impl TryFrom<u8> for FrameType {
    type Error = CodecError;

    fn try_from(value: u8) -> Result<Self, CodecError> {
        match value {
            0 => Ok(Self::Preflight),
            1 => Ok(Self::Data),
            other => Err(CodecError::UnknownFrameType(other)),
        }
    }
}

impl fmt::Display for FrameType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Preflight => "preflight",
            Self::Data => "data",
        })
    }
}

/// A parsed frame header.
///
/// # Invariants
///
/// `payload_len` fits in a `u32`; a decoder only builds headers that passed
/// its [`Limits`](crate::Limits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// The frame's type.
    pub frame_type: FrameType,
    /// Payload length in bytes, header excluded.
    pub payload_len: u32,
}

impl FrameHeader {
    /// The header's 5 bytes on the wire.
    pub fn to_bytes(self) -> [u8; FRAME_HEADER_LEN] {
        let len = self.payload_len.to_be_bytes();
        [self.frame_type.as_u8(), len[0], len[1], len[2], len[3]]
    }

    /// Parses 5 header bytes. Checks the type byte only; length limits are the
    /// decoder's business.
    ///
    /// # Errors
    ///
    /// [`CodecError::UnknownFrameType`] for a type byte other than 0 or 1.
    pub fn parse(bytes: [u8; FRAME_HEADER_LEN]) -> Result<Self, CodecError> {
        let frame_type = FrameType::try_from(bytes[0])?;
        let payload_len = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
        Ok(Self {
            frame_type,
            payload_len,
        })
    }
}

/// The payload of a preflight frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preflight {
    /// The sender's peer URL, as it sent it. The codec checks only that it is
    /// UTF-8; whether it is a valid URL is for the caller to decide.
    pub url: String,
    /// The preflight bytes from kitsune2's `TxImpHnd::peer_connect`.
    pub data: Bytes,
}

/// One frame of the protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// The handshake frame (type 0).
    Preflight(Preflight),
    /// A message (type 1).
    Data(Bytes),
}

impl Frame {
    /// A preflight frame.
    pub fn preflight(url: impl Into<String>, data: Bytes) -> Self {
        Self::Preflight(Preflight {
            url: url.into(),
            data,
        })
    }

    /// A data frame.
    pub fn data(data: Bytes) -> Self {
        Self::Data(data)
    }

    /// The frame's type.
    pub fn frame_type(&self) -> FrameType {
        match self {
            Self::Preflight(_) => FrameType::Preflight,
            Self::Data(_) => FrameType::Data,
        }
    }

    /// Payload length in bytes (header excluded), as a `u64` so that it never
    /// overflows.
    pub fn payload_len(&self) -> u64 {
        match self {
            Self::Preflight(p) => {
                PREFLIGHT_URL_LEN_LEN as u64 + p.url.len() as u64 + p.data.len() as u64
            }
            Self::Data(d) => d.len() as u64,
        }
    }

    /// Length of the whole encoded frame, header included.
    pub fn encoded_len(&self) -> u64 {
        FRAME_HEADER_LEN as u64 + self.payload_len()
    }

    /// Builds a frame from a header's type and a complete payload.
    pub(crate) fn from_payload(frame_type: FrameType, payload: Bytes) -> Result<Self, CodecError> {
        match frame_type {
            FrameType::Data => Ok(Self::Data(payload)),
            FrameType::Preflight => parse_preflight(payload).map(Self::Preflight),
        }
    }
}

/// Splits a preflight payload into URL and preflight bytes, without copying
/// the preflight bytes.
fn parse_preflight(mut payload: Bytes) -> Result<Preflight, CodecError> {
    let Some(len_field) = payload.get(..PREFLIGHT_URL_LEN_LEN) else {
        return Err(CodecError::PreflightTooShort { len: payload.len() });
    };
    let url_len = u32::from_be_bytes([len_field[0], len_field[1], len_field[2], len_field[3]]);
    let available = payload.len() - PREFLIGHT_URL_LEN_LEN;
    if u64::from(url_len) > available as u64 {
        return Err(CodecError::UrlLengthExceedsPayload { url_len, available });
    }
    let url_end = PREFLIGHT_URL_LEN_LEN + url_len as usize;
    let url = std::str::from_utf8(&payload[PREFLIGHT_URL_LEN_LEN..url_end])
        .map_err(|e| CodecError::UrlNotUtf8 {
            valid_up_to: e.valid_up_to(),
        })?
        .to_owned();
    let data = payload.split_off(url_end);
    Ok(Preflight { url, data })
}
