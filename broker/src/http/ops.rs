//! The endpoints that change things or act on messages: declare and delete queues and
//! exchanges, purge, publish, get, create and delete bindings, close connections, and the
//! aliveness test. Everything goes through the core's operations with the API's own
//! connection id, as RabbitMQ's management plugin goes through an internal channel.

use super::auth::Caller;
use super::error::{ApiError, ApiResult};
use super::query::ListQuery;
use super::resources::{check_vhost, connection_list, exchange_list, queue_list};
use super::views;
use super::AppState;
use crate::core::access::{Perm, Resource};
use crate::core::exchange::Destination;
use crate::core::message::{ChannelKey, ConnId, Message};
use crate::core::sink::{Event, Sink};
use crate::core::topology::{ExchangeDeclare, QueueDeclare};
use amq_protocol::protocol::basic::AMQPProperties;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use base64::Engine;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The connection id the API's declarations use: never a client's (those count up from 1).
const API_CONN: ConnId = 0;

/// The routes of this module.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/api/queues/{vhost}/{name}",
            get(show_queue).put(put_queue).delete(delete_queue),
        )
        .route("/api/queues/{vhost}/{name}/contents", delete(purge))
        .route("/api/queues/{vhost}/{name}/get", post(get_messages))
        .route(
            "/api/exchanges/{vhost}/{name}",
            get(show_exchange).put(put_exchange).delete(delete_exchange),
        )
        .route("/api/exchanges/{vhost}/{name}/publish", post(publish))
        .route(
            "/api/bindings/{vhost}/e/{source}/{kind}/{dest}",
            get(list_between).post(create_binding),
        )
        .route(
            "/api/bindings/{vhost}/e/{source}/{kind}/{dest}/{props}",
            get(show_binding).delete(delete_binding),
        )
        .route(
            "/api/connections/{name}",
            get(show_connection).delete(close_connection),
        )
        .route("/api/aliveness-test/{vhost}", get(aliveness))
}

/// "amq.default" in a path names the default exchange "".
pub(crate) fn exchange_name(path: &str) -> String {
    if path == "amq.default" {
        String::new()
    } else {
        path.to_string()
    }
}

/// Parses a JSON body (an empty body is `{}`), with RabbitMQ's 400 for anything else.
pub(crate) fn body(bytes: &Bytes) -> ApiResult<serde_json::Map<String, Value>> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(serde_json::Map::new());
    }
    // RabbitMQ says "not_json" for anything but a JSON object.
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(ApiError::bad_request("not_json")),
    }
}

fn flag(m: &serde_json::Map<String, Value>, key: &str, default: bool) -> ApiResult<bool> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) if s == "true" || s == "false" => Ok(s == "true"),
        // RabbitMQ's reason is the Erlang term {not_boolean, Value}, a JSON list.
        Some(v) => Err(ApiError {
            reason_json: Some(json!(["not_boolean", v])),
            ..ApiError::bad_request("not_boolean")
        }),
    }
}

fn text<'a>(m: &'a serde_json::Map<String, Value>, key: &str) -> ApiResult<Option<&'a str>> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(v) => Err(ApiError::bad_request(format!(
            "{key}: expected a string, got {v}"
        ))),
    }
}

fn arguments(m: &serde_json::Map<String, Value>) -> ApiResult<amq_protocol::types::FieldTable> {
    super::json::to_table(m.get("arguments").unwrap_or(&Value::Null))
        .ok_or_else(|| ApiError::bad_request("arguments: expected an object"))
}

fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

/// RabbitMQ refuses names longer than 255 bytes (AMQP short strings), in its words.
fn check_name(kind: &str, name: &str) -> ApiResult<()> {
    if name.len() > 255 {
        return Err(ApiError::bad_request(format!(
            "{kind} should be less than 255 bytes, actually was {}\n",
            name.len()
        )));
    }
    Ok(())
}

/// How RabbitMQ's management plugin answers an operation the caller's permission patterns
/// refuse (its internal channel's 403, turned into HTTP differently per endpoint).
#[derive(Clone, Copy)]
enum Refused {
    /// 401 "Access refused." (declare, delete, purge, bind, unbind).
    Plain,
    /// 401 with the channel's text (get).
    Amqp,
    /// 400 with the channel's close text, code first (publish).
    Closed,
}

