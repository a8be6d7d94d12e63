//! The channel's method sequences (acks, transactions, confirms, prefetch) driven in memory:
//! frames in, the outbox's items out, no socket and no clock, as quinn-proto tests its state
//! machine. The compatibility suites (tests/) cover the same behaviour over sockets against
//! RabbitMQ; these pin the state machine where a failure is easiest to read.

use super::channel::{Channel, Ctx};
use super::frame::{self, next_frame};
use super::outbox::{Out, Outbox};
use crate::core::access::seed::{self, Seed};
use crate::core::access::{Access, Registry};
use crate::core::error::{AmqpResult, Code};
use crate::core::message::{ChannelKey, ConnId};
use crate::core::props::encode_header_payload;
use crate::core::sink::Event;
use crate::core::state::{State, StateLock};
use amq_protocol::protocol::basic::{self, AMQPProperties};
use amq_protocol::protocol::{confirm, queue, tx, AMQPClass};
use amq_protocol::types::{AMQPValue, FieldTable};
use bytes::BytesMut;
use std::sync::Arc;
use tokio::sync::mpsc::UnboundedReceiver;

/// An exchange name whose declaration panics in test builds (see `exchange.rs`).
pub(super) const PANIC_EXCHANGE: &str = "warren.test.panic";

const CONN: ConnId = 1;

/// One connection's channels against a fresh core, with the outbox's receiving end.
struct Pair {
    state: StateLock,
    access: Access,
    outbox: Outbox,
    rx: UnboundedReceiver<Out>,
    channels: std::collections::HashMap<u16, Channel>,
}

impl Pair {
    fn new() -> Self {
        let state = StateLock::new(State::new());
        let (outbox, rx, _) = Outbox::new(true);
        state.lock().add_connection(CONN, Arc::new(outbox.clone()));
        let mut registry = Registry::default();
        seed::apply(&mut registry, &Seed::default(), true);
        Pair {
            state,
            access: Access::new(registry, None),
            outbox,
            rx,
            channels: Default::default(),
        }
    }

    fn open(&mut self, id: u16) {
        let key = ChannelKey {
            conn: CONN,
            channel: id,
        };
        self.state.lock().open_channel(key, "/");
        self.channels.insert(id, Channel::new(id));
    }

    /// Feeds encoded frames to a channel, as the connection's reader would.
    fn frames(&mut self, id: u16, bytes: Vec<u8>) -> AmqpResult<()> {
        let mut buf = BytesMut::from(&bytes[..]);
        let ctx = Ctx {
            state: &self.state,
            conn: CONN,
            outbox: &self.outbox,
            vhost: "/",
            user: "guest",
            access: &self.access,
            max_message_size: 1 << 20,
        };
        let ch = self.channels.get_mut(&id).expect("open channel");
        while let Some(raw) = next_frame(&mut buf, 131_072).expect("well-formed frames") {
            let method = (raw.kind == frame::FRAME_METHOD).then(|| {
                amq_protocol::protocol::parse_class(&raw.payload[..])
                    .expect("a method we encoded")
                    .1
            });
            ch.on_frame(&ctx, raw, method)?;
        }
        Ok(())
    }

    fn method(&mut self, id: u16, m: AMQPClass) -> AmqpResult<()> {
        let mut out = Vec::new();
        frame::write_method(&mut out, id, m);
        self.frames(id, out)
    }

