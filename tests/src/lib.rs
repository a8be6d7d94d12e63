//! Test support for Warren's end-to-end tests.
//!
//! Every broker-semantics test runs the same assertions against each [`Target`]: the bundled
//! broker (started on port 0 for the test) and, when `WARREN_TEST_AMQP_URL` is set, a real
//! RabbitMQ. A case that passes on RabbitMQ encodes real behaviour; the bundled broker must match.
//!
//! ```no_run
//! # async fn case() {
//! for target in warren_tests::targets().await {
//!     let (_conn, channel) = target.open().await;
//!     // ... assertions whose messages name `target` ...
//! #   let _ = channel;
//! }
//! # }
//! ```
//!
//! Environment:
//! - `WARREN_TEST_AMQP_URL`: RabbitMQ to compare with (`amqp://guest:guest@127.0.0.1:5672/%2f`).
//! - `WARREN_TEST_ONLY=rabbitmq` or `=bundled`: run one variant only (developing a case against
//!   RabbitMQ first, or iterating on the bundled broker).
//!
//! Names of queues and exchanges come from [`unique`], because one RabbitMQ serves every test
//! running in parallel. Two clients are offered: lapin (the usual way) and [`RawConn`], a
//! frame-level client for handshake details, exact close codes and malformed input.

use std::{fmt, net::SocketAddr, time::Duration};

use amq_protocol::frame::{gen_frame, parse_frame, AMQPContentHeader, AMQPFrame};
use amq_protocol::protocol::{self as proto, AMQPClass};
use futures::StreamExt;
use lapin::{
    message::{BasicGetMessage, Delivery},
    options::{
        BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions,
        ExchangeDeleteOptions, QueueDeleteOptions,
    },
    types::{AMQPValue, FieldTable, LongString, ShortString},
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, Consumer,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use warren_broker::{Broker, BrokerHandle};

/// How long a test waits for something that should happen (a delivery, a reply, a close).
pub const WAIT: Duration = Duration::from_secs(5);

/// How long a test waits to be confident that something does not happen.
pub const QUIET: Duration = Duration::from_millis(250);

/// Which broker a test case is talking to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The bundled `warren-broker`, started for the test.
    Bundled,
    /// A real RabbitMQ from `WARREN_TEST_AMQP_URL`.
    RabbitMq,
}

/// One broker a compatibility case runs against.
pub struct Target {
    kind: Kind,
    url: String,
    addr: SocketAddr,
    vhost_path: String,
    _broker: Option<BrokerHandle>,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at {}", self.name(), self.url)
    }
}

/// The brokers every compatibility case runs against, bundled first.
///
/// Starts a fresh bundled broker on `127.0.0.1:0` (unless `WARREN_TEST_ONLY=rabbitmq`) and adds
/// RabbitMQ when `WARREN_TEST_AMQP_URL` is set; otherwise prints that the RabbitMQ variant was
/// skipped.
pub async fn targets() -> Vec<Target> {
    let only = std::env::var("WARREN_TEST_ONLY").unwrap_or_default();
    let rabbit_url = std::env::var("WARREN_TEST_AMQP_URL")
        .ok()
        .filter(|u| !u.is_empty());
    let mut out = Vec::new();
    if only != "rabbitmq" {
        out.push(bundled().await);
    }
    if only != "bundled" {
        match rabbit_url {
            Some(url) => out.push(Target::from_url(Kind::RabbitMq, url, None)),
            None if only == "rabbitmq" => {
                panic!("WARREN_TEST_ONLY=rabbitmq needs WARREN_TEST_AMQP_URL")
            }
            None => println!("skipped RabbitMQ variant: WARREN_TEST_AMQP_URL not set"),
        }
    }
    out
}

/// Starts a bundled broker on an ephemeral port and wraps it as a [`Target`].
pub async fn bundled() -> Target {
    let broker = Broker::builder()
        .listen("127.0.0.1:0".parse().expect("literal address"))
        .start()
        .await
        .unwrap_or_else(|e| panic!("bundled: broker failed to start: {e}"));
    let url = broker.amqp_url();
    Target::from_url(Kind::Bundled, url, Some(broker))
}

impl Target {
    fn from_url(kind: Kind, url: String, broker: Option<BrokerHandle>) -> Self {
        let (addr, vhost_path) = split_url(&url);
        Target {
            kind,
            url,
            addr,
            vhost_path,
            _broker: broker,
        }
    }

