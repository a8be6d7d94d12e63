//! Support for the RPC end-to-end tests (`tests/rpc.rs`): a probe service with slow, panicking,
//! one-way and introspective methods, servers on per-test queues, and a raw wire-protocol
//! caller that speaks to a service with plain lapin, as another language would.
//!
//! Every server here consumes a unique queue (see [`crate::unique`]) because one RabbitMQ
//! serves all tests at once; clients address it with `CallOptions::service`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::BasicProperties;
use serde::{Deserialize, Serialize};
use warren_examples::{Calc, CalculatorClient, CalculatorServer};
use warren_rpc::{CallOptions, Client, Context, Server, ServerBuilder, Service, Stream};

use crate::{Target, WAIT};

/// What a handler saw of its call, returned by [`Probe::context`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallInfo {
    /// The call id.
    pub call_id: String,
    /// The attempt number.
    pub attempt: u32,
    /// The budget left when the handler ran, in milliseconds.
    pub remaining_ms: Option<u64>,
}

/// What a handler saw of its trace, returned by [`Probe::trace`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceInfo {
    /// The trace id (32 hex digits).
    pub trace_id: String,
    /// The handler's own span id.
    pub span_id: String,
    /// The caller's span id, from `traceparent`.
    pub parent_span_id: Option<String>,
}

/// A value with most serde shapes: structs, enums with unit, newtype, tuple and struct
/// variants, options, sequences, maps, bytes-like vectors and floats.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Document {
    /// A string.
    pub title: String,
    /// An optional sequence.
    pub tags: Option<Vec<String>>,
    /// A map with string keys.
    pub scores: std::collections::BTreeMap<String, f64>,
    /// Enums of every kind.
    pub shapes: Vec<Shape>,
    /// Raw bytes.
    pub blob: Vec<u8>,
    /// A unit value.
    pub nothing: (),
    /// A large unsigned number.
    pub big: u64,
}

/// An enum with every kind of variant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Shape {
    /// Unit variant.
    Point,
    /// Newtype variant.
    Circle(f64),
    /// Tuple variant.
    Segment(i32, i32),
    /// Struct variant.
    Rect {
        /// Width.
        w: u32,
        /// Height.
        h: u32,
    },
}

/// A service for exercising the framework rather than computing anything.
#[warren_rpc::service(name = "probe")]
pub trait Probe {
    /// Returns its argument.
    async fn echo(&self, text: String) -> String;

    /// Returns its arguments, swapped; errs when `fail` is set.
    async fn swap(
        &self,
        document: Document,
        shape: Shape,
        fail: bool,
    ) -> Result<(Shape, Document), Shape>;

    /// Sleeps `ms` milliseconds, then returns `ms`.
    async fn sleep(&self, ms: u64) -> u64;

    /// Panics with `message`.
    async fn explode(&self, message: String) -> String;

    /// Records `value`; one-way, so the caller gets no reply.
    #[warren(oneway)]
    async fn record(&self, value: i64);

    /// The values recorded so far, in arrival order.
    async fn recorded(&self) -> Vec<i64>;

    /// Counts one execution, sleeps `ms`, and returns the count.
    async fn count_slowly(&self, ms: u64) -> u64;

    /// The call context the handler sees.
    async fn context(&self) -> CallInfo;

    /// Calls `context` on the relay probe (see [`ProbeImpl::with_relay`]) and returns what that
    /// handler saw; `Err` describes a missing relay or a failed call.
    async fn relay_context(&self) -> Result<CallInfo, String>;

    /// The trace context the handler sees.
    async fn trace(&self) -> TraceInfo;

    /// What this handler saw of its trace, and what the relay probe's handler saw when this
    /// one called it.
    async fn relay_trace(&self) -> Result<(TraceInfo, TraceInfo), String>;

    /// A long handler with side effects: counts a tick every `tick_ms`, `ticks` times, and stops
    /// early when it notices its call was cancelled. Returns the ticks counted.
    async fn tick(&self, ticks: u32, tick_ms: u64) -> u32;

    /// Streams `0..n`, one item every `every_ms`, counting each item produced.
    async fn numbers(&self, n: u32, every_ms: u64) -> Stream<u32>;

    /// Streams `0..n`, then panics.
    async fn numbers_then_panic(&self, n: u32) -> Stream<u32>;
}

