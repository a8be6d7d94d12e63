//! The client: one AMQP connection and channel multiplexing many concurrent calls.
//!
//! A call encodes its arguments, registers its call id in the correlation map
//! ([`InFlight`](crate::in_flight)), publishes the request with `mandatory` set and waits for the
//! publisher confirm (a returned message means no queue exists for the service:
//! [`Error::ServiceUnavailable`] at once), then waits for its reply until its deadline. One task
//! reads the reply queue and completes calls by correlation id; when the connection dies it
//! fails every pending call at once.
//!
//! Replies come through RabbitMQ's direct reply-to (`amq.rabbitmq.reply-to`) by default; when
//! the broker lacks it, the client declares an exclusive, server-named reply queue instead.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, Consumer};
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::Serialize;
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::context::{unix_millis, CallId, Context};
use crate::error::Error;
use crate::in_flight::{InFlight, ReplyMessage};
use crate::service::MethodSpec;
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

    /// The timeout override, if any.
    pub fn timeout_override(&self) -> Option<Duration> {
        self.timeout
    }
}

/// Builds a [`Client`].
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    timeout: Duration,
    codec: Codec,
    reply_queue: ReplyQueue,
    connection_name: String,
}

impl Default for ClientBuilder {
    fn default() -> Self {
        ClientBuilder {
            timeout: Duration::from_secs(30),
            codec: Codec::MsgPack,
            reply_queue: ReplyQueue::Auto,
            connection_name: "warren-client".to_owned(),
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

    /// The connection name shown in the broker's management tools.
    pub fn connection_name(mut self, name: impl Into<String>) -> Self {
        self.connection_name = name.into();
        self
    }

    /// Connects to the broker at `url` (`amqp://user:pass@host:port/vhost`).
    pub async fn connect(self, url: &str) -> Result<Client, Error> {
        let properties = ConnectionProperties::default()
            .with_connection_name(self.connection_name.clone().into());
        let connection = Connection::connect(url, properties)
            .await
            .map_err(Error::connection)?;
        let (channel, consumer, reply_to) =
            open_reply_channel(&connection, self.reply_queue).await?;

        let in_flight = Arc::new(InFlight::default());
        let reader = tokio::spawn(read_replies(consumer, Arc::clone(&in_flight)));
        let watcher = tokio::spawn(watch_connection(
            connection.events_listener(),
            Arc::clone(&in_flight),
        ));
        tracing::debug!(%reply_to, "warren client connected");
        Ok(Client {
            inner: Arc::new(ClientInner {
                connection: Arc::new(connection),
                channel,
                reply_to: ShortString::from(reply_to),
                in_flight,
                default_timeout: self.timeout,
                codec: self.codec,
                tasks: [reader, watcher],
            }),
        })
    }
}

/// Opens the channel requests are published on and replies consumed from.
async fn open_reply_channel(
    connection: &Connection,
    mode: ReplyQueue,
) -> Result<(Channel, Consumer, String), Error> {
    if mode != ReplyQueue::Exclusive {
        let channel = confirmed_channel(connection).await?;
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
    let channel = confirmed_channel(connection).await?;
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

/// Completes calls with the replies on the reply queue, and fails them all when it ends.
async fn read_replies(mut consumer: Consumer, in_flight: Arc<InFlight>) {
    while let Some(delivery) = consumer.next().await {
        match delivery {
            Ok(delivery) => {
                let Some(id) = delivery.properties.correlation_id() else {
                    tracing::debug!("ignoring a reply without correlation_id");
                    continue;
                };
                let id = CallId::from_wire(id.as_str());
                let reply = ReplyMessage {
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
                in_flight.fail_all(Error::connection(err));
                return;
            }
        }
    }
    in_flight.fail_all(Error::Connection {
        reason: "the reply consumer was cancelled".into(),
    });
}

/// Fails every pending call as soon as the connection reports an error.
async fn watch_connection(
    events: impl futures::Stream<Item = lapin::Event> + Send + 'static,
    in_flight: Arc<InFlight>,
) {
    let mut events = std::pin::pin!(events);
    while let Some(event) = events.next().await {
        if let lapin::Event::Error(err) = event {
            in_flight.fail_all(Error::connection(err));
            return;
        }
    }
}

struct ClientInner {
    connection: Arc<Connection>,
    channel: Channel,
    reply_to: ShortString,
    in_flight: Arc<InFlight>,
    default_timeout: Duration,
    codec: Codec,
    tasks: [JoinHandle<()>; 2],
}

impl Drop for ClientInner {
    fn drop(&mut self) {
        self.in_flight.fail_all(Error::Shutdown);
        for task in &self.tasks {
            task.abort();
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let connection = Arc::clone(&self.connection);
            runtime.spawn(async move {
                let _ = connection.close(200, "client dropped".into()).await;
            });
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
            .field("reply_to", &self.inner.reply_to.as_str())
            .field("default_timeout", &self.inner.default_timeout)
            .field("codec", &self.inner.codec)
            .field("in_flight", &self.inner.in_flight.len())
            .finish()
    }
}

/// What one publication of a request resolved to.
struct Sent {
    pending: Option<crate::in_flight::PendingReply>,
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

    /// The queue replies come to (`amq.rabbitmq.reply-to` or the client's own queue).
    pub fn reply_to(&self) -> &str {
        self.inner.reply_to.as_str()
    }

    /// How many calls are waiting for a reply.
    pub fn pending_calls(&self) -> usize {
        self.inner.in_flight.len()
    }

    /// Closes the connection; pending calls end with [`Error::Shutdown`].
    pub async fn close(&self) {
        self.inner.in_flight.fail_all(Error::Shutdown);
        let _ = self
            .inner
            .connection
            .close(200, "client closed".into())
            .await;
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
        let call_id = CallId::random();
        let span = call_span(&service, method, &call_id);
        let publish = self.publish(
            &service, method, &call_id, codec, &body, deadline, timeout, false,
        );
        match tokio::time::timeout_at(deadline.into(), publish)
            .instrument(span)
            .await
        {
            Ok(result) => result.map(|_| ()),
            Err(_) => Err(Error::DeadlineExceeded { timeout }),
        }
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
        let call_id = CallId::random();
        let span = call_span(&service, method, &call_id);
        let call = async {
            let sent = self
                .publish(
                    &service, method, &call_id, codec, &body, deadline, timeout, true,
                )
                .await?;
            let Some(mut pending) = sent.pending else {
                return Err(Error::Decode {
                    reason: "no reply was requested".into(),
                });
            };
            let reply = pending.wait().await?;
            decode_reply(&reply)
        };
        let result = match tokio::time::timeout_at(deadline.into(), call)
            .instrument(span.clone())
            .await
        {
            Ok(result) => result,
            Err(_) => Err(Error::DeadlineExceeded { timeout }),
        };
        if let Err(err) = &result {
            span.in_scope(|| tracing::debug!(%err, "call failed"));
        }
        result
    }

    /// Resolves the service name, codec, deadline and budget of a call.
    fn plan(
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
        if let Some(outer) = Context::current().and_then(|cx| cx.deadline()) {
            deadline = deadline.min(outer);
        }
        (
            service,
            codec,
            deadline,
            deadline.saturating_duration_since(now),
        )
    }

    /// Publishes one attempt of a call and waits for the broker's confirm.
    #[allow(clippy::too_many_arguments)]
    async fn publish(
        &self,
        service: &str,
        method: &MethodSpec,
        call_id: &CallId,
        codec: Codec,
        body: &[u8],
        deadline: Instant,
        timeout: Duration,
        expect_reply: bool,
    ) -> Result<Sent, Error> {
        let routing_key = ShortString::try_new(service).map_err(|e| Error::Config {
            reason: format!("service name: {e}"),
        })?;
        let pending = if expect_reply {
            Some(self.inner.in_flight.register(call_id.clone())?)
        } else {
            None
        };
        // The budget left for this attempt, rounded down: an expired call is not sent.
        let remaining = deadline.saturating_duration_since(Instant::now());
        let budget_ms = u64::try_from(remaining.as_millis()).unwrap_or(u64::MAX);
        if budget_ms == 0 {
            return Err(Error::DeadlineExceeded { timeout });
        }
        let deadline_unix = unix_millis(SystemTime::now() + remaining);

        let mut headers = FieldTable::default();
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
        headers.insert(wire::HEADER_ATTEMPT.into(), AMQPValue::LongLongInt(1));

        let mut properties = BasicProperties::default()
            .with_type(method.name.into())
            .with_content_type(codec.content_type().into())
            .with_correlation_id(call_id.as_str().into())
            .with_message_id(call_id.as_str().into())
            .with_expiration(budget_ms.to_string().into())
            .with_timestamp(u64::try_from(unix_millis(SystemTime::now()) / 1000).unwrap_or(0))
            .with_headers(headers);
        if expect_reply {
            properties = properties.with_reply_to(self.inner.reply_to.clone());
        }

        let confirm = self
            .inner
            .channel
            .basic_publish(
                "".into(),
                routing_key,
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                body,
                properties,
            )
            .await
            .map_err(Error::connection)?
            .await
            .map_err(Error::connection)?;
        match confirm {
            Confirmation::Ack(Some(_returned)) | Confirmation::Nack(Some(_returned)) => {
                Err(Error::ServiceUnavailable {
                    service: service.to_owned(),
                })
            }
            Confirmation::Nack(None) => Err(Error::PublishRejected),
            Confirmation::Ack(None) | Confirmation::NotRequested => Ok(Sent { pending }),
        }
    }
}

fn call_span(service: &str, method: &MethodSpec, call_id: &CallId) -> tracing::Span {
    tracing::info_span!(
        "warren.call",
        service = %service,
        method = method.name,
        call_id = %call_id,
    )
}

fn decode_reply<T, E>(reply: &ReplyMessage) -> Result<Result<T, E>, Error>
where
    T: DeserializeOwned,
    E: DeserializeOwned,
{
    let codec =
        Codec::from_content_type(reply.content_type.as_deref()).ok_or_else(|| Error::Decode {
            reason: format!(
                "unsupported reply content type {:?}",
                reply.content_type.as_deref().unwrap_or("")
            ),
        })?;
    let body: ReplyBody<T, E> = codec
        .decode(&reply.body)
        .map_err(|reason| Error::Decode { reason })?;
    match body {
        ReplyBody::Ok(value) => Ok(Ok(value)),
        ReplyBody::Err(err) => Ok(Err(err)),
        ReplyBody::Fault { code, message } => Err(Error::Fault { code, message }),
    }
}
