//! The client: one AMQP connection and channel multiplexing many concurrent calls.
//!
//! A call encodes its arguments, registers its call id in the correlation map
//! ([`InFlight`](crate::in_flight)), publishes the request with `mandatory` set and waits for its
//! reply until its deadline. One task reads the reply queue and completes calls by correlation
//! id; when the connection dies it fails every pending call at once.
//!
//! The reply is the call's acknowledgement, so calls are published without publisher confirms:
//! a confirm per call measured a quarter of the client's CPU time and a third of the broker's
//! at one caller (BENCHMARKS.md). A request no queue takes is still reported as
//! [`Error::ServiceUnavailable`] within milliseconds: the broker returns it (`mandatory`), and
//! while calls are pending a watcher collects returned requests every [`RETURN_POLL`] and fails
//! their calls. [`ClientBuilder::confirm_calls`] restores a confirm per call (then a request the
//! broker refuses, e.g. a full queue with `x-overflow = reject-publish`, fails at once with
//! [`Error::PublishRejected`] instead of waiting for its deadline). One-way calls
//! ([`Client::notify`]) have no reply, so they always wait for their confirm, on a channel of
//! their own.
//!
//! The connection is supervised ([`reconnect`](crate::reconnect)): when it dies, pending calls
//! of that session fail with [`Error::Connection`] and a new session (connection, channel,
//! reply consumer) is set up with backoff, on the next node that answers when the client was
//! given several broker URLs ([`ClientBuilder::urls`]). Each call runs under its [`RetryPolicy`]: a failed
//! attempt is sent again, with the same call id and the next `x-warren-attempt`, on the live
//! session, as long as the policy allows and the call's deadline is not reached.
//!
//! A broadcast ([`Client::broadcast_call`]) publishes one request to the service's fanout
//! exchange `warren.all.<service>`, which reaches every replica's instance queue, and collects
//! the replies with its call id until the deadline or the wanted number of replies. Client
//! layers ([`ClientBuilder::layer`]) wrap every call, one-way call and broadcast (streamed
//! calls do not pass them).
//!
//! Replies come through RabbitMQ's direct reply-to (`amq.rabbitmq.reply-to`) by default; when
//! the broker lacks it, the client declares an exclusive, server-named reply queue instead.
//!
//! A call asks servers for a `started` notice (`x-warren-notices`): a server whose handler runs
//! for more than a moment says so, and a call that reaches its deadline ends with
//! [`Error::DeadlineExceeded`] if a server said so, [`Error::Expired`] if none did. A call whose
//! future is dropped (or whose [`CancelToken`] is cancelled) after it was published sends a
//! `cancel` to [`wire::CONTROL_EXCHANGE`], which every server of the service hears. Every
//! request carries the W3C `traceparent` of its `warren.call` span ([`crate::trace`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime};

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, Consumer, ExchangeKind};
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::Serialize;
use tokio::task::JoinHandle;
use tower::{Layer, ServiceExt};
use tracing::Instrument;

use crate::cancel::CancelToken;
use crate::context::{unix_millis, CallId, Context};
use crate::error::Error;
use crate::in_flight::{InFlight, PendingReply, PendingStream, ReplyKind, ReplyMessage};
use crate::introspect::{self, PingReply, ServiceDescription, StatsReply};
use crate::middleware::{CallKind, ClientService, Layers, OutgoingCall, RawReply};
use crate::reconnect::{self, Endpoint, Link, Session, Tripwire};
use crate::retry::{AttemptFailure, RetryPolicy};
use crate::service::MethodSpec;
use crate::trace::TraceContext;
use crate::wire::{self, Codec, ReplyBody};

/// How the client receives replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ReplyQueue {
    /// Direct reply-to when the broker supports it, else an exclusive reply queue.
    #[default]
    Auto,
    /// Only direct reply-to (`amq.rabbitmq.reply-to`); connecting fails without it.
    DirectReplyTo,
    /// An exclusive, auto-deleted, server-named queue of this client.
    Exclusive,
}

/// Per-call settings, layered over the client's defaults. The generated clients carry one
/// (see their `with_timeout` and `with_options`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallOptions {
    timeout: Option<Duration>,
    service: Option<Arc<str>>,
    codec: Option<Codec>,
    retry: Option<RetryPolicy>,
    cancel: Option<CancelToken>,
    trace: Option<TraceContext>,
    stream_window: Option<u32>,
}

impl CallOptions {
    /// No overrides: the method's `timeout_ms`, else the client's default timeout.
    pub fn new() -> Self {
        CallOptions::default()
    }

    /// The budget of each call, overriding the method's and the client's default.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Sends calls to this service (queue) name instead of the one in the trait, for example a
    /// server started with [`ServerBuilder::queue_name`](crate::ServerBuilder::queue_name).
    pub fn service(mut self, name: impl Into<String>) -> Self {
        self.service = Some(Arc::from(name.into()));
        self
    }

    /// Encodes requests (and so replies) with this codec instead of the client's.
    pub fn codec(mut self, codec: Codec) -> Self {
        self.codec = Some(codec);
        self
    }

    /// Retries calls with this policy, overriding the client's policy for the method.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = Some(policy);
        self
    }

    /// Cancels calls made with these options when `token` is cancelled: the call returns
    /// [`Error::Cancelled`] (a stream ends with it) and the servers are told, as when the
    /// call's future is dropped.
    pub fn cancel_token(mut self, token: CancelToken) -> Self {
        self.cancel = Some(token);
        self
    }

    /// Sends this as the caller's span in `traceparent`/`tracestate` (the server's span becomes
    /// its child), instead of a span of the current handler's trace or a new trace. With the
    /// `opentelemetry` feature and an OpenTelemetry layer installed, the current span wins.
    pub fn trace(mut self, parent: TraceContext) -> Self {
        self.trace = Some(parent);
        self
    }

    /// How many items of a streamed reply may be on their way at once (32 unless set; at
    /// least 1): the flow-control window. The server sends no more until the caller has taken
    /// half of them, so a slow caller bounds what is buffered on both sides.
    pub fn stream_window(mut self, items: u32) -> Self {
        self.stream_window = Some(items.max(1));
        self
    }

    /// The timeout override, if any.
    pub fn timeout_override(&self) -> Option<Duration> {
        self.timeout
    }

    pub(crate) fn window(&self) -> usize {
        usize::try_from(self.stream_window.unwrap_or(DEFAULT_STREAM_WINDOW)).unwrap_or(1)
    }

    pub(crate) fn cancel(&self) -> Option<&CancelToken> {
        self.cancel.as_ref()
    }
}

/// The flow-control window of a streamed reply when the call does not set one.
const DEFAULT_STREAM_WINDOW: u32 = 32;

/// Settings of a broadcast ([`Client::broadcast_call`]): how long to collect replies, how many,
/// and where to send the request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BroadcastOptions {
    timeout: Option<Duration>,
    max_replies: Option<usize>,
    service: Option<Arc<str>>,
    exchange: Option<Arc<str>>,
    codec: Option<Codec>,
}

impl BroadcastOptions {
    /// Collect until the client's default timeout, from every replica.
    pub fn new() -> Self {
        BroadcastOptions::default()
    }

    /// How long to collect replies (the method's, else the client's default timeout, unless
    /// set). The broadcast returns what arrived by then.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Return as soon as this many replies arrived (at least 1).
    pub fn max_replies(mut self, n: usize) -> Self {
        self.max_replies = Some(n.max(1));
        self
    }

