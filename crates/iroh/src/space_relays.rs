//! Per-space relays: a space whose config names a relay of its own (and,
//! optionally, auth material for it) gets that relay added to the endpoint,
//! and this endpoint's URL on it.
//!
//! The rules are `kitsune2_transport_iroh`'s:
//!
//! - A space that names the transport's own relay, without auth material
//!   of its own, has nothing of its own: it uses the global URL.
//! - Auth material is base64 in `authMaterialRelayBase64`; with it, a bearer
//!   token is fetched from the relay's bootstrap server before the relay is
//!   added, and a keepalive per relay keeps this endpoint on its allowlist.
//! - Releasing the last space on a relay removes the relay, unless it is the
//!   transport's own, and stops its keepalive either way.
//!
//! Unlike the incumbent, everything that can fail does so before
//! `configure_for_space` returns, with a typed error: a bad URL, plain http
//! to a host other than loopback without `relayAllowPlainText` (the rule
//! `create` applies, [`PlainTextPolicy::AllowLoopback`]), auth material that
//! is not base64, a failed token fetch.
//!
//! iroh keeps one home relay and closes idle connections to other relays,
//! so the node listens on a space's relay through an iroh endpoint of its
//! own with the same key (see [`IrohEndpoint`](crate::IrohEndpoint)); the
//! main endpoint's relay map, and so the global URL, stay as configured.

use crate::config::{IrohTransportModConfig, PlainTextPolicy};
use crate::error::{IrohTransportError, Result};
use crate::iroh_types::RelayUrl;
use crate::relay_auth::RelayAuth;
use crate::url::normalize_relay_url;
use base64::Engine as _;
use kitsune2_api::{Config, SpaceId};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::task::AbortHandle;

/// What a space asks for, checked and decoded, before any I/O.
#[derive(Debug)]
pub(crate) struct SpaceRelayPlan {
    /// The space's relay.
    pub(crate) relay: RelayUrl,
    /// Decoded auth material for it, if the space brings its own.
    pub(crate) auth_material: Option<Vec<u8>>,
}

/// The transport-wide settings per-space relays are judged against.
#[derive(Debug, Clone)]
pub(crate) struct SpaceRelaySettings {
    /// The transport's own relay, as configured.
    pub(crate) own_relay: Option<RelayUrl>,
    /// The global config's `authMaterialRelayBase64`, which a space's equal
    /// value does not count as its own.
    pub(crate) own_auth_material_base64: Option<String>,
    /// Interval of the allowlist keepalive for authenticated relays.
    pub(crate) keepalive_interval: Duration,
    /// The address the transport binds: space endpoints bind its IP (any
    /// port); all interfaces when `None`.
    pub(crate) bind_addr: Option<SocketAddr>,
    /// The config's `maxMessageStreams`: space endpoints give QUIC the
    /// same stream limit as the main one, since the one core reads all.
    pub(crate) max_message_streams: usize,
}

impl Default for SpaceRelaySettings {
    fn default() -> Self {
        Self {
            own_relay: None,
            own_auth_material_base64: None,
            keepalive_interval: Duration::from_secs(u64::from(
                crate::config::DEFAULT_RELAY_KEEPALIVE_INTERVAL_S,
            )),
            bind_addr: None,
            max_message_streams: kitsune2_iroh_core::DEFAULT_MAX_MESSAGE_STREAMS,
        }
    }
}

impl SpaceRelaySettings {
    /// Reads `config` (a space's merged config) and decides what the space
    /// needs: `None` when it has no relay of its own.
    ///
    /// # Errors
    ///
    /// The module config does not read, the relay URL is invalid or plain
    /// http to a host other than loopback without `relayAllowPlainText`, or
    /// the auth material is not base64.
    pub(crate) fn plan(&self, config: &Config) -> Result<Option<SpaceRelayPlan>> {
        let space = config
            .get_module_config::<IrohTransportModConfig>()
            .map_err(|source| IrohTransportError::Config { source })?
            .iroh_transport;
        let Some(url) = space.relay_url.as_deref() else {
            return Ok(None);
        };
        let relay = normalize_relay_url(url)?;
        let own_material = space
            .auth_material_relay_base64
            .as_deref()
            .filter(|m| Some(*m) != self.own_auth_material_base64.as_deref());
        if self.own_relay.as_ref() == Some(&relay) && own_material.is_none() {
            return Ok(None);
        }
        // As at `create`: plain http to a loopback relay needs no flag.
        PlainTextPolicy::AllowLoopback.check(&relay, url, space.relay_allow_plain_text)?;
        let auth_material = own_material
            .map(|b64| {
                base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .map_err(|source| IrohTransportError::InvalidAuthMaterial { source })
            })
            .transpose()?;
        Ok(Some(SpaceRelayPlan {
            relay,
            auth_material,
        }))
    }
}

