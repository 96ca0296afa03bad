//! Relay authentication: transports with `auth_material_relay` get a token
//! from kitsune2's bootstrap server and talk through its authenticated
//! relay; wrong material fails with a typed error. All on loopback.

use kitsune2_bootstrap_srv::{AuthConfig, BootstrapSrv, Config};
use kitsune2_iroh_test_support::prelude::*;
use kitsune2_test_utils::auth::AuthHookServer;

const MATERIAL: &[u8] = b"kitsune2-iroh-test-auth-material";

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

/// A node on this crate homed on `relay_url`, with `material` as
/// `auth_material_relay`; the error of `create` if it fails.
async fn create(relay_url: &str, material: &[u8]) -> K2Result<Node> {
    let mut builder = builder_for(ours(), relay_url, true, true);
    builder.auth_material_relay = Some(material.to_vec());
    timeout(BOUND, try_node(Arc::new(builder)))
        .await
        .expect("create timed out")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authenticated_relay_carries_messages() {
    let (_hook, _srv, relay_url) = auth_servers().await;
    let a = create(&relay_url, MATERIAL).await.unwrap();
    let mut b = create(&relay_url, MATERIAL).await.unwrap();
    let (a_url, b_url) = (a.url.clone(), b.url.clone());
    assert!(
        a_url.as_str().starts_with(&format!("{relay_url}/")),
        "{a_url}"
    );

    timeout(
        BOUND,
        a.transport
            .send_space_notify(b_url, TEST_SPACE_ID, Bytes::from_static(b"authed")),
    )
    .await
    .unwrap()
    .unwrap();
    let (_, got) = timeout(BOUND, b.received.recv()).await.unwrap().unwrap();
    assert_eq!(got, Bytes::from_static(b"authed"));

    close_all(&[&a, &b]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_auth_material_fails_create() {
    let (_hook, _srv, relay_url) = auth_servers().await;
    let res = create(&relay_url, b"not-the-material").await;
    let Err(err) = res else {
        panic!("create succeeded with wrong material");
    };
    assert!(
        err.to_string().contains("relay authentication failed"),
        "{err}"
    );
}
