//! The server: consumes a service's queue and answers its requests.
//!
//! One connection and channel per [`Server`]. The server declares the service queue, sets the
//! channel's prefetch to its concurrency, and runs each delivery in a task of its own:
//! decode the request -> skip it if its deadline passed or its caller cancelled it -> consult
//! the [`ReplyCache`] (replay, wait for a running duplicate, or execute) -> run the handler
//! inside its [`Context`] with panics caught, the deadline enforced and cancellation heard
//! (telling a caller that asks for notices that it started) -> publish the reply -> ack. A
//! streaming method sends its items instead, as the caller grants credit. Shutdown cancels the
//! consumer, lets the requests in flight finish within a grace period, and closes.
//!
//! Each session also consumes the server's control queue (see [`control`](crate::control)):
//! cancels and stream credit from callers.
//!
//! Besides the service queue, each server has an exclusive instance queue bound to the fanout
//! exchanges `warren.all.<queue>` and `warren.discovery` (see [`crate::introspect`]), so a
//! broadcast reaches every replica once; requests from it are handled like any other. Reserved
//! `$`-methods (`$ping`, `$describe`, `$stats`) are answered by the runtime, without waiting
//! for a free concurrency slot. Server layers ([`ServerBuilder::layer`]) wrap every request
//! except streamed ones.
//!
//! When the connection dies (socket error, missed heartbeats, the broker closing it or
//! cancelling the consumer), the server reconnects with backoff, declares its queue again and
//! resumes consuming. Requests it had taken but not acked go back to the queue; the broker
//! redelivers them, and the [`ReplyCache`] answers those that already ran without running them
//! again. Handlers still running from the lost session finish and fill the cache; their own
//! replies and acks are lost with the connection.

use std::any::Any;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures::future::BoxFuture;
use futures::stream::Select;
use futures::{FutureExt, StreamExt};
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection, Consumer, ExchangeKind};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;
use tower::{Layer, ServiceExt};
use tracing::Instrument;

use crate::context::{unix_millis, CallId, Context};
use crate::control::{Controls, RunGuard};
use crate::dedup::{CacheLookup, CachedReply, MemoryReplyCache, ReplyCache};
use crate::error::{Error, FaultCode};
use crate::introspect::{self, Instance, PingReply, ServiceDescription, Stats, StatsReply};
use crate::middleware::{Layers, ServerService};
use crate::reconnect::{self, Endpoint, Tripwire};
use crate::service::{Dispatch, EncodedItems, Fault, Outcome, Request, Service};
use crate::trace::TraceContext;
use crate::wire::{self, Codec};

/// Builds and starts a [`Server`].
pub struct ServerBuilder {
    concurrency: u16,
    durable: bool,
    queue_type: Option<String>,
    queue_name: Option<String>,
    cache: Arc<dyn ReplyCache>,
    shutdown_grace: Duration,
    connection_name: String,
    heartbeat: Duration,
    cancel_grace: Duration,
    layers: Layers<ServerService>,
    version: Option<String>,
    more_urls: Vec<String>,
    tls: crate::Tls,
    delivery_limit: Option<u32>,
}

impl std::fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerBuilder")
            .field("concurrency", &self.concurrency)
            .field("durable", &self.durable)
            .field("queue_type", &self.queue_type)
            .field("queue_name", &self.queue_name)
            .field("shutdown_grace", &self.shutdown_grace)
            .field("cancel_grace", &self.cancel_grace)
            .field("layers", &self.layers)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl Default for ServerBuilder {
    fn default() -> Self {
        ServerBuilder {
            concurrency: 32,
            durable: false,
            queue_type: None,
            queue_name: None,
            cache: Arc::new(MemoryReplyCache::default()),
            shutdown_grace: Duration::from_secs(10),
            connection_name: "warren-server".to_owned(),
            heartbeat: Duration::from_secs(10),
            cancel_grace: DEFAULT_CANCEL_GRACE,
            layers: Layers::default(),
            version: None,
            more_urls: Vec::new(),
            tls: crate::Tls::default(),
            delivery_limit: None,
        }
    }
}

/// How long a cancelled handler may run on when the builder does not say.
const DEFAULT_CANCEL_GRACE: Duration = Duration::from_millis(100);

impl ServerBuilder {
    /// How many requests run at once (32 unless set); also the channel's prefetch count.
    pub fn concurrency(mut self, concurrency: u16) -> Self {
        self.concurrency = concurrency.max(1);
        self
    }

    /// Declare the service queue durable (false unless set). Quorum queues are declared
    /// durable whatever this says: RabbitMQ refuses them otherwise.
    pub fn durable(mut self, durable: bool) -> Self {
        self.durable = durable;
        self
    }

    /// The queue type (`x-queue-type`). Unset means the broker's default (classic).
    ///
    /// `"quorum"` on a RabbitMQ cluster: the queue is replicated on the cluster's nodes and
    /// survives the loss of a minority of them. It is declared durable, with the
    /// [`delivery_limit`](ServerBuilder::delivery_limit) as `x-delivery-limit`. The bundled
    /// broker refuses every type but `classic`.
    pub fn queue_type(mut self, queue_type: impl Into<String>) -> Self {
        self.queue_type = Some(queue_type.into());
        self
    }

    /// How many times a quorum queue may hand back a request that was never acked before the
    /// server gives up on it ([`DEFAULT_QUORUM_DELIVERY_LIMIT`] unless set). Only quorum queues
    /// count deliveries; on others the limit is not declared.
    ///
    /// A request comes back when the server that took it lost its connection or died before
    /// acking it. One that crashes every server that runs it would come back for ever; RabbitMQ
    /// drops (or dead-letters) a message returned more often than `x-delivery-limit`, and
    /// the caller would learn nothing until its deadline. So the server declares the limit and,
    /// on the last delivery the broker makes (`x-delivery-count` equal to the limit), answers
    /// with a [`FaultCode::DeliveryLimit`] fault instead of running the request again (unless
    /// its [`ReplyCache`] already holds the reply).
    pub fn delivery_limit(mut self, limit: u32) -> Self {
        self.delivery_limit = Some(limit);
        self
    }

