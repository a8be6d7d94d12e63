//! What the broker sees of Warren RPC traffic (docs/protocol.md), per vhost and service queue:
//! requests, replies, the latency from a request's publish to its reply's, requests that
//! expired in their queue, came back unroutable or got no reply by their deadline, and the
//! rates of each. The management API's RPC page and the `warren_rpc_*` Prometheus series read
//! it ([`RpcWatch::snapshot`], [`prometheus`]).
//!
//! It runs under the state lock on every publish, so it is built to cost nothing for a message
//! that is not RPC: the content header's flag word says whether there are headers or a
//! correlation id at all; only then is the header scanned (without decoding the table, see
//! `PropsView::header_int`), and only a request (the `x-warren-protocol` header) or the reply
//! to a tracked one allocates. Requests are tracked by correlation id in a bounded map until
//! their reply or their deadline.

use super::message::Message;
use super::props::PropsView;
use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// The header every Warren request carries.
const PROTOCOL_HEADER: &str = "x-warren-protocol";
/// The request's budget in milliseconds.
const TIMEOUT_HEADER: &str = "x-warren-timeout-ms";
/// The exchange prefix of a service's broadcast exchange (`warren.all.<queue>`).
const BROADCAST_PREFIX: &str = "warren.all.";
/// Requests tracked for their reply at once; beyond, requests are counted but not timed.
const MAX_PENDING: usize = 20_000;
/// Services (vhost + queue) tracked; beyond, new ones are not.
const MAX_SERVICES: usize = 1_024;
/// How long a request without a deadline waits for its reply before it is forgotten.
const NO_DEADLINE_WAIT: Duration = Duration::from_secs(60);
/// Rates are computed over the samples of this window.
const RATE_WINDOW: Duration = Duration::from_secs(5);
/// Log-scale latency buckets: 8 per doubling (about 9% apart), from 1 µs to ~71 minutes.
const BUCKETS_PER_DOUBLING: f64 = 8.0;
const LOG_BUCKETS: usize = 8 * 32;
/// Upper bounds (seconds) of the Prometheus histogram `warren_rpc_reply_latency_seconds`.
const PROM_BOUNDS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The counters of one service.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counts {
    requests: u64,
    replies: u64,
    expired: u64,
    returned: u64,
    unanswered: u64,
}

/// One service queue's observations.
#[derive(Debug)]
struct Service {
    vhost: String,
    queue: String,
    counts: Counts,
    /// Counts at past instants, oldest first, for the rates.
    samples: VecDeque<(Instant, Counts)>,
    log_buckets: Box<[u64; LOG_BUCKETS]>,
    /// Replies per `PROM_BOUNDS` bucket (not cumulative), plus one for +Inf.
    prom_buckets: [u64; PROM_BOUNDS.len() + 1],
    latency_sum: Duration,
    in_flight: usize,
}

/// A request waiting for its reply.
#[derive(Debug)]
struct Pending {
    service: usize,
    published: Instant,
    /// When it stops being waited for (its deadline, or `NO_DEADLINE_WAIT`).
    until: Instant,
}

/// The broker's view of RPC traffic (lives in `State`, under the one lock).
#[derive(Debug, Default)]
pub(crate) struct RpcWatch {
    services: Vec<Service>,
    /// vhost -> queue -> index in `services` (looked up by `&str`: no allocation).
    index: HashMap<String, HashMap<String, usize>>,
    /// Requests by correlation id.
    pending: HashMap<String, Pending>,
    last_sample: Option<Instant>,
}

/// A rate, as RabbitMQ's management API reports one (`*_details`).
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub(crate) struct Rate {
    /// Per second, over the last few seconds.
    pub(crate) rate: f64,
}

