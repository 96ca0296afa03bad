//! Per-space relays over real iroh: a space naming a relay of its own gets
//! this node's URL on it (told to that space alone), peers on that relay
//! reach the node there and see that URL in the preflight, and releasing
//! the space withdraws it.
//! With auth material, the space's relay is authenticated through kitsune2's
//! bootstrap server. All on loopback.

use base64::Engine as _;
use kitsune2_api::{Config, Id};
use kitsune2_bootstrap_srv::{AuthConfig, BootstrapSrv};
use kitsune2_iroh::url::{parse_peer_url, peer_url};
use kitsune2_iroh_test_support::prelude::*;
use kitsune2_test_utils::auth::AuthHookServer;

const MATERIAL: &[u8] = b"kitsune2-iroh-per-space-material";

fn space2() -> SpaceId {
    SpaceId(Id(Bytes::from_static(b"space-with-a-relay-of-its-own!!!")))
}

/// A space handler that only records the listening addresses it hears.
#[derive(Debug)]
struct SpaceUrls(mpsc::UnboundedSender<Url>);

impl TxBaseHandler for SpaceUrls {
    fn new_listening_address(&self, this_url: Url) -> BoxFut<'static, ()> {
        let _ = self.0.send(this_url);
        Box::pin(async {})
    }
}

impl TxSpaceHandler for SpaceUrls {
    fn is_any_agent_at_url_blocked(&self, _peer_url: &Url) -> K2Result<bool> {
        Ok(false)
    }
}

fn space_config(relay_url: &str, material: Option<&[u8]>) -> Config {
    let config = Config::default();
    config
        .set_module_config(&IrohTransportModConfig {
            iroh_transport: IrohTransportConfig {
                relay_url: Some(relay_url.to_owned()),
                relay_allow_plain_text: true,
                auth_material_relay_base64: material
                    .map(|m| base64::engine::general_purpose::STANDARD.encode(m)),
                ..Default::default()
            },
        })
        .unwrap();
    config
}

/// `node`'s endpoint id on the relay `other` is on.
fn url_beside(node: &Url, other: &Url) -> Url {
    let (relay, _) = parse_peer_url(other).unwrap();
    let (_, id) = parse_peer_url(node).unwrap();
    peer_url(&relay, id).unwrap()
}

