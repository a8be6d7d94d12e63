//! `warren-bench`: Warren against RabbitMQ on the same machine, in the same run.
//!
//! Run with: `cargo run --release -p warren-tests --bin warren-bench`
//!
//! Starts `warren-broker` as a child process (so the RSS it reads is the broker's own), uses
//! RabbitMQ at `--rabbitmq-url`, runs every scenario against each broker in turn (which broker
//! goes first alternates from run to run), and prints one table: the median of `--runs` for
//! each broker and the Warren/RabbitMQ ratio, then the targets of issue 6, met or not.
//!
//! Scenarios (all traffic to 127.0.0.1, every loop bounded by a count or a time limit):
//! - throughput with lapin: one publisher (pipelined, `--window` publishes in flight) and one
//!   no-ack consumer, 16 B and 1 KiB; fan-out to 10 queues; persistent 1 KiB messages to a
//!   durable queue with publisher confirms (1,000 in flight);
//! - RPC by hand with lapin (direct reply-to) and through warren-rpc, 64 B and 16 KiB
//!   requests: p50/p99 at 1 caller, calls/s at 32 and 256 callers;
//! - memory: the broker's RSS idle, with 1,000 connections, with 1,000,000 queued 100 B
//!   messages.
//!
//! See BENCHMARKS.md for the machine and the latest table.

use std::collections::HashMap;
use std::future::Future;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use amq_protocol::frame::AMQPFrame;
use amq_protocol::protocol::AMQPClass;
use clap::{Parser, Subcommand, ValueEnum};
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions, QueuePurgeOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use serde::{Deserialize, Serialize};

/// Command line of the harness.
#[derive(Debug, Parser)]
#[command(name = "warren-bench", about = "Warren against RabbitMQ, side by side")]
struct Args {
    /// RabbitMQ to compare with.
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    rabbitmq_url: String,
    /// PID of RabbitMQ's beam.smp, for its RSS (found with `pgrep -f beam.smp` unless set).
    #[arg(long)]
    rabbitmq_pid: Option<u32>,
    /// The warren-broker binary started as a child process. Default: `warren-broker` next to
    /// this binary if it was built, else this binary re-executed as the broker (same library,
    /// same runtime configuration).
    #[arg(long)]
    broker_bin: Option<PathBuf>,
    /// How many times each scenario runs on each broker; the table shows medians.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Seconds each throughput measurement publishes (or calls) for.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Scenario groups to run (default: all).
    #[arg(long, value_delimiter = ',')]
    only: Vec<Group>,
    /// Brokers to run against (default: both).
    #[arg(long, value_delimiter = ',')]
    brokers: Vec<Which>,
    /// Publisher connections in the throughput scenarios (1 = the scenario as specified; more
    /// checks that the load generator is not the bottleneck).
    #[arg(long, default_value_t = 1)]
    publishers: usize,
    /// Publishes in flight per publisher in the throughput scenarios.
    #[arg(long, default_value_t = 512)]
    window: usize,
    /// The clients the throughput scenarios publish and consume with: `frame` (a minimal
    /// frame-level client that writes pre-encoded publishes and counts deliveries and confirms
    /// without parsing them) and/or `lapin` (as applications see it). Each gets its own rows;
    /// the targets are checked on the fastest generator's rows.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Generator::Frame, Generator::Lapin])]
    generators: Vec<Generator>,
    /// The hand-written RPC client publishes with `mandatory` on a confirm-mode channel and
    /// waits for the confirm, as warren-rpc does (to break down the framework's cost).
    #[arg(long)]
    raw_rpc_confirms: bool,
    /// Connections opened in the memory scenario.
    #[arg(long, default_value_t = 1000)]
    connections: usize,
    /// 100 B messages queued in the memory scenario.
    #[arg(long, default_value_t = 1_000_000)]
    queued: u64,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Runs the bundled broker in this process (used when the warren-broker binary is absent).
    #[command(hide = true)]
    ServeBroker {
        /// Address to listen on.
        #[arg(long)]
        listen: SocketAddr,
        /// Directory for durable entities and persistent messages.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

/// A group of scenarios, selectable with `--only`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Group {
    /// Publish -> consume throughput, fan-out, persistent with confirms.
    Throughput,
    /// RPC by hand with lapin and through warren-rpc.
    Rpc,
    /// RSS idle, with many connections, with many queued messages.
    Memory,
}

/// The client that generates throughput load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Generator {
    /// A minimal frame-level client (see `RawAmqp`).
    Frame,
    /// lapin 4, as applications use it.
    Lapin,
}

impl Generator {
    fn name(self) -> &'static str {
        match self {
            Generator::Frame => "frame-level client",
            Generator::Lapin => "lapin",
        }
    }
}

/// Which broker a measurement is of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ValueEnum)]
enum Which {
    /// The bundled broker, as a child process.
    Warren,
    /// RabbitMQ at `--rabbitmq-url`.
    Rabbitmq,
}

impl Which {
    fn name(self) -> &'static str {
        match self {
            Which::Warren => "warren",
            Which::Rabbitmq => "rabbitmq",
        }
    }
}

type BoxResult<T> = Result<T, String>;

// ---------------------------------------------------------------------------------------------
// The broker under test as a child process.

/// How to start warren-broker.
enum BrokerBin {
    /// The `warren-broker` binary.
    Binary(PathBuf),
    /// This binary, re-executed with `serve-broker`.
    SelfHosted(PathBuf),
}

impl BrokerBin {
    fn find(explicit: Option<PathBuf>) -> BoxResult<BrokerBin> {
        if let Some(path) = explicit {
            return Ok(BrokerBin::Binary(path));
        }
        let me = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
        let sibling = me.with_file_name("warren-broker");
        build_sibling_broker(&me);
        if sibling.is_file() {
            Ok(BrokerBin::Binary(sibling))
        } else {
            Ok(BrokerBin::SelfHosted(me))
        }
    }

    fn describe(&self) -> String {
        match self {
            BrokerBin::Binary(p) => format!("{} (child process)", p.display()),
            BrokerBin::SelfHosted(p) => format!(
                "{} serve-broker (child process; warren-broker binary not built)",
                p.display()
            ),
        }
    }
}

/// Under `cargo run --release`, builds the `warren-broker` binary next to this one (a no-op
/// when it is fresh), so that one command measures the real binary and not a stale one.
fn build_sibling_broker(me: &std::path::Path) {
    let Some(cargo) = std::env::var_os("CARGO") else {
        return;
    };
    let Some(profile_dir) = me.parent() else {
        return;
    };
    if profile_dir.file_name().and_then(|n| n.to_str()) != Some("release") {
        return;
    }
    let Some(target_dir) = profile_dir.parent() else {
        return;
    };
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml");
    eprintln!("building warren-broker (release) ...");
    let status = Command::new(cargo)
        .args([
            "build",
            "--release",
            "-p",
            "warren-broker",
            "--bin",
            "warren-broker",
        ])
        .arg("--manifest-path")
        .arg(manifest)
        .arg("--target-dir")
        .arg(target_dir)
        .status();
    if !matches!(status, Ok(s) if s.success()) {
        eprintln!("warren-bench: building warren-broker failed; using what is there");
    }
}

/// A warren-broker child process, killed on drop.
struct ChildBroker {
    child: Child,
    url: String,
    pid: u32,
    /// The broker's data directory (durable definitions, persistent messages), removed on drop.
    data_dir: PathBuf,
    /// Log lines at WARN or ERROR the broker printed.
    complaints: Arc<Mutex<Vec<String>>>,
}

impl ChildBroker {
    fn start(bin: &BrokerBin) -> BoxResult<ChildBroker> {
        let mut cmd = match bin {
            BrokerBin::Binary(p) => Command::new(p),
            BrokerBin::SelfHosted(p) => {
                let mut c = Command::new(p);
                c.arg("serve-broker");
                c
            }
        };
        let data_dir = std::env::temp_dir().join(format!(
            "warren-bench-data-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        cmd.args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data_dir)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("start warren-broker: {e}"))?;
        let complaints = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        {
            let complaints = Arc::clone(&complaints);
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if let Some(addr) = line.strip_prefix("warren-broker ready on ") {
                        let _ = tx.send(addr.trim().to_owned());
                    } else if line.contains("WARN") || line.contains("ERROR") {
                        let mut c = complaints.lock().expect("complaints lock");
                        if c.len() < 1000 {
                            c.push(line);
                        }
                    }
                }
            });
        }
        {
            let complaints = Arc::clone(&complaints);
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    let mut c = complaints.lock().expect("complaints lock");
                    if c.len() < 1000 {
                        c.push(line);
                    }
                }
            });
        }
        let addr = match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err("warren-broker did not print its ready line in 10 s".into());
            }
        };
        let pid = child.id();
        Ok(ChildBroker {
            child,
            url: format!("amqp://guest:guest@{addr}/%2f"),
            pid,
            data_dir,
            complaints,
        })
    }
}

