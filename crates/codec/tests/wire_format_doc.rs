//! Decodes every worked example in docs/wire-format.md and checks the value
//! its `<!-- expect: ... -->` comment states, so the spec cannot drift from
//! the code.

mod common;

use common::{decode_all, hex};
use kitsune2_iroh_codec::{Frame, FrameOrder, Limits};

const DOC: &str = include_str!("../../../docs/wire-format.md");

/// (hex block, expectation) pairs, in document order.
fn examples() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut lines = DOC.lines();
    while let Some(line) = lines.next() {
        if line.trim() != "```hex" {
            continue;
        }
        let block: Vec<&str> = lines.by_ref().take_while(|l| l.trim() != "```").collect();
        let expect = lines
            .next()
            .and_then(|l| l.trim().strip_prefix("<!-- expect: "))
            .and_then(|l| l.strip_suffix(" -->"))
            .unwrap_or_else(|| panic!("hex block without an expect comment: {block:?}"));
        out.push((block.join(" "), expect.to_owned()));
    }
    out
}

fn describe(frame: &Frame) -> String {
    match frame {
        Frame::Data(d) => format!("data {:?}", String::from_utf8_lossy(d)),
        Frame::Preflight(p) if p.data.is_empty() => format!("preflight {:?}", p.url),
        Frame::Preflight(p) => {
            let hex: String = p.data.iter().map(|b| format!("{b:02x}")).collect();
            format!("preflight {:?} {hex}", p.url)
        }
    }
}

#[test]
fn every_doc_example_decodes_as_stated() {
    let examples = examples();
    assert!(
        examples.len() >= 6,
        "expected the doc's worked examples, found {}",
        examples.len()
    );
    for (block, expect) in examples {
        // `message stream: ...` examples are whole `kitsune2/1` message
        // streams: one data frame, then the end.
        let (order, expect) = match expect.strip_prefix("message stream: ") {
            Some(rest) => (FrameOrder::OneData, rest.to_owned()),
            None => (FrameOrder::Any, expect),
        };
        let got = match decode_all(&hex(&block), Limits::default(), order) {
            Ok(frames) => {
                assert_eq!(frames.len(), 1, "one frame per example: {block}");
                describe(&frames[0])
            }
            Err(e) => format!("error {e:?}"),
        };
        assert_eq!(got, expect, "example {block}");
    }
}

#[test]
fn doc_states_the_default_limit() {
    assert!(DOC.contains(&format!("{}", kitsune2_iroh_codec::DEFAULT_MAX_FRAME_BYTES)));
}
