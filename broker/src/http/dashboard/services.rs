//! Warren's own management endpoints, under `/api/warren`: the RPC services the broker sees
//! (from the core's RPC observer, `core/rpcwatch.rs`) and calls to them made from inside the
//! broker (`call.rs`), which the dashboard's RPC page uses for `$describe` and its method
//! forms.
//!
//! - `GET /api/warren/services`: every service seen, with counts, rates and reply latency.
//! - `GET /api/warren/services/{vhost}/{queue}`: one of them (404 if never seen).
//! - `POST /api/warren/services/{vhost}/{queue}/call` with `{"method": "add", "args": {...},
//!   "timeout_ms": 5000}`: the reply envelope as JSON.
//! - `GET /api/warren/services/{vhost}/{queue}/describe`: the service's `$describe` answer.

use super::super::auth::Caller;
use super::super::error::{ApiError, ApiResult};
use super::super::overview::visible_vhosts;
use super::super::AppState;
use super::call::{call, CallError, CallReply, CallSpec, MAX_TIMEOUT};
use crate::core::rpcwatch::{prometheus, ServiceStats};
use crate::shared::Shared;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::Value;
use std::time::Duration;

/// A call's budget when the request names none.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/warren/services", get(list))
        .route("/api/warren/services/{vhost}/{queue}", get(one))
        .route(
            "/api/warren/services/{vhost}/{queue}/call",
            post(call_method),
        )
        .route(
            "/api/warren/services/{vhost}/{queue}/describe",
            get(describe),
        )
}

/// The `warren_rpc_*` Prometheus series (text format) for the `/metrics` endpoints.
pub(crate) fn warren_metrics(shared: &Shared) -> String {
    let services = shared.state.lock().rpc_services();
    let mut out = String::new();
    prometheus(&services, &mut out);
    out
}

fn services(state: &AppState, caller: &Caller) -> Vec<ServiceStats> {
    let visible = visible_vhosts(state, caller);
    let mut all = state.shared.state.lock().rpc_services();
    all.retain(|s| visible.contains(&s.vhost));
    all
}

async fn list(State(state): State<AppState>, caller: Caller) -> Json<Vec<ServiceStats>> {
    Json(services(&state, &caller))
}

async fn one(
    State(state): State<AppState>,
    caller: Caller,
    Path((vhost, queue)): Path<(String, String)>,
) -> ApiResult<Json<ServiceStats>> {
    services(&state, &caller)
        .into_iter()
        .find(|s| s.vhost == vhost && s.name == queue)
        .map(Json)
        .ok_or_else(ApiError::not_found)
}

/// The body of a call.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CallBody {
    method: String,
    #[serde(default = "empty_args")]
    args: Value,
    timeout_ms: Option<u64>,
}

fn empty_args() -> Value {
    Value::Object(Default::default())
}

async fn call_method(
    State(state): State<AppState>,
    caller: Caller,
    Path((vhost, queue)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Json<CallReply>> {
    let body: CallBody = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid call: {e}")))?;
    if body.method.is_empty() || body.method.len() > 255 {
        return Err(ApiError::bad_request("method: 1 to 255 bytes"));
    }
    if !body.args.is_object() {
        return Err(ApiError::bad_request(
            "args: an object of parameter name to value",
        ));
    }
    let timeout = body
        .timeout_ms
        .map_or(DEFAULT_TIMEOUT, Duration::from_millis);
    if timeout.is_zero() || timeout > MAX_TIMEOUT {
        return Err(ApiError::bad_request(format!(
            "timeout_ms: 1 to {}",
            MAX_TIMEOUT.as_millis()
        )));
    }
    let spec = CallSpec {
        vhost: &vhost,
        queue: &queue,
        method: &body.method,
        args: body.args,
        timeout,
    };
    checked_call(&state, &caller, spec).await.map(Json)
}

async fn describe(
    State(state): State<AppState>,
    caller: Caller,
    Path((vhost, queue)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let spec = CallSpec {
        vhost: &vhost,
        queue: &queue,
        method: "$describe",
        args: empty_args(),
        timeout: DEFAULT_TIMEOUT,
    };
    let reply = checked_call(&state, &caller, spec).await?;
    match reply.reply {
        Value::Object(mut m) if m.contains_key("ok") => {
            Ok(Json(m.remove("ok").unwrap_or_default()))
        }
        other => Err(ApiError {
            status: StatusCode::BAD_GATEWAY,
            error: "no_description",
            reason: format!("$describe answered {other}"),
            reason_json: None,
        }),
    }
}

/// Makes the call if the caller may see the vhost; the answer, or RabbitMQ-shaped errors.
async fn checked_call(
    state: &AppState,
    caller: &Caller,
    spec: CallSpec<'_>,
) -> ApiResult<CallReply> {
    if spec.queue.is_empty() || spec.queue.len() > 255 {
        return Err(ApiError::bad_request("queue name: 1 to 255 bytes"));
    }
    if !visible_vhosts(state, caller)
        .iter()
        .any(|v| v == spec.vhost)
    {
        return Err(ApiError::not_found());
    }
    call(&state.shared, spec).await.map_err(|e| {
        let (status, error) = match e {
            CallError::NoVhost(_) => return ApiError::not_found(),
            CallError::Unroutable { .. } => (StatusCode::SERVICE_UNAVAILABLE, "unroutable"),
            CallError::Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, "timeout"),
            CallError::BadReply(_) => (StatusCode::BAD_GATEWAY, "bad_reply"),
        };
        ApiError {
            status,
            error,
            reason: e.to_string(),
            reason_json: None,
        }
    })
}
