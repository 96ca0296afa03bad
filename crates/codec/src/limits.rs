//! Size limits.

use crate::error::CodecError;
use crate::frame::FRAME_HEADER_LEN;

/// Default largest frame, header included: 100 MiB, as in
/// `kitsune2_transport_iroh`.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 100 * 1024 * 1024;

/// Most a decoder reserves ahead of bytes it has received.
///
/// While a frame is incomplete, [`FrameDecoder`](crate::FrameDecoder) reserves
/// at most this much beyond what is buffered, whatever length the header
/// claimed: a peer that announces 100 MiB and sends 10 bytes costs 10 bytes
/// plus at most one step.
pub const RESERVE_STEP: usize = 64 * 1024;

/// The largest frame a 32-bit length can describe, header included.
const WIRE_MAX_FRAME_BYTES: u64 = u32::MAX as u64 + FRAME_HEADER_LEN as u64;

/// Size limits applied by encoders and decoders.
///
/// # Invariants
///
/// `max_frame_bytes` is at least [`FRAME_HEADER_LEN`]. It counts header plus
/// payload, the meaning `maxFrameBytes` has in `kitsune2_transport_iroh`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    max_frame_bytes: usize,
}

impl Limits {
    /// Limits with the largest frame (header + payload) set to `max_frame_bytes`.
    ///
    /// # Errors
    ///
    /// [`CodecError::LimitTooSmall`] when `max_frame_bytes` cannot hold even a
    /// frame header.
    pub const fn new(max_frame_bytes: usize) -> Result<Self, CodecError> {
        if max_frame_bytes < FRAME_HEADER_LEN {
            return Err(CodecError::LimitTooSmall {
                max: max_frame_bytes,
                min: FRAME_HEADER_LEN,
            });
        }
        Ok(Self { max_frame_bytes })
    }

    /// The largest frame, header included, as configured.
    pub const fn max_frame_bytes(&self) -> usize {
        self.max_frame_bytes
    }

    /// The limit in force: the configured one, capped at what a 32-bit
    /// length can describe.
    pub(crate) fn effective_max(&self) -> u64 {
        (self.max_frame_bytes as u64).min(WIRE_MAX_FRAME_BYTES)
    }

    /// Checks a frame of `payload_len` payload bytes against the limit.
    pub(crate) fn check_payload_len(&self, payload_len: u64) -> Result<(), CodecError> {
        let len = payload_len.saturating_add(FRAME_HEADER_LEN as u64);
        let max = self.effective_max();
        if len > max {
            return Err(CodecError::FrameTooLarge { len, max });
        }
        Ok(())
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
        }
    }
}
