//! Writes the seed corpus of every target into `fuzz/corpus/TARGET/`: the frames a client sends
//! in ordinary sessions (declare, bind, publish with properties and headers, consume, ack,
//! transactions, confirms, close), their content headers and field tables, and a definitions
//! file. Run from `fuzz/`: `cargo run --bin seeds`.

use amq_protocol::protocol::basic::{self, AMQPProperties};
use amq_protocol::protocol::{channel, confirm, exchange, queue, tx, AMQPClass};
use amq_protocol::types::{AMQPValue, FieldArray, FieldTable};
use warren_broker::bench::{encode_header_payload, write_body, write_header, write_method};

fn table() -> FieldTable {
    let mut death = FieldTable::default();
    death.insert("count".into(), AMQPValue::LongLongInt(1));
    death.insert("reason".into(), AMQPValue::LongString("expired".into()));
    let mut keys = FieldArray::default();
    keys.push(AMQPValue::LongString("rk".into()));
    death.insert("routing-keys".into(), AMQPValue::FieldArray(keys));
    let mut deaths = FieldArray::default();
    deaths.push(AMQPValue::FieldTable(death));
    let mut t = FieldTable::default();
    t.insert("x-death".into(), AMQPValue::FieldArray(deaths));
    t.insert("x-max-length".into(), AMQPValue::LongInt(10));
    t.insert("x-message-ttl".into(), AMQPValue::LongLongInt(60_000));
    t.insert(
        "x-overflow".into(),
        AMQPValue::LongString("reject-publish".into()),
    );
    t.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString("dlx".into()),
    );
    t.insert("flag".into(), AMQPValue::Boolean(true));
    t.insert("d".into(), AMQPValue::Double(1.5));
    t.insert("v".into(), AMQPValue::Void);
    t.insert("ts".into(), AMQPValue::Timestamp(1_700_000_000));
    t
}

fn method(out: &mut Vec<u8>, ch: u16, m: AMQPClass) {
    write_method(out, ch, m);
}

fn publish(out: &mut Vec<u8>, ch: u16, key: &str, props: AMQPProperties, body: &[u8]) {
    method(
        out,
        ch,
        AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
            exchange: "".into(),
            routing_key: key.into(),
            mandatory: true,
            immediate: false,
        })),
    );
    write_header(out, ch, &encode_header_payload(body.len() as u64, &props));
    write_body(out, ch, body, 131_072);
}

fn props() -> AMQPProperties {
    AMQPProperties::default()
        .with_content_type("application/msgpack".into())
        .with_delivery_mode(2)
        .with_priority(3)
        .with_correlation_id("c1".into())
        .with_reply_to("amq.rabbitmq.reply-to".into())
        .with_expiration("5000".into())
        .with_message_id("m1".into())
        .with_type("add".into())
        .with_user_id("guest".into())
        .with_headers(table())
}

