//! Every error, every boundary, on both decoders and the encoder.

mod common;

use bytes::{Bytes, BytesMut};
use common::{decode_all, decode_all_bytesmut, hex};
use kitsune2_iroh_codec::{
    CodecError, DEFAULT_MAX_FRAME_BYTES, FRAME_HEADER_LEN, Frame, FrameDecoder, FrameHeader,
    FrameOrder, FrameType, Limits, StreamDecoder, encode_header,
};

/// Decodes with both decoders and checks they agree.
fn decode_both(wire: &[u8], limits: Limits, order: FrameOrder) -> Result<Vec<Frame>, CodecError> {
    let a = decode_all(wire, limits, order);
    let b = decode_all_bytesmut(wire, limits, order);
    assert_eq!(
        a, b,
        "StreamDecoder and FrameDecoder disagree on {wire:02x?}"
    );
    a
}

fn header(ty: u8, len: u32) -> Vec<u8> {
    let mut h = vec![ty];
    h.extend_from_slice(&len.to_be_bytes());
    h
}

#[test]
fn unknown_frame_type() {
    for ty in [2u8, 3, 0x7f, 0xff] {
        let err = decode_both(&header(ty, 0), Limits::default(), FrameOrder::Any).unwrap_err();
        assert_eq!(err, CodecError::UnknownFrameType(ty));
        assert!(err.to_string().contains(&format!("{ty:#04x}")), "{err}");
    }
    assert_eq!(FrameType::try_from(2), Err(CodecError::UnknownFrameType(2)));
}

#[test]
fn length_boundaries_against_a_small_limit() {
    let limits = Limits::new(100).unwrap();
    // max - 5: the frame is exactly the limit.
    let mut ok = header(1, 95);
    ok.extend(vec![7; 95]);
    assert_eq!(
        decode_both(&ok, limits, FrameOrder::Any),
        Ok(vec![Frame::data(Bytes::from(vec![7; 95]))])
    );
    // max - 4: one byte over; rejected from the header alone.
    let err = decode_both(&header(1, 96), limits, FrameOrder::Any).unwrap_err();
    assert_eq!(err, CodecError::FrameTooLarge { len: 101, max: 100 });
    assert_eq!(
        err.to_string(),
        "frame of 101 bytes (header + payload) exceeds the limit of 100 bytes"
    );
    // 0
    assert_eq!(
        decode_both(&header(1, 0), limits, FrameOrder::Any),
        Ok(vec![Frame::data(Bytes::new())])
    );
    // u32::MAX
    assert_eq!(
        decode_both(&header(0, u32::MAX), limits, FrameOrder::Any),
        Err(CodecError::FrameTooLarge {
            len: u64::from(u32::MAX) + 5,
            max: 100
        })
    );
}

#[test]
fn default_limit_boundaries() {
    let max = DEFAULT_MAX_FRAME_BYTES as u32;
    let mut d = StreamDecoder::new(Limits::default());
    d.feed_slice(&header(1, max - 5));
    assert_eq!(d.next_frame(), Ok(None), "exactly the limit is accepted");
    let mut d = StreamDecoder::new(Limits::default());
    d.feed_slice(&header(1, max - 4));
    assert_eq!(
        d.next_frame(),
        Err(CodecError::FrameTooLarge {
            len: u64::from(max) + 1,
            max: u64::from(max)
        })
    );
}

#[test]
fn huge_limit_is_capped_at_what_u32_lengths_describe() {
    let limits = Limits::new(usize::MAX).unwrap();
    let mut d = StreamDecoder::new(limits);
    d.feed_slice(&header(1, u32::MAX));
    assert_eq!(d.next_frame(), Ok(None));
    let err = encode_header(FrameType::Data, u64::from(u32::MAX) + 1, &limits).unwrap_err();
    assert_eq!(
        err,
        CodecError::FrameTooLarge {
            len: u64::from(u32::MAX) + 6,
            max: u64::from(u32::MAX) + 5
        }
    );
}

#[test]
fn limit_below_header_is_rejected() {
    assert_eq!(
        Limits::new(4),
        Err(CodecError::LimitTooSmall {
            max: 4,
            min: FRAME_HEADER_LEN
        })
    );
    assert_eq!(Limits::new(5).unwrap().max_frame_bytes(), 5);
    // A 5-byte limit carries only empty data frames.
    let limits = Limits::new(5).unwrap();
    assert!(Frame::data(Bytes::new()).encode(&limits).is_ok());
    assert_eq!(
        Frame::preflight("", Bytes::new()).encode(&limits),
        Err(CodecError::FrameTooLarge { len: 9, max: 5 })
    );
}

