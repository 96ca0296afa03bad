//! The protocol object driven directly: every transition and every error
//! path, no tasks, no network, time given by hand.

use std::time::{Duration, Instant};

use bytes::Bytes;
use kitsune2_api::Url;
use kitsune2_iroh_codec::{CodecError, Frame, Limits};

use super::*;
use crate::peer_url::id_to_hex;
use kitsune2_api::{K2Proto, K2WireType};

pub(super) const PEER: EndpointId = [7; 32];
const TIMEOUT: Duration = Duration::from_secs(10);
const PROGRESS: Duration = Duration::from_secs(30);
pub(super) const TIMEOUTS: Timeouts = Timeouts {
    preflight: TIMEOUT,
    drain: Duration::from_secs(1),
    frame_progress: PROGRESS,
};

/// A start instant, from tokio's clock as the core's rule wants.
pub(super) fn t0() -> Instant {
    tokio::time::Instant::now().into_std()
}

fn url_of(id: &EndpointId) -> Url {
    Url::from_str(format!("http://h:1/{}", id_to_hex(id))).unwrap()
}

fn wire(frame: Frame) -> Bytes {
    frame.encode(&Limits::default()).unwrap().to_bytes()
}

/// kitsune2 message bytes of type `ty` carrying `data`.
fn k2(ty: K2WireType, data: &'static [u8]) -> Bytes {
    K2Proto {
        ty: ty as i32,
        data: Bytes::from_static(data),
        space_id: None,
        module_id: None,
    }
    .encode()
    .unwrap()
}

pub(super) fn preflight(id: &EndpointId) -> Bytes {
    wire(Frame::preflight(
        url_of(id).as_str(),
        k2(K2WireType::Preflight, b"pf"),
    ))
}

pub(super) fn data(bytes: &'static [u8]) -> Bytes {
    wire(Frame::data(Bytes::from_static(bytes)))
}

fn proto(role: Role, t0: Instant) -> ConnProto {
    let mut p = ConnProto::new(role, PEER, Limits::default(), t0, TIMEOUTS);
    p.queue_preflight(&url_of(&[1; 32]), Bytes::from_static(b"ours"));
    p
}

/// A proto past the preflight exchange, with a stream open.
pub(super) fn active(t0: Instant) -> ConnProto {
    let mut p = proto(Role::Dialer, t0);
    assert!(p.poll_transmit().is_some());
    p.handle_stream(t0);
    p.handle_chunk(preflight(&PEER), t0);
    assert!(matches!(p.poll_event(), Some(Event::Preflight { .. })));
    assert!(p.activate());
    p
}

/// The driver's reads after the connection's end: the stream held has
/// nothing more and fails.
pub(super) fn read_out(p: &mut ConnProto) {
    p.handle_stream_error(CoreError::io("read", "connection lost"));
    assert!(p.poll_event().is_none());
}

fn closed_error(p: &ConnProto) -> (CoreError, Initiator) {
    p.closed().expect("closed")
}

#[test]
fn preflight_then_data_after_activation() {
    let start = t0();
    let mut p = proto(Role::Acceptor, start);
    assert_eq!(p.state(), ConnState::Pending);
    assert!(!p.may_send_data(), "nothing before activation");
    p.handle_stream(t0());
    let mut bytes = preflight(&PEER).to_vec();
    bytes.extend_from_slice(&data(b"early"));
    p.handle_chunk(Bytes::from(bytes), t0());
    match p.poll_event() {
        Some(Event::Preflight { url, data }) => {
            assert_eq!(url, url_of(&PEER));
            assert_eq!(data, k2(K2WireType::Preflight, b"pf"));
        }
        other => panic!("expected the preflight, got {other:?}"),
    }
    assert_eq!(p.remote_url(), Some(&url_of(&PEER)));
    assert!(p.poll_event().is_none(), "no data while validating");
    assert!(p.activate());
    assert_eq!(p.state(), ConnState::Active);
    assert!(!p.may_send_data(), "our preflight must go out first");
    let Some(Frame::Preflight(ours)) = p.poll_transmit() else {
        panic!("our preflight first");
    };
    assert_eq!(&ours.data[..], b"ours");
    assert!(p.may_send_data());
    assert!(matches!(p.poll_event(), Some(Event::Data(d)) if &d[..] == b"early"));
    assert!(p.poll_event().is_none());
    assert!(!p.activate(), "activation happens once");
}

