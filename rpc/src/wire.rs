//! The wire protocol, version 1: header names, content types, and the reply body.
//!
//! This module is the code form of the RPC wire protocol, specified in `docs/protocol.md` in
//! the repository: a request carries the method in `type`, the call id in `correlation_id` and
//! `message_id`, the budget in `expiration` and the `x-warren-*` headers, and the arguments as a
//! map from parameter name to value. A reply body is a map with exactly one key: `ok`, `err` or
//! `fault`.

use std::fmt;
use std::marker::PhantomData;

use lapin::types::{AMQPValue, FieldTable};
use serde::de::{self, DeserializeOwned, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::error::FaultCode;

/// The protocol version this crate speaks, sent in [`HEADER_PROTOCOL`].
pub const PROTOCOL_VERSION: i64 = 1;
/// Header: the protocol version (`1`).
pub const HEADER_PROTOCOL: &str = "x-warren-protocol";
/// Header: the call's remaining budget in milliseconds when this attempt was published.
pub const HEADER_TIMEOUT_MS: &str = "x-warren-timeout-ms";
/// Header: the call's deadline as absolute Unix milliseconds (for logs and shared clocks).
pub const HEADER_DEADLINE: &str = "x-warren-deadline";
/// Header: the attempt number, 1 for the first publication of a call.
pub const HEADER_ATTEMPT: &str = "x-warren-attempt";
/// Header: the W3C trace context of the caller's span (`00-<trace id>-<span id>-<flags>`).
pub const HEADER_TRACEPARENT: &str = "traceparent";
/// Header: the W3C vendor trace state that goes with [`HEADER_TRACEPARENT`].
pub const HEADER_TRACESTATE: &str = "tracestate";
/// Request header: the caller understands notices (`1`): a server that takes the call and
/// runs it for more than a moment sends a [`KIND_STARTED`] message to `reply_to` first.
pub const HEADER_NOTICES: &str = "x-warren-notices";
/// Request header: the caller wants a streamed reply and grants this many items at first
/// (flow-control credit). Server messages: see [`KIND_ITEM`] and [`KIND_END`].
pub const HEADER_STREAM_CREDIT: &str = "x-warren-stream-credit";
/// Header of server notices and stream messages: the server's control queue, where the caller
/// sends [`KIND_CREDIT`] messages for this call.
pub const HEADER_SERVER: &str = "x-warren-server";
/// Header of a [`KIND_ITEM`] message: the item's number in the stream, from 1.
pub const HEADER_SEQ: &str = "x-warren-seq";
/// Header of a [`KIND_CREDIT`] message: how many more items the caller accepts.
pub const HEADER_CREDIT: &str = "x-warren-credit";
/// The direct exchange every server binds its control queue to, with its service (queue)
/// name as the binding key: a [`KIND_CANCEL`] message published there reaches every server of
/// the service.
pub const CONTROL_EXCHANGE: &str = "warren.control";
/// Message `type` of a server's notice that it took a call (empty body).
pub const KIND_STARTED: &str = "started";
/// Message `type` of one streamed item: the body is `{"ok": item}`.
pub const KIND_ITEM: &str = "item";
/// Message `type` of the end of a stream: `{"ok": <number of items>}` or `{"fault": ...}`.
pub const KIND_END: &str = "end";
/// Message `type` of a caller's cancel, on [`CONTROL_EXCHANGE`] (`correlation_id`: the call).
pub const KIND_CANCEL: &str = "cancel";
/// Message `type` of a caller's flow-control credit, to a server's control queue.
pub const KIND_CREDIT: &str = "credit";
/// The pseudo-queue of RabbitMQ's direct reply-to.
pub const DIRECT_REPLY_TO: &str = "amq.rabbitmq.reply-to";
/// Header set by the broker (RabbitMQ's quorum queues): how often the request was delivered
/// before and handed back without an ack.
pub const HEADER_DELIVERY_COUNT: &str = "x-delivery-count";
/// Queue argument of a server's quorum queue: how often a request may be handed back before the
/// broker drops it. Servers answer a request on its last delivery with a `delivery_limit` fault.
pub const QUEUE_DELIVERY_LIMIT: &str = "x-delivery-limit";

/// How request arguments and reply bodies are serialized; carried in `content_type`.
///
/// A server replies with the codec of the request, so a client picks the codec for both
/// directions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Codec {
    /// MessagePack with named struct fields (maps with string keys): `application/msgpack`.
    #[default]
    MsgPack,
    /// JSON: `application/json`.
    Json,
}