/// Reply latency of one service, since the broker started.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct Latency {
    /// Replies timed.
    pub(crate) count: u64,
    /// Mean, milliseconds.
    pub(crate) mean_ms: f64,
    /// Median, milliseconds (log-scale histogram: about 9% resolution).
    pub(crate) p50_ms: f64,
    /// 99th percentile, milliseconds.
    pub(crate) p99_ms: f64,
    /// Cumulative counts per Prometheus bucket bound (seconds), then the total.
    #[serde(skip)]
    pub(crate) buckets: Vec<(f64, u64)>,
    /// Sum of all latencies, seconds.
    #[serde(skip)]
    pub(crate) sum_seconds: f64,
}

/// One service as the management API shows it (`GET /api/warren/services`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct ServiceStats {
    /// The vhost.
    pub(crate) vhost: String,
    /// The service queue.
    pub(crate) name: String,
    /// Requests published to it.
    pub(crate) requests: u64,
    /// Replies to them.
    pub(crate) replies: u64,
    /// Requests dropped by the broker when their TTL (the call's deadline) passed in the queue.
    pub(crate) expired: u64,
    /// Requests returned unroutable (no queue: no server ever declared it).
    pub(crate) returned: u64,
    /// Two-way requests with no reply by their deadline.
    pub(crate) unanswered: u64,
    /// Requests waiting for their reply now.
    pub(crate) in_flight: usize,
    /// Rate of `requests`.
    pub(crate) requests_details: Rate,
    /// Rate of `replies`.
    pub(crate) replies_details: Rate,
    /// Rate of `expired`.
    pub(crate) expired_details: Rate,
    /// Rate of `returned`.
    pub(crate) returned_details: Rate,
    /// Rate of `unanswered`.
    pub(crate) unanswered_details: Rate,
    /// Reply latency; None before the first reply.
    pub(crate) latency: Option<Latency>,
    /// Consumers of the queue (the service's servers); None if the queue does not exist.
    pub(crate) consumers: Option<usize>,
    /// Messages in the queue (requests waiting for a server); None if it does not exist.
    pub(crate) messages: Option<u32>,
}

/// What a message is to the observer.
enum Seen<'a> {
    Request {
        service: &'a str,
        correlation_id: Option<&'a str>,
        two_way: bool,
        timeout_ms: Option<i64>,
    },
    Other,
}

/// Reads what the observer needs from a message: a request with its service, or anything else.
fn classify<'a>(msg: &'a Message, view: &PropsView) -> Seen<'a> {
    let h = &msg.header[..];
    if view.header_int(h, PROTOCOL_HEADER).is_none() {
        return Seen::Other;
    }
    // Control messages carry the header too: cancels and credit grants are no requests.
    if matches!(PropsView::text(h, &view.kind), Some("cancel" | "credit")) {
        return Seen::Other;
    }
    let service = if msg.exchange.is_empty() {
        msg.routing_key.as_str()
    } else if let Some(s) = msg.exchange.strip_prefix(BROADCAST_PREFIX) {
        s
    } else {
        // Discovery pings (`warren.discovery`) and anything else not addressed to one service.
        return Seen::Other;
    };
    Seen::Request {
        service,
        correlation_id: PropsView::text(h, &view.correlation_id),
        two_way: PropsView::text(h, &view.reply_to).is_some_and(|r| !r.is_empty()),
        timeout_ms: view.header_int(h, TIMEOUT_HEADER).flatten(),
    }
}

impl RpcWatch {
    /// Whether a publish of `msg` may be RPC traffic, from the content header's flag word
    /// alone: a request has headers, a reply a correlation id (and only matters while requests
    /// are pending). False for most messages, which then cost the observer nothing more.
    pub(crate) fn may_concern(&self, msg: &Message) -> bool {
        let (has_headers, has_correlation) = PropsView::flag_bits(&msg.header);
        has_headers || (has_correlation && !self.pending.is_empty())
    }

