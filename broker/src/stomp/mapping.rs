//! STOMP headers to AMQP 0-9-1 properties and back, as RabbitMQ's STOMP plugin maps them
//! (rabbit_stomp_util:message_properties/1 and message_headers/1).
//!
//! SEND: `content-type`, `content-encoding`, `persistent` (`true` is delivery mode 2),
//! `priority`, `correlation-id`, `reply-to`, `expiration`, `amqp-message-id` (the AMQP
//! `message_id`: STOMP's own `message-id` is the broker's), `timestamp`, `type`, `user-id` and
//! `app-id` become properties; every other header (`receipt` and `content-length` included, as
//! in RabbitMQ) becomes an AMQP header of type long string. MESSAGE: the same properties come
//! back as headers (delivery mode 2 as `persistent:true`, another as its number, e.g.
//! `persistent:1` for an MQTT QoS 0 message), and AMQP headers of string and 32/64-bit integer types become headers too
//! (others are dropped, as RabbitMQ drops them).

use super::destination::reply_to_header;
use super::frame::Frame;
use amq_protocol::protocol::basic::AMQPProperties;
use amq_protocol::types::{AMQPValue, FieldTable, LongString, ShortString};
use std::collections::BTreeMap;

/// Headers that are properties, not AMQP headers (rabbit_stomp_util:user_header/1).
const PROPERTY_HEADERS: [&str; 13] = [
    "content-type",
    "content-encoding",
    "persistent",
    "priority",
    "correlation-id",
    "reply-to",
    "expiration",
    "amqp-message-id",
    "timestamp",
    "type",
    "user-id",
    "app-id",
    "destination",
];

/// A header value that cannot be a property (a non-integer priority, a string over 255
/// bytes): RabbitMQ answers "Processing error".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BadProperty;

fn short(frame: &Frame, name: &str) -> Result<Option<ShortString>, BadProperty> {
    match frame.header(name) {
        None => Ok(None),
        Some(v) if v.len() <= 255 => Ok(Some(v.into())),
        Some(_) => Err(BadProperty),
    }
}

/// The AMQP properties of a SEND frame (its `reply-to` already rewritten for a temp queue).
pub(crate) fn properties(frame: &Frame) -> Result<AMQPProperties, BadProperty> {
    let mut headers = BTreeMap::new();
    for (k, v) in &frame.headers {
        if !PROPERTY_HEADERS.contains(&k.as_str()) && k.len() <= 255 {
            headers.insert(
                ShortString::from(k.as_str()),
                AMQPValue::LongString(LongString::from(v.as_str())),
            );
        }
    }
    let mut p = AMQPProperties::default().with_headers(FieldTable::from(headers));
    if frame.bool_header("persistent") == Some(true) {
        p = p.with_delivery_mode(2);
    }
    if let Some(n) = frame.int_header("priority").map_err(|_| BadProperty)? {
        p = p.with_priority(u8::try_from(n).map_err(|_| BadProperty)?);
    }
    if let Some(n) = frame.int_header("timestamp").map_err(|_| BadProperty)? {
        p = p.with_timestamp(u64::try_from(n).map_err(|_| BadProperty)?);
    }
    type With = fn(AMQPProperties, ShortString) -> AMQPProperties;
    let set: [(&str, With); 9] = [
        ("content-type", AMQPProperties::with_content_type),
        ("content-encoding", AMQPProperties::with_content_encoding),
        ("correlation-id", AMQPProperties::with_correlation_id),
        ("reply-to", AMQPProperties::with_reply_to),
        ("expiration", AMQPProperties::with_expiration),
        ("amqp-message-id", AMQPProperties::with_message_id),
        ("type", AMQPProperties::with_type),
        ("user-id", AMQPProperties::with_user_id),
        ("app-id", AMQPProperties::with_app_id),
    ];
    for (name, with) in set {
        if let Some(v) = short(frame, name)? {
            p = with(p, v);
        }
    }
    Ok(p)
}

/// The headers of a MESSAGE for a delivery's properties, in RabbitMQ's order: AMQP headers
/// first, then the properties from `app-id` back to `content-type`.
pub(crate) fn message_headers(p: &AMQPProperties, out: &mut Vec<(String, String)>) {
    if let Some(table) = p.headers() {
        for (k, v) in table.inner() {
            let text = match v {
                AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
                AMQPValue::LongInt(n) => n.to_string(),
                AMQPValue::LongLongInt(n) => n.to_string(),
                _ => continue,
            };
            out.push((k.to_string(), text));
        }
    }
    let s = |v: &Option<ShortString>| v.as_ref().map(|s| s.to_string());
    let props: [(&str, Option<String>); 12] = [
        ("app-id", s(p.app_id())),
        ("user-id", s(p.user_id())),
        ("type", s(p.kind())),
        ("timestamp", p.timestamp().map(|t| t.to_string())),
        ("amqp-message-id", s(p.message_id())),
        ("expiration", s(p.expiration())),
        ("reply-to", s(p.reply_to()).map(|r| reply_to_header(&r))),
        ("correlation-id", s(p.correlation_id())),
        ("priority", p.priority().map(|n| n.to_string())),
        // Delivery mode 2 is `true`; any other is its number, as RabbitMQ's `maybe_header`.
        (
            "persistent",
            p.delivery_mode().map(|m| match m {
                2 => "true".to_string(),
                m => m.to_string(),
            }),
        ),
        ("content-encoding", s(p.content_encoding())),
        ("content-type", s(p.content_type())),
    ];
    for (k, v) in props {
        if let Some(v) = v {
            out.push((k.to_string(), v));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_headers_become_properties_and_come_back() {
        let frame = Frame::new(
            "SEND",
            [
                ("destination", "/queue/q"),
                ("content-type", "text/plain"),
                ("persistent", "true"),
                ("priority", "3"),
                ("correlation-id", "c1"),
                ("reply-to", "/queue/r"),
                ("amqp-message-id", "m1"),
                ("timestamp", "123"),
                ("custom", "val"),
                ("receipt", "r1"),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        );
        let p = properties(&frame).unwrap();
        assert_eq!(*p.delivery_mode(), Some(2));
        assert_eq!(*p.priority(), Some(3));
        assert_eq!(p.message_id().as_ref().map(|s| s.as_str()), Some("m1"));
        let h = p.headers().clone().unwrap();
        assert!(h.contains_key("custom") && h.contains_key("receipt"));
        assert!(!h.contains_key("destination") && !h.contains_key("priority"));
        let mut out = Vec::new();
        message_headers(&p, &mut out);
        let get = |k: &str| out.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("custom"), Some("val"));
        assert_eq!(get("persistent"), Some("true"));
        assert_eq!(get("reply-to"), Some("/queue/r"));
        assert_eq!(get("timestamp"), Some("123"));
        let bad = Frame::new("SEND", vec![("priority".into(), "high".into())]);
        assert_eq!(properties(&bad), Err(BadProperty));
    }
}
