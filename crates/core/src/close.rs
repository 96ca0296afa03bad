//! Application close codes.

/// The code a side puts in a QUIC application close.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum CloseCode {
    /// Any other reason; a failure.
    Unspecified = 0,
    /// Intentional; the reason bytes carry human-readable text.
    Graceful = 1,
    /// Lost simultaneous-open resolution to a preferred connection.
    Superseded = 2,
}

impl CloseCode {
    /// The code on the wire.
    pub const fn to_wire(self) -> u64 {
        self as u64
    }

    /// The code for a wire value; unknown values are
    /// [`Unspecified`](Self::Unspecified).
    pub const fn from_wire(code: u64) -> Self {
        match code {
            1 => Self::Graceful,
            2 => Self::Superseded,
            _ => Self::Unspecified,
        }
    }
}

/// Reason text of the close `close()` sends to every peer.
pub const TRANSPORT_CLOSED_REASON: &str = "Transport closed";

/// Reason text of the code-0 close a dropped (not closed) transport sends:
/// peers take it as a lost connection.
pub const TRANSPORT_DROPPED_REASON: &str = "Transport dropped";

/// Reason text of a superseded connection's close.
pub const SUPERSEDED_REASON: &str = "superseded by preferred connection";