    /// `"bundled"` or `"rabbitmq"`: put it in every assertion message.
    pub fn name(&self) -> &'static str {
        match self.kind {
            Kind::Bundled => "bundled",
            Kind::RabbitMq => "rabbitmq",
        }
    }

    /// Which broker this is.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// True for the real RabbitMQ.
    pub fn is_rabbitmq(&self) -> bool {
        self.kind == Kind::RabbitMq
    }

    /// The `amqp://` URL (guest/guest, vhost `/`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The broker's TCP address, for raw-frame tests.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URL with other credentials and vhost (the vhost is URL-encoded here).
    pub fn url_with(&self, user: &str, password: &str, vhost: &str) -> String {
        let vhost = vhost.replace('%', "%25").replace('/', "%2f");
        format!("amqp://{user}:{password}@{}/{vhost}", self.addr)
    }

    /// A new lapin connection, panicking with the target name if it fails.
    pub async fn connect(&self) -> Connection {
        tokio::time::timeout(
            WAIT,
            Connection::connect(&self.url, ConnectionProperties::default()),
        )
        .await
        .unwrap_or_else(|_| panic!("{self}: connect timed out"))
        .unwrap_or_else(|e| panic!("{self}: connect failed: {e}"))
    }

    /// A new connection and a channel on it.
    pub async fn open(&self) -> (Connection, Channel) {
        let conn = self.connect().await;
        let ch = conn
            .create_channel()
            .await
            .unwrap_or_else(|e| panic!("{self}: channel.open failed: {e}"));
        (conn, ch)
    }

    /// A new connection and a channel in confirm mode.
    pub async fn open_confirm(&self) -> (Connection, Channel) {
        let (conn, ch) = self.open().await;
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap_or_else(|e| panic!("{self}: confirm.select failed: {e}"));
        (conn, ch)
    }

    /// Proves the broker still serves new connections: declares, publishes to and reads back
    /// from a fresh exclusive queue.
    pub async fn assert_healthy(&self) {
        let (conn, ch) = self.open_confirm().await;
        let q = declare_exclusive(self, &ch).await;
        publish_confirmed(self, &ch, "", &q, b"alive", BasicProperties::default()).await;
        let got = get_body(self, &ch, &q).await;
        assert_eq!(
            got.as_deref(),
            Some(&b"alive"[..]),
            "{self}: healthy broker echoes"
        );
        close(conn).await;
    }

    /// Shuts the bundled broker down gracefully (as `BrokerHandle::shutdown`); returns false,
    /// doing nothing, for RabbitMQ, which is shared and must not be stopped.
    pub async fn shutdown_bundled(&mut self) -> bool {
        match self._broker.take() {
            Some(broker) => {
                broker.shutdown().await;
                true
            }
            None => false,
        }
    }

    /// Deletes queues left by a test (ignoring ones already gone), on a fresh connection.
    pub async fn delete_queues(&self, queues: &[&str]) {
        let (conn, _) = self.open().await;
        for q in queues {
            let ch = conn.create_channel().await.expect("cleanup channel");
            let _ = ch
                .queue_delete((*q).into(), QueueDeleteOptions::default())
                .await;
        }
        close(conn).await;
    }

    /// Deletes exchanges left by a test (ignoring ones already gone), on a fresh connection.
    pub async fn delete_exchanges(&self, exchanges: &[&str]) {
        let (conn, _) = self.open().await;
        for x in exchanges {
            let ch = conn.create_channel().await.expect("cleanup channel");
            let _ = ch
                .exchange_delete((*x).into(), ExchangeDeleteOptions::default())
                .await;
        }
        close(conn).await;
    }

    /// A raw TCP connection to the broker, no bytes sent yet.
    pub async fn raw(&self) -> RawConn {
        let stream = tokio::time::timeout(WAIT, TcpStream::connect(self.addr))
            .await
            .unwrap_or_else(|_| panic!("{self}: tcp connect timed out"))
            .unwrap_or_else(|e| panic!("{self}: tcp connect failed: {e}"));
        stream.set_nodelay(true).ok();
        RawConn {
            target: self.name(),
            vhost: url_decode(self.vhost_path.trim_start_matches('/')),
            stream,
            buf: Vec::new(),
            tune: None,
        }
    }

    /// A raw connection after the whole handshake, with channel 1 open.
    pub async fn raw_open(&self) -> RawConn {
        let mut raw = self.raw().await;
        raw.handshake().await;
        raw.open_channel(1).await;
        raw
    }
}

fn split_url(url: &str) -> (SocketAddr, String) {
    let rest = url
        .strip_prefix("amqp://")
        .unwrap_or_else(|| panic!("not an amqp:// url: {url}"));
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].to_string()),
        None => (rest, String::from("/")),
    };
    let host_port = authority.rsplit('@').next().unwrap_or(authority);
    let host_port = if host_port.contains(':') {
        host_port.to_string()
    } else {
        format!("{host_port}:5672")
    };
    let host_port = host_port.replace("localhost", "127.0.0.1");
    let addr = host_port
        .parse()
        .unwrap_or_else(|e| panic!("cannot parse address {host_port} of {url}: {e}"));
    (addr, path)
}

