//! Statistics: RabbitMQ's `message_stats` counters (publish, deliver, get, ack, ...) per queue,
//! exchange, channel and vhost, their rates, and read-only snapshots of queues, exchanges,
//! bindings, channels and connections for the management API and Prometheus.
//!
//! Counters are plain integers bumped under the state lock by the operations that do the work
//! (publish, pump, get, settle). Rates are computed as RabbitMQ's `basic` rates mode does: a
//! sampler ([`State::sample_rates`], every few seconds) remembers the counts of the previous
//! sample, and `_details.rate` is the difference divided by the seconds between the two.

use super::exchange::Destination;
use super::message::{ChannelKey, ConnId};
use super::state::State;
use super::FastMap;
use amq_protocol::types::FieldTable;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

/// One `message_stats` counter, named as RabbitMQ names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stat {
    /// Messages published (to a vhost, into a queue, on a channel).
    Publish,
    /// Messages published to an exchange.
    PublishIn,
    /// Messages an exchange routed to at least one queue.
    PublishOut,
    /// Publisher confirms sent.
    Confirm,
    /// Deliveries to consumers that acknowledge.
    Deliver,
    /// Deliveries to no-ack consumers.
    DeliverNoAck,
    /// basic.get answers that acknowledge.
    Get,
    /// basic.get answers without acknowledgement.
    GetNoAck,
    /// basic.get that found nothing.
    GetEmpty,
    /// Acknowledgements.
    Ack,
    /// Deliveries of messages delivered before.
    Redeliver,
    /// Mandatory messages returned as unroutable.
    ReturnUnroutable,
    /// Messages dropped as unroutable.
    DropUnroutable,
}

/// Every counter, in the order of [`Stat`].
pub(crate) const STATS: [Stat; 13] = [
    Stat::Publish,
    Stat::PublishIn,
    Stat::PublishOut,
    Stat::Confirm,
    Stat::Deliver,
    Stat::DeliverNoAck,
    Stat::Get,
    Stat::GetNoAck,
    Stat::GetEmpty,
    Stat::Ack,
    Stat::Redeliver,
    Stat::ReturnUnroutable,
    Stat::DropUnroutable,
];

impl Stat {
    /// RabbitMQ's field name.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Stat::Publish => "publish",
            Stat::PublishIn => "publish_in",
            Stat::PublishOut => "publish_out",
            Stat::Confirm => "confirm",
            Stat::Deliver => "deliver",
            Stat::DeliverNoAck => "deliver_no_ack",
            Stat::Get => "get",
            Stat::GetNoAck => "get_no_ack",
            Stat::GetEmpty => "get_empty",
            Stat::Ack => "ack",
            Stat::Redeliver => "redeliver",
            Stat::ReturnUnroutable => "return_unroutable",
            Stat::DropUnroutable => "drop_unroutable",
        }
    }
}

/// Counts and rates of one object.
#[derive(Debug, Clone, Default)]
pub(crate) struct Counters {
    now: [u64; STATS.len()],
    last: [u64; STATS.len()],
    rate: [f64; STATS.len()],
}

impl Counters {
    /// Adds `n` to a counter.
    pub(crate) fn add(&mut self, s: Stat, n: u64) {
        self.now[s as usize] += n;
    }

    /// A counter's value.
    pub(crate) fn get(&self, s: Stat) -> u64 {
        self.now[s as usize]
    }

    /// A counter's rate per second at the last sample.
    pub(crate) fn rate(&self, s: Stat) -> f64 {
        self.rate[s as usize]
    }

    /// Whether nothing was ever counted (RabbitMQ omits `message_stats` then).
    pub(crate) fn is_empty(&self) -> bool {
        self.now.iter().all(|v| *v == 0)
    }

    fn sample(&mut self, secs: f64) {
        for i in 0..STATS.len() {
            self.rate[i] = (self.now[i] - self.last[i]) as f64 / secs;
        }
        self.last = self.now;
    }

