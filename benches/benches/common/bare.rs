//! Bare iroh, the baseline: raw iroh endpoints bound exactly as the
//! transport binds its own (`kitsune2_iroh::endpoint`: same ALPN, keep-alive,
//! idle timeout, relay config, loopback socket), dialed by id and relay URL
//! as ours dials, carrying the same frames (5-byte head + payload, written
//! as two chunks in one call) back to back on one uni stream per direction.
//! The receiver reads each head, then the payload into a fresh buffer (one
//! copy), and hands it on through the same kind of channel as the kitsune2
//! handler does. No kitsune2 layer, no preflight, no resolution.
//!
//! With `k2` (the `bare_k2` pair) the frames carry what kitsune2 gives a
//! transport and takes back: the sender wraps each payload as kitsune2
//! wraps a space notify ([`k2_wrap`], a `K2Proto` encoding: one copy) and
//! the receiver unwraps it as kitsune2's `recv_data` does (`K2Proto::decode`:
//! one more copy), so the frames on the wire and the copies of the payload
//! are those of any kitsune2 transport, ours and the incumbent's included.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use iroh::endpoint::{Connection, RecvStream, SendStream};
use iroh::{EndpointAddr, TransportAddr};
use kitsune2_api::{K2Proto, K2WireType};
use kitsune2_iroh::endpoint::{ALPN, EndpointOptions, bind_endpoint, bind_relay_only_endpoint};
use kitsune2_iroh::{Endpoint, RelayUrl};
use kitsune2_iroh_codec::{FRAME_HEADER_LEN, Frame, FrameHeader, Limits};
use tokio::sync::mpsc;
use tokio::time::timeout;

use super::{ECHO, MESSAGE_BOUND, STARTUP_BOUND};

/// An endpoint homed on `relay`: bound to 127.0.0.1 or, with `relay_only`,
/// without IP transports. Returns once it is connected to its relay.
pub async fn endpoint(relay: &RelayUrl, relay_only: bool) -> Endpoint {
    let options = EndpointOptions {
        relay_url: Some(relay.clone()),
        bind_addr: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        secret_key: None,
        defer_relay: false,
    };
    let ep = if relay_only {
        bind_relay_only_endpoint(&options).await
    } else {
        bind_endpoint(&options).await
    }
    .expect("bare endpoint binds");
    timeout(STARTUP_BOUND, ep.online())
        .await
        .unwrap_or_else(|_| panic!("bare endpoint not online within {STARTUP_BOUND:?}"));
    ep
}

/// `ep`'s address as ours dials a peer URL: its id and its relay, no IP
/// address (a direct path, when there is one, comes from holepunching).
pub fn addr(ep: &Endpoint, relay: &RelayUrl) -> EndpointAddr {
    EndpointAddr::from_parts(ep.id(), [TransportAddr::Relay(relay.clone())])
}

/// Dials `to` over `from`.
pub async fn connect(from: &Endpoint, to: EndpointAddr) -> Connection {
    timeout(MESSAGE_BOUND, from.connect(to, ALPN))
        .await
        .expect("bare connect timed out")
        .expect("bare connect failed")
}

/// Accepts one connection on `ep`.
pub async fn accept(ep: &Endpoint) -> Connection {
    let incoming = timeout(MESSAGE_BOUND, ep.accept())
        .await
        .expect("bare accept timed out")
        .expect("bare endpoint closed");
    timeout(MESSAGE_BOUND, incoming)
        .await
        .expect("bare handshake timed out")
        .expect("bare handshake failed")
}

/// Writes one data frame: the head and the payload as two chunks in one
/// call, as ours writes it.
pub async fn write_frame(send: &mut SendStream, payload: Bytes) {
    let [head, body] = Frame::data(payload)
        .encode(&Limits::default())
        .expect("bench frame fits")
        .into_chunks();
    send.write_all_chunks(&mut [head, body])
        .await
        .expect("bare write failed");
}

/// Reads one frame's payload, or `None` at the stream's end.
pub async fn read_frame(recv: &mut RecvStream) -> Option<Bytes> {
    let mut head = [0u8; FRAME_HEADER_LEN];
    match recv.read_exact(&mut head).await {
        Ok(()) => {}
        Err(_) => return None,
    }
    let header = FrameHeader::parse(head).expect("bare frame head");
    let mut payload = vec![0u8; header.payload_len as usize];
    recv.read_exact(&mut payload)
        .await
        .expect("bare frame payload");
    Some(Bytes::from(payload))
}

/// `payload` as kitsune2 hands a space notify to its transport: a
/// `K2Proto` message of type notify in the bench's space, encoded.
pub fn k2_wrap(payload: Bytes) -> Bytes {
    K2Proto {
        ty: K2WireType::Notify as i32,
        data: payload,
        space_id: Some(super::space().into()),
        module_id: None,
    }
    .encode()
    .expect("bench message encodes")
}

/// The payload of a frame `k2_wrap` made, taken out as kitsune2's
/// `recv_data` takes it (`K2Proto::decode` of the frame's bytes).
pub fn k2_unwrap(frame: &Bytes) -> Bytes {
    K2Proto::decode(frame).expect("bench message decodes").data
}

/// Reads frames from the peer's first uni stream on `conn` until it ends:
/// `ECHO` payloads go to `echo`, every other one to `sink`; with `k2`,
/// each frame is unwrapped first ([`k2_unwrap`]).
pub async fn read_loop(
    conn: Connection,
    k2: bool,
    sink: mpsc::UnboundedSender<Bytes>,
    echo: mpsc::UnboundedSender<Bytes>,
) {
    let Ok(mut recv) = conn.accept_uni().await else {
        return;
    };
    while let Some(frame) = read_frame(&mut recv).await {
        let payload = if k2 { k2_unwrap(&frame) } else { frame };
        if payload.first() == Some(&ECHO) {
            let _ = echo.send(payload);
        } else {
            let _ = sink.send(payload);
        }
    }
}

/// How long the endpoints get to close.
pub const CLOSE_BOUND: Duration = Duration::from_secs(5);

/// Closes `ep`, bounded by [`CLOSE_BOUND`].
pub async fn close(ep: Endpoint) {
    let _ = timeout(CLOSE_BOUND, ep.close()).await;
}
