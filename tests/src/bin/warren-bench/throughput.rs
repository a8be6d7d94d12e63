//! Throughput scenarios: publish -> consume (one queue or a fan-out to many), and persistent
//! messages with publisher confirms, each with lapin or the frame-level client.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use amq_protocol::protocol::AMQPClass;
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, ExchangeDeleteOptions,
    QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ExchangeKind};
use warren_tests::raw::frame_len;

use crate::cli::Generator;
use crate::frame_client::{ConfirmCounter, RawAmqp};
use crate::lapin_client::{channel, close, connect, delete_queue, no_ack};
use crate::BoxResult;

/// Counts deliveries and remembers when the last one arrived.
#[derive(Default)]
pub(crate) struct Arrivals {
    pub(crate) count: AtomicU64,
    /// Nanoseconds after `start` of the last delivery.
    pub(crate) last_ns: AtomicU64,
}

/// Keeps publishers at most `max` messages per queue ahead of the consumers, so a broker
/// that accepts publishes faster than it delivers them is measured end to end instead of
/// queueing a backlog that takes minutes to drain.
#[derive(Clone)]
pub(crate) struct Lead {
    sent: Arc<AtomicU64>,
    arrivals: Arc<Arrivals>,
    queues: u64,
    max: u64,
}

impl Lead {
    /// A lead of at most `max` messages per queue over `queues` queues, each message counted
    /// once per queue it is delivered from (1 when each message goes to one queue).
    pub(crate) fn new(arrivals: Arc<Arrivals>, queues: u64, max: u64) -> Lead {
        Lead {
            sent: Arc::default(),
            arrivals,
            queues,
            max,
        }
    }

    pub(crate) fn add(&self, n: u64) {
        self.sent.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn exceeded(&self) -> bool {
        let sent = self.sent.load(Ordering::Relaxed) * self.queues;
        sent.saturating_sub(self.arrivals.count.load(Ordering::Relaxed)) > self.max * self.queues
    }
}

/// Publishes until `until` with `window` publishes in flight, as fast as the broker takes them
/// and the consumers keep up. Returns how many were published.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn publish_for(
    ch: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    properties: BasicProperties,
    window: usize,
    until: Instant,
    lead: &Lead,
) -> BoxResult<u64> {
    let mut inflight = FuturesUnordered::new();
    let mut published = 0u64;
    let mut now = Instant::now();
    loop {
        while now < until && inflight.len() < window && !lead.exceeded() {
            inflight.push(ch.basic_publish(
                exchange.into(),
                routing_key.into(),
                BasicPublishOptions::default(),
                body,
                properties.clone(),
            ));
            lead.add(1);
            // Checking the clock every publish costs little next to the publish itself.
            now = Instant::now();
        }
        if inflight.is_empty() {
            if now >= until {
                return Ok(published);
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        } else {
            match inflight.next().await {
                Some(Ok(_)) => published += 1,
                Some(Err(e)) => return Err(format!("basic.publish: {e}")),
                None => {}
            }
        }
        now = Instant::now();
    }
}

/// Messages per queue publishers may be ahead of the consumers.
const MAX_LEAD: u64 = 20_000;

/// How a throughput scenario is driven.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Load {
    pub(crate) generator: Generator,
    pub(crate) publishers: usize,
    pub(crate) window: usize,
    pub(crate) seconds: f64,
    /// Route through `amq.topic` with this many other bindings (patterns with `*` and `#`
    /// that the messages do not match) on it; 0 for the default exchange or a fanout.
    pub(crate) topic_bindings: usize,
}

/// Declares `n` topic bindings with distinct keys (a quarter each of `*`-, `#`-prefixed,
/// `#`-suffixed and literal patterns) from `queue` to `amq.topic`, one after the other as a
/// client does; returns how long that took.
async fn bind_topic_patterns(ch: &Channel, queue: &str, n: usize, id: &str) -> BoxResult<Duration> {
    let start = Instant::now();
    for i in 0..n {
        let key = match i % 4 {
            0 => format!("other.{id}.{i}.*"),
            1 => format!("#.other{i}.{id}"),
            2 => format!("stock.{i}.{id}.#"),
            _ => format!("literal.{id}.{i}"),
        };
        ch.queue_bind(
            queue.into(),
            "amq.topic".into(),
            key.as_str().into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| format!("queue.bind: {e}"))?;
    }
    Ok(start.elapsed())
}

