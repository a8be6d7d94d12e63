//! The broker's shared state: vhosts (exchanges, queues, bindings), channels' delivery state
//! (unacked messages, prefetch), and delivery itself.
//!
//! Everything here sits behind one `std::sync::Mutex`, held only for the few microseconds a
//! method takes and never across an `.await`. One owner for all routing state keeps the semantics
//! easy to follow (a publish, a consume or an ack is atomic) and avoids lock ordering problems;
//! frames for clients leave through each connection's [`Outbox`], never written under the lock.

use crate::error::{AmqpError, AmqpResult, Code};
use crate::exchange::{self, Binding, Destination, Exchange, ExchangeKind};
use crate::pager::{PageRef, Pager};
use crate::queue::{
    ChannelKey, ConnId, Consumer, DeathReason, Message, Overflow, Payload, Queue, QueuedMessage,
};
use crate::store::{Recovered, Store};
use amq_protocol::protocol::AMQPClass;
use amq_protocol::types::{AMQPValue, FieldTable};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;

/// Prefix of direct reply-to pseudo queues.
pub const REPLY_TO: &str = "amq.rabbitmq.reply-to";

/// Above this many queued outbound bytes a connection gets no new deliveries until its writer
/// catches up: a client that stops reading cannot make the broker buffer without bound.
pub const OUTBOX_HIGH_WATER: usize = 4 * 1024 * 1024;

/// A frame (or group of frames) on its way to a connection's writer.
#[derive(Debug)]
pub enum Out {
    /// A method frame.
    Method(u16, AMQPClass),
    /// basic.deliver with the message's content.
    Deliver {
        /// The channel.
        channel: u16,
        /// The consumer.
        consumer_tag: Arc<str>,
        /// The delivery tag on the channel.
        delivery_tag: u64,
        /// Delivered before.
        redelivered: bool,
        /// The message.
        msg: Arc<Message>,
    },
    /// basic.get-ok with the message's content.
    GetOk {
        /// The channel.
        channel: u16,
        /// The delivery tag on the channel.
        delivery_tag: u64,
        /// Delivered before.
        redelivered: bool,
        /// Messages left in the queue.
        message_count: u32,
        /// The message.
        msg: Arc<Message>,
    },
    /// basic.return with the message's content.
    Return {
        /// The channel.
        channel: u16,
        /// Why it came back.
        reply_code: u16,
        /// RabbitMQ's text for the reply code.
        reply_text: &'static str,
        /// The message.
        msg: Arc<Message>,
    },
    /// A publisher confirm (basic.ack, or basic.nack when `ack` is false). The writer merges
    /// runs of consecutive confirms into one frame with `multiple` set.
    Confirm {
        /// The channel.
        channel: u16,
        /// The publish sequence number.
        tag: u64,
        /// Ack (true) or nack.
        ack: bool,
    },
    /// Flush everything before this, then close the socket.
    Close,
}

impl Out {
    fn weight(&self) -> usize {
        match self {
            Out::Deliver { msg, .. } | Out::GetOk { msg, .. } | Out::Return { msg, .. } => {
                msg.body.len() + msg.header.len() + 64
            }
            _ => 64,
        }
    }
}

/// The sending side of a connection's writer.
#[derive(Debug, Clone)]
pub struct Outbox {
    tx: mpsc::UnboundedSender<Out>,
    queued: Arc<AtomicUsize>,
    drained: Arc<tokio::sync::Notify>,
}

impl Outbox {
    /// A new outbox and the receiving end for the writer task.
    pub fn new() -> (Outbox, mpsc::UnboundedReceiver<Out>, Arc<AtomicUsize>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        (
            Outbox {
                tx,
                queued: queued.clone(),
                drained: Arc::new(tokio::sync::Notify::new()),
            },
            rx,
            queued,
        )
    }

    /// Queues a frame for the writer.
    pub fn send(&self, out: Out) {
        self.queued.fetch_add(out.weight(), Ordering::Relaxed);
        let _ = self.tx.send(out);
    }

    /// Queues a method frame.
    pub fn method(&self, channel: u16, method: AMQPClass) {
        self.send(Out::Method(channel, method));
    }

    /// Whether the writer is too far behind to take more deliveries.
    pub fn congested(&self) -> bool {
        self.queued.load(Ordering::Relaxed) > OUTBOX_HIGH_WATER
    }

    /// Whether so much waits for a client that does not read that the connection must stop
    /// reading its requests until the writer catches up (TCP backpressure, as in RabbitMQ).
    pub fn backlogged(&self) -> bool {
        self.queued.load(Ordering::Relaxed) > 4 * OUTBOX_HIGH_WATER
    }

    /// Notified by the writer when a backlog drains.
    pub fn drained(&self) -> Arc<tokio::sync::Notify> {
        self.drained.clone()
    }

    /// How much a frame counts against the high-water mark (for the writer to subtract).
    pub fn weight(out: &Out) -> usize {
        out.weight()
    }
}

/// A message delivered on a channel and not yet acknowledged.
#[derive(Debug)]
pub struct Unacked {
    /// The queue it came from (name and id).
    pub queue: String,
    /// The id of that queue.
    pub queue_id: u64,
    /// The consumer it went to (None for basic.get).
    pub consumer: Option<Arc<str>>,
    /// The queued copy, to requeue.
    pub message: QueuedMessage,
}

/// A channel's delivery state, shared with queues.
#[derive(Debug)]
pub struct ChannelSlot {
    outbox: Outbox,
    vhost: String,
    next_tag: u64,
    /// Unacked deliveries by delivery tag.
    pub unacked: BTreeMap<u64, Unacked>,
    global_prefetch: u16,
    consumer_prefetch: u16,
    /// Consumers on this channel: tag -> queue name.
    consumers: HashMap<Arc<str>, String>,
    /// The direct reply-to consumer: (tag, pseudo queue name).
    reply: Option<(Arc<str>, String)>,
    /// channel.flow active.
    active: bool,
}

impl ChannelSlot {
    fn has_credit(&self) -> bool {
        self.active
            && (self.global_prefetch == 0 || self.unacked.len() < self.global_prefetch as usize)
            && !self.outbox.congested()
    }
}

struct ConnSlot {
    outbox: Outbox,
    cancel_notify: bool,
    channels: HashSet<u16>,
}

/// Exchanges and queues of one virtual host.
#[derive(Debug)]
pub struct Vhost {
    /// The vhost name.
    pub name: String,
    /// Exchanges by name (the default exchange "" is implicit).
    pub exchanges: HashMap<String, Exchange>,
    /// Queues by name.
    pub queues: HashMap<String, Queue>,
}

impl Vhost {
    /// A vhost with RabbitMQ's predeclared exchanges.
    pub fn new(name: &str) -> Self {
        let mut exchanges = HashMap::new();
        for (n, k) in [
            ("amq.direct", ExchangeKind::Direct),
            ("amq.fanout", ExchangeKind::Fanout),
            ("amq.topic", ExchangeKind::Topic),
            ("amq.headers", ExchangeKind::Headers),
            ("amq.match", ExchangeKind::Headers),
        ] {
            exchanges.insert(
                n.to_string(),
                Exchange::new(n.into(), k, true, false, false, FieldTable::default()),
            );
        }
        Vhost {
            name: name.to_string(),
            exchanges,
            queues: HashMap::new(),
        }
    }
}

/// A message leaving a queue for its dead-letter exchange.
#[derive(Debug)]
struct Dead {
    vhost: String,
    queue: String,
    message: QueuedMessage,
    reason: DeathReason,
}

/// How deliveries taken off a channel are settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettleOp {
    /// basic.ack: done with.
    Ack,
    /// Rejected with requeue: back to the queue.
    Requeue,
    /// Rejected without requeue: dead-lettered or dropped.
    Discard,
}

