//! Frames as bytes: encoding with amq-protocol, frames built by hand (for malformed input),
//! where a frame ends in a buffer, and what a close says.

use amq_protocol::frame::{gen_frame, AMQPFrame, WriteContext};
use amq_protocol::protocol::{self as proto, AMQPClass};
use lapin::types::{AMQPValue, FieldTable, LongString};

use super::RawError;
use crate::fields::{long_str, table};

/// Serializes a frame with amq-protocol.
pub fn try_encode(frame: &AMQPFrame) -> Result<Vec<u8>, RawError> {
    gen_frame(frame)(WriteContext::from(Vec::new()))
        .map(|ctx| ctx.write)
        .map_err(|e| RawError::Encode(format!("{e:?}")))
}

/// Serializes a frame with amq-protocol, panicking if it cannot (a test building a frame).
pub fn encode(frame: &AMQPFrame) -> Vec<u8> {
    try_encode(frame).unwrap_or_else(|e| panic!("cannot encode {frame:?}: {e}"))
}

/// The length of the first frame in `buf` (header, payload and frame-end), once all of it is
/// there: `None` while it is incomplete.
pub fn frame_len(buf: &[u8]) -> Option<usize> {
    let size = u32::from_be_bytes(buf.get(3..7)?.try_into().ok()?) as usize;
    let total = 7 + size + 1;
    (buf.len() >= total).then_some(total)
}

/// The bytes of one frame with the usual layout: type, channel, size, payload, frame-end.
pub fn frame_bytes(frame_type: u8, channel: u16, payload: &[u8]) -> Vec<u8> {
    frame_bytes_with_end(frame_type, channel, payload, 0xCE)
}

/// Like [`frame_bytes`] but with any frame-end octet.
pub fn frame_bytes_with_end(frame_type: u8, channel: u16, payload: &[u8], end: u8) -> Vec<u8> {
    let mut v = vec![frame_type];
    v.extend_from_slice(&channel.to_be_bytes());
    v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    v.extend_from_slice(payload);
    v.push(end);
    v
}

/// The method payload (class id, method id, arguments) of a method frame, for building
/// frames by hand on other channels or with other frame-end octets.
pub fn method_payload(method: AMQPClass) -> Vec<u8> {
    let bytes = encode(&AMQPFrame::Method(0, method));
    bytes[7..bytes.len() - 1].to_vec()
}

/// Client properties advertising the capabilities modern clients (lapin, pika) send:
/// consumer_cancel_notify, basic.nack, publisher_confirms, exchange_exchange_bindings,
/// connection.blocked, authentication_failure_close.
pub fn client_properties() -> FieldTable {
    let caps = table(
        [
            "consumer_cancel_notify",
            "basic.nack",
            "publisher_confirms",
            "exchange_exchange_bindings",
            "connection.blocked",
            "authentication_failure_close",
        ]
        .iter()
        .map(|c| (*c, AMQPValue::Boolean(true)))
        .collect(),
    );
    table(vec![
        ("product", long_str("warren-tests raw client")),
        ("capabilities", AMQPValue::FieldTable(caps)),
    ])
}

/// The PLAIN response for a user and password.
pub fn plain(user: &str, password: &str) -> LongString {
    LongString::from(format!("\0{user}\0{password}").into_bytes())
}

/// A `connection.close` or `channel.close` as received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloseInfo {
    /// Reply code, e.g. 404.
    pub code: u16,
    /// Reply text, e.g. `NOT_FOUND - no queue 'x' in vhost '/'`.
    pub text: String,
    /// Class of the method that caused it (0 if none).
    pub class_id: u16,
    /// Method that caused it (0 if none).
    pub method_id: u16,
}

/// If `frame` is a connection.close or channel.close: its channel, whether it is the
/// connection's, and what it says.
pub fn close_of(frame: &AMQPFrame) -> Option<(u16, bool, CloseInfo)> {
    match frame {
        AMQPFrame::Method(0, AMQPClass::Connection(proto::connection::AMQPMethod::Close(c))) => {
            Some((
                0,
                true,
                CloseInfo {
                    code: c.reply_code,
                    text: c.reply_text.to_string(),
                    class_id: c.class_id,
                    method_id: c.method_id,
                },
            ))
        }
        AMQPFrame::Method(ch, AMQPClass::Channel(proto::channel::AMQPMethod::Close(c))) => Some((
            *ch,
            false,
            CloseInfo {
                code: c.reply_code,
                text: c.reply_text.to_string(),
                class_id: c.class_id,
                method_id: c.method_id,
            },
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_len_waits_for_the_whole_frame() {
        let frame = frame_bytes(1, 3, b"abc");
        assert_eq!(frame.len(), 11);
        for cut in 0..frame.len() {
            assert_eq!(frame_len(&frame[..cut]), None, "{cut} bytes");
        }
        let mut two = frame.clone();
        two.extend(frame_bytes(8, 0, b""));
        assert_eq!(frame_len(&two), Some(11));
        assert_eq!(frame_len(&two[11..]), Some(8));
    }

    #[test]
    fn encoded_methods_are_method_frames() {
        let close = AMQPClass::Connection(proto::connection::AMQPMethod::Close(
            proto::connection::Close {
                reply_code: 320,
                reply_text: "CONNECTION_FORCED".into(),
                class_id: 0,
                method_id: 0,
            },
        ));
        let bytes = encode(&AMQPFrame::Method(0, close.clone()));
        assert_eq!(bytes, frame_bytes(1, 0, &method_payload(close)));
        let (_, frame) = amq_protocol::frame::parse_frame(&bytes[..]).unwrap();
        let (channel, is_connection, info) = close_of(&frame).unwrap();
        assert_eq!((channel, is_connection, info.code), (0, true, 320));
    }
}