/// Checks `perm` on a queue or exchange for the caller, with the same patterns as AMQP.
fn permit(
    st: &AppState,
    c: &Caller,
    vhost: &str,
    kind: Resource,
    name: &str,
    perm: Perm,
    refused: Refused,
) -> ApiResult<()> {
    let checked = st
        .shared
        .access
        .read()
        .check_resource(&c.name, vhost, kind, name, perm);
    checked.map_err(|e| match refused {
        Refused::Plain => ApiError::not_authorized("Access refused."),
        Refused::Amqp => ApiError::from_amqp(&e),
        Refused::Closed => ApiError::channel_closed(&e),
    })
}

/// Configure permission, as declare and delete need it (401 "Access refused." if not).
fn may_configure(
    st: &AppState,
    c: &Caller,
    vhost: &str,
    kind: Resource,
    name: &str,
) -> ApiResult<()> {
    permit(st, c, vhost, kind, name, Perm::Configure, Refused::Plain)
}

/// Read permission on a queue, as get and purge need it.
fn may_read_queue(
    st: &AppState,
    c: &Caller,
    vhost: &str,
    name: &str,
    refused: Refused,
) -> ApiResult<()> {
    permit(st, c, vhost, Resource::Queue, name, Perm::Read, refused)
}

/// A binding's permissions as `rabbit_channel:binding_action` checks them: write on the
/// destination, read on the source exchange.
fn permit_binding(
    st: &AppState,
    c: &Caller,
    vhost: &str,
    source: &str,
    d: &Destination,
) -> ApiResult<()> {
    let (kind, name) = match d {
        Destination::Queue(q) => (Resource::Queue, q.as_str()),
        Destination::Exchange(x) => (Resource::Exchange, x.as_str()),
    };
    permit(st, c, vhost, kind, name, Perm::Write, Refused::Plain)?;
    permit(
        st,
        c,
        vhost,
        Resource::Exchange,
        source,
        Perm::Read,
        Refused::Plain,
    )
}

/// A declaration into a missing vhost: RabbitMQ's 404 `vhost_not_found`.
fn check_vhost_for_put(st: &AppState, c: &Caller, vhost: &str) -> ApiResult<()> {
    check_vhost(st, c, vhost).map_err(|e| match e.status {
        StatusCode::NOT_FOUND => ApiError {
            error: "not_found",
            ..ApiError::not_found_reason("vhost_not_found")
        },
        _ => e,
    })
}

