//! The Prometheus endpoint (`/metrics` aggregated, `/metrics/per-object` with labels) with
//! rabbitmq_prometheus's metric names, types and help texts, plus Warren's own `warren_*`.
//!
//! A hand-written text encoder over the core's snapshots rather than the `prometheus` or
//! `metrics` crates: those keep their own registries of live counters, so every counter would
//! be kept twice (once in the core's stats, once in the registry) and the per-object label
//! sets (one series per queue, which come and go) would need manual unregistering. Rendering
//! the snapshot straight into the text format (a dozen lines) keeps one source of truth.

use super::AppState;
use crate::core::stats::{Counters, Stat, CHURN};
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use std::fmt::Write;

/// One metric family: name, type, help and its samples (label text, value).
#[derive(Debug)]
pub(crate) struct Family {
    /// The metric name.
    pub(crate) name: &'static str,
    /// "gauge", "counter" or "untyped".
    pub(crate) kind: &'static str,
    /// The HELP text.
    pub(crate) help: &'static str,
    /// Samples: rendered labels (`{a="b"}` or empty) and the value.
    pub(crate) samples: Vec<(String, f64)>,
}

impl Family {
    fn new(name: &'static str, kind: &'static str, help: &'static str) -> Self {
        Family {
            name,
            kind,
            help,
            samples: Vec::new(),
        }
    }

    fn one(name: &'static str, kind: &'static str, help: &'static str, v: f64) -> Self {
        let mut f = Family::new(name, kind, help);
        f.samples.push((String::new(), v));
        f
    }
}

/// Label text for `pairs`, values escaped as the text format requires.
pub(crate) fn labels(pairs: &[(&str, &str)]) -> String {
    let inner: Vec<String> = pairs
        .iter()
        .map(|(k, v)| {
            let v = v
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            format!("{k}=\"{v}\"")
        })
        .collect();
    format!("{{{}}}", inner.join(","))
}

/// Renders families in the Prometheus text format (version 0.0.4).
pub(crate) fn render(families: &[Family]) -> String {
    let mut out = String::new();
    for f in families {
        let _ = writeln!(out, "# TYPE {} {}", f.name, f.kind);
        let _ = writeln!(out, "# HELP {} {}", f.name, f.help);
        for (l, v) in &f.samples {
            let _ = writeln!(out, "{}{} {}", f.name, l, v);
        }
    }
    out
}

/// The routes of the Prometheus listener (no authentication, as rabbitmq_prometheus).
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/metrics",
            get(|st: axum::extract::State<AppState>| async move { respond(&st, false) }),
        )
        .route(
            "/metrics/per-object",
            get(|st: axum::extract::State<AppState>| async move { respond(&st, true) }),
        )
}

fn respond(st: &AppState, per_object: bool) -> impl IntoResponse {
    let mut families = rabbitmq_families(st, per_object);
    families.extend(warren_families(st));
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        render(&families) + &super::dashboard::warren_metrics(&st.shared),
    )
}

const QUEUE_GAUGES: [(&str, &str); 7] = [
    (
        "rabbitmq_queue_messages_ready",
        "Messages ready to be delivered to consumers",
    ),
    (
        "rabbitmq_queue_messages_unacked",
        "Messages delivered to consumers but not yet acknowledged",
    ),
    (
        "rabbitmq_queue_messages",
        "Sum of ready and unacknowledged messages - total queue depth",
    ),
    ("rabbitmq_queue_consumers", "Consumers on a queue"),
    (
        "rabbitmq_queue_messages_ready_bytes",
        "Size in bytes of ready messages",
    ),
    (
        "rabbitmq_queue_messages_unacked_bytes",
        "Size in bytes of all unacknowledged messages",
    ),
    (
        "rabbitmq_queue_messages_bytes",
        "Size in bytes of ready and unacknowledged messages",
    ),
];

