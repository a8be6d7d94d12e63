//! Queues: the messages waiting in order, and the consumers they are delivered to.
//!
//! A message body is shared (`Arc`) by every queue it was routed to. Each queued copy carries a
//! sequence number, so a requeued message goes back to its original position, as in RabbitMQ.
//! Delivery itself (which consumer has credit) is driven from `state.rs`, which also sees the
//! channels' prefetch limits.

use super::message::{ChannelKey, ConnId, Message};
use amq_protocol::types::{AMQPValue, FieldTable};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One copy of a message waiting in (or delivered from) a queue.
#[derive(Debug, Clone)]
pub(crate) struct QueuedMessage {
    /// Position in the queue's order.
    pub(crate) seq: u64,
    /// The message, in memory or paged out.
    pub(crate) payload: Payload,
    /// Body size (counted against x-max-length-bytes).
    pub(crate) body_len: u32,
    /// Delivered before and requeued.
    pub(crate) redelivered: bool,
    /// When it expires, from the queue's and the message's TTL.
    pub(crate) expires_at: Option<Instant>,
    /// Effective priority in a priority queue (0 elsewhere).
    pub(crate) priority: u8,
    /// Where the message is persisted, for a persistent message in a durable queue.
    pub(crate) stored: Option<super::store::StoreRef>,
}

impl QueuedMessage {
    /// Position key: higher priority first, then publication order.
    fn order(&self) -> (std::cmp::Reverse<u8>, u64) {
        (std::cmp::Reverse(self.priority), self.seq)
    }
}

/// A queued message's data: shared in memory, or written out to a page file.
#[derive(Debug, Clone)]
pub(crate) enum Payload {
    /// In memory, shared by every queue it was routed to.
    Mem(Arc<Message>),
    /// On disk (see `pager.rs`).
    Paged(super::pager::PageRef),
}

impl QueuedMessage {
    /// Memory this copy holds while queued (0 when paged out).
    fn resident_cost(&self) -> usize {
        match &self.payload {
            Payload::Mem(m) => m.header.len() + m.body.len() + 160,
            Payload::Paged(_) => 0,
        }
    }
}

/// What a queue does when it is full (x-overflow).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Overflow {
    /// Drop (or dead-letter) the oldest messages.
    DropHead,
    /// Refuse new messages (nack to confirming publishers).
    RejectPublish,
    /// Refuse new messages and dead-letter them.
    RejectPublishDlx,
}

/// A consumer of a queue.
#[derive(Debug, Clone)]
pub(crate) struct Consumer {
    /// The consumer tag, unique within its channel.
    pub(crate) tag: Arc<str>,
    /// The channel that consumes.
    pub(crate) channel: ChannelKey,
    /// Deliveries need no acknowledgement.
    pub(crate) no_ack: bool,
    /// Exclusive consumer: no other consumer may use the queue.
    pub(crate) exclusive: bool,
    /// Per-consumer prefetch limit (0 = none).
    pub(crate) prefetch: u16,
    /// Deliveries not yet acknowledged (the queue keeps this count).
    unacked: u32,
    /// Consumer priority (x-priority), higher first.
    pub(crate) priority: i64,
    /// Order of registration, for single-active-consumer queues (set by the queue).
    order: u64,
}

impl Consumer {
    /// A consumer that has not been added to a queue yet.
    pub(crate) fn new(
        tag: Arc<str>,
        channel: ChannelKey,
        no_ack: bool,
        exclusive: bool,
        prefetch: u16,
        priority: i64,
    ) -> Self {
        Consumer {
            tag,
            channel,
            no_ack,
            exclusive,
            prefetch,
            unacked: 0,
            priority,
            order: 0,
        }
    }

    /// Whether its own prefetch (basic.qos per consumer) allows one more delivery.
    fn has_credit(&self) -> bool {
        self.no_ack || self.prefetch == 0 || self.unacked < u32::from(self.prefetch)
    }
}