fn url_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).expect("utf-8 vhost")
}

/// A unique name for a queue or exchange: `warren-test.<what>.<uuid>`.
pub fn unique(what: &str) -> String {
    format!("warren-test.{what}.{}", uuid::Uuid::new_v4())
}

/// Closes a lapin connection politely, ignoring errors (it may already be closed).
pub async fn close(conn: Connection) {
    let _ = tokio::time::timeout(WAIT, conn.close(200, "bye".into())).await;
}

/// The reply code and text of an AMQP error (channel or connection close) inside a lapin error.
pub fn amqp_error(err: &lapin::Error) -> Option<(u16, String)> {
    match err.kind() {
        lapin::ErrorKind::ProtocolError(e) => Some((e.get_id(), e.get_message().to_string())),
        _ => None,
    }
}

/// Asserts that `res` failed with exactly this AMQP reply code and text.
pub fn expect_error<T: fmt::Debug>(
    target: &Target,
    what: &str,
    res: lapin::Result<T>,
    code: u16,
    text: &str,
) {
    match res {
        Ok(v) => panic!("{target}: {what}: expected {code} {text:?}, got success {v:?}"),
        Err(e) => match amqp_error(&e) {
            Some((c, t)) => assert_eq!(
                (c, t.as_str()),
                (code, text),
                "{target}: {what}: wrong close code/text"
            ),
            None => panic!("{target}: {what}: expected AMQP error {code} {text:?}, got {e:?}"),
        },
    }
}

/// Asserts that `res` failed with this AMQP reply code and a text starting with `prefix`.
pub fn expect_error_prefix<T: fmt::Debug>(
    target: &Target,
    what: &str,
    res: lapin::Result<T>,
    code: u16,
    prefix: &str,
) {
    match res {
        Ok(v) => panic!("{target}: {what}: expected {code} {prefix:?}..., got success {v:?}"),
        Err(e) => match amqp_error(&e) {
            Some((c, t)) => assert!(
                c == code && t.starts_with(prefix),
                "{target}: {what}: expected {code} {prefix:?}..., got {c} {t:?}"
            ),
            None => panic!("{target}: {what}: expected AMQP error {code}, got {e:?}"),
        },
    }
}

/// Reports why the broker closed a channel, without racing the close.
///
/// Asynchronous methods (basic.ack, basic.reject, ...) have no reply: when one is refused, a
/// later synchronous call on that channel may fail either with the close reason or, if lapin
/// saw channel.close first, with a bare "channel closing" state error. A consumer registered
/// beforehand always receives the reason, so [`close_watch`] creates one (on a fresh exclusive
/// queue) and [`CloseWatch::expect`] waits for it.
pub struct CloseWatch {
    consumer: Consumer,
}

/// Starts watching `ch` for a channel.close (see [`CloseWatch`]).
pub async fn close_watch(target: &Target, ch: &Channel) -> CloseWatch {
    let q = declare_exclusive(target, ch).await;
    let consumer = ch
        .basic_consume(
            q.as_str().into(),
            "warren-tests.close-watch".into(),
            lapin::options::BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("{target}: close watch consumer: {e}"));
    CloseWatch { consumer }
}

impl CloseWatch {
    /// Asserts that the channel is closed with exactly this code and text.
    pub async fn expect(mut self, target: &Target, what: &str, code: u16, text: &str) {
        match tokio::time::timeout(WAIT, self.consumer.next()).await {
            Err(_) => panic!("{target}: {what}: channel not closed within {WAIT:?}"),
            Ok(Some(Err(e))) => match amqp_error(&e) {
                Some((c, t)) => assert_eq!(
                    (c, t.as_str()),
                    (code, text),
                    "{target}: {what}: wrong close code/text"
                ),
                None => panic!("{target}: {what}: expected AMQP error {code} {text:?}, got {e:?}"),
            },
            Ok(other) => panic!("{target}: {what}: expected channel.close {code}, got {other:?}"),
        }
    }
}

/// Declares a server-named exclusive queue and returns its name.
pub async fn declare_exclusive(target: &Target, ch: &Channel) -> String {
    let q = ch
        .queue_declare(
            "".into(),
            lapin::options::QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("{target}: declare exclusive queue: {e}"));
    q.name().to_string()
}

/// Publishes on a confirm-mode channel and asserts the broker acked (not nacked) the message
/// and did not return it. RabbitMQ confirms a routed message once every queue has it, so a
/// `basic.get` right after this sees the message: routing is checked without sleeping.
pub async fn publish_confirmed(
    target: &Target,
    ch: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    props: BasicProperties,
) {
    let confirm = publish(target, ch, exchange, routing_key, body, props).await;
    assert!(
        matches!(confirm, Confirmation::Ack(None)),
        "{target}: publish to {exchange:?}/{routing_key:?} not acked: {confirm:?}"
    );
}

