//! Middleware: tower [`Layer`]s around the server's handlers and the client's calls.
//!
//! **Server side**, [`ServerBuilder::layer`](crate::ServerBuilder::layer) wraps the service in
//! a layer over [`ServerService`], a `tower::Service<Request, Response = Outcome>`: the layer
//! sees every request (method, codec, arguments, application headers via
//! [`Request::header`]) before the handler and its [`Outcome`] after, and can answer by itself,
//! for example with a [`Fault`](crate::Fault) of code
//! [`FaultCode::Unauthenticated`](crate::FaultCode::Unauthenticated) when a token is missing.
//! Handlers run inside their [`Context`](crate::Context), and so do layers. Panics and the
//! call's deadline are enforced around the whole stack, so a layer sees neither.
//!
//! **Client side**, [`ClientBuilder::layer`](crate::ClientBuilder::layer) wraps calls in a layer
//! over [`ClientService`], a `tower::Service<OutgoingCall, Response = Vec<RawReply>>`: one
//! logical call (all its retries), a one-way call or a broadcast. A layer can set application
//! headers ([`OutgoingCall::headers_mut`]) that servers see with [`Request::header`].
//!
//! The first layer added is the outermost, as with `tower::ServiceBuilder`. Two layers come
//! with the crate, each for both sides: [`MetricsLayer`] (per-method call counts, errors and
//! latency through the [`metrics`] facade, so any exporter picks them up) and
//! [`LoggingLayer`] (one `tracing` event per call); [`SetHeadersLayer`] sets headers on a
//! client's calls.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use serde::de::IgnoredAny;
use tower::util::BoxCloneSyncService;
use tower::{Layer, Service};

use crate::cancel::CancelToken;
use crate::context::CallId;
use crate::error::Error;
use crate::retry::RetryPolicy;
use crate::service::{MethodSpec, Outcome, Request};
use crate::trace::TraceContext;
use crate::wire::{Codec, ReplyBody};

/// The server-side service a layer wraps: request in, outcome out, never an error.
pub type ServerService = BoxCloneSyncService<Request, Outcome, Infallible>;

/// The client-side service a layer wraps: a call in, its replies out (none for a one-way call,
/// one for a call, one per replica for a broadcast).
pub type ClientService = BoxCloneSyncService<OutgoingCall, Vec<RawReply>, Error>;

/// How an [`OutgoingCall`] is addressed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CallKind {
    /// A call waiting for one reply.
    Call,
    /// A one-way call: no reply.
    Notify,
    /// Every replica, until the deadline or this many replies.
    Broadcast {
        max_replies: Option<usize>,
        exchange: Option<Arc<str>>,
    },
}

/// One call on its way out, as a client layer sees it.
#[derive(Debug, Clone)]
pub struct OutgoingCall {
    pub(crate) service: String,
    pub(crate) method: MethodSpec,
    pub(crate) call_id: CallId,
    pub(crate) codec: Codec,
    pub(crate) body: Vec<u8>,
    pub(crate) headers: BTreeMap<String, String>,
    pub(crate) deadline: Instant,
    pub(crate) timeout: Duration,
    pub(crate) policy: RetryPolicy,
    pub(crate) kind: CallKind,
    /// The caller's span, sent as `traceparent`.
    pub(crate) trace: TraceContext,
    /// Cancels the call when cancelled.
    pub(crate) cancel: Option<CancelToken>,
}

impl OutgoingCall {
    /// The service (queue) the call is addressed to.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// The method called.
    pub fn method(&self) -> &MethodSpec {
        &self.method
    }

    /// The call id, the same on every attempt.
    pub fn call_id(&self) -> &CallId {
        &self.call_id
    }

    /// The codec of the request and its reply.
    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// The encoded arguments.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The application headers to send (string-valued AMQP headers).
    pub fn headers(&self) -> &BTreeMap<String, String> {
        &self.headers
    }

    /// The application headers, to add or change some. Names in the `x-warren-` namespace are
    /// the protocol's and are overwritten.
    pub fn headers_mut(&mut self) -> &mut BTreeMap<String, String> {
        &mut self.headers
    }

    /// When the caller stops waiting.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Whether this is a broadcast to every replica.
    pub fn is_broadcast(&self) -> bool {
        matches!(self.kind, CallKind::Broadcast { .. })
    }