    /// Looks at a message published by a client (not a dead-lettered copy): counts a request,
    /// or times the reply to a tracked one. `reached` says whether any queue took it.
    pub(crate) fn on_publish(&mut self, vhost: &str, msg: &Message, reached: bool, now: Instant) {
        if !self.may_concern(msg) {
            return;
        }
        let Some(view) = PropsView::parse(&msg.header) else {
            return;
        };
        match classify(msg, &view) {
            Seen::Request {
                service,
                correlation_id,
                two_way,
                timeout_ms,
            } => {
                let Some(i) = self.service(vhost, service) else {
                    return;
                };
                self.services[i].counts.requests += 1;
                if let (true, true, Some(cid)) = (two_way, reached, correlation_id) {
                    let wait = timeout_ms
                        .and_then(|ms| u64::try_from(ms).ok())
                        .map_or(NO_DEADLINE_WAIT, Duration::from_millis);
                    self.track(i, cid, now, now + wait);
                }
            }
            Seen::Other => {
                let h = &msg.header[..];
                // `started` notices and stream items precede the reply (protocol.md, 18, 20).
                if matches!(PropsView::text(h, &view.kind), Some("started" | "item")) {
                    return;
                }
                if let Some(cid) = PropsView::text(h, &view.correlation_id) {
                    self.on_reply(cid, now);
                }
            }
        }
    }

    /// A request published with `mandatory` came back unroutable.
    pub(crate) fn on_returned(&mut self, vhost: &str, msg: &Message) {
        if let Some(i) = self.request_service(vhost, msg, None) {
            self.services[i].counts.returned += 1;
        }
    }

    /// A message left `queue` because its TTL passed (dead-lettered or dropped).
    pub(crate) fn on_expired(&mut self, vhost: &str, queue: &str, msg: &Message) {
        if let Some(i) = self.request_service(vhost, msg, Some(queue)) {
            self.services[i].counts.expired += 1;
        }
    }

    /// Once a second or so: forgets requests past their deadline (counted as unanswered) and
    /// samples the counters for the rates.
    pub(crate) fn tick(&mut self, now: Instant) {
        if self
            .last_sample
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            return;
        }
        self.last_sample = Some(now);
        let services = &mut self.services;
        self.pending.retain(|_, p| {
            let keep = p.until > now;
            if !keep {
                let s = &mut services[p.service];
                s.counts.unanswered += 1;
                s.in_flight = s.in_flight.saturating_sub(1);
            }
            keep
        });
        for s in services.iter_mut() {
            s.samples.push_back((now, s.counts));
            while s
                .samples
                .front()
                .is_some_and(|(t, _)| now.duration_since(*t) > RATE_WINDOW)
            {
                s.samples.pop_front();
            }
        }
    }

    /// Every service seen, with its counts, rates and latency; `queue` tells a service's
    /// queue (consumers, messages) if it exists.
    pub(crate) fn snapshot(
        &self,
        now: Instant,
        queue: impl Fn(&str, &str) -> Option<(usize, u32)>,
    ) -> Vec<ServiceStats> {
        let mut out: Vec<ServiceStats> = self
            .services
            .iter()
            .map(|s| {
                let q = queue(&s.vhost, &s.queue);
                s.stats(now, q)
            })
            .collect();
        out.sort_by(|a, b| (&a.vhost, &a.name).cmp(&(&b.vhost, &b.name)));
        out
    }

    /// The service a request is addressed to (`queue` when known, e.g. the queue it expired
    /// in), if `msg` is one.
    fn request_service(
        &mut self,
        vhost: &str,
        msg: &Message,
        queue: Option<&str>,
    ) -> Option<usize> {
        let (has_headers, _) = PropsView::flag_bits(&msg.header);
        if !has_headers {
            return None;
        }
        let view = PropsView::parse(&msg.header)?;
        match classify(msg, &view) {
            Seen::Request { service, .. } => self.service(vhost, queue.unwrap_or(service)),
            Seen::Other => None,
        }
    }

    /// The index of a service, added on first sight (None once `MAX_SERVICES` are known).
    fn service(&mut self, vhost: &str, queue: &str) -> Option<usize> {
        if let Some(i) = self.index.get(vhost).and_then(|m| m.get(queue)) {
            return Some(*i);
        }
        if self.services.len() >= MAX_SERVICES {
            return None;
        }
        let i = self.services.len();
        self.services.push(Service {
            vhost: vhost.to_string(),
            queue: queue.to_string(),
            counts: Counts::default(),
            samples: VecDeque::new(),
            log_buckets: Box::new([0; LOG_BUCKETS]),
            prom_buckets: [0; PROM_BOUNDS.len() + 1],
            latency_sum: Duration::ZERO,
            in_flight: 0,
        });
        self.index
            .entry(vhost.to_string())
            .or_default()
            .insert(queue.to_string(), i);
        Some(i)
    }

    fn track(&mut self, service: usize, cid: &str, now: Instant, until: Instant) {
        let pending = Pending {
            service,
            published: now,
            until,
        };
        if let Some(old) = self.pending.get_mut(cid) {
            // A retry of the same call: the reply answers the latest attempt.
            let old_service = old.service;
            *old = pending;
            self.services[old_service].in_flight -= 1;
        } else if self.pending.len() >= MAX_PENDING {
            return; // counted as a request, not timed
        } else {
            self.pending.insert(cid.to_string(), pending);
        }
        self.services[service].in_flight += 1;
    }

    fn on_reply(&mut self, cid: &str, now: Instant) {
        let Some(p) = self.pending.remove(cid) else {
            return;
        };
        let s = &mut self.services[p.service];
        s.in_flight = s.in_flight.saturating_sub(1);
        s.counts.replies += 1;
        s.record_latency(now.duration_since(p.published));
    }
}