/// Everything the broker knows, behind one lock.
pub struct State {
    vhosts: HashMap<String, Vhost>,
    store: Option<Arc<Store>>,
    pager: Pager,
    /// Bytes of ready messages in memory across all queues.
    resident: Arc<AtomicUsize>,
    /// Above this many resident bytes, newly queued messages are paged out.
    page_budget: usize,
    dead: Vec<Dead>,
    channels: HashMap<ChannelKey, ChannelSlot>,
    conns: HashMap<ConnId, ConnSlot>,
    reply_names: HashMap<String, ChannelKey>,
    next_queue_id: u64,
    /// Log a warning when a durable queue is created without a store (`--memory-only`).
    pub(crate) warn_durable_without_storage: bool,
}

/// What a publish did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Routed {
    /// Queues (or reply consumers) the message reached.
    pub queues: usize,
    /// Queues that refused it (x-overflow reject-publish): the publisher gets a nack.
    pub rejected: usize,
    /// It was written to disk: confirm only after the next fsync.
    pub persisted: bool,
}

impl Routed {
    /// No queue matched: a mandatory message goes back to its publisher. A queue that refused
    /// the message (reject-publish) did match: the publisher learns it from the nack alone, as
    /// in RabbitMQ.
    pub fn is_unroutable(&self) -> bool {
        self.queues == 0 && self.rejected == 0
    }
}

/// Options of basic.consume.
#[derive(Debug, Clone)]
pub struct ConsumeOptions {
    /// The requested tag ("" to have one generated).
    pub tag: String,
    /// No acknowledgements.
    pub no_ack: bool,
    /// Exclusive consumer.
    pub exclusive: bool,
    /// Consumer arguments (x-priority).
    pub args: FieldTable,
}

/// Options of queue.declare.
#[derive(Debug, Clone)]
pub struct QueueDeclare {
    /// Queue name ("" for a server-named queue).
    pub name: String,
    /// Only check that it exists.
    pub passive: bool,
    /// Durable.
    pub durable: bool,
    /// Exclusive to the declaring connection.
    pub exclusive: bool,
    /// Deleted with its last consumer.
    pub auto_delete: bool,
    /// Arguments.
    pub args: FieldTable,
}

/// Options of exchange.declare.
#[derive(Debug, Clone)]
pub struct ExchangeDeclare {
    /// Exchange name.
    pub name: String,
    /// Type name.
    pub kind: String,
    /// Only check that it exists.
    pub passive: bool,
    /// Durable.
    pub durable: bool,
    /// Deleted when its last binding goes.
    pub auto_delete: bool,
    /// Not publishable by clients.
    pub internal: bool,
    /// Arguments.
    pub args: FieldTable,
}

fn gen_name(prefix: &str) -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut rng = rand::thread_rng();
    let suffix: String = (0..22)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect();
    format!("{prefix}{suffix}")
}

/// Formats an argument pair for an equivalence error as RabbitMQ does: plain values when both
/// sides have one, typed values (or "none") when one side is missing.
fn describe_args(new: Option<&AMQPValue>, cur: Option<&AMQPValue>) -> (String, String) {
    match (new, cur) {
        (Some(n), Some(c)) => (plain_arg(n), plain_arg(c)),
        _ => (describe_arg(new), describe_arg(cur)),
    }
}

fn plain_arg(v: &AMQPValue) -> String {
    match v {
        AMQPValue::LongString(s) => format!("'{}'", String::from_utf8_lossy(s.as_bytes())),
        AMQPValue::ShortString(s) => format!("'{}'", s.as_str()),
        AMQPValue::Boolean(b) => format!("'{b}'"),
        other => match exchange::value_int(other) {
            Some(n) => format!("'{n}'"),
            None => format!("'{other:?}'"),
        },
    }
}

/// Formats a field value the way RabbitMQ's equivalence errors do.
fn describe_arg(v: Option<&AMQPValue>) -> String {
    match v {
        None => "none".to_string(),
        Some(v) => {
            let (ty, val) = match v {
                AMQPValue::LongString(s) => (
                    "longstr",
                    String::from_utf8_lossy(s.as_bytes()).into_owned(),
                ),
                AMQPValue::ShortString(s) => ("longstr", s.as_str().to_string()),
                AMQPValue::Boolean(b) => ("bool", b.to_string()),
                AMQPValue::LongInt(x) => ("signedint", x.to_string()),
                AMQPValue::LongLongInt(x) => ("long", x.to_string()),
                AMQPValue::ShortInt(x) => ("short", x.to_string()),
                AMQPValue::ShortShortInt(x) => ("byte", x.to_string()),
                AMQPValue::ShortShortUInt(x) => ("unsignedbyte", x.to_string()),
                AMQPValue::ShortUInt(x) => ("unsignedshort", x.to_string()),
                AMQPValue::LongUInt(x) => ("unsignedint", x.to_string()),
                AMQPValue::Timestamp(x) => ("timestamp", x.to_string()),
                AMQPValue::Double(x) => ("double", x.to_string()),
                AMQPValue::Float(x) => ("float", x.to_string()),
                other => ("table", format!("{other:?}")),
            };
            format!("the value '{val}' of type '{ty}'")
        }
    }
}

fn args_equal(a: Option<&AMQPValue>, b: Option<&AMQPValue>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(x), Some(y)) => exchange::value_eq(x, y),
        _ => false,
    }
}

const QUEUE_EQUIVALENCE_ARGS: &[&str] = &[
    "x-expires",
    "x-message-ttl",
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-max-length",
    "x-max-length-bytes",
    "x-max-priority",
    "x-overflow",
    "x-queue-mode",
    "x-queue-type",
    "x-single-active-consumer",
];

impl Default for State {
    fn default() -> Self {
        Self::new()
    }
}

impl State {
    /// A state with the default vhost "/".
    pub fn new() -> Self {
        let mut vhosts = HashMap::new();
        vhosts.insert("/".to_string(), Vhost::new("/"));
        State {
            vhosts,
            store: None,
            pager: Pager::new(std::env::temp_dir().join(format!(
                "warren-pages-{}-{}",
                std::process::id(),
                gen_name("")
            ))),
            resident: Arc::new(AtomicUsize::new(0)),
            page_budget: 128 * 1024 * 1024,
            dead: Vec::new(),
            channels: HashMap::new(),
            conns: HashMap::new(),
            reply_names: HashMap::new(),
            next_queue_id: 1,
            warn_durable_without_storage: false,
        }
    }

    /// Attaches a message store, restoring the definitions and messages it recovered.
    pub fn attach_store(
        &mut self,
        store: Arc<Store>,
        defs: Option<serde_json::Value>,
        recovered: Vec<Recovered>,
    ) {
        if let Some(defs) = defs {
            crate::definitions::restore(self, &defs);
        }
        let now = Instant::now();
        let mut orphans = 0usize;
        for r in recovered {
            match self
                .vhosts
                .get_mut(&r.vhost)
                .and_then(|v| v.queues.get_mut(&r.queue))
            {
                Some(q) => q.push(Arc::new(r.message), now, Some(r.at), None),
                None => {
                    orphans += 1;
                    store.remove(r.at);
                }
            }
        }
        if orphans > 0 {
            tracing::warn!(
                orphans,
                "dropped recovered messages whose queue no longer exists"
            );
        }
        self.store = Some(store);
    }

    /// Sets the in-memory budget for ready messages and where paged-out messages go.
    pub fn set_paging(&mut self, budget: usize, dir: Option<std::path::PathBuf>) {
        self.page_budget = budget;
        if let Some(dir) = dir {
            self.pager = Pager::new(dir);
        }
    }

