//! `k2iroh`: run, debug and measure the kitsune2 iroh transport.

mod commands;
mod error;
mod node;
mod stats;

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Run, debug and measure the kitsune2 iroh transport.
#[derive(Debug, Parser)]
#[command(name = "k2iroh", version, about)]
struct Cli {
    /// More logging (-v info, -vv debug, -vvv trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start an embedded relay on loopback and N transports, send messages
    /// between every pair and report delivery, latency and throughput.
    Demo {
        /// Number of transports.
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// Messages from each transport to each other one.
        #[arg(long, default_value_t = 100)]
        messages: u64,
        /// Message size in bytes.
        #[arg(long, default_value_t = 1024)]
        size: usize,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Run an iroh relay server (plain HTTP) until Ctrl-C.
    Relay {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:3340")]
        bind: SocketAddr,
    },
    /// Print this node's peer URL, then every message received.
    Listen {
        /// Relay URL, e.g. http://127.0.0.1:3340/
        #[arg(long)]
        relay: String,
    },
    /// Send one message (or a file) and wait for its acknowledgement.
    Send {
        /// Relay URL.
        #[arg(long)]
        relay: String,
        /// The peer URL a `listen` node printed.
        peer_url: String,
        /// The message text.
        #[arg(required_unless_present = "file")]
        message: Option<String>,
        /// Send this file's bytes instead.
        #[arg(long, conflicts_with = "message")]
        file: Option<String>,
    },
    /// Measure round trips through the transport against a `listen` node.
    Ping {
        /// Relay URL.
        #[arg(long)]
        relay: String,
        /// The peer URL a `listen` node printed.
        peer_url: String,
        /// Number of round trips.
        #[arg(long, default_value_t = 10)]
        count: u64,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Throughput and 100-byte round trips between two transports, and
    /// the connect time of fresh connections.
    Bench {
        /// Relay URL; default: an embedded relay on loopback.
        #[arg(long)]
        relay: Option<String>,
        /// Message size in bytes.
        #[arg(long, default_value_t = 64 * 1024)]
        size: usize,
        /// Number of messages.
        #[arg(long, default_value_t = 1000)]
        count: u64,
        /// Number of fresh connections whose connect time is measured (a
        /// new node's first message and its acknowledgement); 0 skips it.
        #[arg(long, default_value_t = 10)]
        connects: u64,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
}

fn init_logging(verbose: u8) {
    // By default only this project's warnings: iroh logs errors for
    // ordinary shutdowns. `-v` shows everything at info.
    let level = match verbose {
        0 => "warn,iroh=off,iroh_relay=off,noq=off,noq_proto=off",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Demo {
                nodes,
                messages,
                size,
                json,
            } => commands::demo(nodes, messages, size, json).await,
            Command::Relay { bind } => commands::relay(bind).await,
            Command::Listen { relay } => commands::listen(&relay).await,
            Command::Send {
                relay,
                peer_url,
                message,
                file,
            } => commands::send(&relay, &peer_url, message, file).await,
            Command::Ping {
                relay,
                peer_url,
                count,
                json,
            } => commands::ping(&relay, &peer_url, count, json).await,
            Command::Bench {
                relay,
                size,
                count,
                connects,
                json,
            } => commands::bench(relay, size, count, connects, json).await,
        }
    });
    // Background tasks may still hold connections; do not wait for them.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
