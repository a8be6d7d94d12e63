//! lapin as the scenarios use it: connect, open a channel, close, clean up, with errors as
//! strings for the report.

use std::time::Duration;

use lapin::options::{BasicConsumeOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::{Channel, Connection, ConnectionProperties};

use crate::BoxResult;

pub(crate) async fn connect(url: &str) -> BoxResult<Connection> {
    tokio::time::timeout(
        Duration::from_secs(5),
        Connection::connect(url, ConnectionProperties::default()),
    )
    .await
    .map_err(|_| "connect timed out".to_owned())?
    .map_err(|e| format!("connect: {e}"))
}

pub(crate) async fn channel(conn: &Connection) -> BoxResult<Channel> {
    conn.create_channel()
        .await
        .map_err(|e| format!("channel.open: {e}"))
}

pub(crate) async fn close(conn: Connection) {
    let _ = tokio::time::timeout(Duration::from_secs(5), conn.close(200, "bye".into())).await;
}

pub(crate) fn no_ack() -> BasicConsumeOptions {
    BasicConsumeOptions {
        no_ack: true,
        ..BasicConsumeOptions::default()
    }
}

pub(crate) fn exclusive() -> QueueDeclareOptions {
    QueueDeclareOptions {
        exclusive: true,
        ..QueueDeclareOptions::default()
    }
}

/// Deletes a queue on a fresh channel, ignoring a queue already gone.
pub(crate) async fn delete_queue(conn: &Connection, queue: &str) {
    if let Ok(ch) = conn.create_channel().await {
        let _ = ch
            .queue_delete(queue.into(), QueueDeleteOptions::default())
            .await;
        let _ = ch.close(200, "bye".into()).await;
    }
}