impl Service {
    fn record_latency(&mut self, d: Duration) {
        let us = d.as_secs_f64() * 1e6;
        let i = if us <= 1.0 {
            0
        } else {
            ((us.log2() * BUCKETS_PER_DOUBLING) as usize).min(LOG_BUCKETS - 1)
        };
        self.log_buckets[i] += 1;
        let secs = d.as_secs_f64();
        let p = PROM_BOUNDS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(PROM_BOUNDS.len());
        self.prom_buckets[p] += 1;
        self.latency_sum += d;
    }

    /// The latency below which a fraction `q` of replies came, in milliseconds (the upper
    /// edge of its log bucket).
    fn quantile_ms(&self, q: f64, count: u64) -> f64 {
        let target = ((count as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in self.log_buckets.iter().enumerate() {
            seen += n;
            if seen >= target {
                return 2f64.powf((i + 1) as f64 / BUCKETS_PER_DOUBLING) / 1000.0;
            }
        }
        f64::NAN
    }

    fn latency(&self) -> Option<Latency> {
        let count = self.counts.replies;
        if count == 0 {
            return None;
        }
        let mut cumulative = 0;
        let mut buckets: Vec<(f64, u64)> = PROM_BOUNDS
            .iter()
            .zip(self.prom_buckets.iter())
            .map(|(b, n)| {
                cumulative += n;
                (*b, cumulative)
            })
            .collect();
        buckets.push((f64::INFINITY, count));
        Some(Latency {
            count,
            mean_ms: self.latency_sum.as_secs_f64() * 1000.0 / count as f64,
            p50_ms: self.quantile_ms(0.5, count),
            p99_ms: self.quantile_ms(0.99, count),
            buckets,
            sum_seconds: self.latency_sum.as_secs_f64(),
        })
    }

    fn stats(&self, now: Instant, queue: Option<(usize, u32)>) -> ServiceStats {
        let c = self.counts;
        let (base_t, base) = self.samples.front().copied().unwrap_or((now, c));
        let secs = now.duration_since(base_t).as_secs_f64();
        let rate = |f: fn(&Counts) -> u64| Rate {
            rate: if secs < 0.5 {
                0.0
            } else {
                (f(&c) - f(&base)) as f64 / secs
            },
        };
        ServiceStats {
            vhost: self.vhost.clone(),
            name: self.queue.clone(),
            requests: c.requests,
            replies: c.replies,
            expired: c.expired,
            returned: c.returned,
            unanswered: c.unanswered,
            in_flight: self.in_flight,
            requests_details: rate(|c| c.requests),
            replies_details: rate(|c| c.replies),
            expired_details: rate(|c| c.expired),
            returned_details: rate(|c| c.returned),
            unanswered_details: rate(|c| c.unanswered),
            latency: self.latency(),
            consumers: queue.map(|(c, _)| c),
            messages: queue.map(|(_, m)| m),
        }
    }
}

/// The `warren_rpc_*` series in the Prometheus text format (one sample per service, labels
/// `vhost` and `queue`), for the management server's `/metrics`.
pub(crate) fn prometheus(services: &[ServiceStats], out: &mut String) {
    type Field = fn(&ServiceStats) -> u64;
    let counters: [(&str, &str, Field); 5] = [
        ("warren_rpc_requests_total", "Warren RPC requests published to the service queue", |s| s.requests),
        ("warren_rpc_replies_total", "Replies to Warren RPC requests of the service", |s| s.replies),
        ("warren_rpc_expired_requests_total", "Warren RPC requests that expired in the service queue (deadline passed before a server took them)", |s| s.expired),
        ("warren_rpc_returned_requests_total", "Warren RPC requests returned unroutable (no service queue)", |s| s.returned),
        ("warren_rpc_unanswered_requests_total", "Two-way Warren RPC requests without a reply by their deadline", |s| s.unanswered),
    ];
    for (name, help, field) in counters {
        let _ = writeln!(out, "# TYPE {name} counter\n# HELP {name} {help}");
        for s in services {
            let _ = writeln!(out, "{name}{{{}}} {}", labels(s), field(s));
        }
    }
    let name = "warren_rpc_requests_in_flight";
    let _ = writeln!(
        out,
        "# TYPE {name} gauge\n# HELP {name} Warren RPC requests waiting for their reply"
    );
    for s in services {
        let _ = writeln!(out, "{name}{{{}}} {}", labels(s), s.in_flight);
    }
    let name = "warren_rpc_reply_latency_seconds";
    let _ = writeln!(out, "# TYPE {name} histogram\n# HELP {name} Time from a Warren RPC request's publish to its reply's publish");
    for s in services {
        let Some(l) = &s.latency else { continue };
        let labels = labels(s);
        for (bound, n) in &l.buckets {
            let le = if bound.is_infinite() {
                "+Inf".to_string()
            } else {
                bound.to_string()
            };
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {n}");
        }
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", l.sum_seconds);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", l.count);
    }
}

fn labels(s: &ServiceStats) -> String {
    format!(
        "vhost=\"{}\",queue=\"{}\"",
        escape(&s.vhost),
        escape(&s.name)
    )
}

/// A label value escaped as the text format requires.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::protocol::basic::AMQPProperties;
    use amq_protocol::types::{AMQPValue, FieldTable};
    use bytes::Bytes;

