//! Users, vhosts and permissions: `/api/users`, `/api/vhosts`, `/api/permissions`.
//!
//! Until the broker has a runtime user model, users are the configured ones (every one an
//! administrator with full permissions on every vhost); vhosts can be listed and created.

use super::auth::Caller;
use super::error::{ApiError, ApiResult};
use super::json::message_stats;
use super::overview::visible_vhosts;
use super::query::ListQuery;
use super::AppState;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use base64::Engine;
use serde_json::{json, Value};
use sha2::Digest;

/// The routes of this module.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/vhosts", get(vhosts))
        .route("/api/vhosts/{vhost}", get(show_vhost).put(put_vhost))
        .route("/api/vhosts/{vhost}/permissions", get(vhost_permissions))
        .route("/api/users", get(users))
        .route("/api/users/{user}", get(show_user))
        .route("/api/users/{user}/permissions", get(user_permissions))
        .route("/api/permissions", get(permissions))
        .route("/api/permissions/{vhost}/{user}", get(show_permission))
}

fn vhost_json(state: &AppState, name: &str) -> Value {
    let s = state.shared.state.lock();
    let (ready, unacked) = s
        .queue_infos(Some(name))
        .iter()
        .fold((0, 0), |(r, u), q| (r + q.ready, u + q.unacked));
    let mut v = json!({
        "name": name,
        "description": if name == "/" { "Default virtual host" } else { "" },
        "tags": [],
        "metadata": {"description": if name == "/" { "Default virtual host" } else { "" }, "tags": []},
        "default_queue_type": "undefined",
        "tracing": false,
        "cluster_state": {state.node.name.clone(): "running"},
        "messages": ready + unacked,
        "messages_details": {"rate": 0.0},
        "messages_ready": ready,
        "messages_ready_details": {"rate": 0.0},
        "messages_unacknowledged": unacked,
        "messages_unacknowledged_details": {"rate": 0.0},
    });
    if let Some(c) = s.stats().of_vhost(name).filter(|c| !c.is_empty()) {
        v["message_stats"] = message_stats(c, true);
    }
    v
}

async fn vhosts(
    State(st): State<AppState>,
    c: Caller,
    Query(q): Query<ListQuery>,
) -> ApiResult<Response> {
    let items = visible_vhosts(&st, &c)
        .iter()
        .map(|n| vhost_json(&st, n))
        .collect();
    q.respond(items)
}

async fn show_vhost(
    State(st): State<AppState>,
    c: Caller,
    Path(vhost): Path<String>,
) -> ApiResult<Response> {
    super::resources::check_vhost(&st, &c, &vhost)?;
    Ok(axum::Json(vhost_json(&st, &vhost)).into_response())
}

async fn put_vhost(
    State(st): State<AppState>,
    c: Caller,
    Path(vhost): Path<String>,
) -> ApiResult<Response> {
    c.require_admin()?;
    if vhost.len() > 255 {
        return Err(ApiError::bad_request("vhost name too long"));
    }
    let mut s = st.shared.state.lock();
    if s.has_vhost(&vhost) {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    s.add_vhost(&vhost);
    Ok(StatusCode::CREATED.into_response())
}

/// RabbitMQ's `rabbit_password_hashing_sha256`: base64(salt ++ sha256(salt ++ password)),
/// with a 4-byte salt, so an exported user imports into RabbitMQ with the same password. The
/// salt is derived from the user name so that repeated exports are identical.
pub(crate) fn password_hash(name: &str, password: &str) -> String {
    let salt: [u8; 4] = sha2::Sha256::digest(name.as_bytes())[..4]
        .try_into()
        .expect("4 bytes");
    let mut h = sha2::Sha256::new();
    h.update(salt);
    h.update(password.as_bytes());
    let mut out = salt.to_vec();
    out.extend_from_slice(&h.finalize());
    base64::engine::general_purpose::STANDARD.encode(out)
}

/// The users as RabbitMQ lists them.
pub(crate) fn user_list(state: &AppState) -> Vec<Value> {
    state
        .shared
        .config
        .users
        .iter()
        .map(|u| {
            json!({
                "name": u.name,
                "password_hash": password_hash(&u.name, &u.password),
                "hashing_algorithm": "rabbit_password_hashing_sha256",
                "tags": ["administrator"],
                "limits": {},
            })
        })
        .collect()
}

/// Every (user, vhost) permission.
pub(crate) fn permission_list(state: &AppState) -> Vec<Value> {
    let vhosts = state.shared.state.lock().vhost_names();
    let mut out = Vec::new();
    for u in &state.shared.config.users {
        for v in &vhosts {
            out.push(
                json!({"user": u.name, "vhost": v, "configure": ".*", "write": ".*", "read": ".*"}),
            );
        }
    }
    out
}

async fn users(
    State(st): State<AppState>,
    c: Caller,
    Query(q): Query<ListQuery>,
) -> ApiResult<Response> {
    c.require_admin()?;
    q.respond(user_list(&st))
}

async fn show_user(
    State(st): State<AppState>,
    c: Caller,
    Path(user): Path<String>,
) -> ApiResult<Response> {
    c.require_admin()?;
    user_list(&st)
        .into_iter()
        .find(|u| u["name"] == user.as_str())
        .map(|u| axum::Json(u).into_response())
        .ok_or_else(ApiError::not_found)
}

async fn permissions(
    State(st): State<AppState>,
    c: Caller,
    Query(q): Query<ListQuery>,
) -> ApiResult<Response> {
    c.require_admin()?;
    q.respond(permission_list(&st))
}

async fn vhost_permissions(
    State(st): State<AppState>,
    c: Caller,
    Path(vhost): Path<String>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Response> {
    c.require_admin()?;
    super::resources::check_vhost(&st, &c, &vhost)?;
    q.respond(
        permission_list(&st)
            .into_iter()
            .filter(|p| p["vhost"] == vhost.as_str())
            .collect(),
    )
}

async fn user_permissions(
    State(st): State<AppState>,
    c: Caller,
    Path(user): Path<String>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Response> {
    c.require_admin()?;
    let items: Vec<Value> = permission_list(&st)
        .into_iter()
        .filter(|p| p["user"] == user.as_str())
        .collect();
    if !st.shared.config.users.iter().any(|u| u.name == user) {
        return Err(ApiError::not_found());
    }
    q.respond(items)
}

async fn show_permission(
    State(st): State<AppState>,
    c: Caller,
    Path((vhost, user)): Path<(String, String)>,
) -> ApiResult<Response> {
    c.require_admin()?;
    permission_list(&st)
        .into_iter()
        .find(|p| p["vhost"] == vhost.as_str() && p["user"] == user.as_str())
        .map(|p| axum::Json(p).into_response())
        .ok_or_else(ApiError::not_found)
}
