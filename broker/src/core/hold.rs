//! What one message costs under the state lock, measured without sockets: the work a channel
//! does while it holds the lock for a publish (check, route, enqueue, hand to a consumer, and
//! for a consumer that acks, the ack). The `lock` criterion bench drives it; the figure bounds
//! what one broker-wide lock lets any number of cores do (see docs/architecture.md).

use super::delivery::ConsumeOptions;
use super::message::{ChannelKey, Message};
use super::sink::{Event, Sink};
use super::state::{State, StateLock};
use super::topology::QueueDeclare;
use amq_protocol::protocol::basic::AMQPProperties;
use amq_protocol::types::FieldTable;
use bytes::Bytes;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A sink that counts deliveries and drops them (the writer's work is not under the lock).
#[derive(Debug, Default)]
struct Counting {
    delivered: AtomicU64,
}

impl Sink for Counting {
    fn send(&self, event: Event) {
        if matches!(event, Event::Deliver { .. }) {
            self.delivered.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn congested(&self) -> bool {
        false
    }
}

/// A core with one queue and one consumer on it, ready to take publishes.
pub struct LockHold {
    state: StateLock,
    key: ChannelKey,
    sink: Arc<Counting>,
    message: Arc<Message>,
    acks: bool,
    next_tag: u64,
}

impl LockHold {
    /// One queue `q` with a consumer that acknowledges each delivery (`acks`) or uses no-ack;
    /// messages of `body_size` bytes published to it through the default exchange.
    pub fn new(acks: bool, body_size: usize) -> Self {
        let mut state = State::new();
        let key = ChannelKey {
            conn: 1,
            channel: 1,
        };
        let sink = Arc::new(Counting::default());
        state.add_connection(1, sink.clone());
        state.open_channel(key, "/");
        state
            .queue_declare(
                "/",
                1,
                QueueDeclare {
                    name: "q".into(),
                    passive: false,
                    durable: false,
                    exclusive: false,
                    auto_delete: false,
                    args: FieldTable::default(),
                },
            )
            .expect("declare");
        state
            .consume(
                key,
                "q",
                ConsumeOptions {
                    tag: "c".into(),
                    no_ack: !acks,
                    exclusive: false,
                    args: FieldTable::default(),
                },
            )
            .expect("consume");
        let message = Arc::new(Message::with_properties(
            String::new(),
            "q".into(),
            &AMQPProperties::default(),
            Bytes::from(vec![0u8; body_size]),
        ));
        LockHold {
            state: StateLock::new(state),
            key,
            sink,
            message,
            acks,
            next_tag: 1,
        }
    }

    /// One message through the core, each step under the lock as a channel takes it: the
    /// publish (check, route, enqueue, deliver) and, for an acking consumer, its ack.
    pub fn one_message(&mut self) {
        {
            let mut state = self.state.lock();
            state.check_publish("/", "").expect("default exchange");
            state.publish("/", self.message.clone());
        }
        if self.acks {
            let tag = self.next_tag;
            self.next_tag += 1;
            self.state
                .lock()
                .ack(self.key, tag, false)
                .expect("a delivered tag");
        }
    }

    /// Deliveries so far (to check the bench measured what it says).
    pub fn delivered(&self) -> u64 {
        self.sink.delivered.load(Ordering::Relaxed)
    }
}