impl Codec {
    /// The `content_type` of messages in this codec.
    pub fn content_type(self) -> &'static str {
        match self {
            Codec::MsgPack => "application/msgpack",
            Codec::Json => "application/json",
        }
    }

    /// The codec of a message with this `content_type`; a missing content type means
    /// MessagePack. Returns `None` for content types Warren does not speak.
    pub fn from_content_type(content_type: Option<&str>) -> Option<Codec> {
        let Some(content_type) = content_type else {
            return Some(Codec::MsgPack);
        };
        // Ignore parameters such as "; charset=utf-8".
        let essence = content_type.split(';').next().unwrap_or("").trim();
        let is = |name: &str| essence.eq_ignore_ascii_case(name);
        if essence.is_empty()
            || is("application/msgpack")
            || is("application/x-msgpack")
            || is("application/vnd.msgpack")
        {
            Some(Codec::MsgPack)
        } else if is("application/json") {
            Some(Codec::Json)
        } else {
            None
        }
    }

    /// Serializes a value in this codec.
    pub fn encode<T: Serialize + ?Sized>(self, value: &T) -> Result<Vec<u8>, String> {
        match self {
            Codec::MsgPack => rmp_serde::to_vec_named(value).map_err(|e| e.to_string()),
            Codec::Json => serde_json::to_vec(value).map_err(|e| e.to_string()),
        }
    }

    /// Deserializes a value in this codec.
    pub fn decode<T: DeserializeOwned>(self, bytes: &[u8]) -> Result<T, String> {
        match self {
            Codec::MsgPack => rmp_serde::from_slice(bytes).map_err(|e| e.to_string()),
            Codec::Json => serde_json::from_slice(bytes).map_err(|e| e.to_string()),
        }
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.content_type())
    }
}

/// Encodes `{"ok": value}`.
pub(crate) fn encode_ok<T: Serialize + ?Sized>(codec: Codec, value: &T) -> Result<Vec<u8>, String> {
    #[derive(Serialize)]
    struct Body<'a, T: ?Sized> {
        ok: &'a T,
    }
    codec.encode(&Body { ok: value })
}

/// Encodes `{"err": value}`.
pub(crate) fn encode_err<E: Serialize + ?Sized>(
    codec: Codec,
    value: &E,
) -> Result<Vec<u8>, String> {
    #[derive(Serialize)]
    struct Body<'a, E: ?Sized> {
        err: &'a E,
    }
    codec.encode(&Body { err: value })
}

/// The prefix of `{"ok": <value>}` before the encoded value, in `codec`.
fn ok_prefix(codec: Codec) -> &'static [u8] {
    match codec {
        // fixmap(1), fixstr(2) "ok"
        Codec::MsgPack => &[0x81, 0xa2, b'o', b'k'],
        Codec::Json => br#"{"ok":"#,
    }
}

/// `{"ok": value}` from a value already encoded in `codec`.
pub(crate) fn ok_from_encoded(codec: Codec, value: &[u8]) -> Vec<u8> {
    let prefix = ok_prefix(codec);
    let mut body = Vec::with_capacity(prefix.len() + value.len() + 1);
    body.extend_from_slice(prefix);
    body.extend_from_slice(value);
    if codec == Codec::Json {
        body.push(b'}');
    }
    body
}