impl Drop for ChildBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// `serve-broker`: the bundled broker in this process, as the warren-broker binary runs it.
fn serve_broker(listen: SocketAddr, data_dir: Option<PathBuf>) -> ExitCode {
    // One thread, as the warren-broker binary runs by default.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("serve-broker: runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let mut builder = warren_broker::Broker::builder().listen(listen);
        if let Some(dir) = data_dir {
            builder = builder.data_dir(dir);
        }
        let broker = match builder.start().await {
            Ok(b) => b,
            Err(e) => {
                eprintln!("serve-broker: {e}");
                return ExitCode::FAILURE;
            }
        };
        println!("warren-broker ready on {}", broker.local_addr());
        let _ = tokio::signal::ctrl_c().await;
        broker.shutdown().await;
        ExitCode::SUCCESS
    })
}

/// The resident set size of a process, in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// RabbitMQ's Erlang VM process.
fn find_beam() -> Option<u32> {
    let out = Command::new("pgrep")
        .args(["-f", "beam.smp"])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.trim().parse().ok())
}

// ---------------------------------------------------------------------------------------------
// Results.

/// What a row measures, which decides formatting and which direction is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    /// Messages per second (higher is better).
    MsgsPerSec,
    /// Calls per second (higher is better).
    CallsPerSec,
    /// Microseconds (lower is better).
    Micros,
    /// KiB of memory (lower is better).
    KiB,
}

impl Unit {
    fn format(self, v: f64) -> String {
        match self {
            Unit::MsgsPerSec => format!("{} msg/s", si(v)),
            Unit::CallsPerSec => format!("{} calls/s", si(v)),
            Unit::Micros => {
                if v >= 10_000.0 {
                    format!("{:.1} ms", v / 1000.0)
                } else {
                    format!("{v:.0} µs")
                }
            }
            Unit::KiB => {
                if v >= 1024.0 {
                    format!("{:.1} MiB", v / 1024.0)
                } else {
                    format!("{v:.1} KiB")
                }
            }
        }
    }
}

fn si(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e4 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

/// Every measurement, by row, in the order rows were first recorded.
#[derive(Default)]
struct Results {
    rows: Vec<(String, Unit)>,
    values: HashMap<(String, Which), Vec<f64>>,
    notes: HashMap<(String, Which), Vec<String>>,
}

impl Results {
    fn row(&mut self, label: &str, unit: Unit) {
        if !self.rows.iter().any(|(l, _)| l == label) {
            self.rows.push((label.to_owned(), unit));
        }
    }

    fn record(&mut self, which: Which, label: &str, unit: Unit, value: f64) {
        self.row(label, unit);
        eprintln!("    {:<9} {label}: {}", which.name(), unit.format(value));
        self.values
            .entry((label.to_owned(), which))
            .or_default()
            .push(value);
    }

    fn note(&mut self, which: Which, label: &str, unit: Unit, note: String) {
        self.row(label, unit);
        eprintln!("    {:<9} {label}: {note}", which.name());
        let notes = self.notes.entry((label.to_owned(), which)).or_default();
        if !notes.contains(&note) {
            notes.push(note);
        }
    }

    fn median(&self, label: &str, which: Which) -> Option<f64> {
        let mut v = self.values.get(&(label.to_owned(), which))?.clone();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        Some(if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        })
    }

    fn ratio(&self, label: &str) -> Option<f64> {
        Some(self.median(label, Which::Warren)? / self.median(label, Which::Rabbitmq)?)
    }

    fn cell(&self, label: &str, unit: Unit, which: Which) -> String {
        let mut cell = match self.median(label, which) {
            Some(v) => unit.format(v),
            None => "n/a".to_owned(),
        };
        if let Some(notes) = self.notes.get(&(label.to_owned(), which)) {
            cell.push_str(&format!(" ({})", notes.join("; ")));
        }
        cell
    }

    fn print(&self, runs: usize) {
        println!();
        println!("Medians of {runs} run(s). Ratio = Warren / RabbitMQ.");
        println!();
        println!("| scenario | Warren | RabbitMQ | Warren/RabbitMQ |");
        println!("|---|---:|---:|---:|");
        for (label, unit) in &self.rows {
            let ratio = self
                .ratio(label)
                .map(|r| format!("{r:.2}x"))
                .unwrap_or_else(|| "n/a".into());
            println!(
                "| {label} | {} | {} | {ratio} |",
                self.cell(label, *unit, Which::Warren),
                self.cell(label, *unit, Which::Rabbitmq)
            );
        }
    }
}

// Row labels shared by the scenarios and the target checks.
const TPUT_16: &str = "publish->consume 16 B, 1 pub / 1 no-ack consumer";
const TPUT_1K: &str = "publish->consume 1 KiB, 1 pub / 1 no-ack consumer";
const FANOUT: &str = "fan-out 16 B to 10 queues (msgs in/s; x10 delivered)";
const PERSISTENT: &str = "persistent 1 KiB, durable queue, confirms (1000 in flight)";

fn tput_label(what: &str, generator: Generator) -> String {
    format!("{what} [{}]", generator.name())
}
const RSS_IDLE: &str = "RSS idle";
const RSS_PER_CONN: &str = "RSS per idle connection";

fn rpc_label(how: &str, size: &str, what: &str) -> String {
    format!("RPC {how} {size}: {what}")
}

/// The ratio of a throughput row, from the frame-level generator's rows when they were
/// measured (lapin caps the bundled broker's figures), else from lapin's.
fn best_ratio(r: &Results, what: &str) -> Option<f64> {
    r.ratio(&tput_label(what, Generator::Frame))
        .or_else(|| r.ratio(&tput_label(what, Generator::Lapin)))
}

/// The targets, checked against the medians.
fn print_targets(r: &Results) {
    println!();
    println!("Targets (issue 6):");
    let lat = |how: &str| rpc_label(how, "64 B", "p50 @1 caller");
    let check = |name: &str, ratio: Option<f64>, cmp: &str, bound: f64| {
        let verdict = match ratio {
            Some(x) if (cmp == "<=" && x <= bound) || (cmp == ">=" && x >= bound) => "MET",
            Some(_) => "NOT MET",
            None => "not measured",
        };
        let shown = ratio
            .map(|x| format!("{x:.2}x"))
            .unwrap_or_else(|| "n/a".into());
        println!("- {name}: {shown} (target {cmp} {bound}x): {verdict}");
    };
    check(
        "RPC p50 latency @1 caller, warren-rpc, Warren/RabbitMQ",
        r.ratio(&lat("warren-rpc")),
        "<=",
        0.4,
    );
    check(
        "RPC calls/s @32 callers, warren-rpc, Warren/RabbitMQ",
        r.ratio(&rpc_label("warren-rpc", "64 B", "calls/s @32 callers")),
        ">=",
        3.0,
    );
    let overhead = r
        .median(&lat("warren-rpc"), Which::Warren)
        .zip(r.median(&lat("raw lapin"), Which::Warren))
        .map(|(w, raw)| w / raw);
    check(
        "warren-rpc / raw lapin RPC p50 latency, on warren-broker",
        overhead,
        "<=",
        1.15,
    );
    check(
        "publish->consume 16 B msgs/s, Warren/RabbitMQ",
        best_ratio(r, TPUT_16),
        ">=",
        3.0,
    );
    check(
        "persistent with confirms msgs/s, Warren/RabbitMQ",
        best_ratio(r, PERSISTENT),
        ">=",
        1.5,
    );
    match r.median(RSS_IDLE, Which::Warren) {
        Some(kib) => println!(
            "- warren-broker idle RSS: {:.1} MiB (target <= 15 MiB): {}",
            kib / 1024.0,
            if kib <= 15.0 * 1024.0 {
                "MET"
            } else {
                "NOT MET"
            }
        ),
        None => println!("- warren-broker idle RSS: not measured"),
    }
    if let Some(x) = r.ratio(RSS_PER_CONN) {
        println!("- memory per idle connection, Warren/RabbitMQ: {x:.2}x");
    }
}

// ---------------------------------------------------------------------------------------------
// lapin helpers.

async fn connect(url: &str) -> BoxResult<Connection> {
    tokio::time::timeout(
        Duration::from_secs(5),
        Connection::connect(url, ConnectionProperties::default()),
    )
    .await
    .map_err(|_| "connect timed out".to_owned())?
    .map_err(|e| format!("connect: {e}"))
}

async fn channel(conn: &Connection) -> BoxResult<Channel> {
    conn.create_channel()
        .await
        .map_err(|e| format!("channel.open: {e}"))
}