    /// Adds another object's counts and rates into these (vhost and overall totals).
    pub(crate) fn merge(&mut self, other: &Counters) {
        for i in 0..STATS.len() {
            self.now[i] += other.now[i];
            self.rate[i] += other.rate[i];
        }
    }
}

/// Connection and channel churn, as the overview's `churn_rates`.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Churn {
    /// Connections opened.
    ConnectionCreated,
    /// Connections closed.
    ConnectionClosed,
    /// Channels opened.
    ChannelCreated,
    /// Channels closed.
    ChannelClosed,
    /// Queues created.
    QueueCreated,
    /// Queues declared (created or not).
    QueueDeclared,
    /// Queues deleted.
    QueueDeleted,
}

/// Every churn counter with RabbitMQ's name.
pub(crate) const CHURN: [(Churn, &str); 7] = [
    (Churn::ChannelClosed, "channel_closed"),
    (Churn::ChannelCreated, "channel_created"),
    (Churn::ConnectionClosed, "connection_closed"),
    (Churn::ConnectionCreated, "connection_created"),
    (Churn::QueueCreated, "queue_created"),
    (Churn::QueueDeclared, "queue_declared"),
    (Churn::QueueDeleted, "queue_deleted"),
];

/// All counters of the broker.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    vhosts: FastMap<String, Counters>,
    queues: FastMap<String, FastMap<String, Counters>>,
    exchanges: FastMap<String, FastMap<String, Counters>>,
    channels: FastMap<ChannelKey, Counters>,
    churn: [u64; CHURN.len()],
    last_sample: Option<Instant>,
    /// Per queue: (messages, ready, unacked) at the last sample, and their rates of change.
    depths: HashMap<(String, String), ([u64; 3], [f64; 3])>,
}

/// The default exchange's key in the exchange counters. Comparing two empty strings costs a
/// libc `memcmp` of length 0 on Rust's dangling pointer, which glibc's AVX-512 variant does
/// with a masked load from that unmapped address: a microcode assist of hundreds of cycles.
/// Measured (perf, frame-level publish to the default exchange): a quarter of the broker's
/// time. No client may name an exchange `amq.*`, so the key is free.
fn exchange_key(name: &str) -> &str {
    if name.is_empty() {
        "amq.default"
    } else {
        name
    }
}

/// Adds to the counters of `name` in `vhost`: one lookup per level when both exist (the
/// per-message case), creating them otherwise.
fn bump(
    map: &mut FastMap<String, FastMap<String, Counters>>,
    vhost: &str,
    name: &str,
    s: Stat,
    n: u64,
) {
    if let Some(inner) = map.get_mut(vhost) {
        match inner.get_mut(name) {
            Some(c) => c.add(s, n),
            None => inner.entry(name.to_string()).or_default().add(s, n),
        }
        return;
    }
    map.entry(vhost.to_string())
        .or_default()
        .entry(name.to_string())
        .or_default()
        .add(s, n);
}

impl Stats {
    /// Counts for a vhost (and so the overall totals).
    pub(crate) fn vhost(&mut self, vhost: &str, s: Stat, n: u64) {
        match self.vhosts.get_mut(vhost) {
            Some(c) => c.add(s, n),
            None => {
                let mut c = Counters::default();
                c.add(s, n);
                self.vhosts.insert(vhost.to_string(), c);
            }
        }
    }

    /// Counts for a queue.
    pub(crate) fn queue(&mut self, vhost: &str, queue: &str, s: Stat, n: u64) {
        bump(&mut self.queues, vhost, queue, s, n);
    }

    /// Counts for an exchange ("" is the default exchange, which RabbitMQ also counts).
    pub(crate) fn exchange(&mut self, vhost: &str, exchange: &str, s: Stat, n: u64) {
        bump(&mut self.exchanges, vhost, exchange_key(exchange), s, n);
    }

    /// Counts for a channel.
    pub(crate) fn channel(&mut self, key: ChannelKey, s: Stat, n: u64) {
        self.channels.entry(key).or_default().add(s, n);
    }

