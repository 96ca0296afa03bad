//! Runs the `k2iroh` binary as a user would: each subcommand, and each kind
//! of bad input with its exit code and message. Loopback only.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_k2iroh");

fn run(args: &[&str]) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Bounded: no command here should take a minute.
    for _ in 0..1200 {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    panic!("k2iroh {args:?} did not finish within 60 s");
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A child process whose stdout lines arrive on a channel; killed on drop.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Running {
    fn start(args: &[&str]) -> Self {
        let mut child = Command::new(BIN)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, lines }
    }

    fn line(&self) -> String {
        self.lines
            .recv_timeout(Duration::from_secs(30))
            .expect("no output line within 30 s")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn demo_delivers_everything_and_reports_json() {
    let o = run(&[
        "demo",
        "--nodes",
        "3",
        "--messages",
        "5",
        "--size",
        "200",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["sent"], 30);
    assert_eq!(v["delivered"], 30);
    assert_eq!(v["lost"], 0);
    assert_eq!(v["bytes"], 30 * 200);
    assert_eq!(v["pairs"].as_array().unwrap().len(), 6);
    assert!(v["rtt_p99_ms"].as_f64().unwrap() > 0.0);
}

#[test]
fn demo_prints_a_table() {
    let o = run(&["demo", "--nodes", "2", "--messages", "3"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("rtt p50"), "{out}");
    assert!(
        out.contains("6 messages of 1024 B sent, 6 delivered, 0 lost"),
        "{out}"
    );
}

#[test]
fn relay_listen_send_ping_across_processes() {
    let port = free_port();
    let relay = Running::start(&["relay", "--bind", &format!("127.0.0.1:{port}")]);
    let first = relay.line();
    let relay_url = first.rsplit("--relay ").next().unwrap().trim().to_owned();
    assert!(
        relay_url.starts_with(&format!("http://127.0.0.1:{port}")),
        "{first}"
    );

    let listen = Running::start(&["listen", "--relay", &relay_url]);
    let peer = listen.line();
    assert!(
        peer.starts_with(&relay_url),
        "peer url {peer} is under the relay url"
    );

    let o = run(&["send", "--relay", &relay_url, &peer, "hello over iroh"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("delivered 15 bytes"));
    let got = listen.line();
    assert!(got.ends_with("15 bytes: hello over iroh"), "{got}");

    let file = std::env::temp_dir().join(format!("k2iroh-test-{port}.bin"));
    std::fs::write(&file, [0xffu8, 0xfe, 0x00]).unwrap();
    let o = run(&[
        "send",
        "--relay",
        &relay_url,
        &peer,
        "--file",
        file.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(listen.line().ends_with("3 bytes (binary)"));
    let _ = std::fs::remove_file(&file);

    let o = run(&[
        "ping", "--relay", &relay_url, &peer, "--count", "3", "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["count"], 3);
    assert!(v["p99_ms"].as_f64().unwrap() >= v["min_ms"].as_f64().unwrap());
}

#[test]
fn bench_counts_and_checks_every_message() {
    let o = run(&[
        "bench",
        "--size",
        "4096",
        "--count",
        "50",
        "--connects",
        "3",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["delivered"], 50);
    assert_eq!(
        (v["lost"].as_u64(), v["corrupt"].as_u64()),
        (Some(0), Some(0))
    );
    assert!(v["throughput_mb_s"].as_f64().unwrap() > 0.0);
    assert_eq!(v["connects"], 3);
    let (p50, p99) = (
        v["connect_p50_ms"].as_f64().unwrap(),
        v["connect_p99_ms"].as_f64().unwrap(),
    );
    assert!(0.0 < p50 && p50 <= p99, "{v}");
}

#[test]
fn bad_input_gets_one_line_and_a_nonzero_exit() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["send", "--relay", "http://127.0.0.1:9/", "not a url", "hi"],
            "invalid url",
        ),
        (
            &[
                "send",
                "--relay",
                "http://127.0.0.1:9/",
                "http://127.0.0.1:9/abc",
                "hi",
            ],
            "invalid url",
        ),
        (
            &[
                "ping",
                "--relay",
                "::not-a-relay::",
                "http://h:1/abc",
                "--count",
                "1",
            ],
            "invalid url",
        ),
        (&["demo", "--nodes", "1"], "must be at least 1"),
        (
            &[
                "ping",
                "--relay",
                "http://127.0.0.1:9/",
                "http://h:1/abc",
                "--count",
                "0",
            ],
            "must be at least 1",
        ),
    ];
    for (args, needle) in cases {
        let o = run(args);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", stderr(&o));
        let err = stderr(&o);
        assert!(
            err.starts_with("error: ") && err.contains(needle),
            "{args:?}: {err}"
        );
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn missing_file_and_unreachable_relay_and_peer() {
    let id = "ab".repeat(32);
    // Nothing listens on port 9: the relay is unreachable.
    let o = run(&["listen", "--relay", "http://127.0.0.1:9/"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("unreachable"), "{}", stderr(&o));

    let port = free_port();
    let relay = Running::start(&["relay", "--bind", &format!("127.0.0.1:{port}")]);
    let relay_url = relay
        .line()
        .rsplit("--relay ")
        .next()
        .unwrap()
        .trim()
        .to_owned();
    let missing = format!("{relay_url}{id}");
    let o = run(&[
        "send",
        "--relay",
        &relay_url,
        &missing,
        "--file",
        "/nonexistent/k2iroh",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("cannot read /nonexistent/k2iroh"),
        "{}",
        stderr(&o)
    );

    // A well-formed peer URL nobody answers for.
    let o = run(&["send", "--relay", &relay_url, &missing, "anyone?"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).starts_with("error: "), "{}", stderr(&o));
}
