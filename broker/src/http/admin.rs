//! Users, vhosts, permissions, topic permissions and limits, through the broker's access data
//! (`core/access`): `/api/users`, `/api/vhosts`, `/api/permissions`, `/api/topic-permissions`,
//! `/api/vhost-limits`, `/api/user-limits`. Only administrators change them (and see users and
//! permissions), as in RabbitMQ.

use super::auth::Caller;
use super::error::{ApiError, ApiResult};
use super::json::message_stats;
use super::overview::visible_vhosts;
use super::query::ListQuery;
use super::AppState;
use crate::core::access::json::{user_json, user_limits_json, vhost_limits_json};
use crate::core::access::{
    AccessError, PasswordSpec, UserLimits, UserSpec, VhostInfo, VhostLimits,
};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Map, Value};

/// The routes of this module.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/vhosts", get(vhosts))
        .route(
            "/api/vhosts/{vhost}",
            get(show_vhost).put(put_vhost).delete(delete_vhost),
        )
        .route("/api/vhosts/{vhost}/permissions", get(vhost_permissions))
        .route("/api/users", get(users))
        .route(
            "/api/users/{user}",
            get(show_user).put(put_user).delete(delete_user),
        )
        .route("/api/users/{user}/permissions", get(user_permissions))
        .route("/api/permissions", get(permissions))
        .route(
            "/api/permissions/{vhost}/{user}",
            get(show_permission)
                .put(put_permission)
                .delete(delete_permission),
        )
        .route("/api/topic-permissions", get(topic_permissions))
        .route(
            "/api/topic-permissions/{vhost}/{user}",
            get(show_topic_permission)
                .put(put_topic_permission)
                .delete(delete_topic_permission),
        )
        .route("/api/vhost-limits", get(vhost_limits))
        .route("/api/vhost-limits/{vhost}", get(vhost_limits_of))
        .route(
            "/api/vhost-limits/{vhost}/{name}",
            axum::routing::put(put_vhost_limit).delete(delete_vhost_limit),
        )
        .route("/api/user-limits", get(user_limits))
        .route("/api/user-limits/{user}", get(user_limits_of))
        .route(
            "/api/user-limits/{user}/{name}",
            axum::routing::put(put_user_limit).delete(delete_user_limit),
        )
}

fn access_error(e: AccessError) -> ApiError {
    match e {
        AccessError::NotFound(_) => ApiError::not_found(),
        AccessError::Invalid(reason) => ApiError::bad_request(reason),
    }
}

fn body(bytes: &Bytes) -> ApiResult<Map<String, Value>> {
    super::ops::body(bytes)
}