/// Publishes and waits for the confirmation (on a confirm-mode channel).
pub async fn publish(
    target: &Target,
    ch: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    props: BasicProperties,
) -> Confirmation {
    publish_with(
        target,
        ch,
        exchange,
        routing_key,
        BasicPublishOptions::default(),
        body,
        props,
    )
    .await
}

/// Publishes with options and waits for the confirmation (on a confirm-mode channel).
pub async fn publish_with(
    target: &Target,
    ch: &Channel,
    exchange: &str,
    routing_key: &str,
    options: BasicPublishOptions,
    body: &[u8],
    props: BasicProperties,
) -> Confirmation {
    let pending = ch
        .basic_publish(exchange.into(), routing_key.into(), options, body, props)
        .await
        .unwrap_or_else(|e| panic!("{target}: basic.publish to {exchange:?}: {e}"));
    tokio::time::timeout(WAIT, pending)
        .await
        .unwrap_or_else(|_| panic!("{target}: no confirm for publish to {exchange:?}"))
        .unwrap_or_else(|e| panic!("{target}: confirm for publish to {exchange:?}: {e}"))
}

/// Publishes `m0`, `m1`, ... `m{n-1}` to `queue` through the default exchange, each confirmed.
pub async fn fill(t: &Target, ch: &Channel, queue: &str, n: usize) {
    for i in 0..n {
        publish_confirmed(
            t,
            ch,
            "",
            queue,
            format!("m{i}").as_bytes(),
            BasicProperties::default(),
        )
        .await;
    }
}

/// `basic.consume` of `queue` with `tag` ("" for a generated one) and no arguments.
pub async fn consume(t: &Target, ch: &Channel, queue: &str, tag: &str, no_ack: bool) -> Consumer {
    ch.basic_consume(
        queue.into(),
        tag.into(),
        BasicConsumeOptions {
            no_ack,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap_or_else(|e| panic!("{t}: basic.consume {queue}: {e}"))
}

/// `basic.get` with no-ack; the body, or `None` on get-empty.
pub async fn get_body(target: &Target, ch: &Channel, queue: &str) -> Option<Vec<u8>> {
    get(target, ch, queue, true).await.map(|m| m.delivery.data)
}

/// `basic.get`; the message, or `None` on get-empty.
pub async fn get(
    target: &Target,
    ch: &Channel,
    queue: &str,
    no_ack: bool,
) -> Option<BasicGetMessage> {
    tokio::time::timeout(WAIT, ch.basic_get(queue.into(), BasicGetOptions { no_ack }))
        .await
        .unwrap_or_else(|_| panic!("{target}: basic.get {queue} timed out"))
        .unwrap_or_else(|e| panic!("{target}: basic.get {queue}: {e}"))
}

/// Every message left in a queue (via no-ack `basic.get`), as UTF-8 strings, in order.
pub async fn drain(target: &Target, ch: &Channel, queue: &str) -> Vec<String> {
    let mut out = Vec::new();
    while let Some(body) = get_body(target, ch, queue).await {
        out.push(String::from_utf8_lossy(&body).into_owned());
    }
    out
}

/// Exactly `n` messages taken from a queue with no-ack `basic.get`, as (body, redelivered),
/// waiting up to [`WAIT`] for them to appear, then checking that nothing else is there.
///
/// Use it where RabbitMQ requeues asynchronously: after a channel or connection closes, or after
/// a reject or nack on another channel, the messages reappear shortly after the close-ok.
pub async fn take_n(target: &Target, ch: &Channel, queue: &str, n: usize) -> Vec<(String, bool)> {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut out = Vec::new();
    while out.len() < n {
        match get(target, ch, queue, true).await {
            Some(m) => out.push((
                String::from_utf8_lossy(&m.delivery.data).into_owned(),
                m.delivery.redelivered,
            )),
            None if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            None => break,
        }
    }
    while let Some(m) = get(target, ch, queue, true).await {
        out.push((
            String::from_utf8_lossy(&m.delivery.data).into_owned(),
            m.delivery.redelivered,
        ));
    }
    out
}

/// Waits (up to [`WAIT`]) until a queue no longer exists, then asserts RabbitMQ's 404 for a
/// passive declare of it. RabbitMQ deletes auto-delete and exclusive queues asynchronously, a
/// moment after the cancel-ok or close-ok that triggered it.
pub async fn expect_queue_gone(target: &Target, conn: &Connection, queue: &str, why: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let ch = conn
            .create_channel()
            .await
            .unwrap_or_else(|e| panic!("{target}: channel: {e}"));
        let res = ch
            .queue_declare(
                queue.into(),
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await;
        if res.is_ok() && tokio::time::Instant::now() < deadline {
            let _ = ch.close(200, "bye".into()).await;
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        }
        expect_error(
            target,
            why,
            res,
            404,
            &format!("NOT_FOUND - no queue '{queue}' in vhost '/'"),
        );
        return;
    }
}

/// The next delivery of a consumer, panicking (with the target name) on timeout, error or
/// cancellation.
pub async fn next_delivery(target: &Target, consumer: &mut Consumer) -> Delivery {
    match tokio::time::timeout(WAIT, consumer.next()).await {
        Err(_) => panic!("{target}: no delivery within {WAIT:?}"),
        Ok(None) => panic!("{target}: consumer ended while waiting for a delivery"),
        Ok(Some(Err(e))) => panic!("{target}: consumer error: {e}"),
        Ok(Some(Ok(d))) => d,
    }
}

/// Asserts that a consumer receives nothing within [`QUIET`].
pub async fn expect_no_delivery(target: &Target, consumer: &mut Consumer, why: &str) {
    if let Ok(item) = tokio::time::timeout(QUIET, consumer.next()).await {
        match item {
            Some(Ok(d)) => panic!(
                "{target}: {why}: unexpected delivery {:?}",
                String::from_utf8_lossy(&d.data)
            ),
            other => panic!("{target}: {why}: consumer ended: {other:?}"),
        }
    }
}

/// A field table from `(key, value)` pairs.
pub fn table(entries: Vec<(&str, AMQPValue)>) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in entries {
        t.insert(k.into(), v);
    }
    t
}

/// A long-string field value.
pub fn long_str(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.as_bytes().to_vec()))
}