/// One or more publishers to a queue (or a fanout exchange bound to `queues` queues, or
/// `amq.topic` carrying `load.topic_bindings` other bindings), one no-ack consumer per queue.
/// Returns messages in per second, end to end (from the first publish to the last delivery),
/// and for the topic case the rate at which the other bindings were declared.
pub(crate) async fn throughput(
    url: &str,
    body_size: usize,
    queues: usize,
    load: Load,
) -> BoxResult<(f64, Option<f64>)> {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let control = connect(url).await?;
    let control_ch = channel(&control).await?;
    let mut bind_rate = None;
    if load.topic_bindings > 0 {
        // The other bindings go to an exclusive queue: it and they vanish with `control`.
        let sink = format!("warren-bench.topic-others.{id}");
        control_ch
            .queue_declare(
                sink.as_str().into(),
                QueueDeclareOptions {
                    exclusive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(|e| format!("queue.declare: {e}"))?;
        let took = bind_topic_patterns(&control_ch, &sink, load.topic_bindings, &id).await?;
        bind_rate = Some(load.topic_bindings as f64 / took.as_secs_f64());
    }
    let exchange = if load.topic_bindings > 0 {
        "amq.topic".to_string()
    } else if queues > 1 {
        let name = format!("warren-bench.fanout.{id}");
        control_ch
            .exchange_declare(
                name.as_str().into(),
                ExchangeKind::Fanout,
                ExchangeDeclareOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| format!("exchange.declare: {e}"))?;
        name
    } else {
        String::new()
    };
    // Auto-delete queues: gone with their consumer even if this process dies.
    let mut names = Vec::new();
    for i in 0..queues {
        let name = format!("warren-bench.tput.{id}.{i}");
        control_ch
            .queue_declare(
                name.as_str().into(),
                QueueDeclareOptions {
                    auto_delete: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(|e| format!("queue.declare: {e}"))?;
        if queues > 1 || load.topic_bindings > 0 {
            control_ch
                .queue_bind(
                    name.as_str().into(),
                    exchange.as_str().into(),
                    format!("warren-bench.topic.{id}").as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(|e| format!("queue.bind: {e}"))?;
        }
        names.push(name);
    }
    let routing_key = if load.topic_bindings > 0 {
        format!("warren-bench.topic.{id}")
    } else if queues > 1 {
        String::new()
    } else {
        names[0].clone()
    };
    let arrivals = Arc::new(Arrivals::default());
    let start_cell: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(None));
    let mut consumers = Vec::new();
    for name in &names {
        let task = match load.generator {
            Generator::Lapin => {
                lapin_consumer(url, name, Arc::clone(&arrivals), Arc::clone(&start_cell)).await?
            }
            Generator::Frame => {
                raw_consumer(url, name, Arc::clone(&arrivals), Arc::clone(&start_cell)).await?
            }
        };
        consumers.push(task);
    }
    let body = vec![0x5au8; body_size];
    let mut lapin_pubs = Vec::new();
    let mut raw_pubs = Vec::new();
    for _ in 0..load.publishers {
        match load.generator {
            Generator::Lapin => {
                let conn = connect(url).await?;
                let ch = channel(&conn).await?;
                lapin_pubs.push((conn, ch));
            }
            Generator::Frame => raw_pubs.push(RawAmqp::connect(url).await?),
        }
    }
    let start = Instant::now();
    *start_cell.lock().expect("start lock") = Some(start);
    let until = start + Duration::from_secs_f64(load.seconds);
    let lead = Lead {
        sent: Arc::default(),
        arrivals: Arc::clone(&arrivals),
        queues: queues as u64,
        max: MAX_LEAD,
    };
    let mut tasks = Vec::new();
    for (_, ch) in &lapin_pubs {
        let ch = ch.clone();
        let (exchange, routing_key, body) = (exchange.clone(), routing_key.clone(), body.clone());
        let lead = lead.clone();
        tasks.push(tokio::spawn(async move {
            publish_for(
                &ch,
                &exchange,
                &routing_key,
                &body,
                BasicProperties::default(),
                load.window,
                until,
                &lead,
            )
            .await
        }));
    }
    for mut raw in raw_pubs {
        let (exchange, routing_key, body) = (exchange.clone(), routing_key.clone(), body.clone());
        let lead = lead.clone();
        tasks.push(tokio::spawn(async move {
            let n = raw
                .publish_for(&exchange, &routing_key, &body, until, &lead)
                .await;
            // Closing with publishes still unread in the broker's socket buffer could reset
            // the connection and lose them: wait until the broker has processed them all.
            let synced = raw.sync().await;
            raw.close().await;
            synced.and(n)
        }));
    }
    let mut published = 0u64;
    let mut failure = None;
    for t in tasks {
        match t.await {
            Ok(Ok(n)) => published += n,
            Ok(Err(e)) => {
                failure.get_or_insert(e);
            }
            Err(e) => {
                failure.get_or_insert(format!("publisher task: {e}"));
            }
        }
    }
    // Wait for the consumers to drain what was published, bounded.
    let expected = published * queues as u64;
    let mut last = arrivals.count.load(Ordering::Relaxed);
    let mut last_progress = Instant::now();
    let drain_limit = Instant::now() + Duration::from_secs(120);
    while failure.is_none() && arrivals.count.load(Ordering::Relaxed) < expected {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = arrivals.count.load(Ordering::Relaxed);
        if now != last {
            last = now;
            last_progress = Instant::now();
        }
        if last_progress.elapsed() > Duration::from_secs(5) || Instant::now() > drain_limit {
            break;
        }
    }
    let received = arrivals.count.load(Ordering::Relaxed);
    let elapsed = Duration::from_nanos(arrivals.last_ns.load(Ordering::Relaxed)).as_secs_f64();
    // On a shortfall, say whether the messages are stuck in the queues or gone.
    let mut stuck = Vec::new();
    if received < expected {
        for name in &names {
            let passive = QueueDeclareOptions {
                passive: true,
                auto_delete: true,
                ..QueueDeclareOptions::default()
            };
            stuck.push(
                match control_ch
                    .queue_declare(name.as_str().into(), passive, FieldTable::default())
                    .await
                {
                    Ok(q) => format!(
                        "{} ready, {} consumer(s)",
                        q.message_count(),
                        q.consumer_count()
                    ),
                    Err(e) => format!("passive declare failed: {e}"),
                },
            );
        }
    }
    for (conn, _) in lapin_pubs {
        close(conn).await;
    }
    for task in consumers {
        task.stop().await;
    }
    for name in &names {
        let _ = control_ch
            .queue_delete(name.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
    if queues > 1 && load.topic_bindings == 0 {
        let _ = control_ch
            .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
            .await;
    }
    close(control).await;
    if let Some(e) = failure {
        return Err(e);
    }
    if received < expected {
        return Err(format!(
            "only {received} of {expected} deliveries arrived ({published} published; queues: {})",
            stuck.join(", ")
        ));
    }
    if elapsed <= 0.0 {
        return Err("no delivery arrived".into());
    }
    Ok((received as f64 / queues as f64 / elapsed, bind_rate))
}

/// Records one delivery: the first one fixes the consumer's view of the start.
pub(crate) fn arrived(
    arrivals: &Arrivals,
    start: &mut Option<Instant>,
    cell: &Mutex<Option<Instant>>,
    n: u64,
) {
    let start = *start.get_or_insert_with(|| {
        cell.lock()
            .expect("start lock")
            .unwrap_or_else(Instant::now)
    });
    arrivals.count.fetch_add(n, Ordering::Relaxed);
    arrivals
        .last_ns
        .fetch_max(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
}

/// A running consumer of a throughput scenario (with its lapin connection, if lapin's).
struct ConsumerTask {
    conn: Option<Connection>,
    task: tokio::task::JoinHandle<()>,
}

impl ConsumerTask {
    pub(crate) async fn stop(self) {
        if let Some(conn) = self.conn {
            close(conn).await;
        }
        self.task.abort();
    }
}

async fn lapin_consumer(
    url: &str,
    queue: &str,
    arrivals: Arc<Arrivals>,
    start_cell: Arc<Mutex<Option<Instant>>>,
) -> BoxResult<ConsumerTask> {
    let conn = connect(url).await?;
    let ch = channel(&conn).await?;
    let mut consumer = ch
        .basic_consume(queue.into(), "".into(), no_ack(), FieldTable::default())
        .await
        .map_err(|e| format!("basic.consume: {e}"))?;
    let task = tokio::spawn(async move {
        let mut start = None;
        while let Some(d) = consumer.next().await {
            if d.is_err() {
                break;
            }
            arrived(&arrivals, &mut start, &start_cell, 1);
        }
    });
    Ok(ConsumerTask {
        conn: Some(conn),
        task,
    })
}

async fn raw_consumer(
    url: &str,
    queue: &str,
    arrivals: Arc<Arrivals>,
    start_cell: Arc<Mutex<Option<Instant>>>,
) -> BoxResult<ConsumerTask> {
    let mut raw = RawAmqp::connect(url).await?;
    raw.consume(queue).await?;
    let task = tokio::spawn(async move {
        let mut start = None;
        // Ends with the connection or when the scenario aborts the task.
        while let Ok(n) = raw.count_deliveries().await {
            if n > 0 {
                arrived(&arrivals, &mut start, &start_cell, n);
            }
        }
    });
    Ok(ConsumerTask { conn: None, task })
}

/// Who consumes while a persistent scenario publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Online {
    /// Nobody: the messages pile up on disk.
    Nobody,
    /// A no-ack consumer.
    NoAck,
    /// A consumer that acknowledges every delivery.
    ManualAck,
}

/// A consumer of `queue` on its own connection that acknowledges each delivery (or not).
async fn settling_consumer(url: &str, queue: &str, no_ack: bool) -> BoxResult<ConsumerTask> {
    use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
    let conn = connect(url).await?;
    let ch = channel(&conn).await?;
    if !no_ack {
        ch.basic_qos(1000, BasicQosOptions::default())
            .await
            .map_err(|e| format!("basic.qos: {e}"))?;
    }
    let mut consumer = ch
        .basic_consume(
            queue.into(),
            "".into(),
            BasicConsumeOptions {
                no_ack,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(|e| format!("basic.consume: {e}"))?;
    let task = tokio::spawn(async move {
        while let Some(Ok(d)) = consumer.next().await {
            if !no_ack && d.ack(BasicAckOptions::default()).await.is_err() {
                break;
            }
        }
    });
    Ok(ConsumerTask {
        conn: Some(conn),
        task,
    })
}

/// Persistent messages to a durable queue with publisher confirms, `window` unconfirmed at
/// most, with `online` consuming meanwhile. Returns confirmed messages per second.
pub(crate) async fn persistent(
    url: &str,
    body_size: usize,
    window: usize,
    seconds: f64,
    online: Online,
) -> BoxResult<f64> {
    const QUEUE: &str = "warren-bench.persistent";
    let conn = connect(url).await?;
    delete_queue(&conn, QUEUE).await;
    let ch = channel(&conn).await?;
    ch.queue_declare(
        QUEUE.into(),
        QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        },
        FieldTable::default(),
    )
    .await
    .map_err(|e| format!("queue.declare: {e}"))?;
    let consumer = match online {
        Online::Nobody => None,
        Online::NoAck => Some(settling_consumer(url, QUEUE, true).await?),
        Online::ManualAck => Some(settling_consumer(url, QUEUE, false).await?),
    };
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(|e| format!("confirm.select: {e}"))?;
    let body = vec![0x5au8; body_size];
    let properties = BasicProperties::default().with_delivery_mode(2);
    let publish = || async {
        let confirm = ch
            .basic_publish(
                "".into(),
                QUEUE.into(),
                BasicPublishOptions::default(),
                &body,
                properties.clone(),
            )
            .await?;
        confirm.await
    };
    let start = Instant::now();
    let until = start + Duration::from_secs_f64(seconds);
    let mut inflight = FuturesUnordered::new();
    let (mut acked, mut nacked) = (0u64, 0u64);
    let mut last_confirm = start;
    let hard_stop = until + Duration::from_secs(60);
    loop {
        while Instant::now() < until && inflight.len() < window {
            inflight.push(publish());
        }
        match tokio::time::timeout_at(hard_stop.into(), inflight.next()).await {
            Err(_) => {
                return Err(format!(
                    "{} confirms still missing 60 s after publishing stopped",
                    inflight.len()
                ))
            }
            Ok(None) => break,
            Ok(Some(Ok(c))) if c.is_ack() => acked += 1,
            Ok(Some(Ok(_))) => nacked += 1,
            Ok(Some(Err(e))) => return Err(format!("publish/confirm: {e}")),
        }
        last_confirm = Instant::now();
    }
    drop(inflight);
    if let Some(c) = consumer {
        c.stop().await;
    }
    let _ = ch
        .queue_delete(QUEUE.into(), QueueDeleteOptions::default())
        .await;
    close(conn).await;
    if nacked > 0 {
        return Err(format!("{nacked} publishes nacked"));
    }
    Ok(acked as f64 / (last_confirm - start).as_secs_f64())
}

/// Persistent messages with the frame-level client: confirm mode, at most `window`
/// unconfirmed, confirms counted from the frames. Returns confirmed messages per second.
pub(crate) async fn raw_persistent(
    url: &str,
    body_size: usize,
    window: usize,
    seconds: f64,
) -> BoxResult<f64> {
    use amq_protocol::protocol::confirm;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const QUEUE: &str = "warren-bench.persistent";
    let control = connect(url).await?;
    delete_queue(&control, QUEUE).await;
    let control_ch = channel(&control).await?;
    control_ch
        .queue_declare(
            QUEUE.into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(|e| format!("queue.declare: {e}"))?;
    let mut raw = RawAmqp::connect(url).await?;
    raw.send(
        1,
        AMQPClass::Confirm(confirm::AMQPMethod::Select(confirm::Select {
            nowait: false,
        })),
    )
    .await?;
    match raw.method().await? {
        AMQPClass::Confirm(confirm::AMQPMethod::SelectOk(_)) => {}
        other => return Err(format!("expected confirm.select-ok, got {other:?}")),
    }
    let one = raw.encode_publish(
        "",
        QUEUE,
        &vec![0x5au8; body_size],
        BasicProperties::default().with_delivery_mode(2),
    )?;
    let per_batch = (64 * 1024 / one.len()).clamp(1, (window / 4).max(1));
    let batch = one.repeat(per_batch);
    let (stream, mut buf) = raw.into_parts();
    let (mut rd, mut wr) = stream.into_split();
    let permits = Arc::new(tokio::sync::Semaphore::new(window));
    let confirmed = Arc::new(AtomicU64::new(0));
    let nacked = Arc::new(AtomicU64::new(0));
    let last_ns = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let reader = {
        let (permits, confirmed, nacked, last_ns) = (
            Arc::clone(&permits),
            Arc::clone(&confirmed),
            Arc::clone(&nacked),
            Arc::clone(&last_ns),
        );
        tokio::spawn(async move {
            let mut counter = ConfirmCounter::default();
            loop {
                if buf.capacity() - buf.len() < 64 * 1024 {
                    buf.reserve(256 * 1024);
                }
                match rd.read_buf(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                let mut at = 0;
                let mut newly = 0;
                while let Some(len) = frame_len(&buf[at..]) {
                    let size = len - 8;
                    let p = &buf[at + 7..at + 7 + size];
                    // basic.ack is 60/80, basic.nack 60/120: delivery-tag, then the flag bits.
                    if buf[at] == 1
                        && size >= 13
                        && p[..2] == [0, 60]
                        && (p[3] == 80 || p[3] == 120)
                    {
                        let tag = u64::from_be_bytes(p[4..12].try_into().expect("8 octets"));
                        let n = counter.confirm(tag, p[12] & 1 == 1);
                        if p[3] == 80 {
                            confirmed.fetch_add(n, Ordering::Relaxed);
                        } else {
                            nacked.fetch_add(n, Ordering::Relaxed);
                        }
                        newly += n;
                    }
                    at += len;
                }
                bytes::Buf::advance(&mut buf, at);
                if newly > 0 {
                    last_ns.store(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
                    permits.add_permits(newly as usize);
                }
            }
        })
    };
    let until = start + Duration::from_secs_f64(seconds);
    let mut published = 0u64;
    let mut failure = None;
    while Instant::now() < until {
        let Ok(p) = permits.acquire_many(per_batch as u32).await else {
            break;
        };
        p.forget();
        if let Err(e) = wr.write_all(&batch).await {
            failure = Some(format!("write: {e}"));
            break;
        }
        published += per_batch as u64;
    }
    let limit = Instant::now() + Duration::from_secs(60);
    while failure.is_none()
        && confirmed.load(Ordering::Relaxed) + nacked.load(Ordering::Relaxed) < published
        && Instant::now() < limit
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    reader.abort();
    drop(wr);
    let _ = control_ch
        .queue_delete(QUEUE.into(), QueueDeleteOptions::default())
        .await;
    close(control).await;
    if let Some(e) = failure {
        return Err(e);
    }
    let (acked, nacked) = (
        confirmed.load(Ordering::Relaxed),
        nacked.load(Ordering::Relaxed),
    );
    if nacked > 0 {
        return Err(format!("{nacked} publishes nacked"));
    }
    if acked < published {
        return Err(format!(
            "only {acked} of {published} publishes confirmed in 60 s"
        ));
    }
    Ok(acked as f64 / Duration::from_nanos(last_ns.load(Ordering::Relaxed)).as_secs_f64())
}
