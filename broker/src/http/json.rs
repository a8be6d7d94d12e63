//! RabbitMQ's JSON for AMQP values and statistics: field tables as plain JSON objects (and
//! back, with RabbitMQ's type choices), `message_stats` with `_details.rate`.

use crate::core::stats::{Counters, Stat, STATS};
use amq_protocol::types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};
use serde_json::{json, Map, Value};

/// An AMQP value as RabbitMQ's management API writes it.
pub(crate) fn value(v: &AMQPValue) -> Value {
    match v {
        AMQPValue::Boolean(b) => json!(b),
        AMQPValue::ShortShortInt(i) => json!(i),
        AMQPValue::ShortShortUInt(i) => json!(i),
        AMQPValue::ShortInt(i) => json!(i),
        AMQPValue::ShortUInt(i) => json!(i),
        AMQPValue::LongInt(i) => json!(i),
        AMQPValue::LongUInt(i) => json!(i),
        AMQPValue::LongLongInt(i) => json!(i),
        AMQPValue::Float(f) => json!(f),
        AMQPValue::Double(f) => json!(f),
        AMQPValue::DecimalValue(d) => json!(d.value),
        AMQPValue::ShortString(s) => json!(s.as_str()),
        AMQPValue::LongString(s) => json!(String::from_utf8_lossy(s.as_bytes())),
        AMQPValue::FieldArray(a) => Value::Array(a.as_slice().iter().map(value).collect()),
        AMQPValue::Timestamp(t) => json!(t),
        AMQPValue::FieldTable(t) => table(t),
        AMQPValue::ByteArray(b) => json!(String::from_utf8_lossy(b.as_slice())),
        AMQPValue::Void => Value::Null,
    }
}

/// A field table as a JSON object.
pub(crate) fn table(t: &FieldTable) -> Value {
    let mut m = Map::new();
    for (k, v) in t.inner() {
        m.insert(k.to_string(), value(v));
    }
    Value::Object(m)
}

/// A JSON value as the AMQP value RabbitMQ makes of it: integers become signed 64-bit
/// ('l'), other numbers doubles, strings long strings, arrays field arrays, objects tables.
pub(crate) fn to_amqp(v: &Value) -> AMQPValue {
    match v {
        Value::Null => AMQPValue::Void,
        Value::Bool(b) => AMQPValue::Boolean(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => AMQPValue::LongLongInt(i),
            None => AMQPValue::Double(n.as_f64().unwrap_or_default()),
        },
        Value::String(s) => AMQPValue::LongString(LongString::from(s.as_str())),
        Value::Array(a) => {
            let mut arr = FieldArray::default();
            for x in a {
                arr.push(to_amqp(x));
            }
            AMQPValue::FieldArray(arr)
        }
        Value::Object(_) => AMQPValue::FieldTable(to_table(v).unwrap_or_default()),
    }
}

/// A JSON object as a field table; None when `v` is not an object (null counts as empty).
pub(crate) fn to_table(v: &Value) -> Option<FieldTable> {
    let mut t = FieldTable::default();
    match v {
        Value::Null => {}
        Value::Object(m) => {
            for (k, x) in m {
                t.insert(ShortString::from(k.as_str()), to_amqp(x));
            }
        }
        _ => return None,
    }
    Some(t)
}

/// `message_stats` as RabbitMQ writes it: each stat with its `_details.rate`. RabbitMQ writes
/// every stat for channels, vhosts and the overview (`full`), and only the stats counted so far
/// for queues and exchanges.
pub(crate) fn message_stats(c: &Counters, full: bool) -> Value {
    let mut m = Map::new();
    for s in STATS {
        let n = c.get(s);
        let exchange_only = matches!(s, Stat::PublishIn | Stat::PublishOut);
        if (n == 0 && !full) || (full && exchange_only) {
            continue;
        }
        m.insert(s.name().into(), json!(n));
        m.insert(format!("{}_details", s.name()), json!({"rate": c.rate(s)}));
    }
    // deliver_get: deliver + deliver_no_ack + get + get_no_ack, as RabbitMQ derives it.
    let parts = [Stat::Deliver, Stat::DeliverNoAck, Stat::Get, Stat::GetNoAck];
    let dg: u64 = parts.iter().map(|s| c.get(*s)).sum();
    if dg > 0 || full {
        let rate: f64 = parts.iter().map(|s| c.rate(*s)).sum();
        m.insert("deliver_get".into(), json!(dg));
        m.insert("deliver_get_details".into(), json!({"rate": rate}));
    }
    Value::Object(m)
}
