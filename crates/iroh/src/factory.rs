//! [`IrohTransportFactory`]: the `kitsune2_api::TransportFactory` users
//! plug in, building the core's transport over an iroh endpoint.

use crate::config::{IrohTransportConfig, IrohTransportModConfig};
use crate::endpoint::{
    EndpointOptions, accept_kitsune2_v1, bind_endpoint_with, bind_relay_only_endpoint_with,
};
use crate::error::IrohTransportError;
use crate::iroh_endpoint::IrohEndpoint;
use crate::relay_auth::RelayAuth;
use crate::space_relays::SpaceRelaySettings;
use crate::url::normalize_relay_url;
use kitsune2_api::{
    BoxFut, Builder, Config, DefaultTransport, DynTransport, DynTransportFactory, DynTxHandler,
    K2Result, TransportFactory, TxImpHnd,
};
use kitsune2_iroh_core::{CoreTransport, SystemClock};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Kitsune2 transport factory backed by iroh; a drop-in for
/// `kitsune2_transport_iroh::IrohTransportFactory`.
///
/// # Usage
///
/// Put [`IrohTransportFactory::create`] in `kitsune2_api::Builder::transport`;
/// the module config is [`IrohTransportModConfig`]. With a relay URL and
/// `Builder::auth_material_relay`, the endpoint authenticates with the
/// relay's bootstrap server first (bearer token on the relay websocket, key
/// keepalive every `relayKeepaliveIntervalS`).
#[derive(Debug, Default)]
pub struct IrohTransportFactory {
    bind_addr: Option<SocketAddr>,
    relay_only: bool,
}

impl IrohTransportFactory {
    /// A factory whose endpoints bind all interfaces, like the incumbent's.
    pub fn create() -> DynTransportFactory {
        Arc::new(Self::default())
    }

    /// A factory whose endpoints bind only `bind_addr` (for example
    /// `127.0.0.1:0`, so that tests never leave loopback).
    pub fn create_bound(bind_addr: SocketAddr) -> DynTransportFactory {
        Arc::new(Self {
            bind_addr: Some(bind_addr),
            relay_only: false,
        })
    }

    /// Test-only: a factory whose main endpoint has no IP transport
    /// ([`bind_relay_only_endpoint`](crate::endpoint::bind_relay_only_endpoint)),
    /// so all its traffic goes through its relay, as between peers whose
    /// holepunching fails. For benchmarks and tests of the relayed path on
    /// loopback; not for production use.
    /// Endpoints for per-space relays are bound as usual.
    pub fn create_relay_only() -> DynTransportFactory {
        Arc::new(Self {
            bind_addr: None,
            relay_only: true,
        })
    }
}

fn read_config(config: &Config) -> Result<IrohTransportModConfig, IrohTransportError> {
    config
        .get_module_config()
        .map_err(|source| IrohTransportError::Config { source })
}

impl TransportFactory for IrohTransportFactory {
    fn default_config(&self, config: &mut Config) -> K2Result<()> {
        config.set_module_config(&IrohTransportModConfig::default())
    }

    /// Checks the module config with the incumbent's rules
    /// ([`IrohTransportConfig::validate`]): a plain `http` relay needs
    /// `relayAllowPlainText` here, even on loopback.
    fn validate_config(&self, config: &Config) -> K2Result<()> {
        read_config(config)?.iroh_transport.validate()?;
        Ok(())
    }

    /// Builds the transport ([`create_transport`]); like the incumbent's
    /// `create`, it accepts a plain `http` relay on a loopback host without
    /// `relayAllowPlainText`
    /// ([`IrohTransportConfig::validate_for_create`]).
    fn create(
        &self,
        builder: Arc<Builder>,
        handler: DynTxHandler,
    ) -> BoxFut<'static, K2Result<DynTransport>> {
        let bind_addr = self.bind_addr;
        let relay_only = self.relay_only;
        Box::pin(async move {
            let config = read_config(&builder.config)?.iroh_transport;
            create(
                &config,
                bind_addr,
                relay_only,
                builder.auth_material_relay.clone(),
                handler,
            )
            .await
        })
    }
}

