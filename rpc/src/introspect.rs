//! Introspection: the reserved methods every server answers, and the shapes of their replies.
//!
//! Method names starting with `$` cannot be Rust method names, so they never collide with a
//! service's own methods. Every [`Server`](crate::Server) answers:
//!
//! - [`PING`] (`$ping`): who is serving — instance id, host, process id, version, uptime and the
//!   calls in flight ([`PingReply`]);
//! - [`DESCRIBE`] (`$describe`): the service's methods with their parameters, result and error
//!   types, options and documentation, and JSON Schemas of those types when warren-rpc is built
//!   with its `schemars` feature ([`ServiceDescription`]);
//! - [`STATS`] (`$stats`): per method, the calls served, the errors by kind and the latency
//!   percentiles since the server started ([`StatsReply`]).
//!
//! They take an empty arguments map and reply `{"ok": ...}` in the request's codec like any
//! method. Sent to the service's queue, one replica answers; broadcast to every replica (see
//! [`Client::broadcast_call`](crate::Client::broadcast_call) and [`all_exchange`]), each answers.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::service::{MethodSpec, Service};

/// The reserved method answering a [`PingReply`].
pub const PING: &str = "$ping";
/// The reserved method answering a [`ServiceDescription`].
pub const DESCRIBE: &str = "$describe";
/// The reserved method answering a [`StatsReply`].
pub const STATS: &str = "$stats";
/// The exchange every server binds its instance queue to, for discovery (`warren services`): a
/// fanout exchange reaching one instance queue per running server of any service.
pub const DISCOVERY_EXCHANGE: &str = "warren.discovery";

/// The fanout exchange reaching every replica of `service`: `warren.all.<service>`. Each server
/// binds its exclusive instance queue to it, so a request published there reaches each replica
/// once.
pub fn all_exchange(service: &str) -> String {
    format!("warren.all.{service}")
}

/// The method description for a reserved method name, so clients can call them like any
/// method: [`PING`], [`DESCRIBE`] or [`STATS`] on `service`.
pub fn reserved_method(service: &'static str, name: &'static str) -> MethodSpec {
    MethodSpec::new(service, name).idempotent(true)
}

/// Whether `method` is a reserved (`$`-prefixed) method name.
pub fn is_reserved(method: &str) -> bool {
    method.starts_with('$')
}

/// The reply of `$ping`: one server instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PingReply {
    /// The service (queue) the instance serves.
    pub service: String,
    /// A random id of this server instance, fixed for its lifetime.
    pub instance: String,
    /// The host name of the machine it runs on.
    pub host: String,
    /// Its process id.
    pub pid: u32,
    /// The application's version ([`ServerBuilder::version`](crate::ServerBuilder::version)),
    /// else warren-rpc's.
    pub version: String,
    /// The version of warren-rpc it runs.
    pub warren_version: String,
    /// Milliseconds since the server started.
    pub uptime_ms: u64,
    /// Calls being handled right now (this `$ping` included).
    pub in_flight: u64,
}

/// One parameter in a [`MethodDescription`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParamDescription {
    /// The parameter name (its key in the arguments map).
    pub name: String,
    /// Its Rust type as written in the service trait.
    #[serde(rename = "type")]
    pub ty: String,
}

/// One method in a [`ServiceDescription`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct MethodDescription {
    /// The method name (the request's `type`).
    pub name: String,
    /// Its documentation.
    #[serde(default)]
    pub doc: String,
    /// Its parameters, in order.
    pub params: Vec<ParamDescription>,
    /// The result type (`()` when none).
    pub returns: String,
    /// The application error type, for methods returning `Result<T, E>`.
    #[serde(default)]
    pub error: Option<String>,
    /// Whether running it twice is harmless.
    pub idempotent: bool,
    /// Whether it gets no reply.
    pub oneway: bool,
    /// Its default budget in milliseconds, if it has one.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

