//! The delivery engine: publish (route to queues, persist, page), consume and cancel, pump
//! (hand ready messages to consumers with credit), get, expiry and dead-lettering.

use super::deadletter::DeathReason;
use super::error::{AmqpError, AmqpResult, Code};
use super::exchange::{Destination, ExchangeKind};
use super::fieldtable::value_int;
use super::message::{ChannelKey, Message};
use super::pager::{PageRef, Pager};
use super::queue::{Consumer, Payload, Queue, QueuedMessage};
use super::session::{ChannelSlot, Unacked};
use super::sink::Event;
use super::state::{gen_name, Dead, State};
use super::stats::{Stat, Stats};
use super::store::Store;
use super::vhost::Vhost;
use amq_protocol::types::FieldTable;
use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

/// Prefix of direct reply-to pseudo queues.
pub(crate) const REPLY_TO: &str = "amq.rabbitmq.reply-to";

/// What a publish did.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Routed {
    /// Queues (or reply consumers) the message reached.
    pub(crate) queues: usize,
    /// Queues that refused it (x-overflow reject-publish): the publisher gets a nack.
    pub(crate) rejected: usize,
    /// It was written to disk: confirm only after the next fsync.
    pub(crate) persisted: bool,
}

impl Routed {
    /// No queue matched: a mandatory message goes back to its publisher. A queue that refused
    /// the message (reject-publish) did match: the publisher learns it from the nack alone, as
    /// in RabbitMQ.
    pub(crate) fn is_unroutable(&self) -> bool {
        self.queues == 0 && self.rejected == 0
    }
}

/// Options of basic.consume.
#[derive(Debug, Clone)]
pub(crate) struct ConsumeOptions {
    /// The requested tag ("" to have one generated).
    pub(crate) tag: String,
    /// No acknowledgements.
    pub(crate) no_ack: bool,
    /// Exclusive consumer.
    pub(crate) exclusive: bool,
    /// Consumer arguments (x-priority).
    pub(crate) args: FieldTable,
}

impl State {
    // ----- consumers -----------------------------------------------------------------------