/// What a [`RawConn`] read.
#[derive(Debug)]
pub enum RawEvent {
    /// A frame that amq-protocol parsed (boxed: frames are large).
    Frame(Box<AMQPFrame>),
    /// A frame amq-protocol could not parse: type, channel, payload.
    Unparsed(u8, u16, Vec<u8>),
    /// The `AMQP....` protocol header (sent back on a protocol mismatch).
    Header([u8; 8]),
    /// The peer closed the socket (or reset it).
    Eof,
    /// Nothing arrived in time.
    Timeout,
}

/// A `connection.close` or `channel.close` as received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloseInfo {
    /// Reply code, e.g. 404.
    pub code: u16,
    /// Reply text, e.g. `NOT_FOUND - no queue 'x' in vhost '/'`.
    pub text: String,
    /// Class of the method that caused it (0 if none).
    pub class_id: u16,
    /// Method that caused it (0 if none).
    pub method_id: u16,
}

/// A frame-level AMQP client over a plain TCP stream, for exact protocol assertions and
/// malformed input.
pub struct RawConn {
    target: &'static str,
    vhost: String,
    stream: TcpStream,
    buf: Vec<u8>,
    tune: Option<proto::connection::Tune>,
}

impl fmt::Debug for RawConn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RawConn({})", self.target)
    }
}

/// The bytes of one frame with the usual layout: type, channel, size, payload, frame-end.
pub fn frame_bytes(frame_type: u8, channel: u16, payload: &[u8]) -> Vec<u8> {
    frame_bytes_with_end(frame_type, channel, payload, 0xCE)
}

/// Like [`frame_bytes`] but with any frame-end octet.
pub fn frame_bytes_with_end(frame_type: u8, channel: u16, payload: &[u8], end: u8) -> Vec<u8> {
    let mut v = vec![frame_type];
    v.extend_from_slice(&channel.to_be_bytes());
    v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    v.extend_from_slice(payload);
    v.push(end);
    v
}

/// Serializes a frame with amq-protocol.
pub fn encode(frame: &AMQPFrame) -> Vec<u8> {
    let ctx = gen_frame::<Vec<u8>>(frame)(Vec::new().into())
        .unwrap_or_else(|e| panic!("cannot encode {frame:?}: {e:?}"));
    ctx.write
}

/// The method payload (class id, method id, arguments) of a method frame, for building
/// frames by hand on other channels or with other frame-end octets.
pub fn method_payload(method: AMQPClass) -> Vec<u8> {
    let bytes = encode(&AMQPFrame::Method(0, method));
    bytes[7..bytes.len() - 1].to_vec()
}

