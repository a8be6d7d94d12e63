//! The `warren-broker` binary: the bundled AMQP 0-9-1 broker as a standalone server.
//!
//! Run with: `cargo run -p warren-broker -- --listen 127.0.0.1:5672`. Durable by default: it
//! keeps durable definitions and persistent messages in a data directory (see
//! `default_data_dir`) unless `--memory-only` says otherwise. SIGTERM and SIGINT stop it
//! gracefully (connections closed with 320 CONNECTION_FORCED, storage flushed, exit status 0).
//! `docs/operations.md` describes every flag.

use clap::Parser;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use warren_broker::{Broker, Limits};

/// An AMQP 0-9-1 broker compatible with RabbitMQ clients.
#[derive(Debug, Parser)]
#[command(name = "warren-broker", version, about)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0:5672")]
    listen: SocketAddr,
    /// Directory for durable entities and persistent messages (created if missing). Default:
    /// $WARREN_DATA_DIR, else $XDG_DATA_HOME/warren-broker, else
    /// $HOME/.local/share/warren-broker, else ./warren-data.
    #[arg(long, conflicts_with = "memory_only")]
    data_dir: Option<PathBuf>,
    /// Keep nothing on disk: durable queues, exchanges and persistent messages are lost when
    /// the broker stops. Logs a warning at start and whenever a durable queue is declared.
    #[arg(long)]
    memory_only: bool,
    /// Configuration file (JSON): {"users": [{"name": "...", "password": "..."}],
    /// "vhosts": ["..."], "heartbeat": 60, "frame_max": 131072, "channel_max": 2047,
    /// "max_message_size": 134217728}.
    #[arg(long)]
    config: Option<PathBuf>,
    /// A RabbitMQ definitions file (JSON, as `GET /api/definitions` exports it) imported at
    /// every start, like RabbitMQ's `load_definitions`: users with their password hashes,
    /// vhosts, permissions, topic permissions, vhost limits, exchanges, queues and bindings.
    #[arg(long)]
    definitions: Option<PathBuf>,
    /// Threads serving connections. The broker's state sits behind one lock, so extra threads
    /// only parallelise framing and socket work; one thread measured fastest on 2 cores (see
    /// BENCHMARKS.md). Raise it on machines with many cores and many busy connections.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    worker_threads: u16,
    /// Address of the management HTTP API (RabbitMQ's /api, rabbitmqadmin, warrenctl).
    #[arg(long, default_value = "0.0.0.0:15672")]
    management_listen: SocketAddr,
    /// Serve no management HTTP API.
    #[arg(long)]
    no_management: bool,
    /// Address of the Prometheus endpoint (/metrics, /metrics/per-object).
    #[arg(long, default_value = "0.0.0.0:15692")]
    prometheus_listen: SocketAddr,
    /// Serve no Prometheus endpoint.
    #[arg(long)]
    no_prometheus: bool,
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

/// The data directory used without `--data-dir` or `--memory-only`: `$WARREN_DATA_DIR`, else
/// `$XDG_DATA_HOME/warren-broker` (when absolute, as the XDG spec requires), else
/// `$HOME/.local/share/warren-broker`, else `./warren-data`. Empty variables count as unset.
/// `var` looks an environment variable up (`std::env::var_os` outside tests).
fn default_data_dir(var: impl Fn(&str) -> Option<OsString>) -> PathBuf {
    let set = |name: &str| var(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = set("WARREN_DATA_DIR") {
        return dir;
    }
    if let Some(xdg) = set("XDG_DATA_HOME").filter(|p| p.is_absolute()) {
        return xdg.join("warren-broker");
    }
    if let Some(home) = set("HOME") {
        return home.join(".local").join("share").join("warren-broker");
    }
    PathBuf::from("warren-data")
}

fn main() -> ExitCode {
    // Logs go to stderr; stdout carries only the "ready" line, for scripts.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
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
            ExitCode::from(1)
        }
    }
}

