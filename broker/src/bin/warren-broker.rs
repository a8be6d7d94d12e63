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
use warren_broker::{Broker, BrokerBuilder, CertLoginFrom, Limits, TlsConfig};

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
    /// Also serve MQTT 3.1.1 on this address (RabbitMQ's port: 0.0.0.0:1883). Off unless
    /// given, so that a port already taken (by another MQTT broker) never stops the start.
    #[arg(long, value_name = "ADDR:PORT")]
    mqtt_listen: Option<SocketAddr>,
    /// Also serve MQTT over WebSocket on this address, path /ws, subprotocol mqtt (RabbitMQ's
    /// port: 0.0.0.0:15675). Off unless given.
    #[arg(long, value_name = "ADDR:PORT")]
    web_mqtt_listen: Option<SocketAddr>,
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
    /// Address to accept STOMP 1.0-1.2 connections on (RabbitMQ's STOMP port is 61613).
    /// Off unless given.
    #[arg(long)]
    stomp_listen: Option<SocketAddr>,
    /// Address to accept STOMP over WebSockets on, path /ws (RabbitMQ's Web-STOMP port is
    /// 15674). Off unless given.
    #[arg(long)]
    web_stomp_listen: Option<SocketAddr>,
    #[command(flatten)]
    tls: TlsArgs,
    #[command(flatten)]
    https: HttpsArgs,
}

/// HTTPS for the management and Prometheus listeners (RabbitMQ's `management.ssl.*` and
/// `prometheus.ssl.*`): with a certificate and key, that listener speaks HTTPS only.
#[derive(Debug, clap::Args)]
struct HttpsArgs {
    /// Serve the management API over HTTPS with this certificate chain (PEM, its own
    /// certificate first). Needs --management-tls-key.
    #[arg(
        long,
        value_name = "FILE",
        requires = "management_tls_key",
        conflicts_with = "no_management"
    )]
    management_tls_cert: Option<PathBuf>,
    /// The management listener's private key (PEM: PKCS#8, PKCS#1 or SEC1), unencrypted.
    #[arg(long, value_name = "FILE", requires = "management_tls_cert")]
    management_tls_key: Option<PathBuf>,
    /// Serve the Prometheus endpoint over HTTPS with this certificate chain (PEM). Needs
    /// --prometheus-tls-key.
    #[arg(
        long,
        value_name = "FILE",
        requires = "prometheus_tls_key",
        conflicts_with = "no_prometheus"
    )]
    prometheus_tls_cert: Option<PathBuf>,
    /// The Prometheus listener's private key (PEM), unencrypted.
    #[arg(long, value_name = "FILE", requires = "prometheus_tls_cert")]
    prometheus_tls_key: Option<PathBuf>,
}

impl HttpsArgs {
    /// Turns HTTPS on for the listeners given a certificate and key.
    fn apply(&self, mut builder: BrokerBuilder) -> Result<BrokerBuilder, String> {
        let load = |cert: &PathBuf, key: &PathBuf| {
            TlsConfig::from_files(cert, key).map_err(|e| e.to_string())
        };
        if let (Some(cert), Some(key)) = (&self.management_tls_cert, &self.management_tls_key) {
            builder = builder.management_tls(load(cert, key)?);
        }
        if let (Some(cert), Some(key)) = (&self.prometheus_tls_cert, &self.prometheus_tls_key) {
            builder = builder.prometheus_tls(load(cert, key)?);
        }
        Ok(builder)
    }
}

/// The AMQPS listener (RabbitMQ's `listeners.ssl` and `ssl_options`).
#[derive(Debug, clap::Args)]
struct TlsArgs {
    /// Also accept AMQP over TLS on this address (RabbitMQ's port is 5671). Needs --tls-cert
    /// and --tls-key.
    #[arg(long, requires_all = ["tls_cert", "tls_key"])]
    tls_listen: Option<SocketAddr>,
    /// The server's certificate chain, PEM (its own certificate first).
    #[arg(long, requires = "tls_listen")]
    tls_cert: Option<PathBuf>,
    /// The server's private key, PEM (PKCS#8, PKCS#1 or SEC1), unencrypted.
    #[arg(long, requires = "tls_listen")]
    tls_key: Option<PathBuf>,
    /// CA certificates (PEM) that client certificates must chain to.
    #[arg(long, requires = "tls_listen")]
    tls_ca: Option<PathBuf>,
    /// Ask clients for a certificate and verify it against --tls-ca; verified clients may log
    /// in with the EXTERNAL mechanism.
    #[arg(long, requires = "tls_ca")]
    tls_verify_peer: bool,
    /// Refuse clients that present no certificate (with --tls-verify-peer).
    #[arg(long, requires = "tls_verify_peer")]
    tls_fail_if_no_peer_cert: bool,
    /// Which part of a client certificate is the EXTERNAL user name: the whole subject
    /// (`distinguished_name`, e.g. "CN=app,O=Example") or its common name (`common_name`).
    #[arg(long, default_value = "distinguished_name", value_parser = ["distinguished_name", "common_name"])]
    tls_cert_login_from: String,
}