#[test]
fn data_before_the_preflight_ends_the_connection() {
    let mut p = proto(Role::Acceptor, t0());
    p.handle_stream(t0());
    p.handle_chunk(data(b"sneaky"), t0());
    assert!(p.poll_event().is_none());
    let (e, by) = closed_error(&p);
    assert!(
        matches!(e, CoreError::Codec(CodecError::ExpectedPreflight { .. })),
        "{e}"
    );
    assert_eq!(by, Initiator::Remote);
    assert_eq!(p.close_frame().unwrap().0, CloseCode::Unspecified);
}

#[test]
fn reading_again_after_a_budget_wait_restarts_the_peers_clock() {
    let t0 = t0();
    let mut p = active(t0);
    p.handle_chunk(partial_data_frame(1000, 100), t0);
    assert!(p.poll_event().is_none());
    p.set_budget_wait(Some(4096), t0);
    let resumed = t0 + PROGRESS + Duration::from_secs(5);
    p.set_budget_wait(None, resumed);
    assert_eq!(p.poll_timeout(), Some(resumed + PROGRESS));
    p.handle_timeout(resumed + PROGRESS);
    assert!(matches!(
        closed_error(&p),
        (CoreError::FrameStalled { .. }, Initiator::Remote)
    ));
}

#[test]
fn a_preflight_naming_another_endpoint_is_refused() {
    let mut p = proto(Role::Acceptor, t0());
    p.handle_stream(t0());
    p.handle_chunk(preflight(&[8; 32]), t0());
    assert!(p.poll_event().is_none());
    assert!(matches!(
        closed_error(&p).0,
        CoreError::PreflightIdentityMismatch { .. }
    ));
    assert_eq!(p.remote_url(), None);
}

#[test]
fn a_preflight_url_that_is_not_a_peer_url_is_refused() {
    let mut p = proto(Role::Acceptor, t0());
    p.handle_stream(t0());
    p.handle_chunk(wire(Frame::preflight("not a url", Bytes::new())), t0());
    assert!(p.poll_event().is_none());
    assert!(matches!(
        closed_error(&p).0,
        CoreError::InvalidPeerUrl { .. }
    ));
}

#[test]
fn the_preflight_deadline_closes_a_pending_connection() {
    let start = t0();
    let mut p = proto(Role::Acceptor, start);
    assert_eq!(p.poll_timeout(), Some(start + TIMEOUT));
    p.handle_timeout(start + TIMEOUT - Duration::from_millis(1));
    assert_eq!(p.state(), ConnState::Pending);
    p.handle_timeout(start + TIMEOUT);
    assert!(matches!(
        closed_error(&p),
        (CoreError::PreflightTimeout { secs: 10 }, Initiator::Remote)
    ));
    assert_eq!(p.poll_timeout(), None);
}

#[test]
fn no_deadline_once_the_preflight_is_in() {
    let start = t0();
    let mut p = active(start);
    assert_eq!(p.poll_timeout(), None);
    p.handle_timeout(start + TIMEOUT * 10);
    assert_eq!(p.state(), ConnState::Active);
}

#[test]
fn after_activation_a_bad_frame_ends_the_connection() {
    let bad: [Bytes; 3] = [
        preflight(&PEER),
        Bytes::from_static(&[7, 0, 0, 0, 0]),
        // A header claiming more than the limit.
        Bytes::from_static(&[1, 0x7f, 0, 0, 0]),
    ];
    for bytes in bad {
        let mut p = active(t0());
        p.handle_chunk(data(b"before"), t0());
        p.handle_chunk(bytes, t0());
        assert!(
            matches!(p.poll_event(), Some(Event::Data(_))),
            "frames before it"
        );
        assert!(p.poll_event().is_none());
        let (e, by) = closed_error(&p);
        assert!(matches!(e, CoreError::Codec(_)), "{e}");
        assert_eq!(by, Initiator::Remote);
        let (code, reason) = p.close_frame().unwrap();
        assert_eq!(code, CloseCode::Unspecified);
        assert!(
            reason.contains("frame error"),
            "the close names it: {reason}"
        );
        assert!(
            matches!(
                p.end_report(None),
                EndReport::Lost {
                    unresponsive: false,
                    ..
                }
            ),
            "reported, but the peer is not unresponsive"
        );
    }
}