    /// Whether this is a one-way call (no reply).
    pub fn is_oneway(&self) -> bool {
        self.kind == CallKind::Notify
    }
}

/// A reply as it came off the reply queue, before decoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawReply {
    /// Its `content_type`.
    pub content_type: Option<String>,
    /// The encoded `{"ok" | "err" | "fault": ...}` body.
    pub body: Vec<u8>,
    /// The instance id of the server that sent it (`x-warren-instance`), when it said.
    pub instance: Option<String>,
}

impl RawReply {
    /// The kind of failure this reply reports: `None` for `ok`, `"err"` for an application
    /// error, the fault code for a fault, `"decode"` for a body that is none of these.
    pub fn error_kind(&self) -> Option<String> {
        let codec = Codec::from_content_type(self.content_type.as_deref());
        let body = codec.and_then(|c| {
            c.decode::<ReplyBody<IgnoredAny, IgnoredAny>>(&self.body)
                .ok()
        });
        match body {
            Some(ReplyBody::Ok(_)) => None,
            Some(ReplyBody::Err(_)) => Some("err".to_owned()),
            Some(ReplyBody::Fault { code, .. }) => Some(code.as_str().to_owned()),
            None => Some("decode".to_owned()),
        }
    }
}

/// A stack of layers over `S`, kept as functions so builders stay cloneable.
pub(crate) struct Layers<S>(Vec<Arc<dyn Fn(S) -> S + Send + Sync>>);

impl<S> Default for Layers<S> {
    fn default() -> Self {
        Layers(Vec::new())
    }
}

impl<S> Clone for Layers<S> {
    fn clone(&self) -> Self {
        Layers(self.0.clone())
    }
}

impl<S> fmt::Debug for Layers<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} layer(s)", self.0.len())
    }
}

impl<S> Layers<S> {
    pub(crate) fn push(&mut self, layer: impl Fn(S) -> S + Send + Sync + 'static) {
        self.0.push(Arc::new(layer));
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Wraps `inner`: the first layer pushed ends up outermost.
    pub(crate) fn apply(&self, inner: S) -> S {
        self.0
            .iter()
            .rev()
            .fold(inner, |service, layer| layer(service))
    }
}

/// Per-method call counts, errors and latency through the [`metrics`] facade.
///
/// On a server: `warren_rpc_server_calls_total`, `warren_rpc_server_errors_total` (label `kind`:
/// `err` for an application error, else the fault code) and the histogram
/// `warren_rpc_server_duration_seconds`, each labelled `service` and `method`. On a client the
/// same with `client` in place of `server`; error kinds are then also the framework's
/// ([`Error::kind`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct MetricsLayer;

impl<S> Layer<S> for MetricsLayer {
    type Service = Metrics<S>;

    fn layer(&self, inner: S) -> Metrics<S> {
        Metrics { inner }
    }
}

/// The service of [`MetricsLayer`].
#[derive(Debug, Clone)]
pub struct Metrics<S> {
    inner: S,
}

fn record(side: Side, service: String, method: String, elapsed: Duration, error: Option<String>) {
    let (calls, errors, duration) = match side {
        Side::Server => (
            "warren_rpc_server_calls_total",
            "warren_rpc_server_errors_total",
            "warren_rpc_server_duration_seconds",
        ),
        Side::Client => (
            "warren_rpc_client_calls_total",
            "warren_rpc_client_errors_total",
            "warren_rpc_client_duration_seconds",
        ),
    };
    metrics::counter!(calls, "service" => service.clone(), "method" => method.clone()).increment(1);
    if let Some(kind) = error {
        metrics::counter!(errors, "service" => service.clone(), "method" => method.clone(), "kind" => kind)
            .increment(1);
    }
    metrics::histogram!(duration, "service" => service, "method" => method)
        .record(elapsed.as_secs_f64());
}

#[derive(Clone, Copy)]
enum Side {
    Server,
    Client,
}

impl<S> Service<Request> for Metrics<S>
where
    S: Service<Request, Response = Outcome, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Outcome;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Outcome, Infallible>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let service = request.service().to_owned();
        let method = request.method().to_owned();
        let started = Instant::now();
        let call = self.inner.call(request);
        Box::pin(async move {
            let outcome = call.await?;
            let kind = outcome.error_kind().map(str::to_owned);
            record(Side::Server, service, method, started.elapsed(), kind);
            Ok(outcome)
        })
    }
}

