//! The command line: which brokers, which scenario groups, how long and how hard.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// Command line of the harness.
#[derive(Debug, Parser)]
#[command(name = "warren-bench", about = "Warren against RabbitMQ, side by side")]
pub(crate) struct Args {
    /// RabbitMQ to compare with.
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    pub(crate) rabbitmq_url: String,
    /// PID of RabbitMQ's beam.smp, for its RSS (found with `pgrep -f beam.smp` unless set).
    #[arg(long)]
    pub(crate) rabbitmq_pid: Option<u32>,
    /// The warren-broker binary started as a child process. Default: `warren-broker` next to
    /// this binary if it was built, else this binary re-executed as the broker (same library,
    /// same runtime configuration).
    #[arg(long)]
    pub(crate) broker_bin: Option<PathBuf>,
    /// How many times each scenario runs on each broker; the table shows medians.
    #[arg(long, default_value_t = 3)]
    pub(crate) runs: usize,
    /// Seconds each throughput measurement publishes (or calls) for.
    #[arg(long, default_value_t = 5.0)]
    pub(crate) seconds: f64,
    /// Scenario groups to run (default: all).
    #[arg(long, value_delimiter = ',')]
    pub(crate) only: Vec<Group>,
    /// Brokers to run against (default: both).
    #[arg(long, value_delimiter = ',')]
    pub(crate) brokers: Vec<Which>,
    /// Publisher connections in the throughput scenarios (1 = the scenario as specified; more
    /// checks that the load generator is not the bottleneck).
    #[arg(long, default_value_t = 1)]
    pub(crate) publishers: usize,
    /// Publishes in flight per publisher in the throughput scenarios.
    #[arg(long, default_value_t = 512)]
    pub(crate) window: usize,
    /// The clients the throughput scenarios publish and consume with: `frame` (a minimal
    /// frame-level client that writes pre-encoded publishes and counts deliveries and confirms
    /// without parsing them) and/or `lapin` (as applications see it). Each gets its own rows;
    /// the targets are checked on the fastest generator's rows.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Generator::Frame, Generator::Lapin])]
    pub(crate) generators: Vec<Generator>,
    /// The hand-written RPC client publishes with `mandatory` on a confirm-mode channel and
    /// waits for the confirm, as warren-rpc does (to break down the framework's cost).
    #[arg(long)]
    pub(crate) raw_rpc_confirms: bool,
    /// Connections opened in the memory scenario.
    #[arg(long, default_value_t = 1000)]
    pub(crate) connections: usize,
    /// 100 B messages queued in the memory scenario.
    #[arg(long, default_value_t = 1_000_000)]
    pub(crate) queued: u64,
    /// Queues (one consumer each) in the many-entities scenario.
    #[arg(long, default_value_t = 10_000)]
    pub(crate) many_queues: usize,
    /// Connections those queues are declared and consumed on (each takes an equal share).
    #[arg(long, default_value_t = 10)]
    pub(crate) many_queues_connections: usize,
    /// Connections opened in the many-connections scenario.
    #[arg(long, default_value_t = 10_000)]
    pub(crate) many_connections: usize,
    /// Connections of those that each publish to and consume from a queue.
    #[arg(long, default_value_t = 100)]
    pub(crate) connection_sample: usize,
    #[command(subcommand)]
    pub(crate) command: Option<Cmd>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Cmd {
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
pub(crate) enum Group {
    /// Publish -> consume throughput, fan-out, persistent with confirms.
    Throughput,
    /// RPC by hand with lapin and through warren-rpc.
    Rpc,
    /// RSS idle, with many connections, with many queued messages.
    Memory,
    /// Many entities (issue 16): 10,000 queues with a consumer each, 10,000 connections.
    Entities,
}

/// The client that generates throughput load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Generator {
    /// A minimal frame-level client (see `RawAmqp`).
    Frame,
    /// lapin 4, as applications use it.
    Lapin,
}

impl Generator {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Generator::Frame => "frame-level client",
            Generator::Lapin => "lapin",
        }
    }
}

/// Which broker a measurement is of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ValueEnum)]
pub(crate) enum Which {
    /// The bundled broker, as a child process.
    Warren,
    /// RabbitMQ at `--rabbitmq-url`.
    Rabbitmq,
}

impl Which {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Which::Warren => "warren",
            Which::Rabbitmq => "rabbitmq",
        }
    }
}