    /// More broker URLs, tried in turn after the one given to [`ServerBuilder::serve`]: the
    /// other nodes of a RabbitMQ cluster. When the server's node goes away, it reconnects to
    /// the next node that answers, declares its queue and consumes again. Calls the builder's
    /// earlier `urls` replaces.
    pub fn urls<I, U>(mut self, urls: I) -> Self
    where
        I: IntoIterator<Item = U>,
        U: Into<String>,
    {
        self.more_urls = urls.into_iter().map(Into::into).collect();
        self
    }

    /// Consume from this queue instead of the service's name (clients then address it with
    /// [`CallOptions::service`](crate::CallOptions::service)).
    pub fn queue_name(mut self, name: impl Into<String>) -> Self {
        self.queue_name = Some(name.into());
        self
    }

    /// Where replies are kept for de-duplication (an in-memory [`MemoryReplyCache`] unless
    /// set).
    pub fn reply_cache(mut self, cache: impl ReplyCache) -> Self {
        self.cache = Arc::new(cache);
        self
    }

    /// How long [`Server::shutdown`] waits for requests in flight (10 s unless set).
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace;
        self
    }

    /// TLS settings for `amqps://` URLs: a CA to trust besides the system's, a client
    /// certificate ([`Tls`](crate::Tls)). Ignored for `amqp://` URLs.
    pub fn tls(mut self, tls: crate::Tls) -> Self {
        self.tls = tls;
        self
    }

    /// The connection name shown in the broker's management tools, followed by
    /// `@{host}:{port}` of the node the server is on (`warren-server` unless set).
    pub fn connection_name(mut self, name: impl Into<String>) -> Self {
        self.connection_name = name.into();
        self
    }

    /// The heartbeat interval asked of the broker (10 s unless set; whole seconds, 0 turns
    /// heartbeats off). A connection silent for two intervals counts as dead and is replaced.
    /// A `heartbeat` parameter in the URL wins.
    pub fn heartbeat(mut self, interval: Duration) -> Self {
        self.heartbeat = interval;
        self
    }

    /// How long a handler whose caller cancelled the call may run on to notice it
    /// ([`Context::cancelled`]) and finish cleanly before its future is dropped (100 ms unless
    /// set). Its result is discarded either way. A handler past its deadline is dropped at
    /// once.
    pub fn cancel_grace(mut self, grace: Duration) -> Self {
        self.cancel_grace = grace;
        self
    }

    /// Wraps every request (reserved `$`-methods included, streamed ones not) in a tower
    /// layer; the first layer added is the outermost. See [`crate::middleware`].
    ///
    /// ```
    /// # use warren_rpc::{middleware::MetricsLayer, Server};
    /// let builder = Server::builder().layer(MetricsLayer);
    /// ```
    pub fn layer<L>(mut self, layer: L) -> Self
    where
        L: Layer<ServerService> + Send + Sync + 'static,
        L::Service: tower::Service<Request, Response = Outcome, Error = Infallible>
            + Clone
            + Send
            + Sync
            + 'static,
        <L::Service as tower::Service<Request>>::Future: Send + 'static,
    {
        self.layers
            .push(move |inner| ServerService::new(layer.layer(inner)));
        self
    }

    /// The application version `$ping` reports (warren-rpc's version unless set).
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.version = Some(version.into());
        self
    }

    /// Connects to `url` (or, when it does not answer, to the first of the builder's
    /// [`urls`](ServerBuilder::urls) that does), declares the service queue and starts serving
    /// `service`.
    ///
    /// The first connection must succeed; after that the server reconnects by itself whenever
    /// the connection dies, starting with the next node, until it is shut down. The connection
    /// is named `{connection_name}@{host}:{port}` after the node it is on.
    pub async fn serve<S: Service>(self, url: &str, service: S) -> Result<Server, Error> {
        let queue = self
            .queue_name
            .clone()
            .unwrap_or_else(|| service.name().to_owned());
        let queue_name = ShortString::try_new(queue.clone()).map_err(|e| Error::Config {
            reason: format!("queue name: {e}"),
        })?;
        let endpoint = Endpoint::new(
            &crate::client::node_urls(url, &self.more_urls),
            &self.connection_name,
            crate::client::heartbeat_secs(self.heartbeat),
        )?
        .with_tls(self.tls.clone());
        let quorum = self.queue_type.as_deref() == Some(QUORUM);
        let delivery_limit =
            quorum.then(|| self.delivery_limit.unwrap_or(DEFAULT_QUORUM_DELIVERY_LIMIT));
        let mut arguments = FieldTable::default();
        if let Some(queue_type) = &self.queue_type {
            arguments.insert(
                "x-queue-type".into(),
                AMQPValue::LongString(queue_type.as_str().into()),
            );
        }
        if let Some(limit) = delivery_limit {
            arguments.insert(
                wire::QUEUE_DELIVERY_LIMIT.into(),
                AMQPValue::LongLongInt(i64::from(limit)),
            );
        }
        let all_exchange =
            ShortString::try_new(introspect::all_exchange(&queue)).map_err(|e| Error::Config {
                reason: format!("broadcast exchange name (queue name too long?): {e}"),
            })?;
        let declare = Declare {
            queue: queue_name,
            all_exchange,
            durable: self.durable || quorum,
            arguments,
            prefetch: self.concurrency,
        };
        let connection = endpoint.connect().await?;
        let session = declare.open(connection).await.map_err(|(_, err)| err)?;

        let core = Arc::new(Core {
            stats: Stats::new(service.methods()),
            service: Box::new(service),
            queue: queue.clone(),
            instance: Instance::new(self.version),
            in_flight: AtomicU64::new(0),
        });
        let handler = (!self.layers.is_empty()).then(|| {
            self.layers
                .apply(ServerService::new(CoreService(Arc::clone(&core))))
        });
        let shared = Arc::new(Shared {
            core,
            handler,
            queue: queue.clone(),
            cache: self.cache,
            controls: Arc::new(Controls::default()),
            cancel_grace: self.cancel_grace,
            delivery_limit,
        });
        let (stop_tx, stop_rx) = watch::channel(false);
        let supervisor = Supervisor {
            shared,
            endpoint,
            declare,
            permits: Arc::new(Semaphore::new(usize::from(self.concurrency))),
            concurrency: usize::from(self.concurrency),
            grace: self.shutdown_grace,
            stop: stop_rx,
        };
        let task = tokio::spawn(
            supervisor
                .run(session)
                .instrument(tracing::info_span!("warren.server", queue = %queue)),
        );
        tracing::info!(%queue, concurrency = self.concurrency, "warren server serving");
        Ok(Server {
            queue,
            stop: stop_tx,
            task: Some(task),
        })
    }
}