    /// Bytes of ready messages currently held in memory.
    pub fn resident_bytes(&self) -> usize {
        self.resident.load(Ordering::Relaxed)
    }

    /// The counter new queues share (for queues restored from definitions).
    pub(crate) fn resident_counter(&self) -> Arc<AtomicUsize> {
        self.resident.clone()
    }

    /// The message store, when the broker has a data directory.
    pub fn store(&self) -> Option<&Arc<Store>> {
        self.store.as_ref()
    }

    /// Records that a message copy is gone for good.
    fn forget(&mut self, m: &QueuedMessage) {
        self.unstore(m);
        if let Payload::Paged(r) = m.payload {
            self.pager.release(r);
        }
    }

    /// Drops the durable copy of a message, if it has one (its page, if any, is released by
    /// whoever reads it: [`materialize`]).
    fn unstore(&self, m: &QueuedMessage) {
        if let (Some(store), Some(at)) = (&self.store, m.stored) {
            store.remove(at);
        }
    }

    /// Writes the durable definitions, if a store is attached.
    fn save_definitions(&self) {
        if let Some(store) = &self.store {
            store.save_definitions(&crate::definitions::snapshot(&self.vhosts));
        }
    }

    /// All vhosts.
    pub(crate) fn vhosts_mut(&mut self) -> &mut HashMap<String, Vhost> {
        &mut self.vhosts
    }

    /// Allocates a queue id (for queues restored from definitions).
    pub(crate) fn next_queue_id(&mut self) -> u64 {
        let id = self.next_queue_id;
        self.next_queue_id += 1;
        id
    }

    /// Whether a vhost exists.
    pub fn has_vhost(&self, name: &str) -> bool {
        self.vhosts.contains_key(name)
    }

    /// Adds a vhost if missing.
    pub fn add_vhost(&mut self, name: &str) {
        self.vhosts
            .entry(name.to_string())
            .or_insert_with(|| Vhost::new(name));
    }

    /// Read access to a vhost.
    pub fn vhost(&self, name: &str) -> Option<&Vhost> {
        self.vhosts.get(name)
    }

    // ----- connections and channels -------------------------------------------------------

    /// Registers an open connection.
    pub fn add_connection(&mut self, conn: ConnId, outbox: Outbox, cancel_notify: bool) {
        self.conns.insert(
            conn,
            ConnSlot {
                outbox,
                cancel_notify,
                channels: HashSet::new(),
            },
        );
    }

    /// Forgets a connection: closes its channels (requeueing their unacked messages) and deletes
    /// its exclusive queues.
    pub fn remove_connection(&mut self, conn: ConnId) {
        let Some(slot) = self.conns.remove(&conn) else {
            return;
        };
        for ch in slot.channels {
            self.close_channel_inner(ChannelKey { conn, channel: ch });
        }
        let mut exclusive = Vec::new();
        for vh in self.vhosts.values() {
            for q in vh.queues.values() {
                if q.owner == Some(conn) {
                    exclusive.push((vh.name.clone(), q.name.clone()));
                }
            }
        }
        for (vh, q) in exclusive {
            self.delete_queue_inner(&vh, &q);
        }
    }

    /// Opens a channel.
    pub fn open_channel(&mut self, key: ChannelKey, vhost: &str) {
        let Some(conn) = self.conns.get_mut(&key.conn) else {
            return;
        };
        conn.channels.insert(key.channel);
        let outbox = conn.outbox.clone();
        self.channels.insert(
            key,
            ChannelSlot {
                outbox,
                vhost: vhost.to_string(),
                next_tag: 1,
                unacked: BTreeMap::new(),
                global_prefetch: 0,
                consumer_prefetch: 0,
                consumers: HashMap::new(),
                reply: None,
                active: true,
            },
        );
    }

    /// Closes a channel: cancels its consumers and requeues its unacked messages.
    pub fn close_channel(&mut self, key: ChannelKey) {
        if let Some(conn) = self.conns.get_mut(&key.conn) {
            conn.channels.remove(&key.channel);
        }
        self.close_channel_inner(key);
    }

    fn close_channel_inner(&mut self, key: ChannelKey) {
        let Some(mut slot) = self.channels.remove(&key) else {
            return;
        };
        if let Some((_, name)) = slot.reply.take() {
            self.reply_names.remove(&name);
        }
        let vhost = slot.vhost.clone();
        let mut touched: Vec<String> = Vec::new();
        for (tag, queue) in slot.consumers.drain() {
            if let Some(q) = self
                .vhosts
                .get_mut(&vhost)
                .and_then(|v| v.queues.get_mut(&queue))
            {
                q.remove_consumer(key, &tag);
            }
            touched.push(queue);
        }
        // Requeue in reverse tag order so each lands at its original position.
        let unacked = std::mem::take(&mut slot.unacked);
        for (_, u) in unacked.into_iter().rev() {
            self.requeue_unacked(&vhost, u);
        }
        touched.sort();
        touched.dedup();
        for q in &touched {
            self.maybe_auto_delete(&vhost, q);
        }
        // Every queue that got messages back may deliver them to other consumers.
        self.pump_all(&vhost);
    }

    fn requeue_unacked(&mut self, vhost: &str, u: Unacked) {
        match self
            .vhosts
            .get_mut(vhost)
            .and_then(|v| v.queues.get_mut(&u.queue))
        {
            Some(q) if q.id == u.queue_id => q.requeue(u.message),
            _ => self.forget(&u.message),
        }
    }

    /// Sets basic.qos for a channel.
    pub fn qos(&mut self, key: ChannelKey, prefetch_count: u16, global: bool) {
        let Some(slot) = self.channels.get_mut(&key) else {
            return;
        };
        if global {
            slot.global_prefetch = prefetch_count;
        } else {
            // As RabbitMQ: a per-consumer qos also lifts the channel-wide limit.
            slot.consumer_prefetch = prefetch_count;
            slot.global_prefetch = 0;
        }
        let vhost = slot.vhost.clone();
        self.pump_all(&vhost);
    }

    /// Sets channel.flow for a channel.
    pub fn flow(&mut self, key: ChannelKey, active: bool) {
        if let Some(slot) = self.channels.get_mut(&key) {
            slot.active = active;
            let vhost = slot.vhost.clone();
            if active {
                self.pump_all(&vhost);
            }
        }
    }

    /// Delivers to a connection's consumers again after its writer caught up.
    pub fn resume_connection(&mut self, conn: ConnId) {
        let vhosts: HashSet<String> = self
            .channels
            .iter()
            .filter(|(k, _)| k.conn == conn)
            .map(|(_, s)| s.vhost.clone())
            .collect();
        for vh in vhosts {
            self.pump_all(&vh);
        }
    }

    // ----- exchanges -----------------------------------------------------------------------