    /// A delivery (consumer or get) from a queue to a channel, counted everywhere it shows.
    pub(crate) fn delivered(
        &mut self,
        vhost: &str,
        queue: &str,
        key: ChannelKey,
        s: Stat,
        redelivered: bool,
    ) {
        self.vhost(vhost, s, 1);
        self.queue(vhost, queue, s, 1);
        self.channel(key, s, 1);
        if redelivered {
            self.vhost(vhost, Stat::Redeliver, 1);
            self.queue(vhost, queue, Stat::Redeliver, 1);
            self.channel(key, Stat::Redeliver, 1);
        }
    }

    /// A queue's (messages, messages_ready, messages_unacknowledged) rates of change per
    /// second between the last two samples.
    pub(crate) fn depth_rates(&self, vhost: &str, queue: &str) -> [f64; 3] {
        self.depths
            .get(&(vhost.to_string(), queue.to_string()))
            .map_or([0.0; 3], |d| d.1)
    }

    /// Counts a churn event.
    pub(crate) fn churn(&mut self, c: Churn) {
        self.churn[c as usize] += 1;
    }

    /// Forgets a deleted queue's counters.
    pub(crate) fn forget_queue(&mut self, vhost: &str, queue: &str) {
        if let Some(m) = self.queues.get_mut(vhost) {
            m.remove(queue);
        }
    }

    /// Forgets a deleted exchange's counters.
    pub(crate) fn forget_exchange(&mut self, vhost: &str, exchange: &str) {
        if let Some(m) = self.exchanges.get_mut(vhost) {
            m.remove(exchange);
        }
    }

    /// Forgets a closed channel's counters.
    pub(crate) fn forget_channel(&mut self, key: ChannelKey) {
        self.channels.remove(&key);
    }

    /// A vhost's counters.
    pub(crate) fn of_vhost(&self, vhost: &str) -> Option<&Counters> {
        self.vhosts.get(vhost)
    }

    /// A queue's counters.
    pub(crate) fn of_queue(&self, vhost: &str, queue: &str) -> Option<&Counters> {
        self.queues.get(vhost)?.get(queue)
    }

    /// An exchange's counters.
    pub(crate) fn of_exchange(&self, vhost: &str, exchange: &str) -> Option<&Counters> {
        self.exchanges.get(vhost)?.get(exchange_key(exchange))
    }

    /// A channel's counters.
    pub(crate) fn of_channel(&self, key: ChannelKey) -> Option<&Counters> {
        self.channels.get(&key)
    }

    /// The churn counters, in the order of [`CHURN`].
    pub(crate) fn churn_counts(&self) -> [u64; CHURN.len()] {
        self.churn
    }

    fn sample(&mut self, now: Instant) {
        let secs = self
            .last_sample
            .map_or(0.0, |t| now.duration_since(t).as_secs_f64());
        self.last_sample = Some(now);
        if secs <= 0.0 {
            return;
        }
        let all = self
            .vhosts
            .values_mut()
            .chain(self.queues.values_mut().flat_map(|m| m.values_mut()))
            .chain(self.exchanges.values_mut().flat_map(|m| m.values_mut()))
            .chain(self.channels.values_mut());
        for c in all {
            c.sample(secs);
        }
    }
}

/// A queue as the management API shows it.
#[derive(Debug, Clone)]
pub(crate) struct QueueInfo {
    /// Its vhost.
    pub(crate) vhost: String,
    /// Its name.
    pub(crate) name: String,
    /// Durable.
    pub(crate) durable: bool,
    /// Auto-delete.
    pub(crate) auto_delete: bool,
    /// Exclusive to a connection (its id).
    pub(crate) owner: Option<ConnId>,
    /// Declaration arguments.
    pub(crate) arguments: FieldTable,
    /// Ready messages.
    pub(crate) ready: u64,
    /// Delivered, not yet acknowledged.
    pub(crate) unacked: u64,
    /// Body bytes of ready messages.
    pub(crate) ready_bytes: u64,
    /// Body bytes of unacknowledged messages.
    pub(crate) unacked_bytes: u64,
    /// Consumers.
    pub(crate) consumers: u64,
}

