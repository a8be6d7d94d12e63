//! Field-table values (AMQP's typed maps, used for arguments and headers): reading them as
//! RabbitMQ does, comparing them, naming their types in RabbitMQ's error texts, and writing
//! them as the plain JSON of RabbitMQ's management API and definitions (and back).
//!
//! A leaf: it depends on nothing else in the broker.

use amq_protocol::types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};
use serde_json::{json, Map, Value};

/// Header value equality as RabbitMQ's `=:=` on decoded values: strings compare by content
/// whatever their wire type, integers by value.
pub(crate) fn value_eq(a: &AMQPValue, b: &AMQPValue) -> bool {
    if let (Some(x), Some(y)) = (value_str(a), value_str(b)) {
        return x == y;
    }
    if let (Some(x), Some(y)) = (value_int(a), value_int(b)) {
        return x == y;
    }
    a == b
}

/// The text in a string-typed value (long or short string), invalid UTF-8 replaced.
pub(crate) fn value_string(v: &AMQPValue) -> Option<String> {
    match v {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_string()),
        _ => None,
    }
}

/// The integer in an integer-typed value.
pub(crate) fn value_int(v: &AMQPValue) -> Option<i128> {
    Some(match v {
        AMQPValue::ShortShortInt(x) => *x as i128,
        AMQPValue::ShortShortUInt(x) => *x as i128,
        AMQPValue::ShortInt(x) => *x as i128,
        AMQPValue::ShortUInt(x) => *x as i128,
        AMQPValue::LongInt(x) => *x as i128,
        AMQPValue::LongUInt(x) => *x as i128,
        AMQPValue::LongLongInt(x) => *x as i128,
        AMQPValue::Timestamp(x) => *x as i128,
        _ => return None,
    })
}

/// The text in a string-typed value, if it is valid UTF-8.
pub(crate) fn value_str(v: &AMQPValue) -> Option<&str> {
    match v {
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok(),
        AMQPValue::ShortString(s) => Some(s.as_str()),
        _ => None,
    }
}

/// Erlang's name for a field value's type, as RabbitMQ prints it.
pub(crate) fn type_name(v: &AMQPValue) -> &'static str {
    match v {
        AMQPValue::Boolean(_) => "bool",
        AMQPValue::ShortShortInt(_) => "byte",
        AMQPValue::ShortShortUInt(_) => "unsignedbyte",
        AMQPValue::ShortInt(_) => "short",
        AMQPValue::ShortUInt(_) => "unsignedshort",
        AMQPValue::LongInt(_) => "signedint",
        AMQPValue::LongUInt(_) => "unsignedint",
        AMQPValue::LongLongInt(_) => "long",
        AMQPValue::Float(_) => "float",
        AMQPValue::Double(_) => "double",
        AMQPValue::DecimalValue(_) => "decimal",
        AMQPValue::ShortString(_) | AMQPValue::LongString(_) => "longstr",
        AMQPValue::FieldArray(_) => "array",
        AMQPValue::Timestamp(_) => "timestamp",
        AMQPValue::FieldTable(_) => "table",
        AMQPValue::ByteArray(_) => "binary",
        AMQPValue::Void => "void",
    }
}

/// Formats an argument pair for an equivalence error as RabbitMQ does: plain values when both
/// sides have one, typed values (or "none") when one side is missing.
pub(crate) fn describe_args(new: Option<&AMQPValue>, cur: Option<&AMQPValue>) -> (String, String) {
    match (new, cur) {
        (Some(n), Some(c)) => (plain_arg(n), plain_arg(c)),
        _ => (describe_arg(new), describe_arg(cur)),
    }
}

pub(crate) fn plain_arg(v: &AMQPValue) -> String {
    match v {
        AMQPValue::LongString(s) => format!("'{}'", String::from_utf8_lossy(s.as_bytes())),
        AMQPValue::ShortString(s) => format!("'{}'", s.as_str()),
        AMQPValue::Boolean(b) => format!("'{b}'"),
        other => match value_int(other) {
            Some(n) => format!("'{n}'"),
            None => format!("'{other:?}'"),
        },
    }
}

