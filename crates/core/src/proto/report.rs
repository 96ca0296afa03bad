//! Which kitsune2 event fires when a connection ends: a rule of the
//! protocol, decided from its state alone.

use bytes::Bytes;
use kitsune2_api::Url;

use super::{ConnProto, State};
use crate::close::CloseCode;
use crate::error::{CoreError, Initiator};

/// What kitsune2 hears when a connection ends (see [`ConnProto::end_report`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EndReport {
    /// Nothing: it never became active, was superseded, or this side
    /// closed it on purpose (which reports by itself).
    Silent,
    /// The peer said goodbye: `peer_disconnect(url, reason)`.
    Disconnected {
        /// The peer's URL.
        url: Url,
        /// The peer's reason, if it gave one.
        reason: Option<String>,
    },
    /// The connection was lost: `peer_disconnect(url, Some(error))`, and
    /// `set_unresponsive` when `unresponsive`.
    Lost {
        /// The peer's URL.
        url: Url,
        /// The error, as text.
        error: String,
        /// Whether the peer is to be marked unresponsive.
        unresponsive: bool,
    },
}

impl ConnProto {
    /// Claims the one report of this connection's end; true the first
    /// time only. `disconnect` and `close` report by themselves with it.
    pub(crate) fn take_report(&mut self) -> bool {
        !std::mem::replace(&mut self.reported, true)
    }

    /// What kitsune2 hears now that the connection ended, given the
    /// peer's application close if it sent one. At most one report per
    /// connection; later calls are [`EndReport::Silent`].
    pub(crate) fn end_report(&mut self, remote_close: Option<(CloseCode, Bytes)>) -> EndReport {
        let superseded = matches!(self.state, State::Superseded { .. })
            || matches!(remote_close, Some((CloseCode::Superseded, _)));
        let ended_by_us = matches!(
            &self.state,
            State::Closed {
                error: CoreError::Closed
                    | CoreError::Dropped
                    | CoreError::Disconnected { .. }
                    | CoreError::Superseded,
                by: Initiator::Local,
            }
        );
        let (Some(url), false, false, true) = (
            self.remote_url.clone(),
            superseded,
            ended_by_us,
            self.was_active,
        ) else {
            return EndReport::Silent;
        };
        if !self.take_report() {
            return EndReport::Silent;
        }
        match (remote_close, self.closed()) {
            (Some((CloseCode::Graceful, reason)), _) => EndReport::Disconnected {
                url,
                reason: (!reason.is_empty()).then(|| String::from_utf8_lossy(&reason).into_owned()),
            },
            (_, error) => {
                let error = error.map(|(e, _)| e);
                EndReport::Lost {
                    url,
                    // Not for our own missing agents, a peer we closed for a
                    // protocol violation, our handler's failure, or our own
                    // full budget: the peer is not unresponsive.
                    unresponsive: !matches!(
                        error,
                        Some(
                            CoreError::NoLocalAgents
                                | CoreError::Codec(_)
                                | CoreError::Handler(_)
                                | CoreError::FrameBudgetExhausted { .. }
                        )
                    ),
                    error: error.map_or_else(|| "connection lost".to_owned(), |e| e.to_string()),
                }
            }
        }
    }
}
