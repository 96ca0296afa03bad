//! One kitsune2 transport on iroh, as the commands use it: send a message
//! and get its acknowledgement, receive messages, echo acknowledgements.
//!
//! Messages travel as kitsune2 module messages (module `k2iroh`). A message
//! is `0 | seq (u64 BE) | payload`; its acknowledgement is `1 | seq`.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kitsune2_api::{
    BoxFut, DynTransport, K2Result, SpaceId, Timestamp, Transport, TxBaseHandler, TxHandler,
    TxModuleHandler, TxSpaceHandler, Url,
};
use kitsune2_iroh::{IrohTransportConfig, RelayUrl, create_transport};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::error::CliError;

const MODULE: &str = "k2iroh";
const DATA: u8 = 0;
const ACK: u8 = 1;

/// How long a node waits for its relay to give it a URL.
pub(crate) const RELAY_TIMEOUT: Duration = Duration::from_secs(10);

fn space() -> SpaceId {
    SpaceId::from(Bytes::from_static(b"k2iroh-cli-space-0000000000000000"))
}

/// A received message.
#[derive(Debug)]
pub(crate) struct Received {
    pub(crate) from: Url,
    pub(crate) payload: Bytes,
}

#[derive(Debug)]
struct Handler {
    url: watch::Sender<Option<Url>>,
    inbox: mpsc::UnboundedSender<Received>,
    pending: Mutex<HashMap<u64, oneshot::Sender<()>>>,
    transport: OnceLock<Weak<dyn Transport>>,
    /// Peers the transport reported disconnected.
    disconnected: Mutex<HashSet<Url>>,
    /// How many times the transport marked a peer unresponsive.
    unresponsive: AtomicU64,
}

impl TxBaseHandler for Handler {
    fn new_listening_address(&self, this_url: Url) -> BoxFut<'static, ()> {
        self.url.send_replace(Some(this_url));
        Box::pin(async {})
    }

    // Called once per registration (transport, space, module): a set.
    fn peer_disconnect(&self, peer: Url, reason: Option<String>) {
        tracing::debug!(%peer, ?reason, "peer disconnected");
        self.disconnected.lock().expect("poisoned").insert(peer);
    }
}

impl TxHandler for Handler {}

impl TxSpaceHandler for Handler {
    fn is_any_agent_at_url_blocked(&self, _peer_url: &Url) -> K2Result<bool> {
        Ok(false)
    }

    fn set_unresponsive(&self, peer: Url, _when: Timestamp) -> BoxFut<'_, K2Result<()>> {
        tracing::debug!(%peer, "peer marked unresponsive");
        self.unresponsive.fetch_add(1, Ordering::Relaxed);
        Box::pin(async { Ok(()) })
    }
}

impl TxModuleHandler for Handler {
    fn recv_module_msg(
        &self,
        peer: Url,
        _space: SpaceId,
        _module: String,
        data: Bytes,
    ) -> K2Result<()> {
        if data.len() < 9 {
            tracing::warn!(%peer, len = data.len(), "short message ignored");
            return Ok(());
        }
        let seq = u64::from_be_bytes(data[1..9].try_into().expect("8 bytes"));
        match data[0] {
            DATA => {
                let _ = self.inbox.send(Received {
                    from: peer.clone(),
                    payload: data.slice(9..),
                });
                if let Some(tx) = self.transport.get().and_then(Weak::upgrade) {
                    let mut ack = BytesMut::with_capacity(9);
                    ack.put_u8(ACK);
                    ack.put_u64(seq);
                    tokio::spawn(async move {
                        if let Err(e) = tx
                            .send_module(peer.clone(), space(), MODULE.to_owned(), ack.freeze())
                            .await
                        {
                            tracing::warn!(%peer, %e, "acknowledgement not sent");
                        }
                    });
                }
            }
            ACK => {
                if let Some(done) = self.pending.lock().expect("poisoned").remove(&seq) {
                    let _ = done.send(());
                }
            }
            other => tracing::warn!(%peer, kind = other, "unknown message kind ignored"),
        }
        Ok(())
    }
}

/// A started node.
#[derive(Debug)]
pub(crate) struct Node {
    transport: DynTransport,
    handler: Arc<Handler>,
    url: Url,
    seq: AtomicU64,
    inbox: Mutex<Option<mpsc::UnboundedReceiver<Received>>>,
}

/// A message sent and waiting for its acknowledgement.
#[derive(Debug)]
pub(crate) struct InFlight {
    pub(crate) sent_at: Instant,
    ack: oneshot::Receiver<()>,
}

impl InFlight {
    /// Waits for the acknowledgement until `deadline`; returns the round trip.
    pub(crate) async fn acked(self, deadline: Instant) -> Option<Duration> {
        match tokio::time::timeout_at(deadline, self.ack).await {
            Ok(Ok(())) => Some(self.sent_at.elapsed()),
            _ => None,
        }
    }
}

