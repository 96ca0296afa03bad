//! The traits through which the core touches the network.
//!
//! The iroh adapter implements them over iroh's QUIC types; the `mem` feature
//! implements them in-process. They are object-safe and small on purpose.

use std::fmt::Debug;
use std::sync::Arc;

use bytes::Bytes;
use kitsune2_api::{BoxFut, Config, K2Result, SpaceId, Url};
use tokio::sync::watch;

use crate::close::CloseCode;
use crate::error::CoreError;
use crate::peer_url::PeerAddr;
use crate::version::WireVersion;

/// A 32-byte endpoint id (an ed25519 public key in iroh).
pub type EndpointId = [u8; 32];

/// A shared connection.
pub type DynConnection = Arc<dyn Connection>;

/// An owned send stream.
pub type DynSendStream = Box<dyn SendStream>;

/// An owned receive stream.
pub type DynRecvStream = Box<dyn RecvStream>;

/// A local endpoint: it dials and accepts authenticated connections.
///
/// # Invariants
///
/// Every [`Connection`] it yields MUST report, in
/// [`remote_id`](Connection::remote_id), the id the transport
/// authenticated, never one taken from the peer's word.
pub trait Endpoint: Send + Sync + Debug + 'static {
    /// This endpoint's id.
    fn local_id(&self) -> EndpointId;

    /// This endpoint's peer URL as it changes (`None` until known). The core
    /// publishes each new value through `TxImpHnd::new_listening_address`.
    fn watch_url(&self) -> watch::Receiver<Option<Url>>;

    /// The next incoming connection, handshake done. `None` once the
    /// endpoint is closed. An `Err` is one failed incoming connection; the
    /// core logs it and keeps accepting.
    ///
    /// Cancel safety: cancelling MAY drop one incoming connection.
    fn accept(&self) -> BoxFut<'_, Option<Result<DynConnection, CoreError>>>;

    /// Connects to `peer`. The core bounds the call with its connect
    /// timeout, so implementations need not.
    ///
    /// Cancel safety: cancelling abandons the attempt.
    fn connect<'a>(&'a self, peer: &'a PeerAddr) -> BoxFut<'a, Result<DynConnection, CoreError>>;

    /// True when the home relay is known to be down: the core then fails
    /// connects fast and does not mark peers unresponsive.
    fn is_home_relay_known_down(&self) -> bool {
        false
    }

    /// Applies per-space settings (for iroh: a relay of the space's own).
    ///
    /// Returns this endpoint's peer URL for the space when the space reaches
    /// it at another URL than the global one (on a relay of its own), `None`
    /// when the space uses the global URL. The core publishes a returned URL
    /// to that space alone (`new_listening_address(url, Some(space))`) and
    /// presents it in preflights to peers on the same relay. The default
    /// does nothing and returns `None`.
    ///
    /// # Errors
    ///
    /// When the space's settings are invalid or cannot be applied; the
    /// space then keeps the global URL.
    fn configure_for_space(
        &self,
        space_id: SpaceId,
        config: &Config,
    ) -> BoxFut<'_, K2Result<Option<Url>>> {
        drop((space_id, config));
        Box::pin(async { Ok(None) })
    }

    /// Removes what [`configure_for_space`](Self::configure_for_space) set.
    fn unconfigure_for_space(&self, space_id: SpaceId) -> BoxFut<'_, K2Result<()>> {
        drop(space_id);
        Box::pin(async { Ok(()) })
    }

    /// Closes the endpoint: `accept` returns `None` afterwards.
    fn close(&self) -> BoxFut<'_, ()>;
}

/// One authenticated connection to a peer.
pub trait Connection: Send + Sync + Debug + 'static {
    /// The peer's authenticated endpoint id.
    fn remote_id(&self) -> EndpointId;

    /// The wire version negotiated for this connection (its ALPN). The
    /// default is [`WireVersion::V0`], for a backend that offers no other.
    fn wire_version(&self) -> WireVersion {
        WireVersion::V0
    }

    /// Opens a unidirectional stream towards the peer. It MAY wait while
    /// the peer allows no more open streams (QUIC's stream limit): that is
    /// back-pressure, as flow control is for bytes.
    ///
    /// An error means the connection is gone.
    fn open_uni(&self) -> BoxFut<'_, Result<DynSendStream, CoreError>>;

    /// Waits for the peer's next unidirectional stream.
    ///
    /// An error means the connection is gone; streams received before the
    /// end are still returned first (QUIC's are). Cancel safety:
    /// cancelling loses no stream.
    fn accept_uni(&self) -> BoxFut<'_, Result<DynRecvStream, CoreError>>;

    /// Closes the connection with an application close. Idempotent; the
    /// first call's code and reason are the ones sent.
    fn close(&self, code: CloseCode, reason: &[u8]);

    /// The application close the peer sent, once the connection is closed
    /// by the peer (`None` while open or when it ended otherwise).
    fn remote_close(&self) -> Option<(CloseCode, Bytes)>;

    /// True while traffic goes over a direct path rather than a relay.
    fn is_direct(&self) -> bool;

    /// Resolves to `true` once the backend takes the peer on this
    /// connection as gone: nothing arrived from it for the backend's
    /// silence threshold (the iroh adapter: 3 s, with a keep-alive the
    /// peer answers every second), or the connection ended; to `false` as
    /// soon as something arrives. The core asks only when the same peer
    /// dials anew while this connection, which resolution would keep, is
    /// its active one: a peer that restarted under the same key (see
    /// `docs/architecture.md`, "Dead peers and come-back").
    ///
    /// The default answers `false` at once: the peer is taken as alive.
    fn probe_gone(&self) -> BoxFut<'_, bool> {
        Box::pin(async { false })
    }

    /// How long nothing at all (data, acknowledgements, keep-alive
    /// answers) has arrived from the peer on this connection, as of this
    /// call. The core takes an established connection silent for
    /// [`CoreConfig::silence_timeout`](crate::CoreConfig::silence_timeout)
    /// as lost, so a backend MUST keep a live peer talking well within it
    /// (iroh: a QUIC keep-alive after 1 s of silence).
    ///
    /// The default answers zero: the peer is never taken as silent.
    fn silent_for(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }
}