/// An exchange as the management API shows it.
#[derive(Debug, Clone)]
pub(crate) struct ExchangeInfo {
    /// Its vhost.
    pub(crate) vhost: String,
    /// Its name ("" for the default exchange).
    pub(crate) name: String,
    /// Type name.
    pub(crate) kind: &'static str,
    /// Durable.
    pub(crate) durable: bool,
    /// Auto-delete.
    pub(crate) auto_delete: bool,
    /// Internal.
    pub(crate) internal: bool,
    /// Arguments.
    pub(crate) arguments: FieldTable,
}

/// A binding as the management API shows it.
#[derive(Debug, Clone)]
pub(crate) struct BindingInfo {
    /// Its vhost.
    pub(crate) vhost: String,
    /// The source exchange ("" for the default exchange's implicit bindings).
    pub(crate) source: String,
    /// The destination's name.
    pub(crate) destination: String,
    /// "queue" or "exchange".
    pub(crate) destination_type: &'static str,
    /// The binding key.
    pub(crate) routing_key: String,
    /// Binding arguments.
    pub(crate) arguments: FieldTable,
}

/// A consumer as the management API shows it.
#[derive(Debug, Clone)]
pub(crate) struct ConsumerInfo {
    /// Its vhost.
    pub(crate) vhost: String,
    /// The queue.
    pub(crate) queue: String,
    /// The tag.
    pub(crate) tag: String,
    /// The channel.
    pub(crate) channel: ChannelKey,
    /// Acknowledges (ack_required).
    pub(crate) ack_required: bool,
    /// Exclusive.
    pub(crate) exclusive: bool,
    /// Prefetch count.
    pub(crate) prefetch: u16,
    /// Priority argument.
    pub(crate) priority: i64,
}

/// A channel as the management API shows it.
#[derive(Debug, Clone)]
pub(crate) struct ChannelInfo {
    /// Its key.
    pub(crate) key: ChannelKey,
    /// Its vhost.
    pub(crate) vhost: String,
    /// Unacknowledged deliveries.
    pub(crate) unacked: u64,
    /// Consumers.
    pub(crate) consumers: u64,
    /// Global prefetch.
    pub(crate) global_prefetch: u16,
    /// Per-consumer prefetch.
    pub(crate) prefetch: u16,
    /// channel.flow active.
    pub(crate) active: bool,
}

/// What a front-end tells the core about a connection, for listing and closing it.
#[derive(Clone)]
pub(crate) struct ConnInfo {
    /// The protocol as RabbitMQ names it ("AMQP 0-9-1", "MQTT 3.1.1", "STOMP 1.2").
    pub(crate) protocol: String,
    /// The client's address.
    pub(crate) peer: std::net::SocketAddr,
    /// The broker's address the client connected to.
    pub(crate) local: std::net::SocketAddr,
    /// The user.
    pub(crate) user: String,
    /// The vhost.
    pub(crate) vhost: String,
    /// The client's properties (AMQP's client-properties table; other protocols fill in
    /// what they know, e.g. an MQTT client id).
    pub(crate) client_properties: FieldTable,
    /// Negotiated frame_max, channel_max, heartbeat (AMQP; MQTT and STOMP report 0, 1, 0).
    pub(crate) tune: (u32, u16, u16),
    /// A connection of a plugin protocol (MQTT, STOMP), which RabbitMQ runs over a direct
    /// AMQP connection and lists as `type: direct`, without an authentication mechanism.
    pub(crate) direct: bool,
    /// When it was opened.
    pub(crate) connected_at: SystemTime,
    /// Closes it with a reason (RabbitMQ: connection.close 320 CONNECTION_FORCED with the
    /// reason text), from the management API.
    pub(crate) close: Arc<dyn Fn(&str) + Send + Sync>,
}

impl std::fmt::Debug for ConnInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnInfo")
            .field("protocol", &self.protocol)
            .field("peer", &self.peer)
            .field("user", &self.user)
            .finish()
    }
}

