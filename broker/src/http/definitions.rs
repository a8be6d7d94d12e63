//! `/api/definitions[/vhost]`: export (GET) and import (POST) in RabbitMQ's definitions
//! format, through the core's definitions (`core/definitions.rs`: users, vhosts,
//! permissions, limits and topology; an import that fails applies nothing). A vhost's
//! definitions are the topology of that vhost alone, without `vhost` fields, as RabbitMQ
//! writes them.

use super::auth::Caller;
use super::error::{ApiError, ApiResult};
use super::AppState;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
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

const TOPOLOGY: [&str; 3] = ["queues", "exchanges", "bindings"];

fn export(st: &AppState) -> Value {
    let s = st.shared.state.lock();
    crate::core::definitions::export(&s, &st.shared.access)
}

async fn export_all(State(st): State<AppState>, c: Caller) -> ApiResult<Json<Value>> {
    c.require_admin()?;
    Ok(Json(export(&st)))
}

async fn export_vhost(
    State(st): State<AppState>,
    c: Caller,
    Path(vhost): Path<String>,
) -> ApiResult<Json<Value>> {
    c.require_admin()?;
    super::resources::check_vhost(&st, &c, &vhost)?;
    let all = export(&st);
    let mut out = json!({
        "rabbit_version": all["rabbit_version"],
        "parameters": [],
        "policies": [],
    });
    for kind in TOPOLOGY {
        let items: Vec<Value> = all[kind]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["vhost"] == vhost.as_str())
            .map(|e| {
                let mut e = e.clone();
                e.as_object_mut().map(|m| m.remove("vhost"));
                e
            })
            .collect();
        out[kind] = json!(items);
    }
    Ok(Json(out))
}

/// A definitions import POST's body, or RabbitMQ's 400 `not_json`.
pub(crate) fn parse(bytes: &Bytes) -> ApiResult<Value> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(v @ Value::Object(_)) => Ok(v),
        _ => Err(ApiError::bad_request("not_json")),
    }
}

fn import(st: &AppState, defs: &Value) -> ApiResult<Response> {
    crate::core::definitions::import(&st.shared.state, &st.shared.access, defs)
        .map_err(ApiError::bad_request)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn import_all(State(st): State<AppState>, c: Caller, bytes: Bytes) -> ApiResult<Response> {
    c.require_admin()?;
    import(&st, &parse(&bytes)?)
}

async fn import_vhost(
    State(st): State<AppState>,
    c: Caller,
    Path(vhost): Path<String>,
    bytes: Bytes,
) -> ApiResult<Response> {
    c.require_admin()?;
    super::resources::check_vhost(&st, &c, &vhost)?;
    let defs = parse(&bytes)?;
    // A vhost's definitions apply to that vhost whatever the file says; only its topology.
    let mut only = json!({});
    for kind in TOPOLOGY {
        let items: Vec<Value> = defs[kind]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                let mut e = e.clone();
                e["vhost"] = json!(vhost);
                e
            })
            .collect();
        only[kind] = json!(items);
    }
    import(&st, &only)
}