    /// exchange.declare.
    pub fn exchange_declare(&mut self, vhost: &str, d: ExchangeDeclare) -> AmqpResult<()> {
        let vh = self.vhosts.get_mut(vhost).expect("channel vhost exists");
        if d.name.is_empty() {
            return Err(AmqpError::new(
                Code::AccessRefused,
                "operation not permitted on the default exchange",
            ));
        }
        if d.passive {
            return match vh.exchanges.get(&d.name) {
                Some(_) => Ok(()),
                None => Err(AmqpError::no_exchange(&d.name, vhost)),
            };
        }
        let Some(kind) = ExchangeKind::parse(&d.kind) else {
            return Err(AmqpError::new(
                Code::CommandInvalid,
                format!("unknown exchange type '{}'", d.kind),
            ));
        };
        if let Some(x) = vh.exchanges.get(&d.name) {
            let what = format!("exchange '{}' in vhost '{}'", d.name, vhost);
            let check = |field: &str, current: &str, received: &str| -> AmqpResult<()> {
                if current == received {
                    Ok(())
                } else {
                    Err(AmqpError::precondition(format!(
                        "inequivalent arg '{field}' for {what}: received '{received}' but current is '{current}'"
                    )))
                }
            };
            check("type", x.kind.name(), kind.name())?;
            check("durable", &x.durable.to_string(), &d.durable.to_string())?;
            check(
                "auto_delete",
                &x.auto_delete.to_string(),
                &d.auto_delete.to_string(),
            )?;
            check("internal", &x.internal.to_string(), &d.internal.to_string())?;
            let key = "alternate-exchange";
            let (cur, new) = (x.args.inner().get(key), d.args.inner().get(key));
            if !args_equal(cur, new) {
                let (received, current) = describe_args(new, cur);
                return Err(AmqpError::precondition(format!(
                    "inequivalent arg '{key}' for {what}: received {received} but current is {current}"
                )));
            }
            return Ok(());
        }
        if d.name.starts_with("amq.") {
            return Err(AmqpError::new(
                Code::AccessRefused,
                format!(
                    "exchange name '{}' contains reserved prefix 'amq.*'",
                    d.name
                ),
            ));
        }
        let durable = d.durable;
        vh.exchanges.insert(
            d.name.clone(),
            Exchange::new(d.name, kind, d.durable, d.auto_delete, d.internal, d.args),
        );
        if durable {
            self.save_definitions();
        }
        Ok(())
    }

    /// exchange.delete.
    pub fn exchange_delete(&mut self, vhost: &str, name: &str, if_unused: bool) -> AmqpResult<()> {
        if name.is_empty() {
            return Err(AmqpError::new(
                Code::AccessRefused,
                "operation not permitted on the default exchange",
            ));
        }
        if name.starts_with("amq.") {
            return Err(AmqpError::new(
                Code::AccessRefused,
                format!("deletion of system exchange '{name}' in vhost '{vhost}' not allowed"),
            ));
        }
        let vh = self.vhosts.get_mut(vhost).expect("channel vhost exists");
        let Some(x) = vh.exchanges.get(name) else {
            // RabbitMQ: deleting a missing exchange succeeds.
            return Ok(());
        };
        if if_unused && !x.bindings.is_empty() {
            return Err(AmqpError::precondition(format!(
                "exchange '{name}' in vhost '{vhost}' in use"
            )));
        }
        self.delete_exchange_inner(vhost, name);
        Ok(())
    }

    fn delete_exchange_inner(&mut self, vhost: &str, name: &str) {
        let Some(vh) = self.vhosts.get_mut(vhost) else {
            return;
        };
        if vh.exchanges.remove(name).is_some_and(|x| x.durable) {
            self.save_definitions();
        }
        let Some(vh) = self.vhosts.get_mut(vhost) else {
            return;
        };
        let dest = Destination::Exchange(name.to_string());
        let mut sources = Vec::new();
        for x in vh.exchanges.values_mut() {
            if x.unbind_destination(&dest) > 0 {
                sources.push(x.name.clone());
            }
        }
        for s in sources {
            self.maybe_auto_delete_exchange(vhost, &s);
        }
    }

    fn maybe_auto_delete_exchange(&mut self, vhost: &str, name: &str) {
        let delete = self
            .vhosts
            .get(vhost)
            .and_then(|v| v.exchanges.get(name))
            .is_some_and(|x| x.auto_delete && x.bindings.is_empty());
        if delete {
            self.delete_exchange_inner(vhost, name);
        }
    }

    /// queue.bind / exchange.bind: binds `destination` to `source`.
    pub fn bind(
        &mut self,
        vhost: &str,
        conn: ConnId,
        source: &str,
        destination: Destination,
        key: &str,
        args: FieldTable,
    ) -> AmqpResult<()> {
        let vh = self.vhosts.get_mut(vhost).expect("channel vhost exists");
        match &destination {
            Destination::Queue(q) => {
                let Some(queue) = vh.queues.get(q) else {
                    return Err(AmqpError::no_queue(q, vhost));
                };
                if queue.owner.is_some_and(|o| o != conn) {
                    return Err(AmqpError::locked(q, vhost));
                }
            }
            Destination::Exchange(x) => {
                if x.is_empty() {
                    return Err(AmqpError::new(
                        Code::AccessRefused,
                        "operation not permitted on the default exchange",
                    ));
                }
                if !vh.exchanges.contains_key(x) {
                    return Err(AmqpError::no_exchange(x, vhost));
                }
            }
        }
        if source.is_empty() {
            return Err(AmqpError::new(
                Code::AccessRefused,
                "operation not permitted on the default exchange",
            ));
        }
        // Only bindings between durable ends are written to the definitions.
        let durable_destination = crate::definitions::is_durable_destination(vh, &destination);
        let Some(x) = vh.exchanges.get_mut(source) else {
            return Err(AmqpError::no_exchange(source, vhost));
        };
        if x.kind == ExchangeKind::Headers {
            exchange::validate_headers_binding(&args).map_err(AmqpError::precondition)?;
        }
        if x.bind(Binding::new(destination, key.to_string(), args))
            && x.durable
            && durable_destination
        {
            self.save_definitions();
        }
        Ok(())
    }

    /// queue.unbind / exchange.unbind.
    pub fn unbind(
        &mut self,
        vhost: &str,
        conn: ConnId,
        source: &str,
        destination: Destination,
        key: &str,
        args: &FieldTable,
    ) -> AmqpResult<()> {
        let vh = self.vhosts.get_mut(vhost).expect("channel vhost exists");
        if let Destination::Queue(q) = &destination {
            if let Some(queue) = vh.queues.get(q) {
                if queue.owner.is_some_and(|o| o != conn) {
                    return Err(AmqpError::locked(q, vhost));
                }
            }
        }
        if source.is_empty() {
            return Err(AmqpError::new(
                Code::AccessRefused,
                "operation not permitted on the default exchange",
            ));
        }
        let durable_destination = crate::definitions::is_durable_destination(vh, &destination);
        // As RabbitMQ 3.x: unbinding from or to something that does not exist succeeds.
        let Some(x) = vh.exchanges.get_mut(source) else {
            return Ok(());
        };
        if x.unbind(&destination, key, args) {
            if x.durable && durable_destination {
                self.save_definitions();
            }
            self.maybe_auto_delete_exchange(vhost, source);
        }
        Ok(())
    }

    // ----- queues --------------------------------------------------------------------------

