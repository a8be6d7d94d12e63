//! A connection's outbox: everything on its way to the client, in order, for the writer task
//! (`writer.rs`) to encode and batch. The core's events arrive here through [`Sink`].

use crate::core::message::Message;
use crate::core::sink::{Event, Sink};
use amq_protocol::protocol::{basic, AMQPClass};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;

/// Above this many queued outbound bytes a connection gets no new deliveries until its writer
/// catches up: a client that stops reading cannot make the broker buffer without bound.
pub(crate) const OUTBOX_HIGH_WATER: usize = 4 * 1024 * 1024;

/// A frame (or group of frames) on its way to a connection's writer.
#[derive(Debug)]
pub(crate) enum Out {
    /// A method frame.
    Method(u16, AMQPClass),
    /// A delivery, get-ok or consumer cancellation from the core.
    Core(Event),
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
            Out::Core(e) => e.weight(),
            Out::Return { msg, .. } => msg.outbound_weight(),
            _ => 64,
        }
    }
}

/// The sending side of a connection's writer.
#[derive(Debug, Clone)]
pub(crate) struct Outbox {
    tx: mpsc::UnboundedSender<Out>,
    queued: Arc<AtomicUsize>,
    drained: Arc<tokio::sync::Notify>,
    /// The client asked for `basic.cancel` when the broker cancels its consumers.
    cancel_notify: bool,
}

impl Outbox {
    /// A new outbox and the receiving end for the writer task.
    pub(crate) fn new(
        cancel_notify: bool,
    ) -> (Outbox, mpsc::UnboundedReceiver<Out>, Arc<AtomicUsize>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        (
            Outbox {
                tx,
                queued: queued.clone(),
                drained: Arc::new(tokio::sync::Notify::new()),
                cancel_notify,
            },
            rx,
            queued,
        )
    }

    /// Queues a frame for the writer.
    pub(crate) fn send(&self, out: Out) {
        self.queued.fetch_add(out.weight(), Ordering::Relaxed);
        let _ = self.tx.send(out);
    }

    /// Queues a method frame.
    pub(crate) fn method(&self, channel: u16, method: AMQPClass) {
        self.send(Out::Method(channel, method));
    }

    /// Whether the writer is too far behind to take more deliveries.
    pub(crate) fn congested(&self) -> bool {
        self.queued.load(Ordering::Relaxed) > OUTBOX_HIGH_WATER
    }

    /// Whether so much waits for a client that does not read that the connection must stop
    /// reading its requests until the writer catches up (TCP backpressure, as in RabbitMQ).
    pub(crate) fn backlogged(&self) -> bool {
        self.queued.load(Ordering::Relaxed) > 4 * OUTBOX_HIGH_WATER
    }

    /// Notified by the writer when a backlog drains.
    pub(crate) fn drained(&self) -> Arc<tokio::sync::Notify> {
        self.drained.clone()
    }

    /// How much a frame counts against the high-water mark (for the writer to subtract).
    pub(crate) fn weight(out: &Out) -> usize {
        out.weight()
    }
}

impl Sink for Outbox {
    fn send(&self, event: Event) {
        if let Event::Cancelled {
            channel,
            consumer_tag,
        } = &event
        {
            // Only clients that announced consumer_cancel_notify understand a server-sent
            // basic.cancel (as in RabbitMQ).
            if self.cancel_notify {
                self.method(
                    *channel,
                    AMQPClass::Basic(basic::AMQPMethod::Cancel(basic::Cancel {
                        consumer_tag: consumer_tag.as_ref().into(),
                        nowait: true,
                    })),
                );
            }
            return;
        }
        Outbox::send(self, Out::Core(event));
    }

    fn congested(&self) -> bool {
        Outbox::congested(self)
    }
}