/// Which space uses which relay, and the keepalives of authenticated ones.
///
/// # Invariants
///
/// A keepalive runs for a relay only while some space uses it; after
/// [`close`](Self::close) none runs and none starts.
#[derive(Debug, Default)]
pub(crate) struct SpaceRelays {
    pub(crate) settings: SpaceRelaySettings,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    spaces: HashMap<SpaceId, RelayUrl>,
    keepalives: HashMap<RelayUrl, AbortHandle>,
    closed: bool,
}

/// What releasing a space leaves to do on the endpoint.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Release {
    /// Nothing: the space had no relay, or another space still uses it, or
    /// it is the transport's own.
    Keep,
    /// Remove this relay from the endpoint.
    Remove(RelayUrl),
}

impl SpaceRelays {
    /// Per-space relays judged against `settings`.
    pub(crate) fn new(settings: SpaceRelaySettings) -> Self {
        Self {
            settings,
            state: Mutex::default(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records that `space_id` uses `relay`, and starts the relay's
    /// keepalive with `auth` unless one runs. Returns false (recording
    /// nothing) once closed.
    pub(crate) fn record(
        &self,
        space_id: SpaceId,
        relay: RelayUrl,
        auth: Option<Arc<RelayAuth>>,
    ) -> bool {
        let mut state = self.state();
        if state.closed {
            return false;
        }
        if let Some(auth) = auth {
            let interval = self.settings.keepalive_interval;
            state
                .keepalives
                .entry(relay.clone())
                .or_insert_with(|| auth.spawn_keepalive(interval));
        }
        state.spaces.insert(space_id, relay);
        true
    }

    /// Forgets `space_id`'s relay; says whether the endpoint should drop it.
    pub(crate) fn release(&self, space_id: &SpaceId) -> Release {
        let mut state = self.state();
        let Some(relay) = state.spaces.remove(space_id) else {
            return Release::Keep;
        };
        if state.spaces.values().any(|r| *r == relay) {
            return Release::Keep;
        }
        if let Some(keepalive) = state.keepalives.remove(&relay) {
            keepalive.abort();
        }
        if self.settings.own_relay.as_ref() == Some(&relay) {
            Release::Keep
        } else {
            Release::Remove(relay)
        }
    }

    /// Stops every keepalive; nothing is recorded afterwards.
    pub(crate) fn close(&self) {
        let mut state = self.state();
        state.closed = true;
        for (_, keepalive) in state.keepalives.drain() {
            keepalive.abort();
        }
    }

    /// Number of keepalives running (for tests).
    #[cfg(test)]
    fn keepalive_count(&self) -> usize {
        self.state().keepalives.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::IrohTransportConfig;

    fn space(n: u8) -> SpaceId {
        SpaceId::from(bytes::Bytes::from(vec![n; 32]))
    }

    fn relay(s: &str) -> RelayUrl {
        normalize_relay_url(s).unwrap()
    }

    fn config(c: IrohTransportConfig) -> Config {
        let config = Config::default();
        config
            .set_module_config(&IrohTransportModConfig { iroh_transport: c })
            .unwrap();
        config
    }

    fn settings(own: Option<&str>) -> SpaceRelaySettings {
        SpaceRelaySettings {
            own_relay: own.map(relay),
            own_auth_material_base64: Some("Z2xvYmFs".to_owned()),
            ..SpaceRelaySettings::default()
        }
    }

    fn space_config(url: Option<&str>, auth: Option<&str>) -> Config {
        config(IrohTransportConfig {
            relay_url: url.map(str::to_owned),
            relay_allow_plain_text: true,
            auth_material_relay_base64: auth.map(str::to_owned),
            ..IrohTransportConfig::default()
        })
    }

    #[test]
    fn no_relay_or_own_relay_without_own_material_is_nothing_of_its_own() {
        let s = settings(Some("http://127.0.0.1:1/relay"));
        assert!(s.plan(&space_config(None, None)).unwrap().is_none());
        for own in ["http://127.0.0.1:1/relay", "http://127.0.0.1:1/relay/"] {
            assert!(s.plan(&space_config(Some(own), None)).unwrap().is_none());
            // The global material repeated is not the space's own.
            let same = space_config(Some(own), Some("Z2xvYmFs"));
            assert!(s.plan(&same).unwrap().is_none());
        }
    }

    #[test]
    fn another_relay_or_own_material_is_the_space_own() {
        let s = settings(Some("http://127.0.0.1:1/relay"));
        let plan = s
            .plan(&space_config(Some("http://127.0.0.1:2/relay"), None))
            .unwrap()
            .unwrap();
        assert_eq!(plan.relay, relay("http://127.0.0.1:2/relay/"));
        assert_eq!(plan.auth_material, None);
        let plan = s
            .plan(&space_config(
                Some("http://127.0.0.1:1/relay"),
                Some("c3BhY2U="),
            ))
            .unwrap()
            .unwrap();
        assert_eq!(plan.auth_material.as_deref(), Some(&b"space"[..]));
        // Without a relay of the transport's own, any relay is the space's.
        let plan = settings(None)
            .plan(&space_config(Some("http://127.0.0.1:1/relay"), None))
            .unwrap();
        assert!(plan.is_some());
    }

    #[test]
    fn bad_space_settings_are_typed_errors() {
        let s = settings(None);
        let err = s
            .plan(&space_config(Some("ftp://127.0.0.1:2/"), None))
            .unwrap_err();
        assert!(
            matches!(err, IrohTransportError::UnsupportedRelayScheme { .. }),
            "{err}"
        );
        let err = s
            .plan(&space_config(
                Some("http://127.0.0.1:2/"),
                Some("not base64!"),
            ))
            .unwrap_err();
        assert!(
            matches!(err, IrohTransportError::InvalidAuthMaterial { .. }),
            "{err}"
        );
        for remote in ["http://10.0.0.1:2/", "http://example.org/relay"] {
            let plain = config(IrohTransportConfig {
                relay_url: Some(remote.to_owned()),
                relay_allow_plain_text: false,
                ..IrohTransportConfig::default()
            });
            let err = s.plan(&plain).unwrap_err();
            assert!(
                matches!(err, IrohTransportError::PlainTextRelayDisallowed { ref url } if url == remote),
                "{err}"
            );
        }
    }

    #[test]
    fn plain_http_to_a_loopback_space_relay_needs_no_flag() {
        let s = settings(None);
        for local in [
            "http://127.0.0.1:2/",
            "http://127.5.6.7:2/relay",
            "http://[::1]:2/",
            "http://localhost:2/",
        ] {
            let plain = config(IrohTransportConfig {
                relay_url: Some(local.to_owned()),
                relay_allow_plain_text: false,
                ..IrohTransportConfig::default()
            });
            let plan = s.plan(&plain).unwrap().unwrap();
            assert_eq!(plan.relay, relay(local));
        }
    }

    #[test]
    fn a_relay_goes_with_its_last_space_but_the_own_relay_stays() {
        let own = "http://127.0.0.1:1/relay/";
        let relays = SpaceRelays::new(settings(Some(own)));
        let other = relay("http://127.0.0.1:2/");
        assert!(relays.record(space(1), other.clone(), None));
        assert!(relays.record(space(2), other.clone(), None));
        assert!(relays.record(space(3), relay(own), None));
        assert_eq!(relays.release(&space(9)), Release::Keep);
        assert_eq!(relays.release(&space(1)), Release::Keep);
        assert_eq!(relays.release(&space(2)), Release::Remove(other));
        assert_eq!(relays.release(&space(3)), Release::Keep);
    }

    #[tokio::test]
    async fn keepalives_follow_relay_use_and_stop_on_close() {
        let relays = SpaceRelays::new(settings(None));
        let r = relay("http://127.0.0.1:2/");
        let auth = || Some(Arc::new(RelayAuth::new(&r, b"m".to_vec(), [1; 32])));
        assert!(relays.record(space(1), r.clone(), auth()));
        assert!(relays.record(space(2), r.clone(), auth()));
        assert_eq!(relays.keepalive_count(), 1, "one keepalive per relay");
        assert_eq!(relays.release(&space(1)), Release::Keep);
        assert_eq!(relays.keepalive_count(), 1);
        assert!(relays.record(space(3), relay("http://127.0.0.1:3/"), auth()));
        relays.close();
        assert_eq!(relays.keepalive_count(), 0);
        assert!(!relays.record(space(4), r.clone(), auth()), "closed");
        assert_eq!(relays.keepalive_count(), 0);
    }
}