    /// queue.declare: returns (name, message count, consumer count).
    pub fn queue_declare(
        &mut self,
        vhost: &str,
        conn: ConnId,
        d: QueueDeclare,
    ) -> AmqpResult<(String, u32, u32)> {
        if d.name.starts_with(REPLY_TO) {
            return if d.name == REPLY_TO || self.reply_names.contains_key(&d.name) {
                Ok((d.name, 0, 1))
            } else {
                Err(AmqpError::no_queue(&d.name, vhost))
            };
        }
        let vh = self.vhosts.get_mut(vhost).expect("channel vhost exists");
        if d.passive {
            let Some(q) = vh.queues.get(&d.name) else {
                return Err(AmqpError::no_queue(&d.name, vhost));
            };
            if q.owner.is_some_and(|o| o != conn) {
                return Err(AmqpError::locked(&d.name, vhost));
            }
            return Ok((d.name, q.message_count(), q.consumer_count()));
        }
        let name = if d.name.is_empty() {
            gen_name("amq.gen-")
        } else {
            d.name.clone()
        };
        let durable = d.durable && !d.exclusive;
        if let Some(q) = vh.queues.get_mut(&name) {
            // Strict, as RabbitMQ: the owner must match the declaration exactly.
            if q.owner != d.exclusive.then_some(conn) {
                return Err(AmqpError::locked(&name, vhost));
            }
            let what = format!("queue '{name}' in vhost '{vhost}'");
            for (field, cur, new) in [
                ("durable", q.durable, durable),
                ("auto_delete", q.auto_delete, d.auto_delete),
            ] {
                if cur != new {
                    return Err(AmqpError::precondition(format!(
                        "inequivalent arg '{field}' for {what}: received '{new}' but current is '{cur}'"
                    )));
                }
            }
            for key in QUEUE_EQUIVALENCE_ARGS {
                let (cur, new) = (q.args.inner().get(*key), d.args.inner().get(*key));
                if *key == "x-queue-type" {
                    let norm = |v: Option<&AMQPValue>| match v {
                        None => Some("classic".to_string()),
                        Some(v) => exchange::value_string(v),
                    };
                    if norm(cur).is_some() && norm(cur) == norm(new) {
                        continue;
                    }
                }
                if !args_equal(cur, new) {
                    let (received, current) = describe_args(new, cur);
                    return Err(AmqpError::precondition(format!(
                        "inequivalent arg '{key}' for {what}: received {received} but current is {current}"
                    )));
                }
            }
            q.last_used = Instant::now();
            return Ok((name, q.message_count(), q.consumer_count()));
        }
        if name.starts_with("amq.") && !d.name.is_empty() {
            return Err(AmqpError::new(
                Code::AccessRefused,
                format!("queue name '{name}' contains reserved prefix 'amq.*'"),
            ));
        }
        crate::args::validate_queue_args(&name, vhost, &d.args)?;
        let id = self.next_queue_id;
        self.next_queue_id += 1;
        let owner = d.exclusive.then_some(conn);
        let q = Queue::new(id, name.clone(), durable, owner, d.auto_delete, d.args)
            .with_resident_counter(self.resident.clone());
        vh.queues.insert(name.clone(), q);
        if durable {
            self.save_definitions();
            if self.store.is_none() && self.warn_durable_without_storage {
                tracing::warn!(queue = %name, vhost, "durable queue declared on a memory-only broker: it and its messages are lost when the broker stops");
            }
        }
        Ok((name, 0, 0))
    }

    fn queue_mut(&mut self, vhost: &str, name: &str, conn: ConnId) -> AmqpResult<&mut Queue> {
        let q = self
            .vhosts
            .get_mut(vhost)
            .and_then(|v| v.queues.get_mut(name))
            .ok_or_else(|| AmqpError::no_queue(name, vhost))?;
        if q.owner.is_some_and(|o| o != conn) {
            return Err(AmqpError::locked(name, vhost));
        }
        Ok(q)
    }

    /// queue.purge: returns the number of messages removed.
    pub fn queue_purge(&mut self, vhost: &str, conn: ConnId, name: &str) -> AmqpResult<u32> {
        let purged = self.queue_mut(vhost, name, conn)?.purge();
        for m in &purged {
            self.forget(m);
        }
        Ok(purged.len() as u32)
    }

