//! Session lifecycle: connections registering their sink, channels opening and closing (their
//! consumers cancelled and unacked messages requeued), prefetch (qos), flow, and resuming a
//! connection whose client caught up.

use super::message::{ChannelKey, ConnId};
use super::session::{ChannelSlot, ConnSlot, Unacked};
use super::sink::Sink;
use super::state::State;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

impl State {
    /// Registers an open connection.
    pub(crate) fn add_connection(&mut self, conn: ConnId, sink: Arc<dyn Sink>) {
        self.conns.insert(
            conn,
            ConnSlot {
                sink,
                channels: HashSet::new(),
                info: None,
            },
        );
    }

    /// Forgets a connection: closes its channels (requeueing their unacked messages) and deletes
    /// its exclusive queues.
    pub(crate) fn remove_connection(&mut self, conn: ConnId) {
        let Some(slot) = self.conns.remove(&conn) else {
            return;
        };
        if slot.info.is_some() {
            self.stats.churn(super::stats::Churn::ConnectionClosed);
        }
        for ch in slot.channels {
            self.close_channel_inner(ChannelKey { conn, channel: ch });
        }
        let mut exclusive = Vec::new();
        for vh in self.vhosts.values() {
            for q in vh.queues.values() {
                if q.owner() == Some(conn) {
                    exclusive.push((vh.name.clone(), q.name().clone()));
                }
            }
        }
        for (vh, q) in exclusive {
            self.delete_queue_inner(&vh, &q);
        }
    }

    /// Opens a channel.
    pub(crate) fn open_channel(&mut self, key: ChannelKey, vhost: &str) {
        let Some(conn) = self.conns.get_mut(&key.conn) else {
            return;
        };
        conn.channels.insert(key.channel);
        let sink = conn.sink.clone();
        self.stats.churn(super::stats::Churn::ChannelCreated);
        self.channels.insert(
            key,
            ChannelSlot {
                sink,
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
    pub(crate) fn close_channel(&mut self, key: ChannelKey) {
        if let Some(conn) = self.conns.get_mut(&key.conn) {
            conn.channels.remove(&key.channel);
        }
        self.close_channel_inner(key);
    }

    pub(super) fn close_channel_inner(&mut self, key: ChannelKey) {
        let Some(mut slot) = self.channels.remove(&key) else {
            return;
        };
        self.stats.churn(super::stats::Churn::ChannelClosed);
        self.stats.forget_channel(key);
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

    pub(super) fn requeue_unacked(&mut self, vhost: &str, u: Unacked) {
        match self
            .vhosts
            .get_mut(vhost)
            .and_then(|v| v.queues.get_mut(&*u.queue))
        {
            Some(q) if q.id() == u.queue_id => q.requeue(u.message),
            _ => self.forget(&u.message),
        }
    }

    /// Sets basic.qos for a channel.
    pub(crate) fn qos(&mut self, key: ChannelKey, prefetch_count: u16, global: bool) {
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
    pub(crate) fn flow(&mut self, key: ChannelKey, active: bool) {
        if let Some(slot) = self.channels.get_mut(&key) {
            slot.active = active;
            let vhost = slot.vhost.clone();
            if active {
                self.pump_all(&vhost);
            }
        }
    }

    /// Delivers to a connection's consumers again after its writer caught up.
    pub(crate) fn resume_connection(&mut self, conn: ConnId) {
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
}