async fn show_queue(
    State(st): State<AppState>,
    c: Caller,
    Path((vhost, name)): Path<(String, String)>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Response> {
    check_vhost(&st, &c, &vhost)?;
    let found = queue_list(&st, &c, Some(&vhost))
        .into_iter()
        .find(|v| v["name"] == name.as_str());
    found.map(|v| q.one(v)).ok_or_else(ApiError::not_found)
}

/// A queue PUT's name and body as the declaration it asks for, or RabbitMQ's 400.
pub(crate) fn queue_request(name: &str, bytes: &Bytes) -> ApiResult<QueueDeclare> {
    check_name("queue", name)?;
    let m = body(bytes)?;
    Ok(QueueDeclare {
        name: name.to_string(),
        passive: false,
        durable: flag(&m, "durable", false)?,
        exclusive: false,
        auto_delete: flag(&m, "auto_delete", false)?,
        args: arguments(&m)?,
    })
}

async fn put_queue(
    State(st): State<AppState>,
    c: Caller,
    Path((vhost, name)): Path<(String, String)>,
    bytes: Bytes,
) -> ApiResult<Response> {
    check_vhost_for_put(&st, &c, &vhost)?;
    let d = queue_request(&name, &bytes)?;
    may_configure(&st, &c, &vhost, Resource::Queue, &name)?;
    let mut s = st.shared.state.lock();
    let existed = s.has_queue(&vhost, &name);
    s.queue_declare(&vhost, API_CONN, d)
        .map_err(|e| ApiError::from_amqp(&e))?;
    Ok(if existed {
        no_content()
    } else {
        StatusCode::CREATED.into_response()
    })
}

async fn delete_queue(
    State(st): State<AppState>,
    c: Caller,
    Path((vhost, name)): Path<(String, String)>,
    Query(raw): Query<super::query::RawQuery>,
) -> ApiResult<Response> {
    check_vhost(&st, &c, &vhost)?;
    if !st.shared.state.lock().has_queue(&vhost, &name) {
        return Err(ApiError::not_found());
    }
    may_configure(&st, &c, &vhost, Resource::Queue, &name)?;
    let mut s = st.shared.state.lock();
    let if_unused = raw.get("if-unused").is_some_and(|v| v == "true");
    let if_empty = raw.get("if-empty").is_some_and(|v| v == "true");
    s.queue_delete(&vhost, API_CONN, &name, if_unused, if_empty)
        .map_err(|e| ApiError::from_amqp(&e))?;
    Ok(no_content())
}

async fn purge(
    State(st): State<AppState>,
    c: Caller,
    Path((vhost, name)): Path<(String, String)>,
) -> ApiResult<Response> {
    check_vhost(&st, &c, &vhost)?;
    may_read_queue(&st, &c, &vhost, &name, Refused::Plain)?;
    st.shared
        .state
        .lock()
        .queue_purge(&vhost, API_CONN, &name)
        .map_err(|e| ApiError::from_amqp(&e))?;
    Ok(no_content())
}

async fn show_exchange(
    State(st): State<AppState>,
    c: Caller,
    Path((vhost, name)): Path<(String, String)>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Response> {
    check_vhost(&st, &c, &vhost)?;
    let name = exchange_name(&name);
    let found = exchange_list(&st, &c, Some(&vhost))
        .into_iter()
        .find(|v| v["name"] == name.as_str());
    found.map(|v| q.one(v)).ok_or_else(ApiError::not_found)
}

/// An exchange PUT's name and body as the declaration it asks for, or RabbitMQ's 400.
pub(crate) fn exchange_request(name: &str, bytes: &Bytes) -> ApiResult<ExchangeDeclare> {
    check_name("exchange", name)?;
    let m = body(bytes)?;
    let kind = text(&m, "type")?.unwrap_or("direct");
    if crate::core::exchange::ExchangeKind::parse(kind).is_none() {
        // RabbitMQ says "invalid" only for a type name that happens to be an
        // existing Erlang atom; a name it has never seen (the usual case) is "unknown".
        return Err(ApiError::bad_request(format!(
            "unknown exchange type '{kind}'"
        )));
    }
    Ok(ExchangeDeclare {
        name: name.to_string(),
        kind: kind.to_string(),
        passive: false,
        durable: flag(&m, "durable", false)?,
        auto_delete: flag(&m, "auto_delete", false)?,
        internal: flag(&m, "internal", false)?,
        args: arguments(&m)?,
    })
}

async fn put_exchange(
    State(st): State<AppState>,
    c: Caller,
    Path((vhost, name)): Path<(String, String)>,
    bytes: Bytes,
) -> ApiResult<Response> {
    check_vhost_for_put(&st, &c, &vhost)?;
    let d = exchange_request(&name, &bytes)?;
    may_configure(&st, &c, &vhost, Resource::Exchange, &name)?;
    let mut s = st.shared.state.lock();
    let existed = s.has_exchange(&vhost, &name);
    s.exchange_declare(&vhost, d)
        .map_err(|e| ApiError::from_amqp(&e))?;
    Ok(if existed {
        no_content()
    } else {
        StatusCode::CREATED.into_response()
    })
}

async fn delete_exchange(
    State(st): State<AppState>,
    c: Caller,
    Path((vhost, name)): Path<(String, String)>,
    Query(raw): Query<super::query::RawQuery>,
) -> ApiResult<Response> {
    check_vhost(&st, &c, &vhost)?;
    let name = exchange_name(&name);
    if !st.shared.state.lock().has_exchange(&vhost, &name) {
        return Err(ApiError::not_found());
    }
    may_configure(&st, &c, &vhost, Resource::Exchange, &name)?;
    let mut s = st.shared.state.lock();
    let if_unused = raw.get("if-unused").is_some_and(|v| v == "true");
    s.exchange_delete(&vhost, &name, if_unused)
        .map_err(|e| ApiError::from_amqp(&e))?;
    Ok(no_content())
}

fn destination(kind: &str, name: String) -> ApiResult<Destination> {
    match kind {
        "q" => Ok(Destination::Queue(name)),
        "e" => Ok(Destination::Exchange(name)),
        _ => Err(ApiError::not_found()),
    }
}

fn between(
    st: &AppState,
    c: &Caller,
    vhost: &str,
    source: &str,
    kind: &str,
    dest: &str,
) -> ApiResult<Vec<crate::core::stats::BindingInfo>> {
    check_vhost(st, c, vhost)?;
    let s = st.shared.state.lock();
    let dtype = if kind == "q" { "queue" } else { "exchange" };
    let src_ok = s.has_exchange(vhost, source);
    let dest_ok = match kind {
        "q" => s.has_queue(vhost, dest),
        _ => s.has_exchange(vhost, dest),
    };
    if !src_ok || !dest_ok {
        return Err(ApiError::not_found());
    }
    Ok(s.binding_infos(Some(vhost))
        .into_iter()
        .filter(|b| b.source == source && b.destination == dest && b.destination_type == dtype)
        .collect())
}

async fn list_between(
    State(st): State<AppState>,
    c: Caller,
    Path((vhost, source, kind, dest)): Path<(String, String, String, String)>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Response> {
    destination(&kind, dest.clone())?;
    let found = between(&st, &c, &vhost, &exchange_name(&source), &kind, &dest)?;
    q.respond(found.iter().map(views::binding).collect())
}

/// A binding POST's body as its routing key and arguments, or RabbitMQ's 400.
pub(crate) fn binding_request(
    bytes: &Bytes,
) -> ApiResult<(String, amq_protocol::types::FieldTable)> {
    let m = body(bytes)?;
    let key = text(&m, "routing_key")?.unwrap_or_default().to_string();
    Ok((key, arguments(&m)?))
}

async fn create_binding(
    State(st): State<AppState>,
    c: Caller,
    Path((vhost, source, kind, dest)): Path<(String, String, String, String)>,
    bytes: Bytes,
) -> ApiResult<Response> {
    let d = destination(&kind, dest.clone())?;
    let source = exchange_name(&source);
    between(&st, &c, &vhost, &source, &kind, &dest)?;
    let (key, args) = binding_request(&bytes)?;
    permit_binding(&st, &c, &vhost, &source, &d)?;
    st.shared
        .state
        .lock()
        .bind(&vhost, API_CONN, &source, d, &key, args.clone())
        .map_err(|e| ApiError::from_amqp(&e))?;
    let info = crate::core::stats::BindingInfo {
        vhost: vhost.clone(),
        source,
        destination: dest,
        destination_type: "queue",
        routing_key: key,
        arguments: args,
    };
    // RabbitMQ answers 201 with the new binding's path (relative to /api) in Location.
    let location = views::properties_key(&info);
    Ok((StatusCode::CREATED, [(header::LOCATION, location)]).into_response())
}

async fn show_binding(
    State(st): State<AppState>,
    c: Caller,
    Path((vhost, source, kind, dest, props)): Path<(String, String, String, String, String)>,
) -> ApiResult<Response> {
    destination(&kind, dest.clone())?;
    let found = between(&st, &c, &vhost, &exchange_name(&source), &kind, &dest)?;
    found
        .iter()
        .find(|b| views::properties_key(b) == props)
        .map(|b| Json(views::binding(b)).into_response())
        .ok_or_else(ApiError::not_found)
}

async fn delete_binding(
    State(st): State<AppState>,
    c: Caller,
    Path((vhost, source, kind, dest, props)): Path<(String, String, String, String, String)>,
) -> ApiResult<Response> {
    let d = destination(&kind, dest.clone())?;
    let source = exchange_name(&source);
    let found = between(&st, &c, &vhost, &source, &kind, &dest)?;
    let Some(b) = found.iter().find(|b| views::properties_key(b) == props) else {
        return Err(ApiError::not_found());
    };
    permit_binding(&st, &c, &vhost, &source, &d)?;
    st.shared
        .state
        .lock()
        .unbind(&vhost, API_CONN, &source, d, &b.routing_key, &b.arguments)
        .map_err(|e| ApiError::from_amqp(&e))?;
    Ok(no_content())
}

async fn show_connection(
    State(st): State<AppState>,
    c: Caller,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    connection_list(&st, &c, None)
        .into_iter()
        .find(|(_, v)| v["name"] == name.as_str())
        .map(|(_, v)| Json(v).into_response())
        .ok_or_else(ApiError::not_found)
}

async fn close_connection(
    State(st): State<AppState>,
    c: Caller,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let Some((id, _)) = connection_list(&st, &c, None)
        .into_iter()
        .find(|(_, v)| v["name"] == name.as_str())
    else {
        return Err(ApiError::not_found());
    };
    let reason = headers
        .get("x-reason")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("Closed via management plugin")
        .to_string();
    let info = st.shared.state.lock().connection_info(id);
    if let Some(info) = info {
        (info.close)(&reason);
    }
    Ok(no_content())
}

// ----- publish and get -------------------------------------------------------------------

fn properties(p: Option<&Value>) -> ApiResult<AMQPProperties> {
    let Some(p) = p.filter(|p| !p.is_null()) else {
        return Ok(AMQPProperties::default());
    };
    let Some(p) = p.as_object() else {
        return Err(ApiError::bad_request("properties: expected an object"));
    };
    let mut props = AMQPProperties::default();
    for (k, v) in p {
        let s = || {
            v.as_str()
                .map(|s| s.into())
                .ok_or_else(|| ApiError::bad_request(format!("{k}: expected a string")))
        };
        let n = || {
            v.as_u64()
                .ok_or_else(|| ApiError::bad_request(format!("{k}: expected an integer")))
        };
        props = match k.as_str() {
            "content_type" => props.with_content_type(s()?),
            "content_encoding" => props.with_content_encoding(s()?),
            "headers" => props.with_headers(
                super::json::to_table(v)
                    .ok_or_else(|| ApiError::bad_request("headers: expected an object"))?,
            ),
            "delivery_mode" => props.with_delivery_mode(n()? as u8),
            "priority" => props.with_priority(n()? as u8),
            "correlation_id" => props.with_correlation_id(s()?),
            "reply_to" => props.with_reply_to(s()?),
            "expiration" => props.with_expiration(s()?),
            "message_id" => props.with_message_id(s()?),
            "timestamp" => props.with_timestamp(n()?),
            "type" => props.with_type(s()?),
            "user_id" => props.with_user_id(s()?),
            "app_id" => props.with_app_id(s()?),
            "cluster_id" => props.with_cluster_id(s()?),
            _ => return Err(ApiError::bad_request(format!("unknown property {k}"))),
        };
    }
    Ok(props)
}

fn properties_json(p: &AMQPProperties) -> Value {
    let mut m = serde_json::Map::new();
    let mut put = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            m.insert(k.into(), v);
        }
    };
    put(
        "content_type",
        p.content_type().as_ref().map(|v| json!(v.as_str())),
    );
    put(
        "content_encoding",
        p.content_encoding().as_ref().map(|v| json!(v.as_str())),
    );
    put("headers", p.headers().as_ref().map(super::json::table));
    put("delivery_mode", p.delivery_mode().map(|v| json!(v)));
    put("priority", p.priority().map(|v| json!(v)));
    put(
        "correlation_id",
        p.correlation_id().as_ref().map(|v| json!(v.as_str())),
    );
    put("reply_to", p.reply_to().as_ref().map(|v| json!(v.as_str())));
    put(
        "expiration",
        p.expiration().as_ref().map(|v| json!(v.as_str())),
    );
    put(
        "message_id",
        p.message_id().as_ref().map(|v| json!(v.as_str())),
    );
    put("timestamp", p.timestamp().map(|v| json!(v)));
    put("type", p.kind().as_ref().map(|v| json!(v.as_str())));
    put("user_id", p.user_id().as_ref().map(|v| json!(v.as_str())));
    put("app_id", p.app_id().as_ref().map(|v| json!(v.as_str())));
    if m.is_empty() {
        // RabbitMQ (Erlang) writes empty properties as an empty list.
        return json!([]);
    }
    Value::Object(m)
}

/// A publish POST's body as routing key, payload and properties, or RabbitMQ's 400.
pub(crate) fn publish_request(bytes: &Bytes) -> ApiResult<(String, Vec<u8>, AMQPProperties)> {
    let m = body(bytes)?;
    let key = text(&m, "routing_key")?
        .ok_or_else(|| ApiError::bad_request("[{key_missing,routing_key}]"))?;
    let payload =
        text(&m, "payload")?.ok_or_else(|| ApiError::bad_request("[{key_missing,payload}]"))?;
    let payload = match text(&m, "payload_encoding")?.unwrap_or("string") {
        "string" => payload.as_bytes().to_vec(),
        "base64" => base64::engine::general_purpose::STANDARD
            .decode(payload)
            .map_err(|_| ApiError::bad_request("not_base64"))?,
        other => {
            return Err(ApiError::bad_request(format!(
                "invalid payload_encoding {other}"
            )))
        }
    };
    Ok((key.to_string(), payload, properties(m.get("properties"))?))
}

async fn publish(
    State(st): State<AppState>,
    c: Caller,
    Path((vhost, name)): Path<(String, String)>,
    bytes: Bytes,
) -> ApiResult<Response> {
    check_vhost(&st, &c, &vhost)?;
    let exchange = exchange_name(&name);
    let (key, payload, props) = publish_request(&bytes)?;
    if !st.shared.state.lock().has_exchange(&vhost, &exchange) {
        return Err(ApiError::not_found());
    }
    permit(
        &st,
        &c,
        &vhost,
        Resource::Exchange,
        &exchange,
        Perm::Write,
        Refused::Closed,
    )?;
    if let Some(uid) = props.user_id() {
        st.shared
            .access
            .check_user_id(&c.name, uid.as_str())
            .map_err(|e| ApiError::channel_closed(&e))?;
    }
    let mut s = st.shared.state.lock();
    s.check_publish(&vhost, &exchange)
        .map_err(|e| ApiError::from_amqp(&e))?;
    let msg = Message::with_properties(exchange, key, &props, payload.into());
    let routed = s.publish(&vhost, Arc::new(msg));
    Ok(Json(json!({"routed": !routed.is_unroutable()})).into_response())
}

/// Collects what the core sends the API's own channel (get-ok answers).
#[derive(Debug, Default)]
struct Collect(Mutex<Vec<Event>>);

impl Sink for Collect {
    fn send(&self, event: Event) {
        self.0.lock().expect("collector").push(event);
    }
    fn congested(&self) -> bool {
        false
    }
}

/// A fresh connection id for one API request that needs a channel (far above client ids).
fn request_conn() -> ConnId {
    static NEXT: AtomicU64 = AtomicU64::new(1 << 62);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

fn encode_payload(body: &[u8], encoding: &str, truncate: Option<usize>) -> (Value, &'static str) {
    let body = &body[..truncate.map_or(body.len(), |t| t.min(body.len()))];
    match (encoding, std::str::from_utf8(body)) {
        ("auto", Ok(s)) => (json!(s), "string"),
        _ => (
            json!(base64::engine::general_purpose::STANDARD.encode(body)),
            "base64",
        ),
    }
}

/// What a get POST asks for.
pub(crate) struct GetRequest {
    /// How many messages at most.
    pub(crate) count: u64,
    /// Whether they go back to the queue (`ack_requeue_true`, `reject_requeue_true`).
    pub(crate) requeue: bool,
    /// `auto` or `base64`.
    pub(crate) encoding: String,
    /// Payload bytes kept per message, if limited.
    pub(crate) truncate: Option<usize>,
}

/// A get POST's body as what it asks for, or RabbitMQ's 400.
pub(crate) fn get_request(bytes: &Bytes) -> ApiResult<GetRequest> {
    let m = body(bytes)?;
    let count = match m.get("count") {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.parse().ok(),
        _ => None,
    }
    .ok_or_else(|| ApiError::bad_request("count: expected an integer"))?;
    let ackmode =
        text(&m, "ackmode")?.ok_or_else(|| ApiError::bad_request("[{key_missing,ackmode}]"))?;
    let requeue = match ackmode {
        "ack_requeue_true" | "reject_requeue_true" => true,
        "ack_requeue_false" | "reject_requeue_false" => false,
        other => return Err(ApiError::bad_request(format!("Invalid ackmode: {other}"))),
    };
    let encoding = text(&m, "encoding")?.unwrap_or("auto").to_string();
    if encoding != "auto" && encoding != "base64" {
        return Err(ApiError::bad_request(format!(
            "Unsupported encoding: {encoding}"
        )));
    }
    let truncate = match m.get("truncate") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .ok_or_else(|| ApiError::bad_request("truncate: expected an integer"))?
                as usize,
        ),
    };
    Ok(GetRequest {
        count,
        requeue,
        encoding,
        truncate,
    })
}

