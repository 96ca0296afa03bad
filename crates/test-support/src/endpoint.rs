//! Raw iroh endpoints as the transport binds them, for tests that play a
//! peer by hand.

use kitsune2_iroh::endpoint::{EndpointOptions, bind_endpoint};
use kitsune2_iroh::{Endpoint, RelayUrl};
use std::net::SocketAddr;

/// Options for an endpoint homed on `relay`, bound to 127.0.0.1 only (so
/// nothing leaves loopback), with a fresh key.
pub fn loopback_options(relay: &RelayUrl) -> EndpointOptions {
    EndpointOptions {
        relay_url: Some(relay.clone()),
        bind_addr: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        secret_key: None,
        defer_relay: false,
    }
}

/// An endpoint bound with [`loopback_options`].
///
/// # Panics
///
/// When it cannot be bound.
pub async fn loopback_endpoint(relay: &RelayUrl) -> Endpoint {
    bind_endpoint(&loopback_options(relay))
        .await
        .expect("a loopback endpoint binds")
}