/// One session's frames after the handshake.
fn session() -> Vec<u8> {
    let mut out = Vec::new();
    method(
        &mut out,
        1,
        AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
    );
    method(
        &mut out,
        1,
        AMQPClass::Confirm(confirm::AMQPMethod::Select(confirm::Select {
            nowait: false,
        })),
    );
    method(
        &mut out,
        1,
        AMQPClass::Exchange(exchange::AMQPMethod::Declare(exchange::Declare {
            exchange: "x".into(),
            kind: "topic".into(),
            passive: false,
            durable: true,
            auto_delete: false,
            internal: false,
            nowait: false,
            arguments: FieldTable::default(),
        })),
    );
    method(
        &mut out,
        1,
        AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
            queue: "q".into(),
            passive: false,
            durable: false,
            exclusive: false,
            auto_delete: false,
            nowait: false,
            arguments: table(),
        })),
    );
    method(
        &mut out,
        1,
        AMQPClass::Queue(queue::AMQPMethod::Bind(queue::Bind {
            queue: "q".into(),
            exchange: "x".into(),
            routing_key: "a.*.#".into(),
            nowait: false,
            arguments: FieldTable::default(),
        })),
    );
    publish(&mut out, 1, "q", props(), b"hello");
    publish(&mut out, 1, "q", AMQPProperties::default(), &[7u8; 300]);
    method(
        &mut out,
        1,
        AMQPClass::Basic(basic::AMQPMethod::Qos(basic::Qos {
            prefetch_count: 10,
            global: false,
        })),
    );
    method(
        &mut out,
        1,
        AMQPClass::Basic(basic::AMQPMethod::Consume(basic::Consume {
            queue: "q".into(),
            consumer_tag: "c".into(),
            no_local: false,
            no_ack: false,
            exclusive: false,
            nowait: false,
            arguments: FieldTable::default(),
        })),
    );
    method(
        &mut out,
        1,
        AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack {
            delivery_tag: 1,
            multiple: true,
        })),
    );
    method(
        &mut out,
        1,
        AMQPClass::Basic(basic::AMQPMethod::Get(basic::Get {
            queue: "q".into(),
            no_ack: false,
        })),
    );
    method(
        &mut out,
        1,
        AMQPClass::Basic(basic::AMQPMethod::Nack(basic::Nack {
            delivery_tag: 2,
            multiple: false,
            requeue: true,
        })),
    );
    method(
        &mut out,
        2,
        AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
    );
    method(
        &mut out,
        2,
        AMQPClass::Tx(tx::AMQPMethod::Select(tx::Select {})),
    );
    publish(&mut out, 2, "q", AMQPProperties::default(), b"in tx");
    method(
        &mut out,
        2,
        AMQPClass::Tx(tx::AMQPMethod::Commit(tx::Commit {})),
    );
    method(
        &mut out,
        1,
        AMQPClass::Basic(basic::AMQPMethod::Cancel(basic::Cancel {
            consumer_tag: "c".into(),
            nowait: false,
        })),
    );
    method(
        &mut out,
        1,
        AMQPClass::Queue(queue::AMQPMethod::Purge(queue::Purge {
            queue: "q".into(),
            nowait: false,
        })),
    );
    method(
        &mut out,
        1,
        AMQPClass::Queue(queue::AMQPMethod::Delete(queue::Delete {
            queue: "q".into(),
            if_unused: false,
            if_empty: false,
            nowait: false,
        })),
    );
    method(
        &mut out,
        1,
        AMQPClass::Channel(channel::AMQPMethod::Close(channel::Close {
            reply_code: 200,
            reply_text: "bye".into(),
            class_id: 0,
            method_id: 0,
        })),
    );
    out
}

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = std::path::Path::new("corpus").join(target);
    std::fs::create_dir_all(&dir).expect("corpus dir");
    std::fs::write(dir.join(name), bytes).expect("seed file");
}

fn main() {
    let session = session();
    write("frames", "session", &session);
    write("channels", "session", &session);
    let header = encode_header_payload(5, &props());
    write("content_header", "all-properties", &header);
    write(
        "content_header",
        "none",
        &encode_header_payload(0, &AMQPProperties::default()),
    );
    let t = amq_protocol::types::generation::gen_field_table(&table())(
        amq_protocol::frame::WriteContext::from(Vec::new()),
    )
    .expect("encode table")
    .write;
    write("field_table", "arguments", &t);
    let defs = serde_json::json!({"version": 1, "vhosts": {"/": {
        "exchanges": [{"name": "x", "type": "topic", "auto_delete": false, "internal": false, "arguments": {}}],
        "queues": [{"name": "q", "auto_delete": false, "arguments": {"x-max-length": 10, "x-queue-mode": "lazy"}}],
        "bindings": [{"source": "x", "destination": "q", "destination_type": "queue", "routing_key": "a.#", "arguments": {}},
                     {"source": "x", "destination": "x2", "destination_type": "exchange", "routing_key": "", "arguments": {"k": [1, "s", {"t": true}]}}]
    }, "v2": {"exchanges": [], "queues": [], "bindings": []}}});
    write(
        "definitions",
        "two-vhosts.json",
        serde_json::to_string_pretty(&defs)
            .expect("json")
            .as_bytes(),
    );
    println!("seeds written under fuzz/corpus/");
}
