//! The connection loop of the management and Prometheus listeners: plain HTTP or HTTPS
//! (rustls, through tokio-rustls), HTTP/1.1 by hyper, routes by axum.
//!
//! It replaces `axum::serve` for what that cannot do: TLS, and the limits that keep slow
//! clients (slowloris) from holding the listener:
//!
//! - the TLS handshake must finish within [`crate::tls::TLS_HANDSHAKE_TIMEOUT`] (5 s);
//! - a request's line and headers must arrive within [`Limits::http_request_timeout`] of the
//!   connection opening or of the previous response (hyper's `header_read_timeout`, cowboy's
//!   `request_timeout`): the deadline does not move when bytes trickle in, so a client sending
//!   a header byte a second is closed as surely as one sending nothing;
//! - a request body must arrive within [`Limits::http_body_timeout`] plus a second per
//!   [`Limits::http_body_min_rate`] bytes received, else 408 and the connection is closed.
//!
//! Every connection is its own task, so a slow one never delays another.

use super::error::ApiError;
use crate::config::Limits;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use futures::StreamExt;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

/// How long open connections get to finish their request once the broker stops.
const DRAIN: Duration = Duration::from_secs(5);

/// The time limits of one HTTP listener (from [`Limits`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct HttpTimeouts {
    /// Request line and headers ([`Limits::http_request_timeout`]).
    pub(crate) request: Duration,
    /// Body, before the rate extension ([`Limits::http_body_timeout`]).
    pub(crate) body: Duration,
    /// Bytes per second of body that extend its deadline by a second
    /// ([`Limits::http_body_min_rate`]).
    pub(crate) body_min_rate: u64,
}

impl HttpTimeouts {
    /// The HTTP limits of `limits`.
    pub(crate) fn from_limits(limits: &Limits) -> Self {
        HttpTimeouts {
            request: limits.http_request_timeout,
            body: limits.http_body_timeout,
            body_min_rate: limits.http_body_min_rate,
        }
    }

    /// When a body of which `received` bytes came so far must be complete, for a body whose
    /// headers arrived at `start`.
    fn body_deadline(&self, start: Instant, received: usize) -> Instant {
        let extra = match self.body_min_rate {
            0 => Duration::ZERO,
            rate => Duration::from_secs(received as u64 / rate),
        };
        start + self.body + extra
    }
}

/// Serves `app` on `listener` (over TLS when `tls` is given) until `stop` turns true; then
/// lets open connections finish their request for a bounded time. `what` names the listener
/// in logs.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<TlsAcceptor>,
    timeouts: HttpTimeouts,
    mut stop: watch::Receiver<bool>,
    what: &'static str,
) {
    let mut conns = JoinSet::new();
    let conn_stop = stop.clone();
    let stopping = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    tokio::pin!(stopping);
    loop {
        tokio::select! {
            () = &mut stopping => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            result = listener.accept() => match result {
                Ok((stream, peer)) => {
                    let conn = connection(stream, peer, app.clone(), tls.clone(), timeouts, conn_stop.clone());
                    conns.spawn(conn);
                }
                Err(e) => crate::transport::accept_failed(what, &e).await,
            },
        }
    }
    drop(listener);
    let drain = async { while conns.join_next().await.is_some() {} };
    if tokio::time::timeout(DRAIN, drain).await.is_err() {
        conns.abort_all();
    }
}

/// One accepted connection: the TLS handshake when asked for, then HTTP/1.1 until the client
/// goes, a limit closes it, or the broker stops.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    tls: Option<TlsAcceptor>,
    timeouts: HttpTimeouts,
    stop: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let Some(acceptor) = tls else {
        return http1(TokioIo::new(stream), peer, app, timeouts, stop).await;
    };
    let handshake = acceptor.accept(stream);
    match tokio::time::timeout(crate::tls::TLS_HANDSHAKE_TIMEOUT, handshake).await {
        Ok(Ok(stream)) => http1(TokioIo::new(stream), peer, app, timeouts, stop).await,
        // A plain HTTP request on the HTTPS port ends here: the client is not speaking TLS.
        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "HTTPS: TLS handshake failed"),
        Err(_) => tracing::debug!(%peer, "HTTPS: TLS handshake timed out"),
    }
}

/// HTTP/1.1 on an established connection (plain or TLS).
async fn http1<I>(
    io: I,
    peer: SocketAddr,
    app: Router,
    timeouts: HttpTimeouts,
    mut stop: watch::Receiver<bool>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
        let app = app.clone();
        async move {
            let mut req = match read_body(req, &timeouts).await {
                Ok(req) => req,
                Err(refusal) => return Ok::<_, Infallible>(refusal),
            };
            // The peer's address reaches the authentication (guest is refused from elsewhere).
            req.extensions_mut().insert(ConnectInfo(peer));
            app.oneshot(req).await
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.request)
        .keep_alive(true);
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let stopping = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = stopping => {
            // Finish the request in progress, if any, then close.
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        // Timeouts, malformed requests, clients that went away: the client's problem.
        tracing::debug!(%peer, error = %e, "HTTP connection closed");
    }
}

/// Reads the request's body in full within its deadline, so that no handler ever waits on a
/// slow client: the request with its body, or the answer that refuses it (413 over
/// [`super::MAX_BODY`], 408 too slow, 400 broken off), after which the connection closes.
async fn read_body(
    req: Request<hyper::body::Incoming>,
    timeouts: &HttpTimeouts,
) -> Result<Request<Body>, Response> {
    let (parts, body) = req.into_parts();
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > super::MAX_BODY as u64) {
        return Err(closing(ApiError::too_large().into_response()));
    }
    let start = Instant::now();
    // Not all of a declared length up front: a client may declare 20 MB and send nothing.
    let mut data = Vec::with_capacity(declared.map_or(0, |n| n.min(64 * 1024) as usize));
    let mut frames = Body::new(body).into_data_stream();
    loop {
        let deadline = timeouts.body_deadline(start, data.len());
        match tokio::time::timeout_at(deadline, frames.next()).await {
            Ok(None) => break,
            Ok(Some(Ok(chunk))) => {
                if data.len() + chunk.len() > super::MAX_BODY {
                    return Err(closing(ApiError::too_large().into_response()));
                }
                data.extend_from_slice(&chunk);
            }
            Ok(Some(Err(e))) => {
                let refusal = ApiError::bad_request(format!("cannot read the request body: {e}"));
                return Err(closing(refusal.into_response()));
            }
            Err(_) => {
                let refusal = ApiError {
                    status: StatusCode::REQUEST_TIMEOUT,
                    error: "timeout",
                    reason: "request body not received before timeout".into(),
                    reason_json: None,
                };
                return Err(closing(refusal.into_response()));
            }
        }
    }
    Ok(Request::from_parts(parts, Body::from(data)))
}

/// `resp` with `Connection: close`: hyper closes the connection once it is written.
fn closing(mut resp: Response) -> Response {
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_deadline_grows_with_what_arrived() {
        let t = HttpTimeouts {
            request: Duration::from_secs(5),
            body: Duration::from_secs(60),
            body_min_rate: 500,
        };
        let start = Instant::now();
        assert_eq!(t.body_deadline(start, 0), start + Duration::from_secs(60));
        assert_eq!(t.body_deadline(start, 499), start + Duration::from_secs(60));
        assert_eq!(
            t.body_deadline(start, 5_000),
            start + Duration::from_secs(70)
        );
        let flat = HttpTimeouts {
            body_min_rate: 0,
            ..t
        };
        assert_eq!(
            flat.body_deadline(start, 1 << 20),
            start + Duration::from_secs(60)
        );
    }
}