async fn get_messages(
    State(st): State<AppState>,
    c: Caller,
    Path((vhost, name)): Path<(String, String)>,
    bytes: Bytes,
) -> ApiResult<Response> {
    check_vhost(&st, &c, &vhost)?;
    let GetRequest {
        count,
        requeue,
        encoding,
        truncate,
    } = get_request(&bytes)?;
    may_read_queue(&st, &c, &vhost, &name, Refused::Amqp)?;
    let sink = Arc::new(Collect::default());
    let key = ChannelKey {
        conn: request_conn(),
        channel: 1,
    };
    let result = {
        let mut s = st.shared.state.lock();
        s.add_connection(key.conn, sink.clone());
        s.open_channel(key, &vhost);
        let mut err = None;
        for _ in 0..count {
            match s.get(key, &name, false) {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    err = Some(e);
                    break;
                }
            }
        }
        if !requeue && err.is_none() {
            let _ = s.ack(key, 0, true);
        }
        // Closing the channel requeues whatever is still unacknowledged (marked redelivered).
        s.remove_connection(key.conn);
        err
    };
    if let Some(e) = result {
        return Err(ApiError::from_amqp(&e));
    }
    let events = std::mem::take(&mut *sink.0.lock().expect("collector"));
    let out: Vec<Value> = events
        .into_iter()
        .filter_map(|e| match e {
            Event::GetOk {
                redelivered,
                message_count,
                msg,
                ..
            } => {
                let (payload, enc) = encode_payload(&msg.body, &encoding, truncate);
                Some(json!({
                    "payload_bytes": msg.body.len(),
                    "redelivered": redelivered,
                    "exchange": msg.exchange,
                    "routing_key": msg.routing_key,
                    "message_count": message_count,
                    "properties": properties_json(&msg.properties()),
                    "payload": payload,
                    "payload_encoding": enc,
                }))
            }
            _ => None,
        })
        .collect();
    Ok(Json(Value::Array(out)).into_response())
}

