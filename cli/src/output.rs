//! What the command prints: readable text by default, JSON with `--json`, and failures as
//! their typed error on stderr (readable) or stdout (`{"error": ...}` with `--json`).

use std::collections::BTreeMap;
use std::time::Duration;

/// `println!` that ignores a closed stdout (`warren ... | head`) instead of panicking.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

use serde::Serialize;
use serde_json::{json, Value};
use warren_rpc::introspect::{PingReply, ServiceDescription, StatsReply};
use warren_rpc::Error;

/// Why the command failed: a framework error, an application error, or a usage mistake.
#[derive(Debug)]
pub(crate) struct Failure {
    /// `err` for an application error, `usage`, else [`Error::kind`] (with the fault code for a
    /// fault: `fault:unknown_method`).
    pub(crate) kind: String,
    message: String,
    /// The application error value, for `err`.
    value: Option<Value>,
}

impl Failure {
    pub(crate) fn usage(message: impl Into<String>) -> Self {
        Failure {
            kind: "usage".to_owned(),
            message: message.into(),
            value: None,
        }
    }

    pub(crate) fn application(value: Value) -> Self {
        Failure {
            kind: "err".to_owned(),
            message: format!("the method returned an application error: {value}"),
            value: Some(value),
        }
    }

    pub(crate) fn print(&self, json: bool) {
        if json {
            let mut error = json!({"kind": self.kind, "message": self.message});
            if let Some(value) = &self.value {
                error["value"] = value.clone();
            }
            outln!("{}", json!({ "error": error }));
        } else {
            eprintln!("error ({}): {}", self.kind, self.message);
        }
    }
}

impl From<Error> for Failure {
    fn from(err: Error) -> Self {
        let kind = match err.fault_code() {
            Some(code) => format!("fault:{code}"),
            None => err.kind().to_owned(),
        };
        Failure {
            kind,
            message: err.to_string(),
            value: None,
        }
    }
}

/// Prints results in the chosen format.
pub(crate) struct Printer {
    pub(crate) json: bool,
}

impl Printer {
    fn print_json(&self, value: &impl Serialize) {
        match serde_json::to_string_pretty(value) {
            Ok(text) => outln!("{text}"),
            Err(err) => eprintln!("error (encode): {err}"),
        }
    }

    /// A call's result: the JSON value itself in both formats (readable is pretty-printed).
    pub(crate) fn value(&self, value: &Value) {
        if self.json {
            outln!("{}", json!({ "ok": value }));
        } else {
            self.print_json(value);
        }
    }

    pub(crate) fn description(&self, d: &ServiceDescription) {
        if self.json {
            return self.print_json(d);
        }
        outln!(
            "service {} (queue {}, protocol {})",
            d.service,
            d.queue,
            d.protocol
        );
        for m in &d.methods {
            let params: Vec<String> = m
                .params
                .iter()
                .map(|p| format!("{}: {}", p.name, p.ty))
                .collect();
            let result = match &m.error {
                Some(err) => format!("Result<{}, {}>", m.returns, err),
                None => m.returns.clone(),
            };
            let mut flags = Vec::new();
            if m.idempotent {
                flags.push("idempotent".to_owned());
            }
            if m.oneway {
                flags.push("oneway".to_owned());
            }
            if let Some(ms) = m.timeout_ms {
                flags.push(format!("timeout {ms}ms"));
            }
            let flags = if flags.is_empty() {
                String::new()
            } else {
                format!("  [{}]", flags.join(", "))
            };
            outln!("  {}({}) -> {}{}", m.name, params.join(", "), result, flags);
            for line in m.doc.lines() {
                outln!("      {line}");
            }
        }
        if d.schemas.is_some() {
            outln!("  (JSON Schemas available: use --json)");
        }
    }