    /// Address the replicas of this service (queue) name instead of the method's.
    pub fn service(mut self, name: impl Into<String>) -> Self {
        self.service = Some(Arc::from(name.into()));
        self
    }

    /// Publish to this fanout exchange instead of `warren.all.<service>`: for example
    /// [`introspect::DISCOVERY_EXCHANGE`], which reaches every server of every service.
    pub fn exchange(mut self, name: impl Into<String>) -> Self {
        self.exchange = Some(Arc::from(name.into()));
        self
    }

    /// Encode the request (and so the replies) with this codec instead of the client's.
    pub fn codec(mut self, codec: Codec) -> Self {
        self.codec = Some(codec);
        self
    }
}

impl From<&CallOptions> for BroadcastOptions {
    /// The timeout, service name and codec of `options`, for a broadcast of the same calls.
    fn from(options: &CallOptions) -> Self {
        BroadcastOptions {
            timeout: options.timeout,
            service: options.service.clone(),
            codec: options.codec,
            ..BroadcastOptions::default()
        }
    }
}

/// One replica's answer to a broadcast.
#[derive(Debug, Clone)]
pub struct Replica<T> {
    /// The instance id of the replica (as in `$ping`), when its reply said.
    pub instance: Option<String>,
    /// Its reply, decoded; a fault or an undecodable reply is an error of this replica only.
    pub result: Result<T, Error>,
}

/// Builds a [`Client`].
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    timeout: Duration,
    codec: Codec,
    reply_queue: ReplyQueue,
    connection_name: String,
    retry: RetryPolicy,
    method_retry: HashMap<String, RetryPolicy>,
    heartbeat: Duration,
    confirm_calls: bool,
    layers: Layers<ClientService>,
    more_urls: Vec<String>,
    tls: crate::Tls,
}

impl Default for ClientBuilder {
    fn default() -> Self {
        ClientBuilder {
            timeout: Duration::from_secs(30),
            codec: Codec::MsgPack,
            reply_queue: ReplyQueue::Auto,
            connection_name: "warren-client".to_owned(),
            retry: RetryPolicy::default(),
            method_retry: HashMap::new(),
            heartbeat: DEFAULT_HEARTBEAT,
            confirm_calls: false,
            layers: Layers::default(),
            more_urls: Vec::new(),
            tls: crate::Tls::default(),
        }
    }
}

impl ClientBuilder {
    /// The default budget of a call (30 s unless set), used when neither the call nor the
    /// method sets one.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The codec of requests and replies (MessagePack unless set).
    pub fn codec(mut self, codec: Codec) -> Self {
        self.codec = codec;
        self
    }

    /// How replies are received ([`ReplyQueue::Auto`] unless set).
    pub fn reply_queue(mut self, reply_queue: ReplyQueue) -> Self {
        self.reply_queue = reply_queue;
        self
    }

    /// The connection name shown in the broker's management tools, followed by
    /// `@{host}:{port}` of the node the client is on (`warren-client` unless set).
    pub fn connection_name(mut self, name: impl Into<String>) -> Self {
        self.connection_name = name.into();
        self
    }

    /// How calls are retried ([`RetryPolicy::default`] unless set). Methods named in
    /// [`ClientBuilder::method_retry`] and calls with [`CallOptions::retry`] override it.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// How calls of the method named `method` are retried, on any service.
    pub fn method_retry(mut self, method: impl Into<String>, policy: RetryPolicy) -> Self {
        self.method_retry.insert(method.into(), policy);
        self
    }

    /// The heartbeat interval asked of the broker (10 s unless set; whole seconds, 0 turns
    /// heartbeats off). A connection silent for two intervals counts as dead and is replaced.
    /// A `heartbeat` parameter in the URL wins.
    pub fn heartbeat(mut self, interval: Duration) -> Self {
        self.heartbeat = interval;
        self
    }

    /// Whether each call waits for the broker's publisher confirm before waiting for its reply
    /// (off unless set). Off, the reply is the acknowledgement and a returned request still
    /// fails with [`Error::ServiceUnavailable`] within milliseconds; on, a call also learns at
    /// once that the broker refused its request ([`Error::PublishRejected`]), at the price of a
    /// confirm frame per call.
    pub fn confirm_calls(mut self, confirm: bool) -> Self {
        self.confirm_calls = confirm;
        self
    }

    /// Wraps every call, one-way call and broadcast in a tower layer; the first layer added is
    /// the outermost. See [`crate::middleware`].
    ///
    /// ```
    /// # use warren_rpc::{middleware::LoggingLayer, Client};
    /// let builder = Client::builder().layer(LoggingLayer);
    /// ```
    pub fn layer<L>(mut self, layer: L) -> Self
    where
        L: Layer<ClientService> + Send + Sync + 'static,
        L::Service: tower::Service<OutgoingCall, Response = Vec<RawReply>, Error = Error>
            + Clone
            + Send
            + Sync
            + 'static,
        <L::Service as tower::Service<OutgoingCall>>::Future: Send + 'static,
    {
        self.layers
            .push(move |inner| ClientService::new(layer.layer(inner)));
        self
    }

    /// More broker URLs, tried in turn after the one given to [`ClientBuilder::connect`]: the
    /// other nodes of a RabbitMQ cluster. When the client's node goes away, it reconnects to
    /// the next node that answers. Calls the builder's earlier `urls` replaces.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), warren_rpc::Error> {
    /// let client = warren_rpc::Client::builder()
    ///     .urls(["amqp://guest:guest@rabbit-2:5672/%2f", "amqp://guest:guest@rabbit-3:5672/%2f"])
    ///     .confirm_calls(true)
    ///     .connect("amqp://guest:guest@rabbit-1:5672/%2f")
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn urls<I, U>(mut self, urls: I) -> Self
    where
        I: IntoIterator<Item = U>,
        U: Into<String>,
    {
        self.more_urls = urls.into_iter().map(Into::into).collect();
        self
    }

    /// TLS settings for `amqps://` URLs: a CA to trust besides the system's, a client
    /// certificate ([`Tls`](crate::Tls)). Ignored for `amqp://` URLs.
    pub fn tls(mut self, tls: crate::Tls) -> Self {
        self.tls = tls;
        self
    }

    /// Connects to the broker at `url` (`amqp://user:pass@host:port/vhost`), or, when it does
    /// not answer, to the first of the builder's [`urls`](ClientBuilder::urls) that does.
    ///
    /// The first connection must succeed; after that the client reconnects by itself whenever
    /// the connection dies, starting with the next node. The connection is named
    /// `{connection_name}@{host}:{port}` after the node it is on.
    pub async fn connect(self, url: &str) -> Result<Client, Error> {
        let urls = node_urls(url, &self.more_urls);
        let endpoint = Endpoint::new(&urls, &self.connection_name, heartbeat_secs(self.heartbeat))?
            .with_tls(self.tls.clone());
        let connection = endpoint.connect().await?;
        let settings = SessionSettings {
            mode: self.reply_queue,
            confirm_calls: self.confirm_calls,
            stale_after_nacks: (urls.len() > 1).then_some(STALE_CHANNEL_NACKS),
        };
        let first = open_session(connection, settings)
            .await
            .map_err(|(_, err)| err)?;
        tracing::debug!(reply_to = %first.reply_to, "warren client connected");
        let (link, supervisor) =
            reconnect::supervise(endpoint, Arc::new(first), move |connection| {
                open_session(connection, settings)
            });
        let layers = self.layers;
        Ok(Client {
            inner: Arc::new_cyclic(|weak| ClientInner {
                link,
                default_timeout: self.timeout,
                codec: self.codec,
                retry: self.retry,
                method_retry: self.method_retry,
                supervisor,
                // The innermost service holds the client weakly: the client owns its layers.
                layered: (!layers.is_empty())
                    .then(|| layers.apply(ClientService::new(CoreCalls(weak.clone())))),
            }),
        })
    }
}

