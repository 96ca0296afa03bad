//! Per-space URLs: our URL in each space that has a relay of its own,
//! which preflights to peers on that relay present.

use std::collections::HashMap;
use std::sync::Mutex;

use kitsune2_api::{SpaceId, Url};
use tracing::debug;

use crate::error::CoreError;
use crate::peer_url::PeerAddr;
use crate::traits::EndpointId;

/// Our URL in one space, with its relay part for matching peers.
#[derive(Debug, Clone)]
struct SpaceUrl {
    /// The relay part, as [`PeerAddr::relay_url`] gives it.
    relay_url: String,
    /// The whole URL.
    url: Url,
}

/// Our URL in each space that has one of its own.
#[derive(Debug, Default)]
pub(crate) struct SpaceUrls(Mutex<HashMap<SpaceId, SpaceUrl>>);

impl SpaceUrls {
    /// Records `url` as our URL in `space_id`.
    ///
    /// # Errors
    ///
    /// [`CoreError::InvalidPeerUrl`] when `url` is not a peer URL naming
    /// `local_id`.
    pub(crate) fn insert(
        &self,
        space_id: SpaceId,
        url: &Url,
        local_id: &EndpointId,
    ) -> Result<(), CoreError> {
        let addr = PeerAddr::parse(url)?;
        if addr.id != *local_id {
            return Err(CoreError::InvalidPeerUrl {
                url: url.as_str().to_owned(),
                why: "per-space url names another endpoint than this one",
            });
        }
        self.0.lock().expect("poisoned").insert(
            space_id,
            SpaceUrl {
                relay_url: addr.relay_url,
                url: url.clone(),
            },
        );
        Ok(())
    }

    /// Forgets `space_id`'s URL; true when it had one.
    pub(crate) fn remove(&self, space_id: &SpaceId) -> bool {
        self.0.lock().expect("poisoned").remove(space_id).is_some()
    }

    /// Our URL on `peer`'s relay when a space gave us one there.
    pub(crate) fn on_relay_of(&self, peer: &PeerAddr) -> Option<Url> {
        let url = self
            .0
            .lock()
            .expect("poisoned")
            .values()
            .find(|s| s.relay_url == peer.relay_url)
            .map(|s| s.url.clone());
        if let Some(url) = &url {
            debug!(peer = %peer.url, own = %url, "presenting our per-space url");
        }
        url
    }

    /// `global` (if known) first, then each space's own URL, no repeats.
    pub(crate) fn all(&self, global: Option<Url>) -> Vec<Url> {
        let mut urls: Vec<Url> = global.into_iter().collect();
        for s in self.0.lock().expect("poisoned").values() {
            if !urls.contains(&s.url) {
                urls.push(s.url.clone());
            }
        }
        urls
    }
}