/// Side effects of the probe that tests watch from outside.
#[derive(Debug, Default)]
pub struct ProbeEffects {
    /// Ticks counted by `tick`.
    pub ticks: AtomicU64,
    /// `tick` handlers that noticed their cancellation.
    pub noticed_cancel: AtomicU64,
    /// Items produced by `numbers` streams.
    pub produced: AtomicU64,
    /// `numbers` streams dropped (finished or cancelled).
    pub streams_dropped: AtomicU64,
}

impl ProbeEffects {
    /// Reads one counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::SeqCst)
    }
}

/// Counts a dropped stream in [`ProbeEffects::streams_dropped`].
struct DropCounter(Arc<ProbeEffects>);

impl Drop for DropCounter {
    fn drop(&mut self) {
        self.0.streams_dropped.fetch_add(1, Ordering::SeqCst);
    }
}

fn trace_info() -> TraceInfo {
    let cx = Context::current().expect("handlers run with a context");
    TraceInfo {
        trace_id: cx.trace().trace_id().to_string(),
        span_id: cx.trace().span_id().to_string(),
        parent_span_id: cx.parent_span_id().map(|id| id.to_string()),
    }
}

/// The probe implementation.
#[derive(Debug, Default)]
pub struct ProbeImpl {
    recorded: Mutex<Vec<i64>>,
    executions: AtomicU64,
    relay: Option<ProbeClient>,
    effects: Arc<ProbeEffects>,
}

impl ProbeImpl {
    /// A probe whose `relay_context` calls another probe through `relay`.
    pub fn with_relay(relay: ProbeClient) -> Self {
        ProbeImpl {
            relay: Some(relay),
            ..ProbeImpl::default()
        }
    }

    /// The side effects of `tick` and `numbers`, shared with the test.
    pub fn effects(&self) -> Arc<ProbeEffects> {
        Arc::clone(&self.effects)
    }

    /// How many times `count_slowly` ran.
    pub fn executions(&self) -> u64 {
        self.executions.load(Ordering::SeqCst)
    }
}

impl Probe for ProbeImpl {
    async fn echo(&self, text: String) -> String {
        text
    }

    async fn swap(
        &self,
        document: Document,
        shape: Shape,
        fail: bool,
    ) -> Result<(Shape, Document), Shape> {
        if fail {
            Err(shape)
        } else {
            Ok((shape, document))
        }
    }

    async fn sleep(&self, ms: u64) -> u64 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        ms
    }

    async fn explode(&self, message: String) -> String {
        panic!("{message}")
    }

    async fn record(&self, value: i64) {
        self.recorded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(value);
    }

    async fn recorded(&self) -> Vec<i64> {
        self.recorded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    async fn count_slowly(&self, ms: u64) -> u64 {
        let count = self.executions.fetch_add(1, Ordering::SeqCst) + 1;
        tokio::time::sleep(Duration::from_millis(ms)).await;
        count
    }

    async fn context(&self) -> CallInfo {
        let cx = Context::current().expect("handlers run with a context");
        CallInfo {
            call_id: cx.call_id().to_string(),
            attempt: cx.attempt(),
            remaining_ms: cx.remaining().map(|d| d.as_millis() as u64),
        }
    }

    async fn relay_context(&self) -> Result<CallInfo, String> {
        let relay = self.relay.as_ref().ok_or("this probe has no relay")?;
        relay.context().await.map_err(|e| e.to_string())
    }

    async fn trace(&self) -> TraceInfo {
        trace_info()
    }

    async fn relay_trace(&self) -> Result<(TraceInfo, TraceInfo), String> {
        let relay = self.relay.as_ref().ok_or("this probe has no relay")?;
        let inner = relay.trace().await.map_err(|e| e.to_string())?;
        Ok((trace_info(), inner))
    }

    async fn tick(&self, ticks: u32, tick_ms: u64) -> u32 {
        let cx = Context::current().expect("handlers run with a context");
        for done in 0..ticks {
            tokio::select! {
                () = cx.cancelled() => {
                    self.effects.noticed_cancel.fetch_add(1, Ordering::SeqCst);
                    return done;
                }
                () = tokio::time::sleep(Duration::from_millis(tick_ms)) => {}
            }
            self.effects.ticks.fetch_add(1, Ordering::SeqCst);
        }
        ticks
    }

    async fn numbers(&self, n: u32, every_ms: u64) -> Stream<u32> {
        let effects = Arc::clone(&self.effects);
        let guard = DropCounter(Arc::clone(&effects));
        Stream::new(futures::stream::iter(0..n).then(move |i| {
            let effects = Arc::clone(&effects);
            let _alive = &guard;
            async move {
                if every_ms > 0 {
                    tokio::time::sleep(Duration::from_millis(every_ms)).await;
                }
                effects.produced.fetch_add(1, Ordering::SeqCst);
                i
            }
        }))
    }

    async fn numbers_then_panic(&self, n: u32) -> Stream<u32> {
        Stream::new(futures::stream::iter(0..=n).map(move |i| {
            if i == n {
                panic!("the stream broke after {n} items");
            }
            i
        }))
    }
}