/// `first`, then the other URLs that differ from every earlier one.
pub(crate) fn node_urls<'a>(first: &'a str, more: &'a [String]) -> Vec<&'a str> {
    let mut urls = vec![first];
    for url in more {
        if !urls.contains(&url.as_str()) {
            urls.push(url);
        }
    }
    urls
}

/// The heartbeat asked of the broker when the builder does not set one.
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(10);

/// A heartbeat interval in whole seconds, as AMQP negotiates it.
pub(crate) fn heartbeat_secs(interval: Duration) -> Option<u16> {
    Some(u16::try_from(interval.as_secs()).unwrap_or(u16::MAX))
}

/// How often pending calls are checked against the requests the broker returned, when calls
/// are published without confirms.
pub(crate) const RETURN_POLL: Duration = Duration::from_millis(5);

/// How many publishes in a row a channel may see nacked before a client with several broker
/// URLs replaces its session.
///
/// RabbitMQ 3.10 keeps nacking every publish to a quorum queue on a channel that first published
/// to it while its leader was down, long after a new leader was elected (a fresh channel's
/// publishes are acked at once): measured, more than 12 s on the 3-node test cluster.
/// A client of a cluster takes a run of nacks as that and starts a new session (the calls
/// pending on the old one are retried); a client of one broker, where a leader cannot move,
/// keeps its session.
const STALE_CHANNEL_NACKS: u32 = 3;

/// What every session of a client is set up with.
#[derive(Debug, Clone, Copy)]
struct SessionSettings {
    mode: ReplyQueue,
    confirm_calls: bool,
    /// Replace the session after this many nacks in a row (clients of a cluster).
    stale_after_nacks: Option<u32>,
}

/// One connection's worth of client state: the channel calls are published on, the reply
/// consumer, and the calls waiting for a reply on it.
pub(crate) struct ClientSession {
    connection: Connection,
    /// Calls go out here (and replies come in, for direct reply-to).
    channel: Channel,
    /// Whether `channel` is in confirm mode.
    confirm_calls: bool,
    /// One-way calls go out here, in confirm mode (`channel` itself when it is).
    notify_channel: Channel,
    reply_to: ShortString,
    /// Whether the control exchange exists, so cancels can be published to it.
    control: bool,
    in_flight: Arc<InFlight>,
    tripwire: Tripwire,
    reader: JoinHandle<()>,
    /// Fails calls whose request came back, when calls are not confirmed.
    returns: Option<JoinHandle<()>>,
    /// Publishes nacked since the last ack.
    nacks: NackStreak,
}

/// Counts publishes nacked in a row on a channel, up to a limit that makes it stale.
#[derive(Debug)]
struct NackStreak {
    in_a_row: AtomicU32,
    limit: Option<u32>,
}

impl NackStreak {
    fn new(limit: Option<u32>) -> Self {
        NackStreak {
            in_a_row: AtomicU32::new(0),
            limit,
        }
    }

    /// Records a confirm; returns the streak when a nack makes it reach the limit (and every
    /// nack after that).
    fn record(&self, acked: bool) -> Option<u32> {
        if acked {
            self.in_a_row.store(0, Ordering::Relaxed);
            return None;
        }
        let nacks = self
            .in_a_row
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        self.limit.filter(|limit| nacks >= *limit).map(|_| nacks)
    }
}

impl Session for ClientSession {
    fn connection(&self) -> &Connection {
        &self.connection
    }

    fn tripwire(&self) -> &Tripwire {
        &self.tripwire
    }

    fn died(&self, reason: &str) {
        self.end(Error::Connection {
            reason: reason.to_owned(),
        });
    }
}

impl ClientSession {
    /// Counts a publisher confirm; a run of nacks on a client of a cluster trips the session
    /// (see [`STALE_CHANNEL_NACKS`]).
    fn confirmed(&self, acked: bool) {
        if let Some(nacks) = self.nacks.record(acked) {
            self.tripwire.trip(format!(
                "{nacks} publishes in a row were nacked on this channel; replacing the session \
                 (a quorum queue's leader may have moved)"
            ));
        }
    }

    /// Fails every pending call (and later ones) with `err` and stops the session's tasks.
    fn end(&self, err: Error) {
        self.in_flight.fail_all(err);
        self.reader.abort();
        if let Some(returns) = &self.returns {
            returns.abort();
        }
    }
}

/// Sets up a session on a fresh connection; on failure hands the connection back to be closed.
async fn open_session(
    connection: Connection,
    settings: SessionSettings,
) -> Result<ClientSession, (Connection, Error)> {
    let SessionSettings {
        mode,
        confirm_calls,
        stale_after_nacks,
    } = settings;
    let (channel, consumer, reply_to) =
        match open_reply_channel(&connection, mode, confirm_calls).await {
            Ok(opened) => opened,
            Err(err) => return Err((connection, err)),
        };
    let control = declare_control_exchange(&connection).await;
    let notify_channel = if confirm_calls {
        channel.clone()
    } else {
        match confirmed_channel(&connection).await {
            Ok(notify_channel) => notify_channel,
            Err(err) => return Err((connection, err)),
        }
    };
    let in_flight = Arc::new(InFlight::default());
    let tripwire = Tripwire::new();
    let reader = tokio::spawn(read_replies(
        consumer,
        Arc::clone(&in_flight),
        tripwire.clone(),
    ));
    let returns = (!confirm_calls)
        .then(|| tokio::spawn(watch_returns(channel.clone(), Arc::clone(&in_flight))));
    Ok(ClientSession {
        connection,
        channel,
        confirm_calls,
        notify_channel,
        reply_to: ShortString::from(reply_to),
        control,
        in_flight,
        tripwire,
        reader,
        returns,
        nacks: NackStreak::new(stale_after_nacks),
    })
}

/// Declares the control exchange cancels go to, on a channel of its own: a broker that refuses
/// (a user without the permission) closes that channel only, and the session works without
/// cancellation. Returns whether the exchange is there.
async fn declare_control_exchange(connection: &Connection) -> bool {
    let declared = async {
        let channel = connection
            .create_channel()
            .await
            .map_err(Error::connection)?;
        crate::server::declare_control_exchange(&channel).await?;
        let _ = channel.close(200, "control exchange declared".into()).await;
        Ok::<_, Error>(())
    };
    match declared.await {
        Ok(()) => true,
        Err(err) => {
            tracing::warn!(%err, "cannot declare the control exchange; calls cannot be cancelled");
            false
        }
    }
}

/// While calls are pending, collects the requests the broker returned (no queue took them)
/// every [`RETURN_POLL`] and fails their calls with [`Error::ServiceUnavailable`]. lapin keeps
/// the returns of a channel without confirms until asked, and tells nobody: hence the polling,
/// which stops while no call is pending.
async fn watch_returns(channel: Channel, in_flight: Arc<InFlight>) {
    loop {
        in_flight.wait_busy().await;
        tokio::time::sleep(RETURN_POLL).await;
        // Without confirms this does not wait: it hands over the returns collected so far.
        let Ok(returned) = channel.wait_for_confirms().await else {
            // The channel is gone; the reader notices and fails what is pending.
            return;
        };
        for message in returned {
            let Some(id) = message.delivery.properties.correlation_id() else {
                continue;
            };
            let service = message.delivery.routing_key.as_str().to_owned();
            tracing::debug!(%service, reply_code = message.reply_code, "request returned by the broker");
            in_flight.fail(
                &CallId::from_wire(id.as_str()),
                Error::ServiceUnavailable { service },
            );
        }
    }
}

