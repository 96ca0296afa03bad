//! A connected pair of nodes, A measuring and B counting and echoing,
//! of any kind the end-to-end benches compare: ours, the incumbent, and
//! the two bare iroh baselines (`super::bare`).

use std::time::{Duration, Instant};

use bytes::Bytes;
use iroh::endpoint::{Connection, SendStream};
use kitsune2_api::{DynTransport, DynTransportFactory, Url};
use kitsune2_iroh::relay::EmbeddedRelay;
use kitsune2_iroh::{Endpoint, RelayUrl};
use tokio::sync::mpsc;
use tokio::time::{timeout, timeout_at};

use super::{ECHO, MESSAGE_BOUND, bare, factory, factory_relay_only, node, space, tagged};

/// What a pair is made of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Two transports of this crate.
    Ours,
    /// Two transports of `kitsune2_transport_iroh`.
    Incumbent,
    /// Two bare iroh endpoints carrying the payloads as they are.
    Bare,
    /// Two bare iroh endpoints carrying the payloads wrapped and unwrapped
    /// as kitsune2 does (`bare::k2_wrap`, `bare::k2_unwrap`).
    BareK2,
}

/// What A sends through.
enum Sender {
    /// A kitsune2 transport and B's URL.
    K2 { transport: DynTransport, to: Url },
    /// A's uni stream to B; with `k2`, each payload wrapped as kitsune2
    /// wraps it (`bare::k2_wrap`).
    Bare { send: SendStream, k2: bool },
}

impl Sender {
    /// Sends one message to B; panics, naming the pair, if that fails.
    async fn send(&mut self, name: &str, msg: Bytes) {
        match self {
            Self::K2 { transport, to } => transport
                .send_space_notify(to.clone(), space(), msg)
                .await
                .unwrap_or_else(|e| panic!("{name}: send to B failed: {e}")),
            Self::Bare { send, k2: false } => bare::write_frame(send, msg).await,
            Self::Bare { send, k2: true } => bare::write_frame(send, bare::k2_wrap(msg)).await,
        }
    }
}

/// What is closed at the end.
enum Owned {
    /// A's and B's transports.
    K2([DynTransport; 2]),
    /// A's and B's endpoints.
    Bare([Endpoint; 2]),
}

/// A connected pair: A measures, B counts and echoes.
pub struct Pair {
    /// The pair's name in the benches' output.
    pub name: &'static str,
    /// What the pair is made of.
    pub kind: Kind,
    /// What A sends through.
    send: Sender,
    /// The `SINK` messages B received.
    b_sink: mpsc::UnboundedReceiver<Bytes>,
    /// `ECHO` messages back at A.
    a_echo: mpsc::UnboundedReceiver<Bytes>,
    /// A's transport, for its network stats (kitsune2 pairs).
    a_transport: Option<DynTransport>,
    /// A's connection (bare pairs).
    a_conn: Option<Connection>,
    /// The pair's tasks, aborted on close.
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// What is closed on close.
    owned: Owned,
}

impl Pair {
    /// The pairs the end-to-end benches compare, over `relay`, each
    /// connected and warmed up by one round trip: ours, the incumbent,
    /// `bare` and `bare_k2`; with `RELAY_ONLY` set ([`relay_only`]), ours
    /// and the two bare pairs bound without IP transports (names ending in
    /// `_relay`), and no incumbent, which has no such mode.
    pub async fn all(relay: &EmbeddedRelay) -> Vec<Self> {
        let url = relay.url().to_string();
        if relay_only() {
            vec![
                Self::k2("ours_relay", &url, factory_relay_only, true).await,
                Self::bare("bare_relay", relay.url(), true, false).await,
                Self::bare("bare_k2_relay", relay.url(), true, true).await,
            ]
        } else {
            vec![
                Self::k2("ours", &url, || factory(true), true).await,
                Self::k2("theirs", &url, || factory(false), false).await,
                Self::bare("bare", relay.url(), false, false).await,
                Self::bare("bare_k2", relay.url(), false, true).await,
            ]
        }
    }