/// Builds a transport from `config` without a kitsune2 `Builder`: what
/// [`IrohTransportFactory`] does once it has read its module config. For
/// programs that drive a transport directly (the `k2iroh` CLI).
///
/// Binds only `bind_addr` when given. With a relay URL and
/// `auth_material_relay`, the endpoint authenticates with the relay's
/// bootstrap server before it inserts the relay.
///
/// The config is checked with [`IrohTransportConfig::validate_for_create`]:
/// a plain `http` relay on a loopback host (127.0.0.0/8, `::1`,
/// `localhost`) needs no `relayAllowPlainText`, one on any other host does.
///
/// # Errors
///
/// The config does not validate (for example
/// [`IrohTransportError::PlainTextRelayDisallowed`]), the endpoint cannot
/// bind, or relay authentication fails.
pub async fn create_transport(
    config: &IrohTransportConfig,
    bind_addr: Option<SocketAddr>,
    auth_material_relay: Option<Vec<u8>>,
    handler: DynTxHandler,
) -> K2Result<DynTransport> {
    create(config, bind_addr, false, auth_material_relay, handler).await
}

/// [`create_transport`], the main endpoint without IP transports when
/// `relay_only` ([`IrohTransportFactory::create_relay_only`]).
async fn create(
    config: &IrohTransportConfig,
    bind_addr: Option<SocketAddr>,
    relay_only: bool,
    auth_material_relay: Option<Vec<u8>>,
    handler: DynTxHandler,
) -> K2Result<DynTransport> {
    config.validate_for_create()?;
    let relay_url = config
        .relay_url
        .as_deref()
        .map(normalize_relay_url)
        .transpose()?;
    // Authentication applies when there is a relay of our own and auth
    // material; the relay is then inserted only once a token is in hand.
    let auth_material = auth_material_relay.filter(|_| relay_url.is_some());
    let options = EndpointOptions {
        relay_url: relay_url.clone(),
        bind_addr,
        secret_key: None,
        defer_relay: auth_material.is_some(),
    };
    // QUIC's uni stream limit and the core's `max_message_streams` come
    // from the one key, so they agree.
    let streams = config.max_message_streams;
    let endpoint = if relay_only {
        bind_relay_only_endpoint_with(&options, streams).await?
    } else {
        bind_endpoint_with(&options, streams).await?
    };
    if config.kitsune2_v1 {
        accept_kitsune2_v1(&endpoint);
    }
    let key = *endpoint.id().as_bytes();
    let keepalive_interval = Duration::from_secs(u64::from(config.relay_keepalive_interval_s));
    let endpoint = Arc::new(
        IrohEndpoint::new(endpoint).with_space_relays(SpaceRelaySettings {
            own_relay: relay_url.clone(),
            own_auth_material_base64: config.auth_material_relay_base64.clone(),
            keepalive_interval,
            bind_addr,
            max_message_streams: config.max_message_streams,
        }),
    );
    if let (Some(relay), Some(material)) = (relay_url, auth_material) {
        let auth = Arc::new(RelayAuth::new(&relay, material, key));
        let token = auth.register().await?;
        // The address watcher runs already, so the relay's address update
        // is published.
        endpoint.insert_relay(relay.clone(), Some(token)).await;
        tracing::info!(%relay, "authenticated with relay");
        endpoint.own_task(auth.spawn_keepalive(keepalive_interval));
    }
    let hnd = TxImpHnd::new(handler);
    let imp = CoreTransport::create(
        endpoint,
        hnd.clone(),
        config.core_config(),
        Arc::new(SystemClock),
    )?;
    Ok(DefaultTransport::create(&hnd, imp))
}