/// The signals that stop the broker gracefully, installed before it starts so that a signal
/// arriving right after the "ready" line is not lost.
struct StopSignals {
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn install() -> std::io::Result<StopSignals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(StopSignals {
                terminate: signal(SignalKind::terminate())?,
                interrupt: signal(SignalKind::interrupt())?,
            })
        }
        #[cfg(not(unix))]
        {
            Ok(StopSignals {})
        }
    }

    /// Waits for SIGTERM or SIGINT (Ctrl-C elsewhere) and names it.
    async fn recv(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.terminate.recv() => "SIGTERM",
                _ = self.interrupt.recv() => "SIGINT",
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            "Ctrl-C"
        }
    }
}

async fn serve(args: Args) -> ExitCode {
    let config = match args.config.as_ref().map(load_config).transpose() {
        Ok(c) => c.unwrap_or_default(),
        Err(e) => {
            eprintln!("warren-broker: {e}");
            return ExitCode::from(2);
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
    if !args.no_management {
        builder = builder.management(args.management_listen);
    }
    if !args.no_prometheus {
        builder = builder.prometheus(args.prometheus_listen);
    }
    if args.memory_only {
        tracing::warn!(
            "memory-only (--memory-only): durable queues, exchanges and persistent messages \
             are lost when the broker stops"
        );
        builder = builder.warn_on_durable_without_storage(true);
    } else {
        let dir = args
            .data_dir
            .unwrap_or_else(|| default_data_dir(|name| std::env::var_os(name)));
        tracing::info!(data_dir = %absolute(&dir).display(), "durable storage");
        builder = builder.data_dir(dir);
    }
    for u in config.users {
        builder = builder.user(u.name, u.password);
    }
    for v in config.vhosts {
        builder = builder.vhost(v);
    }
    if let Some(file) = args.definitions {
        builder = builder.definitions(file);
    }
    let mut signals = match StopSignals::install() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("warren-broker: cannot install signal handlers: {e}");
            return ExitCode::from(1);
        }
    };
    let broker = match builder.start().await {
        Ok(b) => b,
        Err(e) => {
            eprintln!("warren-broker: {e}");
            return ExitCode::from(1);
        }
    };
    if let Some(addr) = broker.management_addr() {
        tracing::info!(%addr, "management API listening");
    }
    println!("warren-broker ready on {}", broker.local_addr());
    let signal = signals.recv().await;
    tracing::info!(
        signal,
        "shutting down: closing connections, flushing storage"
    );
    broker.shutdown().await;
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

/// `dir` made absolute against the working directory, for the log (unchanged if that fails).
fn absolute(dir: &Path) -> PathBuf {
    std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<OsString> + 'a {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| OsString::from(v))
        }
    }

    #[test]
    fn default_data_dir_order() {
        let all = [
            ("WARREN_DATA_DIR", "/srv/warren"),
            ("XDG_DATA_HOME", "/xdg"),
            ("HOME", "/home/u"),
        ];
        assert_eq!(default_data_dir(env(&all)), PathBuf::from("/srv/warren"));
        assert_eq!(
            default_data_dir(env(&all[1..])),
            PathBuf::from("/xdg/warren-broker")
        );
        assert_eq!(
            default_data_dir(env(&all[2..])),
            PathBuf::from("/home/u/.local/share/warren-broker")
        );
        assert_eq!(default_data_dir(env(&[])), PathBuf::from("warren-data"));
    }

    #[test]
    fn empty_or_relative_variables_are_skipped() {
        let vars = [
            ("WARREN_DATA_DIR", ""),
            ("XDG_DATA_HOME", "relative/xdg"),
            ("HOME", "/home/u"),
        ];
        assert_eq!(
            default_data_dir(env(&vars)),
            PathBuf::from("/home/u/.local/share/warren-broker")
        );
    }

    #[test]
    fn memory_only_and_data_dir_exclude_each_other() {
        let both = Args::try_parse_from(["warren-broker", "--memory-only", "--data-dir", "/d"]);
        assert!(both.is_err());
        let memory = Args::try_parse_from(["warren-broker", "--memory-only"]).expect("parses");
        assert!(memory.memory_only && memory.data_dir.is_none());
    }
}