/// A server on a fresh queue of `target`, and the queue's name.
pub async fn serve<S: Service>(
    target: &Target,
    builder: ServerBuilder,
    service: S,
) -> (Server, String) {
    let queue = crate::unique(service.name());
    let server = builder
        .queue_name(queue.clone())
        .serve(target.url(), service)
        .await
        .unwrap_or_else(|e| panic!("{target}: server failed to start: {e}"));
    (server, queue)
}

/// A calculator server on a fresh queue.
pub async fn serve_calculator(target: &Target, builder: ServerBuilder) -> (Server, String) {
    serve(target, builder, CalculatorServer::new(Calc::new())).await
}

/// Serves `probe` on a queue of its own, keeping a handle on it; returns the server and the
/// queue.
pub async fn serve_shared_probe(
    target: &Target,
    builder: ServerBuilder,
    probe: Arc<ProbeImpl>,
) -> (Server, String) {
    serve(target, builder, ProbeServer::from_arc(probe)).await
}

/// Serves a [`ProbeImpl`] on a queue of its own; returns the server and the queue.
pub async fn serve_probe(target: &Target, builder: ServerBuilder) -> (Server, String) {
    serve(target, builder, ProbeServer::new(ProbeImpl::default())).await
}

/// A calculator server on a fresh queue of the broker at `url`, a client, and a calculator
/// client addressing that queue (for tests that start a broker of their own rather than use a
/// [`Target`]); the last item is the queue's name.
pub async fn calculator_at(url: &str) -> (Server, Client, CalculatorClient, String) {
    let queue = crate::unique("calculator");
    let server = Server::builder()
        .queue_name(queue.clone())
        .serve(url, CalculatorServer::new(Calc::new()))
        .await
        .expect("calculator server");
    let client = Client::builder().connect(url).await.expect("rpc client");
    let calc = calculator(&client, &queue);
    (server, client, calc, queue)
}

/// A client of `target` with default settings.
pub async fn client(target: &Target) -> Client {
    Client::builder()
        .timeout(WAIT)
        .connect(target.url())
        .await
        .unwrap_or_else(|e| panic!("{target}: client failed to connect: {e}"))
}

/// A calculator client addressing `queue`.
pub fn calculator(client: &Client, queue: &str) -> CalculatorClient {
    CalculatorClient::new(client.clone()).with_options(CallOptions::new().service(queue))
}

/// A probe client addressing `queue`.
pub fn probe(client: &Client, queue: &str) -> ProbeClient {
    ProbeClient::new(client.clone()).with_options(CallOptions::new().service(queue))
}

/// A request built by hand, as any AMQP client could send it.
#[derive(Debug, Clone)]
pub struct RawRequest {
    /// The `type` property (method name), if any.
    pub method: Option<String>,
    /// The `content_type` property, if any.
    pub content_type: Option<String>,
    /// The call id (`message_id` and `correlation_id`).
    pub call_id: String,
    /// The body.
    pub body: Vec<u8>,
    /// The `x-warren-timeout-ms` header, if any.
    pub timeout_ms: Option<i64>,
    /// More headers, as sent.
    pub headers: Vec<(String, AMQPValue)>,
}

impl RawRequest {
    /// A JSON request for `method` with a fresh call id and a 5 s budget.
    pub fn json(method: &str, body: &str) -> Self {
        RawRequest {
            method: Some(method.to_owned()),
            content_type: Some("application/json".to_owned()),
            call_id: uuid::Uuid::new_v4().to_string(),
            body: body.as_bytes().to_vec(),
            timeout_ms: Some(WAIT.as_millis() as i64),
            headers: Vec::new(),
        }
    }

