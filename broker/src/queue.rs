//! Queues: the messages waiting in order, and the consumers they are delivered to.
//!
//! A message body is shared (`Arc`) by every queue it was routed to. Each queued copy carries a
//! sequence number, so a requeued message goes back to its original position, as in RabbitMQ.
//! Delivery itself (which consumer has credit) is driven from `state.rs`, which also sees the
//! channels' prefetch limits.

use amq_protocol::protocol::basic::AMQPProperties;
use amq_protocol::types::{AMQPValue, FieldTable};
use bytes::Bytes;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A connection's id, unique for the broker's lifetime.
pub type ConnId = u64;

/// Identifies a channel across the broker: its connection and its number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelKey {
    /// The connection.
    pub conn: ConnId,
    /// The channel number within the connection.
    pub channel: u16,
}

/// A published message: routing information, properties and body, immutable once published.
#[derive(Debug)]
pub struct Message {
    /// The exchange it was published to.
    pub exchange: String,
    /// The routing key it was published with.
    pub routing_key: String,
    /// Decoded properties (for expiration, priority, headers routing, reply-to...).
    pub properties: AMQPProperties,
    /// The encoded content header payload, re-sent verbatim on delivery.
    pub header: Bytes,
    /// The body.
    pub body: Bytes,
}

impl Message {
    /// Bytes counted against queue length limits: the body size, as RabbitMQ counts it.
    pub fn body_len(&self) -> usize {
        self.body.len()
    }

    /// The per-message TTL from the `expiration` property, if valid.
    pub fn expiration(&self) -> Option<Duration> {
        self.properties
            .expiration()
            .as_ref()
            .and_then(|e| parse_expiration(e.as_str()).ok())
            .map(Duration::from_millis)
    }
}

/// Parses an `expiration` property like RabbitMQ: a non-negative integer of milliseconds.
pub fn parse_expiration(s: &str) -> Result<u64, &'static str> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err("invalid");
    }
    s.parse::<u64>().map_err(|_| "invalid")
}

/// One copy of a message waiting in (or delivered from) a queue.
#[derive(Debug, Clone)]
pub struct QueuedMessage {
    /// Position in the queue's order.
    pub seq: u64,
    /// The shared message.
    pub msg: Arc<Message>,
    /// Delivered before and requeued.
    pub redelivered: bool,
    /// When it expires, from the queue's and the message's TTL.
    pub expires_at: Option<Instant>,
}

/// A consumer of a queue.
#[derive(Debug, Clone)]
pub struct Consumer {
    /// The consumer tag, unique within its channel.
    pub tag: Arc<str>,
    /// The channel that consumes.
    pub channel: ChannelKey,
    /// Deliveries need no acknowledgement.
    pub no_ack: bool,
    /// Exclusive consumer: no other consumer may use the queue.
    pub exclusive: bool,
    /// Per-consumer prefetch limit (0 = none).
    pub prefetch: u16,
    /// Deliveries not yet acknowledged.
    pub unacked: u32,
    /// Consumer priority (x-priority), higher first.
    pub priority: i64,
}

/// A queue.
#[derive(Debug)]
pub struct Queue {
    /// Unique id, so acks for a deleted and re-created queue don't touch the new one.
    pub id: u64,
    /// The queue name.
    pub name: String,
    /// Survives a broker restart.
    pub durable: bool,
    /// The connection that owns an exclusive queue.
    pub owner: Option<ConnId>,
    /// Deleted when its last consumer goes.
    pub auto_delete: bool,
    /// Declaration arguments.
    pub args: FieldTable,
    /// Messages ready for delivery, in order.
    pub messages: VecDeque<QueuedMessage>,
    /// Consumers, in round-robin order.
    pub consumers: Vec<Consumer>,
    /// Where the round robin continues.
    pub cursor: usize,
    /// The next sequence number.
    pub next_seq: u64,
    /// Whether it ever had a consumer (auto-delete only applies after the first).
    pub had_consumer: bool,
    /// Queue TTL for messages (x-message-ttl), if any.
    pub message_ttl: Option<Duration>,
    /// Ready bytes (bodies).
    pub ready_bytes: usize,
}

impl Queue {
    /// A new, empty queue.
    pub fn new(
        id: u64,
        name: String,
        durable: bool,
        owner: Option<ConnId>,
        auto_delete: bool,
        args: FieldTable,
    ) -> Self {
        let message_ttl = args
            .inner()
            .get("x-message-ttl")
            .and_then(crate::exchange::value_int)
            .filter(|v| *v >= 0)
            .map(|v| Duration::from_millis(v as u64));
        Queue {
            id,
            name,
            durable,
            owner,
            auto_delete,
            args,
            messages: VecDeque::new(),
            consumers: Vec::new(),
            cursor: 0,
            next_seq: 0,
            had_consumer: false,
            message_ttl,
            ready_bytes: 0,
        }
    }