#[test]
fn a_stream_ending_mid_frame_fails_after_its_whole_frames() {
    let mut p = active(t0());
    let mut bytes = data(b"whole").to_vec();
    let partial = data(b"partial");
    bytes.extend_from_slice(&partial[..partial.len() - 2]);
    p.handle_chunk(Bytes::from(bytes), t0());
    p.handle_stream_end(t0());
    assert!(matches!(p.poll_event(), Some(Event::Data(d)) if &d[..] == b"whole"));
    assert!(p.poll_event().is_none());
    assert!(matches!(
        closed_error(&p),
        (
            CoreError::Codec(CodecError::TruncatedFrame { .. }),
            Initiator::Remote
        )
    ));
}

#[test]
fn a_clean_stream_end_after_activation_starts_a_drain() {
    let mut p = active(t0());
    p.handle_chunk(data(b"last"), t0());
    p.handle_stream_end(t0());
    assert!(
        matches!(p.poll_event(), Some(Event::Data(_))),
        "frames first"
    );
    assert!(matches!(p.poll_event(), Some(Event::PeerFinished)));
    assert!(p.poll_event().is_none());
    assert!(!p.has_stream());
    assert_eq!(p.state(), ConnState::Draining);
    assert!(!p.may_send_data(), "nothing new goes out");
    assert!(p.ended_deliberately(), "sends go elsewhere");
}

#[test]
fn stream_errors_before_the_preflight_end_the_connection() {
    let mut p = proto(Role::Acceptor, t0());
    p.handle_stream(t0());
    let pf = preflight(&PEER);
    p.handle_chunk(pf.slice(..pf.len() / 2), t0());
    p.handle_stream_end(t0());
    assert!(p.poll_event().is_none());
    assert!(matches!(
        closed_error(&p),
        (
            CoreError::Codec(CodecError::TruncatedFrame { .. }),
            Initiator::Remote
        )
    ));

    let mut p = proto(Role::Acceptor, t0());
    p.handle_stream(t0());
    p.handle_stream_error(CoreError::io("read", "reset"));
    assert!(matches!(
        closed_error(&p),
        (CoreError::Io { .. }, Initiator::Backend)
    ));
}

#[test]
fn a_read_error_after_activation_ends_only_the_stream() {
    let mut p = active(t0());
    p.handle_stream_error(CoreError::io("read", "reset"));
    assert!(matches!(p.poll_event(), Some(Event::StreamFailed(_))));
    assert_eq!(p.state(), ConnState::Active);
}

#[test]
fn the_peers_graceful_close_is_a_disconnect() {
    let mut p = active(t0());
    let close = Some((CloseCode::Graceful, Bytes::from_static(b"bye")));
    p.handle_connection_lost(CoreError::io("accept_uni", "closed"), close.clone(), t0());
    read_out(&mut p);
    let (e, by) = closed_error(&p);
    assert!(matches!(
        e,
        CoreError::ConnectionClosed {
            code: Some(CloseCode::Graceful),
            ..
        }
    ));
    assert_eq!(by, Initiator::Remote);
    assert!(p.ended_deliberately());
    assert_eq!(
        p.end_report(close.clone()),
        EndReport::Disconnected {
            url: url_of(&PEER),
            reason: Some("bye".to_owned())
        }
    );
    assert_eq!(p.end_report(close), EndReport::Silent, "reported once");
}