    /// A kitsune2 pair of `factory`'s crate.
    pub async fn k2(
        name: &'static str,
        relay_url: &str,
        factory: fn() -> DynTransportFactory,
        ours: bool,
    ) -> Self {
        let t0 = Instant::now();
        let a = node(factory(), relay_url, ours).await;
        let b = node(factory(), relay_url, ours).await;
        eprintln!(
            "{name}: two nodes have listening addresses after {:?}",
            t0.elapsed()
        );
        // B's echo task: every ECHO message goes back to A.
        let mut echo_rx = b.echo;
        let b_transport = b.transport.clone();
        let a_url = a.url.clone();
        let echo_task = tokio::spawn(async move {
            while let Some(data) = echo_rx.recv().await {
                if let Err(e) = b_transport
                    .send_space_notify(a_url.clone(), space(), data)
                    .await
                {
                    eprintln!("echo send failed: {e}");
                }
            }
        });
        let mut pair = Self {
            name,
            kind: if ours { Kind::Ours } else { Kind::Incumbent },
            send: Sender::K2 {
                transport: a.transport.clone(),
                to: b.url.clone(),
            },
            b_sink: b.sink,
            a_echo: a.echo,
            a_transport: Some(a.transport.clone()),
            a_conn: None,
            tasks: vec![echo_task],
            owned: Owned::K2([a.transport, b.transport]),
        };
        pair.warm_up(t0).await;
        pair
    }

    /// A bare iroh pair: `relay_only` binds it without IP transports;
    /// `k2` wraps and unwraps each payload as kitsune2 does.
    pub async fn bare(name: &'static str, relay: &RelayUrl, relay_only: bool, k2: bool) -> Self {
        let t0 = Instant::now();
        let a = bare::endpoint(relay, relay_only).await;
        let b = bare::endpoint(relay, relay_only).await;
        eprintln!("{name}: two endpoints online after {:?}", t0.elapsed());
        let t1 = Instant::now();
        let (a_conn, b_conn) =
            tokio::join!(bare::connect(&a, bare::addr(&b, relay)), bare::accept(&b));
        let a_send = a_conn.open_uni().await.expect("A opens its stream");
        let mut b_send = b_conn.open_uni().await.expect("B opens its stream");
        let (sink_tx, b_sink) = mpsc::unbounded_channel();
        let (b_echo_tx, mut b_echo) = mpsc::unbounded_channel();
        let (a_echo_tx, a_echo) = mpsc::unbounded_channel();
        let (unused_tx, _) = mpsc::unbounded_channel();
        let b_reader = tokio::spawn(bare::read_loop(b_conn, k2, sink_tx, b_echo_tx));
        let a_reader = tokio::spawn(bare::read_loop(a_conn.clone(), k2, unused_tx, a_echo_tx));
        let echo_task = tokio::spawn(async move {
            while let Some(data) = b_echo.recv().await {
                let data = if k2 { bare::k2_wrap(data) } else { data };
                bare::write_frame(&mut b_send, data).await;
            }
        });
        let mut pair = Self {
            name,
            kind: if k2 { Kind::BareK2 } else { Kind::Bare },
            send: Sender::Bare { send: a_send, k2 },
            b_sink,
            a_echo,
            a_transport: None,
            a_conn: Some(a_conn),
            tasks: vec![b_reader, a_reader, echo_task],
            owned: Owned::Bare([a, b]),
        };
        pair.warm_up(t1).await;
        pair
    }

    /// One round trip, which connects the pair; reports how long it took
    /// and whether the connection is direct.
    async fn warm_up(&mut self, t: Instant) {
        let t1 = Instant::now();
        self.round_trip(&tagged(ECHO, 16)).await;
        eprintln!(
            "{}: first round trip (connect) took {:?} ({:?} since {}); direct: {}",
            self.name,
            t1.elapsed(),
            t.elapsed(),
            if self.a_conn.is_some() {
                "the dial"
            } else {
                "the nodes' start"
            },
            self.direct().await
        );
    }

