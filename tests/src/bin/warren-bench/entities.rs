//! Many entities (issue 16), with the frame-level client (lapin starts a thread per
//! connection; the frame-level client is a socket and a buffer on the harness's runtime):
//!
//! - many queues: 10,000 queues with one no-ack consumer each, declared and consumed on 10
//!   connections (each its share, one method after the other, the ten at once); the RSS once
//!   all consume; publish -> consume of 16 B messages sent round-robin to the 10,000 queues
//!   through the default exchange (each message to one queue, consecutive messages to
//!   consecutive queues); then every queue deleted.
//! - many connections: 10,000 connections of one channel each (100 handshakes in flight); the
//!   RSS and the RSS per connection; a round trip on every one of them; a publish -> consume
//!   through a sample of them.
//!
//! The queues are exclusive to the connection that declared them, so they go with it even if
//! the harness stops half way; they are also deleted one by one at the end (and that is
//! measured).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::stream::{self, FuturesUnordered};
use futures::{future, StreamExt};
use lapin::BasicProperties;

use crate::broker_process::rss_kib;
use crate::cli::Which;
use crate::frame_client::RawAmqp;
use crate::report::{thousands, Results, Unit};
use crate::throughput::{arrived, Arrivals, Lead};
use crate::BoxResult;

/// How long one phase (declaring, consuming, deleting, connecting ...) may take at most.
const PHASE_LIMIT: Duration = Duration::from_secs(300);

/// Messages publishers may be ahead of the consumers, over all the queues.
const MAX_LEAD: u64 = 100_000;

/// Handshakes in flight while opening many connections.
const CONNECTING_AT_ONCE: usize = 100;

/// Connects with the frame-level client (handshake, channel 1), bounded.
async fn connect(url: &str) -> BoxResult<RawAmqp> {
    tokio::time::timeout(Duration::from_secs(10), RawAmqp::connect(url))
        .await
        .map_err(|_| "connect (handshake + channel.open) timed out after 10 s".to_owned())?
}

/// Runs `phase` with the phase limit.
async fn bounded<T>(what: &str, phase: impl std::future::Future<Output = T>) -> BoxResult<T> {
    tokio::time::timeout(PHASE_LIMIT, phase)
        .await
        .map_err(|_| format!("{what} took over {} s", PHASE_LIMIT.as_secs()))
}

/// The row labels of the many-queues scenario.
pub(crate) struct QueueRows {
    declare: String,
    consume: String,
    rss: String,
    per_queue: String,
    throughput: String,
    delete: String,
    rss_after: String,
}

impl QueueRows {
    pub(crate) fn new(queues: usize, connections: usize) -> QueueRows {
        let n = thousands(queues);
        QueueRows {
            declare: format!(
                "many queues: declaring {n} queues ({connections} connections, each one after the other) [frame-level client]"
            ),
            consume: format!(
                "many queues: basic.consume on each of the {n} (one consumer per queue) [frame-level client]"
            ),
            rss: format!("many queues: RSS with {n} queues, one consumer each"),
            per_queue: format!("many queues: RSS per queue with its consumer ({n})"),
            throughput: format!(
                "many queues: publish->consume 16 B round-robin over the {n} queues (1 pub, {connections} consumer conns) [frame-level client]"
            ),
            delete: format!("many queues: deleting the {n} queues [frame-level client]"),
            rss_after: "many queues: RSS after deleting them".to_owned(),
        }
    }
}

/// The row labels of the many-connections scenario.
pub(crate) struct ConnectionRows {
    rate: String,
    rss: String,
    per_conn: String,
    alive: String,
    sample: String,
}

impl ConnectionRows {
    pub(crate) fn new(connections: usize, sample: usize) -> ConnectionRows {
        let n = thousands(connections);
        ConnectionRows {
            rate: format!(
                "many connections: opening {n} (handshake + channel.open, {CONNECTING_AT_ONCE} at once) [frame-level client]"
            ),
            rss: format!("many connections: RSS with {n} connections (1 channel each)"),
            per_conn: format!("many connections: RSS per connection ({n})"),
            alive: format!("many connections: of {n}, answering a round trip (basic.qos)"),
            sample: format!(
                "many connections: of {} sampled, publishing and consuming a message",
                thousands(sample)
            ),
        }
    }
}

