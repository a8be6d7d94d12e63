//! What the compatibility cases do over and over with lapin: unique names, publishing with
//! confirms, filling and draining queues, consuming, and asserting RabbitMQ's exact errors.

use std::{fmt, time::Duration};

use futures::StreamExt;
use lapin::{
    message::{BasicGetMessage, Delivery},
    options::{BasicConsumeOptions, BasicGetOptions, BasicPublishOptions},
    types::FieldTable,
    BasicProperties, Channel, Confirmation, Connection, Consumer,
};

use crate::{Target, QUIET, WAIT};

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

/// Declares a server-named queue, publishes to it and gets the message back.
pub async fn round_trip(conn: &Connection, what: &str) {
    let ch = conn
        .create_channel()
        .await
        .unwrap_or_else(|e| panic!("{what}: channel: {e}"));
    let q = ch
        .queue_declare(
            "".into(),
            lapin::options::QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            lapin::types::FieldTable::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("{what}: declare: {e}"));
    ch.basic_publish(
        "".into(),
        q.name().clone(),
        lapin::options::BasicPublishOptions::default(),
        b"over tls",
        lapin::BasicProperties::default(),
    )
    .await
    .unwrap_or_else(|e| panic!("{what}: publish: {e}"));
    let got = ch
        .basic_get(
            q.name().clone(),
            lapin::options::BasicGetOptions { no_ack: true },
        )
        .await
        .unwrap_or_else(|e| panic!("{what}: get: {e}"))
        .map(|m| m.delivery.data.clone());
    assert_eq!(got.as_deref(), Some(&b"over tls"[..]), "{what}: round trip");
}

/// Runs `tests/python/SCRIPT SCENARIO ARGS...` with python3 on a blocking thread (the bundled
/// broker may run on the caller's runtime) and panics with its output unless it succeeds;
/// prints its stdout.
pub async fn python_scenario(script: &str, scenario: &str, args: Vec<String>, target: &str) {
    let path: std::path::PathBuf = [env!("CARGO_MANIFEST_DIR"), "python", script]
        .iter()
        .collect();
    let name = scenario.to_owned();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .arg(&path)
            .arg(&name)
            .args(&args)
            .output()
    })
    .await
    .expect("join")
    .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{target}: {script} scenario {scenario} failed:\n{stdout}\n{stderr}"
    );
    println!("{target}: {}", stdout.trim());
}
