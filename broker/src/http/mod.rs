//! The management HTTP API, RabbitMQ-compatible (`/api/...` as RabbitMQ 3.x's management
//! plugin), served on its own listener by axum.
//!
//! Layout: `error` (RabbitMQ's `{"error", "reason"}` answers), `auth` (basic auth and the
//! management tags), `json` (AMQP field tables and `message_stats` as RabbitMQ's JSON), `query`
//! (columns, sort, paging, name filters), then the handlers: `overview` (overview, nodes,
//! whoami, health checks), `resources` (lists), `views` (their JSON objects), `ops` (declare,
//! delete, purge, publish, get, bindings, closing connections), `admin` (vhosts, users,
//! permissions), `definitions` (export and import), `dashboard` (the web dashboard at `/` and
//! Warren's `/api/warren`).
//!
//! **Adding routes from another module** (the dashboard does this): write a
//! `pub(crate) fn routes() -> Router<AppState>` in your module (handlers take
//! `State<AppState>` and, when they need a login, the [`auth::Caller`] extractor), declare the
//! module below and add one `.merge(yourmodule::routes())` line in [`router`]. Paths under
//! `/api` are this module's; anything else (e.g. `/`, `/js/...`) is free.

pub(crate) mod admin;
pub(crate) mod auth;
pub(crate) mod dashboard;
pub(crate) mod definitions;
pub(crate) mod error;
pub(crate) mod json;
pub(crate) mod listener;
pub(crate) mod ops;
mod overview;
pub(crate) mod prometheus;
mod query;
mod resources;
mod views;

use crate::shared::Shared;
use axum::Router;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// What the node reports about itself (listeners, start time).
#[derive(Debug)]
pub(crate) struct NodeInfo {
    /// The node name, e.g. "warren@hostname" (RabbitMQ's "rabbit@hostname").
    pub(crate) name: String,
    /// The AMQP listener.
    pub(crate) amqp: SocketAddr,
    /// The management listener, when on.
    pub(crate) management: Option<SocketAddr>,
    /// The Prometheus listener, when on.
    pub(crate) prometheus: Option<SocketAddr>,
    /// Whether the management listener speaks HTTPS.
    pub(crate) management_tls: bool,
    /// Whether the Prometheus listener speaks HTTPS.
    pub(crate) prometheus_tls: bool,
    /// When the broker started (uptime).
    pub(crate) started: Instant,
}

/// The state every handler gets: the broker's shared state and the node's description.
#[derive(Clone)]
pub(crate) struct AppState {
    /// The broker.
    pub(crate) shared: Arc<Shared>,
    /// The node.
    pub(crate) node: Arc<NodeInfo>,
}

/// Largest request body accepted (RabbitMQ's management.max_http_body_size default, 20 MB);
/// bigger ones get 413.
pub(crate) const MAX_BODY: usize = 20 * 1024 * 1024;

/// Every route: the API and the modules merged into it.
pub(crate) fn router(state: AppState) -> Router {
    Router::new()
        .merge(overview::routes())
        .merge(resources::routes())
        .merge(ops::routes())
        .merge(admin::routes())
        .merge(definitions::routes())
        .merge(dashboard::routes())
        .fallback(|| async { error::ApiError::not_found() })
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::map_response(json_413))
        .with_state(state)
}

/// A body over [`MAX_BODY`] is refused by axum's extractor with a plain-text 413; the API
/// answers JSON like every other error.
async fn json_413(resp: axum::response::Response) -> axum::response::Response {
    use axum::response::IntoResponse;
    if resp.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        return error::ApiError::too_large().into_response();
    }
    resp
}

/// The node name RabbitMQ would show: `warren@<hostname>`.
pub(crate) fn node_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!("warren@{host}")
}

/// How one HTTP listener serves: over TLS or not, within which time limits.
#[derive(Clone)]
pub(crate) struct Serving {
    /// HTTPS only, with this acceptor; plain HTTP when `None`.
    pub(crate) tls: Option<tokio_rustls::TlsAcceptor>,
    /// Header and body time limits.
    pub(crate) timeouts: listener::HttpTimeouts,
}

/// Serves the Prometheus endpoint on `listener` until `stop` turns true.
pub(crate) async fn serve_prometheus(
    listener: TcpListener,
    state: AppState,
    serving: Serving,
    stop: watch::Receiver<bool>,
) {
    let app = prometheus::routes().with_state(state);
    let Serving { tls, timeouts } = serving;
    listener::serve(listener, app, tls, timeouts, stop, "prometheus").await;
}

/// Serves the API on `listener` until `stop` turns true; also takes the rate samples every 5
/// seconds (RabbitMQ's default collect_statistics_interval).
pub(crate) async fn serve(
    listener: TcpListener,
    state: AppState,
    serving: Serving,
    stop: watch::Receiver<bool>,
) {
    let shared = state.shared.clone();
    let sampler = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            shared.state.lock().sample_rates();
        }
    });
    let Serving { tls, timeouts } = serving;
    listener::serve(listener, router(state), tls, timeouts, stop, "management").await;
    sampler.abort();
}