/// Channel counters: (metric, help, stat).
const CHANNEL_COUNTERS: [(&str, &str, Stat); 11] = [
    ("rabbitmq_channel_messages_published_total", "Total number of messages published into an exchange on a channel", Stat::Publish),
    ("rabbitmq_channel_messages_confirmed_total", "Total number of messages published into an exchange and confirmed on the channel", Stat::Confirm),
    ("rabbitmq_channel_messages_unroutable_returned_total", "Total number of messages published as mandatory into an exchange and returned to the publisher as unroutable", Stat::ReturnUnroutable),
    ("rabbitmq_channel_messages_unroutable_dropped_total", "Total number of messages published as non-mandatory into an exchange and dropped as unroutable", Stat::DropUnroutable),
    ("rabbitmq_channel_messages_delivered_total", "Total number of messages delivered to consumers in automatic acknowledgement mode", Stat::DeliverNoAck),
    ("rabbitmq_channel_messages_delivered_ack_total", "Total number of messages delivered to consumers in manual acknowledgement mode", Stat::Deliver),
    ("rabbitmq_channel_messages_redelivered_total", "Total number of messages redelivered to consumers", Stat::Redeliver),
    ("rabbitmq_channel_messages_acked_total", "Total number of messages acknowledged by consumers", Stat::Ack),
    ("rabbitmq_channel_get_total", "Total number of messages fetched with basic.get in automatic acknowledgement mode", Stat::GetNoAck),
    ("rabbitmq_channel_get_ack_total", "Total number of messages fetched with basic.get in manual acknowledgement mode", Stat::Get),
    ("rabbitmq_channel_get_empty_total", "Total number of times basic.get operations fetched no message", Stat::GetEmpty),
];

/// Global counters (label protocol="amqp091"): (metric, help, stats summed).
const GLOBAL_COUNTERS: [(&str, &str, &[Stat]); 12] = [
    ("rabbitmq_global_messages_received_total", "Total number of messages received from publishers", &[Stat::Publish]),
    ("rabbitmq_global_messages_confirmed_total", "Total number of messages confirmed to publishers", &[Stat::Confirm]),
    ("rabbitmq_global_messages_unroutable_dropped_total", "Total number of messages published as non-mandatory into an exchange and dropped as unroutable", &[Stat::DropUnroutable]),
    ("rabbitmq_global_messages_unroutable_returned_total", "Total number of messages published as mandatory into an exchange and returned to the publisher as unroutable", &[Stat::ReturnUnroutable]),
    ("rabbitmq_global_messages_delivered_total", "Total number of messages delivered to consumers", &[Stat::Deliver, Stat::DeliverNoAck, Stat::Get, Stat::GetNoAck]),
    ("rabbitmq_global_messages_delivered_consume_manual_ack_total", "Total number of messages delivered to consumers using basic.consume with manual acknowledgment", &[Stat::Deliver]),
    ("rabbitmq_global_messages_delivered_consume_auto_ack_total", "Total number of messages delivered to consumers using basic.consume with automatic acknowledgment", &[Stat::DeliverNoAck]),
    ("rabbitmq_global_messages_delivered_get_manual_ack_total", "Total number of messages delivered to consumers using basic.get with manual acknowledgment", &[Stat::Get]),
    ("rabbitmq_global_messages_delivered_get_auto_ack_total", "Total number of messages delivered to consumers using basic.get with automatic acknowledgment", &[Stat::GetNoAck]),
    ("rabbitmq_global_messages_get_empty_total", "Total number of times basic.get operations fetched no message", &[Stat::GetEmpty]),
    ("rabbitmq_global_messages_redelivered_total", "Total number of messages redelivered to consumers", &[Stat::Redeliver]),
    ("rabbitmq_global_messages_acknowledged_total", "Total number of messages acknowledged by consumers", &[Stat::Ack]),
];

