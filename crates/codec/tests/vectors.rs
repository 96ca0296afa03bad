//! Fixed wire vectors: the exact bytes `kitsune2_transport_iroh` 0.6.0-dev.3
//! writes for the same frames (its `encode_frame`: type byte, u32 BE payload
//! length, payload; preflight payload = u32 BE URL length, URL, preflight).

mod common;

use bytes::{Bytes, BytesMut};
use common::{decode_all, hex};
use kitsune2_iroh_codec::{Frame, FrameOrder, Limits};

/// (frame, wire bytes) pairs. The first two use the inputs of the incumbent's
/// own frame tests.
fn vectors() -> Vec<(Frame, Vec<u8>)> {
    vec![
        (
            Frame::preflight(
                "http://some.url:0/withendpointid",
                Bytes::from_static(b"the preflight"),
            ),
            hex("00 00000031 00000020
                 687474703a2f2f736f6d652e75726c3a302f77697468656e64706f696e746964
                 74686520707265666c69676874"),
        ),
        (
            Frame::data(Bytes::from_static(b"some message")),
            hex("01 0000000c 736f6d65206d657373616765"),
        ),
        (Frame::data(Bytes::new()), hex("01 00000000")),
        (
            Frame::preflight("", Bytes::new()),
            hex("00 00000004 00000000"),
        ),
        (
            Frame::data(Bytes::from(vec![0xab; 300])),
            [hex("01 0000012c"), vec![0xab; 300]].concat(),
        ),
    ]
}

#[test]
fn encode_matches_vectors() {
    let limits = Limits::default();
    for (frame, wire) in vectors() {
        let encoded = frame.clone().encode(&limits).unwrap();
        assert_eq!(&encoded.to_bytes()[..], &wire[..], "{frame:?}");
        let mut buf = BytesMut::new();
        frame.encode_into(&mut buf, &limits).unwrap();
        assert_eq!(&buf[..], &wire[..], "{frame:?}");
        assert_eq!(frame.encoded_len(), wire.len() as u64);
    }
}

#[test]
fn decode_matches_vectors() {
    for (frame, wire) in vectors() {
        assert_eq!(
            decode_all(&wire, Limits::default(), FrameOrder::Any),
            Ok(vec![frame])
        );
    }
}

#[test]
fn protocol_stream_vector() {
    // A dialer's whole stream: preflight, then two messages.
    let wire = hex("00 0000000e 0000000a 687474703a2f2f612f62
                    01 00000001 41
                    01 00000002 4243");
    let frames = decode_all(&wire, Limits::default(), FrameOrder::PreflightThenData).unwrap();
    assert_eq!(
        frames,
        vec![
            Frame::preflight("http://a/b", Bytes::new()),
            Frame::data(Bytes::from_static(b"A")),
            Frame::data(Bytes::from_static(b"BC")),
        ]
    );
}