impl From<&MethodSpec> for MethodDescription {
    fn from(spec: &MethodSpec) -> Self {
        MethodDescription {
            name: spec.name.to_owned(),
            doc: spec.doc.to_owned(),
            params: spec
                .params
                .iter()
                .map(|p| ParamDescription {
                    name: p.name.to_owned(),
                    ty: p.ty.to_owned(),
                })
                .collect(),
            returns: spec.returns.to_owned(),
            error: spec.error.map(str::to_owned),
            idempotent: spec.idempotent,
            oneway: spec.oneway,
            timeout_ms: spec
                .timeout
                .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
        }
    }
}

/// The reply of `$describe`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ServiceDescription {
    /// The service name (as declared by the trait; the queue may differ).
    pub service: String,
    /// The queue the answering server consumes.
    pub queue: String,
    /// The wire protocol version the server speaks.
    pub protocol: i64,
    /// The methods, in declaration order.
    pub methods: Vec<MethodDescription>,
    /// JSON Schemas of the types, by method name: `{"params": {name: schema}, "result": schema,
    /// "error": schema}`; absent unless the server was built with the `schemars` feature.
    #[serde(default)]
    pub schemas: Option<serde_json::Value>,
}

impl ServiceDescription {
    /// The description of `service` served on `queue`.
    pub fn of(service: &dyn Service, queue: &str) -> Self {
        ServiceDescription {
            service: service.name().to_owned(),
            queue: queue.to_owned(),
            protocol: crate::wire::PROTOCOL_VERSION,
            methods: service
                .methods()
                .iter()
                .map(MethodDescription::from)
                .collect(),
            schemas: service.schemas(),
        }
    }
}

/// The reply of `$stats`: what one server instance has served since it started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct StatsReply {
    /// The service (queue) the instance serves.
    pub service: String,
    /// The instance id (as in [`PingReply::instance`]).
    pub instance: String,
    /// Milliseconds since the server started.
    pub uptime_ms: u64,
    /// Per method of the service, including those not called yet.
    pub methods: BTreeMap<String, MethodStats>,
}

/// Counters of one method in a [`StatsReply`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct MethodStats {
    /// Calls the handler ran (replays of de-duplicated calls are not counted).
    pub calls: u64,
    /// Failed calls by kind: `err` for an application error, otherwise the fault code
    /// (`bad_request`, `handler_panicked`, `deadline_exceeded`, ...).
    pub errors: BTreeMap<String, u64>,
    /// The median latency in milliseconds (about 10% resolution), `None` before the first call.
    pub p50_ms: Option<f64>,
    /// The 99th percentile latency in milliseconds, `None` before the first call.
    pub p99_ms: Option<f64>,
}

/// Latency histogram buckets: bucket `i` holds durations up to `BASE_MICROS * GROWTH^i`.
const BUCKETS: usize = 200;
const BASE_MICROS: f64 = 1.0;
/// 2^(1/8): about 9% between bucket bounds, 1 µs to ~30 hours in 200 buckets.
const GROWTH: f64 = 1.090_507_732_665_257_7;

/// A log-scale latency histogram: fixed memory, percentiles within one bucket's width.
#[derive(Clone)]
struct Histogram {
    counts: Box<[u64; BUCKETS]>,
    total: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: Box::new([0; BUCKETS]),
            total: 0,
        }
    }
}

impl Histogram {
    fn record(&mut self, elapsed: Duration) {
        let micros = elapsed.as_secs_f64() * 1e6;
        let index = if micros <= BASE_MICROS {
            0
        } else {
            // ceil(log_growth(micros / base)), clamped to the last bucket.
            let i = ((micros / BASE_MICROS).ln() / GROWTH.ln()).ceil();
            if i.is_finite() && i >= 0.0 {
                (i as usize).min(BUCKETS - 1)
            } else {
                BUCKETS - 1
            }
        };
        self.counts[index] += 1;
        self.total += 1;
    }

