//! [`IrohTransportTestHarness`]: transports on an embedded loopback relay.

use crate::config::{IrohTransportConfig, IrohTransportModConfig};
use crate::error::{IrohTransportError, Result};
use crate::factory::IrohTransportFactory;
use crate::relay::EmbeddedRelay;
use kitsune2_api::{Builder, DynTransport, DynTxHandler, K2Result};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

/// Builds transports that talk through a relay of their own on 127.0.0.1;
/// a drop-in for `kitsune2_transport_iroh::test_utils::IrohTransportTestHarness`.
///
/// The incumbent's harness starts a kitsune2 bootstrap server for its relay
/// (field `_bootstrap_server`); this one starts an [`EmbeddedRelay`] (field
/// [`relay`](Self::relay)). Its transports bind 127.0.0.1 only.
///
/// # Usage
///
/// [`new`](Self::new) inside a multi-threaded tokio runtime, then
/// [`build_transport`](Self::build_transport) once per transport; close the
/// transports before dropping the harness.
///
/// # Invariants
///
/// - The relay runs as long as the harness: dropping the harness stops it,
///   and the transports it built can then reach no peer.
/// - [`builder`](Self::builder)'s config passes `validate_config`
///   (`relayAllowPlainText` is set, although `create` would accept the
///   loopback relay without it).
#[derive(Debug)]
pub struct IrohTransportTestHarness {
    /// The relay every transport of this harness uses as its home relay.
    pub relay: EmbeddedRelay,
    /// The kitsune2 builder transports are made from:
    /// `kitsune2_core::default_test_builder()` with [`IrohTransportFactory`]
    /// (bound to 127.0.0.1) as transport and [`relay`](Self::relay) as
    /// `relayUrl`.
    pub builder: Arc<Builder>,
}

impl IrohTransportTestHarness {
    /// Starts the relay and prepares the builder.
    ///
    /// # Panics
    ///
    /// When [`try_new`](Self::try_new) fails, as the incumbent's `new` does.
    pub async fn new() -> Self {
        match Self::try_new().await {
            Ok(harness) => harness,
            Err(err) => panic!("cannot set up the iroh transport test harness: {err}"),
        }
    }

    /// Starts the relay and prepares the builder.
    ///
    /// # Errors
    ///
    /// The relay does not start ([`IrohTransportError::RelaySpawn`] and
    /// friends), or kitsune2 refuses the config
    /// ([`IrohTransportError::Config`]).
    pub async fn try_new() -> Result<Self> {
        let relay = EmbeddedRelay::start().await?;
        let builder = Builder {
            transport: IrohTransportFactory::create_bound(SocketAddr::from((
                Ipv4Addr::LOCALHOST,
                0,
            ))),
            ..kitsune2_core::default_test_builder()
        }
        .with_default_config()
        .map_err(|source| IrohTransportError::Config { source })?;
        builder
            .config
            .set_module_config(&IrohTransportModConfig {
                iroh_transport: IrohTransportConfig {
                    relay_url: Some(relay.url().to_string()),
                    relay_allow_plain_text: true,
                    ..IrohTransportConfig::default()
                },
            })
            .map_err(|source| IrohTransportError::Config { source })?;
        Ok(Self {
            relay,
            builder: Arc::new(builder),
        })
    }

    /// A new transport with `handler`, from [`builder`](Self::builder).
    ///
    /// # Panics
    ///
    /// When [`try_build_transport`](Self::try_build_transport) fails, as the
    /// incumbent's `build_transport` does.
    pub async fn build_transport(&self, handler: DynTxHandler) -> DynTransport {
        match self.try_build_transport(handler).await {
            Ok(transport) => transport,
            Err(err) => panic!("cannot build an iroh transport: {err}"),
        }
    }

    /// A new transport with `handler`, from [`builder`](Self::builder).
    ///
    /// # Errors
    ///
    /// As `TransportFactory::create` of [`IrohTransportFactory`].
    pub async fn try_build_transport(&self, handler: DynTxHandler) -> K2Result<DynTransport> {
        self.builder
            .transport
            .create(self.builder.clone(), handler)
            .await
    }
}