/// The many-queues scenario on one broker; see the module documentation.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn many_queues(
    results: &mut Results,
    which: Which,
    url: &str,
    pid: u32,
    queues: usize,
    connections: usize,
    seconds: f64,
) -> BoxResult<()> {
    let rows = QueueRows::new(queues, connections);
    let connections = connections.clamp(1, queues.max(1));
    let before = rss_kib(pid).ok_or("cannot read RSS")?;
    let id = uuid::Uuid::new_v4().simple().to_string();
    let id = &id[..8];
    let width = queues.to_string().len();
    // Equal lengths (the index zero-padded): every publish below is the same number of bytes.
    let names: Vec<String> = (0..queues)
        .map(|i| format!("warren-bench.many.{id}.{i:0width$}"))
        .collect();
    let mut conns = Vec::with_capacity(connections);
    for _ in 0..connections {
        conns.push(connect(url).await?);
    }
    // Queue i belongs to connection i % connections: consecutive queues sit on different
    // consumer connections.
    let share = |c: usize| names.iter().skip(c).step_by(connections);

    let started = Instant::now();
    bounded(
        "declaring the queues",
        future::try_join_all(conns.iter_mut().enumerate().map(|(c, conn)| async move {
            for name in share(c) {
                conn.declare_queue(name, true).await?;
            }
            Ok::<_, String>(())
        })),
    )
    .await??;
    results.record(
        which,
        &rows.declare,
        Unit::OpsPerSec,
        queues as f64 / started.elapsed().as_secs_f64(),
    );

    let started = Instant::now();
    bounded(
        "consuming the queues",
        future::try_join_all(conns.iter_mut().enumerate().map(|(c, conn)| async move {
            for name in share(c) {
                conn.consume(name).await?;
            }
            Ok::<_, String>(())
        })),
    )
    .await??;
    results.record(
        which,
        &rows.consume,
        Unit::OpsPerSec,
        queues as f64 / started.elapsed().as_secs_f64(),
    );

    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss = rss_kib(pid).ok_or("cannot read RSS")?;
    results.record(which, &rows.rss, Unit::KiB, rss as f64);
    results.record(
        which,
        &rows.per_queue,
        Unit::KiB,
        (rss as f64 - before as f64) / queues.max(1) as f64,
    );

    let conns = match round_robin(url, &names, conns, seconds).await {
        Ok((rate, conns)) => {
            results.record(which, &rows.throughput, Unit::MsgsPerSec, rate);
            conns
        }
        Err((e, conns)) => {
            results.note(
                which,
                &rows.throughput,
                Unit::MsgsPerSec,
                format!("failed: {e}"),
            );
            conns
        }
    };

    let mut conns = conns;
    let started = Instant::now();
    bounded(
        "deleting the queues",
        future::try_join_all(conns.iter_mut().enumerate().map(|(c, conn)| async move {
            for name in share(c) {
                conn.delete_queue(name).await?;
            }
            Ok::<_, String>(())
        })),
    )
    .await??;
    results.record(
        which,
        &rows.delete,
        Unit::OpsPerSec,
        queues as f64 / started.elapsed().as_secs_f64(),
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss = rss_kib(pid).ok_or("cannot read RSS")?;
    results.record(which, &rows.rss_after, Unit::KiB, rss as f64);
    future::join_all(conns.into_iter().map(RawAmqp::close)).await;
    Ok(())
}

/// Publishes 16 B messages round-robin to `names` from one frame-level publisher for
/// `seconds` while every connection of `conns` counts the deliveries of its consumers; waits
/// (bounded) until every message arrived. Returns messages per second from the first publish
/// to the last delivery, and the consumer connections (to delete the queues on).
async fn round_robin(
    url: &str,
    names: &[String],
    conns: Vec<RawAmqp>,
    seconds: f64,
) -> Result<(f64, Vec<RawAmqp>), (String, Vec<RawAmqp>)> {
    let arrivals = Arc::new(Arrivals::default());
    let start_cell: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(None));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let counters: Vec<_> = conns
        .into_iter()
        .map(|mut conn| {
            let arrivals = Arc::clone(&arrivals);
            let start_cell = Arc::clone(&start_cell);
            let mut stop = stop_rx.clone();
            tokio::spawn(async move {
                let mut start = None;
                loop {
                    tokio::select! {
                        // Reading is cancel-safe: bytes are either in the buffer or unread.
                        n = conn.count_deliveries() => match n {
                            Ok(0) => {}
                            Ok(n) => arrived(&arrivals, &mut start, &start_cell, n),
                            Err(e) => return (conn, Err(e)),
                        },
                        _ = stop.changed() => return (conn, Ok(())),
                    }
                }
            })
        })
        .collect();

    let outcome = async {
        let mut publisher = connect(url).await?;
        let mut messages = Vec::new();
        let mut one = 0;
        for name in names {
            let bytes =
                publisher.encode_publish("", name, &[0x5a; 16], BasicProperties::default())?;
            if one != 0 && bytes.len() != one {
                return Err("publishes of different sizes".to_owned());
            }
            one = bytes.len();
            messages.extend_from_slice(&bytes);
        }
        let start = Instant::now();
        *start_cell.lock().expect("start lock") = Some(start);
        let until = start + Duration::from_secs_f64(seconds);
        let lead = Lead::new(Arc::clone(&arrivals), 1, MAX_LEAD);
        let published = publisher
            .publish_cycle_for(&messages, one, until, &lead)
            .await;
        let synced = publisher.sync().await;
        publisher.close().await;
        let published = synced.and(published)?;
        // Wait for the consumers to drain, bounded: 5 s without progress, 120 s in all.
        let mut last = arrivals.count.load(Ordering::Relaxed);
        let mut last_progress = Instant::now();
        let limit = Instant::now() + Duration::from_secs(120);
        while arrivals.count.load(Ordering::Relaxed) < published {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let now = arrivals.count.load(Ordering::Relaxed);
            if now != last {
                last = now;
                last_progress = Instant::now();
            }
            if last_progress.elapsed() > Duration::from_secs(5) || Instant::now() > limit {
                break;
            }
        }
        let received = arrivals.count.load(Ordering::Relaxed);
        if received < published {
            return Err(format!("only {received} of {published} deliveries arrived"));
        }
        if received > published {
            return Err(format!(
                "{received} deliveries for {published} messages published"
            ));
        }
        let elapsed = Duration::from_nanos(arrivals.last_ns.load(Ordering::Relaxed));
        if elapsed.is_zero() {
            return Err("no delivery arrived".into());
        }
        Ok(received as f64 / elapsed.as_secs_f64())
    }
    .await;

    let _ = stop_tx.send(true);
    let mut conns = Vec::new();
    let mut failure = None;
    for task in counters {
        match task.await {
            Ok((conn, r)) => {
                if let Err(e) = r {
                    failure.get_or_insert(format!("consumer connection: {e}"));
                }
                conns.push(conn);
            }
            Err(e) => {
                failure.get_or_insert(format!("consumer task: {e}"));
            }
        }
    }
    match (outcome, failure) {
        (Ok(rate), None) => Ok((rate, conns)),
        (Err(e), _) | (Ok(_), Some(e)) => Err((e, conns)),
    }
}