#[test]
fn encoder_rejects_oversized_frames_and_leaves_buffer_untouched() {
    let limits = Limits::new(20).unwrap();
    let frame = Frame::data(Bytes::from(vec![0; 16]));
    assert_eq!(
        frame.clone().encode(&limits),
        Err(CodecError::FrameTooLarge { len: 21, max: 20 })
    );
    let mut buf = BytesMut::from(&b"keep"[..]);
    assert!(frame.encode_into(&mut buf, &limits).is_err());
    assert_eq!(&buf[..], b"keep");
    // The preflight's URL counts towards the limit.
    let pf = Frame::preflight("0123456", Bytes::from_static(b"xxxx"));
    assert_eq!(pf.encoded_len(), 5 + 4 + 7 + 4);
    assert!(pf.clone().encode(&limits).is_ok(), "exactly the limit");
    assert_eq!(
        pf.encode(&Limits::new(19).unwrap()),
        Err(CodecError::FrameTooLarge { len: 20, max: 19 })
    );
}

#[test]
fn preflight_too_short() {
    for len in 0..4u32 {
        let mut wire = header(0, len);
        wire.extend(vec![0; len as usize]);
        let err = decode_both(&wire, Limits::default(), FrameOrder::Any).unwrap_err();
        assert_eq!(err, CodecError::PreflightTooShort { len: len as usize });
    }
}

#[test]
fn url_length_exceeds_payload() {
    let wire = hex("00 00000007 00000005 616263");
    assert_eq!(
        decode_both(&wire, Limits::default(), FrameOrder::Any),
        Err(CodecError::UrlLengthExceedsPayload {
            url_len: 5,
            available: 3
        })
    );
    let wire = hex("00 00000004 ffffffff");
    assert_eq!(
        decode_both(&wire, Limits::default(), FrameOrder::Any),
        Err(CodecError::UrlLengthExceedsPayload {
            url_len: u32::MAX,
            available: 0
        })
    );
}

#[test]
fn url_not_utf8() {
    let wire = hex("00 00000008 00000003 61ff62 99");
    let err = decode_both(&wire, Limits::default(), FrameOrder::Any).unwrap_err();
    assert_eq!(err, CodecError::UrlNotUtf8 { valid_up_to: 1 });
}

#[test]
fn empty_url_and_empty_preflight_data() {
    let wire = hex("00 00000004 00000000");
    assert_eq!(
        decode_both(&wire, Limits::default(), FrameOrder::PreflightThenData),
        Ok(vec![Frame::preflight("", Bytes::new())])
    );
    let wire = hex("00 00000007 00000003 616263");
    assert_eq!(
        decode_both(&wire, Limits::default(), FrameOrder::Any),
        Ok(vec![Frame::preflight("abc", Bytes::new())])
    );
}