/// A queue. It keeps its own invariants: the ready messages in order with their byte counts,
/// its consumers with their credit, and the round robin; the rest of the core goes through its
/// methods.
#[derive(Debug)]
pub(crate) struct Queue {
    /// Unique id, so acks for a deleted and re-created queue don't touch the new one.
    id: u64,
    /// The queue name (shared: deliveries and dead letters refer to it without a copy).
    name: Arc<str>,
    /// Survives a broker restart.
    durable: bool,
    /// The connection that owns an exclusive queue.
    owner: Option<ConnId>,
    /// Deleted when its last consumer goes.
    auto_delete: bool,
    /// Declaration arguments.
    args: FieldTable,
    /// Messages ready for delivery, in order.
    messages: VecDeque<QueuedMessage>,
    /// Consumers, in round-robin order.
    consumers: Vec<Consumer>,
    /// Where the round robin continues.
    cursor: usize,
    /// The next sequence number.
    next_seq: u64,
    /// Whether it ever had a consumer (auto-delete only applies after the first).
    had_consumer: bool,
    /// Queue TTL for messages (x-message-ttl), if any.
    message_ttl: Option<Duration>,
    /// Ready bytes (bodies).
    ready_bytes: usize,
    /// x-max-priority.
    max_priority: Option<u8>,
    /// x-max-length.
    max_length: Option<usize>,
    /// x-max-length-bytes.
    max_length_bytes: Option<usize>,
    /// x-overflow.
    overflow: Overflow,
    /// x-single-active-consumer.
    single_active: bool,
    /// x-expires: deleted after this long unused.
    expires: Option<Duration>,
    /// Last time it was declared, consumed from or got from.
    last_used: Instant,
    /// x-dead-letter-exchange.
    dlx: Option<String>,
    /// x-dead-letter-routing-key.
    dlrk: Option<String>,
    next_consumer_order: u64,
    /// Bytes of ready messages held in memory, across all queues of the broker.
    resident: Arc<AtomicUsize>,
}

fn arg_int(args: &FieldTable, key: &str) -> Option<i128> {
    args.inner().get(key).and_then(super::fieldtable::value_int)
}

fn arg_str(args: &FieldTable, key: &str) -> Option<String> {
    args.inner()
        .get(key)
        .and_then(super::fieldtable::value_string)
}