    /// Sends one message from A and waits for B's echo.
    pub async fn round_trip(&mut self, msg: &Bytes) -> Duration {
        let start = Instant::now();
        self.send.send(self.name, msg.clone()).await;
        let back = timeout(MESSAGE_BOUND, self.a_echo.recv())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{}: echo of a {}-byte message not back within {MESSAGE_BOUND:?}",
                    self.name,
                    msg.len()
                )
            })
            .unwrap_or_else(|| panic!("{}: A's handler is gone", self.name));
        let elapsed = start.elapsed();
        assert_eq!(
            back.len(),
            msg.len(),
            "{}: echo has the wrong size",
            self.name
        );
        elapsed
    }

    /// Sends `n` copies of `msg` from A, one after the other, and waits
    /// until B has received all of them.
    pub async fn batch(&mut self, msg: &Bytes, n: usize) -> Duration {
        let start = Instant::now();
        let deadline = tokio::time::Instant::from_std(start) + MESSAGE_BOUND;
        for _ in 0..n {
            self.send.send(self.name, msg.clone()).await;
        }
        for got in 0..n {
            let got_msg = timeout_at(deadline, self.b_sink.recv())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "{}: B received {got} of {n} messages of {} bytes within {MESSAGE_BOUND:?}",
                        self.name,
                        msg.len()
                    )
                })
                .unwrap_or_else(|| panic!("{}: B's handler is gone", self.name));
            assert_eq!(
                got_msg.len(),
                msg.len(),
                "{}: message has the wrong size",
                self.name
            );
        }
        start.elapsed()
    }

    /// Like [`Self::batch`], but the whole batch, sends included, is
    /// bounded by `bound`, and with `drain` B's messages are taken off its
    /// channel while A is still sending, as a handler that keeps up would
    /// take them, so a long batch does not pile up in memory (without it,
    /// they are taken once A has sent them all, as [`Self::batch`] does).
    pub async fn stream(
        &mut self,
        msg: &Bytes,
        n: usize,
        bound: Duration,
        drain: bool,
    ) -> Duration {
        let name = self.name;
        let start = Instant::now();
        let send = async {
            for _ in 0..n {
                self.send.send(name, msg.clone()).await;
            }
        };
        let sink = &mut self.b_sink;
        let recv = async {
            for _ in 0..n {
                let got = sink
                    .recv()
                    .await
                    .unwrap_or_else(|| panic!("{name}: B's handler is gone"));
                assert_eq!(got.len(), msg.len(), "{name}: message has the wrong size");
            }
        };
        let both = async {
            if drain {
                tokio::join!(send, recv);
            } else {
                send.await;
                recv.await;
            }
        };
        timeout(bound, both).await.unwrap_or_else(|_| {
            panic!(
                "{name}: {n} messages of {} bytes not all sent and received within {bound:?}",
                msg.len()
            )
        });
        start.elapsed()
    }

    /// Whether A's connection to B is direct: A's network stats for a
    /// kitsune2 pair, the selected path of A's connection for a bare one.
    pub async fn direct(&self) -> String {
        if let Some(conn) = &self.a_conn {
            return format!(
                "[{}]",
                conn.paths()
                    .iter()
                    .filter(|p| p.is_selected())
                    .map(|p| p.is_ip().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        let Some(transport) = &self.a_transport else {
            return "unknown".to_owned();
        };
        match transport.dump_network_stats().await {
            Ok(s) => format!(
                "{:?}",
                s.transport_stats
                    .connections
                    .iter()
                    .map(|c| c.is_direct)
                    .collect::<Vec<_>>()
            ),
            Err(e) => format!("unknown ({e})"),
        }
    }

    /// Aborts the pair's tasks and closes its transports or endpoints.
    pub async fn close(self) {
        for t in self.tasks {
            t.abort();
        }
        match self.owned {
            Owned::K2(transports) => {
                for t in transports {
                    t.close().await;
                }
            }
            Owned::Bare(endpoints) => {
                for ep in endpoints {
                    bare::close(ep).await;
                }
            }
        }
    }
}

/// Whether `RELAY_ONLY` is set (to anything but `0`).
pub fn relay_only() -> bool {
    std::env::var("RELAY_ONLY").is_ok_and(|v| v != "0")
}