impl ConnInfo {
    /// RabbitMQ's connection name: "127.0.0.1:50000 -> 127.0.0.1:5672".
    pub(crate) fn name(&self) -> String {
        format!("{} -> {}", self.peer, self.local)
    }
}

impl State {
    /// Counts a publish on a channel (the front-end calls it after [`State::publish`]): the
    /// channel's and vhost's `publish`, `confirm` when the channel is in confirm mode, and
    /// `return_unroutable` or `drop_unroutable` for a message no queue took.
    pub(crate) fn count_published(
        &mut self,
        key: ChannelKey,
        vhost: &str,
        routed: &super::delivery::Routed,
        mandatory: bool,
        confirm: bool,
    ) {
        self.stats.channel(key, Stat::Publish, 1);
        self.stats.vhost(vhost, Stat::Publish, 1);
        if confirm {
            self.stats.channel(key, Stat::Confirm, 1);
            self.stats.vhost(vhost, Stat::Confirm, 1);
        }
        if routed.is_unroutable() {
            let s = if mandatory {
                Stat::ReturnUnroutable
            } else {
                Stat::DropUnroutable
            };
            self.stats.channel(key, s, 1);
            self.stats.vhost(vhost, s, 1);
        }
    }

    /// Counts a basic.get that found nothing.
    pub(super) fn count_get_empty(&mut self, key: ChannelKey, vhost: &str, queue: &str) {
        self.stats.channel(key, Stat::GetEmpty, 1);
        self.stats.vhost(vhost, Stat::GetEmpty, 1);
        self.stats.queue(vhost, queue, Stat::GetEmpty, 1);
    }