/// `{"ok": [v1, v2, ...]}` from values already encoded in `codec`.
pub(crate) fn ok_list_from_encoded(codec: Codec, values: &[Vec<u8>]) -> Vec<u8> {
    let mut list = Vec::with_capacity(values.iter().map(Vec::len).sum::<usize>() + 8);
    match codec {
        Codec::MsgPack => {
            let len = values.len();
            if len < 16 {
                list.push(0x90 | len as u8);
            } else if let Ok(len) = u16::try_from(len) {
                list.push(0xdc);
                list.extend_from_slice(&len.to_be_bytes());
            } else {
                list.push(0xdd);
                list.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
            }
            for value in values {
                list.extend_from_slice(value);
            }
        }
        Codec::Json => {
            list.push(b'[');
            for (i, value) in values.iter().enumerate() {
                if i > 0 {
                    list.push(b',');
                }
                list.extend_from_slice(value);
            }
            list.push(b']');
        }
    }
    ok_from_encoded(codec, &list)
}

#[derive(Serialize, Deserialize)]
struct FaultDetail {
    code: String,
    #[serde(default)]
    message: String,
}

/// Encodes `{"fault": {"code": code, "message": message}}`.
pub(crate) fn encode_fault(codec: Codec, code: &FaultCode, message: &str) -> Vec<u8> {
    #[derive(Serialize)]
    struct Body {
        fault: FaultDetail,
    }
    let body = Body {
        fault: FaultDetail {
            code: code.as_str().to_owned(),
            message: message.to_owned(),
        },
    };
    // Serializing a struct of two strings cannot fail in either codec.
    codec.encode(&body).unwrap_or_default()
}

/// A decoded reply body.
#[derive(Debug, PartialEq)]
pub(crate) enum ReplyBody<T, E> {
    Ok(T),
    Err(E),
    Fault { code: FaultCode, message: String },
}

impl<'de, T, E> Deserialize<'de> for ReplyBody<T, E>
where
    T: Deserialize<'de>,
    E: Deserialize<'de>,
{
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct BodyVisitor<T, E>(PhantomData<(T, E)>);

        impl<'de, T, E> Visitor<'de> for BodyVisitor<T, E>
        where
            T: Deserialize<'de>,
            E: Deserialize<'de>,
        {
            type Value = ReplyBody<T, E>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#"a map with exactly one key, "ok", "err" or "fault""#)
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let key: Option<String> = map.next_key()?;
                let body = match key.as_deref() {
                    Some("ok") => ReplyBody::Ok(map.next_value()?),
                    Some("err") => ReplyBody::Err(map.next_value()?),
                    Some("fault") => {
                        let detail: FaultDetail = map.next_value()?;
                        ReplyBody::Fault {
                            code: FaultCode::parse(&detail.code),
                            message: detail.message,
                        }
                    }
                    Some(other) => {
                        return Err(de::Error::unknown_field(other, &["ok", "err", "fault"]))
                    }
                    None => return Err(de::Error::invalid_length(0, &self)),
                };
                if map.next_key::<IgnoredAny>()?.is_some() {
                    return Err(de::Error::custom("a reply body has exactly one key"));
                }
                Ok(body)
            }
        }

        deserializer.deserialize_map(BodyVisitor(PhantomData))
    }
}

/// Reads a string header (short or long string), as UTF-8.
pub(crate) fn header_str<'a>(headers: Option<&'a FieldTable>, name: &str) -> Option<&'a str> {
    match headers?.inner().get(name)? {
        AMQPValue::ShortString(s) => Some(s.as_str()),
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok(),
        _ => None,
    }
}

