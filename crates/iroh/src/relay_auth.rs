//! Relay authentication through the kitsune2 bootstrap server, as
//! `kitsune2_transport_iroh` does it: a bearer token for the relay
//! websocket, and a keepalive that keeps this endpoint's key on the relay's
//! allowlist.
//!
//! The bootstrap server is the relay URL's origin (its path replaced by
//! `/`); `kitsune2_bootstrap_client` does the HTTP, on blocking threads.

use crate::error::{IrohTransportError, Result};
use crate::iroh_types::RelayUrl;
use kitsune2_bootstrap_client::AuthMaterial;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::AbortHandle;

/// What is needed to (re-)authenticate one endpoint with one relay.
#[derive(Debug)]
pub(crate) struct RelayAuth {
    server_url: ::url::Url,
    material: AuthMaterial,
    key: [u8; 32],
}

impl RelayAuth {
    /// Authentication of the endpoint with public key `key` for `relay`.
    pub(crate) fn new(relay: &RelayUrl, material: Vec<u8>, key: [u8; 32]) -> Self {
        let mut server_url: ::url::Url = (**relay).clone();
        server_url.set_path("/");
        Self {
            server_url,
            material: AuthMaterial::new(material),
            key,
        }
    }

    /// Authenticates before the relay is used: fetches a bearer token for
    /// the relay websocket and puts the key on the relay's allowlist.
    pub(crate) async fn register(self: &Arc<Self>) -> Result<String> {
        let token = self.fetch_token().await?;
        self.keepalive().await?;
        Ok(token)
    }

    /// Fetches a bearer token for the relay websocket.
    async fn fetch_token(self: &Arc<Self>) -> Result<String> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            kitsune2_bootstrap_client::blocking_fetch_relay_token(
                this.server_url.clone(),
                &this.material,
            )
        })
        .await
        .map_err(|source| IrohTransportError::BlockingTask { source })?
        .map_err(|source| IrohTransportError::RelayAuth {
            step: "fetch token",
            source,
        })
    }

    /// Registers (or re-registers) the endpoint key on the relay allowlist.
    pub(crate) async fn keepalive(self: &Arc<Self>) -> Result<()> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            kitsune2_bootstrap_client::blocking_relay_keepalive(
                this.server_url.clone(),
                &this.material,
                &this.key,
            )
        })
        .await
        .map_err(|source| IrohTransportError::BlockingTask { source })?
        .map_err(|source| IrohTransportError::RelayAuth {
            step: "keepalive",
            source,
        })
    }

    /// Runs [`Self::keepalive`] every `interval` until aborted.
    pub(crate) fn spawn_keepalive(self: Arc<Self>, interval: Duration) -> AbortHandle {
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(interval).await;
                match self.keepalive().await {
                    Ok(()) => tracing::debug!(server = %self.server_url, "relay keepalive"),
                    Err(err) => {
                        tracing::warn!(server = %self.server_url, %err, "relay keepalive failed");
                    }
                }
            }
        })
        .abort_handle()
    }
}
