//! Sessions: the connections and channels (in AMQP's terms; other protocols map their sessions
//! onto them) that consume and hold unacknowledged deliveries, with their prefetch limits and
//! the sink their deliveries leave through.

use super::queue::QueuedMessage;
use super::sink::Sink;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

/// A message delivered on a channel and not yet acknowledged.
#[derive(Debug)]
pub(crate) struct Unacked {
    /// The queue it came from (its name, shared with the queue: no copy per delivery).
    pub(crate) queue: Arc<str>,
    /// The id of that queue.
    pub(crate) queue_id: u64,
    /// The consumer it went to (None for basic.get).
    pub(crate) consumer: Option<Arc<str>>,
    /// The queued copy, to requeue.
    pub(crate) message: QueuedMessage,
}

/// A channel's delivery state, shared with queues.
#[derive(Debug)]
pub(crate) struct ChannelSlot {
    pub(super) sink: Arc<dyn Sink>,
    pub(super) vhost: String,
    pub(super) next_tag: u64,
    /// Unacked deliveries by delivery tag.
    pub(super) unacked: BTreeMap<u64, Unacked>,
    pub(super) global_prefetch: u16,
    pub(super) consumer_prefetch: u16,
    /// Consumers on this channel: tag -> queue name.
    pub(super) consumers: HashMap<Arc<str>, String>,
    /// The direct reply-to consumer: (tag, pseudo queue name).
    pub(super) reply: Option<(Arc<str>, String)>,
    /// channel.flow active.
    pub(super) active: bool,
}

impl ChannelSlot {
    pub(super) fn has_credit(&self) -> bool {
        self.active
            && (self.global_prefetch == 0 || self.unacked.len() < self.global_prefetch as usize)
            && !self.sink.congested()
    }
}

/// A connection's sessions and the sink they share.
#[derive(Debug)]
pub(crate) struct ConnSlot {
    pub(super) sink: Arc<dyn Sink>,
    pub(super) channels: HashSet<u16>,
    /// What the front-end said the connection is (for the management API).
    pub(super) info: Option<Arc<super::stats::ConnInfo>>,
}