    fn publish(&mut self, id: u16, routing_key: &str, body: &[u8]) -> AmqpResult<()> {
        let mut out = Vec::new();
        frame::write_method(
            &mut out,
            id,
            AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
                exchange: "".into(),
                routing_key: routing_key.into(),
                mandatory: false,
                immediate: false,
            })),
        );
        let header = encode_header_payload(body.len() as u64, &AMQPProperties::default());
        frame::write_header(&mut out, id, &header);
        frame::write_body(&mut out, id, body, 131_072);
        self.frames(id, out)
    }

    /// queue.declare (passive or not); returns the declare-ok's (messages, consumers).
    fn declare_with(&mut self, id: u16, name: &str, passive: bool, args: FieldTable) -> (u32, u32) {
        self.method(
            id,
            AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
                queue: name.into(),
                passive,
                durable: false,
                exclusive: false,
                auto_delete: false,
                nowait: false,
                arguments: args,
            })),
        )
        .expect("declare");
        match self.drain().pop() {
            Some(Out::Method(_, AMQPClass::Queue(queue::AMQPMethod::DeclareOk(ok)))) => {
                (ok.message_count, ok.consumer_count)
            }
            other => panic!("expected declare-ok, got {other:?}"),
        }
    }

    fn declare(&mut self, id: u16, name: &str, args: FieldTable) {
        self.declare_with(id, name, false, args);
    }

    /// Ready messages in a queue, asked the way a client asks (a passive declare).
    fn ready(&mut self, id: u16, name: &str) -> u32 {
        self.declare_with(id, name, true, FieldTable::default()).0
    }

    fn consume(&mut self, id: u16, queue: &str, no_ack: bool) {
        self.method(
            id,
            AMQPClass::Basic(basic::AMQPMethod::Consume(basic::Consume {
                queue: queue.into(),
                consumer_tag: "".into(),
                no_local: false,
                no_ack,
                exclusive: false,
                nowait: false,
                arguments: FieldTable::default(),
            })),
        )
        .expect("consume");
    }

    fn ack(&mut self, id: u16, tag: u64, multiple: bool) -> AmqpResult<()> {
        self.method(
            id,
            AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack {
                delivery_tag: tag,
                multiple,
            })),
        )
    }

    fn close(&mut self, id: u16) {
        let mut ch = self.channels.remove(&id).expect("open channel");
        let key = ChannelKey {
            conn: CONN,
            channel: id,
        };
        super::channel::close_in_state(&mut ch, &mut self.state.lock(), key);
    }

    fn drain(&mut self) -> Vec<Out> {
        let mut items = Vec::new();
        while let Ok(item) = self.rx.try_recv() {
            items.push(item);
        }
        items
    }

    /// The delivery tags of the deliveries queued so far (other items dropped).
    fn delivered(&mut self) -> Vec<u64> {
        self.drain()
            .into_iter()
            .filter_map(|o| match o {
                Out::Core(Event::Deliver { delivery_tag, .. }) => Some(delivery_tag),
                _ => None,
            })
            .collect()
    }
}

#[test]
fn consume_ok_precedes_the_first_delivery() {
    let mut p = Pair::new();
    p.open(1);
    p.declare(1, "q", FieldTable::default());
    p.publish(1, "q", b"a").unwrap();
    p.consume(1, "q", false);
    let items = p.drain();
    assert!(
        matches!(
            &items[0],
            Out::Method(1, AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(_)))
        ),
        "{items:?}"
    );
    assert!(matches!(
        &items[1],
        Out::Core(Event::Deliver {
            delivery_tag: 1,
            ..
        })
    ));
}

#[test]
fn ack_multiple_settles_up_to_the_tag_and_close_requeues_the_rest() {
    let mut p = Pair::new();
    p.open(1);
    p.declare(1, "q", FieldTable::default());
    for body in [b"1", b"2", b"3"] {
        p.publish(1, "q", body).unwrap();
    }
    p.consume(1, "q", false);
    assert_eq!(p.delivered(), vec![1, 2, 3]);
    p.ack(1, 2, true).unwrap();
    // Tag 2 is settled now: acking it again is RabbitMQ's 406 unknown delivery tag.
    let err = p.ack(1, 2, false).unwrap_err();
    assert_eq!(err.code, Code::PreconditionFailed);
    assert_eq!(err.text, "PRECONDITION_FAILED - unknown delivery tag 2");
    p.close(1);
    p.open(2);
    assert_eq!(p.ready(2, "q"), 1, "only tag 3 was unacked and went back");
}

#[test]
fn prefetch_limits_deliveries_until_acks_free_credit() {
    let mut p = Pair::new();
    p.open(1);
    p.declare(1, "q", FieldTable::default());
    for _ in 0..5 {
        p.publish(1, "q", b"m").unwrap();
    }
    p.method(
        1,
        AMQPClass::Basic(basic::AMQPMethod::Qos(basic::Qos {
            prefetch_count: 2,
            global: false,
        })),
    )
    .unwrap();
    p.consume(1, "q", false);
    assert_eq!(p.delivered(), vec![1, 2]);
    p.ack(1, 1, false).unwrap();
    assert_eq!(p.delivered(), vec![3]);
    p.ack(1, 3, true).unwrap();
    assert_eq!(p.delivered(), vec![4, 5]);
}