#[test]
fn protocol_order() {
    let data = hex("01 00000000");
    let pf = hex("00 00000004 00000000");
    assert_eq!(
        decode_both(&data, Limits::default(), FrameOrder::PreflightThenData),
        Err(CodecError::ExpectedPreflight {
            found: FrameType::Data
        })
    );
    assert_eq!(
        decode_both(
            &[pf.clone(), pf.clone()].concat(),
            Limits::default(),
            FrameOrder::PreflightThenData
        ),
        Err(CodecError::UnexpectedPreflight)
    );
    // Order is checked at the header: a data frame claiming a large payload
    // is refused before its payload arrives.
    let mut d = StreamDecoder::with_order(Limits::default(), FrameOrder::PreflightThenData);
    d.feed_slice(&header(1, 1000));
    assert_eq!(
        d.next_frame(),
        Err(CodecError::ExpectedPreflight {
            found: FrameType::Data
        })
    );
    // Without order enforcement both sequences are fine.
    assert_eq!(
        decode_both(
            &[pf.clone(), pf].concat(),
            Limits::default(),
            FrameOrder::Any
        )
        .unwrap()
        .len(),
        2
    );
    assert_eq!(
        decode_both(&data, Limits::default(), FrameOrder::Any)
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn truncated_streams() {
    let limits = Limits::default();
    // Mid-header.
    assert_eq!(
        decode_both(&hex("01 0000"), limits, FrameOrder::Any),
        Err(CodecError::TruncatedFrame {
            buffered: 3,
            expected: 5
        })
    );
    // Mid-payload.
    assert_eq!(
        decode_both(&hex("01 00000004 6162"), limits, FrameOrder::Any),
        Err(CodecError::TruncatedFrame {
            buffered: 7,
            expected: 9
        })
    );
    // Clean end.
    assert_eq!(decode_both(&[], limits, FrameOrder::Any), Ok(vec![]));
}

#[test]
fn errors_are_sticky() {
    let mut d = StreamDecoder::new(Limits::default());
    d.feed_slice(&hex("07 00000000"));
    assert_eq!(d.next_frame(), Err(CodecError::UnknownFrameType(7)));
    d.feed_slice(&hex("01 00000000"));
    assert_eq!(d.next_frame(), Err(CodecError::UnknownFrameType(7)));
    assert_eq!(d.buffered_len(), 0, "bytes after an error are dropped");
    assert_eq!(d.finish(), Err(CodecError::UnknownFrameType(7)));

    let mut d = FrameDecoder::new(Limits::default());
    let mut buf = BytesMut::from(&hex("07 00000000 01 00000000")[..]);
    assert_eq!(d.decode(&mut buf), Err(CodecError::UnknownFrameType(7)));
    assert_eq!(d.decode(&mut buf), Err(CodecError::UnknownFrameType(7)));
}

#[test]
fn frame_decoder_contract() {
    let mut d = FrameDecoder::new(Limits::default());
    let mut buf = BytesMut::new();
    assert_eq!(d.decode(&mut buf), Ok(None), "an empty buffer is legal");
    buf.extend_from_slice(&hex("01 0000"));
    assert_eq!(d.decode(&mut buf), Ok(None));
    assert_eq!(buf.len(), 3, "a partial header is not consumed");
    buf.extend_from_slice(&hex("0003 61"));
    assert_eq!(d.decode(&mut buf), Ok(None));
    assert_eq!(buf.len(), 1, "a valid header is consumed and remembered");
    assert!(d.is_mid_frame(&buf));
    buf.extend_from_slice(&hex("6263 01"));
    assert_eq!(
        d.decode(&mut buf),
        Ok(Some(Frame::data(Bytes::from_static(b"abc"))))
    );
    assert_eq!(&buf[..], &[1], "exactly the frame's bytes were removed");
    assert!(d.is_mid_frame(&buf));
}

#[test]
fn error_messages_carry_numbers() {
    let cases = [
        (CodecError::PreflightTooShort { len: 3 }, "3"),
        (
            CodecError::UrlLengthExceedsPayload {
                url_len: 9,
                available: 2,
            },
            "9",
        ),
        (CodecError::UrlNotUtf8 { valid_up_to: 4 }, "4"),
        (
            CodecError::ExpectedPreflight {
                found: FrameType::Data,
            },
            "data",
        ),
        (
            CodecError::TruncatedFrame {
                buffered: 6,
                expected: 11,
            },
            "6 of 11",
        ),
        (CodecError::LimitTooSmall { max: 2, min: 5 }, "2"),
    ];
    for (err, needle) in cases {
        assert!(err.to_string().contains(needle), "{err}");
    }
}

#[test]
fn header_round_trip() {
    let h = FrameHeader {
        frame_type: FrameType::Preflight,
        payload_len: 0x0102_0304,
    };
    assert_eq!(h.to_bytes(), [0, 1, 2, 3, 4]);
    assert_eq!(FrameHeader::parse(h.to_bytes()), Ok(h));
}

#[test]
fn message_stream_order_is_one_data_frame_then_the_end() {
    let data = hex("01 00000002 6869");
    let pf = hex("00 00000004 00000000");
    let one = |wire: &[u8]| {
        let mut d = StreamDecoder::with_order(Limits::default(), FrameOrder::OneData);
        d.feed_slice(wire);
        let mut frames = Vec::new();
        loop {
            match d.next_frame() {
                Ok(Some(f)) => frames.push(f),
                Ok(None) => return d.finish().map(|()| frames),
                Err(e) => return Err(e),
            }
        }
    };
    assert_eq!(one(&data), Ok(vec![Frame::data(Bytes::from_static(b"hi"))]));
    assert_eq!(one(&pf), Err(CodecError::PreflightOnMessageStream));
    assert_eq!(
        one(&[data.clone(), data.clone()].concat()),
        Err(CodecError::SecondFrameOnMessageStream)
    );
    // An empty stream carries no message: truncated, as a partial one.
    assert_eq!(
        one(&[]),
        Err(CodecError::TruncatedFrame {
            buffered: 0,
            expected: FRAME_HEADER_LEN as u64
        })
    );
    assert_eq!(
        one(&data[..4]),
        Err(CodecError::TruncatedFrame {
            buffered: 4,
            expected: FRAME_HEADER_LEN as u64
        })
    );
    // Checked at the header, before a second payload is buffered.
    let mut d = StreamDecoder::with_order(Limits::default(), FrameOrder::OneData);
    d.feed_slice(&data);
    assert!(matches!(d.next_frame(), Ok(Some(_))));
    d.feed_slice(&header(1, 1000));
    assert_eq!(d.next_frame(), Err(CodecError::SecondFrameOnMessageStream));
    assert_eq!(
        decode_both(&data, Limits::default(), FrameOrder::OneData).map(|f| f.len()),
        Ok(1)
    );
}