/// Reads an integer header, accepting any AMQP integer type and decimal strings, since other
/// clients pick different field types for the same number.
pub(crate) fn header_i64(headers: Option<&FieldTable>, name: &str) -> Option<i64> {
    let value = headers?.inner().get(name)?;
    match value {
        AMQPValue::ShortShortInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortShortUInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortUInt(v) => Some(i64::from(*v)),
        AMQPValue::LongInt(v) => Some(i64::from(*v)),
        AMQPValue::LongUInt(v) => Some(i64::from(*v)),
        AMQPValue::LongLongInt(v) => Some(*v),
        AMQPValue::Timestamp(v) => i64::try_from(*v).ok(),
        AMQPValue::ShortString(s) => s.as_str().trim().parse().ok(),
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok()?.trim().parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum CalcError {
        DivisionByZero,
    }

    fn round_trip<T, E>(codec: Codec, bytes: &[u8]) -> ReplyBody<T, E>
    where
        T: DeserializeOwned,
        E: DeserializeOwned,
    {
        codec.decode(bytes).expect("decodes")
    }

    #[test]
    fn reply_bodies_round_trip_in_both_codecs() {
        for codec in [Codec::MsgPack, Codec::Json] {
            let ok = encode_ok(codec, &42i64).unwrap();
            assert_eq!(round_trip::<i64, CalcError>(codec, &ok), ReplyBody::Ok(42));
            let unit = encode_ok(codec, &()).unwrap();
            assert_eq!(round_trip::<(), CalcError>(codec, &unit), ReplyBody::Ok(()));
            let err = encode_err(codec, &CalcError::DivisionByZero).unwrap();
            assert_eq!(
                round_trip::<i64, CalcError>(codec, &err),
                ReplyBody::Err(CalcError::DivisionByZero)
            );
            let fault = encode_fault(codec, &FaultCode::BadRequest, "missing a");
            assert_eq!(
                round_trip::<i64, CalcError>(codec, &fault),
                ReplyBody::Fault {
                    code: FaultCode::BadRequest,
                    message: "missing a".into()
                }
            );
        }
    }

    #[test]
    fn json_reply_shapes_match_the_protocol() {
        let ok = encode_ok(Codec::Json, &3i64).unwrap();
        assert_eq!(ok, br#"{"ok":3}"#);
        let fault = encode_fault(Codec::Json, &FaultCode::UnknownMethod, "no");
        assert_eq!(
            fault,
            br#"{"fault":{"code":"unknown_method","message":"no"}}"#
        );
    }

    #[test]
    fn msgpack_uses_string_keys() {
        let ok = encode_ok(Codec::MsgPack, &3i64).unwrap();
        // fixmap(1), fixstr(2) "ok", positive fixint 3
        assert_eq!(ok, vec![0x81, 0xa2, b'o', b'k', 0x03]);
    }

    #[test]
    fn bodies_built_from_encoded_values_decode() {
        for codec in [Codec::MsgPack, Codec::Json] {
            let one = codec.encode(&"tick").unwrap();
            assert_eq!(
                round_trip::<String, ()>(codec, &ok_from_encoded(codec, &one)),
                ReplyBody::Ok("tick".to_owned())
            );
            for n in [0u32, 3, 15, 16, 300, 70_000] {
                let items: Vec<Vec<u8>> = (0..n).map(|i| codec.encode(&i).unwrap()).collect();
                let body = ok_list_from_encoded(codec, &items);
                assert_eq!(
                    round_trip::<Vec<u32>, ()>(codec, &body),
                    ReplyBody::Ok((0..n).collect()),
                    "{codec} {n}"
                );
            }
        }
    }

    #[test]
    fn malformed_replies_are_errors() {
        let two_keys = br#"{"ok":1,"err":2}"#;
        assert!(Codec::Json.decode::<ReplyBody<i64, i64>>(two_keys).is_err());
        assert!(Codec::Json.decode::<ReplyBody<i64, i64>>(b"{}").is_err());
        assert!(Codec::Json
            .decode::<ReplyBody<i64, i64>>(br#"{"x":1}"#)
            .is_err());
        assert!(Codec::MsgPack
            .decode::<ReplyBody<i64, i64>>(&[0xc1])
            .is_err());
    }

    #[test]
    fn content_types() {
        assert_eq!(Codec::from_content_type(None), Some(Codec::MsgPack));
        assert_eq!(
            Codec::from_content_type(Some("application/json; charset=utf-8")),
            Some(Codec::Json)
        );
        assert_eq!(Codec::from_content_type(Some("text/plain")), None);
    }

    #[test]
    fn integer_headers_accept_any_width() {
        let mut table = FieldTable::default();
        table.insert("a".into(), AMQPValue::LongInt(5));
        table.insert("b".into(), AMQPValue::LongString("17".into()));
        table.insert("c".into(), AMQPValue::Boolean(true));
        assert_eq!(header_i64(Some(&table), "a"), Some(5));
        assert_eq!(header_i64(Some(&table), "b"), Some(17));
        assert_eq!(header_i64(Some(&table), "c"), None);
        assert_eq!(header_i64(None, "a"), None);
    }
}
