//! The whole Kitsune2 stack on this crate's transport: two nodes built by
//! `kitsune2::default_builder()` with `IrohTransportFactory` in place of
//! the incumbent transport, a home relay embedded in the test, peer
//! discovery through a bootstrap server on loopback and fast gossip. Ops
//! that node A stores locally must end up in node B's op store, unchanged,
//! by gossip alone (nothing is published).

use kitsune2_api::{
    BoxFut, Builder, Config, DhtArc, DynKitsune, DynSpace, DynSpaceHandler, K2Result,
    KitsuneHandler, LocalAgent, OpId, SpaceHandler, SpaceId, Timestamp, Url,
};
use kitsune2_core::Ed25519LocalAgent;
use kitsune2_core::factories::MemoryOp;
use kitsune2_core::factories::config::{CoreBootstrapConfig, CoreBootstrapModConfig};
use kitsune2_iroh::relay::EmbeddedRelay;
use kitsune2_iroh::{IrohTransportConfig, IrohTransportFactory, IrohTransportModConfig};
use kitsune2_test_utils::bootstrap::TestBootstrapSrv;
use kitsune2_test_utils::space::TEST_SPACE_ID;
use kitsune2_test_utils::{enable_tracing_with_default_level, random_bytes};
use std::fmt::Display;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::{Instant, sleep, timeout_at};

/// Longest wait for any one condition (own URL, peer discovery, sync).
const BOUND: Duration = Duration::from_secs(60);
/// Pause between two checks of a condition.
const POLL: Duration = Duration::from_millis(200);
/// Ops node A stores.
const OP_COUNT: usize = 20;
/// Payload size of each op; its first 32 bytes are the op id.
const OP_PAYLOAD_BYTES: u16 = 512;

/// Polls `check` every [`POLL`] until it returns `Ok`, for at most
/// [`BOUND`] in all (a check that hangs counts against the same bound).
/// Panics saying what was `expected` and the last state `check` reported.
async fn wait_until<T, S, F, Fut>(expected: &str, mut check: F) -> T
where
    S: Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, S>>,
{
    let deadline = Instant::now() + BOUND;
    let mut last = String::from("no check completed");
    loop {
        match timeout_at(deadline, check()).await {
            Ok(Ok(value)) => return value,
            Ok(Err(state)) => last = state.to_string(),
            Err(_) => break,
        }
        if Instant::now() + POLL >= deadline {
            break;
        }
        sleep(POLL).await;
    }
    panic!("expected {expected} within {BOUND:?}; last state: {last}");
}

/// A host that ignores notifications; gossip needs nothing more from it.
#[derive(Debug)]
struct Host;

impl KitsuneHandler for Host {
    fn create_space(
        &self,
        _space_id: SpaceId,
        _config_override: Option<&Config>,
    ) -> BoxFut<'_, K2Result<DynSpaceHandler>> {
        Box::pin(async {
            let handler: DynSpaceHandler = Arc::new(Self);
            Ok(handler)
        })
    }
}

impl SpaceHandler for Host {}

/// A node from the default builder with our transport, bound to loopback,
/// homed on `relay`, discovering peers through `bootstrap_url`.
async fn node(relay: &EmbeddedRelay, bootstrap_url: &str) -> DynKitsune {
    let builder = Builder {
        transport: IrohTransportFactory::create_bound(SocketAddr::from(([127, 0, 0, 1], 0))),
        ..kitsune2::default_builder()
    }
    .with_default_config()
    .unwrap();
    builder
        .config
        .set_module_config(&IrohTransportModConfig {
            iroh_transport: IrohTransportConfig {
                relay_url: Some(relay.url().to_string()),
                relay_allow_plain_text: true,
                ..Default::default()
            },
        })
        .unwrap();
    builder
        .config
        .set_module_config(&CoreBootstrapModConfig {
            core_bootstrap: CoreBootstrapConfig {
                server_url: Some(bootstrap_url.to_owned()),
                backoff_min_ms: 500,
                backoff_max_ms: 500,
                ..Default::default()
            },
        })
        .unwrap();
    // Gossip every second instead of every two minutes (the module's
    // defaults), and accept rounds that often from a peer.
    builder
        .config
        .set_module_config(&serde_json::json!({
            "k2Gossip": {
                "initiateIntervalMs": 1000,
                "initiateJitterMs": 100,
                "minInitiateIntervalMs": 100,
                "roundTimeoutMs": 10_000,
            }
        }))
        .unwrap();
    let kitsune = builder.build().await.unwrap();
    kitsune.register_handler(Arc::new(Host)).await.unwrap();
    kitsune
}