/// Opens the channel requests are published on and replies consumed from.
async fn open_reply_channel(
    connection: &Connection,
    mode: ReplyQueue,
    confirm_calls: bool,
) -> Result<(Channel, Consumer, String), Error> {
    let open = || async {
        if confirm_calls {
            confirmed_channel(connection).await
        } else {
            connection.create_channel().await.map_err(Error::connection)
        }
    };
    if mode != ReplyQueue::Exclusive {
        let channel = open().await?;
        let direct = channel
            .basic_consume(
                wire::DIRECT_REPLY_TO.into(),
                "".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..BasicConsumeOptions::default()
                },
                FieldTable::default(),
            )
            .await;
        match direct {
            Ok(consumer) => return Ok((channel, consumer, wire::DIRECT_REPLY_TO.to_owned())),
            Err(err) if mode == ReplyQueue::DirectReplyTo => return Err(Error::connection(err)),
            // The broker closed the channel (404): fall back to a queue of our own.
            Err(err) => tracing::debug!(%err, "direct reply-to unavailable, using a reply queue"),
        }
    }
    let channel = open().await?;
    let queue = channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(Error::connection)?;
    let name = queue.name().as_str().to_owned();
    let consumer = channel
        .basic_consume(
            queue.name().clone(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                exclusive: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(Error::connection)?;
    Ok((channel, consumer, name))
}

async fn confirmed_channel(connection: &Connection) -> Result<Channel, Error> {
    let channel = connection
        .create_channel()
        .await
        .map_err(Error::connection)?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(Error::connection)?;
    Ok(channel)
}

/// Completes calls with the replies on the reply queue, and fails them all (and trips the
/// session) when it ends.
async fn read_replies(mut consumer: Consumer, in_flight: Arc<InFlight>, tripwire: Tripwire) {
    while let Some(delivery) = consumer.next().await {
        match delivery {
            Ok(delivery) => {
                let Some(id) = delivery.properties.correlation_id() else {
                    tracing::debug!("ignoring a reply without correlation_id");
                    continue;
                };
                let id = CallId::from_wire(id.as_str());
                let props = &delivery.properties;
                let kind = match props.kind().as_ref().map(|k| k.as_str()) {
                    Some(wire::KIND_STARTED) => ReplyKind::Started,
                    Some(wire::KIND_ITEM) => ReplyKind::Item,
                    Some(wire::KIND_END) => ReplyKind::End,
                    _ => ReplyKind::Final,
                };
                let server = wire::header_str(props.headers().as_ref(), wire::HEADER_SERVER)
                    .map(str::to_owned);
                let instance = wire::header_str(props.headers().as_ref(), wire::HEADER_INSTANCE)
                    .map(str::to_owned);
                let reply = ReplyMessage {
                    kind,
                    server,
                    instance,
                    content_type: delivery
                        .properties
                        .content_type()
                        .as_ref()
                        .map(|c| c.as_str().to_owned()),
                    body: delivery.data,
                };
                if !in_flight.complete(&id, reply) {
                    tracing::debug!(call_id = %id, "late or unknown reply dropped");
                }
            }
            Err(err) => {
                let err = Error::connection(err);
                tripwire.trip(err.to_string());
                in_flight.fail_all(err);
                return;
            }
        }
    }
    let err = Error::Connection {
        reason: "the reply consumer was cancelled".into(),
    };
    tripwire.trip(err.to_string());
    in_flight.fail_all(err);
}

struct ClientInner {
    link: Arc<Link<ClientSession>>,
    default_timeout: Duration,
    codec: Codec,
    retry: RetryPolicy,
    method_retry: HashMap<String, RetryPolicy>,
    supervisor: JoinHandle<()>,
    /// The client layers over [`CoreCalls`]; `None` without layers.
    layered: Option<ClientService>,
}

/// The innermost client service: runs an [`OutgoingCall`] on the client, if it still exists.
#[derive(Clone)]
struct CoreCalls(Weak<ClientInner>);

impl tower::Service<OutgoingCall> for CoreCalls {
    type Response = Vec<RawReply>;
    type Error = Error;
    type Future = BoxFuture<'static, Result<Vec<RawReply>, Error>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: OutgoingCall) -> Self::Future {
        let inner = self.0.upgrade();
        Box::pin(async move {
            match inner {
                Some(inner) => Client { inner }.execute(&call).await,
                None => Err(Error::Shutdown),
            }
        })
    }
}

impl Drop for ClientInner {
    fn drop(&mut self) {
        self.supervisor.abort();
        if let Some(session) = self.link.close() {
            session.end(Error::Shutdown);
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    let _ = session.connection.close(200, "client dropped".into()).await;
                });
            }
        }
    }
}

/// A connection to the broker that makes calls. Cheap to clone; clones share the connection.
///
/// Use it through a generated client (`CalculatorClient::new(client)`); the methods here are the
/// runtime API that generated code calls.
#[derive(Clone)]
pub struct Client {
    inner: Arc<ClientInner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("reply_to", &self.reply_to())
            .field("default_timeout", &self.inner.default_timeout)
            .field("codec", &self.inner.codec)
            .field("retry", &self.inner.retry)
            .field("in_flight", &self.pending_calls())
            .finish()
    }
}

/// What one publication of a request waits for.
pub(crate) enum Sent {
    /// Nothing (a one-way call).
    Nothing,
    /// One reply.
    Reply(PendingReply),
    /// The messages of a stream.
    Stream(PendingStream),
}

/// Everything about one call that stays the same across its attempts.
pub(crate) struct Call<'a> {
    pub(crate) service: &'a str,
    pub(crate) method: &'a MethodSpec,
    pub(crate) call_id: &'a CallId,
    pub(crate) codec: Codec,
    pub(crate) body: &'a [u8],
    pub(crate) deadline: Instant,
    pub(crate) timeout: Duration,
    pub(crate) policy: RetryPolicy,
    pub(crate) expect_reply: bool,
    /// The credit granted to a streamed reply; `None` for other calls.
    pub(crate) stream_credit: Option<usize>,
    /// The caller's span, sent as `traceparent`.
    pub(crate) trace: &'a TraceContext,
    /// Set once a server reported that it took the call.
    pub(crate) started: Arc<AtomicBool>,
    /// Set once a request of the call was handed to the connection.
    pub(crate) published: AtomicBool,
    /// Application headers (set by client layers).
    pub(crate) headers: &'a BTreeMap<String, String>,
    /// For a broadcast: the fanout exchange to publish to (the caller registered for replies).
    pub(crate) exchange: Option<&'a str>,
}

/// No application headers.
pub(crate) static NO_HEADERS: BTreeMap<String, String> = BTreeMap::new();

impl<'a> Call<'a> {
    fn of(call: &'a OutgoingCall, exchange: Option<&'a str>) -> Self {
        Call {
            service: &call.service,
            method: &call.method,
            call_id: &call.call_id,
            codec: call.codec,
            body: &call.body,
            deadline: call.deadline,
            timeout: call.timeout,
            policy: call.policy,
            expect_reply: call.kind == CallKind::Call,
            stream_credit: None,
            trace: &call.trace,
            started: Arc::default(),
            published: AtomicBool::new(false),
            headers: &call.headers,
            exchange,
        }
    }
}