    /// basic.consume: returns the consumer tag.
    pub(crate) fn consume(
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
            Some(v) => value_int(v)
                .and_then(|p| i64::try_from(p).ok())
                .ok_or_else(|| {
                    AmqpError::precondition(format!(
                        "invalid arg 'x-priority' for queue '{queue}' in vhost '{vhost}': {v:?}"
                    ))
                })?,
        };
        let q = self.queue_mut(&vhost, queue, key.conn)?;
        if q.refuses_consumer(opts.exclusive) {
            return Err(AmqpError::new(
                Code::AccessRefused,
                format!("queue '{queue}' in vhost '{vhost}' in exclusive use"),
            ));
        }
        q.add_consumer(Consumer::new(
            tag.clone(),
            key,
            opts.no_ack,
            opts.exclusive,
            prefetch,
            priority,
        ));
        q.touch(Instant::now());
        let slot = self.channels.get_mut(&key).expect("open channel");
        slot.consumers.insert(tag.clone(), queue.to_string());
        Ok(tag)
    }

    /// basic.cancel: returns whether the consumer existed.
    pub(crate) fn cancel(&mut self, key: ChannelKey, tag: &str) -> bool {
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
    pub(crate) fn pump(&mut self, vhost: &str, queue: &str) {
        let Some(q) = self
            .vhosts
            .get_mut(vhost)
            .and_then(|v| v.queues.get_mut(queue))
        else {
            return;
        };
        pump_queue(vhost, q, pump_ctx!(self), Instant::now());
        self.flush_dead_letters();
    }

    pub(super) fn pump_all(&mut self, vhost: &str) {
        let Some(vh) = self.vhosts.get_mut(vhost) else {
            return;
        };
        let now = Instant::now();
        for q in vh.queues.values_mut() {
            if q.has_ready() && q.has_consumers() {
                pump_queue(vhost, q, pump_ctx!(self), now);
            }
        }
        self.flush_dead_letters();
    }

    /// Drops expired messages at the head of every queue (dead-lettering them), and deletes
    /// queues unused for longer than their x-expires.
    pub(crate) fn expire_tick(&mut self) {
        let now = Instant::now();
        let mut idle = Vec::new();
        for vh in self.vhosts.values_mut() {
            for q in vh.queues.values_mut() {
                for m in q.drop_expired(now) {
                    self.dead.push(Dead {
                        vhost: vh.name.clone(),
                        queue: q.name().clone(),
                        message: m,
                        reason: DeathReason::Expired,
                    });
                }
                if q.idle_expired(now) {
                    idle.push((vh.name.clone(), q.name().clone()));
                }
            }
        }
        for (vh, q) in idle {
            tracing::debug!(queue = %q, "queue expired (x-expires)");
            self.delete_queue_inner(&vh, &q);
        }
        self.rpc.tick(now);
        self.flush_dead_letters();
    }

    /// Publishes dead letters to their queues' dead-letter exchanges, until none are left
    /// (dead-lettering can cause more of it).
    pub(super) fn flush_dead_letters(&mut self) {
        let mut rounds = 0;
        while !self.dead.is_empty() && rounds < 16 {
            rounds += 1;
            let batch = std::mem::take(&mut self.dead);
            for d in batch {
                if let (DeathReason::Expired, Payload::Mem(m)) = (d.reason, &d.message.payload) {
                    self.rpc.on_expired(&d.vhost, &d.queue, m);
                }
                let dead_letter_to = self
                    .vhosts
                    .get(&d.vhost)
                    .and_then(|v| v.queues.get(&*d.queue))
                    .and_then(|q| q.dead_letter_target());
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
                let msg = crate::core::deadletter::dead_letter(
                    &original,
                    &d.queue,
                    d.reason,
                    &dlx,
                    dlrk.as_deref(),
                );
                if d.reason != DeathReason::Rejected
                    && crate::core::deadletter::is_cycle(&msg, &d.queue)
                {
                    // RabbitMQ drops a message cycling back without a rejection in between.
                    let vh = self.vhosts.get(&d.vhost).expect("vhost");
                    let mut reached = Vec::new();
                    route(vh, &msg, &mut reached);
                    if reached.contains(&d.queue) {
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
    pub(crate) fn get(&mut self, key: ChannelKey, queue: &str, no_ack: bool) -> AmqpResult<bool> {
        let vhost = self.channels.get(&key).expect("open channel").vhost.clone();
        let q = self.queue_mut(&vhost, queue, key.conn)?;
        q.touch(Instant::now());
        let expired = q.drop_expired(Instant::now());
        let popped = q.pop();
        if !expired.is_empty() {
            let name = q.name().clone();
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
            self.count_get_empty(key, &vhost, queue);
            return Ok(false);
        };
        // An expired message that reached the head goes now, so the count is right.
        let now = Instant::now();
        for e in q.drop_expired(now) {
            self.dead.push(Dead {
                vhost: vhost.clone(),
                queue: q.name().clone(),
                message: e,
                reason: DeathReason::Expired,
            });
        }
        let (queue_id, queue_name, count) = (q.id(), q.name().clone(), q.message_count());
        let Some(msg) = materialize(&mut self.pager, &mut m) else {
            // materialize released its page already.
            self.unstore(&m);
            return Ok(false);
        };
        let kind = if no_ack { Stat::GetNoAck } else { Stat::Get };
        self.stats
            .delivered(&vhost, &queue_name, key, kind, m.redelivered);
        let slot = self.channels.get_mut(&key).expect("open channel");
        let tag = slot.next_tag;
        slot.next_tag += 1;
        slot.sink.send(Event::GetOk {
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
                    queue: queue_name,
                    queue_id,
                    consumer: None,
                    message: m,
                },
            );
        }
        self.flush_dead_letters();
        Ok(true)
    }

    // ----- publishing ----------------------------------------------------------------------

    /// Checks that a publish to `exchange` is allowed (exists, not internal).
    pub(crate) fn check_publish(&self, vhost: &str, exchange: &str) -> AmqpResult<()> {
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
    pub(crate) fn reply_name(&self, key: ChannelKey) -> Option<&str> {
        self.channels
            .get(&key)
            .and_then(|s| s.reply.as_ref())
            .map(|(_, n)| n.as_str())
    }

    /// Routes a message and enqueues it in every matching queue, delivering where possible.
    pub(crate) fn publish(&mut self, vhost: &str, msg: Arc<Message>) -> Routed {
        if !self.rpc.may_concern(&msg) {
            let routed = self.publish_inner(vhost, msg);
            self.flush_dead_letters();
            return routed;
        }
        let routed = self.publish_inner(vhost, msg.clone());
        self.rpc
            .on_publish(vhost, &msg, routed.queues > 0, Instant::now());
        self.flush_dead_letters();
        routed
    }

    /// A front-end returned a `mandatory` message as unroutable: the RPC observer counts it if
    /// it is a Warren request.
    pub(crate) fn note_returned(&mut self, vhost: &str, msg: &Message) {
        self.rpc.on_returned(vhost, msg);
    }

    pub(super) fn publish_inner(&mut self, vhost: &str, msg: Arc<Message>) -> Routed {
        let now = Instant::now();
        let mut routed = Routed::default();
        if msg.exchange.is_empty() && msg.routing_key.starts_with(REPLY_TO) {
            if let Some(key) = self.reply_names.get(&msg.routing_key).copied() {
                if let Some(slot) = self.channels.get_mut(&key) {
                    let (tag, _) = slot.reply.clone().expect("registered reply consumer");
                    let delivery_tag = slot.next_tag;
                    slot.next_tag += 1;
                    slot.sink.send(Event::Deliver {
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
        let mut queues = std::mem::take(&mut self.route_buf);
        route(vh, &msg, &mut queues);
        let mut page: Option<PageRef> = None;
        for name in queues.drain(..) {
            if let Some(q) = vh.queues.get_mut(&*name) {
                if q.rejects_publish(msg.body_len()) {
                    routed.rejected += 1;
                    if q.dead_letters_refused() {
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
                self.stats.queue(vhost, &name, Stat::Publish, 1);
                routed.queues += 1;
                if q.has_consumers() {
                    pump_queue(vhost, q, pump_ctx!(self), now);
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
        self.route_buf = queues;
        if let Some(r) = page {
            self.pager.release(r);
        }
        self.stats
            .exchange(vhost, &msg.exchange, Stat::PublishIn, 1);
        if routed.queues > 0 {
            self.stats
                .exchange(vhost, &msg.exchange, Stat::PublishOut, 1);
        }
        routed
    }
}

/// The queues a message published to `msg.exchange` reaches, following exchange-to-exchange
/// bindings and alternate exchanges, each queue once.
///
/// Fills `queues` (cleared first) with the queues' shared names, so routing allocates nothing
/// per message once the buffer has grown.
pub(super) fn route(vh: &Vhost, msg: &Message, queues: &mut Vec<Arc<str>>) {
    queues.clear();
    // The routing key, plus CC and BCC keys (RabbitMQ's sender-selected distribution).
    let keys =
        || std::iter::once(msg.routing_key.as_str()).chain(msg.cc.iter().map(String::as_str));
    if msg.exchange.is_empty() {
        for k in keys() {
            if let Some(q) = vh.queues.get(k) {
                if !queues.iter().any(|e| **e == *k) {
                    queues.push(q.name().clone());
                }
            }
        }
        return;
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
                    if let Some(queue) = vh.queues.get(q) {
                        reached = true;
                        if !queues.iter().any(|e| **e == **q) {
                            queues.push(queue.name().clone());
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
/// A [`Pump`] of `$s`'s fields (a macro: the queue being pumped borrows `$s.vhosts` at the
/// same time, so a method borrowing all of `$s` cannot build it).
macro_rules! pump_ctx {
    ($s:ident) => {
        Pump {
            channels: &mut $s.channels,
            dead: &mut $s.dead,
            store: $s.store.as_deref(),
            pager: &mut $s.pager,
            stats: &mut $s.stats,
        }
    };
}
use pump_ctx;

/// What pumping a queue touches besides the queue: the sessions, the dead letters, the
/// storage, the page files and the counters (borrowed from [`State`] field by field, since the
/// queue itself is borrowed from it too).
struct Pump<'a> {
    channels: &'a mut super::FastMap<ChannelKey, ChannelSlot>,
    dead: &'a mut Vec<Dead>,
    store: Option<&'a Store>,
    pager: &'a mut Pager,
    stats: &'a mut Stats,
}

fn pump_queue(vhost: &str, q: &mut Queue, ctx: Pump<'_>, now: Instant) {
    let Pump {
        channels,
        dead,
        store,
        pager,
        stats,
    } = ctx;
    loop {
        if !q.has_consumers() {
            return;
        }
        for m in q.drop_expired(now) {
            dead.push(Dead {
                vhost: vhost.to_string(),
                queue: q.name().clone(),
                message: m,
                reason: DeathReason::Expired,
            });
        }
        if !q.has_ready() {
            return;
        }
        let chosen = q.next_consumer(|c| {
            channels.get(&c.channel).is_some_and(|slot| {
                if c.no_ack {
                    slot.active && !slot.sink.congested()
                } else {
                    slot.has_credit()
                }
            })
        });
        let Some(idx) = chosen else {
            return;
        };
        let mut m = q.deliver_to(idx).expect("checked non-empty");
        let c = &q.consumers()[idx];
        let Some(msg) = materialize(pager, &mut m) else {
            if let (Some(s), Some(at)) = (store, m.stored) {
                s.remove(at);
            }
            if !c.no_ack {
                let (channel, tag) = (c.channel, c.tag.clone());
                q.consumer_settled(channel, &tag);
            }
            continue;
        };
        let slot = channels
            .get_mut(&c.channel)
            .expect("checked by next_consumer");
        let delivery_tag = slot.next_tag;
        slot.next_tag += 1;
        let kind = if c.no_ack {
            Stat::DeliverNoAck
        } else {
            Stat::Deliver
        };
        stats.delivered(vhost, q.name(), c.channel, kind, m.redelivered);
        slot.sink.send(Event::Deliver {
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
            slot.unacked.insert(
                delivery_tag,
                Unacked {
                    queue: q.name().clone(),
                    queue_id: q.id(),
                    consumer: Some(c.tag.clone()),
                    message: m,
                },
            );
        }
    }
}