fn vhost_json(state: &AppState, info: &VhostInfo) -> Value {
    let name = info.name.as_str();
    let s = state.shared.state.lock();
    let (ready, unacked) = s
        .queue_infos(Some(name))
        .iter()
        .fold((0, 0), |(r, u), q| (r + q.ready, u + q.unacked));
    let mut v = json!({
        "name": name,
        "description": info.description,
        "tags": info.tags,
        "metadata": {"description": info.description, "tags": info.tags},
        "default_queue_type": info.default_queue_type.clone().unwrap_or_else(|| "undefined".into()),
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
    let visible = visible_vhosts(&st, &c);
    let items = st
        .shared
        .access
        .vhosts()
        .iter()
        .filter(|v| visible.contains(&v.name))
        .map(|v| vhost_json(&st, v))
        .collect();
    q.respond(items)
}

async fn show_vhost(
    State(st): State<AppState>,
    c: Caller,
    Path(vhost): Path<String>,
) -> ApiResult<Response> {
    super::resources::check_vhost(&st, &c, &vhost)?;
    let info = st
        .shared
        .access
        .vhost(&vhost)
        .ok_or_else(ApiError::not_found)?;
    Ok(Json(vhost_json(&st, &info)).into_response())
}

/// A vhost PUT's name and body as the vhost it asks for, or RabbitMQ's 400.
pub(crate) fn vhost_request(vhost: &str, bytes: &Bytes) -> ApiResult<VhostInfo> {
    if vhost.len() > 255 || vhost.is_empty() {
        return Err(ApiError::bad_request("vhost name must be 1 to 255 bytes"));
    }
    let m = body(bytes)?;
    let text = |k: &str| m.get(k).and_then(Value::as_str).map(str::to_string);
    Ok(VhostInfo {
        name: vhost.to_string(),
        description: text("description").unwrap_or_default(),
        tags: crate::core::access::json::tags_from(m.get("tags")),
        default_queue_type: text("default_queue_type"),
        ..Default::default()
    })
}

async fn put_vhost(
    State(st): State<AppState>,
    c: Caller,
    Path(vhost): Path<String>,
    bytes: Bytes,
) -> ApiResult<Response> {
    c.require_admin()?;
    let info = vhost_request(&vhost, &bytes)?;
    let created = st
        .shared
        .access
        .put_vhost(&st.shared.state, info)
        .map_err(access_error)?;
    if created {
        // RabbitMQ's management plugin grants the user who creates a vhost full permissions
        // in it (rabbit_mgmt_wm_vhost), so an administrator can use what it just made.
        st.shared
            .access
            .set_permission(&c.name, &vhost, ".*", ".*", ".*")
            .map_err(access_error)?;
    }
    Ok(if created {
        StatusCode::CREATED
    } else {
        StatusCode::NO_CONTENT
    }
    .into_response())
}

async fn delete_vhost(
    State(st): State<AppState>,
    c: Caller,
    Path(vhost): Path<String>,
) -> ApiResult<Response> {
    c.require_admin()?;
    st.shared
        .access
        .delete_vhost(&st.shared.state, &vhost)
        .await
        .map_err(access_error)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn users(
    State(st): State<AppState>,
    c: Caller,
    Query(q): Query<ListQuery>,
) -> ApiResult<Response> {
    c.require_admin()?;
    q.respond(st.shared.access.users().iter().map(user_json).collect())
}

async fn show_user(
    State(st): State<AppState>,
    c: Caller,
    Path(user): Path<String>,
) -> ApiResult<Response> {
    c.require_admin()?;
    let u = st
        .shared
        .access
        .user(&user)
        .ok_or_else(ApiError::not_found)?;
    Ok(Json(user_json(&u)).into_response())
}

/// A user PUT's name and body as the user it asks for (`exists`: whether the user exists
/// already), or RabbitMQ's 400.
pub(crate) fn user_request(user: String, exists: bool, bytes: &Bytes) -> ApiResult<UserSpec> {
    let m = body(bytes)?;
    let text = |k: &str| m.get(k).and_then(Value::as_str).map(str::to_string);
    // As RabbitMQ: password, or password_hash (+ hashing_algorithm); neither keeps an
    // existing user's password and creates a new user without one.
    let password = match (text("password"), text("password_hash")) {
        (Some(p), _) => PasswordSpec::Clear(p),
        (None, Some(h)) if h.is_empty() => PasswordSpec::None,
        (None, Some(h)) => PasswordSpec::Hash(h, text("hashing_algorithm")),
        (None, None) if exists => PasswordSpec::Keep,
        (None, None) => return Err(ApiError::bad_request("[{key_missing,password_hash}]")),
    };
    Ok(UserSpec {
        name: user,
        password,
        tags: crate::core::access::json::tags_from(m.get("tags")),
    })
}

async fn put_user(
    State(st): State<AppState>,
    c: Caller,
    Path(user): Path<String>,
    bytes: Bytes,
) -> ApiResult<Response> {
    c.require_admin()?;
    let exists = st.shared.access.user(&user).is_some();
    let spec = user_request(user, exists, &bytes)?;
    let created = st.shared.access.put_user(spec).map_err(access_error)?;
    Ok(if created {
        StatusCode::CREATED
    } else {
        StatusCode::NO_CONTENT
    }
    .into_response())
}

async fn delete_user(
    State(st): State<AppState>,
    c: Caller,
    Path(user): Path<String>,
) -> ApiResult<Response> {
    c.require_admin()?;
    st.shared.access.delete_user(&user).map_err(access_error)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn permission_list(st: &AppState) -> Vec<Value> {
    st.shared
        .access
        .permissions()
        .into_iter()
        .map(|(user, vhost, p)| {
            json!({"user": user, "vhost": vhost, "configure": p.configure.source(),
                   "write": p.write.source(), "read": p.read.source()})
        })
        .collect()
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
    st.shared
        .access
        .user(&user)
        .ok_or_else(ApiError::not_found)?;
    q.respond(
        permission_list(&st)
            .into_iter()
            .filter(|p| p["user"] == user.as_str())
            .collect(),
    )
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
        .map(|p| Json(p).into_response())
        .ok_or_else(ApiError::not_found)
}

fn pattern<'a>(m: &'a Map<String, Value>, key: &str) -> ApiResult<&'a str> {
    m.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::bad_request(format!("[{{key_missing,{key}}}]")))
}

/// A (topic) permission PUT's body as its three patterns under `keys`, or RabbitMQ's 400.
pub(crate) fn patterns(bytes: &Bytes, keys: [&str; 3]) -> ApiResult<[String; 3]> {
    let m = body(bytes)?;
    let [a, b, c] = keys;
    Ok([
        pattern(&m, a)?.to_string(),
        pattern(&m, b)?.to_string(),
        pattern(&m, c)?.to_string(),
    ])
}

async fn put_permission(
    State(st): State<AppState>,
    c: Caller,
    Path((vhost, user)): Path<(String, String)>,
    bytes: Bytes,
) -> ApiResult<Response> {
    c.require_admin()?;
    let [cf, w, r] = patterns(&bytes, ["configure", "write", "read"])?;
    let existed = permission_list(&st)
        .iter()
        .any(|p| p["vhost"] == vhost.as_str() && p["user"] == user.as_str());
    st.shared
        .access
        .set_permission(&user, &vhost, &cf, &w, &r)
        .map_err(|e| match e {
            // RabbitMQ: a missing user or vhost in a permission PUT is a 400.
            AccessError::NotFound(reason) => ApiError::bad_request(reason),
            other => access_error(other),
        })?;
    Ok(if existed {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::CREATED
    }
    .into_response())
}

async fn delete_permission(
    State(st): State<AppState>,
    c: Caller,
    Path((vhost, user)): Path<(String, String)>,
) -> ApiResult<Response> {
    c.require_admin()?;
    st.shared
        .access
        .clear_permission(&user, &vhost)
        .map_err(access_error)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn topic_list(st: &AppState) -> Vec<Value> {
    st.shared
        .access
        .topic_permissions()
        .into_iter()
        .map(|(user, vhost, exchange, p)| {
            json!({"user": user, "vhost": vhost, "exchange": exchange,
                   "write": p.write.source(), "read": p.read.source()})
        })
        .collect()
}

async fn topic_permissions(
    State(st): State<AppState>,
    c: Caller,
    Query(q): Query<ListQuery>,
) -> ApiResult<Response> {
    c.require_admin()?;
    q.respond(topic_list(&st))
}

async fn show_topic_permission(
    State(st): State<AppState>,
    c: Caller,
    Path((vhost, user)): Path<(String, String)>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Response> {
    c.require_admin()?;
    let items: Vec<Value> = topic_list(&st)
        .into_iter()
        .filter(|p| p["vhost"] == vhost.as_str() && p["user"] == user.as_str())
        .collect();
    if items.is_empty() {
        return Err(ApiError::not_found());
    }
    q.respond(items)
}

async fn put_topic_permission(
    State(st): State<AppState>,
    c: Caller,
    Path((vhost, user)): Path<(String, String)>,
    bytes: Bytes,
) -> ApiResult<Response> {
    c.require_admin()?;
    let [x, w, r] = patterns(&bytes, ["exchange", "write", "read"])?;
    st.shared
        .access
        .set_topic_permission(&user, &vhost, &x, &w, &r)
        .map_err(|e| match e {
            AccessError::NotFound(reason) => ApiError::bad_request(reason),
            other => access_error(other),
        })?;
    Ok(StatusCode::CREATED.into_response())
}

async fn delete_topic_permission(
    State(st): State<AppState>,
    c: Caller,
    Path((vhost, user)): Path<(String, String)>,
) -> ApiResult<Response> {
    c.require_admin()?;
    st.shared
        .access
        .clear_topic_permission(&user, &vhost, None)
        .map_err(access_error)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn vhost_limit_list(st: &AppState) -> Vec<Value> {
    st.shared
        .access
        .vhosts()
        .into_iter()
        .filter(|v| v.limits != VhostLimits::default())
        .map(|v| json!({"vhost": v.name, "value": vhost_limits_json(&v.limits)}))
        .collect()
}

async fn vhost_limits(State(st): State<AppState>, c: Caller) -> ApiResult<Response> {
    c.require_monitor()?;
    Ok(Json(vhost_limit_list(&st)).into_response())
}

async fn vhost_limits_of(
    State(st): State<AppState>,
    c: Caller,
    Path(vhost): Path<String>,
) -> ApiResult<Response> {
    super::resources::check_vhost(&st, &c, &vhost)?;
    let items: Vec<Value> = vhost_limit_list(&st)
        .into_iter()
        .filter(|l| l["vhost"] == vhost.as_str())
        .collect();
    Ok(Json(items).into_response())
}

/// A limit's value from `{"value": n}`; negative means no limit, as RabbitMQ.
pub(crate) fn limit_value(bytes: &Bytes) -> ApiResult<Option<u64>> {
    let m = body(bytes)?;
    match m.get("value").and_then(Value::as_i64) {
        Some(n) if n < 0 => Ok(None),
        Some(n) => Ok(Some(n as u64)),
        None => Err(ApiError::bad_request("[{key_missing,value}]")),
    }
}

fn set_vhost_limit(st: &AppState, vhost: &str, name: &str, value: Option<u64>) -> ApiResult<()> {
    let mut limits = st
        .shared
        .access
        .vhost(vhost)
        .ok_or_else(ApiError::not_found)?
        .limits;
    match name {
        "max-connections" => limits.max_connections = value,
        "max-queues" => limits.max_queues = value,
        other => {
            return Err(ApiError::bad_request(format!(
                "Validation failed\n\nUnrecognised terms [{{<<\"{other}\">>,...}}]"
            )))
        }
    }
    st.shared
        .access
        .set_vhost_limits(vhost, limits)
        .map_err(access_error)
}

async fn put_vhost_limit(
    State(st): State<AppState>,
    c: Caller,
    Path((vhost, name)): Path<(String, String)>,
    bytes: Bytes,
) -> ApiResult<Response> {
    c.require_admin()?;
    set_vhost_limit(&st, &vhost, &name, limit_value(&bytes)?)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn delete_vhost_limit(
    State(st): State<AppState>,
    c: Caller,
    Path((vhost, name)): Path<(String, String)>,
) -> ApiResult<Response> {
    c.require_admin()?;
    set_vhost_limit(&st, &vhost, &name, None)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn user_limit_list(st: &AppState) -> Vec<Value> {
    st.shared
        .access
        .users()
        .into_iter()
        .filter(|u| u.limits != UserLimits::default())
        .map(|u| json!({"user": u.name, "value": user_limits_json(&u.limits)}))
        .collect()
}

async fn user_limits(State(st): State<AppState>, c: Caller) -> ApiResult<Response> {
    c.require_admin()?;
    Ok(Json(user_limit_list(&st)).into_response())
}

async fn user_limits_of(
    State(st): State<AppState>,
    c: Caller,
    Path(user): Path<String>,
) -> ApiResult<Response> {
    c.require_admin()?;
    let items: Vec<Value> = user_limit_list(&st)
        .into_iter()
        .filter(|l| l["user"] == user.as_str())
        .collect();
    Ok(Json(items).into_response())
}

fn set_user_limit(st: &AppState, user: &str, name: &str, value: Option<u64>) -> ApiResult<()> {
    let mut limits = st
        .shared
        .access
        .user(user)
        .ok_or_else(ApiError::not_found)?
        .limits;
    match name {
        "max-connections" => limits.max_connections = value,
        "max-channels" => limits.max_channels = value,
        other => {
            return Err(ApiError::bad_request(format!(
                "Validation failed\n\nUnrecognised terms [{{<<\"{other}\">>,...}}]"
            )))
        }
    }
    st.shared
        .access
        .set_user_limits(user, limits)
        .map_err(access_error)
}

async fn put_user_limit(
    State(st): State<AppState>,
    c: Caller,
    Path((user, name)): Path<(String, String)>,
    bytes: Bytes,
) -> ApiResult<Response> {
    c.require_admin()?;
    set_user_limit(&st, &user, &name, limit_value(&bytes)?)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn delete_user_limit(
    State(st): State<AppState>,
    c: Caller,
    Path((user, name)): Path<(String, String)>,
) -> ApiResult<Response> {
    c.require_admin()?;
    set_user_limit(&st, &user, &name, None)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