impl TlsArgs {
    /// Adds the TLS listener to the builder when asked for.
    fn apply(&self, builder: BrokerBuilder) -> Result<BrokerBuilder, String> {
        let (Some(addr), Some(cert), Some(key)) = (self.tls_listen, &self.tls_cert, &self.tls_key)
        else {
            return Ok(builder);
        };
        let mut tls = TlsConfig::from_files(cert, key).map_err(|e| e.to_string())?;
        if let Some(ca) = &self.tls_ca {
            tls = tls.ca_file(ca).map_err(|e| e.to_string())?;
        }
        let login_from = match self.tls_cert_login_from.as_str() {
            "common_name" => CertLoginFrom::CommonName,
            _ => CertLoginFrom::DistinguishedName,
        };
        let tls = tls
            .verify_peer(self.tls_verify_peer)
            .fail_if_no_peer_cert(self.tls_fail_if_no_peer_cert)
            .cert_login_from(login_from);
        Ok(builder.tls_listen(addr, tls))
    }
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
    /// Milliseconds, as RabbitMQ's `handshake_timeout`.
    handshake_timeout: Option<u64>,
    /// Milliseconds a management or Prometheus client has for a request's line and headers
    /// (cowboy's `request_timeout`, 5000).
    http_request_timeout: Option<u64>,
    /// Milliseconds a request body has to arrive, before the extension for what arrived
    /// (60000).
    http_body_timeout: Option<u64>,
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
    raise_open_file_limit();
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

/// Raises the soft limit on open files (RLIMIT_NOFILE) to the hard limit, as `ulimit -n` with
/// the hard limit would: every connection is a file descriptor, and the usual soft limit of
/// 1,024 would cap the broker near 1,000 connections while the hard limit allows far more.
/// Logs the limit it runs with; failing to raise it is a warning, not a reason to stop.
#[cfg(unix)]
fn raise_open_file_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    // An unlimited hard limit cannot be the soft one (Linux caps it at fs.nr_open, whose
    // default is 1,048,576).
    let target = limit.maximum.unwrap_or(1 << 20);
    match limit.current {
        Some(soft) if soft < target => {
            let raised = Rlimit {
                current: Some(target),
                maximum: limit.maximum,
            };
            match setrlimit(Resource::Nofile, raised) {
                Ok(()) => tracing::info!(
                    from = soft,
                    to = target,
                    "raised the open-file limit (soft RLIMIT_NOFILE) to the hard limit"
                ),
                Err(e) => tracing::warn!(
                    limit = soft,
                    hard = target,
                    error = %e,
                    "cannot raise the open-file limit; connections beyond it will be refused"
                ),
            }
        }
        Some(soft) => tracing::info!(limit = soft, "open-file limit (soft RLIMIT_NOFILE)"),
        None => tracing::info!(limit = "unlimited", "open-file limit (soft RLIMIT_NOFILE)"),
    }
}

#[cfg(not(unix))]
fn raise_open_file_limit() {}

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
    if let Some(ms) = config.handshake_timeout {
        limits.handshake_timeout = std::time::Duration::from_millis(ms);
    }
    if let Some(ms) = config.http_request_timeout {
        limits.http_request_timeout = std::time::Duration::from_millis(ms);
    }
    if let Some(ms) = config.http_body_timeout {
        limits.http_body_timeout = std::time::Duration::from_millis(ms);
    }
    let mut builder = Broker::builder().listen(args.listen).limits(limits);
    if !args.no_management {
        builder = builder.management(args.management_listen);
    }
    if !args.no_prometheus {
        builder = builder.prometheus(args.prometheus_listen);
    }
    if let Some(addr) = args.mqtt_listen {
        builder = builder.mqtt_listen(addr);
    }
    if let Some(addr) = args.web_mqtt_listen {
        builder = builder.web_mqtt_listen(addr);
    }
    if let Some(addr) = args.stomp_listen {
        builder = builder.stomp_listen(addr);
    }
    if let Some(addr) = args.web_stomp_listen {
        builder = builder.web_stomp_listen(addr);
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
    builder = match args.tls.apply(builder).and_then(|b| args.https.apply(b)) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("warren-broker: {e}");
            return ExitCode::from(2);
        }
    };
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
    if let Some(addr) = broker.mqtt_local_addr() {
        tracing::info!(%addr, "MQTT listener ready");
    }
    if let Some(addr) = broker.web_mqtt_local_addr() {
        tracing::info!(%addr, "Web-MQTT listener ready (path /ws)");
    }
    if let Some(addr) = broker.tls_local_addr() {
        println!("warren-broker amqps on {addr}");
    }
    println!("warren-broker ready on {}", broker.local_addr());
    let scheme = |tls: &Option<PathBuf>| if tls.is_some() { "https" } else { "http" };
    if let Some(addr) = broker.management_addr() {
        let scheme = scheme(&args.https.management_tls_cert);
        announce(format_args!(
            "warren-broker management on {scheme}://{addr}"
        ));
    }
    if let Some(addr) = broker.prometheus_addr() {
        let scheme = scheme(&args.https.prometheus_tls_cert);
        announce(format_args!(
            "warren-broker prometheus on {scheme}://{addr}"
        ));
    }
    if let Some(addr) = broker.stomp_addr() {
        println!("warren-broker STOMP ready on {addr}");
    }
    if let Some(addr) = broker.web_stomp_addr() {
        println!("warren-broker Web-STOMP ready on {addr}");
    }
    let signal = signals.recv().await;
    tracing::info!(
        signal,
        "shutting down: closing connections, flushing storage"
    );
    broker.shutdown().await;
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