fn node_families(st: &AppState) -> Vec<Family> {
    let sh = &st.shared;
    let mem = crate::config::resident_memory() as f64;
    let limit = sh
        .memory_high_watermark
        .load(std::sync::atomic::Ordering::Relaxed) as f64;
    let disk = sh
        .data_dir
        .as_ref()
        .and_then(|d| fs4::available_space(d).ok());
    let disk_limit = sh.config.limits.disk_free_limit as f64;
    let mut out = vec![
        Family::one(
            "rabbitmq_process_resident_memory_bytes",
            "gauge",
            "Memory used in bytes",
            mem,
        ),
        Family::one(
            "rabbitmq_resident_memory_limit_bytes",
            "gauge",
            "Memory high watermark in bytes",
            limit,
        ),
        Family::one(
            "rabbitmq_disk_space_available_limit_bytes",
            "gauge",
            "Free disk space low watermark in bytes",
            disk_limit,
        ),
        Family::one(
            "rabbitmq_alarms_memory_used_watermark",
            "untyped",
            "is 1 if VM memory watermark alarm is in effect",
            f64::from(u8::from(mem > limit)),
        ),
        Family::one(
            "rabbitmq_alarms_free_disk_space_watermark",
            "untyped",
            "is 1 if free disk space watermark alarm is in effect",
            f64::from(u8::from(disk.is_some_and(|d| (d as f64) < disk_limit))),
        ),
        Family::one(
            "rabbitmq_erlang_uptime_seconds",
            "gauge",
            "Node uptime",
            st.node.started.elapsed().as_secs_f64(),
        ),
    ];
    if let Some(d) = disk {
        out.push(Family::one(
            "rabbitmq_disk_space_available_bytes",
            "gauge",
            "Disk space available in bytes",
            d as f64,
        ));
    }
    let mut id = Family::new(
        "rabbitmq_identity_info",
        "untyped",
        "RabbitMQ node & cluster identity info",
    );
    id.samples.push((
        labels(&[
            ("rabbitmq_node", &st.node.name),
            ("rabbitmq_cluster", &st.node.name),
        ]),
        1.0,
    ));
    let mut build = Family::new(
        "rabbitmq_build_info",
        "untyped",
        "RabbitMQ & Erlang/OTP version info",
    );
    build.samples.push((
        labels(&[
            ("rabbitmq_version", super::overview::RABBITMQ_VERSION),
            (
                "prometheus_plugin_version",
                super::overview::RABBITMQ_VERSION,
            ),
            ("warren_version", env!("CARGO_PKG_VERSION")),
        ]),
        1.0,
    ));
    out.push(id);
    out.push(build);
    out
}

/// Adds one sample: labelled when per object, else summed into the family's single sample.
fn add(f: &mut Family, per_object: bool, l: String, v: f64) {
    if per_object {
        f.samples.push((l, v));
    } else if let Some(s) = f.samples.first_mut() {
        s.1 += v;
    } else {
        f.samples.push((String::new(), v));
    }
}

