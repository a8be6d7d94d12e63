//! What the core hands back to a front-end: the events a session (an AMQP channel, an MQTT or
//! STOMP session) must send to its client, through the [`Sink`] the front-end registered for
//! that connection.
//!
//! The core never encodes anything: each front-end turns events into its own frames (the AMQP
//! front-end's outbox into `basic.deliver`, `basic.get-ok`, `basic.cancel`). Events of one
//! connection keep their order, so a front-end that queues its own replies into the same sink
//! (consume-ok before the first delivery) sees them in the order it sent them.

use super::message::Message;
use std::fmt;
use std::sync::Arc;

/// Something a session's client must be told.
#[derive(Debug)]
pub(crate) enum Event {
    /// A message for a consumer.
    Deliver {
        /// The session (channel number) within the connection.
        channel: u16,
        /// The consumer.
        consumer_tag: Arc<str>,
        /// The delivery tag on the session.
        delivery_tag: u64,
        /// Delivered before.
        redelivered: bool,
        /// The message.
        msg: Arc<Message>,
    },
    /// The answer to a get that found a message.
    GetOk {
        /// The session.
        channel: u16,
        /// The delivery tag on the session.
        delivery_tag: u64,
        /// Delivered before.
        redelivered: bool,
        /// Messages left in the queue.
        message_count: u32,
        /// The message.
        msg: Arc<Message>,
    },
    /// A consumer was cancelled by the broker (its queue was deleted).
    Cancelled {
        /// The session.
        channel: u16,
        /// The consumer.
        consumer_tag: Arc<str>,
    },
}

impl Event {
    /// Bytes this event holds until it is written, for back-pressure accounting.
    pub(crate) fn weight(&self) -> usize {
        match self {
            Event::Deliver { msg, .. } | Event::GetOk { msg, .. } => msg.outbound_weight(),
            Event::Cancelled { .. } => 64,
        }
    }
}

/// Where the events of one connection go: implemented by each front-end.
pub(crate) trait Sink: Send + Sync + fmt::Debug {
    /// Queues an event for the client. Never blocks: the core calls it under the state lock.
    fn send(&self, event: Event);

    /// Whether the client is so far behind that it must get no new deliveries for now; the
    /// front-end calls `State::resume_connection` once it caught up.
    fn congested(&self) -> bool;
}