impl<S> Service<OutgoingCall> for Metrics<S>
where
    S: Service<OutgoingCall, Response = Vec<RawReply>, Error = Error>,
    S::Future: Send + 'static,
{
    type Response = Vec<RawReply>;
    type Error = Error;
    type Future = BoxFuture<'static, Result<Vec<RawReply>, Error>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, call: OutgoingCall) -> Self::Future {
        let service = call.service.clone();
        let method = call.method.name.to_owned();
        let started = Instant::now();
        let future = self.inner.call(call);
        Box::pin(async move {
            let result = future.await;
            let kind = match &result {
                Ok(replies) => replies.iter().find_map(RawReply::error_kind),
                Err(err) => Some(err.kind().to_owned()),
            };
            record(Side::Client, service, method, started.elapsed(), kind);
            result
        })
    }
}

/// One `tracing` event per call at INFO: service, method, outcome and latency.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoggingLayer;

impl<S> Layer<S> for LoggingLayer {
    type Service = Logging<S>;

    fn layer(&self, inner: S) -> Logging<S> {
        Logging { inner }
    }
}

/// The service of [`LoggingLayer`].
#[derive(Debug, Clone)]
pub struct Logging<S> {
    inner: S,
}

impl<S> Service<Request> for Logging<S>
where
    S: Service<Request, Response = Outcome, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Outcome;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Outcome, Infallible>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let service = request.service().to_owned();
        let method = request.method().to_owned();
        let started = Instant::now();
        let call = self.inner.call(request);
        Box::pin(async move {
            let outcome = call.await?;
            let outcome_kind = outcome.error_kind().unwrap_or("ok").to_owned();
            tracing::info!(
                %service,
                %method,
                outcome = %outcome_kind,
                elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
                "served"
            );
            Ok(outcome)
        })
    }
}

impl<S> Service<OutgoingCall> for Logging<S>
where
    S: Service<OutgoingCall, Response = Vec<RawReply>, Error = Error>,
    S::Future: Send + 'static,
{
    type Response = Vec<RawReply>;
    type Error = Error;
    type Future = BoxFuture<'static, Result<Vec<RawReply>, Error>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, call: OutgoingCall) -> Self::Future {
        let service = call.service.clone();
        let method = call.method.name;
        let call_id = call.call_id.clone();
        let started = Instant::now();
        let future = self.inner.call(call);
        Box::pin(async move {
            let result = future.await;
            let outcome = match &result {
                Ok(replies) => replies
                    .iter()
                    .find_map(RawReply::error_kind)
                    .unwrap_or_else(|| "ok".to_owned()),
                Err(err) => err.kind().to_owned(),
            };
            tracing::info!(
                %service,
                method,
                %call_id,
                %outcome,
                elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
                "called"
            );
            result
        })
    }
}

/// A client layer setting application headers on every call, for example a token a server
/// layer checks:
///
/// ```
/// # use warren_rpc::{middleware::SetHeadersLayer, Client};
/// let builder = Client::builder().layer(SetHeadersLayer::new().header("authorization", "Bearer s3cret"));
/// ```
#[derive(Debug, Clone, Default)]
pub struct SetHeadersLayer {
    headers: Arc<BTreeMap<String, String>>,
}

impl SetHeadersLayer {
    /// A layer setting no header yet.
    pub fn new() -> Self {
        SetHeadersLayer::default()
    }

    /// Sets `name` to `value` on every call.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        Arc::make_mut(&mut self.headers).insert(name.into(), value.into());
        self
    }
}

impl<S> Layer<S> for SetHeadersLayer {
    type Service = SetHeaders<S>;

    fn layer(&self, inner: S) -> SetHeaders<S> {
        SetHeaders {
            inner,
            headers: Arc::clone(&self.headers),
        }
    }
}

/// The service of [`SetHeadersLayer`].
#[derive(Debug, Clone)]
pub struct SetHeaders<S> {
    inner: S,
    headers: Arc<BTreeMap<String, String>>,
}

impl<S> Service<OutgoingCall> for SetHeaders<S>
where
    S: Service<OutgoingCall, Response = Vec<RawReply>, Error = Error>,
{
    type Response = Vec<RawReply>;
    type Error = Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut call: OutgoingCall) -> Self::Future {
        for (name, value) in self.headers.iter() {
            call.headers.insert(name.clone(), value.clone());
        }
        self.inner.call(call)
    }
}