    /// queue.delete: returns the number of messages deleted.
    pub fn queue_delete(
        &mut self,
        vhost: &str,
        conn: ConnId,
        name: &str,
        if_unused: bool,
        if_empty: bool,
    ) -> AmqpResult<u32> {
        let q = match self.queue_mut(vhost, name, conn) {
            Ok(q) => q,
            // RabbitMQ: deleting a missing queue succeeds with a count of 0.
            Err(e) if e.code == Code::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        if if_unused && !q.consumers.is_empty() {
            return Err(AmqpError::precondition(format!(
                "queue '{name}' in vhost '{vhost}' in use"
            )));
        }
        if if_empty && !q.messages.is_empty() {
            return Err(AmqpError::precondition(format!(
                "queue '{name}' in vhost '{vhost}' not empty"
            )));
        }
        Ok(self.delete_queue_inner(vhost, name))
    }

    fn delete_queue_inner(&mut self, vhost: &str, name: &str) -> u32 {
        let Some(vh) = self.vhosts.get_mut(vhost) else {
            return 0;
        };
        let Some(q) = vh.queues.remove(name) else {
            return 0;
        };
        let durable = q.durable;
        let dest = Destination::Queue(name.to_string());
        let mut sources = Vec::new();
        for x in vh.exchanges.values_mut() {
            if x.unbind_destination(&dest) > 0 {
                sources.push(x.name.clone());
            }
        }
        for c in &q.consumers {
            if let Some(slot) = self.channels.get_mut(&c.channel) {
                slot.consumers.remove(&c.tag);
                let notify = self
                    .conns
                    .get(&c.channel.conn)
                    .is_some_and(|cs| cs.cancel_notify);
                if notify {
                    slot.outbox.method(
                        c.channel.channel,
                        AMQPClass::Basic(amq_protocol::protocol::basic::AMQPMethod::Cancel(
                            amq_protocol::protocol::basic::Cancel {
                                consumer_tag: c.tag.as_ref().into(),
                                nowait: true,
                            },
                        )),
                    );
                }
            }
        }
        for s in sources {
            self.maybe_auto_delete_exchange(vhost, &s);
        }
        // Account the ready messages out (the broker-wide resident count) and free their store
        // records and pages.
        let mut q = q;
        let count = q.message_count();
        for m in q.purge() {
            self.forget(&m);
        }
        if durable {
            self.save_definitions();
        }
        count
    }

    fn maybe_auto_delete(&mut self, vhost: &str, name: &str) {
        let delete = self
            .vhosts
            .get(vhost)
            .and_then(|v| v.queues.get(name))
            .is_some_and(|q| q.auto_delete && q.had_consumer && q.consumers.is_empty());
        if delete {
            self.delete_queue_inner(vhost, name);
        }
    }

    // ----- consumers -----------------------------------------------------------------------

    /// basic.consume: returns the consumer tag.
    pub fn consume(
        &mut self,
        key: ChannelKey,
        queue: &str,
        opts: ConsumeOptions,
    ) -> AmqpResult<Arc<str>> {
        let slot = self.channels.get(&key).expect("open channel");
        let vhost = slot.vhost.clone();
        let tag: Arc<str> = if opts.tag.is_empty() {
            gen_name("amq.ctag-").into()
        } else {
            opts.tag.as_str().into()
        };
        let in_use = slot.consumers.contains_key(&tag)
            || slot.reply.as_ref().is_some_and(|(t, _)| *t == tag);
        if in_use {
            return Err(AmqpError::new(
                Code::NotAllowed,
                format!("attempt to reuse consumer tag '{tag}'"),
            ));
        }
        if queue == REPLY_TO {
            if !opts.no_ack {
                return Err(AmqpError::precondition("reply consumer cannot acknowledge"));
            }
            if slot.reply.is_some() {
                return Err(AmqpError::precondition("reply consumer already set"));
            }
            let name = gen_name(&format!("{REPLY_TO}."));
            self.reply_names.insert(name.clone(), key);
            let slot = self.channels.get_mut(&key).expect("open channel");
            slot.reply = Some((tag.clone(), name));
            return Ok(tag);
        }
        let prefetch = slot.consumer_prefetch;
        let priority = match opts.args.inner().get("x-priority") {
            None => 0,
            Some(v) => exchange::value_int(v)
                .and_then(|p| i64::try_from(p).ok())
                .ok_or_else(|| {
                    AmqpError::precondition(format!(
                        "invalid arg 'x-priority' for queue '{queue}' in vhost '{vhost}': {v:?}"
                    ))
                })?,
        };
        let q = self.queue_mut(&vhost, queue, key.conn)?;
        if q.consumers.iter().any(|c| c.exclusive) || (opts.exclusive && !q.consumers.is_empty()) {
            return Err(AmqpError::new(
                Code::AccessRefused,
                format!("queue '{queue}' in vhost '{vhost}' in exclusive use"),
            ));
        }
        q.add_consumer(Consumer {
            tag: tag.clone(),
            channel: key,
            no_ack: opts.no_ack,
            exclusive: opts.exclusive,
            prefetch,
            unacked: 0,
            priority,
            order: 0,
        });
        q.last_used = Instant::now();
        let slot = self.channels.get_mut(&key).expect("open channel");
        slot.consumers.insert(tag.clone(), queue.to_string());
        Ok(tag)
    }

    /// Sends consume-ok ahead of any delivery, then starts delivering to the new consumer.
    pub fn consume_ok_then_deliver(&mut self, key: ChannelKey, queue: &str, ok: Option<AMQPClass>) {
        let Some(slot) = self.channels.get(&key) else {
            return;
        };
        if let Some(ok) = ok {
            slot.outbox.method(key.channel, ok);
        }
        let vhost = slot.vhost.clone();
        self.pump(&vhost, queue);
    }

    /// basic.cancel: returns whether the consumer existed.
    pub fn cancel(&mut self, key: ChannelKey, tag: &str) -> bool {
        let Some(slot) = self.channels.get_mut(&key) else {
            return false;
        };
        if slot.reply.as_ref().is_some_and(|(t, _)| &**t == tag) {
            let (_, name) = slot.reply.take().expect("checked");
            self.reply_names.remove(&name);
            return true;
        }
        let Some(queue) = slot.consumers.remove(tag) else {
            return false;
        };
        let vhost = slot.vhost.clone();
        if let Some(q) = self
            .vhosts
            .get_mut(&vhost)
            .and_then(|v| v.queues.get_mut(&queue))
        {
            q.remove_consumer(key, tag);
        }
        self.maybe_auto_delete(&vhost, &queue);
        self.pump(&vhost, &queue);
        true
    }

    // ----- delivery ------------------------------------------------------------------------

    /// Delivers what a queue can deliver to consumers with credit.
    pub fn pump(&mut self, vhost: &str, queue: &str) {
        let Some(q) = self
            .vhosts
            .get_mut(vhost)
            .and_then(|v| v.queues.get_mut(queue))
        else {
            return;
        };
        pump_queue(
            vhost,
            q,
            &mut self.channels,
            &mut self.dead,
            self.store.as_deref(),
            &mut self.pager,
            Instant::now(),
        );
        self.flush_dead_letters();
    }

    fn pump_all(&mut self, vhost: &str) {
        let Some(vh) = self.vhosts.get_mut(vhost) else {
            return;
        };
        let now = Instant::now();
        for q in vh.queues.values_mut() {
            if !q.messages.is_empty() && !q.consumers.is_empty() {
                pump_queue(
                    vhost,
                    q,
                    &mut self.channels,
                    &mut self.dead,
                    self.store.as_deref(),
                    &mut self.pager,
                    now,
                );
            }
        }
        self.flush_dead_letters();
    }

    /// Drops expired messages at the head of every queue (dead-lettering them), and deletes
    /// queues unused for longer than their x-expires.
    pub fn expire_tick(&mut self) {
        let now = Instant::now();
        let mut idle = Vec::new();
        for vh in self.vhosts.values_mut() {
            for q in vh.queues.values_mut() {
                for m in q.drop_expired(now) {
                    self.dead.push(Dead {
                        vhost: vh.name.clone(),
                        queue: q.name.clone(),
                        message: m,
                        reason: DeathReason::Expired,
                    });
                }
                if let Some(exp) = q.expires {
                    if q.consumers.is_empty() && now.duration_since(q.last_used) >= exp {
                        idle.push((vh.name.clone(), q.name.clone()));
                    }
                }
            }
        }
        for (vh, q) in idle {
            tracing::debug!(queue = %q, "queue expired (x-expires)");
            self.delete_queue_inner(&vh, &q);
        }
        self.flush_dead_letters();
    }

    /// Publishes dead letters to their queues' dead-letter exchanges, until none are left
    /// (dead-lettering can cause more of it).
    fn flush_dead_letters(&mut self) {
        let mut rounds = 0;
        while !self.dead.is_empty() && rounds < 16 {
            rounds += 1;
            let batch = std::mem::take(&mut self.dead);
            for d in batch {
                let dead_letter_to = self
                    .vhosts
                    .get(&d.vhost)
                    .and_then(|v| v.queues.get(&d.queue))
                    .and_then(|q| Some((q.dlx.clone()?, q.dlrk.clone())));
                let Some((dlx, dlrk)) = dead_letter_to else {
                    self.forget(&d.message);
                    continue;
                };
                let mut message = d.message;
                self.unstore(&message);
                // Reads a paged message back before its page is released.
                let Some(original) = materialize(&mut self.pager, &mut message) else {
                    continue;
                };
                let msg = crate::deadletter::dead_letter(
                    &original,
                    &d.queue,
                    d.reason,
                    &dlx,
                    dlrk.as_deref(),
                );
                if d.reason != DeathReason::Rejected && crate::deadletter::is_cycle(&msg, &d.queue)
                {
                    // RabbitMQ drops a message cycling back without a rejection in between.
                    let vh = self.vhosts.get(&d.vhost).expect("vhost");
                    if route(vh, &msg).contains(&d.queue) {
                        continue;
                    }
                }
                let vhost = d.vhost.clone();
                self.publish_inner(&vhost, Arc::new(msg));
            }
        }
        self.dead.clear();
    }

    /// basic.get: returns whether a message was sent (get-ok) or not (caller sends get-empty).
    pub fn get(&mut self, key: ChannelKey, queue: &str, no_ack: bool) -> AmqpResult<bool> {
        let vhost = self.channels.get(&key).expect("open channel").vhost.clone();
        let q = self.queue_mut(&vhost, queue, key.conn)?;
        q.last_used = Instant::now();
        let expired = q.drop_expired(Instant::now());
        let popped = q.pop();
        if !expired.is_empty() {
            let name = q.name.clone();
            self.dead.extend(expired.into_iter().map(|m| Dead {
                vhost: vhost.clone(),
                queue: name.clone(),
                message: m,
                reason: DeathReason::Expired,
            }));
            self.flush_dead_letters();
        }
        let Some(q) = self
            .vhosts
            .get_mut(&vhost)
            .and_then(|v| v.queues.get_mut(queue))
        else {
            return Ok(false);
        };
        let Some(mut m) = popped else {
            return Ok(false);
        };
        // An expired message that reached the head goes now, so the count is right.
        let now = Instant::now();
        for e in q.drop_expired(now) {
            self.dead.push(Dead {
                vhost: vhost.clone(),
                queue: queue.to_string(),
                message: e,
                reason: DeathReason::Expired,
            });
        }
        let (queue_id, count) = (q.id, q.message_count());
        let Some(msg) = materialize(&mut self.pager, &mut m) else {
            // materialize released its page already.
            self.unstore(&m);
            return Ok(false);
        };
        let slot = self.channels.get_mut(&key).expect("open channel");
        let tag = slot.next_tag;
        slot.next_tag += 1;
        slot.outbox.send(Out::GetOk {
            channel: key.channel,
            delivery_tag: tag,
            redelivered: m.redelivered,
            message_count: count,
            msg,
        });
        if no_ack {
            if let (Some(s), Some(at)) = (&self.store, m.stored) {
                s.remove(at);
            }
        } else {
            slot.unacked.insert(
                tag,
                Unacked {
                    queue: queue.to_string(),
                    queue_id,
                    consumer: None,
                    message: m,
                },
            );
        }
        self.flush_dead_letters();
        Ok(true)
    }

    /// Removes the unacked deliveries an ack/nack/reject names, in tag order.
    pub fn take_unacked(
        &mut self,
        key: ChannelKey,
        tag: u64,
        multiple: bool,
    ) -> AmqpResult<Vec<(u64, Unacked)>> {
        let slot = self.channels.get_mut(&key).expect("open channel");
        let unknown = || AmqpError::precondition(format!("unknown delivery tag {tag}"));
        if multiple {
            if tag == 0 {
                return Ok(std::mem::take(&mut slot.unacked).into_iter().collect());
            }
            let rest = slot.unacked.split_off(&(tag + 1));
            let taken = std::mem::replace(&mut slot.unacked, rest);
            if taken.is_empty() {
                return Err(unknown());
            }
            Ok(taken.into_iter().collect())
        } else {
            slot.unacked
                .remove(&tag)
                .map(|u| vec![(tag, u)])
                .ok_or_else(unknown)
        }
    }

    /// Checks that acknowledging these tags would be valid, without doing it (for tx).
    pub fn check_tag(&self, key: ChannelKey, tag: u64, multiple: bool) -> AmqpResult<()> {
        let slot = self.channels.get(&key).expect("open channel");
        let ok = if multiple {
            tag == 0 || slot.unacked.range(..=tag).next().is_some()
        } else {
            slot.unacked.contains_key(&tag)
        };
        if ok {
            Ok(())
        } else {
            Err(AmqpError::precondition(format!(
                "unknown delivery tag {tag}"
            )))
        }
    }

    /// basic.ack.
    pub fn ack(&mut self, key: ChannelKey, tag: u64, multiple: bool) -> AmqpResult<()> {
        let settled = self.take_unacked(key, tag, multiple)?;
        self.settle_taken(key, settled, SettleOp::Ack);
        Ok(())
    }

    /// basic.nack / basic.reject: requeue or drop.
    pub fn reject(
        &mut self,
        key: ChannelKey,
        tag: u64,
        multiple: bool,
        requeue: bool,
    ) -> AmqpResult<()> {
        let settled = self.take_unacked(key, tag, multiple)?;
        let op = if requeue {
            SettleOp::Requeue
        } else {
            SettleOp::Discard
        };
        self.settle_taken(key, settled, op);
        Ok(())
    }

    /// basic.recover: requeues every unacked message of the channel.
    pub fn recover(&mut self, key: ChannelKey) {
        let slot = self.channels.get_mut(&key).expect("open channel");
        let all: Vec<(u64, Unacked)> = std::mem::take(&mut slot.unacked).into_iter().collect();
        self.settle_taken(key, all, SettleOp::Requeue);
    }

    /// Puts deliveries taken by a transaction that was rolled back back into the unacked set.
    pub fn restore_unacked(&mut self, key: ChannelKey, taken: Vec<(u64, Unacked)>) {
        if let Some(slot) = self.channels.get_mut(&key) {
            slot.unacked.extend(taken);
        }
    }

    /// Settles taken deliveries: acknowledged (dropped) or requeued.
    pub fn settle_taken(&mut self, key: ChannelKey, settled: Vec<(u64, Unacked)>, op: SettleOp) {
        let vhost = self.channels.get(&key).expect("open channel").vhost.clone();
        let mut touched: Vec<String> = Vec::new();
        let store = self.store.clone();
        for (_, u) in settled.into_iter().rev() {
            let gone = |u: &Unacked| {
                if let (Some(s), Some(at)) = (&store, u.message.stored) {
                    s.remove(at);
                }
            };
            let Some(q) = self
                .vhosts
                .get_mut(&vhost)
                .and_then(|v| v.queues.get_mut(&u.queue))
            else {
                gone(&u);
                continue;
            };
            if q.id != u.queue_id {
                gone(&u);
                continue;
            }
            if let Some(tag) = &u.consumer {
                if let Some(i) = q.consumer_index(key, tag) {
                    q.consumers[i].unacked = q.consumers[i].unacked.saturating_sub(1);
                }
            }
            match op {
                SettleOp::Requeue => {
                    q.requeue(u.message);
                    // A requeue can push a queue over x-max-length: its head goes (drop-head).
                    for m in q.enforce_limits() {
                        self.dead.push(Dead {
                            vhost: vhost.clone(),
                            queue: u.queue.clone(),
                            message: m,
                            reason: DeathReason::Maxlen,
                        });
                    }
                }
                SettleOp::Discard => self.dead.push(Dead {
                    vhost: vhost.clone(),
                    queue: u.queue.clone(),
                    message: u.message,
                    reason: DeathReason::Rejected,
                }),
                SettleOp::Ack => gone(&u),
            }
            if touched.last() != Some(&u.queue) {
                touched.push(u.queue);
            }
        }
        touched.sort();
        touched.dedup();
        if self
            .channels
            .get(&key)
            .is_some_and(|s| s.global_prefetch != 0)
        {
            // A channel-wide limit frees credit for every queue this channel consumes from.
            let queues: Vec<String> = self.channels[&key].consumers.values().cloned().collect();
            touched.extend(queues);
            touched.sort();
            touched.dedup();
        }
        for q in touched {
            self.pump(&vhost, &q);
        }
        self.flush_dead_letters();
    }

    // ----- publishing ----------------------------------------------------------------------

    /// Checks that a publish to `exchange` is allowed (exists, not internal).
    pub fn check_publish(&self, vhost: &str, exchange: &str) -> AmqpResult<()> {
        if exchange.is_empty() {
            return Ok(());
        }
        let vh = self.vhosts.get(vhost).expect("channel vhost exists");
        match vh.exchanges.get(exchange) {
            None => Err(AmqpError::no_exchange(exchange, vhost)),
            Some(x) if x.internal => Err(AmqpError::new(
                Code::AccessRefused,
                format!("cannot publish to internal exchange '{exchange}' in vhost '{vhost}'"),
            )),
            Some(_) => Ok(()),
        }
    }

    /// The pseudo queue name of a channel's direct reply-to consumer.
    pub fn reply_name(&self, key: ChannelKey) -> Option<&str> {
        self.channels
            .get(&key)
            .and_then(|s| s.reply.as_ref())
            .map(|(_, n)| n.as_str())
    }

    /// Routes a message and enqueues it in every matching queue, delivering where possible.
    pub fn publish(&mut self, vhost: &str, msg: Arc<Message>) -> Routed {
        let routed = self.publish_inner(vhost, msg);
        self.flush_dead_letters();
        routed
    }

    fn publish_inner(&mut self, vhost: &str, msg: Arc<Message>) -> Routed {
        let now = Instant::now();
        let mut routed = Routed::default();
        if msg.exchange.is_empty() && msg.routing_key.starts_with(REPLY_TO) {
            if let Some(key) = self.reply_names.get(&msg.routing_key).copied() {
                if let Some(slot) = self.channels.get_mut(&key) {
                    let (tag, _) = slot.reply.clone().expect("registered reply consumer");
                    let delivery_tag = slot.next_tag;
                    slot.next_tag += 1;
                    slot.outbox.send(Out::Deliver {
                        channel: key.channel,
                        consumer_tag: tag,
                        delivery_tag,
                        redelivered: false,
                        msg,
                    });
                    routed.queues = 1;
                }
            }
            return routed;
        }
        let Some(vh) = self.vhosts.get_mut(vhost) else {
            return routed;
        };
        let queues = route(vh, &msg);
        let mut page: Option<PageRef> = None;
        for name in queues {
            if let Some(q) = vh.queues.get_mut(&name) {
                if q.rejects_publish(msg.body_len()) {
                    routed.rejected += 1;
                    if q.overflow == Overflow::RejectPublishDlx {
                        self.dead.push(Dead {
                            vhost: vhost.to_string(),
                            queue: name.clone(),
                            message: QueuedMessage {
                                seq: 0,
                                payload: Payload::Mem(msg.clone()),
                                body_len: msg.body_len() as u32,
                                redelivered: false,
                                expires_at: None,
                                priority: 0,
                                stored: None,
                            },
                            reason: DeathReason::Maxlen,
                        });
                    }
                    continue;
                }
                let stored = match &self.store {
                    Some(store) if q.persists(&msg) => {
                        routed.persisted = true;
                        Some(store.append(vhost, &name, &msg))
                    }
                    _ => None,
                };
                let paged = if self.resident.load(Ordering::Relaxed) > self.page_budget {
                    match page {
                        Some(r) => {
                            self.pager.retain(r);
                            Some(r)
                        }
                        None => {
                            page = self.pager.write(&msg);
                            // Hold the page for the whole publish: a queue may deliver (and
                            // release) it before the next queue takes its reference.
                            if let Some(r) = page {
                                self.pager.retain(r);
                            }
                            page
                        }
                    }
                } else {
                    None
                };
                q.push(msg.clone(), now, stored, paged);
                routed.queues += 1;
                if !q.consumers.is_empty() {
                    pump_queue(
                        vhost,
                        q,
                        &mut self.channels,
                        &mut self.dead,
                        self.store.as_deref(),
                        &mut self.pager,
                        now,
                    );
                }
                for m in q.enforce_limits() {
                    self.dead.push(Dead {
                        vhost: vhost.to_string(),
                        queue: name.clone(),
                        message: m,
                        reason: DeathReason::Maxlen,
                    });
                }
            }
        }
        if let Some(r) = page {
            self.pager.release(r);
        }
        routed
    }
}

/// The queues a message published to `msg.exchange` reaches, following exchange-to-exchange
/// bindings and alternate exchanges, each queue once.
fn route(vh: &Vhost, msg: &Message) -> Vec<String> {
    let mut queues: Vec<String> = Vec::new();
    // The routing key, plus CC and BCC keys (RabbitMQ's sender-selected distribution).
    let keys =
        || std::iter::once(msg.routing_key.as_str()).chain(msg.cc.iter().map(String::as_str));
    if msg.exchange.is_empty() {
        for k in keys() {
            if vh.queues.contains_key(k) && !queues.iter().any(|q| q == k) {
                queues.push(k.to_string());
            }
        }
        return queues;
    }
    // Decoded only if a headers exchange is on the way.
    let mut headers: Option<Option<FieldTable>> = None;
    let mut visited: HashSet<&str> = HashSet::new();
    let mut pending: Vec<&str> = vec![msg.exchange.as_str()];
    let mut found: Vec<&Destination> = Vec::new();
    while let Some(xname) = pending.pop() {
        if !visited.insert(xname) {
            continue;
        }
        let Some(x) = vh.exchanges.get(xname) else {
            continue;
        };
        found.clear();
        let h = if x.kind == ExchangeKind::Headers {
            headers.get_or_insert_with(|| msg.headers()).as_ref()
        } else {
            None
        };
        for k in keys() {
            x.route(k, h, &mut found);
        }
        let mut reached = false;
        for d in &found {
            match d {
                Destination::Queue(q) => {
                    if vh.queues.contains_key(q) {
                        reached = true;
                        if !queues.iter().any(|e| e == q) {
                            queues.push(q.clone());
                        }
                    }
                }
                Destination::Exchange(e) => {
                    reached = true;
                    pending.push(e.as_str());
                }
            }
        }
        if !reached {
            if let Some(ae) = x.alternate_exchange() {
                pending.push(ae);
            }
        }
    }
    queues
}

/// Brings a paged-out message back into memory (freeing its page); None if it cannot be read.
fn materialize(pager: &mut Pager, m: &mut QueuedMessage) -> Option<Arc<Message>> {
    match &m.payload {
        Payload::Mem(a) => Some(a.clone()),
        Payload::Paged(r) => {
            let r = *r;
            let msg = pager.read(r);
            pager.release(r);
            let Some(msg) = msg else {
                tracing::error!("a paged-out message could not be read back; it is lost");
                return None;
            };
            let a = Arc::new(msg);
            m.payload = Payload::Mem(a.clone());
            Some(a)
        }
    }
}

/// Delivers from `q` while it has messages and some consumer has credit.
fn pump_queue(
    vhost: &str,
    q: &mut Queue,
    channels: &mut HashMap<ChannelKey, ChannelSlot>,
    dead: &mut Vec<Dead>,
    store: Option<&Store>,
    pager: &mut Pager,
    now: Instant,
) {
    loop {
        if q.consumers.is_empty() {
            return;
        }
        for m in q.drop_expired(now) {
            dead.push(Dead {
                vhost: vhost.to_string(),
                queue: q.name.clone(),
                message: m,
                reason: DeathReason::Expired,
            });
        }
        if q.messages.is_empty() {
            return;
        }
        let n = q.consumers.len();
        // Single active consumer: only the earliest registered consumer gets messages.
        let sac = q.single_active.then(|| {
            q.consumers
                .iter()
                .enumerate()
                .min_by_key(|(_, c)| c.order)
                .map(|(i, _)| i)
                .unwrap_or(0)
        });
        // Highest priority group first; round robin within the group that has credit.
        let mut chosen = None;
        let mut i = 0;
        while i < n && chosen.is_none() {
            let prio = q.consumers[i].priority;
            let end = q.consumers[i..]
                .iter()
                .position(|c| c.priority != prio)
                .map_or(n, |p| i + p);
            let len = end - i;
            let start = if q.cursor >= i && q.cursor < end {
                q.cursor
            } else {
                i
            };
            for k in 0..len {
                let idx = i + (start - i + k) % len;
                if sac.is_some_and(|a| a != idx) {
                    continue;
                }
                let c = &q.consumers[idx];
                let Some(slot) = channels.get(&c.channel) else {
                    continue;
                };
                let consumer_ok = c.no_ack || c.prefetch == 0 || c.unacked < c.prefetch as u32;
                let channel_ok = if c.no_ack {
                    slot.active && !slot.outbox.congested()
                } else {
                    slot.has_credit()
                };
                if consumer_ok && channel_ok {
                    chosen = Some(idx);
                    break;
                }
            }
            i = end;
        }
        let Some(idx) = chosen else {
            return;
        };
        q.cursor = idx + 1;
        let mut m = q.pop().expect("checked non-empty");
        let Some(msg) = materialize(pager, &mut m) else {
            if let (Some(s), Some(at)) = (store, m.stored) {
                s.remove(at);
            }
            continue;
        };
        let c = &mut q.consumers[idx];
        let slot = channels.get_mut(&c.channel).expect("checked above");
        let delivery_tag = slot.next_tag;
        slot.next_tag += 1;
        slot.outbox.send(Out::Deliver {
            channel: c.channel.channel,
            consumer_tag: c.tag.clone(),
            delivery_tag,
            redelivered: m.redelivered,
            msg,
        });
        if c.no_ack {
            if let (Some(s), Some(at)) = (store, m.stored) {
                s.remove(at);
            }
        } else {
            c.unacked += 1;
            slot.unacked.insert(
                delivery_tag,
                Unacked {
                    queue: q.name.clone(),
                    queue_id: q.id,
                    consumer: Some(c.tag.clone()),
                    message: m,
                },
            );
        }
    }
}