impl Queue {
    /// A new, empty queue.
    pub(crate) fn new(
        id: u64,
        name: String,
        durable: bool,
        owner: Option<ConnId>,
        auto_delete: bool,
        args: FieldTable,
    ) -> Self {
        let message_ttl = arg_int(&args, "x-message-ttl")
            .filter(|v| *v >= 0)
            .map(|v| Duration::from_millis(v as u64));
        let max_priority = arg_int(&args, "x-max-priority")
            .filter(|v| (0..=255).contains(v))
            .map(|v| v as u8);
        let max_length = arg_int(&args, "x-max-length")
            .filter(|v| *v >= 0)
            .map(|v| v as usize);
        let max_length_bytes = arg_int(&args, "x-max-length-bytes")
            .filter(|v| *v >= 0)
            .map(|v| v as usize);
        let overflow = match arg_str(&args, "x-overflow").as_deref() {
            Some("reject-publish") => Overflow::RejectPublish,
            Some("reject-publish-dlx") => Overflow::RejectPublishDlx,
            _ => Overflow::DropHead,
        };
        let single_active = matches!(
            args.inner().get("x-single-active-consumer"),
            Some(AMQPValue::Boolean(true))
        );
        let expires = arg_int(&args, "x-expires")
            .filter(|v| *v > 0)
            .map(|v| Duration::from_millis(v as u64));
        let dlx = arg_str(&args, "x-dead-letter-exchange");
        let dlrk = arg_str(&args, "x-dead-letter-routing-key");
        Queue {
            id,
            name: name.into(),
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
            max_priority,
            max_length,
            max_length_bytes,
            overflow,
            single_active,
            expires,
            last_used: Instant::now(),
            dlx,
            dlrk,
            next_consumer_order: 0,
            resident: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Body bytes of the ready messages.
    pub(crate) fn ready_bytes(&self) -> usize {
        self.ready_bytes
    }

    /// Unique id, so acks for a deleted and re-created queue don't touch the new one.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// The queue name, shared.
    pub(crate) fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// Survives a broker restart.
    pub(crate) fn is_durable(&self) -> bool {
        self.durable
    }

    /// Deleted when its last consumer goes.
    pub(crate) fn is_auto_delete(&self) -> bool {
        self.auto_delete
    }

    /// Declaration arguments.
    pub(crate) fn args(&self) -> &FieldTable {
        &self.args
    }

    /// The connection that owns an exclusive queue.
    pub(crate) fn owner(&self) -> Option<ConnId> {
        self.owner
    }

    /// Whether `conn` may use the queue: it is not exclusive to another connection.
    pub(crate) fn usable_by(&self, conn: ConnId) -> bool {
        self.owner.is_none_or(|o| o == conn)
    }

    /// Whether messages are ready for delivery.
    pub(crate) fn has_ready(&self) -> bool {
        !self.messages.is_empty()
    }

    /// Whether any consumer is registered.
    pub(crate) fn has_consumers(&self) -> bool {
        !self.consumers.is_empty()
    }

    /// The consumers, highest priority first.
    pub(crate) fn consumers(&self) -> &[Consumer] {
        &self.consumers
    }

    /// Whether a new consumer (exclusive or not) is refused because of an exclusive one, or
    /// an exclusive one because of any.
    pub(crate) fn refuses_consumer(&self, exclusive: bool) -> bool {
        self.consumers.iter().any(|c| c.exclusive) || (exclusive && !self.consumers.is_empty())
    }

    /// Records a use (declare, consume, get) for x-expires.
    pub(crate) fn touch(&mut self, now: Instant) {
        self.last_used = now;
    }

    /// Unused (no consumer, not declared or read from) for longer than its x-expires.
    pub(crate) fn idle_expired(&self, now: Instant) -> bool {
        self.expires.is_some_and(|exp| {
            self.consumers.is_empty() && now.duration_since(self.last_used) >= exp
        })
    }

    /// An auto-delete queue whose consumers have all gone (after it had one).
    pub(crate) fn is_unused_auto_delete(&self) -> bool {
        self.auto_delete && self.had_consumer && self.consumers.is_empty()
    }

    /// Where dead letters go: the exchange and the routing key override, if configured.
    pub(crate) fn dead_letter_target(&self) -> Option<(String, Option<String>)> {
        Some((self.dlx.clone()?, self.dlrk.clone()))
    }

    /// Whether messages refused for overflow are dead-lettered (reject-publish-dlx).
    pub(crate) fn dead_letters_refused(&self) -> bool {
        self.overflow == Overflow::RejectPublishDlx
    }

    /// Chooses the consumer for the next delivery: the highest priority group first, round
    /// robin within it from where the last delivery left off, only the earliest consumer of a
    /// single-active-consumer queue, and only consumers with their own credit for which
    /// `channel_has_credit` (the session's prefetch and flow, the client's pace) says yes.
    pub(crate) fn next_consumer(
        &self,
        mut channel_has_credit: impl FnMut(&Consumer) -> bool,
    ) -> Option<usize> {
        let n = self.consumers.len();
        let sac = self.single_active.then(|| {
            self.consumers
                .iter()
                .enumerate()
                .min_by_key(|(_, c)| c.order)
                .map_or(0, |(i, _)| i)
        });
        let mut i = 0;
        while i < n {
            let prio = self.consumers[i].priority;
            let end = self.consumers[i..]
                .iter()
                .position(|c| c.priority != prio)
                .map_or(n, |p| i + p);
            let len = end - i;
            let start = if (i..end).contains(&self.cursor) {
                self.cursor
            } else {
                i
            };
            for k in 0..len {
                let idx = i + (start - i + k) % len;
                if sac.is_some_and(|a| a != idx) {
                    continue;
                }
                let c = &self.consumers[idx];
                if c.has_credit() && channel_has_credit(c) {
                    return Some(idx);
                }
            }
            i = end;
        }
        None
    }

    /// Takes the head message for the consumer `next_consumer` chose, moving the round robin
    /// past it and counting the delivery against its prefetch (unless it does not ack).
    pub(crate) fn deliver_to(&mut self, idx: usize) -> Option<QueuedMessage> {
        let m = self.pop()?;
        self.cursor = idx + 1;
        let c = &mut self.consumers[idx];
        if !c.no_ack {
            c.unacked += 1;
        }
        Some(m)
    }

    /// A delivery to a consumer was settled: it has one more unit of credit.
    pub(crate) fn consumer_settled(&mut self, channel: ChannelKey, tag: &str) {
        if let Some(i) = self.consumer_index(channel, tag) {
            let c = &mut self.consumers[i];
            c.unacked = c.unacked.saturating_sub(1);
        }
    }

    /// Shares the broker-wide count of resident ready bytes with this queue.
    pub(crate) fn with_resident_counter(mut self, resident: Arc<AtomicUsize>) -> Self {
        self.resident = resident;
        self
    }

    fn account_in(&mut self, m: &QueuedMessage) {
        self.ready_bytes += m.body_len as usize;
        self.resident
            .fetch_add(m.resident_cost(), Ordering::Relaxed);
    }

    fn account_out(&mut self, m: &QueuedMessage) {
        self.ready_bytes -= m.body_len as usize;
        self.resident
            .fetch_sub(m.resident_cost(), Ordering::Relaxed);
    }

    /// Whether a new message of `len` body bytes must be refused (reject-publish overflow).
    pub(crate) fn rejects_publish(&self, len: usize) -> bool {
        if self.overflow == Overflow::DropHead {
            return false;
        }
        self.max_length.is_some_and(|m| self.messages.len() >= m)
            || self
                .max_length_bytes
                .is_some_and(|m| self.ready_bytes + len > m)
    }

    /// Drops messages from the head until the queue is within its limits (drop-head overflow);
    /// returns them for dead-lettering.
    pub(crate) fn enforce_limits(&mut self) -> Vec<QueuedMessage> {
        let mut dropped = Vec::new();
        loop {
            let over = self.max_length.is_some_and(|m| self.messages.len() > m)
                || self.max_length_bytes.is_some_and(|m| self.ready_bytes > m);
            if !over {
                return dropped;
            }
            match self.messages.pop_front() {
                Some(m) => {
                    self.account_out(&m);
                    dropped.push(m);
                }
                None => return dropped,
            }
        }
    }

    fn insert_ordered(&mut self, m: QueuedMessage) {
        self.account_in(&m);
        let key = m.order();
        if self.messages.back().is_none_or(|b| b.order() < key) {
            self.messages.push_back(m);
        } else {
            let pos = self.messages.partition_point(|x| x.order() < key);
            self.messages.insert(pos, m);
        }
    }

    /// Appends a newly routed message.
    pub(crate) fn push(
        &mut self,
        msg: Arc<Message>,
        now: Instant,
        stored: Option<super::store::StoreRef>,
        paged: Option<super::pager::PageRef>,
    ) {
        let ttl = match (self.message_ttl, msg.expiration()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let seq = self.next_seq;
        self.next_seq += 1;
        let priority = match self.max_priority {
            Some(max) => msg.priority.unwrap_or(0).min(max),
            None => 0,
        };
        let body_len = msg.body_len() as u32;
        let payload = match paged {
            Some(r) => Payload::Paged(r),
            None => Payload::Mem(msg),
        };
        self.insert_ordered(QueuedMessage {
            seq,
            payload,
            body_len,
            redelivered: false,
            expires_at: ttl.map(|t| now + t),
            priority,
            stored,
        });
    }

    /// Takes the next message off the head (the caller drops expired ones first).
    pub(crate) fn pop(&mut self) -> Option<QueuedMessage> {
        let m = self.messages.pop_front()?;
        self.account_out(&m);
        Some(m)
    }

    /// Puts a delivered message back at its original position, marked redelivered.
    pub(crate) fn requeue(&mut self, mut m: QueuedMessage) {
        m.redelivered = true;
        self.insert_ordered(m);
    }

    /// Drops expired messages at the head (RabbitMQ expires at the head) and returns them.
    pub(crate) fn drop_expired(&mut self, now: Instant) -> Vec<QueuedMessage> {
        let mut dropped = Vec::new();
        while let Some(head) = self.messages.front() {
            match head.expires_at {
                Some(t) if t < now => {
                    let m = self.messages.pop_front().expect("front exists");
                    self.account_out(&m);
                    dropped.push(m);
                }
                _ => break,
            }
        }
        dropped
    }

    /// Removes every ready message and returns them.
    pub(crate) fn purge(&mut self) -> Vec<QueuedMessage> {
        let all: Vec<QueuedMessage> = self.messages.drain(..).collect();
        for m in &all {
            self.account_out(m);
        }
        all
    }

    /// Whether a message must be persisted in this queue.
    pub(crate) fn persists(&self, msg: &Message) -> bool {
        self.durable && msg.persistent
    }

    /// Ready messages.
    pub(crate) fn message_count(&self) -> u32 {
        self.messages.len() as u32
    }

    /// Consumers.
    pub(crate) fn consumer_count(&self) -> u32 {
        self.consumers.len() as u32
    }

    /// The index of a channel's consumer.
    pub(crate) fn consumer_index(&self, channel: ChannelKey, tag: &str) -> Option<usize> {
        self.consumers
            .iter()
            .position(|c| c.channel == channel && &*c.tag == tag)
    }

    /// Adds a consumer, keeping higher priorities first (stable within one priority).
    pub(crate) fn add_consumer(&mut self, mut consumer: Consumer) {
        consumer.order = self.next_consumer_order;
        self.next_consumer_order += 1;
        let pos = self
            .consumers
            .partition_point(|c| c.priority >= consumer.priority);
        self.consumers.insert(pos, consumer);
        self.had_consumer = true;
    }

    /// Removes a consumer; returns it.
    pub(crate) fn remove_consumer(&mut self, channel: ChannelKey, tag: &str) -> Option<Consumer> {
        let i = self.consumer_index(channel, tag)?;
        if self.cursor > i {
            self.cursor -= 1;
        }
        Some(self.consumers.remove(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::protocol::basic::AMQPProperties;
    use bytes::Bytes;

    fn msg() -> Arc<Message> {
        Arc::new(Message::with_properties(
            String::new(),
            "q".into(),
            &AMQPProperties::default(),
            Bytes::from_static(b"x"),
        ))
    }

    #[test]
    fn requeue_restores_original_order() {
        let now = Instant::now();
        let mut q = Queue::new(1, "q".into(), false, None, false, FieldTable::default());
        for _ in 0..3 {
            q.push(msg(), now, None, None);
        }
        let a = q.pop().unwrap();
        let b = q.pop().unwrap();
        q.requeue(b);
        q.requeue(a);
        let seqs: Vec<u64> = q.messages.iter().map(|m| m.seq).collect();
        assert_eq!(seqs, vec![0, 1, 2]);
        assert!(q.messages[0].redelivered && !q.messages[2].redelivered);
        assert_eq!(q.ready_bytes, 3);
    }
}
