//! Memory scenarios: the broker's RSS with many idle connections and with many queued
//! messages.

use std::time::{Duration, Instant};

use futures::stream::FuturesUnordered;
use futures::StreamExt;
use lapin::options::{
    BasicPublishOptions, QueueDeclareOptions, QueueDeleteOptions, QueuePurgeOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

use crate::broker_process::rss_kib;
use crate::cli::Which;
use crate::lapin_client::{channel, close, connect, exclusive};
use crate::report::{si, Results, Unit, RSS_PER_CONN};
use crate::BoxResult;

/// Opens up to `n` connections (each with a channel), stopping at the first failure. Returns
/// the connections and the first error.
async fn open_many(url: &str, n: usize) -> (Vec<(Connection, Channel)>, Option<String>) {
    let mut open = Vec::with_capacity(n);
    let mut error = None;
    while open.len() < n && error.is_none() {
        let batch = (n - open.len()).min(50);
        let mut attempts: FuturesUnordered<_> = (0..batch)
            .map(|_| async {
                let conn = tokio::time::timeout(
                    Duration::from_secs(3),
                    Connection::connect(url, ConnectionProperties::default()),
                )
                .await
                .map_err(|_| "connect timed out after 3 s".to_owned())?
                .map_err(|e| format!("connect: {e}"))?;
                let ch = channel(&conn).await?;
                Ok::<_, String>((conn, ch))
            })
            .collect();
        while let Some(r) = attempts.next().await {
            match r {
                Ok(c) => open.push(c),
                Err(e) => {
                    error.get_or_insert(e);
                }
            }
        }
    }
    (open, error)
}

pub(crate) async fn memory_connections(
    results: &mut Results,
    which: Which,
    url: &str,
    pid: u32,
    n: usize,
) -> BoxResult<()> {
    let before = rss_kib(pid).ok_or("cannot read RSS")?;
    let (open, error) = open_many(url, n).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let during = rss_kib(pid).ok_or("cannot read RSS")?;
    let opened = open.len();
    let mut closing: FuturesUnordered<_> = open.into_iter().map(|(c, _)| close(c)).collect();
    while closing.next().await.is_some() {}
    let label = format!("RSS with {n} connections (1 channel each)");
    results.record(which, &label, Unit::KiB, during as f64);
    if opened > 0 {
        results.record(
            which,
            RSS_PER_CONN,
            Unit::KiB,
            (during as f64 - before as f64) / opened as f64,
        );
    }
    if let Some(e) = error {
        let note = format!("only {opened} opened: {e}");
        results.note(which, &label, Unit::KiB, note.clone());
        results.note(which, RSS_PER_CONN, Unit::KiB, note);
    }
    Ok(())
}

pub(crate) async fn memory_queued(
    results: &mut Results,
    which: Which,
    url: &str,
    pid: u32,
    n: u64,
) -> BoxResult<()> {
    let label = format!("RSS with {} queued 100 B msgs", si(n as f64));
    let conn = connect(url).await?;
    let ch = channel(&conn).await?;
    let q = ch
        .queue_declare("".into(), exclusive(), FieldTable::default())
        .await
        .map_err(|e| format!("queue.declare: {e}"))?;
    let name = q.name().to_string();
    let body = [0x5au8; 100];
    let mut inflight = FuturesUnordered::new();
    let mut sent = 0u64;
    let started = Instant::now();
    let limit = started + Duration::from_secs(180);
    while sent < n || !inflight.is_empty() {
        while sent < n && inflight.len() < 1000 {
            inflight.push(ch.basic_publish(
                "".into(),
                name.as_str().into(),
                BasicPublishOptions::default(),
                &body,
                BasicProperties::default(),
            ));
            sent += 1;
        }
        match tokio::time::timeout_at(limit.into(), inflight.next()).await {
            Err(_) => return Err("publishing took over 180 s".into()),
            Ok(Some(Err(e))) => return Err(format!("basic.publish: {e}")),
            Ok(_) => {}
        }
    }
    drop(inflight);
    let mut count = 0;
    while Instant::now() < limit {
        count = ch
            .queue_declare(
                name.as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..exclusive()
                },
                FieldTable::default(),
            )
            .await
            .map_err(|e| format!("queue.declare passive: {e}"))?
            .message_count();
        if u64::from(count) >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let publish_secs = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss = rss_kib(pid).ok_or("cannot read RSS")?;
    let _ = ch
        .queue_purge(name.as_str().into(), QueuePurgeOptions::default())
        .await;
    let _ = ch
        .queue_delete(name.as_str().into(), QueueDeleteOptions::default())
        .await;
    close(conn).await;
    results.record(which, &label, Unit::KiB, rss as f64);
    eprintln!(
        "    {:<9} ({} queued in {publish_secs:.1} s)",
        which.name(),
        count
    );
    if u64::from(count) < n {
        results.note(
            which,
            &label,
            Unit::KiB,
            format!("only {count} of {n} queued"),
        );
    }
    Ok(())
}