impl Node {
    /// Binds an endpoint homed on `relay` and waits until the relay gave it
    /// a peer URL.
    pub(crate) async fn start(relay: &RelayUrl) -> Result<Self, CliError> {
        let (inbox_tx, inbox_rx) = mpsc::unbounded_channel();
        let handler = Arc::new(Handler {
            url: watch::Sender::new(None),
            inbox: inbox_tx,
            pending: Mutex::new(HashMap::new()),
            transport: OnceLock::new(),
            disconnected: Mutex::new(HashSet::new()),
            unresponsive: AtomicU64::new(0),
        });
        let mut url_rx = handler.url.subscribe();
        let config = IrohTransportConfig {
            relay_url: Some(relay.to_string()),
            relay_allow_plain_text: true,
            ..IrohTransportConfig::default()
        };
        let transport = create_transport(
            &config,
            Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            None,
            handler.clone(),
        )
        .await
        .map_err(|e| CliError::Transport(e.to_string()))?;
        let _ = handler.transport.set(Arc::downgrade(&transport));
        transport.register_space_handler(space(), handler.clone());
        transport.register_module_handler(space(), MODULE.to_owned(), handler.clone());
        // Copy the URL out at once: the watch guard must not live across an
        // await.
        let url = match tokio::time::timeout(RELAY_TIMEOUT, url_rx.wait_for(Option::is_some)).await
        {
            Ok(Ok(url)) => url.clone(),
            _ => None,
        };
        let Some(url) = url else {
            transport.close().await;
            return Err(CliError::RelayUnreachable {
                relay: relay.to_string(),
                secs: RELAY_TIMEOUT.as_secs(),
            });
        };
        Ok(Self {
            transport,
            handler,
            url,
            seq: AtomicU64::new(0),
            inbox: Mutex::new(Some(inbox_rx)),
        })
    }

    /// This node's peer URL.
    pub(crate) fn url(&self) -> &Url {
        &self.url
    }

    /// Takes the stream of received messages (once).
    pub(crate) fn take_inbox(&self) -> mpsc::UnboundedReceiver<Received> {
        self.inbox
            .lock()
            .expect("poisoned")
            .take()
            .expect("inbox taken once")
    }

    /// Sends `payload` to `peer`; the result resolves on its acknowledgement.
    pub(crate) async fn send(&self, peer: &Url, payload: &[u8]) -> Result<InFlight, CliError> {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let (done, ack) = oneshot::channel();
        self.handler
            .pending
            .lock()
            .expect("poisoned")
            .insert(seq, done);
        let mut msg = BytesMut::with_capacity(9 + payload.len());
        msg.put_u8(DATA);
        msg.put_u64(seq);
        msg.put_slice(payload);
        let sent_at = Instant::now();
        if let Err(e) = self
            .transport
            .send_module(peer.clone(), space(), MODULE.to_owned(), msg.freeze())
            .await
        {
            self.handler.pending.lock().expect("poisoned").remove(&seq);
            return Err(CliError::Send {
                peer: peer.to_string(),
                why: e.to_string(),
            });
        }
        Ok(InFlight { sent_at, ack })
    }

    /// Sends and waits for the acknowledgement: the round-trip time.
    pub(crate) async fn request(
        &self,
        peer: &Url,
        payload: &[u8],
        limit: Duration,
    ) -> Result<Duration, CliError> {
        let in_flight = self.send(peer, payload).await?;
        in_flight
            .acked(Instant::now() + limit)
            .await
            .ok_or_else(|| CliError::NoAck {
                peer: peer.to_string(),
                secs: limit.as_secs(),
            })
    }

    /// Whether each connection is direct, by peer public key.
    pub(crate) async fn direct_paths(&self) -> Vec<(String, bool)> {
        match self.transport.dump_network_stats().await {
            Ok(s) => s
                .transport_stats
                .connections
                .iter()
                .map(|c| (c.pub_key.clone(), c.is_direct))
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    /// What the transport reported of its peers so far: how many times it
    /// marked one unresponsive, and how many it reported disconnected.
    pub(crate) fn fault_reports(&self) -> (u64, usize) {
        (
            self.handler.unresponsive.load(Ordering::Relaxed),
            self.handler.disconnected.lock().expect("poisoned").len(),
        )
    }

    /// Closes the transport gracefully.
    pub(crate) async fn close(&self) {
        self.transport.close().await;
    }
}

/// Parses a peer URL given on the command line.
pub(crate) fn parse_peer_url(s: &str) -> Result<Url, CliError> {
    let url = Url::from_str(s).map_err(|e| CliError::InvalidUrl {
        url: s.to_owned(),
        why: e.to_string(),
    })?;
    kitsune2_iroh_core::PeerAddr::parse(&url).map_err(|e| CliError::InvalidUrl {
        url: s.to_owned(),
        why: e.to_string(),
    })?;
    Ok(url)
}

/// Parses a relay URL given on the command line.
pub(crate) fn parse_relay_url(s: &str) -> Result<RelayUrl, CliError> {
    s.parse::<RelayUrl>().map_err(|e| CliError::InvalidUrl {
        url: s.to_owned(),
        why: e.to_string(),
    })
}