impl Call<'_> {
    /// The error of a call that reached its deadline: whether a server reported it started.
    fn out_of_time(&self) -> Error {
        if self.started.load(Ordering::SeqCst) {
            Error::DeadlineExceeded {
                timeout: self.timeout,
            }
        } else {
            Error::Expired {
                timeout: self.timeout,
            }
        }
    }
}

/// Tells the servers of a call that its caller gave up on it, unless disarmed: dropped with
/// the future of a call that was published and has not finished.
struct CancelOnDrop<'a> {
    client: &'a Client,
    call: &'a Call<'a>,
    armed: bool,
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        if self.armed && self.call.published.load(Ordering::SeqCst) {
            self.client
                .send_cancel(self.call.service, self.call.call_id, self.call.deadline);
        }
    }
}

/// Trips a session whose channel failed under a publish, and turns the error into ours.
fn broken(session: &ClientSession, err: lapin::Error) -> Error {
    let err = Error::connection(err);
    session.tripwire.trip(err.to_string());
    err
}

impl Client {
    /// A builder for a client with non-default settings.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// Connects with default settings: 30 s timeout, MessagePack, direct reply-to if available.
    pub async fn connect(url: &str) -> Result<Client, Error> {
        ClientBuilder::default().connect(url).await
    }

    /// The queue replies come to on the current connection (`amq.rabbitmq.reply-to` or the
    /// client's own queue, which changes when the client reconnects); empty while reconnecting.
    pub fn reply_to(&self) -> String {
        self.inner
            .link
            .current()
            .map(|s| s.reply_to.as_str().to_owned())
            .unwrap_or_default()
    }

    /// How many calls are waiting for a reply on the current connection.
    pub fn pending_calls(&self) -> usize {
        self.inner
            .link
            .current()
            .map(|s| s.in_flight.len())
            .unwrap_or(0)
    }

    /// Whether the client has a live connection right now (false while reconnecting).
    pub fn is_connected(&self) -> bool {
        self.inner
            .link
            .current()
            .is_some_and(|s| !s.tripwire.is_tripped())
    }

    /// Closes the connection and stops reconnecting; pending calls end with
    /// [`Error::Shutdown`], and so does every later call.
    pub async fn close(&self) {
        if let Some(session) = self.inner.link.close() {
            session.end(Error::Shutdown);
            reconnect::close_quietly(&session.connection, "client closed").await;
        }
    }

    /// Calls a method returning a plain value `T`.
    pub async fn call<A, T>(
        &self,
        method: &MethodSpec,
        args: &A,
        options: &CallOptions,
    ) -> Result<T, Error>
    where
        A: Serialize,
        T: DeserializeOwned,
    {
        match self
            .invoke::<A, T, IgnoredAny>(method, args, options)
            .await?
        {
            Ok(value) => Ok(value),
            Err(_) => Err(Error::Decode {
                reason: format!(
                    "`{}` has no application error, but the server replied with \"err\"",
                    method.name
                ),
            }),
        }
    }

    /// Calls a method returning `Result<T, E>`: the outer `Result` is the framework's, the
    /// inner one the method's.
    pub async fn call_fallible<A, T, E>(
        &self,
        method: &MethodSpec,
        args: &A,
        options: &CallOptions,
    ) -> Result<Result<T, E>, Error>
    where
        A: Serialize,
        T: DeserializeOwned,
        E: DeserializeOwned,
    {
        self.invoke(method, args, options).await
    }

    /// Sends a one-way call: no reply is requested. Returns once the broker confirmed the
    /// request (or returned it: [`Error::ServiceUnavailable`]).
    pub async fn notify<A: Serialize>(
        &self,
        method: &MethodSpec,
        args: &A,
        options: &CallOptions,
    ) -> Result<(), Error> {
        let (service, codec, deadline, timeout) = self.plan(method, options);
        let body = codec
            .encode(args)
            .map_err(|reason| Error::Encode { reason })?;
        let (call, span) = self.outgoing(method, options, service, codec, body, deadline, timeout);
        self.send(call, CallKind::Notify)
            .instrument(span)
            .await
            .map(|_| ())
    }

    /// Calls `method` with arguments already encoded in `codec` and returns the reply
    /// undecoded: for tools that handle values they have no Rust type for (the `warren`
    /// command line sends JSON this way).
    pub async fn call_raw(
        &self,
        method: &MethodSpec,
        codec: Codec,
        body: Vec<u8>,
        options: &CallOptions,
    ) -> Result<RawReply, Error> {
        let (service, _, deadline, timeout) = self.plan(method, options);
        let (call, span) = self.outgoing(method, options, service, codec, body, deadline, timeout);
        let replies = self.send(call, CallKind::Call).instrument(span).await?;
        replies.into_iter().next().ok_or_else(|| Error::Decode {
            reason: "no reply was requested".into(),
        })
    }

    /// Calls `method` on every replica of its service and collects the replies until the
    /// deadline or [`BroadcastOptions::max_replies`] replies, whichever comes first.
    ///
    /// The request goes to the fanout exchange `warren.all.<service>`, which every server binds
    /// its instance queue to (see [`crate::introspect`]). Each replica's reply is decoded on its
    /// own: a fault from one is an `Err` in its [`Replica`], not a failure of the broadcast.
    /// Fails with [`Error::ServiceUnavailable`] when no replica is running; returns the replies
    /// that arrived (possibly none) when the deadline passes. A broadcast is not retried.
    pub async fn broadcast_call<A, T>(
        &self,
        method: &MethodSpec,
        args: &A,
        options: &BroadcastOptions,
    ) -> Result<Vec<Replica<T>>, Error>
    where
        A: Serialize,
        T: DeserializeOwned,
    {
        let replies = self
            .broadcast_fallible::<A, T, IgnoredAny>(method, args, options)
            .await?;
        Ok(replies
            .into_iter()
            .map(|replica| Replica {
                instance: replica.instance,
                result: replica.result.and_then(|r| {
                    r.map_err(|_| Error::Decode {
                        reason: format!(
                            "`{}` has no application error, but a server replied with \"err\"",
                            method.name
                        ),
                    })
                }),
            })
            .collect())
    }

    /// [`Client::broadcast_call`] for a method returning `Result<T, E>`.
    pub async fn broadcast_fallible<A, T, E>(
        &self,
        method: &MethodSpec,
        args: &A,
        options: &BroadcastOptions,
    ) -> Result<Vec<Replica<Result<T, E>>>, Error>
    where
        A: Serialize,
        T: DeserializeOwned,
        E: DeserializeOwned,
    {
        let codec = options.codec.unwrap_or(self.inner.codec);
        let body = codec
            .encode(args)
            .map_err(|reason| Error::Encode { reason })?;
        let replies = self.broadcast_raw(method, codec, body, options).await?;
        Ok(replies
            .iter()
            .map(|reply| Replica {
                instance: reply.instance.clone(),
                result: decode_raw(reply),
            })
            .collect())
    }