/// Client properties advertising the capabilities modern clients (lapin, pika) send:
/// consumer_cancel_notify, basic.nack, publisher_confirms, exchange_exchange_bindings,
/// connection.blocked, authentication_failure_close.
pub fn client_properties() -> FieldTable {
    let caps = table(
        [
            "consumer_cancel_notify",
            "basic.nack",
            "publisher_confirms",
            "exchange_exchange_bindings",
            "connection.blocked",
            "authentication_failure_close",
        ]
        .iter()
        .map(|c| (*c, AMQPValue::Boolean(true)))
        .collect(),
    );
    table(vec![
        ("product", long_str("warren-tests raw client")),
        ("capabilities", AMQPValue::FieldTable(caps)),
    ])
}

/// The PLAIN response for a user and password.
pub fn plain(user: &str, password: &str) -> LongString {
    LongString::from(format!("\0{user}\0{password}").into_bytes())
}

impl RawConn {
    /// The target's name, for assertion messages.
    pub fn target(&self) -> &'static str {
        self.target
    }

    /// The tune the broker proposed, once the handshake got that far.
    pub fn tune(&self) -> Option<&proto::connection::Tune> {
        self.tune.as_ref()
    }

    /// Writes bytes as they are.
    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        // A broker may close the socket on bad input while we are still writing: not an error.
        let _ = self.stream.write_all(bytes).await;
        let _ = self.stream.flush().await;
    }

    /// Writes one frame.
    pub async fn send(&mut self, frame: AMQPFrame) {
        let bytes = encode(&frame);
        self.send_bytes(&bytes).await;
    }

    /// Writes one method frame.
    pub async fn send_method(&mut self, channel: u16, method: AMQPClass) {
        self.send(AMQPFrame::Method(channel, method)).await;
    }

    /// Writes basic.publish plus its content header and one body frame (none when empty).
    pub async fn publish(
        &mut self,
        channel: u16,
        exchange: &str,
        routing_key: &str,
        props: BasicProperties,
        body: &[u8],
    ) {
        let mut bytes = encode(&AMQPFrame::Method(
            channel,
            AMQPClass::Basic(proto::basic::AMQPMethod::Publish(proto::basic::Publish {
                exchange: exchange.into(),
                routing_key: routing_key.into(),
                mandatory: false,
                immediate: false,
            })),
        ));
        bytes.extend(encode(&AMQPFrame::Header(
            channel,
            AMQPContentHeader {
                class_id: 60,
                body_size: body.len() as u64,
                properties: props,
            },
        )));
        if !body.is_empty() {
            bytes.extend(encode(&AMQPFrame::Body(channel, body.to_vec())));
        }
        self.send_bytes(&bytes).await;
    }

    /// Reads the next event within `wait`.
    pub async fn recv_within(&mut self, wait: Duration) -> RawEvent {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(ev) = self.take_buffered() {
                return ev;
            }
            let mut chunk = [0u8; 16384];
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Err(_) => return RawEvent::Timeout,
                Ok(Ok(0)) | Ok(Err(_)) => {
                    if self.buf.is_empty() {
                        return RawEvent::Eof;
                    }
                    let rest = std::mem::take(&mut self.buf);
                    return RawEvent::Unparsed(0, 0, rest);
                }
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Reads the next event within [`WAIT`].
    pub async fn recv(&mut self) -> RawEvent {
        self.recv_within(WAIT).await
    }

    fn take_buffered(&mut self) -> Option<RawEvent> {
        if self.buf.starts_with(b"AMQP") {
            if self.buf.len() < 8 {
                return None;
            }
            let mut h = [0u8; 8];
            h.copy_from_slice(&self.buf[..8]);
            self.buf.drain(..8);
            return Some(RawEvent::Header(h));
        }
        if self.buf.len() < 7 {
            return None;
        }
        let size =
            u32::from_be_bytes([self.buf[3], self.buf[4], self.buf[5], self.buf[6]]) as usize;
        let total = 7 + size + 1;
        if self.buf.len() < total {
            return None;
        }
        let bytes: Vec<u8> = self.buf.drain(..total).collect();
        Some(match parse_frame(&bytes[..]) {
            Ok((_, frame)) => RawEvent::Frame(Box::new(frame)),
            Err(_) => RawEvent::Unparsed(
                bytes[0],
                u16::from_be_bytes([bytes[1], bytes[2]]),
                bytes[7..7 + size].to_vec(),
            ),
        })
    }

    /// The next frame other than a heartbeat; panics on anything else.
    pub async fn recv_frame(&mut self) -> AMQPFrame {
        loop {
            match self.recv().await {
                RawEvent::Frame(f) if matches!(*f, AMQPFrame::Heartbeat) => continue,
                RawEvent::Frame(f) => return *f,
                other => panic!("{}: expected a frame, got {other:?}", self.target),
            }
        }
    }

    /// The next method on `channel` (skipping heartbeats); panics on anything else.
    pub async fn recv_method(&mut self, channel: u16) -> AMQPClass {
        match self.recv_frame().await {
            AMQPFrame::Method(ch, m) if ch == channel => m,
            other => panic!(
                "{}: expected a method on channel {channel}, got {other:?}",
                self.target
            ),
        }
    }

    /// Sends the protocol header and answers start and tune as a client would; returns
    /// connection.start. Stops before connection.open.
    pub async fn handshake_until_open(
        &mut self,
        user: &str,
        password: &str,
        client_properties: FieldTable,
    ) -> proto::connection::Start {
        self.send_bytes(b"AMQP\x00\x00\x09\x01").await;
        let start = match self.recv_method(0).await {
            AMQPClass::Connection(proto::connection::AMQPMethod::Start(s)) => s,
            other => panic!("{}: expected connection.start, got {other:?}", self.target),
        };
        self.send_method(
            0,
            AMQPClass::Connection(proto::connection::AMQPMethod::StartOk(
                proto::connection::StartOk {
                    client_properties,
                    mechanism: "PLAIN".into(),
                    response: plain(user, password),
                    locale: "en_US".into(),
                },
            )),
        )
        .await;
        start
    }

    /// Answers connection.tune with the broker's own values.
    pub async fn finish_tune(&mut self) -> proto::connection::Tune {
        let tune = match self.recv_method(0).await {
            AMQPClass::Connection(proto::connection::AMQPMethod::Tune(t)) => t,
            other => panic!("{}: expected connection.tune, got {other:?}", self.target),
        };
        self.tune = Some(tune.clone());
        self.send_method(
            0,
            AMQPClass::Connection(proto::connection::AMQPMethod::TuneOk(
                proto::connection::TuneOk {
                    channel_max: tune.channel_max,
                    frame_max: tune.frame_max,
                    heartbeat: 0,
                },
            )),
        )
        .await;
        tune
    }

    /// The whole handshake as guest/guest on the target's vhost, advertising the usual client
    /// capabilities ([`client_properties`]); returns connection.start.
    pub async fn handshake(&mut self) -> proto::connection::Start {
        self.handshake_with(client_properties()).await
    }

    /// The whole handshake as guest/guest with the given client properties.
    pub async fn handshake_with(
        &mut self,
        client_properties: FieldTable,
    ) -> proto::connection::Start {
        let start = self
            .handshake_until_open("guest", "guest", client_properties)
            .await;
        self.finish_tune().await;
        let vhost = self.vhost.clone();
        self.send_method(
            0,
            AMQPClass::Connection(proto::connection::AMQPMethod::Open(
                proto::connection::Open {
                    virtual_host: vhost.as_str().into(),
                },
            )),
        )
        .await;
        match self.recv_method(0).await {
            AMQPClass::Connection(proto::connection::AMQPMethod::OpenOk(_)) => {}
            other => panic!(
                "{}: expected connection.open-ok, got {other:?}",
                self.target
            ),
        }
        start
    }

    /// Opens a channel and waits for open-ok.
    pub async fn open_channel(&mut self, channel: u16) {
        self.send_method(
            channel,
            AMQPClass::Channel(proto::channel::AMQPMethod::Open(proto::channel::Open {})),
        )
        .await;
        match self.recv_method(channel).await {
            AMQPClass::Channel(proto::channel::AMQPMethod::OpenOk(_)) => {}
            other => panic!("{}: expected channel.open-ok, got {other:?}", self.target),
        }
    }

    /// Declares a queue (non-durable; exclusive as asked) and waits for declare-ok.
    pub async fn declare_queue(&mut self, channel: u16, name: &str, exclusive: bool) {
        let reply = self
            .call(
                channel,
                AMQPClass::Queue(proto::queue::AMQPMethod::Declare(proto::queue::Declare {
                    queue: name.into(),
                    passive: false,
                    durable: false,
                    exclusive,
                    auto_delete: false,
                    nowait: false,
                    arguments: FieldTable::default(),
                })),
            )
            .await;
        assert!(
            matches!(
                reply,
                AMQPClass::Queue(proto::queue::AMQPMethod::DeclareOk(_))
            ),
            "{}: expected queue.declare-ok, got {reply:?}",
            self.target
        );
    }

    /// Starts a consumer with an explicit tag and waits for consume-ok.
    pub async fn consume(&mut self, channel: u16, queue: &str, tag: &str, no_ack: bool) {
        let reply = self
            .call(
                channel,
                AMQPClass::Basic(proto::basic::AMQPMethod::Consume(proto::basic::Consume {
                    queue: queue.into(),
                    consumer_tag: tag.into(),
                    no_local: false,
                    no_ack,
                    exclusive: false,
                    nowait: false,
                    arguments: FieldTable::default(),
                })),
            )
            .await;
        assert!(
            matches!(reply, AMQPClass::Basic(proto::basic::AMQPMethod::ConsumeOk(ref ok)) if ok.consumer_tag.as_str() == tag),
            "{}: expected basic.consume-ok for {tag}, got {reply:?}",
            self.target
        );
    }

    /// Sends a synchronous method and returns the reply on the same channel.
    pub async fn call(&mut self, channel: u16, method: AMQPClass) -> AMQPClass {
        self.send_method(channel, method).await;
        self.recv_method(channel).await
    }

    /// Waits for connection.close (skipping other frames), answers close-ok, and expects the
    /// socket to close.
    pub async fn expect_connection_close(&mut self) -> CloseInfo {
        let info = self.expect_connection_close_only().await;
        self.expect_eof().await;
        info
    }

    /// Waits for connection.close (skipping other frames) and answers close-ok, without waiting
    /// for the socket to close. After a frame that is too large RabbitMQ reads no further and
    /// only drops the socket 3 s later.
    pub async fn expect_connection_close_only(&mut self) -> CloseInfo {
        loop {
            match self.recv().await {
                RawEvent::Frame(f) => {
                    if let Some((_, true, info)) = close_of(&f) {
                        self.send_method(
                            0,
                            AMQPClass::Connection(proto::connection::AMQPMethod::CloseOk(
                                proto::connection::CloseOk {},
                            )),
                        )
                        .await;
                        return info;
                    }
                }
                RawEvent::Unparsed(..) => continue,
                other => panic!("{}: expected connection.close, got {other:?}", self.target),
            }
        }
    }

    /// Waits for channel.close on `channel` (skipping other frames) and answers close-ok.
    pub async fn expect_channel_close(&mut self, channel: u16) -> CloseInfo {
        loop {
            match self.recv().await {
                RawEvent::Frame(f) => match close_of(&f) {
                    Some((ch, false, info)) if ch == channel => {
                        self.send_method(
                            channel,
                            AMQPClass::Channel(proto::channel::AMQPMethod::CloseOk(
                                proto::channel::CloseOk {},
                            )),
                        )
                        .await;
                        return info;
                    }
                    Some((_, true, info)) => panic!(
                        "{}: expected channel.close on {channel}, got connection.close {info:?}",
                        self.target
                    ),
                    _ => continue,
                },
                other => panic!(
                    "{}: expected channel.close on {channel}, got {other:?}",
                    self.target
                ),
            }
        }
    }

    /// Expects the broker to close the socket (any data before that is ignored).
    pub async fn expect_eof(&mut self) {
        loop {
            match self.recv().await {
                RawEvent::Eof => return,
                RawEvent::Timeout => panic!("{}: socket still open after {WAIT:?}", self.target),
                _ => continue,
            }
        }
    }

    /// Asserts that nothing but heartbeats arrives within [`QUIET`].
    pub async fn expect_silence(&mut self, why: &str) {
        loop {
            match self.recv_within(QUIET).await {
                RawEvent::Timeout => return,
                RawEvent::Frame(f) if matches!(*f, AMQPFrame::Heartbeat) => continue,
                other => panic!("{}: {why}: expected silence, got {other:?}", self.target),
            }
        }
    }
}

