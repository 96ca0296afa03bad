//! [`MockTxHandler`]: kitsune2's transport handlers as closures.

use bytes::Bytes;
use kitsune2_api::{
    BoxFut, K2Result, SpaceId, Timestamp, TxBaseHandler, TxHandler, TxModuleHandler,
    TxSpaceHandler, Url,
};
use std::sync::{Arc, Mutex, PoisonError};

/// The URL a [`MockTxHandler`] holds in `current_url` until the transport
/// reports one: `http://url.not.set:0/0`, as in the incumbent's test utils.
pub fn dummy_url() -> Url {
    // INVARIANT: a constant URL with a host, a port and a last path
    // segment, which kitsune2 accepts.
    Url::from_str("http://url.not.set:0/0").expect("the dummy URL is a valid kitsune2 URL")
}

/// Every method of kitsune2's transport handler traits (`TxBaseHandler`,
/// `TxHandler`, `TxSpaceHandler`, `TxModuleHandler`) as a closure; a drop-in
/// for `kitsune2_transport_iroh::test_utils::MockTxHandler` (same fields,
/// same defaults).
///
/// # Usage
///
/// Replace the closures a test observes and take the rest from
/// [`Default`]:
///
/// ```
/// # use kitsune2_iroh::test_utils::MockTxHandler;
/// # use std::sync::Arc;
/// let handler = Arc::new(MockTxHandler {
///     peer_connect: Arc::new(|peer| {
///         println!("connected to {peer}");
///         Ok(())
///     }),
///     ..MockTxHandler::default()
/// });
/// ```
///
/// Give it to `build_transport` as transport handler and, for space and
/// module messages, register it as space or module handler too.
///
/// # Invariants
///
/// `new_listening_address` stores the URL in `current_url`, then calls its
/// closure, so a test that heard of the URL from the closure finds it in
/// `current_url` (the incumbent's calls the closure first).
pub struct MockTxHandler {
    /// `TxBaseHandler::new_listening_address`. Default: does nothing.
    pub new_listening_address: Arc<dyn Fn(Url) + 'static + Send + Sync>,
    /// `TxBaseHandler::peer_connect`. Default: `Ok(())`.
    pub peer_connect: Arc<dyn Fn(Url) -> K2Result<()> + 'static + Send + Sync>,
    /// `TxBaseHandler::peer_disconnect`. Default: does nothing.
    pub peer_disconnect: Arc<dyn Fn(Url, Option<String>) + 'static + Send + Sync>,
    /// `TxHandler::preflight_gather_outgoing`. Default: `Ok` with no bytes.
    pub preflight_gather_outgoing: Arc<dyn Fn(Url) -> K2Result<Bytes> + 'static + Send + Sync>,
    /// `TxHandler::preflight_validate_incoming`. Default: `Ok(())`.
    pub preflight_validate_incoming:
        Arc<dyn Fn(Url, Bytes) -> K2Result<()> + 'static + Send + Sync>,
    /// `TxSpaceHandler::recv_space_notify`. Default: `Ok(())`.
    pub recv_space_notify: Arc<dyn Fn(Url, SpaceId, Bytes) -> K2Result<()> + 'static + Send + Sync>,
    /// `TxModuleHandler::recv_module_msg`. Default: `Ok(())`.
    #[allow(clippy::type_complexity)]
    // reason: the incumbent's field type, kept for drop-in use
    pub recv_module_msg:
        Arc<dyn Fn(Url, SpaceId, String, Bytes) -> K2Result<()> + 'static + Send + Sync>,
    /// `TxSpaceHandler::set_unresponsive`. Default: `Ok(())`.
    pub set_unresponsive: Arc<dyn Fn(Url, Timestamp) -> K2Result<()> + 'static + Send + Sync>,
    /// `TxSpaceHandler::is_any_agent_at_url_blocked`. Default: `Ok(false)`.
    #[allow(clippy::type_complexity)]
    // reason: the incumbent's field type, kept for drop-in use
    pub is_any_agent_at_url_blocked: Arc<dyn Fn(&Url) -> K2Result<bool> + 'static + Send + Sync>,
    /// `TxSpaceHandler::has_local_agents`. Default: `Ok(true)`.
    pub has_local_agents: Arc<dyn Fn() -> K2Result<bool> + 'static + Send + Sync>,
    /// The last URL `new_listening_address` reported. Default:
    /// [`dummy_url`].
    pub current_url: Arc<Mutex<Url>>,
}

impl std::fmt::Debug for MockTxHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockTxHandler")
            .field("current_url", &self.current_url)
            .finish_non_exhaustive()
    }
}

impl Default for MockTxHandler {
    fn default() -> Self {
        Self {
            new_listening_address: Arc::new(|_| {}),
            peer_connect: Arc::new(|_| Ok(())),
            peer_disconnect: Arc::new(|_, _| {}),
            preflight_gather_outgoing: Arc::new(|_| Ok(Bytes::new())),
            preflight_validate_incoming: Arc::new(|_, _| Ok(())),
            recv_space_notify: Arc::new(|_, _, _| Ok(())),
            recv_module_msg: Arc::new(|_, _, _, _| Ok(())),
            set_unresponsive: Arc::new(|_, _| Ok(())),
            is_any_agent_at_url_blocked: Arc::new(|_| Ok(false)),
            has_local_agents: Arc::new(|| Ok(true)),
            current_url: Arc::new(Mutex::new(dummy_url())),
        }
    }
}

impl TxBaseHandler for MockTxHandler {
    fn new_listening_address(&self, this_url: Url) -> BoxFut<'static, ()> {
        *self
            .current_url
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = this_url.clone();
        (self.new_listening_address)(this_url);
        Box::pin(async {})
    }

    fn peer_connect(&self, peer: Url) -> K2Result<()> {
        (self.peer_connect)(peer)
    }

    fn peer_disconnect(&self, peer: Url, reason: Option<String>) {
        (self.peer_disconnect)(peer, reason);
    }
}

impl TxHandler for MockTxHandler {
    fn preflight_gather_outgoing(&self, peer_url: Url) -> BoxFut<'_, K2Result<Bytes>> {
        Box::pin(async move { (self.preflight_gather_outgoing)(peer_url) })
    }

    fn preflight_validate_incoming(&self, peer_url: Url, data: Bytes) -> BoxFut<'_, K2Result<()>> {
        Box::pin(async move { (self.preflight_validate_incoming)(peer_url, data) })
    }
}

impl TxSpaceHandler for MockTxHandler {
    fn recv_space_notify(&self, peer: Url, space_id: SpaceId, data: Bytes) -> K2Result<()> {
        (self.recv_space_notify)(peer, space_id, data)
    }

    fn set_unresponsive(&self, peer: Url, when: Timestamp) -> BoxFut<'_, K2Result<()>> {
        Box::pin(async move { (self.set_unresponsive)(peer, when) })
    }

    fn is_any_agent_at_url_blocked(&self, peer_url: &Url) -> K2Result<bool> {
        (self.is_any_agent_at_url_blocked)(peer_url)
    }

    fn has_local_agents(&self) -> BoxFut<'_, K2Result<bool>> {
        Box::pin(async move { (self.has_local_agents)() })
    }
}

impl TxModuleHandler for MockTxHandler {
    fn recv_module_msg(
        &self,
        peer: Url,
        space_id: SpaceId,
        module: String,
        data: Bytes,
    ) -> K2Result<()> {
        (self.recv_module_msg)(peer, space_id, module, data)
    }
}