    /// A MessagePack request for `method` with a fresh call id and a 5 s budget.
    pub fn msgpack(method: &str, args: &impl Serialize) -> Self {
        RawRequest {
            content_type: Some("application/msgpack".to_owned()),
            body: rmp_serde::to_vec_named(args).expect("encodable arguments"),
            ..RawRequest::json(method, "")
        }
    }
}

/// A reply as it arrived.
#[derive(Debug, Clone)]
pub struct RawReply {
    /// Its `content_type`.
    pub content_type: Option<String>,
    /// Its `correlation_id`.
    pub correlation_id: Option<String>,
    /// Its `type` (`started`, `item`, `end` for notices and streams; none for a reply).
    pub kind: Option<String>,
    /// Its body.
    pub body: Vec<u8>,
}

impl RawReply {
    /// The body decoded by its content type (JSON or MessagePack) into a JSON value.
    pub fn json(&self) -> serde_json::Value {
        match self.content_type.as_deref() {
            Some("application/json") => serde_json::from_slice(&self.body)
                .unwrap_or_else(|e| panic!("reply is not JSON ({e}): {:?}", self.body)),
            _ => rmp_serde::from_slice(&self.body)
                .unwrap_or_else(|e| panic!("reply is not MessagePack ({e}): {:?}", self.body)),
        }
    }
}

/// Publishes raw requests to `queue` over direct reply-to and collects one reply per request,
/// in arrival order. Uses only lapin and the wire protocol.
pub async fn raw_calls(target: &Target, queue: &str, requests: &[RawRequest]) -> Vec<RawReply> {
    let (conn, channel) = target.open().await;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap_or_else(|e| panic!("{target}: confirm.select: {e}"));
    let mut replies = channel
        .basic_consume(
            "amq.rabbitmq.reply-to".into(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("{target}: consume direct reply-to: {e}"));
    for request in requests {
        let mut headers = FieldTable::default();
        headers.insert("x-warren-protocol".into(), AMQPValue::LongLongInt(1));
        headers.insert("x-warren-attempt".into(), AMQPValue::LongLongInt(1));
        if let Some(ms) = request.timeout_ms {
            headers.insert("x-warren-timeout-ms".into(), AMQPValue::LongLongInt(ms));
        }
        for (name, value) in &request.headers {
            headers.insert(name.as_str().into(), value.clone());
        }
        let mut props = BasicProperties::default()
            .with_correlation_id(request.call_id.as_str().into())
            .with_message_id(request.call_id.as_str().into())
            .with_reply_to("amq.rabbitmq.reply-to".into())
            .with_headers(headers);
        if let Some(method) = &request.method {
            props = props.with_type(method.as_str().into());
        }
        if let Some(ct) = &request.content_type {
            props = props.with_content_type(ct.as_str().into());
        }
        channel
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                &request.body,
                props,
            )
            .await
            .unwrap_or_else(|e| panic!("{target}: publish: {e}"))
            .await
            .unwrap_or_else(|e| panic!("{target}: confirm: {e}"));
    }
    let mut out = Vec::new();
    while out.len() < requests.len() {
        let delivery = tokio::time::timeout(WAIT, replies.next())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{target}: only {} of {} raw replies arrived",
                    out.len(),
                    requests.len()
                )
            })
            .unwrap_or_else(|| panic!("{target}: reply consumer ended"))
            .unwrap_or_else(|e| panic!("{target}: reply consumer failed: {e}"));
        out.push(RawReply {
            content_type: delivery
                .properties
                .content_type()
                .as_ref()
                .map(|c| c.to_string()),
            correlation_id: delivery
                .properties
                .correlation_id()
                .as_ref()
                .map(|c| c.to_string()),
            kind: delivery.properties.kind().as_ref().map(|k| k.to_string()),
            body: delivery.data,
        });
    }
    crate::close(conn).await;
    out
}

/// One raw call.
pub async fn raw_call(target: &Target, queue: &str, request: RawRequest) -> RawReply {
    raw_calls(target, queue, &[request])
        .await
        .pop()
        .expect("one reply")
}