/// A running server for one service. Stop it with [`Server::shutdown`]; dropping it starts the
/// same shutdown in the background.
#[derive(Debug)]
pub struct Server {
    queue: String,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl Server {
    /// A builder for a server with non-default settings.
    pub fn builder() -> ServerBuilder {
        ServerBuilder::default()
    }

    /// Serves `service` with default settings.
    pub async fn serve<S: Service>(url: &str, service: S) -> Result<Server, Error> {
        ServerBuilder::default().serve(url, service).await
    }

    /// The queue this server consumes.
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// Whether the server stopped serving for good (it was shut down). A lost connection does
    /// not finish it: it reconnects.
    pub fn is_finished(&self) -> bool {
        self.task.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Stops taking requests, lets those in flight finish (within the grace period), replies,
    /// acks, and closes the connection.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// The queue type whose queues are replicated and count deliveries.
const QUORUM: &str = "quorum";

/// The delivery limit of a server's quorum queue when
/// [`ServerBuilder::delivery_limit`] is not set: each lost server connection with the request
/// in flight counts once, so a few node failures do not exhaust it.
pub const DEFAULT_QUORUM_DELIVERY_LIMIT: u32 = 5;

struct Shared {
    core: Arc<Core>,
    /// The core wrapped in the builder's layers; `None` without layers.
    handler: Option<ServerService>,
    queue: String,
    cache: Arc<dyn ReplyCache>,
    controls: Arc<Controls>,
    cancel_grace: Duration,
    /// The queue's `x-delivery-limit`, when it is a quorum queue.
    delivery_limit: Option<u32>,
}

/// The innermost handler: the service, and the runtime's answers to reserved methods.
struct Core {
    service: Box<dyn Service>,
    queue: String,
    instance: Instance,
    stats: Stats,
    /// Requests between delivery and ack.
    in_flight: AtomicU64,
}

impl Core {
    fn dispatch(&self, request: Request) -> Dispatch {
        let codec = request.codec();
        match request.method() {
            introspect::PING => Dispatch::value(
                codec,
                futures::future::ready(PingReply {
                    service: self.queue.clone(),
                    instance: self.instance.id.clone(),
                    host: self.instance.host.clone(),
                    pid: std::process::id(),
                    version: self.instance.version.clone(),
                    warren_version: env!("CARGO_PKG_VERSION").to_owned(),
                    uptime_ms: self.instance.uptime_ms(),
                    in_flight: self.in_flight.load(Ordering::Relaxed),
                }),
            ),
            introspect::DESCRIBE => Dispatch::value(
                codec,
                futures::future::ready(ServiceDescription::of(&*self.service, &self.queue)),
            ),
            introspect::STATS => Dispatch::value(
                codec,
                futures::future::ready(StatsReply {
                    service: self.queue.clone(),
                    instance: self.instance.id.clone(),
                    uptime_ms: self.instance.uptime_ms(),
                    methods: self.stats.snapshot(),
                }),
            ),
            _ => self.service.dispatch(request),
        }
    }
}

/// [`Core`] as the tower service the server's layers wrap.
#[derive(Clone)]
struct CoreService(Arc<Core>);

impl tower::Service<Request> for CoreService {
    type Response = Outcome;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Outcome, Infallible>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        self.0.dispatch(request).map(Ok).boxed()
    }
}

/// What the server declares on every connection it makes.
struct Declare {
    queue: ShortString,
    /// `warren.all.<queue>`, which the instance queue is bound to.
    all_exchange: ShortString,
    durable: bool,
    arguments: FieldTable,
    prefetch: u16,
}

/// One connection's worth of server state.
struct ServerSession {
    connection: Connection,
    channel: Channel,
    /// The service queue's consumer and the instance queue's, merged.
    deliveries: Select<Consumer, Consumer>,
    consumer_tags: [ShortString; 2],
    /// The control queue's consumer (cancels, stream credit) and the queue's name.
    control: Consumer,
    control_queue: ShortString,
    tripwire: Tripwire,
}

impl Declare {
    /// Declares the queue, sets the prefetch and starts consuming on a fresh connection; on
    /// failure hands the connection back to be closed.
    async fn open(&self, connection: Connection) -> Result<ServerSession, (Connection, Error)> {
        let mut attempt = 1;
        loop {
            match self.setup(&connection).await {
                Ok((channel, (service, instance), (control, control_queue))) => {
                    return Ok(ServerSession {
                        connection,
                        channel,
                        consumer_tags: [service.tag(), instance.tag()],
                        deliveries: futures::stream::select(service, instance),
                        control,
                        control_queue,
                        tripwire: Tripwire::new(),
                    })
                }
                // The auto-deleted exchanges can vanish between their declaration and the
                // binding when the last other server of the service stops at that moment:
                // the binding fails with 404 on that channel only, and a second try succeeds.
                Err(err) if attempt < 3 && connection.status().connected() => {
                    tracing::debug!(%err, "server setup failed; trying again");
                    attempt += 1;
                }
                Err(err) => return Err((connection, err)),
            }
        }
    }

    async fn setup(
        &self,
        connection: &Connection,
    ) -> Result<(Channel, (Consumer, Consumer), (Consumer, ShortString)), Error> {
        let channel = connection
            .create_channel()
            .await
            .map_err(Error::connection)?;
        channel
            .queue_declare(
                self.queue.clone(),
                QueueDeclareOptions {
                    durable: self.durable,
                    ..QueueDeclareOptions::default()
                },
                self.arguments.clone(),
            )
            .await
            .map_err(Error::connection)?;
        channel
            .basic_qos(self.prefetch, BasicQosOptions::default())
            .await
            .map_err(Error::connection)?;
        let consumer = channel
            .basic_consume(
                self.queue.clone(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(Error::connection)?;
        let instance_queue = self.instance_queue(&channel).await?;
        let instance = channel
            .basic_consume(
                instance_queue,
                "".into(),
                BasicConsumeOptions {
                    exclusive: true,
                    ..BasicConsumeOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(Error::connection)?;
        let control = self.setup_control(&channel).await?;
        Ok((channel, (consumer, instance), control))
    }
    /// Declares this server's exclusive instance queue and binds it to the service's broadcast
    /// exchange and to the discovery exchange (both fanout, auto-deleted with their last
    /// binding).
    async fn instance_queue(&self, channel: &Channel) -> Result<ShortString, Error> {
        let queue = private_queue(channel).await?;
        for exchange in [
            self.all_exchange.clone(),
            ShortString::from(introspect::DISCOVERY_EXCHANGE),
        ] {
            channel
                .exchange_declare(
                    exchange.clone(),
                    ExchangeKind::Fanout,
                    ExchangeDeclareOptions {
                        auto_delete: true,
                        ..ExchangeDeclareOptions::default()
                    },
                    FieldTable::default(),
                )
                .await
                .map_err(Error::connection)?;
            channel
                .queue_bind(
                    queue.clone(),
                    exchange,
                    "".into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(Error::connection)?;
        }
        Ok(queue)
    }

    /// Declares the server's control queue, binds it to the control exchange under the
    /// service's name and consumes it.
    async fn setup_control(&self, channel: &Channel) -> Result<(Consumer, ShortString), Error> {
        declare_control_exchange(channel).await?;
        let name = private_queue(channel).await?;
        channel
            .queue_bind(
                name.clone(),
                wire::CONTROL_EXCHANGE.into(),
                self.queue.clone(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(Error::connection)?;
        let consumer = channel
            .basic_consume(
                name.clone(),
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
        Ok((consumer, name))
    }
}

/// Declares [`wire::CONTROL_EXCHANGE`] (direct, durable); clients and servers declare it alike.
pub(crate) async fn declare_control_exchange(channel: &Channel) -> Result<(), Error> {
    channel
        .exchange_declare(
            wire::CONTROL_EXCHANGE.into(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(Error::connection)
}

/// Why a session's consume loop ended.
enum Ended {
    /// The server is shutting down.
    Stopped,
    /// The connection, channel or consumer died.
    Lost(String),
}

/// Owns the server's sessions one after the other, and its shutdown.
struct Supervisor {
    shared: Arc<Shared>,
    endpoint: Endpoint,
    declare: Declare,
    /// Shared by every session: the concurrency limit holds across reconnections, and draining
    /// waits for handlers of lost sessions too.
    permits: Arc<Semaphore>,
    concurrency: usize,
    grace: Duration,
    stop: watch::Receiver<bool>,
}

impl Supervisor {
    async fn run(mut self, mut session: ServerSession) {
        loop {
            match self.consume(&mut session).await {
                Ended::Stopped => {
                    // Stop new deliveries, then drain: requests in flight hold permits until
                    // replied and acked.
                    for tag in &session.consumer_tags {
                        let _ = tokio::time::timeout(
                            Duration::from_secs(5),
                            session
                                .channel
                                .basic_cancel(tag.clone(), BasicCancelOptions::default()),
                        )
                        .await;
                    }
                    self.drain().await;
                    let _ = tokio::time::timeout(
                        Duration::from_secs(1),
                        session.channel.close(200, "server shutdown".into()),
                    )
                    .await;
                    reconnect::close_quietly(&session.connection, "server shutdown").await;
                    return;
                }
                Ended::Lost(reason) => {
                    tracing::warn!(%reason, "server session lost; reconnecting");
                    let dead = session.connection;
                    tokio::spawn(async move {
                        reconnect::close_quietly(&dead, "session lost").await;
                    });
                    let declare = &self.declare;
                    let next = self
                        .endpoint
                        .connect_until(&mut self.stop, |connection| declare.open(connection))
                        .await;
                    match next {
                        Some(next) => {
                            tracing::info!("server session re-established; consuming again");
                            session = next;
                        }
                        None => {
                            self.drain().await;
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Waits (within the grace period) for every request in flight to finish.
    async fn drain(&self) {
        let all = u32::try_from(self.concurrency).unwrap_or(u32::MAX);
        match tokio::time::timeout(self.grace, self.permits.acquire_many(all)).await {
            Ok(_) => tracing::debug!("drained"),
            Err(_) => tracing::warn!(
                grace = ?self.grace,
                "requests still running after the shutdown grace period"
            ),
        }
    }

    /// The consume loop of one session: one task per delivery, at most `concurrency` at once.
    async fn consume(&mut self, session: &mut ServerSession) -> Ended {
        let dead = reconnect::until_dead(&session.connection, &session.tripwire);
        let mut dead = std::pin::pin!(dead);
        loop {
            let delivery = tokio::select! {
                _ = self.stop.wait_for(|stopped| *stopped) => return Ended::Stopped,
                reason = &mut dead => return Ended::Lost(reason),
                control = session.control.next() => {
                    match control {
                        Some(Ok(message)) => self.shared.controls.handle(&message),
                        Some(Err(err)) => {
                            session.tripwire.trip(err.to_string());
                            return Ended::Lost(format!("control consumer failed: {err}"));
                        }
                        None => {
                            let reason = "control consumer cancelled by the broker".to_owned();
                            session.tripwire.trip(reason.clone());
                            return Ended::Lost(reason);
                        }
                    }
                    continue;
                }
                delivery = session.deliveries.next() => delivery,
            };
            match delivery {
                Some(Ok(delivery)) => {
                    // The budget runs from here: time spent waiting for a free slot counts.
                    let received = Instant::now();
                    let reserved = delivery
                        .properties
                        .kind()
                        .as_ref()
                        .is_some_and(|m| introspect::is_reserved(m.as_str()));
                    // Introspection is answered even when every slot is busy.
                    let permit = if reserved {
                        None
                    } else {
                        match Arc::clone(&self.permits).acquire_owned().await {
                            Ok(permit) => Some(permit),
                            Err(_) => return Ended::Stopped,
                        }
                    };
                    let shared = Arc::clone(&self.shared);
                    let channel = session.channel.clone();
                    let control_queue = session.control_queue.clone();
                    tokio::spawn(async move {
                        handle(&shared, &channel, &control_queue, delivery, received).await;
                        drop(permit);
                    });
                }
                Some(Err(err)) => {
                    session.tripwire.trip(err.to_string());
                    return Ended::Lost(format!("consumer failed: {err}"));
                }
                None => {
                    let reason = "consumer cancelled by the broker".to_owned();
                    session.tripwire.trip(reason.clone());
                    return Ended::Lost(reason);
                }
            }
        }
    }
}

/// A request as read off a delivery, before any decision about it.
struct Incoming {
    call_id: Option<CallId>,
    method: Option<String>,
    reply_to: Option<ShortString>,
    correlation_id: Option<ShortString>,
    codec: Option<Codec>,
    protocol: Option<i64>,
    /// The caller understands `started` notices (`x-warren-notices`).
    notices: bool,
    /// The caller wants a streamed reply and granted this much credit.
    stream_credit: Option<usize>,
    /// Application headers (string-valued, outside `x-warren-`), for middleware.
    headers: BTreeMap<String, String>,
    /// The caller's span, from `traceparent` (the OpenTelemetry glue makes it the parent).
    #[cfg_attr(not(feature = "opentelemetry"), allow(dead_code))]
    parent: Option<TraceContext>,
    /// How often the broker delivered the request before (`x-delivery-count`, set by quorum
    /// queues on redeliveries).
    delivery_count: Option<i64>,
    context: Context,
}

impl Incoming {
    fn parse(queue: &str, delivery: &Delivery, received: Instant) -> Incoming {
        let props = &delivery.properties;
        let headers = props.headers().as_ref();
        let call_id = props
            .message_id()
            .as_ref()
            .or(props.correlation_id().as_ref())
            .map(|id| CallId::from_wire(id.as_str()));
        let budget_ms = wire::header_i64(headers, wire::HEADER_TIMEOUT_MS);
        // A budget too large to represent as an instant is no deadline at all (never a panic).
        let deadline = budget_ms.and_then(|ms| {
            received.checked_add(Duration::from_millis(u64::try_from(ms).unwrap_or(0)))
        });
        let attempt = wire::header_i64(headers, wire::HEADER_ATTEMPT)
            .and_then(|a| u32::try_from(a).ok())
            .unwrap_or(1);
        let method = props.kind().as_ref().map(|m| m.as_str().to_owned());
        // A malformed traceparent is ignored, as W3C asks: the handler starts a new trace.
        let parent = wire::header_str(headers, wire::HEADER_TRACEPARENT).and_then(|tp| {
            TraceContext::parse(tp, wire::header_str(headers, wire::HEADER_TRACESTATE)).ok()
        });
        let (trace, parent_span) = match &parent {
            Some(parent) => (parent.child(), Some(parent.span_id())),
            None => (TraceContext::new_root(), None),
        };
        Incoming {
            call_id: call_id.clone(),
            reply_to: props.reply_to().clone().filter(|r| !r.as_str().is_empty()),
            correlation_id: props.correlation_id().clone(),
            codec: Codec::from_content_type(props.content_type().as_ref().map(|c| c.as_str())),
            protocol: wire::header_i64(headers, wire::HEADER_PROTOCOL),
            notices: wire::header_i64(headers, wire::HEADER_NOTICES).is_some_and(|n| n != 0),
            stream_credit: wire::header_i64(headers, wire::HEADER_STREAM_CREDIT)
                .map(|n| usize::try_from(n).unwrap_or(0)),
            headers: wire::application_headers(headers),
            parent,
            delivery_count: wire::header_i64(headers, wire::HEADER_DELIVERY_COUNT),
            context: Context {
                call_id: call_id.unwrap_or_else(|| CallId::from_wire("")),
                service: queue.to_owned(),
                method: method.clone().unwrap_or_default(),
                attempt,
                deadline,
                deadline_unix_ms: wire::header_i64(headers, wire::HEADER_DEADLINE).or_else(|| {
                    budget_ms.map(|ms| unix_millis(SystemTime::now()).saturating_add(ms.max(0)))
                }),
                redelivered: delivery.redelivered,
                trace,
                parent_span,
                cancel: crate::cancel::CancelToken::new(),
            },
            method,
        }
    }

    /// The first reason, if any, to fail the request without running it.
    fn invalid(&self) -> Option<Fault> {
        let bad = |message: String| {
            Some(Fault {
                code: FaultCode::BadRequest,
                message,
            })
        };
        if let Some(version) = self.protocol {
            if version != wire::PROTOCOL_VERSION {
                return bad(format!(
                    "unsupported protocol version {version}; this server speaks {}",
                    wire::PROTOCOL_VERSION
                ));
            }
        }
        if self.codec.is_none() {
            return bad(
                "unsupported content_type; use application/msgpack or application/json".into(),
            );
        }
        if self.method.as_deref().unwrap_or("").is_empty() {
            return bad("the request has no `type` property naming the method".into());
        }
        None
    }

    /// A fault when the request is on its last delivery under `limit` (see
    /// [`delivery_limit_fault`]).
    fn at_delivery_limit(&self, limit: Option<u32>) -> Option<Fault> {
        delivery_limit_fault(self.delivery_count, limit?)
    }
}

/// The fault for a request the broker delivered `count` times before (`x-delivery-count`) on a
/// queue with `x-delivery-limit = limit`, if this is its last delivery: it came back that often
/// without an ack, so running it again may crash this server too. RabbitMQ 3.10 drops a message
/// returned more than `limit` times, so the delivery with `count == limit` is the last one. The
/// first delivery (`count` 0 or absent) always runs, even under a limit of 0.
fn delivery_limit_fault(count: Option<i64>, limit: u32) -> Option<Fault> {
    let count = count?;
    let limit = i64::from(limit);
    (count > 0 && count >= limit).then(|| Fault {
        code: FaultCode::DeliveryLimit,
        message: format!(
            "the request was delivered {} times without an answer (x-delivery-limit {limit}); \
             the servers that took it died or lost their connection, so it is not run again",
            count.saturating_add(1)
        ),
    })
}

/// Where a handled request's messages go: the reply queue and call of the request, and this
/// server's control queue (named in notices and stream messages).
struct Responder<'a> {
    channel: &'a Channel,
    reply_to: Option<&'a ShortString>,
    correlation_id: Option<&'a ShortString>,
    control_queue: &'a ShortString,
    codec: Codec,
}

impl Responder<'_> {
    /// Publishes a notice or stream message of `kind` and waits until lapin wrote it. Returns
    /// false when it could not (the channel is gone).
    async fn send(&self, kind: &str, body: &[u8], seq: Option<u64>) -> bool {
        let Some(reply_to) = self.reply_to else {
            return false;
        };
        let mut headers = FieldTable::default();
        headers.insert(
            wire::HEADER_SERVER.into(),
            AMQPValue::LongString(self.control_queue.as_str().into()),
        );
        if let Some(seq) = seq {
            headers.insert(
                wire::HEADER_SEQ.into(),
                AMQPValue::LongLongInt(i64::try_from(seq).unwrap_or(i64::MAX)),
            );
        }
        let mut properties = BasicProperties::default()
            .with_type(kind.into())
            .with_content_type(self.codec.content_type().into())
            .with_headers(headers);
        if let Some(id) = self.correlation_id {
            properties = properties.with_correlation_id(id.clone());
        }
        let published = self
            .channel
            .basic_publish(
                "".into(),
                reply_to.clone(),
                BasicPublishOptions::default(),
                body,
                properties,
            )
            .await;
        match published {
            Ok(_) => true,
            Err(err) => {
                tracing::warn!(%err, kind, "could not publish a notice or stream message");
                false
            }
        }
    }

    async fn started(&self) {
        self.send(wire::KIND_STARTED, &[], None).await;
    }

    /// Ends a stream: `{"ok": items}` or `{"fault": ...}`.
    async fn end(&self, items: u64, fault: Option<Fault>) {
        let body = match fault {
            None => wire::encode_ok(self.codec, &items).unwrap_or_default(),
            Some(fault) => wire::encode_fault(self.codec, &fault.code, &fault.message),
        };
        self.send(wire::KIND_END, &body, None).await;
    }
}

/// Handles one delivery from start to ack; the reply goes out on `channel`, the channel the
/// request came from.
async fn handle(
    shared: &Shared,
    channel: &Channel,
    control_queue: &ShortString,
    delivery: Delivery,
    received: Instant,
) {
    #[cfg_attr(not(feature = "opentelemetry"), allow(unused_mut))]
    let mut incoming = Incoming::parse(&shared.queue, &delivery, received);
    let span = tracing::info_span!(
        "warren.handle",
        service = %shared.queue,
        method = incoming.method.as_deref().unwrap_or(""),
        call_id = %incoming.context.call_id,
        attempt = incoming.context.attempt,
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
        parent_span_id = tracing::field::Empty,
    );
    // Under OpenTelemetry the span is the caller's span's child, and its ids are the handler's.
    #[cfg(feature = "opentelemetry")]
    if let Some(parent) = &incoming.parent {
        if let Some(own) = crate::otel::continue_trace(&span, parent) {
            incoming.context.trace = own;
        }
    }
    let trace = &incoming.context.trace;
    span.record("trace_id", tracing::field::display(trace.trace_id()));
    span.record("span_id", tracing::field::display(trace.span_id()));
    if let Some(parent) = incoming.context.parent_span {
        span.record("parent_span_id", tracing::field::display(parent));
    }
    shared.core.in_flight.fetch_add(1, Ordering::Relaxed);
    async {
        if let Some(deadline) = incoming.context.deadline {
            if deadline <= Instant::now() {
                tracing::debug!("deadline passed before the request was taken; skipped");
                ack(channel, &delivery);
                return;
            }
        }
        if let Some(id) = &incoming.call_id {
            if shared.controls.was_cancelled(id) {
                tracing::debug!("cancelled by its caller before it started; skipped");
                ack(channel, &delivery);
                return;
            }
        }
        let codec = incoming.codec.unwrap_or_default();
        let responder = Responder {
            channel,
            reply_to: incoming.reply_to.as_ref(),
            correlation_id: incoming.correlation_id.as_ref(),
            control_queue,
            codec,
        };
        let reply = match incoming.invalid() {
            Some(fault) => Some(reply_of(codec, Outcome::Fault(fault))),
            None => match dispatch(shared, &incoming, codec, &delivery.data) {
                Err(reply) => Some(reply),
                Ok(dispatch) => match (dispatch.is_stream(), incoming.stream_credit) {
                    (true, Some(credit)) => {
                        // Streams are not de-duplicated, but a poison request is given up.
                        match incoming.at_delivery_limit(shared.delivery_limit) {
                            Some(fault) => Some(given_up(codec, fault)),
                            None => {
                                stream(shared, &incoming, &responder, dispatch, credit).await;
                                None
                            }
                        }
                    }
                    _ => execute_once(shared, &incoming, &responder, dispatch).await,
                },
            },
        };
        if let (Some(reply), Some(reply_to)) = (reply, &incoming.reply_to) {
            let instance = &shared.core.instance.id;
            send_reply(
                channel,
                reply_to,
                incoming.correlation_id.clone(),
                instance,
                reply,
            )
            .await;
        }
        ack(channel, &delivery);
    }
    .instrument(span)
    .await;
    shared.core.in_flight.fetch_sub(1, Ordering::Relaxed);
}

/// Decodes the arguments and prepares the handler; a panic there is a `handler_panicked` reply.
fn dispatch(
    shared: &Shared,
    incoming: &Incoming,
    codec: Codec,
    body: &[u8],
) -> Result<Dispatch, CachedReply> {
    let method = incoming.context.method.as_str();
    let request = Request::new(method, codec, body)
        .with_service(shared.queue.as_str())
        .with_headers(incoming.headers.clone());
    let streaming = shared
        .core
        .service
        .methods()
        .iter()
        .any(|m| m.name == method && m.streaming);
    match &shared.handler {
        // Through the layers: dispatching happens when the layered future is first polled,
        // inside the handler's panic guard. Streamed replies do not pass the layers.
        Some(layered) if !streaming => {
            let layered = layered.clone();
            Ok(Dispatch::outcome(layered.oneshot(request).map(|outcome| {
                let Ok(outcome) = outcome;
                outcome
            })))
        }
        _ => std::panic::catch_unwind(AssertUnwindSafe(|| shared.core.dispatch(request)))
            .map_err(|panic| panicked(codec, panic)),
    }
}

/// Runs the request unless the cache says it already ran; returns the reply to send, or `None`
/// when there is none (the call was abandoned at its deadline or cancelled).
async fn execute_once(
    shared: &Shared,
    incoming: &Incoming,
    responder: &Responder<'_>,
    dispatch: Dispatch,
) -> Option<CachedReply> {
    let deadline = incoming.context.deadline;
    let Some(call_id) = incoming.call_id.clone() else {
        // Without an id there is nothing to de-duplicate on, nor to cancel.
        if let Some(fault) = incoming.at_delivery_limit(shared.delivery_limit) {
            return Some(given_up(responder.codec, fault));
        }
        return run(shared, incoming, responder, dispatch, None).await;
    };
    let keep_for = deadline
        .map(|d| d.saturating_duration_since(Instant::now()))
        .unwrap_or_default();
    match shared.cache.begin(&call_id, keep_for) {
        CacheLookup::Replay(reply) => {
            tracing::debug!("duplicate of an executed call; replaying its reply");
            Some(reply)
        }
        CacheLookup::Wait(waiter) => {
            tracing::debug!("duplicate of a running call; waiting for its reply");
            match deadline {
                Some(d) => tokio::time::timeout_at(d.into(), waiter)
                    .await
                    .ok()
                    .flatten(),
                None => waiter.await,
            }
        }
        CacheLookup::Execute => {
            if let Some(fault) = incoming.at_delivery_limit(shared.delivery_limit) {
                let reply = given_up(responder.codec, fault);
                shared.cache.finish(&call_id, reply.clone());
                return Some(reply);
            }
            let reply = match shared.controls.start(&call_id, 0) {
                Some(guard) => run(shared, incoming, responder, dispatch, Some(guard)).await,
                None => {
                    tracing::debug!("cancelled by its caller before it started; skipped");
                    None
                }
            };
            match &reply {
                Some(reply) => shared.cache.finish(&call_id, reply.clone()),
                None => shared.cache.abandon(&call_id),
            }
            reply
        }
    }
}

/// How long a handler runs before a caller that asked for notices is told it started: short
/// handlers reply first and cost no notice.
const NOTICE_AFTER: Duration = Duration::from_millis(10);

/// Why a handler stopped before its outcome.
enum Stopped {
    /// The caller cancelled the call.
    Cancelled,
    /// The call's deadline passed.
    Deadline,
}

/// Runs the handler with its context, its deadline, cancellation and a panic guard.
async fn run(
    shared: &Shared,
    incoming: &Incoming,
    responder: &Responder<'_>,
    dispatch: Dispatch,
    guard: Option<RunGuard>,
) -> Option<CachedReply> {
    let codec = responder.codec;
    let mut context = incoming.context.clone();
    if let Some(guard) = &guard {
        context.cancel = guard.running.cancel.clone();
    }
    let cancel = context.cancel.clone();
    let handler = AssertUnwindSafe(context.scope(dispatch)).catch_unwind();
    let mut handler = std::pin::pin!(handler);
    // Tell the caller it started once the handler has run for a moment, well before its
    // deadline: a quarter of the budget at most.
    let mut notice = (incoming.notices && responder.reply_to.is_some()).then(|| {
        let after = incoming
            .context
            .remaining()
            .map_or(NOTICE_AFTER, |left| NOTICE_AFTER.min(left / 4));
        tokio::time::Instant::now() + after
    });
    let deadline = incoming.context.deadline;
    let started = Instant::now();
    let stats = |kind: Option<&str>| {
        shared
            .core
            .stats
            .record(&incoming.context.method, started.elapsed(), kind)
    };
    let stopped = loop {
        tokio::select! {
            biased;
            outcome = &mut handler => {
                return Some(match outcome {
                    Ok(outcome) => {
                        if let Outcome::Fault(fault) = &outcome {
                            tracing::debug!(%fault, "call failed");
                        }
                        stats(outcome.error_kind());
                        reply_of(codec, outcome)
                    }
                    Err(panic) => {
                        stats(Some(FaultCode::HandlerPanicked.as_str()));
                        panicked(codec, panic)
                    }
                });
            }
            _ = cancel.cancelled() => break Stopped::Cancelled,
            _ = sleep_until(deadline) => break Stopped::Deadline,
            _ = sleep_until(notice), if notice.is_some() => {
                notice = None;
                responder.started().await;
            }
        }
    };
    cancel.cancel();
    match stopped {
        Stopped::Deadline => stats(Some(FaultCode::DeadlineExceeded.as_str())),
        Stopped::Cancelled => stats(Some("cancelled")),
    }
    match stopped {
        Stopped::Deadline => tracing::warn!("handler cancelled at the call's deadline"),
        Stopped::Cancelled => {
            // The handler may notice (`Context::cancelled`) and finish within the grace.
            let grace = tokio::time::timeout(shared.cancel_grace, &mut handler).await;
            tracing::debug!(finished = grace.is_ok(), "handler cancelled by its caller");
        }
    }
    None
}

/// Sleeps until `at`, or forever without one.
async fn sleep_until<T: Into<tokio::time::Instant>>(at: Option<T>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => futures::future::pending().await,
    }
}

/// How long a stream waits for credit when its call has no deadline, before giving up on a
/// caller that went away.
const CREDIT_WAIT: Duration = Duration::from_secs(60);

/// Streams a reply: a `started` notice, then one item per credit, then the end marker. Not
/// de-duplicated: a stream runs for each request that asks for one.
async fn stream(
    shared: &Shared,
    incoming: &Incoming,
    responder: &Responder<'_>,
    dispatch: Dispatch,
    credit: usize,
) {
    let Ok(start) = dispatch.into_stream() else {
        return;
    };
    let guard = match &incoming.call_id {
        Some(id) => match shared.controls.start(id, credit) {
            Some(guard) => Some(guard),
            None => {
                tracing::debug!("cancelled by its caller before it started; skipped");
                return;
            }
        },
        None => None,
    };
    let mut context = incoming.context.clone();
    let own_credit = tokio::sync::Semaphore::new(credit.min(crate::control::MAX_CREDIT));
    let credit = match &guard {
        Some(guard) => {
            context.cancel = guard.running.cancel.clone();
            &guard.running.credit
        }
        None => &own_credit,
    };
    let cancel = context.cancel.clone();
    let run = async {
        responder.started().await;
        match AssertUnwindSafe(start).catch_unwind().await {
            Ok(items) => send_items(responder, items, credit, incoming.context.deadline).await,
            Err(panic) => responder.end(0, Some(panicked_fault(panic))).await,
        }
    };
    let stopped = tokio::select! {
        biased;
        () = context.scope(run) => return,
        () = cancel.cancelled() => Stopped::Cancelled,
        () = sleep_until(incoming.context.deadline) => Stopped::Deadline,
    };
    // The handler's stream is dropped by now; work it spawned may watch the context.
    cancel.cancel();
    match stopped {
        Stopped::Cancelled => tracing::debug!("stream cancelled by its caller"),
        Stopped::Deadline => {
            tracing::debug!("stream stopped at the call's deadline");
            let fault = Fault {
                code: FaultCode::DeadlineExceeded,
                message: "the stream ran past the call's deadline".into(),
            };
            responder.end(0, Some(fault)).await;
        }
    }
}

/// Sends the items of a stream as credit allows, then its end marker. The handler's stream
/// is polled only with credit in hand, so a slow caller holds back the producer instead of
/// filling the server's memory. Without a deadline, a caller silent for [`CREDIT_WAIT`] is
/// taken to be gone.
async fn send_items(
    responder: &Responder<'_>,
    items: EncodedItems,
    credit: &tokio::sync::Semaphore,
    deadline: Option<Instant>,
) {
    let mut items = AssertUnwindSafe(items).catch_unwind();
    let mut sent = 0u64;
    loop {
        let permit = match deadline {
            Some(_) => credit.acquire().await.ok(),
            None => tokio::time::timeout(CREDIT_WAIT, credit.acquire())
                .await
                .ok()
                .and_then(Result::ok),
        };
        let Some(permit) = permit else {
            tracing::debug!("no credit from the caller; stream abandoned");
            return;
        };
        permit.forget();
        match items.next().await {
            Some(Ok(Ok(item))) => {
                sent += 1;
                let body = wire::ok_from_encoded(responder.codec, &item);
                if !responder.send(wire::KIND_ITEM, &body, Some(sent)).await {
                    // The session is gone: nobody can receive the rest.
                    return;
                }
            }
            Some(Ok(Err(fault))) => {
                tracing::debug!(%fault, "stream ended with a fault");
                return responder.end(sent, Some(fault)).await;
            }
            Some(Err(panic)) => return responder.end(sent, Some(panicked_fault(panic))).await,
            None => return responder.end(sent, None).await,
        }
    }
}

/// The reply to a request at its delivery limit.
fn given_up(codec: Codec, fault: Fault) -> CachedReply {
    tracing::error!(%fault, "request at its delivery limit; answered with a fault, not run");
    reply_of(codec, Outcome::Fault(fault))
}

fn panicked(codec: Codec, panic: Box<dyn Any + Send>) -> CachedReply {
    reply_of(codec, Outcome::Fault(panicked_fault(panic)))
}

fn panicked_fault(panic: Box<dyn Any + Send>) -> Fault {
    let detail = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-string panic payload".to_owned());
    tracing::error!(panic = %detail, "handler panicked");
    Fault {
        code: FaultCode::HandlerPanicked,
        message: format!("the handler panicked: {detail}"),
    }
}

/// The reply a server sends (and caches) for `outcome`.
fn reply_of(codec: Codec, outcome: Outcome) -> CachedReply {
    CachedReply {
        content_type: codec.content_type().to_owned(),
        body: outcome.into_body(codec),
    }
}

/// Publishes a reply and waits until lapin has written it, so the ack that follows cannot
/// overtake it.
async fn send_reply(
    channel: &Channel,
    reply_to: &ShortString,
    correlation_id: Option<ShortString>,
    instance: &str,
    reply: CachedReply,
) {
    let mut headers = FieldTable::default();
    headers.insert(
        wire::HEADER_INSTANCE.into(),
        AMQPValue::LongString(instance.into()),
    );
    let mut properties = BasicProperties::default()
        .with_content_type(reply.content_type.into())
        .with_headers(headers);
    if let Some(id) = correlation_id {
        properties = properties.with_correlation_id(id);
    }
    let published = channel
        .basic_publish(
            "".into(),
            reply_to.clone(),
            BasicPublishOptions::default(),
            &reply.body,
            properties,
        )
        .await;
    if let Err(err) = published {
        tracing::warn!(%err, "could not publish the reply");
    }
}

/// Acks a request on the channel it came from. lapin queues the ack when the call is first
/// polled and then waits for its I/O thread to write it; nothing here depends on that write
/// (the connection's death is noticed by the consumer), so the wait, a thread hand-off per
/// request, is skipped. The reply was written before: lapin sends method frames such as
/// this ack ahead of queued publishes, which is why `send_reply` does wait for its write.
fn ack(channel: &Channel, delivery: &Delivery) {
    let acked = channel
        .basic_ack(delivery.delivery_tag, BasicAckOptions::default())
        .now_or_never();
    if let Some(Err(err)) = acked {
        tracing::warn!(%err, "could not ack the request");
    }
}

/// Declares a server-named queue private to this server's connection (exclusive,
/// auto-delete): the instance and control queues.
async fn private_queue(channel: &Channel) -> Result<ShortString, Error> {
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
    Ok(queue.name().clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_delivery_under_the_limit_is_answered_with_a_fault() {
        // Limit 2: RabbitMQ delivers with x-delivery-count 0, 1, 2, then drops the message.
        assert!(delivery_limit_fault(None, 2).is_none());
        assert!(delivery_limit_fault(Some(0), 2).is_none());
        assert!(delivery_limit_fault(Some(1), 2).is_none());
        let fault = delivery_limit_fault(Some(2), 2).expect("the last delivery");
        assert_eq!(fault.code, FaultCode::DeliveryLimit);
        assert!(
            fault.message.contains("delivered 3 times"),
            "{}",
            fault.message
        );
        assert!(delivery_limit_fault(Some(7), 2).is_some());
        // A limit of 0 lets the broker deliver once: that delivery runs.
        assert!(delivery_limit_fault(Some(0), 0).is_none());
    }
}