/// Formats a field value the way RabbitMQ's equivalence errors do.
pub(crate) fn describe_arg(v: Option<&AMQPValue>) -> String {
    match v {
        None => "none".to_string(),
        Some(v) => {
            let (ty, val) = match v {
                AMQPValue::LongString(s) => (
                    "longstr",
                    String::from_utf8_lossy(s.as_bytes()).into_owned(),
                ),
                AMQPValue::ShortString(s) => ("longstr", s.as_str().to_string()),
                AMQPValue::Boolean(b) => ("bool", b.to_string()),
                AMQPValue::LongInt(x) => ("signedint", x.to_string()),
                AMQPValue::LongLongInt(x) => ("long", x.to_string()),
                AMQPValue::ShortInt(x) => ("short", x.to_string()),
                AMQPValue::ShortShortInt(x) => ("byte", x.to_string()),
                AMQPValue::ShortShortUInt(x) => ("unsignedbyte", x.to_string()),
                AMQPValue::ShortUInt(x) => ("unsignedshort", x.to_string()),
                AMQPValue::LongUInt(x) => ("unsignedint", x.to_string()),
                AMQPValue::Timestamp(x) => ("timestamp", x.to_string()),
                AMQPValue::Double(x) => ("double", x.to_string()),
                AMQPValue::Float(x) => ("float", x.to_string()),
                other => ("table", format!("{other:?}")),
            };
            format!("the value '{val}' of type '{ty}'")
        }
    }
}

pub(crate) fn args_equal(a: Option<&AMQPValue>, b: Option<&AMQPValue>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(x), Some(y)) => value_eq(x, y),
        _ => false,
    }
}

// ----- RabbitMQ's JSON (management API, definitions) ---------------------------------------

/// An AMQP value as RabbitMQ's management API writes it.
pub(crate) fn value_json(v: &AMQPValue) -> Value {
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
        AMQPValue::FieldArray(a) => Value::Array(a.as_slice().iter().map(value_json).collect()),
        AMQPValue::Timestamp(t) => json!(t),
        AMQPValue::FieldTable(t) => to_json(t),
        AMQPValue::ByteArray(b) => json!(String::from_utf8_lossy(b.as_slice())),
        AMQPValue::Void => Value::Null,
    }
}

/// A field table as a JSON object.
pub(crate) fn to_json(t: &FieldTable) -> Value {
    let mut m = Map::new();
    for (k, v) in t.inner() {
        m.insert(k.to_string(), value_json(v));
    }
    Value::Object(m)
}

/// A JSON value as the AMQP value RabbitMQ makes of it: integers become signed 64-bit
/// ('l'), other numbers doubles, strings long strings, arrays field arrays, objects tables.
pub(crate) fn amqp_from_json(v: &Value) -> AMQPValue {
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
                arr.push(amqp_from_json(x));
            }
            AMQPValue::FieldArray(arr)
        }
        Value::Object(_) => AMQPValue::FieldTable(from_json(v).unwrap_or_default()),
    }
}

/// A JSON object as a field table; None when `v` is not an object (null counts as empty).
pub(crate) fn from_json(v: &Value) -> Option<FieldTable> {
    let mut t = FieldTable::default();
    match v {
        Value::Null => {}
        Value::Object(m) => {
            for (k, x) in m {
                t.insert(ShortString::from(k.as_str()), amqp_from_json(x));
            }
        }
        _ => return None,
    }
    Some(t)
}

/// How deep field tables and arrays may nest inside one another in anything a peer sends.
///
/// amq-protocol's decoder recurses once per level, and a frame of `frame_max` bytes can nest
/// ~25,000 levels (5 bytes each), enough to overflow a thread's stack and abort the whole
/// broker. RabbitMQ (Erlang, growable process heaps) has no limit; real headers nest a few
/// levels (`x-death`: 4), so deeper input is refused as undecodable before it is decoded.
pub(crate) const MAX_TABLE_DEPTH: usize = 64;