/// If `frame` is a connection.close or channel.close: its channel, whether it is the
/// connection's, and what it says.
pub fn close_of(frame: &AMQPFrame) -> Option<(u16, bool, CloseInfo)> {
    match frame {
        AMQPFrame::Method(0, AMQPClass::Connection(proto::connection::AMQPMethod::Close(c))) => {
            Some((
                0,
                true,
                CloseInfo {
                    code: c.reply_code,
                    text: c.reply_text.to_string(),
                    class_id: c.class_id,
                    method_id: c.method_id,
                },
            ))
        }
        AMQPFrame::Method(ch, AMQPClass::Channel(proto::channel::AMQPMethod::Close(c))) => Some((
            *ch,
            false,
            CloseInfo {
                code: c.reply_code,
                text: c.reply_text.to_string(),
                class_id: c.class_id,
                method_id: c.method_id,
            },
        )),
        _ => None,
    }
}

/// Extracts a short-string or long-string field from a table as a `String`.
pub fn table_str(t: &FieldTable, key: &str) -> Option<String> {
    match t.inner().get(key)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.to_string()),
        _ => None,
    }
}

/// Shorthand for a [`ShortString`].
pub fn short(s: &str) -> ShortString {
    s.into()
}

/// A reply text as RabbitMQ sends it: texts longer than a short string's 255 bytes are cut to
/// 252 bytes followed by `...`.
pub fn reply_text(full: &str) -> String {
    if full.len() <= 255 {
        return full.to_string();
    }
    let mut end = 252;
    while !full.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &full[..end])
}

pub mod proxy;
pub mod rpc_support;