    fn request(queue: &str, cid: &str, timeout_ms: i64) -> Message {
        let mut h = FieldTable::default();
        h.insert("x-warren-protocol".into(), AMQPValue::ShortShortUInt(1));
        h.insert(
            "x-warren-timeout-ms".into(),
            AMQPValue::LongString(timeout_ms.to_string().into()),
        );
        h.insert("traceparent".into(), AMQPValue::LongString("00-ab".into()));
        let p = AMQPProperties::default()
            .with_type("add".into())
            .with_correlation_id(cid.into())
            .with_reply_to("amq.rabbitmq.reply-to.x".into())
            .with_headers(h);
        Message::with_properties(String::new(), queue.into(), &p, Bytes::new())
    }

    fn reply(cid: &str, kind: Option<&str>) -> Message {
        let mut p = AMQPProperties::default().with_correlation_id(cid.into());
        if let Some(k) = kind {
            p = p.with_type(k.into());
        }
        Message::with_properties(
            String::new(),
            "amq.rabbitmq.reply-to.x".into(),
            &p,
            Bytes::new(),
        )
    }

    #[test]
    fn counts_requests_times_replies_and_ignores_other_traffic() {
        let mut w = RpcWatch::default();
        let t0 = Instant::now();
        let plain = Message::with_properties(
            String::new(),
            "calc".into(),
            &AMQPProperties::default(),
            Bytes::new(),
        );
        w.on_publish("/", &plain, true, t0);
        assert!(
            w.snapshot(t0, |_, _| None).is_empty(),
            "a plain message is no request"
        );
        w.on_publish("/", &request("calc", "c1", 5000), true, t0);
        w.on_publish("/", &request("calc", "c2", 5000), true, t0);
        w.on_publish(
            "/",
            &reply("c1", Some("started")),
            true,
            t0 + Duration::from_millis(1),
        );
        w.on_publish(
            "/",
            &reply("c1", None),
            true,
            t0 + Duration::from_millis(10),
        );
        w.on_publish(
            "/",
            &reply("c1", None),
            true,
            t0 + Duration::from_millis(20),
        );
        let s = &w.snapshot(t0, |_, _| Some((1, 0)))[0];
        assert_eq!((s.requests, s.replies, s.in_flight), (2, 1, 1));
        let l = s.latency.as_ref().expect("one reply timed");
        assert!((9.0..11.0).contains(&l.p50_ms), "p50 {}", l.p50_ms);
        assert_eq!(s.consumers, Some(1));
        // c2 has no reply by its deadline.
        w.tick(t0 + Duration::from_secs(6));
        let s = &w.snapshot(t0 + Duration::from_secs(6), |_, _| None)[0];
        assert_eq!((s.unanswered, s.in_flight), (1, 0));
    }

