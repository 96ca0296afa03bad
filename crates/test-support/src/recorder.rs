//! [`Recorder`]: a kitsune2 transport handler that records everything
//! kitsune2 tells a node, and [`SpaceSide`], its face as a space and module
//! handler.
//!
//! Every event goes two ways, for the two styles of assertion the suites
//! use: into a log ([`Events`], read with [`Recorder::events`]: "what has
//! happened so far", the core's scenario tests on paused time) and onto a
//! channel ([`Taps`]: "wait for the next one", the tests over real
//! networks). A channel whose receiver was dropped costs nothing.
//! Message payloads go onto the channels only.

use bytes::Bytes;
use kitsune2_api::{
    BoxFut, K2Error, K2Result, SpaceId, Timestamp, TxBaseHandler, TxHandler, TxModuleHandler,
    TxSpaceHandler, Url,
};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use tokio::sync::{mpsc, watch};

/// What kitsune2 told a node so far, in order of arrival per kind.
#[derive(Debug, Default)]
pub struct Events {
    /// Listening addresses the transport handler heard.
    pub listening: Vec<Url>,
    /// Listening addresses a space's handler heard.
    pub space_listening: Vec<Url>,
    /// Peers reported connected.
    pub connects: Vec<Url>,
    /// Peers reported disconnected, with the reason.
    pub disconnects: Vec<(Url, Option<String>)>,
    /// Peers marked unresponsive.
    pub unresponsive: Vec<Url>,
    /// Incoming preflights handed to validation: the peer's URL and data.
    pub preflights: Vec<(Url, Bytes)>,
}

/// The receiving ends of a [`Recorder`]'s channels, one per kind of event.
#[derive(Debug)]
pub struct Taps {
    /// The latest listening address of the transport handler.
    pub url: watch::Receiver<Option<Url>>,
    /// Space notifies: sender, data.
    pub notifies: mpsc::UnboundedReceiver<(Url, Bytes)>,
    /// Module messages: sender, module, data.
    pub module_msgs: mpsc::UnboundedReceiver<(Url, String, Bytes)>,
    /// Peers reported connected.
    pub connects: mpsc::UnboundedReceiver<Url>,
    /// Peers reported disconnected, with the reason.
    pub disconnects: mpsc::UnboundedReceiver<(Url, Option<String>)>,
    /// Peers marked unresponsive.
    pub unresponsive: mpsc::UnboundedReceiver<Url>,
    /// The URL of each incoming preflight handed to validation.
    pub preflights: mpsc::UnboundedReceiver<Url>,
}

/// The sending ends of the [`Taps`].
#[derive(Debug)]
struct Senders {
    url: watch::Sender<Option<Url>>,
    notifies: mpsc::UnboundedSender<(Url, Bytes)>,
    module_msgs: mpsc::UnboundedSender<(Url, String, Bytes)>,
    connects: mpsc::UnboundedSender<Url>,
    disconnects: mpsc::UnboundedSender<(Url, Option<String>)>,
    unresponsive: mpsc::UnboundedSender<Url>,
    preflights: mpsc::UnboundedSender<Url>,
}

/// Records what kitsune2 tells a node.
///
/// # Usage
///
/// [`Recorder::new`], give the recorder to the transport as its handler,
/// and register [`Recorder::space_side`] as handler of each space (and
/// module) whose messages the test looks at. The space side forwards the
/// space's events here but leaves `peer_connect` and `peer_disconnect`,
/// which kitsune2 calls on every handler, to the recorder itself, so each
/// is recorded once.
///
/// # Invariants
///
/// - Each event is in the log before it is on its channel.
/// - The recorder holds no reference to a transport: dropping every
///   transport it was given to leaves the caller's `Arc` the only one.
#[derive(Debug)]
pub struct Recorder {
    events: Mutex<Events>,
    senders: Senders,
    /// When set, every incoming preflight is rejected.
    pub reject_preflights: AtomicBool,
    /// When set, every space reports no local agents.
    pub no_local_agents: AtomicBool,
    /// When set, the space and module handlers fail on every message
    /// (after recording it), as a failing kitsune2 module does.
    pub fail_messages: AtomicBool,
    /// How long judging an incoming preflight takes, in milliseconds (of
    /// tokio's clock): a busy node. 0 by default.
    pub validate_delay_ms: AtomicU64,
    /// The preflight data this node sends; empty until set.
    preflight: Mutex<Bytes>,
}

impl Recorder {
    /// A recorder with empty logs, and the receiving ends of its channels.
    pub fn new() -> (Arc<Self>, Taps) {
        let (url, url_rx) = watch::channel(None);
        let (notifies, notifies_rx) = mpsc::unbounded_channel();
        let (module_msgs, module_msgs_rx) = mpsc::unbounded_channel();
        let (connects, connects_rx) = mpsc::unbounded_channel();
        let (disconnects, disconnects_rx) = mpsc::unbounded_channel();
        let (unresponsive, unresponsive_rx) = mpsc::unbounded_channel();
        let (preflights, preflights_rx) = mpsc::unbounded_channel();
        let recorder = Arc::new(Self {
            events: Mutex::default(),
            senders: Senders {
                url,
                notifies,
                module_msgs,
                connects,
                disconnects,
                unresponsive,
                preflights,
            },
            reject_preflights: AtomicBool::new(false),
            no_local_agents: AtomicBool::new(false),
            fail_messages: AtomicBool::new(false),
            validate_delay_ms: AtomicU64::new(0),
            preflight: Mutex::default(),
        });
        let taps = Taps {
            url: url_rx,
            notifies: notifies_rx,
            module_msgs: module_msgs_rx,
            connects: connects_rx,
            disconnects: disconnects_rx,
            unresponsive: unresponsive_rx,
            preflights: preflights_rx,
        };
        (recorder, taps)
    }