/// Whether the encoded field table at the start of `bytes` (its 4-byte length first) nests
/// tables and arrays at most `max` deep. Walks without recursion; malformed input that is not
/// too deep counts as within (the decoder then refuses it with its own error).
pub(crate) fn table_nesting_within(bytes: &[u8], max: usize) -> bool {
    // Open containers, innermost last: (end offset, is an array).
    let mut open: Vec<(usize, bool)> = Vec::new();
    let Some(end) = container_end(bytes, 0) else {
        return true;
    };
    open.push((end, false));
    let mut pos = 4;
    while let Some(&(end, array)) = open.last() {
        if pos >= end {
            open.pop();
            pos = end;
            continue;
        }
        if !array {
            // A key: short string.
            let Some(&len) = bytes.get(pos) else {
                return true;
            };
            pos += 1 + len as usize;
        }
        let Some(&kind) = bytes.get(pos) else {
            return true;
        };
        pos += 1;
        let fixed = match kind {
            b't' | b'b' | b'B' => 1,
            b's' | b'U' | b'u' => 2,
            b'I' | b'i' | b'f' => 4,
            b'l' | b'L' | b'd' | b'T' => 8,
            b'D' => 5,
            b'V' => 0,
            b'S' | b'x' => match container_end(bytes, pos) {
                Some(e) => e - pos,
                None => return true,
            },
            b'F' | b'A' => {
                let Some(e) = container_end(bytes, pos) else {
                    return true;
                };
                if open.len() >= max {
                    return false;
                }
                open.push((e.min(end), kind == b'A'));
                pos += 4;
                continue;
            }
            _ => return true,
        };
        pos += fixed;
    }
    true
}

/// The end offset of the length-prefixed value at `pos` (4-byte big-endian length, then that
/// many bytes), if its length field is there.
fn container_end(bytes: &[u8], pos: usize) -> Option<usize> {
    let len = u32::from_be_bytes(bytes.get(pos..pos + 4)?.try_into().ok()?) as usize;
    pos.checked_add(4)?.checked_add(len)
}

#[cfg(test)]
mod nesting_tests {
    use super::*;

    /// A table nesting `depth` tables (`depth` = 1: one empty table).
    fn nested(depth: usize, array: bool) -> Vec<u8> {
        let mut inner: Vec<u8> = Vec::new();
        for _ in 1..depth {
            let mut t = Vec::new();
            if !array {
                t.extend_from_slice(&[1, b'k']);
            }
            t.push(if array { b'A' } else { b'F' });
            t.extend_from_slice(&(inner.len() as u32).to_be_bytes());
            t.extend_from_slice(&inner);
            inner = t;
        }
        let mut out = Vec::new();
        if array {
            // The top level is always a table: one entry holding the arrays.
            let mut entry = vec![1, b'a', b'A'];
            entry.extend_from_slice(&(inner.len() as u32).to_be_bytes());
            entry.extend_from_slice(&inner);
            inner = entry;
        }
        out.extend_from_slice(&(inner.len() as u32).to_be_bytes());
        out.extend_from_slice(&inner);
        out
    }

    #[test]
    fn depth_is_counted_through_tables_and_arrays() {
        assert!(table_nesting_within(&nested(64, false), 64));
        assert!(!table_nesting_within(&nested(65, false), 64));
        assert!(table_nesting_within(&nested(63, true), 64));
        assert!(!table_nesting_within(&nested(66, true), 64));
        assert!(!table_nesting_within(&nested(20_000, false), 64));
    }

    #[test]
    fn ordinary_and_malformed_tables_are_within() {
        let mut t = amq_protocol::types::FieldTable::default();
        t.insert("x-max-length".into(), AMQPValue::LongInt(5));
        t.insert("name".into(), AMQPValue::LongString("v".into()));
        let bytes = amq_protocol::types::generation::gen_field_table(&t)(
            amq_protocol::frame::WriteContext::from(Vec::new()),
        )
        .unwrap()
        .write;
        assert!(table_nesting_within(&bytes, 1));
        assert!(table_nesting_within(&[], 64));
        assert!(table_nesting_within(&[0, 0, 0, 9, 1], 64));
        assert!(table_nesting_within(&[0, 0, 0, 3, 1, b'k', b'F'], 64));
    }
}
