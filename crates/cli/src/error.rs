//! What can go wrong, in one line each.

/// Errors the commands report before exiting non-zero.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CliError {
    #[error("invalid url {url:?}: {why}")]
    InvalidUrl { url: String, why: String },
    #[error("relay {relay} unreachable: no relay connection within {secs} s")]
    RelayUnreachable { relay: String, secs: u64 },
    #[error("could not send to {peer}: {why}")]
    Send { peer: String, why: String },
    #[error("no acknowledgement from {peer} within {secs} s")]
    NoAck { peer: String, secs: u64 },
    #[error("cannot read {path}: {why}")]
    File { path: String, why: String },
    #[error("transport: {0}")]
    Transport(String),
    #[error("relay: {0}")]
    Relay(String),
    #[error("{lost} of {sent} messages lost")]
    Lost { lost: u64, sent: u64 },
    #[error(
        "peers that were alive reported: {unresponsive} unresponsive marks, {disconnects} disconnects"
    )]
    FalseReports {
        unresponsive: u64,
        disconnects: usize,
    },
    #[error("{0} must be at least 1")]
    Zero(&'static str),
}
