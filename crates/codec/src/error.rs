//! The codec's one error type.

use crate::frame::FrameType;

/// Everything that can be wrong with a frame, on the way in or out.
///
/// Every variant is fatal for the stream it came from: after a decoder has
/// returned one, it returns the same error on every later call (errors are
/// sticky), because the byte stream can no longer be split into frames.
///
/// # Invariants
///
/// Messages name what was wrong and with which numbers; the type holds no
/// `String` and no `io::Error`, so it is cheap to clone and compare.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The type byte of a frame header is neither `0` (preflight) nor `1` (data).
    #[error("unknown frame type byte {0:#04x} (0 = preflight, 1 = data)")]
    UnknownFrameType(u8),

    /// The frame (5-byte header plus payload) is larger than the limit.
    #[error("frame of {len} bytes (header + payload) exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// Header plus payload length, in bytes.
        len: u64,
        /// The limit in force, in bytes (header included).
        max: u64,
    },

    /// A preflight payload is too short to hold its 4-byte URL length.
    #[error("preflight payload of {len} bytes is shorter than its 4-byte URL length field")]
    PreflightTooShort {
        /// The preflight payload length, in bytes.
        len: usize,
    },

    /// A preflight's URL length points past the end of its payload.
    #[error("preflight URL length {url_len} exceeds the {available} payload bytes after it")]
    UrlLengthExceedsPayload {
        /// The URL length the preflight announced.
        url_len: u32,
        /// The payload bytes that follow the URL length field.
        available: usize,
    },

    /// A preflight's URL is not valid UTF-8.
    #[error("preflight URL is not valid UTF-8 (valid up to byte {valid_up_to})")]
    UrlNotUtf8 {
        /// Length of the longest valid UTF-8 prefix of the URL.
        valid_up_to: usize,
    },

    /// The first frame on a stream was not a preflight.
    #[error("expected a preflight as the first frame, got a {found} frame")]
    ExpectedPreflight {
        /// The type of the frame that came instead.
        found: FrameType,
    },

    /// A second preflight arrived after the first one.
    #[error("unexpected preflight frame after the stream's first frame")]
    UnexpectedPreflight,

    /// A preflight frame on a `kitsune2/1` message stream (only the control
    /// stream carries one).
    #[error("preflight frame on a message stream")]
    PreflightOnMessageStream,

    /// Bytes after the one data frame of a `kitsune2/1` message stream.
    #[error("a second frame on a message stream (one frame, then the end)")]
    SecondFrameOnMessageStream,

    /// The stream ended in the middle of a frame.
    #[error("stream ended mid-frame: {buffered} of {expected} bytes of the frame received")]
    TruncatedFrame {
        /// Bytes of the unfinished frame that were received (header included).
        buffered: u64,
        /// Bytes the frame needs in total, when the header was complete; else
        /// the header length.
        expected: u64,
    },

    /// A limit was configured below the smallest frame the protocol has.
    #[error("max_frame_bytes {max} is below the {min}-byte frame header")]
    LimitTooSmall {
        /// The limit asked for.
        max: usize,
        /// The smallest limit accepted.
        min: usize,
    },
}