    #[test]
    fn expired_and_returned_requests_count_for_their_service() {
        let mut w = RpcWatch::default();
        w.on_returned("/", &request("nobody", "c1", 100));
        w.on_expired("/", "calc", &request("calc", "c2", 100));
        w.on_expired("/", "calc", &reply("c3", None));
        let s = w.snapshot(Instant::now(), |_, _| None);
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].name.as_str(), s[0].expired), ("calc", 1));
        assert_eq!((s[1].name.as_str(), s[1].returned), ("nobody", 1));
        let mut text = String::new();
        prometheus(&s, &mut text);
        assert!(
            text.contains("warren_rpc_returned_requests_total{vhost=\"/\",queue=\"nobody\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn header_scan_reads_every_integer_width() {
        let mut h = FieldTable::default();
        h.insert("a".into(), AMQPValue::LongString("x".into()));
        h.insert("b".into(), AMQPValue::ShortInt(-3));
        h.insert("c".into(), AMQPValue::LongLongInt(1 << 40));
        h.insert("d".into(), AMQPValue::LongUInt(7));
        h.insert("e".into(), AMQPValue::Boolean(true));
        let p = AMQPProperties::default().with_headers(h);
        let m = Message::with_properties(String::new(), "q".into(), &p, Bytes::new());
        let v = PropsView::parse(&m.header).unwrap();
        assert_eq!(v.header_int(&m.header, "b"), Some(Some(-3)));
        assert_eq!(v.header_int(&m.header, "c"), Some(Some(1 << 40)));
        assert_eq!(v.header_int(&m.header, "d"), Some(Some(7)));
        assert_eq!(v.header_int(&m.header, "a"), Some(None));
        assert_eq!(v.header_int(&m.header, "e"), Some(None));
        assert_eq!(v.header_int(&m.header, "zz"), None);
    }
}
