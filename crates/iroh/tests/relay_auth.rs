//! Relay authentication: transports with `auth_material_relay` get a token
//! from kitsune2's bootstrap server and talk through its authenticated
//! relay; wrong material fails with a typed error. All on loopback.

use bytes::Bytes;
use kitsune2_api::{
    Builder, DynTransport, K2Result, SpaceId, TxBaseHandler, TxHandler, TxSpaceHandler, Url,
};
use kitsune2_bootstrap_srv::{AuthConfig, BootstrapSrv, Config};
use kitsune2_iroh::{IrohTransportConfig, IrohTransportFactory, IrohTransportModConfig};
use kitsune2_test_utils::auth::AuthHookServer;
use kitsune2_test_utils::space::TEST_SPACE_ID;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::timeout;

const BOUND: Duration = Duration::from_secs(30);
const MATERIAL: &[u8] = b"kitsune2-iroh-test-auth-material";

#[derive(Debug)]
struct Handler {
    url: watch::Sender<Option<Url>>,
    received: mpsc::UnboundedSender<Bytes>,
}

impl TxBaseHandler for Handler {
    fn new_listening_address(&self, this_url: Url) -> kitsune2_api::BoxFut<'static, ()> {
        self.url.send_replace(Some(this_url));
        Box::pin(async {})
    }
}

impl TxHandler for Handler {}

impl TxSpaceHandler for Handler {
    fn recv_space_notify(&self, _peer: Url, _space: SpaceId, data: Bytes) -> K2Result<()> {
        let _ = self.received.send(data);
        Ok(())
    }

    fn is_any_agent_at_url_blocked(&self, _peer_url: &Url) -> K2Result<bool> {
        Ok(false)
    }
}

async fn auth_servers() -> (AuthHookServer, BootstrapSrv, String) {
    let hook = AuthHookServer::spawn(Some(MATERIAL.to_vec()));
    let hook_url = hook.url();
    // BootstrapSrv runs its own runtime; start it off this one.
    let srv = tokio::task::spawn_blocking(move || {
        BootstrapSrv::new(Config {
            auth: AuthConfig {
                authentication_hook_server: Some(hook_url),
                ..Default::default()
            },
            ..Config::testing()
        })
    })
    .await
    .unwrap()
    .unwrap();
    let relay_url = format!("http://{}/relay", srv.listen_addrs()[0]);
    (hook, srv, relay_url)
}

async fn create(
    relay_url: &str,
    material: &[u8],
) -> (
    K2Result<DynTransport>,
    Arc<Handler>,
    watch::Receiver<Option<Url>>,
    mpsc::UnboundedReceiver<Bytes>,
) {
    let mut builder = Builder {
        transport: IrohTransportFactory::create_bound(SocketAddr::from(([127, 0, 0, 1], 0))),
        ..kitsune2_core::default_test_builder()
    }
    .with_default_config()
    .unwrap();
    builder.auth_material_relay = Some(material.to_vec());
    builder
        .config
        .set_module_config(&IrohTransportModConfig {
            iroh_transport: IrohTransportConfig {
                relay_url: Some(relay_url.to_owned()),
                relay_allow_plain_text: true,
                ..Default::default()
            },
        })
        .unwrap();
    let builder = Arc::new(builder);
    let (url_tx, url_rx) = watch::channel(None);
    let (received_tx, received) = mpsc::unbounded_channel();
    let handler = Arc::new(Handler {
        url: url_tx,
        received: received_tx,
    });
    let transport = timeout(
        BOUND,
        builder.transport.create(builder.clone(), handler.clone()),
    )
    .await
    .expect("create timed out");
    (transport, handler, url_rx, received)
}

async fn url_of(mut rx: watch::Receiver<Option<Url>>) -> Url {
    timeout(BOUND, rx.wait_for(Option::is_some))
        .await
        .expect("no listening address in time")
        .unwrap()
        .clone()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authenticated_relay_carries_messages() {
    let (_hook, _srv, relay_url) = auth_servers().await;
    let (a, a_handler, a_url, _) = create(&relay_url, MATERIAL).await;
    let a = a.unwrap();
    a.register_space_handler(TEST_SPACE_ID, a_handler);
    let (b, b_handler, b_url, mut b_received) = create(&relay_url, MATERIAL).await;
    let b = b.unwrap();
    b.register_space_handler(TEST_SPACE_ID, b_handler);
    let a_url = url_of(a_url).await;
    let b_url = url_of(b_url).await;
    assert!(
        a_url.as_str().starts_with(&format!("{relay_url}/")),
        "{a_url}"
    );

    timeout(
        BOUND,
        a.send_space_notify(b_url, TEST_SPACE_ID, Bytes::from_static(b"authed")),
    )
    .await
    .unwrap()
    .unwrap();
    let got = timeout(BOUND, b_received.recv()).await.unwrap().unwrap();
    assert_eq!(got, Bytes::from_static(b"authed"));

    timeout(BOUND, async {
        a.close().await;
        b.close().await;
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_auth_material_fails_create() {
    let (_hook, _srv, relay_url) = auth_servers().await;
    let (res, _, _, _) = create(&relay_url, b"not-the-material").await;
    let Err(err) = res else {
        panic!("create succeeded with wrong material");
    };
    assert!(
        err.to_string().contains("relay authentication failed"),
        "{err}"
    );
}