    pub(crate) fn pings(&self, pings: &[PingReply]) {
        if self.json {
            return self.print_json(&pings);
        }
        for p in pings {
            outln!(
                "{}  instance={}  host={}  pid={}  version={}  uptime={:.1}s  in_flight={}",
                p.service,
                p.instance,
                p.host,
                p.pid,
                p.version,
                p.uptime_ms as f64 / 1000.0,
                p.in_flight
            );
        }
        if pings.is_empty() {
            outln!("no replica answered");
        }
    }

    pub(crate) fn services(&self, services: &BTreeMap<String, Vec<PingReply>>) {
        if self.json {
            let list: Vec<Value> = services
                .iter()
                .map(|(name, pings)| {
                    json!({
                        "service": name,
                        "replicas": pings.len(),
                        "instances": pings.iter().map(|p| &p.instance).collect::<Vec<_>>(),
                    })
                })
                .collect();
            return self.print_json(&list);
        }
        for (name, pings) in services {
            let replicas = if pings.len() == 1 {
                "replica"
            } else {
                "replicas"
            };
            outln!("{name}  {} {replicas}", pings.len());
        }
        if services.is_empty() {
            outln!("no service answered");
        }
    }

    pub(crate) fn stats(&self, replies: &[StatsReply]) {
        if self.json {
            return self.print_json(&replies);
        }
        for r in replies {
            outln!(
                "{} instance={} uptime={:.1}s",
                r.service,
                r.instance,
                r.uptime_ms as f64 / 1000.0
            );
            for (name, m) in &r.methods {
                let errors: Vec<String> =
                    m.errors.iter().map(|(k, n)| format!("{k}={n}")).collect();
                let ms = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.3}ms"));
                outln!(
                    "  {name:<20} calls={:<8} errors=[{}]  p50={}  p99={}",
                    m.calls,
                    errors.join(" "),
                    ms(m.p50_ms),
                    ms(m.p99_ms)
                );
            }
        }
    }

    pub(crate) fn bench(&self, report: &BenchReport) {
        if self.json {
            return self.print_json(report);
        }
        outln!(
            "{} calls in {:.3}s: {:.0} calls/s",
            report.calls,
            report.seconds,
            report.calls_per_second
        );
        outln!(
            "latency p50={:.3}ms p99={:.3}ms max={:.3}ms",
            report.p50_ms,
            report.p99_ms,
            report.max_ms
        );
        if report.errors.is_empty() {
            outln!("errors: none");
        } else {
            let errors: Vec<String> = report
                .errors
                .iter()
                .map(|(k, n)| format!("{k}={n}"))
                .collect();
            outln!("errors: {}", errors.join(" "));
        }
    }
}

/// What `warren bench` measured.
#[derive(Debug, Serialize)]
pub(crate) struct BenchReport {
    calls: usize,
    seconds: f64,
    calls_per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    errors: BTreeMap<String, u64>,
}

impl BenchReport {
    pub(crate) fn new(elapsed: Duration, results: &[(Duration, Option<String>)]) -> Self {
        let mut latencies: Vec<Duration> = results.iter().map(|(d, _)| *d).collect();
        latencies.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let quantile = |q: f64| {
            if latencies.is_empty() {
                return 0.0;
            }
            let rank = ((latencies.len() as f64) * q).ceil() as usize;
            ms(latencies[rank.clamp(1, latencies.len()) - 1])
        };
        let mut errors = BTreeMap::new();
        for (_, error) in results {
            if let Some(kind) = error {
                *errors.entry(kind.clone()).or_default() += 1;
            }
        }
        let seconds = elapsed.as_secs_f64();
        BenchReport {
            calls: results.len(),
            seconds,
            calls_per_second: if seconds > 0.0 {
                results.len() as f64 / seconds
            } else {
                0.0
            },
            p50_ms: quantile(0.5),
            p99_ms: quantile(0.99),
            max_ms: latencies.last().copied().map(ms).unwrap_or(0.0),
            errors,
        }
    }
}
