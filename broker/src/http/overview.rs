//! The node as a whole: `/api/overview`, `/api/whoami`, `/api/nodes`, `/api/health/checks/*`.

use super::auth::Caller;
use super::error::{ApiError, ApiResult};
use super::json::message_stats;
use super::AppState;
use crate::core::stats::CHURN;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Map, Value};

/// The RabbitMQ version Warren reports: the management API it implements (tools such as
/// rabbitmqadmin and Terraform providers branch on it).
pub(crate) const RABBITMQ_VERSION: &str = "3.13.7";

/// The routes of this module.
pub(crate) fn routes() -> axum::Router<AppState> {
    Router::new()
        .route("/api/overview", get(overview))
        .route("/api/whoami", get(whoami))
        .route("/api/nodes", get(nodes))
        .route("/api/nodes/{node}", get(node))
        .route("/api/health/checks/alarms", get(alarms))
        .route("/api/health/checks/local-alarms", get(alarms))
        .route("/api/health/checks/virtual-hosts", get(ok))
        .route("/api/health/checks/node-is-quorum-critical", get(ok))
        .route("/api/health/checks/node-is-mirror-sync-critical", get(ok))
        .route(
            "/api/health/checks/certificate-expiration/{n}/{unit}",
            get(ok),
        )
        .route(
            "/api/health/checks/port-listener/{port}",
            get(port_listener),
        )
        .route(
            "/api/health/checks/protocol-listener/{proto}",
            get(protocol_listener),
        )
}

fn exchange_types() -> Value {
    json!(["direct", "fanout", "headers", "topic"]
        .iter()
        .map(|n| json!({
            "name": n,
            "description": format!("AMQP {n} exchange, as per the AMQP specification"),
            "enabled": true,
        }))
        .collect::<Vec<_>>())
}

fn listeners(state: &AppState) -> Value {
    let n = &state.node;
    let mut out = vec![("amqp", n.amqp)];
    // RabbitMQ's names: "https" and "https/prometheus" for the TLS listeners.
    let mgmt = if n.management_tls { "https" } else { "http" };
    let prom = if n.prometheus_tls {
        "https/prometheus"
    } else {
        "http/prometheus"
    };
    out.extend(n.management.map(|m| (mgmt, m)));
    out.extend(n.prometheus.map(|p| (prom, p)));
    json!(out
        .into_iter()
        .map(|(protocol, addr)| json!({
            "node": n.name,
            "protocol": protocol,
            "ip_address": addr.ip().to_string(),
            "port": addr.port(),
            "socket_opts": {},
        }))
        .collect::<Vec<_>>())
}

async fn overview(State(state): State<AppState>, caller: Caller) -> Json<Value> {
    let visible = visible_vhosts(&state, &caller);
    let s = state.shared.state.lock();
    let queues = s.queue_infos(None);
    let queues: Vec<_> = queues
        .iter()
        .filter(|q| visible.contains(&q.vhost))
        .collect();
    let (ready, unacked) = queues
        .iter()
        .fold((0, 0), |(r, u), q| (r + q.ready, u + q.unacked));
    let mut totals = Map::new();
    for (k, v) in [
        ("messages", ready + unacked),
        ("messages_ready", ready),
        ("messages_unacknowledged", unacked),
    ] {
        totals.insert(k.into(), json!(v));
        totals.insert(format!("{k}_details"), json!({"rate": 0.0}));
    }
    let mut stats = crate::core::stats::Counters::default();
    for v in &visible {
        if let Some(c) = s.stats().of_vhost(v) {
            stats.merge(c);
        }
    }
    let mut churn = Map::new();
    for ((_, name), n) in CHURN.iter().zip(s.stats().churn_counts()) {
        churn.insert((*name).into(), json!(n));
        churn.insert(format!("{name}_details"), json!({"rate": 0.0}));
    }
    let conns = s.connection_infos();
    let object_totals = json!({
        "channels": s.channel_infos().iter().filter(|c| visible.contains(&c.vhost)).count(),
        "connections": conns.iter().filter(|c| visible.contains(&c.1.vhost)).count(),
        "consumers": s.consumer_infos().iter().filter(|c| visible.contains(&c.vhost)).count(),
        "exchanges": s.exchange_infos(None).iter().filter(|x| visible.contains(&x.vhost)).count(),
        "queues": queues.len(),
    });
    drop(s);
    Json(json!({
        "management_version": RABBITMQ_VERSION,
        "rates_mode": "basic",
        "exchange_types": exchange_types(),
        "product_version": env!("CARGO_PKG_VERSION"),
        "product_name": "Warren",
        "rabbitmq_version": RABBITMQ_VERSION,
        "cluster_name": state.node.name,
        "erlang_version": "none (Rust)",
        "erlang_full_version": "none (Rust)",
        "disable_stats": false,
        "enable_queue_totals": false,
        "message_stats": message_stats(&stats, true),
        "churn_rates": churn,
        "queue_totals": totals,
        "object_totals": object_totals,
        "statistics_db_event_queue": 0,
        "node": state.node.name,
        "listeners": listeners(&state),
        "contexts": [{
            "node": state.node.name,
            "description": "RabbitMQ Management",
            "path": "/",
            "ip": state.node.management.map(|m| m.ip().to_string()),
            "port": state.node.management.map(|m| m.port().to_string()),
        }],
    }))
}

