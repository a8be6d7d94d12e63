//! `/api/definitions[/vhost]`: export (GET) and import (POST) in RabbitMQ's definitions
//! format, so a file exported by RabbitMQ imports into Warren and back.
//!
//! An import is all or nothing: it is first applied to a scratch copy of the topology (so the
//! core's own checks, such as declaration equivalence and argument validation, run), and
//! only when every entry passes is it applied to the broker.

use super::auth::Caller;
use super::error::{ApiError, ApiResult};
use super::json::{table, to_table};
use super::AppState;
use crate::core::exchange::Destination;
use crate::core::state::State as Core;
use crate::core::topology::{ExchangeDeclare, QueueDeclare};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

/// The routes of this module.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/definitions", get(export_all).post(import_all))
        .route(
            "/api/definitions/{vhost}",
            get(export_vhost).post(import_vhost),
        )
}

#[derive(Debug, Clone, Deserialize)]
struct QueueDef {
    name: String,
    vhost: Option<String>,
    #[serde(default = "yes")]
    durable: bool,
    #[serde(default)]
    auto_delete: bool,
    #[serde(default)]
    arguments: Value,
}

#[derive(Debug, Clone, Deserialize)]
struct ExchangeDef {
    name: String,
    vhost: Option<String>,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default = "yes")]
    durable: bool,
    #[serde(default)]
    auto_delete: bool,
    #[serde(default)]
    internal: bool,
    #[serde(default)]
    arguments: Value,
}

#[derive(Debug, Clone, Deserialize)]
struct BindingDef {
    source: String,
    vhost: Option<String>,
    destination: String,
    destination_type: String,
    #[serde(default)]
    routing_key: String,
    #[serde(default)]
    arguments: Value,
}

#[derive(Debug, Clone, Deserialize)]
struct VhostDef {
    name: String,
}

fn yes() -> bool {
    true
}

/// The parts of a definitions file Warren applies (users, permissions, policies and
/// parameters are accepted and skipped until the broker has them).
#[derive(Debug, Default, Clone, Deserialize)]
struct Defs {
    #[serde(default)]
    vhosts: Vec<VhostDef>,
    #[serde(default)]
    queues: Vec<QueueDef>,
    #[serde(default)]
    exchanges: Vec<ExchangeDef>,
    #[serde(default)]
    bindings: Vec<BindingDef>,
}

/// Everything a vhost (or all) holds, as RabbitMQ exports it: non-exclusive queues, exchanges
/// except the default and `amq.*` ones, bindings except the default exchange's.
fn export(state: &AppState, vhost: Option<&str>) -> Value {
    let with_vhost = vhost.is_none();
    let s = state.shared.state.lock();
    let put_vhost = |mut v: Value, vh: &str| {
        if with_vhost {
            v["vhost"] = json!(vh);
        }
        v
    };
    let queues: Vec<Value> = s
        .queue_infos(vhost)
        .iter()
        .filter(|q| q.owner.is_none())
        .map(|q| put_vhost(json!({"name": q.name, "durable": q.durable, "auto_delete": q.auto_delete, "arguments": table(&q.arguments)}), &q.vhost))
        .collect();
    let exchanges: Vec<Value> = s
        .exchange_infos(vhost)
        .iter()
        .filter(|x| !x.name.is_empty() && !x.name.starts_with("amq."))
        .map(|x| put_vhost(json!({"name": x.name, "type": x.kind, "durable": x.durable, "auto_delete": x.auto_delete, "internal": x.internal, "arguments": table(&x.arguments)}), &x.vhost))
        .collect();
    let bindings: Vec<Value> = s
        .binding_infos(vhost)
        .iter()
        .filter(|b| !b.source.is_empty())
        .map(|b| put_vhost(json!({"source": b.source, "destination": b.destination, "destination_type": b.destination_type, "routing_key": b.routing_key, "arguments": table(&b.arguments)}), &b.vhost))
        .collect();
    let version = super::overview::RABBITMQ_VERSION;
    let mut out = json!({
        "rabbit_version": version,
        "parameters": [],
        "policies": [],
        "queues": queues,
        "exchanges": exchanges,
        "bindings": bindings,
    });
    if with_vhost {
        let names = s.vhost_names();
        drop(s);
        let users: Vec<Value> = super::admin::user_list(state);
        out["rabbitmq_version"] = json!(version);
        out["product_name"] = json!("Warren");
        out["product_version"] = json!(env!("CARGO_PKG_VERSION"));
        out["users"] = json!(users);
        out["vhosts"] = json!(names.iter().map(|n| json!({"name": n})).collect::<Vec<_>>());
        out["permissions"] = json!(super::admin::permission_list(state));
        out["topic_permissions"] = json!([]);
        out["global_parameters"] = json!([]);
    }
    out
}