    /// What a message handler returns: an error while `fail_messages`.
    fn message_result(&self) -> K2Result<()> {
        if self.fail_messages.load(Ordering::SeqCst) {
            Err(K2Error::other("message handler failed (test)"))
        } else {
            Ok(())
        }
    }

    /// The log so far. Do not hold the guard across an await.
    pub fn events(&self) -> MutexGuard<'_, Events> {
        self.events.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends `data` as this node's preflight from now on.
    pub fn set_preflight(&self, data: Bytes) {
        *self
            .preflight
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = data;
    }

    /// Sends `len` zero bytes as this node's preflight from now on.
    pub fn set_preflight_len(&self, len: usize) {
        self.set_preflight(Bytes::from(vec![0; len]));
    }

    /// The handler to register for `space` (as space handler, module
    /// handler or both): it forwards that space's events here and asserts
    /// that kitsune2 hands it no other space's messages.
    pub fn space_side(self: &Arc<Self>, space: SpaceId) -> Arc<SpaceSide> {
        Arc::new(SpaceSide {
            recorder: self.clone(),
            space,
        })
    }
}

impl TxBaseHandler for Recorder {
    fn new_listening_address(&self, this_url: Url) -> BoxFut<'static, ()> {
        self.events().listening.push(this_url.clone());
        self.senders.url.send_replace(Some(this_url));
        Box::pin(async {})
    }

    fn peer_connect(&self, peer: Url) -> K2Result<()> {
        self.events().connects.push(peer.clone());
        let _ = self.senders.connects.send(peer);
        Ok(())
    }

    fn peer_disconnect(&self, peer: Url, reason: Option<String>) {
        self.events()
            .disconnects
            .push((peer.clone(), reason.clone()));
        let _ = self.senders.disconnects.send((peer, reason));
    }
}

impl TxHandler for Recorder {
    fn preflight_gather_outgoing(&self, _peer_url: Url) -> BoxFut<'_, K2Result<Bytes>> {
        let data = self
            .preflight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        Box::pin(async move { Ok(data) })
    }

    fn preflight_validate_incoming(&self, peer_url: Url, data: Bytes) -> BoxFut<'_, K2Result<()>> {
        self.events().preflights.push((peer_url.clone(), data));
        let _ = self.senders.preflights.send(peer_url);
        let reject = self.reject_preflights.load(Ordering::SeqCst);
        let delay = self.validate_delay_ms.load(Ordering::SeqCst);
        Box::pin(async move {
            if delay > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
            }
            if reject {
                Err(K2Error::other("preflight rejected by test"))
            } else {
                Ok(())
            }
        })
    }
}

/// One space's (and its modules') handler: forwards to the [`Recorder`].
///
/// # Invariants
///
/// Messages of any other space than its own fail an assertion (in the
/// transport's task that delivers them, so the test sees nothing arrive).
#[derive(Debug)]
pub struct SpaceSide {
    recorder: Arc<Recorder>,
    space: SpaceId,
}

impl SpaceSide {
    fn check_space(&self, space: &SpaceId) {
        assert_eq!(
            *space, self.space,
            "kitsune2 handed a message of another space to this space's handler"
        );
    }
}

impl TxBaseHandler for SpaceSide {
    fn new_listening_address(&self, this_url: Url) -> BoxFut<'static, ()> {
        self.recorder.events().space_listening.push(this_url);
        Box::pin(async {})
    }
}

impl TxSpaceHandler for SpaceSide {
    fn recv_space_notify(&self, peer: Url, space: SpaceId, data: Bytes) -> K2Result<()> {
        self.check_space(&space);
        let _ = self.recorder.senders.notifies.send((peer, data));
        self.recorder.message_result()
    }

    fn set_unresponsive(&self, peer: Url, _when: Timestamp) -> BoxFut<'_, K2Result<()>> {
        self.recorder.events().unresponsive.push(peer.clone());
        let _ = self.recorder.senders.unresponsive.send(peer);
        Box::pin(async { Ok(()) })
    }

    fn is_any_agent_at_url_blocked(&self, _peer_url: &Url) -> K2Result<bool> {
        Ok(false)
    }

    fn has_local_agents(&self) -> BoxFut<'_, K2Result<bool>> {
        let none = self.recorder.no_local_agents.load(Ordering::SeqCst);
        Box::pin(async move { Ok(!none) })
    }
}

impl TxModuleHandler for SpaceSide {
    fn recv_module_msg(
        &self,
        peer: Url,
        space: SpaceId,
        module: String,
        data: Bytes,
    ) -> K2Result<()> {
        self.check_space(&space);
        let _ = self.recorder.senders.module_msgs.send((peer, module, data));
        self.recorder.message_result()
    }
}
