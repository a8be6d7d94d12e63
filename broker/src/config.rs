//! Configuration: the limits negotiated with clients and enforced on their input. A leaf: it
//! depends on nothing else in the broker. (Users live in `core::access`.)

use std::time::Duration;

/// Limits negotiated with clients and enforced on their input.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest frame (connection.tune frame_max), RabbitMQ's default 131072.
    pub frame_max: u32,
    /// Most channels per connection, RabbitMQ's default 2047.
    pub channel_max: u16,
    /// Heartbeat interval proposed to clients, in seconds (0 disables), RabbitMQ's default 60.
    pub heartbeat: u16,
    /// Largest message body accepted, RabbitMQ's default 128 MiB.
    pub max_message_size: u64,
    /// Most simultaneous connections; further ones wait to be accepted.
    pub max_connections: usize,
    /// Above this resident memory (bytes) publishers are blocked (connection.blocked) until it
    /// drops again. RabbitMQ's default is 40% of RAM; so is ours.
    pub memory_high_watermark: u64,
    /// Below this much free disk space in the data directory publishers are blocked.
    /// RabbitMQ's default is 50 MB.
    pub disk_free_limit: u64,
    /// Ready messages may hold this many bytes in memory (all queues together); messages
    /// queued beyond it are paged out to disk until delivered.
    pub queue_memory_budget: usize,
    /// A connection must finish the AMQP handshake (protocol header to `connection.open-ok`)
    /// within this time or its socket is closed; RabbitMQ's `handshake_timeout`, 10 s.
    pub handshake_timeout: Duration,
    /// On the management and Prometheus listeners, a client must send a request's line and
    /// headers within this time of connecting, or of the previous response on a kept-alive
    /// connection; otherwise its connection is closed, however slowly bytes keep coming (the
    /// defence against slowloris). Cowboy's `request_timeout`, which RabbitMQ's HTTP
    /// listeners use: 5 s.
    pub http_request_timeout: Duration,
    /// On the same listeners, a request body gets this long, plus one second for every
    /// [`Limits::http_body_min_rate`] bytes received, to arrive in full; one that trickles
    /// slower is answered 408 and its connection closed. Default 60 s (cowboy's
    /// `idle_timeout`).
    pub http_body_timeout: Duration,
    /// Bytes per second a request body must average after [`Limits::http_body_timeout`]
    /// (default 500, as Apache's `mod_reqtimeout`); 0 allows no extension at all.
    pub http_body_min_rate: u64,
}

fn total_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(8 << 30, |kb| kb * 1024)
}

/// The process's resident set size in bytes (0 where it cannot be read).
pub(crate) fn resident_memory() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            frame_max: 131_072,
            channel_max: 2047,
            heartbeat: 60,
            max_message_size: 128 * 1024 * 1024,
            max_connections: 65_536,
            memory_high_watermark: total_memory() / 10 * 4,
            disk_free_limit: 50_000_000,
            queue_memory_budget: 128 * 1024 * 1024,
            handshake_timeout: Duration::from_secs(10),
            http_request_timeout: Duration::from_secs(5),
            http_body_timeout: Duration::from_secs(60),
            http_body_min_rate: 500,
        }
    }
}

/// Broker configuration, shared by every connection.
#[derive(Debug)]
pub(crate) struct Config {
    pub(crate) limits: Limits,
}