async fn peer_urls(node: &Node) -> Vec<Url> {
    stats(node).await.peer_urls
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_space_relay_gives_a_url_on_it_to_that_space_and_its_peers() {
    let r1 = EmbeddedRelay::start().await.unwrap();
    let r2 = EmbeddedRelay::start().await.unwrap();
    let a = node(ours(), &r1, true).await;
    let mut on_r2 = node(ours(), &r2, true).await;
    let mut on_r1 = node(ours(), &r1, true).await;

    let (urls_tx, mut space_urls) = mpsc::unbounded_channel();
    a.transport
        .register_space_handler(space2(), Arc::new(SpaceUrls(urls_tx)));
    // Drain what the space heard before (the global URL).
    while space_urls.try_recv().is_ok() {}

    let a_on_r2 = url_beside(&a.url, &on_r2.url);
    a.transport
        .configure_for_space(space2(), &space_config(r2.url().as_str(), None))
        .await
        .unwrap();
    let heard = timeout(BOUND, space_urls.recv()).await.unwrap().unwrap();
    assert_eq!(heard, a_on_r2, "the space hears a's url on its relay");
    assert_eq!(peer_urls(&a).await, vec![a.url.clone(), a_on_r2.clone()]);

    // A peer on the space's relay reaches a at its URL there, and a
    // answers with that URL...
    let mut a = a;
    notify(&on_r2, &a_on_r2, Bytes::from_static(b"to a on r2")).await;
    let (from, data) = next(&mut a.received, "message").await;
    assert_eq!(&data[..], b"to a on r2");
    assert_eq!(from, on_r2.url);
    notify(&a, &on_r2.url, Bytes::from_static(b"to r2")).await;
    let (from, data) = next(&mut on_r2.received, "message").await;
    assert_eq!(&data[..], b"to r2");
    assert_eq!(from, a_on_r2);
    // ...a peer on a's own relay the global one.
    notify(&a, &on_r1.url, Bytes::from_static(b"to r1")).await;
    assert_eq!(next(&mut on_r1.received, "message").await.0, a.url);

    a.transport.unconfigure_for_space(space2()).await.unwrap();
    assert_eq!(peer_urls(&a).await, vec![a.url.clone()]);
    // A new connection to the peer on r2 presents the global URL again.
    a.transport.disconnect(on_r2.url.clone(), None).await;
    notify(&a, &on_r2.url, Bytes::from_static(b"again")).await;
    let (from, data) = next(&mut on_r2.received, "message").await;
    assert_eq!(&data[..], b"again");
    assert_eq!(from, a.url);

    timeout(BOUND, async {
        a.transport.close().await;
        on_r1.transport.close().await;
        on_r2.transport.close().await;
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_space_relay_config_is_a_clear_error() {
    let r1 = EmbeddedRelay::start().await.unwrap();
    let a = node(ours(), &r1, true).await;
    let plain = Config::default();
    plain
        .set_module_config(&IrohTransportModConfig {
            iroh_transport: IrohTransportConfig {
                // Plain http to loopback needs no flag (as at create);
                // to any other host it does.
                relay_url: Some("http://10.0.0.1:1/relay".to_owned()),
                relay_allow_plain_text: false,
                ..Default::default()
            },
        })
        .unwrap();
    let err = a
        .transport
        .configure_for_space(space2(), &plain)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("relayAllowPlainText is false"),
        "{err}"
    );
    let err = a
        .transport
        .configure_for_space(space2(), &space_config("not a url", None))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("invalid relay URL"), "{err}");
    assert_eq!(peer_urls(&a).await, vec![a.url.clone()]);
    timeout(BOUND, a.transport.close()).await.unwrap();
}

/// The bootstrap server with an auth hook accepting [`MATERIAL`]; its
/// relay URL.
async fn auth_relay() -> (AuthHookServer, BootstrapSrv, String) {
    let hook = AuthHookServer::spawn(Some(MATERIAL.to_vec()));
    let hook_url = hook.url();
    // BootstrapSrv runs its own runtime; start it off this one.
    let srv = tokio::task::spawn_blocking(move || {
        BootstrapSrv::new(kitsune2_bootstrap_srv::Config {
            auth: AuthConfig {
                authentication_hook_server: Some(hook_url),
                ..Default::default()
            },
            ..kitsune2_bootstrap_srv::Config::testing()
        })
    })
    .await
    .unwrap()
    .unwrap();
    let relay_url = format!("http://{}/relay", srv.listen_addrs()[0]);
    (hook, srv, relay_url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_space_relay_with_auth_material_is_authenticated() {
    let r1 = EmbeddedRelay::start().await.unwrap();
    let (_hook, _srv, authed) = auth_relay().await;
    let mut a = node(ours(), &r1, true).await;
    let mut b = node(ours(), &r1, true).await;

    // Wrong material: the space is refused, with the reason.
    let err = a
        .transport
        .configure_for_space(space2(), &space_config(&authed, Some(b"wrong")))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("relay authentication failed"),
        "{err}"
    );
    assert_eq!(peer_urls(&a).await, vec![a.url.clone()]);

    // Both join the space on the authenticated relay; b dials a there.
    for n in [&a, &b] {
        n.transport
            .configure_for_space(space2(), &space_config(&authed, Some(MATERIAL)))
            .await
            .unwrap();
    }
    let a_urls = peer_urls(&a).await;
    let b_urls = peer_urls(&b).await;
    assert_eq!(a_urls.len(), 2, "{a_urls:?}");
    assert!(a_urls[1].as_str().starts_with(&authed), "{a_urls:?}");
    notify(
        &b,
        &a_urls[1],
        Bytes::from_static(b"over the authenticated relay"),
    )
    .await;
    let (from, data) = next(&mut a.received, "message").await;
    assert_eq!(&data[..], b"over the authenticated relay");
    assert_eq!(from, b_urls[1], "b presents its url on the space relay");
    notify(&a, &from, Bytes::from_static(b"back")).await;
    assert_eq!(&next(&mut b.received, "message").await.1[..], b"back");

    close_all(&[&a, &b]).await;
}