async fn aliveness(
    State(st): State<AppState>,
    c: Caller,
    Path(vhost): Path<String>,
) -> ApiResult<Response> {
    check_vhost(&st, &c, &vhost)?;
    let queue = "aliveness-test";
    let sink = Arc::new(Collect::default());
    let key = ChannelKey {
        conn: request_conn(),
        channel: 1,
    };
    let got = {
        let mut s = st.shared.state.lock();
        let d = QueueDeclare {
            name: queue.into(),
            passive: false,
            durable: false,
            exclusive: false,
            auto_delete: false,
            args: Default::default(),
        };
        s.queue_declare(&vhost, API_CONN, d)
            .map_err(|e| ApiError::from_amqp(&e))?;
        let msg = Message::with_properties(
            String::new(),
            queue.into(),
            &AMQPProperties::default(),
            Bytes::from_static(b"test_message"),
        );
        s.publish(&vhost, Arc::new(msg));
        s.add_connection(key.conn, sink.clone());
        s.open_channel(key, &vhost);
        let got = s.get(key, queue, true).unwrap_or(false);
        s.remove_connection(key.conn);
        got
    };
    if got {
        Ok(Json(json!({"status": "ok"})).into_response())
    } else {
        Ok((
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "failed", "reason": "message not received"})),
        )
            .into_response())
    }
}
