//! The wire protocol versions and their ALPNs.
//!
//! - `kitsune2/0`: every frame on one uni stream per side, in order (the
//!   incumbent's protocol, `docs/wire-format.md`).
//! - `kitsune2/1`: the same control stream, plus one uni stream per large
//!   data message (`docs/wire-format.md`, "kitsune2/1"), so that a large
//!   message does not hold up the small ones behind it.
//!
//! The dialer offers both, `/1` first; the acceptor prefers `/1`. A peer
//! that speaks only `/0` (the incumbent) so gets `/0`, byte for byte.

/// A wire protocol version, as negotiated through ALPN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum WireVersion {
    /// `kitsune2/0`: one stream per side.
    #[default]
    V0,
    /// `kitsune2/1`: a control stream, and a stream of its own for each
    /// data message above the large-message threshold.
    V1,
}

/// ALPN of [`WireVersion::V0`].
pub const ALPN_V0: &[u8] = b"kitsune2/0";

/// ALPN of [`WireVersion::V1`].
pub const ALPN_V1: &[u8] = b"kitsune2/1";

impl WireVersion {
    /// Every version this crate speaks, preferred first: what a dialer
    /// offers and an acceptor lists.
    pub const ALL: [Self; 2] = [Self::V1, Self::V0];

    /// The version's ALPN.
    pub const fn alpn(self) -> &'static [u8] {
        match self {
            Self::V0 => ALPN_V0,
            Self::V1 => ALPN_V1,
        }
    }

    /// The version an ALPN names, `None` for any other protocol.
    pub fn from_alpn(alpn: &[u8]) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.alpn() == alpn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alpns_round_trip_and_v1_is_preferred() {
        for v in WireVersion::ALL {
            assert_eq!(WireVersion::from_alpn(v.alpn()), Some(v));
        }
        assert_eq!(WireVersion::from_alpn(b"kitsune2/2"), None);
        assert_eq!(WireVersion::ALL[0], WireVersion::V1);
        assert_eq!(ALPN_V0, b"kitsune2/0");
    }
}