    /// The counters (read-only).
    pub(crate) fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Takes a rate sample (the management listener calls it every 5 s, as RabbitMQ's
    /// collection interval).
    pub(crate) fn sample_rates(&mut self) {
        let now = Instant::now();
        let secs = self
            .stats
            .last_sample
            .map_or(0.0, |t| now.duration_since(t).as_secs_f64());
        let mut depths = HashMap::new();
        for q in self.queue_infos(None) {
            let d = [q.ready + q.unacked, q.ready, q.unacked];
            let key = (q.vhost, q.name);
            let rates = match self.stats.depths.get(&key) {
                Some((last, _)) if secs > 0.0 => {
                    std::array::from_fn(|i| (d[i] as f64 - last[i] as f64) / secs)
                }
                _ => [0.0; 3],
            };
            depths.insert(key, (d, rates));
        }
        self.stats.depths = depths;
        self.stats.sample(now);
    }

    /// Every queue of `vhost` (all vhosts when None).
    pub(crate) fn queue_infos(&self, vhost: Option<&str>) -> Vec<QueueInfo> {
        let mut unacked: HashMap<(&str, &str), (u64, u64)> = HashMap::new();
        for slot in self.channels.values() {
            for u in slot.unacked.values() {
                let e = unacked.entry((slot.vhost.as_str(), &*u.queue)).or_default();
                e.0 += 1;
                e.1 += u64::from(u.message.body_len);
            }
        }
        let mut out = Vec::new();
        for vh in self
            .vhosts
            .values()
            .filter(|v| vhost.is_none_or(|n| n == v.name))
        {
            for q in vh.queues.values() {
                let (un, un_bytes) = unacked
                    .get(&(vh.name.as_str(), &**q.name()))
                    .copied()
                    .unwrap_or_default();
                out.push(QueueInfo {
                    vhost: vh.name.clone(),
                    name: q.name().to_string(),
                    durable: q.is_durable(),
                    auto_delete: q.is_auto_delete(),
                    owner: q.owner(),
                    arguments: q.args().clone(),
                    ready: u64::from(q.message_count()),
                    unacked: un,
                    ready_bytes: q.ready_bytes() as u64,
                    unacked_bytes: un_bytes,
                    consumers: u64::from(q.consumer_count()),
                });
            }
        }
        out
    }

    /// Every exchange of `vhost` (all vhosts when None), the default exchange included.
    pub(crate) fn exchange_infos(&self, vhost: Option<&str>) -> Vec<ExchangeInfo> {
        let mut out = Vec::new();
        for vh in self
            .vhosts
            .values()
            .filter(|v| vhost.is_none_or(|n| n == v.name))
        {
            out.push(ExchangeInfo {
                vhost: vh.name.clone(),
                name: String::new(),
                kind: "direct",
                durable: true,
                auto_delete: false,
                internal: false,
                arguments: FieldTable::default(),
            });
            for x in vh.exchanges.values() {
                out.push(ExchangeInfo {
                    vhost: vh.name.clone(),
                    name: x.name.clone(),
                    kind: x.kind.name(),
                    durable: x.durable,
                    auto_delete: x.auto_delete,
                    internal: x.internal,
                    arguments: x.args.clone(),
                });
            }
        }
        out
    }

    /// Every binding of `vhost` (all when None), with the default exchange's implicit ones.
    pub(crate) fn binding_infos(&self, vhost: Option<&str>) -> Vec<BindingInfo> {
        let mut out = Vec::new();
        for vh in self
            .vhosts
            .values()
            .filter(|v| vhost.is_none_or(|n| n == v.name))
        {
            let mut queues: Vec<&String> = vh.queues.keys().collect();
            queues.sort();
            for q in queues {
                out.push(BindingInfo {
                    vhost: vh.name.clone(),
                    source: String::new(),
                    destination: q.clone(),
                    destination_type: "queue",
                    routing_key: q.clone(),
                    arguments: FieldTable::default(),
                });
            }
            for x in vh.exchanges.values() {
                for b in &x.bindings {
                    let (dest, kind) = match &b.destination {
                        Destination::Queue(q) => (q.clone(), "queue"),
                        Destination::Exchange(e) => (e.clone(), "exchange"),
                    };
                    out.push(BindingInfo {
                        vhost: vh.name.clone(),
                        source: x.name.clone(),
                        destination: dest,
                        destination_type: kind,
                        routing_key: b.key.clone(),
                        arguments: b.args.clone(),
                    });
                }
            }
        }
        out
    }

    /// Every consumer.
    pub(crate) fn consumer_infos(&self) -> Vec<ConsumerInfo> {
        let mut out = Vec::new();
        for vh in self.vhosts.values() {
            for q in vh.queues.values() {
                for c in q.consumers() {
                    out.push(ConsumerInfo {
                        vhost: vh.name.clone(),
                        queue: q.name().to_string(),
                        tag: c.tag.to_string(),
                        channel: c.channel,
                        ack_required: !c.no_ack,
                        exclusive: c.exclusive,
                        prefetch: c.prefetch,
                        priority: c.priority,
                    });
                }
            }
        }
        out
    }

    /// Every open channel.
    pub(crate) fn channel_infos(&self) -> Vec<ChannelInfo> {
        self.channels
            .iter()
            .map(|(key, s)| ChannelInfo {
                key: *key,
                vhost: s.vhost.clone(),
                unacked: s.unacked.len() as u64,
                consumers: s.consumers.len() as u64,
                global_prefetch: s.global_prefetch,
                prefetch: s.consumer_prefetch,
                active: s.active,
            })
            .collect()
    }

    /// Records what a connection is, for the management API (front-ends call it once the
    /// connection is open, after `add_connection`).
    pub(crate) fn describe_connection(&mut self, conn: ConnId, info: ConnInfo) {
        if let Some(slot) = self.conns.get_mut(&conn) {
            slot.info = Some(Arc::new(info));
        }
        self.stats.churn(Churn::ConnectionCreated);
    }

    /// Every described connection, with its id and channel count.
    pub(crate) fn connection_infos(&self) -> Vec<(ConnId, Arc<ConnInfo>, usize)> {
        self.conns
            .iter()
            .filter_map(|(id, s)| Some((*id, s.info.clone()?, s.channels.len())))
            .collect()
    }

    /// One connection's description.
    pub(crate) fn connection_info(&self, conn: ConnId) -> Option<Arc<ConnInfo>> {
        self.conns.get(&conn)?.info.clone()
    }
}