async fn close(conn: Connection) {
    let _ = tokio::time::timeout(Duration::from_secs(5), conn.close(200, "bye".into())).await;
}

fn no_ack() -> BasicConsumeOptions {
    BasicConsumeOptions {
        no_ack: true,
        ..BasicConsumeOptions::default()
    }
}

fn exclusive() -> QueueDeclareOptions {
    QueueDeclareOptions {
        exclusive: true,
        ..QueueDeclareOptions::default()
    }
}

/// Deletes a queue on a fresh channel, ignoring a queue already gone.
async fn delete_queue(conn: &Connection, queue: &str) {
    if let Ok(ch) = conn.create_channel().await {
        let _ = ch
            .queue_delete(queue.into(), QueueDeleteOptions::default())
            .await;
        let _ = ch.close(200, "bye".into()).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Throughput.

/// Counts deliveries and remembers when the last one arrived.
#[derive(Default)]
struct Arrivals {
    count: AtomicU64,
    /// Nanoseconds after `start` of the last delivery.
    last_ns: AtomicU64,
}

/// Keeps publishers at most `max` messages per queue ahead of the consumers, so a broker
/// that accepts publishes faster than it delivers them is measured end to end instead of
/// queueing a backlog that takes minutes to drain.
#[derive(Clone)]
struct Lead {
    sent: Arc<AtomicU64>,
    arrivals: Arc<Arrivals>,
    queues: u64,
    max: u64,
}

impl Lead {
    fn add(&self, n: u64) {
        self.sent.fetch_add(n, Ordering::Relaxed);
    }

    fn exceeded(&self) -> bool {
        let sent = self.sent.load(Ordering::Relaxed) * self.queues;
        sent.saturating_sub(self.arrivals.count.load(Ordering::Relaxed)) > self.max * self.queues
    }
}

/// Publishes until `until` with `window` publishes in flight, as fast as the broker takes them
/// and the consumers keep up. Returns how many were published.
#[allow(clippy::too_many_arguments)]
async fn publish_for(
    ch: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    properties: BasicProperties,
    window: usize,
    until: Instant,
    lead: &Lead,
) -> BoxResult<u64> {
    let mut inflight = FuturesUnordered::new();
    let mut published = 0u64;
    let mut now = Instant::now();
    loop {
        while now < until && inflight.len() < window && !lead.exceeded() {
            inflight.push(ch.basic_publish(
                exchange.into(),
                routing_key.into(),
                BasicPublishOptions::default(),
                body,
                properties.clone(),
            ));
            lead.add(1);
            // Checking the clock every publish costs little next to the publish itself.
            now = Instant::now();
        }
        if inflight.is_empty() {
            if now >= until {
                return Ok(published);
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        } else {
            match inflight.next().await {
                Some(Ok(_)) => published += 1,
                Some(Err(e)) => return Err(format!("basic.publish: {e}")),
                None => {}
            }
        }
        now = Instant::now();
    }
}

/// Messages per queue publishers may be ahead of the consumers.
const MAX_LEAD: u64 = 20_000;

/// How a throughput scenario is driven.
#[derive(Debug, Clone, Copy)]
struct Load {
    generator: Generator,
    publishers: usize,
    window: usize,
    seconds: f64,
}

/// One or more publishers to a queue (or a fanout exchange bound to `queues` queues), one
/// no-ack consumer per queue. Returns messages in per second, end to end: from the first
/// publish to the last delivery.
async fn throughput(url: &str, body_size: usize, queues: usize, load: Load) -> BoxResult<f64> {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let control = connect(url).await?;
    let control_ch = channel(&control).await?;
    let exchange = if queues > 1 {
        let name = format!("warren-bench.fanout.{id}");
        control_ch
            .exchange_declare(
                name.as_str().into(),
                ExchangeKind::Fanout,
                ExchangeDeclareOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| format!("exchange.declare: {e}"))?;
        name
    } else {
        String::new()
    };
    // Auto-delete queues: gone with their consumer even if this process dies.
    let mut names = Vec::new();
    for i in 0..queues {
        let name = format!("warren-bench.tput.{id}.{i}");
        control_ch
            .queue_declare(
                name.as_str().into(),
                QueueDeclareOptions {
                    auto_delete: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(|e| format!("queue.declare: {e}"))?;
        if queues > 1 {
            control_ch
                .queue_bind(
                    name.as_str().into(),
                    exchange.as_str().into(),
                    "".into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(|e| format!("queue.bind: {e}"))?;
        }
        names.push(name);
    }
    let routing_key = if queues > 1 {
        String::new()
    } else {
        names[0].clone()
    };
    let arrivals = Arc::new(Arrivals::default());
    let start_cell: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(None));
    let mut consumers = Vec::new();
    for name in &names {
        let task = match load.generator {
            Generator::Lapin => {
                lapin_consumer(url, name, Arc::clone(&arrivals), Arc::clone(&start_cell)).await?
            }
            Generator::Frame => {
                raw_consumer(url, name, Arc::clone(&arrivals), Arc::clone(&start_cell)).await?
            }
        };
        consumers.push(task);
    }
    let body = vec![0x5au8; body_size];
    let mut lapin_pubs = Vec::new();
    let mut raw_pubs = Vec::new();
    for _ in 0..load.publishers {
        match load.generator {
            Generator::Lapin => {
                let conn = connect(url).await?;
                let ch = channel(&conn).await?;
                lapin_pubs.push((conn, ch));
            }
            Generator::Frame => raw_pubs.push(RawAmqp::connect(url).await?),
        }
    }
    let start = Instant::now();
    *start_cell.lock().expect("start lock") = Some(start);
    let until = start + Duration::from_secs_f64(load.seconds);
    let lead = Lead {
        sent: Arc::default(),
        arrivals: Arc::clone(&arrivals),
        queues: queues as u64,
        max: MAX_LEAD,
    };
    let mut tasks = Vec::new();
    for (_, ch) in &lapin_pubs {
        let ch = ch.clone();
        let (exchange, routing_key, body) = (exchange.clone(), routing_key.clone(), body.clone());
        let lead = lead.clone();
        tasks.push(tokio::spawn(async move {
            publish_for(
                &ch,
                &exchange,
                &routing_key,
                &body,
                BasicProperties::default(),
                load.window,
                until,
                &lead,
            )
            .await
        }));
    }
    for mut raw in raw_pubs {
        let (exchange, routing_key, body) = (exchange.clone(), routing_key.clone(), body.clone());
        let lead = lead.clone();
        tasks.push(tokio::spawn(async move {
            let n = raw
                .publish_for(&exchange, &routing_key, &body, until, &lead)
                .await;
            // Closing with publishes still unread in the broker's socket buffer could reset
            // the connection and lose them: wait until the broker has processed them all.
            let synced = raw.sync().await;
            raw.close().await;
            synced.and(n)
        }));
    }
    let mut published = 0u64;
    let mut failure = None;
    for t in tasks {
        match t.await {
            Ok(Ok(n)) => published += n,
            Ok(Err(e)) => {
                failure.get_or_insert(e);
            }
            Err(e) => {
                failure.get_or_insert(format!("publisher task: {e}"));
            }
        }
    }
    // Wait for the consumers to drain what was published, bounded.
    let expected = published * queues as u64;
    let mut last = arrivals.count.load(Ordering::Relaxed);
    let mut last_progress = Instant::now();
    let drain_limit = Instant::now() + Duration::from_secs(120);
    while failure.is_none() && arrivals.count.load(Ordering::Relaxed) < expected {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = arrivals.count.load(Ordering::Relaxed);
        if now != last {
            last = now;
            last_progress = Instant::now();
        }
        if last_progress.elapsed() > Duration::from_secs(5) || Instant::now() > drain_limit {
            break;
        }
    }
    let received = arrivals.count.load(Ordering::Relaxed);
    let elapsed = Duration::from_nanos(arrivals.last_ns.load(Ordering::Relaxed)).as_secs_f64();
    // On a shortfall, say whether the messages are stuck in the queues or gone.
    let mut stuck = Vec::new();
    if received < expected {
        for name in &names {
            let passive = QueueDeclareOptions {
                passive: true,
                auto_delete: true,
                ..QueueDeclareOptions::default()
            };
            stuck.push(
                match control_ch
                    .queue_declare(name.as_str().into(), passive, FieldTable::default())
                    .await
                {
                    Ok(q) => format!(
                        "{} ready, {} consumer(s)",
                        q.message_count(),
                        q.consumer_count()
                    ),
                    Err(e) => format!("passive declare failed: {e}"),
                },
            );
        }
    }
    for (conn, _) in lapin_pubs {
        close(conn).await;
    }
    for task in consumers {
        task.stop().await;
    }
    for name in &names {
        let _ = control_ch
            .queue_delete(name.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
    if queues > 1 {
        let _ = control_ch
            .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
            .await;
    }
    close(control).await;
    if let Some(e) = failure {
        return Err(e);
    }
    if received < expected {
        return Err(format!(
            "only {received} of {expected} deliveries arrived ({published} published; queues: {})",
            stuck.join(", ")
        ));
    }
    if elapsed <= 0.0 {
        return Err("no delivery arrived".into());
    }
    Ok(received as f64 / queues as f64 / elapsed)
}

/// Records one delivery: the first one fixes the consumer's view of the start.
fn arrived(
    arrivals: &Arrivals,
    start: &mut Option<Instant>,
    cell: &Mutex<Option<Instant>>,
    n: u64,
) {
    let start = *start.get_or_insert_with(|| {
        cell.lock()
            .expect("start lock")
            .unwrap_or_else(Instant::now)
    });
    arrivals.count.fetch_add(n, Ordering::Relaxed);
    arrivals
        .last_ns
        .fetch_max(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
}

/// A running consumer of a throughput scenario (with its lapin connection, if lapin's).
struct ConsumerTask {
    conn: Option<Connection>,
    task: tokio::task::JoinHandle<()>,
}

impl ConsumerTask {
    async fn stop(self) {
        if let Some(conn) = self.conn {
            close(conn).await;
        }
        self.task.abort();
    }
}

async fn lapin_consumer(
    url: &str,
    queue: &str,
    arrivals: Arc<Arrivals>,
    start_cell: Arc<Mutex<Option<Instant>>>,
) -> BoxResult<ConsumerTask> {
    let conn = connect(url).await?;
    let ch = channel(&conn).await?;
    let mut consumer = ch
        .basic_consume(queue.into(), "".into(), no_ack(), FieldTable::default())
        .await
        .map_err(|e| format!("basic.consume: {e}"))?;
    let task = tokio::spawn(async move {
        let mut start = None;
        while let Some(d) = consumer.next().await {
            if d.is_err() {
                break;
            }
            arrived(&arrivals, &mut start, &start_cell, 1);
        }
    });
    Ok(ConsumerTask {
        conn: Some(conn),
        task,
    })
}

async fn raw_consumer(
    url: &str,
    queue: &str,
    arrivals: Arc<Arrivals>,
    start_cell: Arc<Mutex<Option<Instant>>>,
) -> BoxResult<ConsumerTask> {
    let mut raw = RawAmqp::connect(url).await?;
    raw.consume(queue).await?;
    let task = tokio::spawn(async move {
        let mut start = None;
        // Ends with the connection or when the scenario aborts the task.
        while let Ok(n) = raw.count_deliveries().await {
            if n > 0 {
                arrived(&arrivals, &mut start, &start_cell, n);
            }
        }
    });
    Ok(ConsumerTask { conn: None, task })
}

/// A minimal AMQP 0-9-1 client for the load-generator check: the handshake, then either
/// pre-encoded publishes written in large batches, or a no-ack consumer that counts
/// `basic.deliver` frames without parsing them. Nothing lapin does per message is done here.
struct RawAmqp {
    stream: tokio::net::TcpStream,
    buf: bytes::BytesMut,
    frame_max: u32,
}

impl RawAmqp {
    async fn connect(url: &str) -> BoxResult<RawAmqp> {
        use amq_protocol::protocol::{channel as chan, connection as conn};
        let uri: amq_protocol::uri::AMQPUri = url.parse().map_err(|e| format!("url: {e}"))?;
        let stream =
            tokio::net::TcpStream::connect((uri.authority.host.as_str(), uri.authority.port))
                .await
                .map_err(|e| format!("tcp connect: {e}"))?;
        let _ = stream.set_nodelay(true);
        let mut c = RawAmqp {
            stream,
            buf: bytes::BytesMut::with_capacity(1 << 20),
            frame_max: 131_072,
        };
        c.write(b"AMQP\x00\x00\x09\x01").await?;
        match c.method().await? {
            AMQPClass::Connection(conn::AMQPMethod::Start(_)) => {}
            other => return Err(format!("expected connection.start, got {other:?}")),
        }
        let user = &uri.authority.userinfo;
        c.send(
            0,
            AMQPClass::Connection(conn::AMQPMethod::StartOk(conn::StartOk {
                client_properties: FieldTable::default(),
                mechanism: "PLAIN".into(),
                response: format!("\0{}\0{}", user.username, user.password)
                    .into_bytes()
                    .into(),
                locale: "en_US".into(),
            })),
        )
        .await?;
        let tune = match c.method().await? {
            AMQPClass::Connection(conn::AMQPMethod::Tune(t)) => t,
            other => return Err(format!("expected connection.tune, got {other:?}")),
        };
        c.frame_max = tune.frame_max;
        c.send(
            0,
            AMQPClass::Connection(conn::AMQPMethod::TuneOk(conn::TuneOk {
                channel_max: tune.channel_max,
                frame_max: tune.frame_max,
                heartbeat: 0,
            })),
        )
        .await?;
        c.send(
            0,
            AMQPClass::Connection(conn::AMQPMethod::Open(conn::Open {
                virtual_host: uri.vhost.as_str().into(),
            })),
        )
        .await?;
        match c.method().await? {
            AMQPClass::Connection(conn::AMQPMethod::OpenOk(_)) => {}
            other => return Err(format!("expected connection.open-ok, got {other:?}")),
        }
        c.send(1, AMQPClass::Channel(chan::AMQPMethod::Open(chan::Open {})))
            .await?;
        match c.method().await? {
            AMQPClass::Channel(chan::AMQPMethod::OpenOk(_)) => Ok(c),
            other => Err(format!("expected channel.open-ok, got {other:?}")),
        }
    }

    async fn write(&mut self, bytes: &[u8]) -> BoxResult<()> {
        use tokio::io::AsyncWriteExt;
        self.stream
            .write_all(bytes)
            .await
            .map_err(|e| format!("write: {e}"))
    }

    async fn send(&mut self, channel: u16, method: AMQPClass) -> BoxResult<()> {
        let bytes = encode_frame(&AMQPFrame::Method(channel, method))?;
        self.write(&bytes).await
    }

    async fn fill(&mut self) -> BoxResult<()> {
        use tokio::io::AsyncReadExt;
        if self.buf.capacity() - self.buf.len() < 64 * 1024 {
            self.buf.reserve(256 * 1024);
        }
        match self.stream.read_buf(&mut self.buf).await {
            Ok(0) => Err("connection closed by the broker".into()),
            Ok(_) => Ok(()),
            Err(e) => Err(format!("read: {e}")),
        }
    }

    /// The next method frame (other frames are skipped).
    async fn method(&mut self) -> BoxResult<AMQPClass> {
        loop {
            while self.buf.len() >= 7 {
                let size = u32::from_be_bytes([self.buf[3], self.buf[4], self.buf[5], self.buf[6]])
                    as usize;
                if self.buf.len() < size + 8 {
                    break;
                }
                let frame = self.buf.split_to(size + 8);
                if frame[0] == 1 {
                    return amq_protocol::protocol::parse_class(&frame[7..7 + size])
                        .map(|(_, m)| m)
                        .map_err(|e| format!("bad method frame: {e:?}"));
                }
            }
            self.fill().await?;
        }
    }

    async fn consume(&mut self, queue: &str) -> BoxResult<()> {
        use amq_protocol::protocol::basic;
        self.send(
            1,
            AMQPClass::Basic(basic::AMQPMethod::Consume(basic::Consume {
                queue: queue.into(),
                consumer_tag: "".into(),
                no_local: false,
                no_ack: true,
                exclusive: false,
                nowait: false,
                arguments: FieldTable::default(),
            })),
        )
        .await?;
        match self.method().await? {
            AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(_)) => Ok(()),
            other => Err(format!("expected basic.consume-ok, got {other:?}")),
        }
    }

    /// Reads what the broker sent and counts the `basic.deliver` frames in it.
    async fn count_deliveries(&mut self) -> BoxResult<u64> {
        self.fill().await?;
        let mut n = 0;
        let mut at = 0;
        let buf = &self.buf[..];
        while buf.len() - at >= 7 {
            let size =
                u32::from_be_bytes([buf[at + 3], buf[at + 4], buf[at + 5], buf[at + 6]]) as usize;
            if buf.len() - at < size + 8 {
                break;
            }
            if buf[at] == 1 && size >= 4 && buf[at + 7..at + 11] == [0, 60, 0, 60] {
                n += 1;
            }
            at += size + 8;
        }
        bytes::Buf::advance(&mut self.buf, at);
        Ok(n)
    }

    /// Publishes until `until`, writing pre-encoded batches of publishes. Returns how many.
    async fn publish_for(
        &mut self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        until: Instant,
        lead: &Lead,
    ) -> BoxResult<u64> {
        let one = self.encode_publish(exchange, routing_key, body, BasicProperties::default())?;
        // About 64 KiB per write, at least one message.
        let per_batch = (64 * 1024 / one.len()).max(1);
        let batch = one.repeat(per_batch);
        let mut published = 0u64;
        while Instant::now() < until {
            if lead.exceeded() {
                tokio::time::sleep(Duration::from_millis(1)).await;
                continue;
            }
            lead.add(per_batch as u64);
            self.write(&batch).await?;
            published += per_batch as u64;
        }
        Ok(published)
    }

    /// A round trip on channel 1 (basic.qos): when it returns, the broker has processed every
    /// publish sent before it.
    async fn sync(&mut self) -> BoxResult<()> {
        use amq_protocol::protocol::basic;
        self.send(
            1,
            AMQPClass::Basic(basic::AMQPMethod::Qos(basic::Qos {
                prefetch_count: 0,
                global: false,
            })),
        )
        .await?;
        let wait = async {
            loop {
                if let AMQPClass::Basic(basic::AMQPMethod::QosOk(_)) = self.method().await? {
                    return Ok(());
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(60), wait)
            .await
            .map_err(|_| "no basic.qos-ok 60 s after publishing stopped".to_owned())?
    }

    /// The frames of one publish on channel 1.
    fn encode_publish(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> BoxResult<Vec<u8>> {
        use amq_protocol::protocol::basic;
        let mut one = encode_frame(&AMQPFrame::Method(
            1,
            AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
                exchange: exchange.into(),
                routing_key: routing_key.into(),
                mandatory: false,
                immediate: false,
            })),
        ))?;
        one.extend(encode_frame(&AMQPFrame::Header(
            1,
            amq_protocol::frame::AMQPContentHeader {
                class_id: 60,
                body_size: body.len() as u64,
                properties,
            },
        ))?);
        let chunk = (self.frame_max as usize).saturating_sub(8).max(1);
        for part in body.chunks(chunk) {
            one.extend(encode_frame(&AMQPFrame::Body(1, part.to_vec()))?);
        }
        Ok(one)
    }

    /// Closes the connection politely, waiting briefly for close-ok.
    async fn close(mut self) {
        use amq_protocol::protocol::connection as conn;
        let close = AMQPClass::Connection(conn::AMQPMethod::Close(conn::Close {
            reply_code: 200,
            reply_text: "bye".into(),
            class_id: 0,
            method_id: 0,
        }));
        if self.send(0, close).await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                while let Ok(m) = self.method().await {
                    if matches!(m, AMQPClass::Connection(conn::AMQPMethod::CloseOk(_))) {
                        break;
                    }
                }
            })
            .await;
        }
    }
}

/// Counts publisher confirms from `basic.ack` / `basic.nack` frames, single or multiple.
#[derive(Default)]
struct ConfirmCounter {
    /// Every tag up to this one is confirmed.
    base: u64,
    /// Tags above `base` confirmed one by one.
    singles: std::collections::BTreeSet<u64>,
}

impl ConfirmCounter {
    /// Records a confirm; returns how many publishes it newly confirms.
    fn confirm(&mut self, tag: u64, multiple: bool) -> u64 {
        if multiple {
            if tag <= self.base {
                return 0;
            }
            let above = self.singles.split_off(&(tag + 1));
            let covered = self.singles.len() as u64;
            self.singles = above;
            let n = tag - self.base - covered;
            self.base = tag;
            n
        } else if tag > self.base && self.singles.insert(tag) {
            1
        } else {
            0
        }
    }
}

/// Persistent messages with the frame-level client: confirm mode, at most `window`
/// unconfirmed, confirms counted from the frames. Returns confirmed messages per second.
async fn raw_persistent(
    url: &str,
    body_size: usize,
    window: usize,
    seconds: f64,
) -> BoxResult<f64> {
    use amq_protocol::protocol::confirm;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const QUEUE: &str = "warren-bench.persistent";
    let control = connect(url).await?;
    delete_queue(&control, QUEUE).await;
    let control_ch = channel(&control).await?;
    control_ch
        .queue_declare(
            QUEUE.into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(|e| format!("queue.declare: {e}"))?;
    let mut raw = RawAmqp::connect(url).await?;
    raw.send(
        1,
        AMQPClass::Confirm(confirm::AMQPMethod::Select(confirm::Select {
            nowait: false,
        })),
    )
    .await?;
    match raw.method().await? {
        AMQPClass::Confirm(confirm::AMQPMethod::SelectOk(_)) => {}
        other => return Err(format!("expected confirm.select-ok, got {other:?}")),
    }
    let one = raw.encode_publish(
        "",
        QUEUE,
        &vec![0x5au8; body_size],
        BasicProperties::default().with_delivery_mode(2),
    )?;
    let per_batch = (64 * 1024 / one.len()).clamp(1, (window / 4).max(1));
    let batch = one.repeat(per_batch);
    let RawAmqp {
        stream, mut buf, ..
    } = raw;
    let (mut rd, mut wr) = stream.into_split();
    let permits = Arc::new(tokio::sync::Semaphore::new(window));
    let confirmed = Arc::new(AtomicU64::new(0));
    let nacked = Arc::new(AtomicU64::new(0));
    let last_ns = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let reader = {
        let (permits, confirmed, nacked, last_ns) = (
            Arc::clone(&permits),
            Arc::clone(&confirmed),
            Arc::clone(&nacked),
            Arc::clone(&last_ns),
        );
        tokio::spawn(async move {
            let mut counter = ConfirmCounter::default();
            loop {
                if buf.capacity() - buf.len() < 64 * 1024 {
                    buf.reserve(256 * 1024);
                }
                match rd.read_buf(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                let mut at = 0;
                let mut newly = 0;
                while buf.len() - at >= 7 {
                    let size =
                        u32::from_be_bytes([buf[at + 3], buf[at + 4], buf[at + 5], buf[at + 6]])
                            as usize;
                    if buf.len() - at < size + 8 {
                        break;
                    }
                    let p = &buf[at + 7..at + 7 + size];
                    // basic.ack is 60/80, basic.nack 60/120: delivery-tag, then the flag bits.
                    if buf[at] == 1
                        && size >= 13
                        && p[..2] == [0, 60]
                        && (p[3] == 80 || p[3] == 120)
                    {
                        let tag = u64::from_be_bytes(p[4..12].try_into().expect("8 octets"));
                        let n = counter.confirm(tag, p[12] & 1 == 1);
                        if p[3] == 80 {
                            confirmed.fetch_add(n, Ordering::Relaxed);
                        } else {
                            nacked.fetch_add(n, Ordering::Relaxed);
                        }
                        newly += n;
                    }
                    at += size + 8;
                }
                bytes::Buf::advance(&mut buf, at);
                if newly > 0 {
                    last_ns.store(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
                    permits.add_permits(newly as usize);
                }
            }
        })
    };
    let until = start + Duration::from_secs_f64(seconds);
    let mut published = 0u64;
    let mut failure = None;
    while Instant::now() < until {
        let Ok(p) = permits.acquire_many(per_batch as u32).await else {
            break;
        };
        p.forget();
        if let Err(e) = wr.write_all(&batch).await {
            failure = Some(format!("write: {e}"));
            break;
        }
        published += per_batch as u64;
    }
    let limit = Instant::now() + Duration::from_secs(60);
    while failure.is_none()
        && confirmed.load(Ordering::Relaxed) + nacked.load(Ordering::Relaxed) < published
        && Instant::now() < limit
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    reader.abort();
    drop(wr);
    let _ = control_ch
        .queue_delete(QUEUE.into(), QueueDeleteOptions::default())
        .await;
    close(control).await;
    if let Some(e) = failure {
        return Err(e);
    }
    let (acked, nacked) = (
        confirmed.load(Ordering::Relaxed),
        nacked.load(Ordering::Relaxed),
    );
    if nacked > 0 {
        return Err(format!("{nacked} publishes nacked"));
    }
    if acked < published {
        return Err(format!(
            "only {acked} of {published} publishes confirmed in 60 s"
        ));
    }
    Ok(acked as f64 / Duration::from_nanos(last_ns.load(Ordering::Relaxed)).as_secs_f64())
}

fn encode_frame(frame: &AMQPFrame) -> BoxResult<Vec<u8>> {
    amq_protocol::frame::gen_frame(frame)(amq_protocol::frame::WriteContext::from(Vec::new()))
        .map(|ctx| ctx.write)
        .map_err(|e| format!("encode frame: {e}"))
}

/// Persistent messages to a durable queue with publisher confirms, `window` unconfirmed at
/// most. Returns confirmed messages per second.
async fn persistent(url: &str, body_size: usize, window: usize, seconds: f64) -> BoxResult<f64> {
    const QUEUE: &str = "warren-bench.persistent";
    let conn = connect(url).await?;
    delete_queue(&conn, QUEUE).await;
    let ch = channel(&conn).await?;
    ch.queue_declare(
        QUEUE.into(),
        QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        },
        FieldTable::default(),
    )
    .await
    .map_err(|e| format!("queue.declare: {e}"))?;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(|e| format!("confirm.select: {e}"))?;
    let body = vec![0x5au8; body_size];
    let properties = BasicProperties::default().with_delivery_mode(2);
    let publish = || async {
        let confirm = ch
            .basic_publish(
                "".into(),
                QUEUE.into(),
                BasicPublishOptions::default(),
                &body,
                properties.clone(),
            )
            .await?;
        confirm.await
    };
    let start = Instant::now();
    let until = start + Duration::from_secs_f64(seconds);
    let mut inflight = FuturesUnordered::new();
    let (mut acked, mut nacked) = (0u64, 0u64);
    let mut last_confirm = start;
    let hard_stop = until + Duration::from_secs(60);
    loop {
        while Instant::now() < until && inflight.len() < window {
            inflight.push(publish());
        }
        match tokio::time::timeout_at(hard_stop.into(), inflight.next()).await {
            Err(_) => {
                return Err(format!(
                    "{} confirms still missing 60 s after publishing stopped",
                    inflight.len()
                ))
            }
            Ok(None) => break,
            Ok(Some(Ok(c))) if c.is_ack() => acked += 1,
            Ok(Some(Ok(_))) => nacked += 1,
            Ok(Some(Err(e))) => return Err(format!("publish/confirm: {e}")),
        }
        last_confirm = Instant::now();
    }
    drop(inflight);
    let _ = ch
        .queue_delete(QUEUE.into(), QueueDeleteOptions::default())
        .await;
    close(conn).await;
    if nacked > 0 {
        return Err(format!("{nacked} publishes nacked"));
    }
    Ok(acked as f64 / (last_confirm - start).as_secs_f64())
}

// ---------------------------------------------------------------------------------------------
// RPC.

/// Arguments of `add` as the client encodes them (a map, like warren-rpc's wire format).
#[derive(Serialize)]
struct AddArgsRef<'a> {
    a: i64,
    b: i64,
    pad: &'a str,
}

/// Arguments of `add` as a server decodes them.
#[derive(Deserialize)]
struct AddArgs {
    a: i64,
    b: i64,
    #[allow(dead_code)]
    pad: String,
}

/// The reply envelope `{"ok": value}` of the wire protocol.
#[derive(Serialize, Deserialize)]
struct OkReply {
    ok: i64,
}

/// The calculator's `add`, with a padding argument that sets the request size under test.
#[warren_rpc::service(name = "warren_bench")]
trait BenchCalc {
    /// `a + b`; `pad` only makes the request the size under test.
    #[warren(idempotent)]
    async fn add(&self, a: i64, b: i64, pad: String) -> i64;
}

struct Adder;

impl BenchCalc for Adder {
    async fn add(&self, a: i64, b: i64, _pad: String) -> i64 {
        a.wrapping_add(b)
    }
}

/// The padding that makes the MessagePack request body exactly `size` bytes (or the smallest
/// size above it).
fn pad_for(size: usize) -> String {
    let mut pad = String::new();
    loop {
        let len = rmp_serde::to_vec_named(&AddArgsRef {
            a: 1,
            b: 2,
            pad: &pad,
        })
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
        if len >= size {
            return pad;
        }
        pad.push('x');
    }
}

const RAW_QUEUE: &str = "warren-bench.raw-rpc";
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// A server written by hand: consumes the request queue with manual acks and a prefetch,
/// decodes the arguments, replies to `reply_to` with the same correlation id, then acks.
struct RawServer {
    conn: Connection,
    task: tokio::task::JoinHandle<()>,
}

impl RawServer {
    async fn start(url: &str, prefetch: u16) -> BoxResult<RawServer> {
        let conn = connect(url).await?;
        delete_queue(&conn, RAW_QUEUE).await;
        let ch = channel(&conn).await?;
        ch.queue_declare(
            RAW_QUEUE.into(),
            QueueDeclareOptions {
                auto_delete: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(|e| format!("queue.declare: {e}"))?;
        ch.basic_qos(prefetch, BasicQosOptions::default())
            .await
            .map_err(|e| format!("basic.qos: {e}"))?;
        let mut consumer = ch
            .basic_consume(
                RAW_QUEUE.into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| format!("basic.consume: {e}"))?;
        let task = tokio::spawn(async move {
            while let Some(Ok(delivery)) = consumer.next().await {
                let ch = ch.clone();
                tokio::spawn(async move {
                    let sum = match rmp_serde::from_slice::<AddArgs>(&delivery.data) {
                        Ok(args) => args.a.wrapping_add(args.b),
                        Err(_) => i64::MIN,
                    };
                    let body = rmp_serde::to_vec_named(&OkReply { ok: sum }).unwrap_or_default();
                    let props = &delivery.properties;
                    if let (Some(reply_to), Some(cid)) = (props.reply_to(), props.correlation_id())
                    {
                        let reply = BasicProperties::default()
                            .with_correlation_id(cid.clone())
                            .with_content_type("application/msgpack".into());
                        let _ = ch
                            .basic_publish(
                                "".into(),
                                reply_to.clone(),
                                BasicPublishOptions::default(),
                                &body,
                                reply,
                            )
                            .await;
                    }
                    let _ = delivery.acker.ack(BasicAckOptions::default()).await;
                });
            }
        });
        Ok(RawServer { conn, task })
    }

    async fn stop(self) {
        self.task.abort();
        delete_queue(&self.conn, RAW_QUEUE).await;
        close(self.conn).await;
    }
}

type Pending = Arc<Mutex<HashMap<u64, tokio::sync::oneshot::Sender<Vec<u8>>>>>;

/// A caller written by hand: one connection and channel, replies on direct reply-to, matched
/// to calls by correlation id.
struct RawClient {
    conn: Connection,
    ch: Channel,
    pending: Pending,
    next_id: AtomicU64,
    reader: tokio::task::JoinHandle<()>,
    /// Publish with `mandatory` and wait for the broker's confirm before waiting for the reply.
    confirms: bool,
}

impl RawClient {
    async fn connect(url: &str, confirms: bool) -> BoxResult<RawClient> {
        let conn = connect(url).await?;
        let ch = channel(&conn).await?;
        if confirms {
            ch.confirm_select(ConfirmSelectOptions::default())
                .await
                .map_err(|e| format!("confirm.select: {e}"))?;
        }
        let mut replies = ch
            .basic_consume(
                "amq.rabbitmq.reply-to".into(),
                "".into(),
                no_ack(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| format!("consume amq.rabbitmq.reply-to: {e}"))?;
        let pending: Pending = Arc::default();
        let reader = {
            let pending = Arc::clone(&pending);
            tokio::spawn(async move {
                while let Some(Ok(d)) = replies.next().await {
                    let id = d
                        .properties
                        .correlation_id()
                        .as_ref()
                        .and_then(|c| c.as_str().parse::<u64>().ok());
                    let waiter = id.and_then(|id| pending.lock().expect("pending").remove(&id));
                    if let Some(tx) = waiter {
                        let _ = tx.send(d.data);
                    }
                }
            })
        };
        Ok(RawClient {
            conn,
            ch,
            pending,
            next_id: AtomicU64::new(1),
            reader,
            confirms,
        })
    }

    async fn call(&self, body: &[u8]) -> BoxResult<Vec<u8>> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.pending.lock().expect("pending").insert(id, tx);
        let props = BasicProperties::default()
            .with_reply_to("amq.rabbitmq.reply-to".into())
            .with_correlation_id(id.to_string().into())
            .with_content_type("application/msgpack".into());
        let confirm = self
            .ch
            .basic_publish(
                "".into(),
                RAW_QUEUE.into(),
                BasicPublishOptions {
                    mandatory: self.confirms,
                    ..BasicPublishOptions::default()
                },
                body,
                props,
            )
            .await
            .map_err(|e| format!("basic.publish: {e}"))?;
        if self.confirms {
            confirm.await.map_err(|e| format!("confirm: {e}"))?;
        }
        match tokio::time::timeout(CALL_TIMEOUT, rx).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(_)) => Err("reply reader ended".into()),
            Err(_) => {
                self.pending.lock().expect("pending").remove(&id);
                Err("no reply in 10 s".into())
            }
        }
    }

    async fn close(self) {
        self.reader.abort();
        close(self.conn).await;
    }
}

type CallFuture = Pin<Box<dyn Future<Output = BoxResult<()>> + Send>>;
type CallFn = Arc<dyn Fn() -> CallFuture + Send + Sync>;

/// p50 and p99 of sequential calls, in microseconds: 200 warm-up calls, then calls for
/// `seconds` (at most 20,000).
async fn latency(call: &CallFn, seconds: f64) -> BoxResult<(f64, f64)> {
    for _ in 0..200 {
        call().await?;
    }
    let until = Instant::now() + Duration::from_secs_f64(seconds);
    let mut samples = Vec::with_capacity(20_000);
    while Instant::now() < until && samples.len() < 20_000 {
        let t = Instant::now();
        call().await?;
        samples.push(t.elapsed().as_secs_f64() * 1e6);
    }
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    Ok((at(0.50), at(0.99)))
}

/// Calls per second with `callers` concurrent callers, each calling in a loop: half a second
/// of warm-up, then `seconds` measured.
async fn calls_per_sec(call: &CallFn, callers: usize, seconds: f64) -> BoxResult<f64> {
    let start = Instant::now();
    let measure_from = start + Duration::from_millis(500);
    let until = measure_from + Duration::from_secs_f64(seconds);
    let mut tasks = Vec::new();
    for _ in 0..callers {
        let call = Arc::clone(call);
        tasks.push(tokio::spawn(async move {
            let mut done = 0u64;
            loop {
                let now = Instant::now();
                if now >= until {
                    return Ok::<u64, String>(done);
                }
                call().await?;
                if now >= measure_from && Instant::now() <= until {
                    done += 1;
                }
            }
        }));
    }
    let mut total = 0;
    let mut first_error = None;
    for t in tasks {
        match t.await {
            Ok(Ok(n)) => total += n,
            Ok(Err(e)) => {
                first_error.get_or_insert(e);
            }
            Err(e) => {
                first_error.get_or_insert(format!("caller task: {e}"));
            }
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    Ok(total as f64 / seconds)
}

const RPC_SIZES: [(usize, &str); 2] = [(64, "64 B"), (16 * 1024, "16 KiB")];
const RPC_CALLERS: [usize; 2] = [32, 256];
/// The servers' prefetch (and warren-rpc's concurrency): enough that 256 callers never wait
/// for a server slot, the same for both implementations.
const SERVER_CONCURRENCY: u16 = 256;

/// Runs the RPC measurements for one implementation against one broker.
async fn rpc_suite(
    results: &mut Results,
    which: Which,
    how: &str,
    make: &dyn Fn(usize) -> CallFn,
    seconds: f64,
) {
    for (size, size_name) in RPC_SIZES {
        let call = make(size);
        let (p50, p99) = (
            rpc_label(how, size_name, "p50 @1 caller"),
            rpc_label(how, size_name, "p99 @1 caller"),
        );
        match latency(&call, seconds.min(3.0)).await {
            Ok((a, b)) => {
                results.record(which, &p50, Unit::Micros, a);
                results.record(which, &p99, Unit::Micros, b);
            }
            Err(e) => {
                results.note(which, &p50, Unit::Micros, format!("failed: {e}"));
                results.note(which, &p99, Unit::Micros, format!("failed: {e}"));
            }
        }
        for callers in RPC_CALLERS {
            let label = rpc_label(how, size_name, &format!("calls/s @{callers} callers"));
            match calls_per_sec(&call, callers, seconds.min(3.0)).await {
                Ok(v) => results.record(which, &label, Unit::CallsPerSec, v),
                Err(e) => results.note(which, &label, Unit::CallsPerSec, format!("failed: {e}")),
            }
        }
    }
}

async fn raw_rpc(
    results: &mut Results,
    which: Which,
    url: &str,
    seconds: f64,
    confirms: bool,
) -> BoxResult<()> {
    let server = RawServer::start(url, SERVER_CONCURRENCY).await?;
    let client = Arc::new(RawClient::connect(url, confirms).await?);
    let make = |size: usize| -> CallFn {
        let body = Arc::new(
            rmp_serde::to_vec_named(&AddArgsRef {
                a: 1,
                b: 2,
                pad: &pad_for(size),
            })
            .expect("encodes"),
        );
        let client = Arc::clone(&client);
        Arc::new(move || {
            let (client, body) = (Arc::clone(&client), Arc::clone(&body));
            Box::pin(async move {
                let reply = client.call(&body).await?;
                match rmp_serde::from_slice::<OkReply>(&reply) {
                    Ok(OkReply { ok: 3 }) => Ok(()),
                    _ => Err(format!("unexpected reply {reply:?}")),
                }
            })
        })
    };
    let how = if confirms {
        "raw lapin (mandatory + confirm)"
    } else {
        "raw lapin"
    };
    rpc_suite(results, which, how, &make, seconds).await;
    if let Ok(client) = Arc::try_unwrap(client) {
        client.close().await;
    }
    server.stop().await;
    Ok(())
}

async fn warren_rpc(results: &mut Results, which: Which, url: &str, seconds: f64) -> BoxResult<()> {
    // The service queue is declared by the server and outlives it: clear a leftover first.
    let admin = connect(url).await?;
    delete_queue(&admin, "warren_bench").await;
    let server = warren_rpc::Server::builder()
        .concurrency(SERVER_CONCURRENCY)
        .connection_name("warren-bench-server")
        .serve(url, BenchCalcServer::new(Adder))
        .await
        .map_err(|e| format!("warren-rpc server: {e}"))?;
    let client = warren_rpc::Client::builder()
        .timeout(CALL_TIMEOUT)
        .connection_name("warren-bench-client")
        .connect(url)
        .await
        .map_err(|e| format!("warren-rpc client: {e}"));
    let client = match client {
        Ok(c) => BenchCalcClient::new(c),
        Err(e) => {
            server.shutdown().await;
            delete_queue(&admin, "warren_bench").await;
            close(admin).await;
            return Err(e);
        }
    };
    let make = |size: usize| -> CallFn {
        let pad = pad_for(size);
        let client = client.clone();
        Arc::new(move || {
            let (client, pad) = (client.clone(), pad.clone());
            Box::pin(async move {
                match client.add(1, 2, pad).await {
                    Ok(3) => Ok(()),
                    Ok(other) => Err(format!("add(1, 2) returned {other}")),
                    Err(e) => Err(format!("warren-rpc: {e}")),
                }
            })
        })
    };
    rpc_suite(results, which, "warren-rpc", &make, seconds).await;
    drop(client);
    let _ = tokio::time::timeout(Duration::from_secs(15), server.shutdown()).await;
    delete_queue(&admin, "warren_bench").await;
    close(admin).await;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Memory.

/// Opens up to `n` connections (each with a channel), stopping at the first failure. Returns
/// the connections and the first error.
async fn open_many(url: &str, n: usize) -> (Vec<(Connection, Channel)>, Option<String>) {
    let mut open = Vec::with_capacity(n);
    let mut error = None;
    while open.len() < n && error.is_none() {
        let batch = (n - open.len()).min(50);
        let mut attempts: FuturesUnordered<_> = (0..batch)
            .map(|_| async {
                let conn = tokio::time::timeout(
                    Duration::from_secs(3),
                    Connection::connect(url, ConnectionProperties::default()),
                )
                .await
                .map_err(|_| "connect timed out after 3 s".to_owned())?
                .map_err(|e| format!("connect: {e}"))?;
                let ch = channel(&conn).await?;
                Ok::<_, String>((conn, ch))
            })
            .collect();
        while let Some(r) = attempts.next().await {
            match r {
                Ok(c) => open.push(c),
                Err(e) => {
                    error.get_or_insert(e);
                }
            }
        }
    }
    (open, error)
}

async fn memory_connections(
    results: &mut Results,
    which: Which,
    url: &str,
    pid: u32,
    n: usize,
) -> BoxResult<()> {
    let before = rss_kib(pid).ok_or("cannot read RSS")?;
    let (open, error) = open_many(url, n).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let during = rss_kib(pid).ok_or("cannot read RSS")?;
    let opened = open.len();
    let mut closing: FuturesUnordered<_> = open.into_iter().map(|(c, _)| close(c)).collect();
    while closing.next().await.is_some() {}
    let label = format!("RSS with {n} connections (1 channel each)");
    results.record(which, &label, Unit::KiB, during as f64);
    if opened > 0 {
        results.record(
            which,
            RSS_PER_CONN,
            Unit::KiB,
            (during as f64 - before as f64) / opened as f64,
        );
    }
    if let Some(e) = error {
        let note = format!("only {opened} opened: {e}");
        results.note(which, &label, Unit::KiB, note.clone());
        results.note(which, RSS_PER_CONN, Unit::KiB, note);
    }
    Ok(())
}

async fn memory_queued(
    results: &mut Results,
    which: Which,
    url: &str,
    pid: u32,
    n: u64,
) -> BoxResult<()> {
    let label = format!("RSS with {} queued 100 B msgs", si(n as f64));
    let conn = connect(url).await?;
    let ch = channel(&conn).await?;
    let q = ch
        .queue_declare("".into(), exclusive(), FieldTable::default())
        .await
        .map_err(|e| format!("queue.declare: {e}"))?;
    let name = q.name().to_string();
    let body = [0x5au8; 100];
    let mut inflight = FuturesUnordered::new();
    let mut sent = 0u64;
    let started = Instant::now();
    let limit = started + Duration::from_secs(180);
    while sent < n || !inflight.is_empty() {
        while sent < n && inflight.len() < 1000 {
            inflight.push(ch.basic_publish(
                "".into(),
                name.as_str().into(),
                BasicPublishOptions::default(),
                &body,
                BasicProperties::default(),
            ));
            sent += 1;
        }
        match tokio::time::timeout_at(limit.into(), inflight.next()).await {
            Err(_) => return Err("publishing took over 180 s".into()),
            Ok(Some(Err(e))) => return Err(format!("basic.publish: {e}")),
            Ok(_) => {}
        }
    }
    drop(inflight);
    let mut count = 0;
    while Instant::now() < limit {
        count = ch
            .queue_declare(
                name.as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..exclusive()
                },
                FieldTable::default(),
            )
            .await
            .map_err(|e| format!("queue.declare passive: {e}"))?
            .message_count();
        if u64::from(count) >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let publish_secs = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss = rss_kib(pid).ok_or("cannot read RSS")?;
    let _ = ch
        .queue_purge(name.as_str().into(), QueuePurgeOptions::default())
        .await;
    let _ = ch
        .queue_delete(name.as_str().into(), QueueDeleteOptions::default())
        .await;
    close(conn).await;
    results.record(which, &label, Unit::KiB, rss as f64);
    eprintln!(
        "    {:<9} ({} queued in {publish_secs:.1} s)",
        which.name(),
        count
    );
    if u64::from(count) < n {
        results.note(
            which,
            &label,
            Unit::KiB,
            format!("only {count} of {n} queued"),
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The run.

struct Env<'a> {
    args: &'a Args,
    warren_url: String,
    warren_pid: u32,
    rabbit_pid: Option<u32>,
}

impl Env<'_> {
    fn url(&self, which: Which) -> &str {
        match which {
            Which::Warren => &self.warren_url,
            Which::Rabbitmq => &self.args.rabbitmq_url,
        }
    }

    fn pid(&self, which: Which) -> Option<u32> {
        match which {
            Which::Warren => Some(self.warren_pid),
            Which::Rabbitmq => self.rabbit_pid,
        }
    }

    fn wants(&self, group: Group) -> bool {
        self.args.only.is_empty() || self.args.only.contains(&group)
    }
}

fn record_or_note(results: &mut Results, which: Which, label: &str, unit: Unit, r: BoxResult<f64>) {
    match r {
        Ok(v) => results.record(which, label, unit, v),
        Err(e) => results.note(which, label, unit, format!("failed: {e}")),
    }
}

/// One run of every selected scenario on each broker in `order`. The queued-messages memory
/// scenario runs in the last run only: RabbitMQ keeps most of that memory afterwards, which
/// would inflate its idle and per-connection figures in the runs after it.
async fn one_run(env: &Env<'_>, order: &[Which], last: bool, results: &mut Results) {
    let a = env.args;
    if env.wants(Group::Memory) {
        eprintln!("  memory: idle");
        for &w in order {
            match env.pid(w).and_then(rss_kib) {
                Some(kib) => results.record(w, RSS_IDLE, Unit::KiB, kib as f64),
                None => results.note(w, RSS_IDLE, Unit::KiB, "no pid".into()),
            }
        }
        eprintln!("  memory: {} connections", a.connections);
        for &w in order {
            if let Some(pid) = env.pid(w) {
                if let Err(e) = memory_connections(results, w, env.url(w), pid, a.connections).await
                {
                    results.note(w, RSS_PER_CONN, Unit::KiB, format!("failed: {e}"));
                }
            }
        }
    }
    if env.wants(Group::Throughput) {
        let cases = [
            (TPUT_16, 16usize, 1usize),
            (TPUT_1K, 1024, 1),
            (FANOUT, 16, 10),
        ];
        for &generator in &a.generators {
            for (what, size, queues) in cases {
                let label = tput_label(what, generator);
                eprintln!("  throughput: {label}");
                for &w in order {
                    let load = Load {
                        generator,
                        publishers: a.publishers,
                        window: a.window,
                        seconds: a.seconds,
                    };
                    let r = throughput(env.url(w), size, queues, load).await;
                    record_or_note(results, w, &label, Unit::MsgsPerSec, r);
                }
            }
            let label = tput_label(PERSISTENT, generator);
            eprintln!("  throughput: {label}");
            for &w in order {
                let r = match generator {
                    Generator::Lapin => persistent(env.url(w), 1024, 1000, a.seconds).await,
                    Generator::Frame => raw_persistent(env.url(w), 1024, 1000, a.seconds).await,
                };
                record_or_note(results, w, &label, Unit::MsgsPerSec, r);
            }
        }
    }
    if env.wants(Group::Rpc) {
        eprintln!("  rpc: raw lapin");
        for &w in order {
            if let Err(e) = raw_rpc(results, w, env.url(w), a.seconds, a.raw_rpc_confirms).await {
                let label = rpc_label("raw lapin", "64 B", "p50 @1 caller");
                results.note(w, &label, Unit::Micros, format!("failed: {e}"));
            }
        }
        eprintln!("  rpc: warren-rpc");
        for &w in order {
            if let Err(e) = warren_rpc(results, w, env.url(w), a.seconds).await {
                let label = rpc_label("warren-rpc", "64 B", "p50 @1 caller");
                results.note(w, &label, Unit::Micros, format!("failed: {e}"));
            }
        }
    }
    if env.wants(Group::Memory) && last {
        eprintln!("  memory: {} queued messages", a.queued);
        for &w in order {
            if let Some(pid) = env.pid(w) {
                if let Err(e) = memory_queued(results, w, env.url(w), pid, a.queued).await {
                    let label = format!("RSS with {} queued 100 B msgs", si(a.queued as f64));
                    results.note(w, &label, Unit::KiB, format!("failed: {e}"));
                }
            }
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(Cmd::ServeBroker { listen, data_dir }) = args.command {
        return serve_broker(listen, data_dir);
    }
    let bin = match BrokerBin::find(args.broker_bin.clone()) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("warren-bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    let rabbit_pid = args.rabbitmq_pid.or_else(find_beam);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("warren-bench: runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let brokers: Vec<Which> = if args.brokers.is_empty() {
        vec![Which::Warren, Which::Rabbitmq]
    } else {
        args.brokers.clone()
    };
    println!("warren-bench");
    println!("- warren-broker: {}", bin.describe());
    println!(
        "- RabbitMQ: {} (beam.smp pid {})",
        args.rabbitmq_url,
        rabbit_pid.map_or("unknown".into(), |p| p.to_string())
    );
    println!(
        "- load generators: {}; {} publisher connection(s), {} publishes in flight each (lapin), {} s per measurement; this machine: {} cores",
        args.generators.iter().map(|g| g.name()).collect::<Vec<_>>().join(", "),
        args.publishers,
        args.window,
        args.seconds,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let mut results = Results::default();
    let mut complaints = Vec::new();
    for run in 0..args.runs {
        let broker = match ChildBroker::start(&bin) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("warren-bench: {e}");
                return ExitCode::FAILURE;
            }
        };
        // Let the broker settle before its idle RSS is read.
        std::thread::sleep(Duration::from_millis(500));
        let mut order = brokers.clone();
        if run % 2 == 1 {
            order.reverse();
        }
        eprintln!(
            "run {}/{} (order: {})",
            run + 1,
            args.runs,
            order
                .iter()
                .map(|w| w.name())
                .collect::<Vec<_>>()
                .join(", ")
        );
        let env = Env {
            args: &args,
            warren_url: broker.url.clone(),
            warren_pid: broker.pid,
            rabbit_pid,
        };
        runtime.block_on(one_run(&env, &order, run + 1 == args.runs, &mut results));
        complaints.extend(
            broker
                .complaints
                .lock()
                .expect("complaints lock")
                .drain(..)
                .map(|l| format!("run {}: {l}", run + 1)),
        );
    }
    results.print(args.runs);
    print_targets(&results);
    if !complaints.is_empty() {
        println!();
        println!(
            "warren-broker logged {} warning/error line(s); the first:",
            complaints.len()
        );
        for l in complaints.iter().take(10) {
            println!("  {l}");
        }
    }
    ExitCode::SUCCESS
}