    /// The upper bound, in milliseconds, of the bucket holding the `q`-quantile.
    fn quantile_ms(&self, q: f64) -> Option<f64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((self.total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                let micros = BASE_MICROS * GROWTH.powi(i32::try_from(i).unwrap_or(i32::MAX));
                return Some((micros / 1000.0 * 1000.0).round() / 1000.0);
            }
        }
        None
    }
}

#[derive(Default)]
struct Counters {
    calls: u64,
    errors: BTreeMap<String, u64>,
    latency: Histogram,
}

/// The per-method counters a server keeps for `$stats`. Only the service's own methods are
/// counted, so a peer sending made-up method names cannot grow it.
pub(crate) struct Stats {
    methods: Mutex<HashMap<&'static str, Counters>>,
}

impl Stats {
    pub(crate) fn new(methods: &'static [MethodSpec]) -> Self {
        Stats {
            methods: Mutex::new(
                methods
                    .iter()
                    .map(|m| (m.name, Counters::default()))
                    .collect(),
            ),
        }
    }

    /// Records one handled call of `method`; `error` is the kind of failure, if it failed.
    pub(crate) fn record(&self, method: &str, elapsed: Duration, error: Option<&str>) {
        let mut methods = self.methods.lock().unwrap_or_else(|p| p.into_inner());
        let Some(counters) = methods.get_mut(method) else {
            return;
        };
        counters.calls += 1;
        counters.latency.record(elapsed);
        if let Some(kind) = error {
            *counters.errors.entry(kind.to_owned()).or_default() += 1;
        }
    }

    pub(crate) fn snapshot(&self) -> BTreeMap<String, MethodStats> {
        let methods = self.methods.lock().unwrap_or_else(|p| p.into_inner());
        methods
            .iter()
            .map(|(name, c)| {
                (
                    (*name).to_owned(),
                    MethodStats {
                        calls: c.calls,
                        errors: c.errors.clone(),
                        p50_ms: c.latency.quantile_ms(0.5),
                        p99_ms: c.latency.quantile_ms(0.99),
                    },
                )
            })
            .collect()
    }
}

/// Who a server is, for `$ping` and `$stats`.
#[derive(Debug)]
pub(crate) struct Instance {
    pub(crate) id: String,
    pub(crate) host: String,
    pub(crate) version: String,
    pub(crate) started: Instant,
}

impl Instance {
    pub(crate) fn new(version: Option<String>) -> Self {
        Instance {
            id: uuid::Uuid::new_v4().simple().to_string(),
            host: host_name(),
            version: version.unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_owned()),
            started: Instant::now(),
        }
    }

    pub(crate) fn uptime_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// The machine's host name: the kernel's on Linux, else the usual environment variables.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .unwrap_or_else(|| "unknown".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_fall_in_the_right_bucket() {
        let mut h = Histogram::default();
        assert_eq!(h.quantile_ms(0.5), None);
        for _ in 0..98 {
            h.record(Duration::from_millis(2));
        }
        h.record(Duration::from_millis(100));
        h.record(Duration::from_millis(100));
        let p50 = h.quantile_ms(0.5).unwrap();
        assert!((2.0..2.2).contains(&p50), "p50 {p50}");
        let p99 = h.quantile_ms(0.99).unwrap();
        assert!((100.0..110.0).contains(&p99), "p99 {p99}");
        h.record(Duration::ZERO);
        h.record(Duration::from_secs(1_000_000));
        assert_eq!(h.total, 102);
    }

    #[test]
    fn stats_count_only_known_methods() {
        static METHODS: &[MethodSpec] = &[MethodSpec::new("s", "a")];
        let stats = Stats::new(METHODS);
        stats.record("a", Duration::from_millis(1), None);
        stats.record("a", Duration::from_millis(1), Some("err"));
        stats.record("made-up", Duration::from_millis(1), None);
        let snap = stats.snapshot();
        assert_eq!(snap.len(), 1);
        assert_eq!(snap["a"].calls, 2);
        assert_eq!(snap["a"].errors["err"], 1);
    }
}
