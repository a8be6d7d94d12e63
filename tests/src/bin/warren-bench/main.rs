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
//!   messages;
//! - many entities, with the frame-level client: 10,000 queues with a consumer each (declare
//!   and consume rates, RSS, publish -> consume round-robin over them, delete rate) and
//!   10,000 connections (connect rate, RSS, a round trip on each, publish -> consume through a
//!   sample).
//!
//! The harness raises its own open-file limit to the hard limit first (10,000 sockets).
//!
//! See BENCHMARKS.md for the machine and the latest table.
//!
//! Modules: [`cli`] (the command line), [`broker_process`] (the broker as a child process, RSS),
//! [`throughput`](mod@throughput), [`rpc`], [`memory`] and [`entities`] (the scenarios), [`report`] (results, the table,
//! the targets), [`lapin_client`] and [`frame_client`] (the two load generators; the
//! frame-level one is built on the raw client of `warren_tests::raw`, as the wire tests are).

mod broker_process;
mod cli;
mod entities;
mod frame_client;
mod lapin_client;
mod memory;
mod report;
mod rpc;
mod throughput;

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use broker_process::{find_beam, rss_kib, serve_broker, BrokerBin, ChildBroker};
use cli::{Args, Cmd, Generator, Group, Which};
use entities::{many_connections, many_queues};
use memory::{memory_connections, memory_queued};
use report::{
    persistent_online_label, print_targets, rpc_label, si, tput_label, Results, Unit, FANOUT,
    PERSISTENT, RSS_IDLE, RSS_PER_CONN, TOPIC_10K, TOPIC_10K_DECLARE, TPUT_16, TPUT_1K,
};
use rpc::{frame_rpc, raw_rpc, warren_rpc};
use throughput::{persistent, raw_persistent, throughput, Load, Online};

/// What a scenario reports when it fails: a sentence for the table.
pub(crate) type BoxResult<T> = Result<T, String>;

/// The brokers of one run: where they are and which process to read the RSS of.
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
                        topic_bindings: 0,
                    };
                    let r = throughput(env.url(w), size, queues, load).await;
                    record_or_note(results, w, &label, Unit::MsgsPerSec, r.map(|(m, _)| m));
                }
            }
            let label = tput_label(PERSISTENT, generator);
            eprintln!("  throughput: {label}");
            for &w in order {
                let r = match generator {
                    Generator::Lapin => {
                        persistent(env.url(w), 1024, 1000, a.seconds, Online::Nobody).await
                    }
                    Generator::Frame => raw_persistent(env.url(w), 1024, 1000, a.seconds).await,
                };
                record_or_note(results, w, &label, Unit::MsgsPerSec, r);
            }
        }
        // Topic routing with 10,000 other bindings on amq.topic (issue 16), with lapin.
        let label = TOPIC_10K.to_string();
        eprintln!("  throughput: {label}");
        for &w in order {
            let load = Load {
                generator: Generator::Lapin,
                publishers: a.publishers,
                window: a.window,
                seconds: a.seconds,
                topic_bindings: 10_000,
            };
            match throughput(env.url(w), 16, 1, load).await {
                Ok((msgs, bind_rate)) => {
                    results.record(w, &label, Unit::MsgsPerSec, msgs);
                    if let Some(rate) = bind_rate {
                        results.record(w, TOPIC_10K_DECLARE, Unit::OpsPerSec, rate);
                    }
                }
                Err(e) => results.note(w, &label, Unit::MsgsPerSec, format!("failed: {e}")),
            }
        }
        // Persistent messages with a consumer online (issue 16), with lapin on both brokers.
        for (size, online) in [
            (16, Online::NoAck),
            (1024, Online::NoAck),
            (16, Online::ManualAck),
            (1024, Online::ManualAck),
        ] {
            let label = persistent_online_label(size, online);
            eprintln!("  throughput: {label}");
            for &w in order {
                let r = persistent(env.url(w), size, 1000, a.seconds, online).await;
                record_or_note(results, w, &label, Unit::MsgsPerSec, r);
            }
        }
    }
    if env.wants(Group::Rpc) {
        eprintln!("  rpc: frame-level client");
        for &w in order {
            if let Err(e) = frame_rpc(results, w, env.url(w), a.seconds).await {
                let label = rpc_label("frame-level client", "64 B", "p50 @1 caller");
                results.note(w, &label, Unit::Micros, format!("failed: {e}"));
            }
        }
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
    if env.wants(Group::Entities) {
        eprintln!("  entities: {} queues, one consumer each", a.many_queues);
        for &w in order {
            if let Some(pid) = env.pid(w) {
                let r = many_queues(
                    results,
                    w,
                    env.url(w),
                    pid,
                    a.many_queues,
                    a.many_queues_connections,
                    a.seconds,
                )
                .await;
                if let Err(e) = r {
                    let label = format!("many queues: {} queues", report::thousands(a.many_queues));
                    results.note(w, &label, Unit::OpsPerSec, format!("failed: {e}"));
                }
            }
        }
        eprintln!("  entities: {} connections", a.many_connections);
        for &w in order {
            if let Some(pid) = env.pid(w) {
                let r = many_connections(
                    results,
                    w,
                    env.url(w),
                    pid,
                    a.many_connections,
                    a.connection_sample,
                )
                .await;
                if let Err(e) = r {
                    let label = format!(
                        "many connections: {} connections",
                        report::thousands(a.many_connections)
                    );
                    results.note(w, &label, Unit::KiB, format!("failed: {e}"));
                }
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

/// Raises this process's soft limit on open files to the hard limit (the broker child inherits
/// it, and raises its own too); returns the limit before and after, for the header.
#[cfg(unix)]
fn raise_open_file_limit() -> String {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let show = |v: Option<u64>| v.map_or_else(|| "unlimited".to_owned(), |v| v.to_string());
    let limit = getrlimit(Resource::Nofile);
    // An unlimited hard limit cannot be the soft one (Linux caps it at fs.nr_open).
    let target = limit.maximum.unwrap_or(1 << 20);
    match limit.current {
        Some(soft) if soft < target => {
            let raised = Rlimit {
                current: Some(target),
                maximum: limit.maximum,
            };
            match setrlimit(Resource::Nofile, raised) {
                Ok(()) => format!("{target} (raised from {soft})"),
                Err(e) => format!("{soft} (cannot raise it to {target}: {e})"),
            }
        }
        soft => show(soft),
    }
}

#[cfg(not(unix))]
fn raise_open_file_limit() -> String {
    "not raised (not Unix)".to_owned()
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(Cmd::ServeBroker { listen, data_dir }) = args.command {
        return serve_broker(listen, data_dir);
    }
    let open_files = raise_open_file_limit();
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
    println!("- open-file limit of the harness: {open_files}");
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