#[test]
fn a_lost_connection_is_reported_lost_and_unresponsive() {
    let mut p = active(t0());
    p.handle_connection_lost(CoreError::io("accept_uni", "timed out"), None, t0());
    read_out(&mut p);
    assert!(!p.ended_deliberately());
    match p.end_report(None) {
        EndReport::Lost {
            url,
            error,
            unresponsive,
        } => {
            assert_eq!(url, url_of(&PEER));
            assert!(error.contains("timed out"), "{error}");
            assert!(unresponsive);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_first_error_sticks() {
    let mut p = active(t0());
    assert!(p.close(CoreError::io("write", "first"), Initiator::Backend));
    assert!(!p.close(CoreError::Closed, Initiator::Local));
    assert!(!p.supersede(Initiator::Local));
    assert!(!p.activate());
    assert!(closed_error(&p).0.to_string().contains("first"));
    p.handle_stream(t0());
    p.handle_chunk(data(b"late"), t0());
    assert!(p.poll_event().is_none(), "nothing after the end");
    assert!(!p.has_stream());
}

#[test]
fn supersession_is_absorbing_and_silent() {
    let mut p = active(t0());
    assert!(p.supersede(Initiator::Local));
    assert_eq!(p.state(), ConnState::Superseded);
    assert!(!p.close(CoreError::Closed, Initiator::Local));
    assert_eq!(
        p.close_frame(),
        Some((CloseCode::Superseded, crate::SUPERSEDED_REASON.to_owned()))
    );
    assert!(p.ended_deliberately());
    assert_eq!(p.end_report(None), EndReport::Silent);
}

#[test]
fn the_peers_superseding_close_supersedes() {
    let mut p = proto(Role::Dialer, t0());
    p.handle_connection_lost(
        CoreError::io("accept_uni", "closed"),
        Some((CloseCode::Superseded, Bytes::new())),
        t0(),
    );
    assert_eq!(p.state(), ConnState::Superseded);
    assert_eq!(closed_error(&p).1, Initiator::Remote);
}

#[test]
fn our_deliberate_closes_report_nothing_from_the_reader() {
    for error in [
        CoreError::Closed,
        CoreError::Dropped,
        CoreError::Disconnected { reason: None },
    ] {
        let mut p = active(t0());
        p.close(error.clone(), Initiator::Local);
        assert_eq!(p.end_report(None), EndReport::Silent, "{error}");
    }
    let mut p = active(t0());
    p.close(
        CoreError::Disconnected {
            reason: Some("bye".into()),
        },
        Initiator::Local,
    );
    assert_eq!(
        p.close_frame(),
        Some((CloseCode::Graceful, "bye".to_owned()))
    );
    let mut p = active(t0());
    p.close(CoreError::Dropped, Initiator::Local);
    assert_eq!(p.close_frame().unwrap().0, CloseCode::Unspecified);
}

#[test]
fn a_connection_that_never_became_active_reports_nothing() {
    let mut p = proto(Role::Acceptor, t0());
    p.handle_connection_lost(CoreError::io("accept_uni", "gone"), None, t0());
    assert_eq!(p.end_report(None), EndReport::Silent);
}

#[test]
fn no_local_agents_is_lost_but_not_unresponsive() {
    let mut p = active(t0());
    p.close(CoreError::NoLocalAgents, Initiator::Local);
    assert!(matches!(
        p.end_report(None),
        EndReport::Lost {
            unresponsive: false,
            ..
        }
    ));
}

#[test]
fn take_report_claims_the_one_report() {
    let mut p = active(t0());
    assert!(p.take_report());
    assert!(!p.take_report());
    p.handle_connection_lost(CoreError::io("x", "y"), None, t0());
    assert_eq!(p.end_report(None), EndReport::Silent);
}

#[test]
fn a_preflight_must_be_a_kitsune2_preflight() {
    use K2WireType as T;
    let cases = [
        (Bytes::new(), "Unspecified"),
        (k2(T::Unspecified, b"x"), "Unspecified"),
        (k2(T::Notify, b"x"), "Notify"),
        (k2(T::Module, b"x"), "Module"),
        (k2(T::Disconnect, b"x"), "Disconnect"),
        (
            Bytes::from_static(&[0xff, 0xff, 0xff]),
            "not a kitsune2 message",
        ),
    ];
    for (data, found) in cases {
        let mut p = proto(Role::Acceptor, t0());
        p.handle_stream(t0());
        p.handle_chunk(wire(Frame::preflight(url_of(&PEER).as_str(), data)), t0());
        assert!(p.poll_event().is_none(), "{found}: nothing handed on");
        match closed_error(&p) {
            (CoreError::NotAPreflight { found: f }, Initiator::Remote) => {
                assert!(f.contains(found), "{f} vs {found}");
            }
            other => panic!("{found}: {other:?}"),
        }
        assert_eq!(p.remote_url(), None);
    }
}

#[test]
fn the_peer_url_is_normalized_to_a_lower_case_id() {
    let mut p = proto(Role::Acceptor, t0());
    p.handle_stream(t0());
    let upper = format!("http://h:1/{}", id_to_hex(&PEER).to_uppercase());
    p.handle_chunk(
        wire(Frame::preflight(upper, k2(K2WireType::Preflight, b"pf"))),
        t0(),
    );
    match p.poll_event() {
        Some(Event::Preflight { url, .. }) => assert_eq!(url, url_of(&PEER)),
        other => panic!("{other:?}"),
    }
    assert_eq!(p.remote_url(), Some(&url_of(&PEER)));
}

/// The first `n` bytes of a data frame whose payload is `len` bytes.
fn partial_data_frame(len: usize, n: usize) -> Bytes {
    let frame = wire(Frame::data(Bytes::from(vec![7u8; len])));
    frame.slice(..n)
}

#[test]
fn a_stalled_partial_frame_closes_the_connection_at_the_progress_deadline() {
    let t0 = t0();
    let mut p = active(t0);
    assert_eq!(p.poll_timeout(), None, "an idle connection has no deadline");
    p.handle_chunk(partial_data_frame(1000, 100), t0);
    assert!(p.poll_event().is_none());
    assert_eq!(p.partial_frame_bytes(), 95, "the payload bytes held");
    assert_eq!(p.poll_timeout(), Some(t0 + PROGRESS));
    // More bytes push the deadline on.
    let t1 = t0 + Duration::from_secs(20);
    p.handle_chunk(Bytes::from(vec![7u8; 100]), t1);
    assert_eq!(p.poll_timeout(), Some(t1 + PROGRESS));
    p.handle_timeout(t0 + PROGRESS);
    assert!(p.closed().is_none(), "the old deadline no longer counts");
    p.handle_timeout(t1 + PROGRESS);
    assert!(matches!(
        closed_error(&p),
        (CoreError::FrameStalled { secs: 30 }, Initiator::Remote)
    ));
}

#[test]
fn a_completed_frame_clears_the_progress_deadline() {
    let t0 = t0();
    let mut p = active(t0);
    let frame = wire(Frame::data(Bytes::from(vec![7u8; 1000])));
    p.handle_chunk(frame.slice(..500), t0);
    assert!(p.poll_event().is_none());
    p.handle_chunk(frame.slice(500..), t0);
    assert!(matches!(p.poll_event(), Some(Event::Data(_))));
    assert!(p.poll_event().is_none());
    assert_eq!(p.partial_frame_bytes(), 0);
    assert_eq!(p.poll_timeout(), None);
    p.handle_timeout(t0 + PROGRESS * 2);
    assert!(p.closed().is_none());
}

#[test]
fn a_frame_held_up_by_the_budget_names_the_budget() {
    let t0 = t0();
    let mut p = active(t0);
    p.handle_chunk(partial_data_frame(1000, 100), t0);
    assert!(p.poll_event().is_none());
    let t1 = t0 + Duration::from_secs(10);
    p.set_budget_wait(Some(4096), t1);
    p.set_budget_wait(Some(4096), t1 + PROGRESS);
    // Not the peer's stall: the wait may last two timeouts from its start.
    p.handle_timeout(t0 + PROGRESS);
    assert!(p.closed().is_none(), "no stall deadline while we wait");
    assert_eq!(p.poll_timeout(), Some(t1 + PROGRESS * 2));
    p.handle_timeout(t1 + PROGRESS * 2);
    let (error, by) = closed_error(&p);
    assert!(
        matches!(
            error,
            CoreError::FrameBudgetExhausted {
                budget: 4096,
                secs: 60
            }
        ),
        "{error}"
    );
    assert_eq!(by, Initiator::Local, "our limit, not the peer's fault");
    assert_eq!(p.close_frame().unwrap().0, CloseCode::Unspecified);
}

#[test]
fn a_partial_preflight_has_both_deadlines_and_the_earlier_wins() {
    let t0 = t0();
    let mut p = proto(Role::Acceptor, t0);
    p.handle_stream(t0);
    let pf = preflight(&PEER);
    p.handle_chunk(pf.slice(..pf.len() / 2), t0);
    assert!(p.poll_event().is_none());
    // The preflight deadline (10 s) comes before the progress one (30 s).
    assert_eq!(p.poll_timeout(), Some(t0 + TIMEOUT));
    p.handle_timeout(t0 + TIMEOUT);
    assert!(matches!(
        closed_error(&p),
        (CoreError::PreflightTimeout { .. }, _)
    ));
}

// ---- kitsune2/1 message streams ------------------------------------------

/// An active `/1` proto with its control stream open.
fn active_v1(t0: Instant) -> ConnProto {
    let mut p = proto(Role::Dialer, t0);
    p.set_wire_version(crate::version::WireVersion::V1, 2);
    assert!(p.poll_transmit().is_some());
    assert_eq!(p.handle_stream(t0), Some(StreamSlot::Control));
    p.handle_chunk(preflight(&PEER), t0);
    assert!(matches!(p.poll_event(), Some(Event::Preflight { .. })));
    assert!(p.activate());
    p
}

fn message_id(slot: Option<StreamSlot>) -> MsgId {
    match slot {
        Some(StreamSlot::Message(id)) => id,
        other => panic!("not a message stream: {other:?}"),
    }
}

#[test]
fn the_peers_fin_counts_once_its_message_streams_have_ended() {
    let mut p = active_v1(t0());
    let id = message_id(p.handle_stream(t0()));
    let large = data(b"the large one");
    p.handle_message_chunk(id, large.slice(..6), t0());
    // The control FIN arrives while the message stream is mid-frame.
    p.handle_stream_end(t0());
    assert!(p.poll_event().is_none(), "no PeerFinished yet");
    assert_eq!(p.state(), ConnState::Active);
    p.handle_message_chunk(id, large.slice(6..), t0());
    assert!(matches!(p.poll_event(), Some(Event::Data(d)) if &d[..] == b"the large one"));
    assert!(p.poll_event().is_none(), "the stream has not ended yet");
    p.handle_message_end(id);
    assert!(matches!(p.poll_event(), Some(Event::PeerFinished)));
    assert!(!p.has_message_stream(id));
}

#[test]
fn message_streams_wait_for_the_preflight_and_count_against_the_limit() {
    let mut p = proto(Role::Acceptor, t0());
    p.set_wire_version(crate::version::WireVersion::V1, 2);
    assert_eq!(p.handle_stream(t0()), Some(StreamSlot::Control));
    let a = message_id(p.handle_stream(t0()));
    p.handle_message_chunk(a, data(b"early"), t0());
    assert!(!p.may_read_messages(), "not before the preflight");
    assert!(p.poll_event().is_none());
    let _b = message_id(p.handle_stream(t0()));
    assert_eq!(p.handle_stream(t0()), None, "a third is one too many");
    let (e, by) = closed_error(&p);
    assert!(
        matches!(e, CoreError::TooManyMessageStreams { max: 2 }),
        "{e}"
    );
    assert_eq!(by, Initiator::Remote);
}

#[test]
fn a_preflight_or_a_second_frame_on_a_message_stream_ends_the_connection() {
    for bad in [
        preflight(&PEER),
        [data(b"one"), data(b"two")].concat().into(),
    ] {
        let mut p = active_v1(t0());
        let id = message_id(p.handle_stream(t0()));
        p.handle_message_chunk(id, bad, t0());
        while p.poll_event().is_some() {}
        let (e, _) = closed_error(&p);
        assert!(matches!(e, CoreError::Codec(_)), "{e}");
    }
}

#[test]
fn a_failed_message_stream_is_discarded_alone() {
    let mut p = active_v1(t0());
    let id = message_id(p.handle_stream(t0()));
    p.handle_message_chunk(id, data(b"cut short").slice(..7), t0());
    assert!(p.partial_frame_bytes() > 0);
    p.handle_message_error(id, CoreError::io("read", "reset"));
    assert!(matches!(p.poll_event(), Some(Event::StreamFailed(_))));
    assert_eq!(p.partial_frame_bytes(), 0);
    assert_eq!(p.state(), ConnState::Active);
    p.handle_chunk(data(b"small"), t0());
    assert!(matches!(p.poll_event(), Some(Event::Data(d)) if &d[..] == b"small"));
}

#[test]
fn a_silent_message_stream_is_dropped_at_the_progress_deadline() {
    let start = t0();
    let mut p = active_v1(start);
    let id = message_id(p.handle_stream(start));
    p.handle_message_chunk(id, data(b"never ends"), start);
    assert!(matches!(p.poll_event(), Some(Event::Data(_))));
    assert_eq!(p.poll_timeout(), Some(start + PROGRESS));
    p.handle_timeout(start + PROGRESS - Duration::from_millis(1));
    assert!(p.has_message_stream(id));
    p.handle_timeout(start + PROGRESS);
    assert!(!p.has_message_stream(id));
    assert!(matches!(
        p.poll_event(),
        Some(Event::StreamFailed(CoreError::FrameStalled { .. }))
    ));
    assert_eq!(p.state(), ConnState::Active);
    assert_eq!(p.poll_timeout(), None);
}

#[test]
fn on_v1_a_failed_control_stream_ends_the_connection() {
    let mut p = active_v1(t0());
    p.handle_stream_error(CoreError::io("read", "reset"));
    while p.poll_event().is_some() {}
    assert!(p.closed().is_some());
}
