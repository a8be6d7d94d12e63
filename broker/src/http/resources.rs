//! The list and show endpoints: queues, exchanges, bindings, connections, channels,
//! consumers, each for all vhosts, one vhost, or one object, filtered by what the caller may
//! see.

use super::auth::Caller;
use super::error::{ApiError, ApiResult};
use super::overview::visible_vhosts;
use super::query::ListQuery;
use super::views;
use super::AppState;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use serde_json::Value;

/// The routes of this module (mutations on the same paths are added by `ops`).
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/queues", get(queues))
        .route("/api/queues/{vhost}", get(queues_in))
        .route("/api/exchanges", get(exchanges))
        .route("/api/exchanges/{vhost}", get(exchanges_in))
        .route("/api/bindings", get(bindings))
        .route("/api/bindings/{vhost}", get(bindings_in))
        .route(
            "/api/exchanges/{vhost}/{name}/bindings/source",
            get(bindings_source),
        )
        .route(
            "/api/exchanges/{vhost}/{name}/bindings/destination",
            get(bindings_destination),
        )
        .route("/api/queues/{vhost}/{name}/bindings", get(queue_bindings))
        .route("/api/connections", get(connections))
        .route("/api/vhosts/{vhost}/connections", get(connections_in))
        .route("/api/channels", get(channels))
        .route("/api/vhosts/{vhost}/channels", get(channels_in))
        .route("/api/connections/{name}/channels", get(connection_channels))
        .route("/api/consumers", get(consumers))
        .route("/api/consumers/{vhost}", get(consumers_in))
}

/// 404 unless the vhost exists; 401 when the caller may not see it (as RabbitMQ).
pub(crate) fn check_vhost(state: &AppState, caller: &Caller, vhost: &str) -> ApiResult<()> {
    if visible_vhosts(state, caller).iter().any(|v| v == vhost) {
        Ok(())
    } else if state.shared.access.vhost(vhost).is_some() {
        Err(ApiError::not_authorized(
            "User not authorised to access virtual host",
        ))
    } else {
        Err(ApiError::not_found())
    }
}

/// The queues as JSON, of one vhost or all visible ones.
pub(crate) fn queue_list(state: &AppState, caller: &Caller, vhost: Option<&str>) -> Vec<Value> {
    let visible = visible_vhosts(state, caller);
    let s = state.shared.state.lock();
    s.queue_infos(vhost)
        .iter()
        .filter(|q| visible.contains(&q.vhost))
        .map(|q| views::queue(q, s.stats(), &state.node.name))
        .collect()
}

/// The exchanges as JSON, of one vhost or all visible ones.
pub(crate) fn exchange_list(state: &AppState, caller: &Caller, vhost: Option<&str>) -> Vec<Value> {
    let visible = visible_vhosts(state, caller);
    let s = state.shared.state.lock();
    s.exchange_infos(vhost)
        .iter()
        .filter(|x| visible.contains(&x.vhost))
        .map(|x| views::exchange(x, s.stats()))
        .collect()
}

fn binding_list(
    state: &AppState,
    caller: &Caller,
    vhost: Option<&str>,
    keep: impl Fn(&crate::core::stats::BindingInfo) -> bool,
) -> Vec<Value> {
    let visible = visible_vhosts(state, caller);
    let s = state.shared.state.lock();
    s.binding_infos(vhost)
        .iter()
        .filter(|b| visible.contains(&b.vhost) && keep(b))
        .map(views::binding)
        .collect()
}

async fn queues(
    State(st): State<AppState>,
    c: Caller,
    Query(q): Query<ListQuery>,
) -> ApiResult<Response> {
    q.respond(queue_list(&st, &c, None))
}

