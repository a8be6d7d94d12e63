//! Results: every measurement by row and broker, the medians table, and the targets.

use std::collections::HashMap;

use crate::cli::{Generator, Which};

/// What a row measures, which decides formatting and which direction is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unit {
    /// Messages per second (higher is better).
    MsgsPerSec,
    /// Calls per second (higher is better).
    CallsPerSec,
    /// Operations (declarations, bindings) per second (higher is better).
    OpsPerSec,
    /// Microseconds (lower is better).
    Micros,
    /// KiB of memory (lower is better).
    KiB,
    /// A count, such as connections that worked (higher is better).
    Count,
}

impl Unit {
    pub(crate) fn format(self, v: f64) -> String {
        match self {
            Unit::MsgsPerSec => format!("{} msg/s", si(v)),
            Unit::CallsPerSec => format!("{} calls/s", si(v)),
            Unit::OpsPerSec => format!("{}/s", si(v)),
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
            Unit::Count => format!("{v:.0}"),
        }
    }
}

/// A count with thousands separators, as the row labels write it: 10,000.
pub(crate) fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let groups: Vec<&str> = digits
        .as_bytes()
        .rchunks(3)
        .rev()
        .map(|g| std::str::from_utf8(g).unwrap_or("?"))
        .collect();
    groups.join(",")
}

pub(crate) fn si(v: f64) -> String {
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
pub(crate) struct Results {
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

    pub(crate) fn record(&mut self, which: Which, label: &str, unit: Unit, value: f64) {
        self.row(label, unit);
        eprintln!("    {:<9} {label}: {}", which.name(), unit.format(value));
        self.values
            .entry((label.to_owned(), which))
            .or_default()
            .push(value);
    }

    pub(crate) fn note(&mut self, which: Which, label: &str, unit: Unit, note: String) {
        self.row(label, unit);
        eprintln!("    {:<9} {label}: {note}", which.name());
        let notes = self.notes.entry((label.to_owned(), which)).or_default();
        if !notes.contains(&note) {
            notes.push(note);
        }
    }

    pub(crate) fn median(&self, label: &str, which: Which) -> Option<f64> {
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

    pub(crate) fn ratio(&self, label: &str) -> Option<f64> {
        Some(self.median(label, Which::Warren)? / self.median(label, Which::Rabbitmq)?)
    }

    pub(crate) fn cell(&self, label: &str, unit: Unit, which: Which) -> String {
        let mut cell = match self.median(label, which) {
            Some(v) => unit.format(v),
            None => "n/a".to_owned(),
        };
        if let Some(notes) = self.notes.get(&(label.to_owned(), which)) {
            cell.push_str(&format!(" ({})", notes.join("; ")));
        }
        cell
    }

    pub(crate) fn print(&self, runs: usize) {
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
pub(crate) const TPUT_16: &str = "publish->consume 16 B, 1 pub / 1 no-ack consumer";
pub(crate) const TPUT_1K: &str = "publish->consume 1 KiB, 1 pub / 1 no-ack consumer";
pub(crate) const FANOUT: &str = "fan-out 16 B to 10 queues (msgs in/s; x10 delivered)";
pub(crate) const TOPIC_10K: &str =
    "publish->consume 16 B via amq.topic with 10,000 other bindings [lapin]";
pub(crate) const TOPIC_10K_DECLARE: &str =
    "declaring 10,000 topic bindings, one after the other [lapin]";
pub(crate) const PERSISTENT: &str = "persistent 1 KiB, durable queue, confirms (1000 in flight)";

pub(crate) fn persistent_online_label(size: usize, online: crate::throughput::Online) -> String {
    let size = if size >= 1024 {
        format!("{} KiB", size / 1024)
    } else {
        format!("{size} B")
    };
    let who = match online {
        crate::throughput::Online::Nobody => "no consumer",
        crate::throughput::Online::NoAck => "no-ack consumer online",
        crate::throughput::Online::ManualAck => "acking consumer online",
    };
    format!("persistent {size}, confirms (1000 in flight), {who} [lapin]")
}

pub(crate) fn tput_label(what: &str, generator: Generator) -> String {
    format!("{what} [{}]", generator.name())
}
pub(crate) const RSS_IDLE: &str = "RSS idle";
pub(crate) const RSS_PER_CONN: &str = "RSS per idle connection";

pub(crate) fn rpc_label(how: &str, size: &str, what: &str) -> String {
    format!("RPC {how} {size}: {what}")
}

/// The ratio of a throughput row, from the frame-level generator's rows when they were
/// measured (lapin caps the bundled broker's figures), else from lapin's.
fn best_ratio(r: &Results, what: &str) -> Option<f64> {
    r.ratio(&tput_label(what, Generator::Frame))
        .or_else(|| r.ratio(&tput_label(what, Generator::Lapin)))
}

/// The targets, checked against the medians.
pub(crate) fn print_targets(r: &Results) {
    println!();
    println!("Targets (issues 6 and 16):");
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
        3.5,
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
    check(TOPIC_10K, r.ratio(TOPIC_10K), ">=", 3.0);
    for (size, online) in [
        (16, crate::throughput::Online::NoAck),
        (1024, crate::throughput::Online::NoAck),
        (16, crate::throughput::Online::ManualAck),
        (1024, crate::throughput::Online::ManualAck),
    ] {
        let label = persistent_online_label(size, online);
        check(&label, r.ratio(&label), ">=", 2.0);
    }
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
    match r.median(&tput_label(TPUT_16, Generator::Frame), Which::Warren) {
        Some(v) => println!(
            "- publish->consume 16 B on warren-broker, frame-level client: {:.0}k msg/s (target >= 1,000k): {}",
            v / 1e3,
            if v >= 1e6 { "MET" } else { "NOT MET" }
        ),
        None => println!("- publish->consume 16 B on warren-broker, frame-level client: not measured"),
    }
    if let Some(x) = r.ratio(RSS_PER_CONN) {
        println!("- memory per idle connection, Warren/RabbitMQ: {x:.2}x");
    }
}
