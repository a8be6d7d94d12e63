//! The web dashboard: a single-page app at `/` of the management listener (plain HTML, JS and
//! CSS in `assets/`, built into the binary: a broker runs offline, so nothing comes from a
//! CDN), reading the RabbitMQ-compatible `/api/*` and Warren's own `/api/warren/*`
//! (`services.rs`: the RPC services the broker sees, and calls made from inside the broker,
//! `call.rs`).
//!
//! Assets are answered with an `ETag` (a hash of their bytes) and `Cache-Control: no-cache`:
//! a browser revalidates them on every load and gets `304 Not Modified` until the broker is
//! upgraded, so a new broker never serves a stale page and an unchanged one costs no bytes.

mod call;
mod services;

use super::AppState;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::sync::OnceLock;

pub(crate) use services::warren_metrics;

/// One embedded file.
struct Asset {
    body: &'static [u8],
    content_type: &'static str,
    etag: OnceLock<String>,
}

impl Asset {
    const fn new(body: &'static [u8], content_type: &'static str) -> Self {
        Asset {
            body,
            content_type,
            etag: OnceLock::new(),
        }
    }

    /// A strong validator: FNV-1a of the bytes (computed once; collisions only cost a
    /// stale cache entry, so a cryptographic hash is not needed).
    fn etag(&self) -> &str {
        self.etag.get_or_init(|| {
            let hash = self.body.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
            });
            format!("\"{hash:016x}\"")
        })
    }

    fn respond(&self, request: &HeaderMap) -> Response {
        let etag = self.etag();
        let fresh = request
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
        let headers = [
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::ETAG,
                HeaderValue::from_str(etag).expect("hex in quotes"),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ];
        if fresh {
            return (StatusCode::NOT_MODIFIED, headers).into_response();
        }
        let content_type = [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(self.content_type),
        )];
        (headers, content_type, self.body).into_response()
    }
}

static INDEX: Asset = Asset::new(
    include_bytes!("assets/index.html"),
    "text/html; charset=utf-8",
);
static SCRIPT: Asset = Asset::new(
    include_bytes!("assets/warren.js"),
    "text/javascript; charset=utf-8",
);
static STYLE: Asset = Asset::new(
    include_bytes!("assets/warren.css"),
    "text/css; charset=utf-8",
);

/// The dashboard's pages and assets, and Warren's API under `/api/warren`.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(|h: HeaderMap| async move { INDEX.respond(&h) }))
        .route(
            "/static/warren.js",
            get(|h: HeaderMap| async move { SCRIPT.respond(&h) }),
        )
        .route(
            "/static/warren.css",
            get(|h: HeaderMap| async move { STYLE.respond(&h) }),
        )
        .merge(services::routes())
}