/// Prints a line on stdout after the "ready" line, ignoring a reader that went away: a script
/// that read the ready line and closed the pipe must not make the broker fail.
fn announce(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
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
    fn mqtt_listeners_are_off_unless_given() {
        let none = Args::try_parse_from(["warren-broker"]).expect("parses");
        assert!(none.mqtt_listen.is_none() && none.web_mqtt_listen.is_none());
        let both = Args::try_parse_from([
            "warren-broker",
            "--mqtt-listen",
            "0.0.0.0:1883",
            "--web-mqtt-listen",
            "127.0.0.1:15675",
        ])
        .expect("parses");
        assert_eq!(both.mqtt_listen, Some("0.0.0.0:1883".parse().unwrap()));
        assert_eq!(
            both.web_mqtt_listen,
            Some("127.0.0.1:15675".parse().unwrap())
        );
    }

    #[test]
    fn tls_flags_need_their_companions() {
        let parse = |extra: &[&str]| {
            Args::try_parse_from([&["warren-broker"][..], extra].concat()).map(|a| a.tls)
        };
        assert!(parse(&["--tls-listen", "127.0.0.1:5671"]).is_err());
        assert!(parse(&["--tls-cert", "c.pem"]).is_err());
        assert!(
            parse(&[
                "--tls-listen",
                "127.0.0.1:5671",
                "--tls-cert",
                "c",
                "--tls-key",
                "k",
                "--tls-verify-peer"
            ])
            .is_err(),
            "verify_peer without a CA"
        );
        let ok = parse(&[
            "--tls-listen",
            "127.0.0.1:5671",
            "--tls-cert",
            "c",
            "--tls-key",
            "k",
            "--tls-ca",
            "ca",
            "--tls-verify-peer",
            "--tls-fail-if-no-peer-cert",
            "--tls-cert-login-from",
            "common_name",
        ])
        .expect("parses");
        assert!(ok.tls_verify_peer && ok.tls_fail_if_no_peer_cert);
        assert_eq!(ok.tls_cert_login_from, "common_name");
    }

    #[test]
    fn https_flags_come_in_pairs() {
        let parse = |extra: &[&str]| {
            Args::try_parse_from([&["warren-broker"][..], extra].concat()).map(|a| a.https)
        };
        assert!(parse(&["--management-tls-cert", "c.pem"]).is_err());
        assert!(parse(&["--prometheus-tls-key", "k.pem"]).is_err());
        assert!(
            parse(&[
                "--no-management",
                "--management-tls-cert",
                "c",
                "--management-tls-key",
                "k"
            ])
            .is_err(),
            "HTTPS for a listener that is off"
        );
        let both = parse(&[
            "--management-tls-cert",
            "mc",
            "--management-tls-key",
            "mk",
            "--prometheus-tls-cert",
            "pc",
            "--prometheus-tls-key",
            "pk",
        ])
        .expect("parses");
        assert_eq!(both.management_tls_cert, Some(PathBuf::from("mc")));
        assert_eq!(both.prometheus_tls_key, Some(PathBuf::from("pk")));
    }

    #[test]
    fn memory_only_and_data_dir_exclude_each_other() {
        let both = Args::try_parse_from(["warren-broker", "--memory-only", "--data-dir", "/d"]);
        assert!(both.is_err());
        let memory = Args::try_parse_from(["warren-broker", "--memory-only"]).expect("parses");
        assert!(memory.memory_only && memory.data_dir.is_none());
    }
}
