//! Settling deliveries: ack, reject and nack (requeue or dead-letter), recover, and the
//! bookkeeping a transaction needs (take deliveries now, settle or restore them later).

use super::deadletter::DeathReason;
use super::error::{AmqpError, AmqpResult};
use super::message::ChannelKey;
use super::session::Unacked;
use super::state::{Dead, State};
use super::stats::Stat;
use std::sync::Arc;

/// How deliveries taken off a channel are settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SettleOp {
    /// basic.ack: done with.
    Ack,
    /// Rejected with requeue: back to the queue.
    Requeue,
    /// Rejected without requeue: dead-lettered or dropped.
    Discard,
}

impl State {
    /// Removes the unacked deliveries an ack/nack/reject names, in tag order.
    pub(crate) fn take_unacked(
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

    /// basic.ack.
    pub(crate) fn ack(&mut self, key: ChannelKey, tag: u64, multiple: bool) -> AmqpResult<()> {
        let settled = self.take_unacked(key, tag, multiple)?;
        self.settle_taken(key, settled, SettleOp::Ack);
        Ok(())
    }

    /// basic.nack / basic.reject: requeue or drop.
    pub(crate) fn reject(
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
    pub(crate) fn recover(&mut self, key: ChannelKey) {
        let slot = self.channels.get_mut(&key).expect("open channel");
        let all: Vec<(u64, Unacked)> = std::mem::take(&mut slot.unacked).into_iter().collect();
        self.settle_taken(key, all, SettleOp::Requeue);
    }

    /// Puts deliveries taken by a transaction that was rolled back back into the unacked set.
    pub(crate) fn restore_unacked(&mut self, key: ChannelKey, taken: Vec<(u64, Unacked)>) {
        if let Some(slot) = self.channels.get_mut(&key) {
            slot.unacked.extend(taken);
        }
    }

    /// Settles taken deliveries: acknowledged (dropped) or requeued.
    pub(crate) fn settle_taken(
        &mut self,
        key: ChannelKey,
        settled: Vec<(u64, Unacked)>,
        op: SettleOp,
    ) {
        let vhost = self.channels.get(&key).expect("open channel").vhost.clone();
        let mut touched: Vec<Arc<str>> = Vec::new();
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
                .and_then(|v| v.queues.get_mut(&*u.queue))
            else {
                gone(&u);
                continue;
            };
            if q.id() != u.queue_id {
                gone(&u);
                continue;
            }
            if let Some(tag) = &u.consumer {
                q.consumer_settled(key, tag);
            }
            if matches!(op, SettleOp::Ack) {
                self.stats.queue(&vhost, &u.queue, Stat::Ack, 1);
                self.stats.channel(key, Stat::Ack, 1);
                self.stats.vhost(&vhost, Stat::Ack, 1);
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
            let queues: Vec<Arc<str>> = self.channels[&key]
                .consumers
                .values()
                .map(|q| Arc::from(q.as_str()))
                .collect();
            touched.extend(queues);
            touched.sort();
            touched.dedup();
        }
        for q in touched {
            self.pump(&vhost, &q);
        }
        self.flush_dead_letters();
    }
}