    /// [`Client::broadcast_call`] with arguments already encoded in `codec`, returning the
    /// replies undecoded.
    pub async fn broadcast_raw(
        &self,
        method: &MethodSpec,
        codec: Codec,
        body: Vec<u8>,
        options: &BroadcastOptions,
    ) -> Result<Vec<RawReply>, Error> {
        let mut call_options = CallOptions::new().codec(codec);
        if let Some(timeout) = options.timeout {
            call_options = call_options.timeout(timeout);
        }
        if let Some(service) = &options.service {
            call_options = call_options.service(service.to_string());
        }
        let (service, _, deadline, timeout) = self.plan(method, &call_options);
        let (call, span) = self.outgoing(
            method,
            &call_options,
            service,
            codec,
            body,
            deadline,
            timeout,
        );
        let kind = CallKind::Broadcast {
            max_replies: options.max_replies,
            exchange: options.exchange.clone(),
        };
        self.send(call, kind).instrument(span).await
    }

    /// Asks one replica of `service` who it is (`$ping`).
    pub async fn ping(&self, service: &str) -> Result<PingReply, Error> {
        self.reserved(service, introspect::PING).await
    }

    /// Asks one replica of `service` for its methods (`$describe`).
    pub async fn describe(&self, service: &str) -> Result<ServiceDescription, Error> {
        self.reserved(service, introspect::DESCRIBE).await
    }

    /// Asks one replica of `service` for its per-method counters (`$stats`).
    pub async fn stats(&self, service: &str) -> Result<StatsReply, Error> {
        self.reserved(service, introspect::STATS).await
    }

    /// Pings every replica of `service` and collects the answers until `timeout` (or the
    /// client's default timeout) or `max_replies`.
    pub async fn ping_all(
        &self,
        service: &str,
        options: &BroadcastOptions,
    ) -> Result<Vec<Replica<PingReply>>, Error> {
        let method = introspect::reserved_method("", introspect::PING);
        let options = options.clone().service(service);
        self.broadcast_call(&method, &NoArgs {}, &options).await
    }

    async fn reserved<T: DeserializeOwned>(
        &self,
        service: &str,
        name: &'static str,
    ) -> Result<T, Error> {
        let method = introspect::reserved_method("", name);
        self.call(&method, &NoArgs {}, &CallOptions::new().service(service))
            .await
    }

    /// The one-time parts of a call, before any layer sees it.
    #[allow(clippy::too_many_arguments)]
    fn outgoing(
        &self,
        method: &MethodSpec,
        options: &CallOptions,
        service: String,
        codec: Codec,
        body: Vec<u8>,
        deadline: Instant,
        timeout: Duration,
    ) -> (OutgoingCall, tracing::Span) {
        let call_id = CallId::random();
        let span = call_span(&service, method, &call_id);
        let trace = call_trace(&span, options);
        let call = OutgoingCall {
            service,
            method: *method,
            call_id,
            codec,
            body,
            headers: BTreeMap::new(),
            deadline,
            timeout,
            policy: self.policy(method, options),
            kind: CallKind::Call,
            trace,
            cancel: options.cancel().cloned(),
        };
        (call, span)
    }

    /// Sends a call through the client's layers, if any.
    async fn send(&self, mut call: OutgoingCall, kind: CallKind) -> Result<Vec<RawReply>, Error> {
        call.kind = kind;
        match &self.inner.layered {
            Some(layered) => layered.clone().oneshot(call).await,
            None => self.execute(&call).await,
        }
    }

    /// Runs a call as the innermost service: its attempts, or its broadcast.
    async fn execute(&self, call: &OutgoingCall) -> Result<Vec<RawReply>, Error> {
        match &call.kind {
            CallKind::Notify => {
                self.run(&Call::of(call, None)).await?;
                Ok(Vec::new())
            }
            CallKind::Call => {
                let attempts = Call::of(call, None);
                // Dropping this future before the reply tells the servers to cancel the call.
                let mut cancel_on_drop = CancelOnDrop {
                    client: self,
                    call: &attempts,
                    armed: true,
                };
                let run = self.run(&attempts);
                let outcome = match &call.cancel {
                    Some(token) => tokio::select! {
                        outcome = run => outcome,
                        () = token.cancelled() => Err(Error::Cancelled),
                    },
                    None => run.await,
                };
                cancel_on_drop.armed = matches!(outcome, Err(Error::Cancelled));
                drop(cancel_on_drop);
                Ok(outcome?.into_iter().map(RawReply::from).collect())
            }
            CallKind::Broadcast {
                max_replies,
                exchange,
            } => {
                let exchange = match exchange {
                    Some(exchange) => exchange.to_string(),
                    None => introspect::all_exchange(&call.service),
                };
                self.broadcast(&Call::of(call, Some(&exchange)), *max_replies)
                    .await
            }
        }
    }

