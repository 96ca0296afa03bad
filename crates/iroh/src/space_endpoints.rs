//! Per-space endpoints: one iroh endpoint per space relay, and dial
//! routing by relay.
//!
//! iroh keeps a single home relay and drops idle connections to others, so
//! a node listens on a space's relay through an iroh endpoint of its own:
//! same secret key (same endpoint id), home relay the space's relay, its
//! own UDP socket. Dials to a peer on a space's relay go out through that
//! relay's endpoint; every other dial through the main one. Which relay a
//! space may use, and with what auth, is [`space_relays`](crate::space_relays)'s
//! call.

use crate::endpoint::{EndpointOptions, bind_endpoint_with, insert_relay};
use crate::error::core_err;
use crate::iroh_types::{Endpoint, RelayUrl};
use crate::relay_auth::RelayAuth;
use crate::space_relays::{Release, SpaceRelayPlan, SpaceRelaySettings, SpaceRelays};
use crate::url::peer_url;
use kitsune2_api::{Config, K2Error, K2Result, SpaceId, Url};
use kitsune2_iroh_core::CoreError;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::task::AbortHandle;

/// The endpoint listening on one space relay, and its accept loop.
#[derive(Debug)]
struct SpaceEndpoint {
    endpoint: Endpoint,
    accept: AbortHandle,
}

/// The spaces' relays and the endpoint listening on each.
///
/// # Usage
///
/// [`plan`](Self::plan) a space's config (no I/O), then
/// [`configure`](Self::configure) it; [`unconfigure`](Self::unconfigure)
/// when the space goes; [`endpoint_for`](Self::endpoint_for) on every dial;
/// [`stop`](Self::stop) once, on close or drop.
///
/// # Invariants
///
/// - At most one endpoint per relay carries this key, so a relay never sees
///   two clients with the same key from this node.
/// - The last space on a relay releasing it closes that relay's endpoint
///   and stops its auth keepalive.
#[derive(Debug, Default)]
pub(crate) struct SpaceEndpoints {
    /// Which space uses which relay, with the keepalives.
    relays: SpaceRelays,
    endpoints: Mutex<HashMap<RelayUrl, SpaceEndpoint>>,
}

impl SpaceEndpoints {
    /// No space relay yet; spaces' relays are judged against `settings`.
    pub(crate) fn new(settings: SpaceRelaySettings) -> Self {
        Self {
            relays: SpaceRelays::new(settings),
            endpoints: Mutex::default(),
        }
    }

    fn endpoints(&self) -> std::sync::MutexGuard<'_, HashMap<RelayUrl, SpaceEndpoint>> {
        self.endpoints
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// What the space whose merged config is `config` asks for, checked
    /// before any I/O: `None` when it has no relay of its own.
    ///
    /// # Errors
    ///
    /// As [`SpaceRelaySettings::plan`].
    pub(crate) fn plan(&self, config: &Config) -> K2Result<Option<SpaceRelayPlan>> {
        Ok(self.relays.settings.plan(config)?)
    }

    /// The endpoint listening on `relay`, if a space put one there.
    pub(crate) fn endpoint_for(&self, relay: &RelayUrl) -> Option<Endpoint> {
        self.endpoints().get(relay).map(|s| s.endpoint.clone())
    }

    /// Gives `space_id` this node's URL on its relay `plan` (from
    /// [`plan`](Self::plan)): authenticates when it brings auth material,
    /// then inserts the relay into `main` (the transport's own relay) or
    /// listens on it with an endpoint of its own, whose accept loop
    /// `start_accept` starts.
    ///
    /// # Errors
    ///
    /// Authentication or binding fails, or the transport closed meanwhile.
    pub(crate) async fn configure(
        &self,
        main: &Endpoint,
        space_id: SpaceId,
        plan: SpaceRelayPlan,
        start_accept: impl Fn(Endpoint) -> AbortHandle + Sync,
    ) -> K2Result<Url> {
        let SpaceRelayPlan {
            relay,
            auth_material,
        } = plan;
        let id = main.id();
        let (auth, token) = match auth_material {
            Some(material) => {
                let auth = Arc::new(RelayAuth::new(&relay, material, *id.as_bytes()));
                let token = auth.register().await?;
                (Some(auth), Some(token))
            }
            None => (None, None),
        };
        let url = peer_url(&relay, id)?;
        if self.relays.settings.own_relay.as_ref() == Some(&relay) {
            // The space brings its own material for our own relay.
            insert_relay(main, relay.clone(), token).await;
        } else {
            self.listen_on(main, &relay, token, start_accept).await?;
        }
        if !self.relays.record(space_id.clone(), relay.clone(), auth) {
            // Closed meanwhile: the space endpoint went with the rest.
            return Err(K2Error::other("transport closed"));
        }
        tracing::info!(space = ?space_id, %relay, %url, "per-space relay configured");
        Ok(url)
    }

    /// Makes this node listen on the space relay `relay`: binds an endpoint
    /// with `main`'s key there unless one exists. With `token`, the relay
    /// is (re-)inserted with it.
    async fn listen_on(
        &self,
        main: &Endpoint,
        relay: &RelayUrl,
        token: Option<String>,
        start_accept: impl Fn(Endpoint) -> AbortHandle,
    ) -> Result<(), CoreError> {
        if let Some(endpoint) = self.endpoint_for(relay) {
            if token.is_some() {
                insert_relay(&endpoint, relay.clone(), token).await;
            }
            return Ok(());
        }
        let endpoint = bind_endpoint_with(
            &EndpointOptions {
                relay_url: Some(relay.clone()),
                bind_addr: self
                    .relays
                    .settings
                    .bind_addr
                    .map(|a| SocketAddr::new(a.ip(), 0)),
                secret_key: Some(main.secret_key().clone()),
                defer_relay: token.is_some(),
            },
            self.relays.settings.max_message_streams,
        )
        .await
        .map_err(|e| core_err("bind space endpoint", e))?;
        if token.is_some() {
            insert_relay(&endpoint, relay.clone(), token).await;
        }
        let duplicate = {
            let mut map = self.endpoints();
            if map.contains_key(relay) {
                true
            } else {
                let accept = start_accept(endpoint.clone());
                map.insert(
                    relay.clone(),
                    SpaceEndpoint {
                        endpoint: endpoint.clone(),
                        accept,
                    },
                );
                false
            }
        };
        if duplicate {
            // Another space bound one meanwhile; keep that one.
            endpoint.close().await;
        } else {
            tracing::info!(%relay, "listening on space relay");
        }
        Ok(())
    }

    /// Forgets `space_id`'s relay; the last space on a relay closes its
    /// endpoint.
    pub(crate) async fn unconfigure(&self, space_id: &SpaceId) {
        if let Release::Remove(relay) = self.relays.release(space_id) {
            let gone = self.endpoints().remove(&relay);
            if let Some(gone) = gone {
                gone.accept.abort();
                gone.endpoint.close().await;
            }
            tracing::info!(space = ?space_id, %relay, "per-space relay released");
        }
    }

    /// Stops every keepalive and accept loop and takes the endpoints out,
    /// for the caller to close; nothing is recorded afterwards.
    pub(crate) fn stop(&self) -> Vec<Endpoint> {
        self.relays.close();
        self.endpoints()
            .drain()
            .map(|(_, s)| {
                s.accept.abort();
                s.endpoint
            })
            .collect()
    }
}