/// The vhosts a caller may see: every vhost for administrator and monitoring users; for
/// management users those they have permissions in (as RabbitMQ).
pub(crate) fn visible_vhosts(state: &AppState, caller: &Caller) -> Vec<String> {
    let mut all: Vec<String> = state
        .shared
        .access
        .vhosts()
        .into_iter()
        .map(|v| v.name)
        .collect();
    if !caller.sees_all() {
        let mine: Vec<String> = state
            .shared
            .access
            .permissions()
            .into_iter()
            .filter(|(u, _, _)| *u == caller.name)
            .map(|(_, v, _)| v)
            .collect();
        all.retain(|v| mine.contains(v));
    }
    all.sort();
    all
}

async fn whoami(caller: Caller) -> Json<Value> {
    Json(json!({"name": caller.name, "tags": caller.tags}))
}

fn node_json(state: &AppState) -> Value {
    let mem = crate::config::resident_memory();
    let limit = state
        .shared
        .memory_high_watermark
        .load(std::sync::atomic::Ordering::Relaxed);
    let alarm = *state.shared.alarm.borrow();
    let disk_free = state
        .shared
        .data_dir
        .as_ref()
        .and_then(|d| fs4::available_space(d).ok())
        .unwrap_or(0);
    json!({
        "name": state.node.name,
        "type": "disc",
        "running": true,
        "being_drained": false,
        "mem_used": mem,
        "mem_limit": limit,
        "mem_alarm": alarm && mem > limit,
        "disk_free": disk_free,
        "disk_free_limit": state.shared.config.limits.disk_free_limit,
        "disk_free_alarm": alarm && mem <= limit,
        "uptime": state.node.started.elapsed().as_millis() as u64,
        "processors": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "rates_mode": "basic",
        "exchange_types": exchange_types(),
        "partitions": [],
        "applications": [],
        "enabled_plugins": ["rabbitmq_management", "rabbitmq_prometheus"],
    })
}

async fn nodes(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    caller.require_monitor()?;
    Ok(Json(json!([node_json(&state)])))
}

async fn node(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require_monitor()?;
    if name != state.node.name {
        return Err(ApiError::not_found());
    }
    Ok(Json(node_json(&state)))
}

async fn ok(_caller: Caller) -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// RabbitMQ answers a failing health check with 503 and `{"status": "failed", "reason"}`.
fn failed(reason: String) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({"status": "failed", "reason": reason})),
    )
        .into_response()
}

async fn alarms(State(state): State<AppState>, _caller: Caller) -> Response {
    if *state.shared.alarm.borrow() {
        return failed("resource alarm(s) in effect".into());
    }
    Json(json!({"status": "ok"})).into_response()
}

async fn port_listener(
    State(state): State<AppState>,
    _caller: Caller,
    Path(port): Path<String>,
) -> Response {
    let Ok(port) = port.parse::<u16>() else {
        return ApiError::bad_request(format!("{port} is not a valid port")).into_response();
    };
    let n = &state.node;
    let ports = [
        Some(n.amqp.port()),
        n.management.map(|p| p.port()),
        n.prometheus.map(|p| p.port()),
    ];
    if ports.contains(&Some(port)) {
        Json(json!({"status": "ok", "port": port})).into_response()
    } else {
        failed(format!("No active listener on port {port}"))
    }
}

async fn protocol_listener(
    State(state): State<AppState>,
    _caller: Caller,
    Path(proto): Path<String>,
) -> Response {
    let known = ["amqp", "amqp091", "amqp0-9-1", "management"];
    let n = &state.node;
    // The listener answering this is the management one: "http" or, over TLS, "https".
    let http = if n.management_tls { "https" } else { "http" };
    if known.contains(&proto.as_str())
        || proto == http
        || (proto == "prometheus" && n.prometheus.is_some())
    {
        Json(json!({"status": "ok", "protocol": proto})).into_response()
    } else {
        failed(format!("No active listener for protocol {proto}"))
    }
}
