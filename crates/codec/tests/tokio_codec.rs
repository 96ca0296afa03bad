//! `FramedRead` / `FramedWrite` over `tokio::io::duplex`.

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use kitsune2_iroh_codec::{CodecError, Frame, FrameCodec, FrameOrder, FramedError, Limits};
use tokio::io::AsyncWriteExt;
use tokio_util::codec::{FramedRead, FramedWrite};

#[tokio::test]
async fn frames_cross_a_duplex_pipe_in_order() {
    // A 64-byte pipe forces frames to be split across many reads.
    let (a, b) = tokio::io::duplex(64);
    let frames: Vec<Frame> =
        std::iter::once(Frame::preflight("http://x/y", Bytes::from_static(b"pf")))
            .chain((0..50u32).map(|i| Frame::data(Bytes::from(vec![i as u8; i as usize * 7]))))
            .collect();
    let sent = frames.clone();
    let writer = tokio::spawn(async move {
        let mut w = FramedWrite::new(a, FrameCodec::new(Limits::default()));
        for f in sent {
            w.send(f).await.unwrap();
        }
        w.close().await.unwrap();
    });
    let mut r = FramedRead::new(
        b,
        FrameCodec::with_order(Limits::default(), FrameOrder::PreflightThenData),
    );
    let mut got = Vec::new();
    while let Some(f) = r.next().await {
        got.push(f.unwrap());
        assert!(got.len() <= frames.len());
    }
    writer.await.unwrap();
    assert_eq!(got, frames);
}

#[tokio::test]
async fn truncated_stream_is_a_typed_error() {
    let (mut a, b) = tokio::io::duplex(64);
    a.write_all(&[1, 0, 0, 0, 9, b'a']).await.unwrap();
    drop(a);
    let mut r = FramedRead::new(b, FrameCodec::new(Limits::default()));
    match r.next().await {
        Some(Err(FramedError::Codec(CodecError::TruncatedFrame {
            buffered: 6,
            expected: 14,
        }))) => {}
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn oversized_frame_is_refused_on_both_sides() {
    let limits = Limits::new(16).unwrap();
    let (a, b) = tokio::io::duplex(64);
    let mut w = FramedWrite::new(a, FrameCodec::new(limits));
    let err = w
        .send(Frame::data(Bytes::from(vec![0; 12])))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            FramedError::Codec(CodecError::FrameTooLarge { len: 17, max: 16 })
        ),
        "{err}"
    );
    let mut raw = w.into_inner();
    raw.write_all(&[1, 0, 0, 1, 0]).await.unwrap();
    let mut r = FramedRead::new(b, FrameCodec::new(limits));
    match r.next().await {
        Some(Err(FramedError::Codec(CodecError::FrameTooLarge { len: 261, max: 16 }))) => {}
        other => panic!("unexpected {other:?}"),
    }
}