/// The many-connections scenario on one broker; see the module documentation.
pub(crate) async fn many_connections(
    results: &mut Results,
    which: Which,
    url: &str,
    pid: u32,
    n: usize,
    sample: usize,
) -> BoxResult<()> {
    let rows = ConnectionRows::new(n, sample);
    let before = rss_kib(pid).ok_or("cannot read RSS")?;
    let mut open = Vec::with_capacity(n);
    let mut error = None;
    let started = Instant::now();
    let opening = async {
        let mut attempts = FuturesUnordered::new();
        let mut launched = 0;
        loop {
            // After the first failure, no new attempt: the broker is at its limit.
            while error.is_none() && launched < n && attempts.len() < CONNECTING_AT_ONCE {
                attempts.push(connect(url));
                launched += 1;
            }
            match attempts.next().await {
                None => break,
                Some(Ok(conn)) => open.push(conn),
                Some(Err(e)) => {
                    error.get_or_insert(e);
                }
            }
        }
    };
    bounded("opening the connections", opening).await?;
    let took = started.elapsed().as_secs_f64();
    let opened = open.len();
    if opened > 0 {
        results.record(which, &rows.rate, Unit::OpsPerSec, opened as f64 / took);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let during = rss_kib(pid).ok_or("cannot read RSS")?;
    results.record(which, &rows.rss, Unit::KiB, during as f64);
    if opened > 0 {
        results.record(
            which,
            &rows.per_conn,
            Unit::KiB,
            (during as f64 - before as f64) / opened as f64,
        );
    }
    if let Some(e) = &error {
        let note = format!("only {opened} opened: {e}");
        for row in [&rows.rate, &rows.rss, &rows.per_conn] {
            results.note(which, row, Unit::KiB, note.clone());
        }
    }

    // A round trip on every connection, 200 at once.
    let alive = bounded(
        "a round trip on every connection",
        stream::iter(open.iter_mut())
            .map(|conn| async move {
                matches!(
                    tokio::time::timeout(Duration::from_secs(10), conn.sync()).await,
                    Ok(Ok(()))
                )
            })
            .buffer_unordered(200)
            .filter(|ok| future::ready(*ok))
            .count(),
    )
    .await?;
    results.record(which, &rows.alive, Unit::Count, alive as f64);

    let id = uuid::Uuid::new_v4().simple().to_string();
    match bounded("the sample", through_sample(&mut open, sample, &id[..8])).await {
        Ok(Ok(ok)) => results.record(which, &rows.sample, Unit::Count, ok as f64),
        Ok(Err(e)) | Err(e) => {
            results.note(which, &rows.sample, Unit::Count, format!("failed: {e}"))
        }
    }

    let closing = stream::iter(open)
        .map(RawAmqp::close)
        .buffer_unordered(500)
        .collect::<Vec<()>>();
    bounded("closing the connections", closing).await?;
    Ok(())
}

/// Takes `sample` connections spread evenly over `open`; each declares an exclusive queue and
/// consumes it, then each publishes one message to the next one's queue (the last to the
/// first's). Returns how many of them received their message within 10 s.
async fn through_sample(open: &mut [RawAmqp], sample: usize, id: &str) -> BoxResult<usize> {
    let k = sample.min(open.len());
    if k == 0 {
        return Ok(0);
    }
    let step = open.len() / k;
    let mut chosen: Vec<&mut RawAmqp> = open.iter_mut().step_by(step).take(k).collect();
    let names: Vec<String> = (0..k)
        .map(|j| format!("warren-bench.conns.{id}.{j}"))
        .collect();
    future::try_join_all(
        chosen
            .iter_mut()
            .zip(&names)
            .map(|(conn, name)| async move {
                conn.declare_queue(name, true).await?;
                conn.consume(name).await
            }),
    )
    .await?;
    for (j, conn) in chosen.iter_mut().enumerate() {
        let to = &names[(j + 1) % k];
        let publish = conn.encode_publish("", to, b"ping", BasicProperties::default())?;
        conn.write(&publish).await?;
    }
    let received = future::join_all(chosen.iter_mut().map(|conn| async move {
        let wait = async {
            loop {
                match conn.count_deliveries().await {
                    Ok(0) => {}
                    Ok(_) => return true,
                    Err(_) => return false,
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(10), wait)
            .await
            .unwrap_or(false)
    }))
    .await;
    Ok(received.into_iter().filter(|&ok| ok).count())
}
