//! The `warren-broker` binary: the bundled AMQP 0-9-1 broker as a standalone server.
//!
//! Run with: `cargo run -p warren-broker -- --listen 127.0.0.1:5672`

use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;
use warren_broker::{Broker, Limits};

/// An AMQP 0-9-1 broker compatible with RabbitMQ clients.
#[derive(Debug, Parser)]
#[command(name = "warren-broker", version, about)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0:5672")]
    listen: SocketAddr,
    /// Directory for durable entities and persistent messages.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Configuration file (JSON): {"users": [{"name": "...", "password": "..."}],
    /// "vhosts": ["..."], "heartbeat": 60, "frame_max": 131072, "channel_max": 2047,
    /// "max_message_size": 134217728}.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Threads serving connections. The broker's state sits behind one lock, so extra threads
    /// only parallelise framing and socket work; one thread measured fastest on 2 cores (see
    /// BENCHMARKS.md). Raise it on machines with many cores and many busy connections.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    worker_threads: u16,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    users: Vec<UserEntry>,
    #[serde(default)]
    vhosts: Vec<String>,
    heartbeat: Option<u16>,
    frame_max: Option<u32>,
    channel_max: Option<u16>,
    max_message_size: Option<u64>,
}

#[derive(Debug, serde::Deserialize)]
struct UserEntry {
    name: String,
    password: String,
}

fn load_config(path: &PathBuf) -> Result<ConfigFile, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("invalid config {}: {e}", path.display()))
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let runtime = match args.worker_threads {
        1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(usize::from(n))
            .enable_all()
            .build(),
    };
    match runtime {
        Ok(runtime) => runtime.block_on(serve(args)),
        Err(e) => {
            eprintln!("warren-broker: cannot start the runtime: {e}");
            std::process::ExitCode::from(1)
        }
    }
}

async fn serve(args: Args) -> std::process::ExitCode {
    let config = match args.config.as_ref().map(load_config).transpose() {
        Ok(c) => c.unwrap_or_default(),
        Err(e) => {
            eprintln!("warren-broker: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let mut limits = Limits::default();
    if let Some(v) = config.heartbeat {
        limits.heartbeat = v;
    }
    if let Some(v) = config.frame_max {
        limits.frame_max = v;
    }
    if let Some(v) = config.channel_max {
        limits.channel_max = v;
    }
    if let Some(v) = config.max_message_size {
        limits.max_message_size = v;
    }
    let mut builder = Broker::builder().listen(args.listen).limits(limits);
    if let Some(dir) = args.data_dir {
        builder = builder.data_dir(dir);
    }
    for u in config.users {
        builder = builder.user(u.name, u.password);
    }
    for v in config.vhosts {
        builder = builder.vhost(v);
    }
    let broker = match builder.start().await {
        Ok(b) => b,
        Err(e) => {
            eprintln!("warren-broker: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    println!("warren-broker ready on {}", broker.local_addr());
    let _ = tokio::signal::ctrl_c().await;
    broker.shutdown().await;
    std::process::ExitCode::SUCCESS
}