/// Opens the test space on `kitsune` and joins one agent claiming the
/// whole DHT, so that it gossips every op.
async fn join(kitsune: &DynKitsune) -> (DynSpace, Arc<Ed25519LocalAgent>) {
    let space = kitsune.space(TEST_SPACE_ID, None).await.unwrap();
    let agent = Arc::new(Ed25519LocalAgent::default());
    agent.set_tgt_storage_arc_hint(DhtArc::FULL);
    space.local_agent_join(agent.clone()).await.unwrap();
    (space, agent)
}

/// Waits until `space` has a URL on the relay and returns it.
async fn own_url(space: &DynSpace, name: &str) -> Url {
    wait_until(&format!("node {name} to get a peer URL"), || async {
        space.current_url().ok_or("no URL yet")
    })
    .await
}

/// Waits until `space`'s peer store holds `agent`'s info with `url`.
async fn knows(space: &DynSpace, name: &str, agent: &Ed25519LocalAgent, url: &Url) {
    wait_until(
        &format!("node {name} to learn agent {} at {url}", agent.agent()),
        || async {
            match space.peer_store().get(agent.agent().clone()).await {
                Ok(Some(info)) if info.url.as_ref() == Some(url) => Ok(()),
                Ok(Some(info)) => Err(format!("known at {:?}", info.url)),
                Ok(None) => Err("unknown".to_owned()),
                Err(e) => Err(format!("peer store error: {e}")),
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_builder_nodes_sync_ops_by_gossip() {
    enable_tracing_with_default_level(tracing::Level::WARN);
    let relay = EmbeddedRelay::start().await.unwrap();
    let bootstrap = TestBootstrapSrv::new(false).await;

    let kitsune_a = node(&relay, bootstrap.addr()).await;
    let kitsune_b = node(&relay, bootstrap.addr()).await;
    let (space_a, agent_a) = join(&kitsune_a).await;
    let (space_b, agent_b) = join(&kitsune_b).await;
    let url_a = own_url(&space_a, "A").await;
    let url_b = own_url(&space_b, "B").await;
    assert_ne!(url_a, url_b, "the two nodes must have distinct peer URLs");

    // Through the bootstrap server each node learns the other's agent,
    // signed and at the URL our transport gave it.
    knows(&space_a, "A", &agent_b, &url_b).await;
    knows(&space_b, "B", &agent_a, &url_a).await;

    let ops: Vec<MemoryOp> = (0..OP_COUNT)
        .map(|_| MemoryOp::new(Timestamp::now(), random_bytes(OP_PAYLOAD_BYTES)))
        .collect();
    let op_ids: Vec<OpId> = ops.iter().map(MemoryOp::compute_op_id).collect();
    let stored = space_a
        .op_store()
        .process_incoming_ops(ops.iter().cloned().map(Into::into).collect())
        .await
        .unwrap();
    assert_eq!(stored.len(), OP_COUNT, "node A must store all its ops");

    let received = wait_until(
        &format!("node B to hold all {OP_COUNT} ops of node A through gossip"),
        || async {
            let held = space_b
                .op_store()
                .retrieve_ops(op_ids.clone())
                .await
                .map_err(|e| format!("op store error: {e}"))?;
            if held.len() == OP_COUNT {
                Ok(held)
            } else {
                Err(format!("node B holds {}/{OP_COUNT}", held.len()))
            }
        },
    )
    .await;

    for (op_id, op) in op_ids.iter().zip(&ops) {
        let held = received
            .iter()
            .find(|held| &held.op_id == op_id)
            .unwrap_or_else(|| panic!("node B returned no op with id {op_id}"));
        assert_eq!(
            &MemoryOp::from(held.op_data.clone()),
            op,
            "node B must hold op {op_id} exactly as node A stored it"
        );
    }

    // Release the spaces first: a space outlives `close` while held, and its
    // gossip would keep retrying on the closed transport.
    drop((space_a, space_b));
    kitsune_a.close().await;
    kitsune_b.close().await;
    drop(bootstrap);
    relay.shutdown().await.unwrap();
}