fn rabbitmq_families(st: &AppState, per_object: bool) -> Vec<Family> {
    let mut out = node_families(st);
    let s = st.shared.state.lock();
    let queues = s.queue_infos(None);
    let channels = s.channel_infos();
    let conns = s.connection_infos();
    let churn = s.stats().churn_counts();
    let consumers = s.consumer_infos().len() as f64;
    for (i, (name, help)) in QUEUE_GAUGES.iter().enumerate() {
        let mut f = Family::new(name, "gauge", help);
        if !per_object {
            f.samples.push((String::new(), 0.0));
        }
        for q in &queues {
            let v = [
                q.ready,
                q.unacked,
                q.ready + q.unacked,
                q.consumers,
                q.ready_bytes,
                q.unacked_bytes,
                q.ready_bytes + q.unacked_bytes,
            ][i];
            add(
                &mut f,
                per_object,
                labels(&[("vhost", &q.vhost), ("queue", &q.name)]),
                v as f64,
            );
        }
        out.push(f);
    }
    let mut published = Family::new(
        "rabbitmq_queue_messages_published_total",
        "counter",
        "Total number of messages published to queues",
    );
    if !per_object {
        published.samples.push((String::new(), 0.0));
    }
    for q in &queues {
        let n = s
            .stats()
            .of_queue(&q.vhost, &q.name)
            .map_or(0, |c| c.get(Stat::Publish));
        add(
            &mut published,
            per_object,
            labels(&[("vhost", &q.vhost), ("queue", &q.name)]),
            n as f64,
        );
    }
    out.push(published);
    let totals = [
        (
            "rabbitmq_queues",
            "gauge",
            "Queues available",
            queues.len() as f64,
        ),
        (
            "rabbitmq_connections",
            "gauge",
            "Connections currently open",
            conns.len() as f64,
        ),
        (
            "rabbitmq_channels",
            "gauge",
            "Channels currently open",
            channels.len() as f64,
        ),
        (
            "rabbitmq_consumers",
            "gauge",
            "Consumers currently connected",
            consumers,
        ),
    ];
    for (n, k, h, v) in totals {
        out.push(Family::one(n, k, h, v));
    }
    let churn_names = [
        (
            "channel_closed",
            "rabbitmq_channels_closed_total",
            "Total number of channels closed",
        ),
        (
            "channel_created",
            "rabbitmq_channels_opened_total",
            "Total number of channels opened",
        ),
        (
            "connection_closed",
            "rabbitmq_connections_closed_total",
            "Total number of connections closed or terminated",
        ),
        (
            "connection_created",
            "rabbitmq_connections_opened_total",
            "Total number of connections opened",
        ),
        (
            "queue_created",
            "rabbitmq_queues_created_total",
            "Total number of queues created",
        ),
        (
            "queue_declared",
            "rabbitmq_queues_declared_total",
            "Total number of queues declared",
        ),
        (
            "queue_deleted",
            "rabbitmq_queues_deleted_total",
            "Total number of queues deleted",
        ),
    ];
    for ((_, key), n) in CHURN.iter().zip(churn) {
        if let Some((_, metric, help)) = churn_names.iter().find(|(k, _, _)| k == key) {
            out.push(Family::one(metric, "counter", help, n as f64));
        }
    }
    let chan_name = |key: crate::core::message::ChannelKey| {
        let conn = s
            .connection_info(key.conn)
            .map(|c| c.name())
            .unwrap_or_default();
        format!("{conn} ({})", key.channel)
    };
    for (i, (name, help)) in [
        ("rabbitmq_channel_consumers", "Consumers on a channel"),
        (
            "rabbitmq_channel_messages_unacked",
            "Delivered but not yet acknowledged messages",
        ),
        (
            "rabbitmq_channel_prefetch",
            "Total limit of unacknowledged messages for all consumers on a channel",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let mut f = Family::new(name, "gauge", help);
        if !per_object {
            f.samples.push((String::new(), 0.0));
        }
        for ch in &channels {
            let v = [ch.consumers, ch.unacked, u64::from(ch.global_prefetch)][i];
            add(
                &mut f,
                per_object,
                labels(&[("channel", &chan_name(ch.key))]),
                v as f64,
            );
        }
        out.push(f);
    }
    for (name, help, stat) in CHANNEL_COUNTERS {
        let mut f = Family::new(name, "counter", help);
        if !per_object {
            f.samples.push((String::new(), 0.0));
        }
        for ch in &channels {
            let v = s.stats().of_channel(ch.key).map_or(0, |c| c.get(stat));
            add(
                &mut f,
                per_object,
                labels(&[("channel", &chan_name(ch.key)), ("vhost", &ch.vhost)]),
                v as f64,
            );
        }
        out.push(f);
    }
    let mut f = Family::new(
        "rabbitmq_connection_channels",
        "gauge",
        "Channels on a connection",
    );
    if !per_object {
        f.samples.push((String::new(), 0.0));
    }
    for (_, info, n) in &conns {
        add(
            &mut f,
            per_object,
            labels(&[("channel", &info.name())]),
            *n as f64,
        );
    }
    out.push(f);
    let mut all = Counters::default();
    for v in s.vhost_names() {
        if let Some(c) = s.stats().of_vhost(&v) {
            all.merge(c);
        }
    }
    drop(s);
    let proto = labels(&[("protocol", "amqp091")]);
    for (name, help, stats) in GLOBAL_COUNTERS {
        let v: u64 = stats.iter().map(|x| all.get(*x)).sum();
        let mut f = Family::new(name, "counter", help);
        f.samples.push((proto.clone(), v as f64));
        out.push(f);
    }
    let mut f = Family::new(
        "rabbitmq_global_consumers",
        "gauge",
        "Current number of consumers",
    );
    f.samples.push((proto, consumers));
    out.push(f);
    out
}

/// Warren's own series (`warren_*`), for what RabbitMQ has no metric for.
///
/// The RPC observation's per-service series (`warren_rpc_*`, including a histogram, which a
/// `Family` cannot express) are appended by `respond` from `dashboard::warren_metrics`.
fn warren_families(st: &AppState) -> Vec<Family> {
    let resident = st.shared.state.lock().resident_bytes() as f64;
    vec![Family::one(
        "warren_resident_message_bytes",
        "gauge",
        "Bytes of ready messages held in memory (messages paged out to disk not counted)",
        resident,
    )]
}