async fn queues_in(
    State(st): State<AppState>,
    c: Caller,
    Path(vhost): Path<String>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Response> {
    check_vhost(&st, &c, &vhost)?;
    q.respond(queue_list(&st, &c, Some(&vhost)))
}

async fn exchanges(
    State(st): State<AppState>,
    c: Caller,
    Query(q): Query<ListQuery>,
) -> ApiResult<Response> {
    q.respond(exchange_list(&st, &c, None))
}

async fn exchanges_in(
    State(st): State<AppState>,
    c: Caller,
    Path(vhost): Path<String>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Response> {
    check_vhost(&st, &c, &vhost)?;
    q.respond(exchange_list(&st, &c, Some(&vhost)))
}

async fn bindings(
    State(st): State<AppState>,
    c: Caller,
    Query(q): Query<ListQuery>,
) -> ApiResult<Response> {
    q.respond(binding_list(&st, &c, None, |_| true))
}

async fn bindings_in(
    State(st): State<AppState>,
    c: Caller,
    Path(vhost): Path<String>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Response> {
    check_vhost(&st, &c, &vhost)?;
    q.respond(binding_list(&st, &c, Some(&vhost), |_| true))
}

fn exchange_exists(st: &AppState, vhost: &str, name: &str) -> ApiResult<()> {
    if st.shared.state.lock().has_exchange(vhost, name) {
        Ok(())
    } else {
        Err(ApiError::not_found())
    }
}

async fn bindings_source(
    State(st): State<AppState>,
    c: Caller,
    Path((vhost, name)): Path<(String, String)>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Response> {
    check_vhost(&st, &c, &vhost)?;
    let name = super::ops::exchange_name(&name);
    exchange_exists(&st, &vhost, &name)?;
    q.respond(binding_list(&st, &c, Some(&vhost), |b| b.source == name))
}

async fn bindings_destination(
    State(st): State<AppState>,
    c: Caller,
    Path((vhost, name)): Path<(String, String)>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Response> {
    check_vhost(&st, &c, &vhost)?;
    let name = super::ops::exchange_name(&name);
    exchange_exists(&st, &vhost, &name)?;
    q.respond(binding_list(&st, &c, Some(&vhost), |b| {
        b.destination_type == "exchange" && b.destination == name
    }))
}

async fn queue_bindings(
    State(st): State<AppState>,
    c: Caller,
    Path((vhost, name)): Path<(String, String)>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Response> {
    check_vhost(&st, &c, &vhost)?;
    if !queue_list(&st, &c, Some(&vhost))
        .iter()
        .any(|v| v["name"] == name.as_str())
    {
        return Err(ApiError::not_found());
    }
    q.respond(binding_list(&st, &c, Some(&vhost), |b| {
        b.destination_type == "queue" && b.destination == name
    }))
}

/// Connections as JSON with their ids (of one vhost or all visible ones).
pub(crate) fn connection_list(
    st: &AppState,
    c: &Caller,
    vhost: Option<&str>,
) -> Vec<(crate::core::message::ConnId, Value)> {
    let visible = visible_vhosts(st, c);
    let s = st.shared.state.lock();
    s.connection_infos()
        .into_iter()
        .filter(|(_, i, _)| visible.contains(&i.vhost) && vhost.is_none_or(|v| v == i.vhost))
        // Management users see only their own connections, as in RabbitMQ.
        .filter(|(_, i, _)| c.sees_all() || i.user == c.name)
        .map(|(id, i, n)| (id, views::connection(&i, n, &st.node.name)))
        .collect()
}

async fn connections(
    State(st): State<AppState>,
    c: Caller,
    Query(q): Query<ListQuery>,
) -> ApiResult<Response> {
    q.respond(
        connection_list(&st, &c, None)
            .into_iter()
            .map(|x| x.1)
            .collect(),
    )
}

async fn connections_in(
    State(st): State<AppState>,
    c: Caller,
    Path(vhost): Path<String>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Response> {
    check_vhost(&st, &c, &vhost)?;
    q.respond(
        connection_list(&st, &c, Some(&vhost))
            .into_iter()
            .map(|x| x.1)
            .collect(),
    )
}

fn channel_list(
    st: &AppState,
    c: &Caller,
    keep: impl Fn(&crate::core::stats::ChannelInfo, &str) -> bool,
) -> Vec<Value> {
    let visible = visible_vhosts(st, c);
    let s = st.shared.state.lock();
    s.channel_infos()
        .iter()
        .filter(|ch| visible.contains(&ch.vhost))
        .filter_map(|ch| {
            let conn = s.connection_info(ch.key.conn);
            let conn_name = conn.as_ref().map(|i| i.name()).unwrap_or_default();
            if !c.sees_all() && conn.as_ref().is_none_or(|i| i.user != c.name) {
                return None;
            }
            keep(ch, &conn_name)
                .then(|| views::channel(ch, conn.as_deref(), s.stats(), &st.node.name))
        })
        .collect()
}

async fn channels(
    State(st): State<AppState>,
    c: Caller,
    Query(q): Query<ListQuery>,
) -> ApiResult<Response> {
    q.respond(channel_list(&st, &c, |_, _| true))
}

async fn channels_in(
    State(st): State<AppState>,
    c: Caller,
    Path(vhost): Path<String>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Response> {
    check_vhost(&st, &c, &vhost)?;
    q.respond(channel_list(&st, &c, |ch, _| ch.vhost == vhost))
}

async fn connection_channels(
    State(st): State<AppState>,
    c: Caller,
    Path(name): Path<String>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Response> {
    if !connection_list(&st, &c, None)
        .iter()
        .any(|(_, v)| v["name"] == name.as_str())
    {
        return Err(ApiError::not_found());
    }
    q.respond(channel_list(&st, &c, |_, conn| conn == name))
}

fn consumer_list(st: &AppState, c: &Caller, vhost: Option<&str>) -> Vec<Value> {
    let visible = visible_vhosts(st, c);
    let s = st.shared.state.lock();
    s.consumer_infos()
        .iter()
        .filter(|x| visible.contains(&x.vhost) && vhost.is_none_or(|v| v == x.vhost))
        .map(|x| views::consumer(x, s.connection_info(x.channel.conn).as_deref()))
        .collect()
}

async fn consumers(
    State(st): State<AppState>,
    c: Caller,
    Query(q): Query<ListQuery>,
) -> ApiResult<Response> {
    q.respond(consumer_list(&st, &c, None))
}

async fn consumers_in(
    State(st): State<AppState>,
    c: Caller,
    Path(vhost): Path<String>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Response> {
    check_vhost(&st, &c, &vhost)?;
    q.respond(consumer_list(&st, &c, Some(&vhost)))
}