/// The sending half of a unidirectional stream.
pub trait SendStream: Send + Sync + Debug + 'static {
    /// Writes all of `chunks`, in order, as one vectored write, without
    /// copying them. Resolves when the bytes are handed to the transport
    /// (flow control may make it wait: that is the backpressure).
    ///
    /// An error means the stream is unusable.
    ///
    /// Cancel safety: a cancelled write leaves in `chunks` exactly what
    /// was not written (written chunks emptied, a partly written one cut
    /// to its unwritten rest), so calling again with the same `chunks`
    /// resumes it.
    fn write_chunks<'a>(&'a mut self, chunks: &'a mut [Bytes])
    -> BoxFut<'a, Result<(), CoreError>>;

    /// Finishes the stream (QUIC FIN: no more bytes follow) and resolves
    /// once the peer has received everything written on it, or has
    /// stopped the stream. An error means that can no longer happen (the
    /// connection is gone).
    fn finish(&mut self) -> BoxFut<'_, Result<(), CoreError>>;

    /// Sets the stream's send priority: bytes of a stream with a higher
    /// priority go out before those of lower ones on the same connection.
    /// The default (for a backend without priorities) does nothing.
    fn set_priority(&mut self, priority: i32) {
        let _ = priority;
    }

    /// Abandons the stream (QUIC `RESET_STREAM` with `code`): the peer's
    /// reads of it fail, and bytes not yet received are never delivered.
    /// The core resets a `kitsune2/1` message stream whose send was
    /// cancelled mid-frame. Nothing can be written after it.
    ///
    /// The default does nothing; a backend that negotiates
    /// [`WireVersion::V1`] MUST implement it (otherwise a cancelled large
    /// send ends its stream as if finished, and the peer closes the
    /// connection on the cut frame).
    fn reset(&mut self, code: u32) {
        let _ = code;
    }
}

/// The most bytes one [`RecvStream::read_chunk`] may return: 64 KiB.
///
/// The core's budget for partially received frames counts on it (see
/// [`CoreConfig::partial_frame_budget`](crate::CoreConfig::partial_frame_budget)).
pub const MAX_READ_CHUNK: usize = 64 * 1024;

/// The receiving half of a unidirectional stream.
///
/// # Invariants
///
/// Once the connection has ended (the peer closed it, or it was lost),
/// reads MUST still return every byte received before the end, and then
/// the stream's end or an error, without waiting for more: a peer's QUIC
/// acknowledged those bytes, and a peer whose drain saw its FIN
/// acknowledged closes at once (QUIC keeps a closed connection's received
/// streams readable). The core reads a stream out after the connection's
/// end before it judges the end.
pub trait RecvStream: Send + Sync + Debug + 'static {
    /// The next chunk of bytes, of any size up to [`MAX_READ_CHUNK`];
    /// `Ok(None)` once the peer finished the stream. Chunk boundaries
    /// carry no meaning.
    ///
    /// An error means the stream (or connection) failed. Cancel safety:
    /// cancelling loses no bytes.
    fn read_chunk(&mut self) -> BoxFut<'_, Result<Option<Bytes>, CoreError>>;

    /// Every chunk ready now, in order, [`MAX_READ_CHUNK`] bytes at most
    /// in all, waiting only while none is; `Ok(None)` once the peer
    /// finished the stream and every byte was taken. The reader takes
    /// what arrived since its last read in one call instead of one call
    /// (and one turn of its loop) per chunk: QUIC hands out one chunk per
    /// received packet, about 1.2 KiB.
    ///
    /// Errors as [`read_chunk`](Self::read_chunk); an error met after
    /// some chunks is returned by the next call, the chunks by this one.
    /// Cancel safety: cancelling loses no bytes.
    ///
    /// The default reads one chunk.
    fn read_chunks(&mut self) -> BoxFut<'_, Result<Option<Vec<Bytes>>, CoreError>> {
        Box::pin(async move { Ok(self.read_chunk().await?.map(|c| vec![c])) })
    }
}

/// Wall-clock time, for the timestamps kitsune2 wants (connection open
/// time, unresponsive marks). Injected so tests control it.
pub trait WallClock: Send + Sync + Debug + 'static {
    /// Microseconds since the UNIX epoch.
    fn now_micros(&self) -> i64;
}

/// The operating system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl WallClock for SystemClock {
    fn now_micros(&self) -> i64 {
        // The one place the core reads the OS clock; everything else takes
        // a WallClock.
        #[allow(clippy::disallowed_methods)] // reason: this is the injected clock's source
        let now = std::time::SystemTime::now();
        now.duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
            .unwrap_or(0)
    }
}