    /// Appends a newly routed message.
    pub fn push(&mut self, msg: Arc<Message>, now: Instant) {
        let ttl = match (self.message_ttl, msg.expiration()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let seq = self.next_seq;
        self.next_seq += 1;
        self.ready_bytes += msg.body_len();
        self.messages.push_back(QueuedMessage {
            seq,
            msg,
            redelivered: false,
            expires_at: ttl.map(|t| now + t),
        });
    }

    /// Takes the next message off the head, dropping expired ones.
    pub fn pop(&mut self, now: Instant) -> Option<QueuedMessage> {
        self.drop_expired(now);
        let m = self.messages.pop_front()?;
        self.ready_bytes -= m.msg.body_len();
        Some(m)
    }

    /// Puts a delivered message back at its original position, marked redelivered.
    pub fn requeue(&mut self, mut m: QueuedMessage) {
        m.redelivered = true;
        self.ready_bytes += m.msg.body_len();
        let pos = self.messages.partition_point(|x| x.seq < m.seq);
        self.messages.insert(pos, m);
    }

    /// Drops expired messages at the head (RabbitMQ expires at the head); returns how many.
    pub fn drop_expired(&mut self, now: Instant) -> usize {
        let mut n = 0;
        while let Some(head) = self.messages.front() {
            match head.expires_at {
                Some(t) if t <= now => {
                    let m = self.messages.pop_front().expect("front exists");
                    self.ready_bytes -= m.msg.body_len();
                    n += 1;
                }
                _ => break,
            }
        }
        n
    }

    /// Removes every ready message; returns how many there were.
    pub fn purge(&mut self) -> u32 {
        let n = self.messages.len() as u32;
        self.messages.clear();
        self.ready_bytes = 0;
        n
    }

    /// Ready messages.
    pub fn message_count(&self) -> u32 {
        self.messages.len() as u32
    }

    /// Consumers.
    pub fn consumer_count(&self) -> u32 {
        self.consumers.len() as u32
    }

    /// The index of a channel's consumer.
    pub fn consumer_index(&self, channel: ChannelKey, tag: &str) -> Option<usize> {
        self.consumers
            .iter()
            .position(|c| c.channel == channel && &*c.tag == tag)
    }

    /// Adds a consumer, keeping higher priorities first (stable within one priority).
    pub fn add_consumer(&mut self, consumer: Consumer) {
        let pos = self
            .consumers
            .partition_point(|c| c.priority >= consumer.priority);
        self.consumers.insert(pos, consumer);
        self.had_consumer = true;
    }

    /// Removes a consumer; returns it.
    pub fn remove_consumer(&mut self, channel: ChannelKey, tag: &str) -> Option<Consumer> {
        let i = self.consumer_index(channel, tag)?;
        if self.cursor > i {
            self.cursor -= 1;
        }
        Some(self.consumers.remove(i))
    }

    /// The x-queue-type argument, if given.
    pub fn queue_type(&self) -> &str {
        match self.args.inner().get("x-queue-type") {
            Some(AMQPValue::LongString(s)) => {
                std::str::from_utf8(s.as_bytes()).unwrap_or("classic")
            }
            Some(AMQPValue::ShortString(s)) => s.as_str(),
            _ => "classic",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg() -> Arc<Message> {
        Arc::new(Message {
            exchange: String::new(),
            routing_key: "q".into(),
            properties: AMQPProperties::default(),
            header: Bytes::new(),
            body: Bytes::from_static(b"x"),
        })
    }

    #[test]
    fn requeue_restores_original_order() {
        let now = Instant::now();
        let mut q = Queue::new(1, "q".into(), false, None, false, FieldTable::default());
        for _ in 0..3 {
            q.push(msg(), now);
        }
        let a = q.pop(now).unwrap();
        let b = q.pop(now).unwrap();
        q.requeue(b);
        q.requeue(a);
        let seqs: Vec<u64> = q.messages.iter().map(|m| m.seq).collect();
        assert_eq!(seqs, vec![0, 1, 2]);
        assert!(q.messages[0].redelivered && !q.messages[2].redelivered);
        assert_eq!(q.ready_bytes, 3);
    }

    #[test]
    fn expiration_parsing() {
        assert_eq!(parse_expiration("1500"), Ok(1500));
        assert!(parse_expiration("-1").is_err());
        assert!(parse_expiration("").is_err());
        assert!(parse_expiration("1.5").is_err());
    }
}