#[test]
fn transactional_acks_apply_on_commit_and_rollback_undoes_them() {
    let mut p = Pair::new();
    p.open(1);
    p.declare(1, "q", FieldTable::default());
    p.publish(1, "q", b"a").unwrap();
    p.publish(1, "q", b"b").unwrap();
    p.method(1, AMQPClass::Tx(tx::AMQPMethod::Select(tx::Select {})))
        .unwrap();
    p.consume(1, "q", false);
    assert_eq!(p.delivered(), vec![1, 2]);
    p.ack(1, 1, false).unwrap();
    p.method(1, AMQPClass::Tx(tx::AMQPMethod::Rollback(tx::Rollback {})))
        .unwrap();
    // Rolled back: tag 1 is unacked again, so acking it in the next transaction is valid.
    p.ack(1, 2, true).unwrap();
    // A publish in a transaction waits for the commit.
    p.publish(1, "other", b"c").unwrap();
    p.method(1, AMQPClass::Tx(tx::AMQPMethod::Commit(tx::Commit {})))
        .unwrap();
    let items = p.drain();
    assert!(
        items.iter().any(|o| matches!(
            o,
            Out::Method(1, AMQPClass::Tx(tx::AMQPMethod::CommitOk(_)))
        )),
        "{items:?}"
    );
    p.close(1);
    p.open(2);
    assert_eq!(p.ready(2, "q"), 0, "both acks were committed");
}

#[test]
fn confirms_count_publishes_and_nack_what_a_full_queue_refuses() {
    let mut p = Pair::new();
    p.open(1);
    let mut args = FieldTable::default();
    args.insert("x-max-length".into(), AMQPValue::LongInt(1));
    args.insert(
        "x-overflow".into(),
        AMQPValue::LongString("reject-publish".into()),
    );
    p.declare(1, "small", args);
    p.method(
        1,
        AMQPClass::Confirm(confirm::AMQPMethod::Select(confirm::Select {
            nowait: false,
        })),
    )
    .unwrap();
    p.drain();
    p.publish(1, "small", b"fits").unwrap();
    p.publish(1, "small", b"refused").unwrap();
    p.publish(1, "nowhere", b"unroutable is still confirmed")
        .unwrap();
    let confirms: Vec<(u64, bool)> = p
        .drain()
        .into_iter()
        .filter_map(|o| match o {
            Out::Confirm { tag, ack, .. } => Some((tag, ack)),
            _ => None,
        })
        .collect();
    assert_eq!(confirms, vec![(1, true), (2, false), (3, true)]);
    // A confirming channel cannot become transactional (RabbitMQ's 406).
    let err = p
        .method(1, AMQPClass::Tx(tx::AMQPMethod::Select(tx::Select {})))
        .unwrap_err();
    assert_eq!(
        err.text,
        "PRECONDITION_FAILED - cannot switch from confirm to tx mode"
    );
}

/// A panic while one connection's handler holds the state lock closes that connection with
/// 541 and leaves every other connection, and new ones, working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_takes_only_its_own_connection_down() {
    use lapin::options::{BasicGetOptions, BasicPublishOptions, QueueDeclareOptions};
    use lapin::{BasicProperties, Connection, ConnectionProperties};

    let broker = crate::Broker::builder()
        .listen("127.0.0.1:0".parse().unwrap())
        .start()
        .await
        .unwrap();
    let url = broker.amqp_url();
    let other = Connection::connect(&url, ConnectionProperties::default())
        .await
        .unwrap();
    let other_ch = other.create_channel().await.unwrap();

    let victim = Connection::connect(&url, ConnectionProperties::default())
        .await
        .unwrap();
    let victim_ch = victim.create_channel().await.unwrap();
    let err = victim_ch
        .exchange_declare(
            PANIC_EXCHANGE.into(),
            lapin::ExchangeKind::Fanout,
            Default::default(),
            FieldTable::default(),
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("INTERNAL_ERROR - the broker failed while serving channel 1"),
        "{err}"
    );

    // The connection opened before the panic still declares, publishes and gets.
    other_ch
        .queue_declare(
            "after-panic".into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    other_ch
        .basic_publish(
            "".into(),
            "after-panic".into(),
            BasicPublishOptions::default(),
            b"still here",
            BasicProperties::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    let got = other_ch
        .basic_get("after-panic".into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .expect("the message");
    assert_eq!(got.delivery.data, b"still here");
    // And a new connection is served.
    let fresh = Connection::connect(&url, ConnectionProperties::default())
        .await
        .unwrap();
    let fresh_ch = fresh.create_channel().await.unwrap();
    let q = fresh_ch
        .queue_declare(
            "after-panic".into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    assert_eq!(q.message_count(), 0);
    broker.shutdown().await;
}