    /// One broadcast: check that the exchange exists (no exchange: no replica ever started),
    /// publish once, collect replies until the deadline or `max_replies`.
    async fn broadcast(
        &self,
        call: &Call<'_>,
        max_replies: Option<usize>,
    ) -> Result<Vec<RawReply>, Error> {
        let exchange = call.exchange.unwrap_or_default();
        let session = self.inner.link.session(call.deadline).await?;
        let probe = session
            .connection
            .create_channel()
            .await
            .map_err(Error::connection)?;
        let exists = probe
            .exchange_declare(
                ShortString::try_new(exchange).map_err(|e| Error::Config {
                    reason: format!("broadcast exchange name: {e}"),
                })?,
                ExchangeKind::Fanout,
                ExchangeDeclareOptions {
                    passive: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await;
        match exists {
            // A passive declare of a missing exchange closes the probe channel (404).
            Err(_) => {
                return Err(Error::ServiceUnavailable {
                    service: call.service.to_owned(),
                })
            }
            Ok(()) => {
                let _ = probe.close(200, "broadcast probe".into()).await;
            }
        }
        let mut pending = session.in_flight.register_many(call.call_id.clone())?;
        self.publish(&session, call, 1).await?;
        let mut replies = Vec::new();
        while max_replies.is_none_or(|max| replies.len() < max) {
            match tokio::time::timeout_at(call.deadline.into(), pending.next()).await {
                Err(_) => break,
                Ok(Ok(reply)) => replies.push(RawReply::from(reply)),
                Ok(Err(err)) if replies.is_empty() => return Err(err),
                Ok(Err(_)) => break,
            }
        }
        Ok(replies)
    }

    async fn invoke<A, T, E>(
        &self,
        method: &MethodSpec,
        args: &A,
        options: &CallOptions,
    ) -> Result<Result<T, E>, Error>
    where
        A: Serialize,
        T: DeserializeOwned,
        E: DeserializeOwned,
    {
        let (service, codec, deadline, timeout) = self.plan(method, options);
        let body = codec
            .encode(args)
            .map_err(|reason| Error::Encode { reason })?;
        let (call, span) = self.outgoing(method, options, service, codec, body, deadline, timeout);
        let result = match self
            .send(call, CallKind::Call)
            .instrument(span.clone())
            .await
        {
            Ok(replies) => match replies.first() {
                Some(reply) => decode_raw(reply),
                None => Err(Error::Decode {
                    reason: "no reply was requested".into(),
                }),
            },
            Err(err) => Err(err),
        };
        if let Err(err) = &result {
            span.in_scope(|| tracing::debug!(%err, "call failed"));
        }
        result
    }

    /// The retry policy of a call: the call's, else the method's, else the client's.
    fn policy(&self, method: &MethodSpec, options: &CallOptions) -> RetryPolicy {
        options
            .retry
            .or_else(|| self.inner.method_retry.get(method.name).copied())
            .unwrap_or(self.inner.retry)
    }

    /// Runs the attempts of a call under its retry policy, within its deadline. Returns the
    /// reply (`None` for a one-way call).
    async fn run(&self, call: &Call<'_>) -> Result<Option<ReplyMessage>, Error> {
        let policy = call.policy;
        let mut attempt = 1u32;
        loop {
            let last = attempt >= policy.attempts();
            let attempt_deadline = match policy.attempt_timeout_of() {
                Some(limit) if call.method.idempotent && call.expect_reply && !last => {
                    call.deadline.min(Instant::now() + limit)
                }
                _ => call.deadline,
            };
            let failure = match self.attempt(call, attempt, attempt_deadline).await {
                Ok(reply) => return Ok(reply),
                Err(failure) => failure,
            };
            let now = Instant::now();
            let give_up = |failure: AttemptFailure| match failure {
                AttemptFailure::Error(err) => err,
                AttemptFailure::TimedOut => call.out_of_time(),
            };
            if now >= call.deadline || last || !policy.retries(&failure, call.method.idempotent) {
                return Err(give_up(failure));
            }
            let delay = policy.delay_after(attempt);
            if now + delay >= call.deadline {
                return Err(give_up(failure));
            }
            tracing::debug!(attempt, ?delay, ?failure, "attempt failed; retrying");
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }

    /// One attempt: take the live session (waiting for a reconnection until the call's
    /// deadline), publish, and wait for the reply until `attempt_deadline`.
    async fn attempt(
        &self,
        call: &Call<'_>,
        attempt: u32,
        attempt_deadline: Instant,
    ) -> Result<Option<ReplyMessage>, AttemptFailure> {
        let session = self
            .inner
            .link
            .session(call.deadline)
            .await
            .map_err(AttemptFailure::Error)?;
        let work = async {
            match self.publish(&session, call, attempt).await? {
                Sent::Reply(mut pending) => pending.wait().await.map(Some),
                Sent::Nothing | Sent::Stream(_) => Ok(None),
            }
        };
        match tokio::time::timeout_at(attempt_deadline.into(), work).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(err)) => Err(AttemptFailure::Error(err)),
            Err(_) => Err(AttemptFailure::TimedOut),
        }
    }

    /// Resolves the service name, codec, deadline and budget of a call.
    pub(crate) fn plan(
        &self,
        method: &MethodSpec,
        options: &CallOptions,
    ) -> (String, Codec, Instant, Duration) {
        let service = options
            .service
            .as_deref()
            .unwrap_or(method.service)
            .to_owned();
        let codec = options.codec.unwrap_or(self.inner.codec);
        let timeout = options
            .timeout
            .or(method.timeout)
            .unwrap_or(self.inner.default_timeout);
        let now = Instant::now();
        let mut deadline = now + timeout;
        // A call made while serving another never outlives the caller's caller.
        if let Some(outer) = Context::current_deadline() {
            deadline = deadline.min(outer);
        }
        (
            service,
            codec,
            deadline,
            deadline.saturating_duration_since(now),
        )
    }

    /// Publishes one attempt of a call on `session`, and waits for the broker's confirm if the
    /// call is confirmed (one-way calls always are). A failure to publish means the session is
    /// broken: it is tripped, so the next attempt waits for a new one.
    pub(crate) async fn publish(
        &self,
        session: &ClientSession,
        call: &Call<'_>,
        attempt: u32,
    ) -> Result<Sent, Error> {
        let Call {
            service,
            method,
            call_id,
            codec,
            body,
            deadline,
            expect_reply,
            stream_credit,
            headers: app_headers,
            exchange,
            ..
        } = *call;
        let (exchange, routing_key) = match exchange {
            Some(exchange) => (exchange, ""),
            None => ("", service),
        };
        let routing_key = ShortString::try_new(routing_key).map_err(|e| Error::Config {
            reason: format!("service name: {e}"),
        })?;
        // A broadcast registered for its replies itself; it wants them like a call does.
        let broadcast = call.exchange.is_some();
        let wants_reply = expect_reply || broadcast;
        let pending = match stream_credit {
            Some(credit) => {
                Sent::Stream(session.in_flight.register_stream(call_id.clone(), credit)?)
            }
            None if expect_reply => Sent::Reply(
                session
                    .in_flight
                    .register(call_id.clone(), Arc::clone(&call.started))?,
            ),
            None => Sent::Nothing,
        };
        // The budget left for this attempt, rounded down: an expired call is not sent.
        let remaining = deadline.saturating_duration_since(Instant::now());
        let budget_ms = u64::try_from(remaining.as_millis()).unwrap_or(u64::MAX);
        if budget_ms == 0 {
            return Err(call.out_of_time());
        }
        let deadline_unix = unix_millis(SystemTime::now() + remaining);

        let mut headers = FieldTable::default();
        for (name, value) in app_headers {
            headers.insert(
                name.as_str().into(),
                AMQPValue::LongString(value.as_str().into()),
            );
        }
        headers.insert(
            wire::HEADER_PROTOCOL.into(),
            AMQPValue::LongLongInt(wire::PROTOCOL_VERSION),
        );
        headers.insert(
            wire::HEADER_TIMEOUT_MS.into(),
            AMQPValue::LongLongInt(i64::try_from(budget_ms).unwrap_or(i64::MAX)),
        );
        headers.insert(
            wire::HEADER_DEADLINE.into(),
            AMQPValue::LongLongInt(deadline_unix),
        );
        headers.insert(
            wire::HEADER_ATTEMPT.into(),
            AMQPValue::LongLongInt(i64::from(attempt)),
        );
        headers.insert(
            wire::HEADER_TRACEPARENT.into(),
            AMQPValue::LongString(call.trace.traceparent().into()),
        );
        if let Some(state) = call.trace.tracestate() {
            headers.insert(
                wire::HEADER_TRACESTATE.into(),
                AMQPValue::LongString(state.into()),
            );
        }
        if expect_reply {
            headers.insert(wire::HEADER_NOTICES.into(), AMQPValue::LongLongInt(1));
        }
        if let Some(credit) = stream_credit {
            headers.insert(
                wire::HEADER_STREAM_CREDIT.into(),
                AMQPValue::LongLongInt(i64::try_from(credit).unwrap_or(i64::MAX)),
            );
        }

        let mut properties = BasicProperties::default()
            .with_type(method.name.into())
            .with_content_type(codec.content_type().into())
            .with_correlation_id(call_id.as_str().into())
            .with_message_id(call_id.as_str().into())
            .with_expiration(budget_ms.to_string().into())
            .with_timestamp(u64::try_from(unix_millis(SystemTime::now()) / 1000).unwrap_or(0))
            .with_headers(headers);
        if wants_reply {
            properties = properties.with_reply_to(session.reply_to.clone());
        }

        let confirmed = session.confirm_calls || !wants_reply;
        let channel = if wants_reply {
            &session.channel
        } else {
            &session.notify_channel
        };
        let publish = channel.basic_publish(
            exchange.into(),
            routing_key,
            BasicPublishOptions {
                mandatory: true,
                ..BasicPublishOptions::default()
            },
            body,
            properties,
        );
        call.published.store(true, Ordering::SeqCst);
        if !confirmed {
            // lapin queues the frames for its I/O thread when the publish is first polled, then
            // waits for the thread to have written them. The reply (or the session's death,
            // which fails every pending call) tells this call more than that wait would, and
            // skipping it saves two thread hand-offs per call.
            return match publish.now_or_never() {
                Some(Err(e)) => Err(broken(session, e)),
                Some(Ok(_)) | None => Ok(pending),
            };
        }
        let confirm = publish
            .await
            .map_err(|e| broken(session, e))?
            .await
            .map_err(|e| broken(session, e))?;
        session.confirmed(!matches!(confirm, Confirmation::Nack(None)));
        match confirm {
            Confirmation::Ack(Some(_returned)) | Confirmation::Nack(Some(_returned)) => {
                Err(Error::ServiceUnavailable {
                    service: service.to_owned(),
                })
            }
            Confirmation::Nack(None) => Err(Error::PublishRejected),
            Confirmation::Ack(None) | Confirmation::NotRequested => Ok(pending),
        }
    }

    /// Tells every server of `service` that the caller gave up on `call_id`: the one running
    /// it cancels its handler, the others skip it if it reaches them before `deadline`.
    /// Best effort and without waiting: lapin queues the message when first polled.
    pub(crate) fn send_cancel(&self, service: &str, call_id: &CallId, deadline: Instant) {
        let Some(session) = self.inner.link.current().filter(|s| s.control) else {
            return;
        };
        let Ok(routing_key) = ShortString::try_new(service) else {
            return;
        };
        let remaining = deadline.saturating_duration_since(Instant::now());
        let budget_ms = u64::try_from(remaining.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let mut headers = FieldTable::default();
        headers.insert(
            wire::HEADER_PROTOCOL.into(),
            AMQPValue::LongLongInt(wire::PROTOCOL_VERSION),
        );
        headers.insert(
            wire::HEADER_TIMEOUT_MS.into(),
            AMQPValue::LongLongInt(i64::try_from(budget_ms).unwrap_or(i64::MAX)),
        );
        let properties = BasicProperties::default()
            .with_type(wire::KIND_CANCEL.into())
            .with_correlation_id(call_id.as_str().into())
            .with_expiration(budget_ms.to_string().into())
            .with_headers(headers);
        let published = session
            .channel
            .basic_publish(
                wire::CONTROL_EXCHANGE.into(),
                routing_key,
                BasicPublishOptions::default(),
                &[],
                properties,
            )
            .now_or_never();
        if let Some(Err(err)) = published {
            tracing::debug!(%err, %call_id, "could not send a cancel");
        }
        tracing::debug!(%call_id, "call cancelled by its caller; servers told");
    }

    /// Grants `items` more credit to the stream of `call_id` served by the server whose control
    /// queue is `server`.
    pub(crate) async fn send_credit(
        &self,
        session: &ClientSession,
        server: &str,
        call_id: &CallId,
        items: usize,
    ) {
        let Ok(routing_key) = ShortString::try_new(server) else {
            return;
        };
        let mut headers = FieldTable::default();
        headers.insert(
            wire::HEADER_CREDIT.into(),
            AMQPValue::LongLongInt(i64::try_from(items).unwrap_or(i64::MAX)),
        );
        let properties = BasicProperties::default()
            .with_type(wire::KIND_CREDIT.into())
            .with_correlation_id(call_id.as_str().into())
            .with_headers(headers);
        let published = session
            .channel
            .basic_publish(
                "".into(),
                routing_key,
                BasicPublishOptions::default(),
                &[],
                properties,
            )
            .now_or_never();
        if let Some(Err(err)) = published {
            tracing::debug!(%err, %call_id, "could not send stream credit");
        }
    }

    /// The live session, waiting for one until `deadline`.
    pub(crate) async fn session(&self, deadline: Instant) -> Result<Arc<ClientSession>, Error> {
        self.inner.link.session(deadline).await
    }

    /// The retry policy of a call (see [`Client::policy`]).
    pub(crate) fn policy_of(&self, method: &MethodSpec, options: &CallOptions) -> RetryPolicy {
        self.policy(method, options)
    }
}

pub(crate) fn call_span(service: &str, method: &MethodSpec, call_id: &CallId) -> tracing::Span {
    tracing::info_span!(
        "warren.call",
        service = %service,
        method = method.name,
        call_id = %call_id,
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
    )
}

/// The caller's span a call sends as `traceparent`, recorded on the call's `span`: the span
/// itself under OpenTelemetry, else the trace in `options`, else a new span of the current
/// handler's trace, else a new trace.
pub(crate) fn call_trace(span: &tracing::Span, options: &CallOptions) -> TraceContext {
    #[cfg(feature = "opentelemetry")]
    let from_span = crate::otel::span_trace(span);
    #[cfg(not(feature = "opentelemetry"))]
    let from_span = None;
    let trace = from_span
        .or_else(|| options.trace.clone())
        .unwrap_or_else(|| match Context::current_trace() {
            Some(handler) => handler.child(),
            None => TraceContext::new_root(),
        });
    span.record("trace_id", tracing::field::display(trace.trace_id()));
    span.record("span_id", tracing::field::display(trace.span_id()));
    trace
}

/// The empty arguments map of the reserved methods.
#[derive(Serialize)]
struct NoArgs {}

pub(crate) fn decode_reply<T, E>(reply: &ReplyMessage) -> Result<Result<T, E>, Error>
where
    T: DeserializeOwned,
    E: DeserializeOwned,
{
    decode_body(reply.content_type.as_deref(), &reply.body)
}

impl From<ReplyMessage> for RawReply {
    fn from(reply: ReplyMessage) -> Self {
        RawReply {
            content_type: reply.content_type,
            body: reply.body,
            instance: reply.instance,
        }
    }
}

/// Decodes a reply that went through the client's layers.
fn decode_raw<T, E>(reply: &RawReply) -> Result<Result<T, E>, Error>
where
    T: DeserializeOwned,
    E: DeserializeOwned,
{
    decode_body(reply.content_type.as_deref(), &reply.body)
}

fn decode_body<T, E>(content_type: Option<&str>, body: &[u8]) -> Result<Result<T, E>, Error>
where
    T: DeserializeOwned,
    E: DeserializeOwned,
{
    let codec = Codec::from_content_type(content_type).ok_or_else(|| Error::Decode {
        reason: format!(
            "unsupported reply content type {:?}",
            content_type.unwrap_or("")
        ),
    })?;
    let body: ReplyBody<T, E> = codec
        .decode(body)
        .map_err(|reason| Error::Decode { reason })?;
    match body {
        ReplyBody::Ok(value) => Ok(Ok(value)),
        ReplyBody::Err(err) => Ok(Err(err)),
        ReplyBody::Fault { code, message } => Err(Error::Fault { code, message }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_of_nacks_makes_a_channel_stale_and_an_ack_resets_it() {
        let streak = NackStreak::new(Some(3));
        assert_eq!(streak.record(false), None);
        assert_eq!(streak.record(false), None);
        assert_eq!(streak.record(true), None, "an ack ends the run");
        assert_eq!(streak.record(false), None);
        assert_eq!(streak.record(false), None);
        assert_eq!(streak.record(false), Some(3));
        assert_eq!(streak.record(false), Some(4));
        let one_broker = NackStreak::new(None);
        assert!((0..10).all(|_| one_broker.record(false).is_none()));
    }

    #[test]
    fn node_urls_keep_the_first_and_drop_repeats() {
        let more = vec![
            "b".to_owned(),
            "a".to_owned(),
            "c".to_owned(),
            "b".to_owned(),
        ];
        assert_eq!(node_urls("a", &more), ["a", "b", "c"]);
        assert_eq!(node_urls("a", &[]), ["a"]);
    }
}