async fn export_all(State(st): State<AppState>, c: Caller) -> ApiResult<Json<Value>> {
    c.require_admin()?;
    Ok(Json(export(&st, None)))
}

async fn export_vhost(
    State(st): State<AppState>,
    c: Caller,
    Path(vhost): Path<String>,
) -> ApiResult<Json<Value>> {
    c.require_admin()?;
    super::resources::check_vhost(&st, &c, &vhost)?;
    Ok(Json(export(&st, Some(&vhost))))
}

fn parse(bytes: &Bytes) -> ApiResult<Defs> {
    let v: Value =
        serde_json::from_slice(bytes).map_err(|e| ApiError::bad_request(e.to_string()))?;
    if !v.is_object() {
        return Err(ApiError::bad_request("definitions must be a JSON object"));
    }
    serde_json::from_value(v).map_err(|e| ApiError::bad_request(e.to_string()))
}

fn args(v: &Value, what: &str) -> ApiResult<amq_protocol::types::FieldTable> {
    to_table(v).ok_or_else(|| ApiError::bad_request(format!("{what}: arguments must be an object")))
}

/// Applies definitions to a core state; the first failure stops it.
fn apply(s: &mut Core, d: &Defs, default_vhost: Option<&str>) -> ApiResult<()> {
    let vh = |v: &Option<String>| -> ApiResult<String> {
        v.clone()
            .or_else(|| default_vhost.map(str::to_string))
            .ok_or_else(|| ApiError::bad_request("an entry has no vhost"))
    };
    let refused = |what: &str, e: crate::core::error::AmqpError| {
        ApiError::bad_request(format!("{what}: {} - {}", e.code.name(), e.text))
    };
    for v in &d.vhosts {
        s.add_vhost(&v.name);
    }
    let known = |s: &Core, v: &str| -> ApiResult<()> {
        if s.has_vhost(v) {
            Ok(())
        } else {
            Err(ApiError::bad_request(format!("vhost '{v}' does not exist")))
        }
    };
    for x in &d.exchanges {
        let v = vh(&x.vhost)?;
        known(s, &v)?;
        let decl = ExchangeDeclare {
            name: x.name.clone(),
            kind: x.kind.clone(),
            passive: false,
            durable: x.durable,
            auto_delete: x.auto_delete,
            internal: x.internal,
            args: args(&x.arguments, &x.name)?,
        };
        s.exchange_declare(&v, decl)
            .map_err(|e| refused(&x.name, e))?;
    }
    for q in &d.queues {
        let v = vh(&q.vhost)?;
        known(s, &v)?;
        let decl = QueueDeclare {
            name: q.name.clone(),
            passive: false,
            durable: q.durable,
            exclusive: false,
            auto_delete: q.auto_delete,
            args: args(&q.arguments, &q.name)?,
        };
        s.queue_declare(&v, 0, decl)
            .map_err(|e| refused(&q.name, e))?;
    }
    for b in &d.bindings {
        let v = vh(&b.vhost)?;
        known(s, &v)?;
        let dest = match b.destination_type.as_str() {
            "queue" => Destination::Queue(b.destination.clone()),
            "exchange" => Destination::Exchange(b.destination.clone()),
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown destination_type {other}"
                )))
            }
        };
        s.bind(
            &v,
            0,
            &b.source,
            dest,
            &b.routing_key,
            args(&b.arguments, &b.source)?,
        )
        .map_err(|e| refused(&b.source, e))?;
    }
    Ok(())
}

/// Imports `d`: a dry run on a scratch copy of the current topology, then the real thing.
fn import(st: &AppState, d: &Defs, vhost: Option<&str>) -> ApiResult<Response> {
    let current = parse(&Bytes::from(export(st, None).to_string()))?;
    let mut scratch = Core::new();
    let _ = apply(&mut scratch, &current, None);
    apply(&mut scratch, d, vhost)?;
    let mut s = st.shared.state.lock();
    apply(&mut s, d, vhost)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn import_all(State(st): State<AppState>, c: Caller, bytes: Bytes) -> ApiResult<Response> {
    c.require_admin()?;
    let d = parse(&bytes)?;
    import(&st, &d, None)
}

async fn import_vhost(
    State(st): State<AppState>,
    c: Caller,
    Path(vhost): Path<String>,
    bytes: Bytes,
) -> ApiResult<Response> {
    c.require_admin()?;
    super::resources::check_vhost(&st, &c, &vhost)?;
    let mut d = parse(&bytes)?;
    // A vhost's definitions apply to that vhost whatever the file says.
    d.vhosts.clear();
    for q in &mut d.queues {
        q.vhost = Some(vhost.clone());
    }
    for x in &mut d.exchanges {
        x.vhost = Some(vhost.clone());
    }
    for b in &mut d.bindings {
        b.vhost = Some(vhost.clone());
    }
    import(&st, &d, Some(&vhost))
}
