//! A zero-copy view of a content header's basic properties.
//!
//! Publishing only needs a few properties (delivery mode, priority, expiration, reply-to,
//! user-id, and headers for a headers exchange). Decoding all of them into owned strings and
//! maps for every message costs allocations and memory per queued message, so the broker keeps
//! the encoded header as it arrived and reads fields out of it on demand. The full decoder
//! (amq-protocol) is used only when a header must be rewritten.

use amq_protocol::frame::WriteContext;
use amq_protocol::protocol::basic::{gen_properties, AMQPProperties};
use amq_protocol::types::FieldTable;
use bytes::{BufMut, Bytes};
use std::ops::Range;

/// The flag bits of the basic properties, in wire order (AMQP 0-9-1, class basic).
const CONTENT_TYPE: u16 = 1 << 15;
const CONTENT_ENCODING: u16 = 1 << 14;
const HEADERS: u16 = 1 << 13;
const DELIVERY_MODE: u16 = 1 << 12;
const PRIORITY: u16 = 1 << 11;
const CORRELATION_ID: u16 = 1 << 10;
const REPLY_TO: u16 = 1 << 9;
const EXPIRATION: u16 = 1 << 8;
const MESSAGE_ID: u16 = 1 << 7;
const TIMESTAMP: u16 = 1 << 6;
const TYPE: u16 = 1 << 5;
const USER_ID: u16 = 1 << 4;
const APP_ID: u16 = 1 << 3;
const CLUSTER_ID: u16 = 1 << 2;

/// Where each property sits in an encoded content header payload.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct PropsView {
    /// delivery-mode, if present.
    pub(crate) delivery_mode: Option<u8>,
    /// priority, if present.
    pub(crate) priority: Option<u8>,
    /// The headers table (including its 4-byte length), if present.
    pub(crate) headers: Option<Range<usize>>,
    /// The reply-to short string's bytes (without its length octet), if present.
    pub(crate) reply_to: Option<Range<usize>>,
    /// The expiration short string's bytes, if present.
    pub(crate) expiration: Option<Range<usize>>,
    /// The user-id short string's bytes, if present.
    pub(crate) user_id: Option<Range<usize>>,
    /// The correlation-id short string's bytes, if present.
    pub(crate) correlation_id: Option<Range<usize>>,
    /// The type short string's bytes, if present.
    pub(crate) kind: Option<Range<usize>>,
}

impl PropsView {
    /// Scans a content header payload (class id, weight, body size, flags, properties).
    /// Returns None if it is malformed.
    pub(crate) fn parse(h: &[u8]) -> Option<PropsView> {
        let mut pos = 12;
        let flags = u16::from_be_bytes(h.get(pos..pos + 2)?.try_into().ok()?);
        pos += 2;
        if flags & 1 != 0 {
            // Flag continuation words are not used by class basic.
            return None;
        }
        let mut v = PropsView::default();
        let shortstr = |pos: &mut usize| -> Option<Range<usize>> {
            let len = *h.get(*pos)? as usize;
            let start = *pos + 1;
            if start + len > h.len() {
                return None;
            }
            *pos = start + len;
            Some(start..start + len)
        };
        if flags & CONTENT_TYPE != 0 {
            shortstr(&mut pos)?;
        }
        if flags & CONTENT_ENCODING != 0 {
            shortstr(&mut pos)?;
        }
        if flags & HEADERS != 0 {
            let len = u32::from_be_bytes(h.get(pos..pos + 4)?.try_into().ok()?) as usize;
            let end = pos.checked_add(4 + len)?;
            if end > h.len() {
                return None;
            }
            // A table nested too deep for the decoder is refused like a malformed header.
            if !crate::core::fieldtable::table_nesting_within(
                &h[pos..end],
                crate::core::fieldtable::MAX_TABLE_DEPTH,
            ) {
                return None;
            }
            v.headers = Some(pos..end);
            pos = end;
        }
        if flags & DELIVERY_MODE != 0 {
            v.delivery_mode = Some(*h.get(pos)?);
            pos += 1;
        }
        if flags & PRIORITY != 0 {
            v.priority = Some(*h.get(pos)?);
            pos += 1;
        }
        if flags & CORRELATION_ID != 0 {
            v.correlation_id = Some(shortstr(&mut pos)?);
        }
        if flags & REPLY_TO != 0 {
            v.reply_to = Some(shortstr(&mut pos)?);
        }
        if flags & EXPIRATION != 0 {
            v.expiration = Some(shortstr(&mut pos)?);
        }
        if flags & MESSAGE_ID != 0 {
            shortstr(&mut pos)?;
        }
        if flags & TIMESTAMP != 0 {
            h.get(pos..pos + 8)?;
            pos += 8;
        }
        if flags & TYPE != 0 {
            v.kind = Some(shortstr(&mut pos)?);
        }
        if flags & USER_ID != 0 {
            v.user_id = Some(shortstr(&mut pos)?);
        }
        if flags & APP_ID != 0 {
            shortstr(&mut pos)?;
        }
        if flags & CLUSTER_ID != 0 {
            shortstr(&mut pos)?;
        }
        Some(v)
    }

    /// A string property's text (lossy for invalid UTF-8, which real clients never send).
    pub(crate) fn text<'a>(h: &'a [u8], r: &Option<Range<usize>>) -> Option<&'a str> {
        r.as_ref()
            .and_then(|r| std::str::from_utf8(&h[r.clone()]).ok())
    }

    /// Whether an encoded content header may carry headers or a correlation id, read from its
    /// flag word alone: what the RPC observer checks before anything else, so a message with
    /// neither costs it one load.
    pub(crate) fn flag_bits(h: &[u8]) -> (bool, bool) {
        let flags = h
            .get(12..14)
            .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
        (flags & HEADERS != 0, flags & CORRELATION_ID != 0)
    }

    /// One header's value as an integer, found by walking the encoded table without decoding
    /// it: `Some(None)` when the header is there but not a number (a string holding digits is
    /// read as RabbitMQ's clients send it), None when it is absent or the table is malformed.
    ///
    /// Hand-written rather than `headers_table` because this runs on every publish that has
    /// headers, and decoding the table allocates a map of owned strings per message.
    pub(crate) fn header_int(&self, h: &[u8], key: &str) -> Option<Option<i64>> {
        let r = self.headers.clone()?;
        let mut pos = r.start + 4;
        while pos < r.end {
            let klen = *h.get(pos)? as usize;
            let name = h.get(pos + 1..pos + 1 + klen)?;
            pos += 1 + klen;
            let tag = *h.get(pos)?;
            pos += 1;
            let len = field_len(h, pos, tag)?;
            if name == key.as_bytes() {
                return Some(field_int(h.get(pos..pos + len)?, tag));
            }
            pos += len;
        }
        None
    }

    /// Decodes the headers table, if present.
    pub(crate) fn headers_table(&self, h: &[u8]) -> Option<FieldTable> {
        let r = self.headers.clone()?;
        amq_protocol::types::parsing::parse_field_table(&h[r])
            .ok()
            .map(|(_, t)| t)
    }
}

/// The encoded length of a field value of type `tag` starting at `pos` (after the tag).
fn field_len(h: &[u8], pos: usize, tag: u8) -> Option<usize> {
    let u32_at = |p: usize| -> Option<usize> {
        Some(u32::from_be_bytes(h.get(p..p + 4)?.try_into().ok()?) as usize)
    };
    Some(match tag {
        b'V' => 0,
        b't' | b'b' | b'B' => 1,
        b's' | b'u' => 2,
        b'I' | b'i' | b'f' => 4,
        b'D' => 5,
        b'l' | b'L' | b'd' | b'T' => 8,
        b'S' | b'x' | b'A' | b'F' => 4 + u32_at(pos)?,
        _ => return None,
    })
}

/// An integer field's value (every width, and a decimal number in a long string).
fn field_int(v: &[u8], tag: u8) -> Option<i64> {
    let be = |n: usize| -> Option<[u8; 8]> {
        let mut b = [0u8; 8];
        b[8 - n..].copy_from_slice(v.get(..n)?);
        Some(b)
    };
    let signed = |n: usize| -> Option<i64> {
        let raw = i64::from_be_bytes(be(n)?);
        let shift = 64 - 8 * n as u32;
        Some((raw << shift) >> shift)
    };
    match tag {
        b'b' | b's' | b'I' | b'l' => signed(match tag {
            b'b' => 1,
            b's' => 2,
            b'I' => 4,
            _ => 8,
        }),
        b'B' | b'u' | b'i' | b'L' | b'T' => {
            let n = match tag {
                b'B' => 1,
                b'u' => 2,
                b'i' => 4,
                _ => 8,
            };
            i64::try_from(u64::from_be_bytes(be(n)?)).ok()
        }
        b'S' => std::str::from_utf8(v.get(4..)?).ok()?.trim().parse().ok(),
        _ => None,
    }
}

/// Returns a copy of the header payload `h` (described by `v`) with its reply-to replaced.
pub(crate) fn with_reply_to(h: &[u8], v: &PropsView, reply_to: &str) -> Vec<u8> {
    let r = v.reply_to.clone().expect("reply-to present");
    let new = &reply_to.as_bytes()[..reply_to.len().min(255)];
    let mut out = Vec::with_capacity(h.len() + new.len());
    out.extend_from_slice(&h[..r.start - 1]);
    out.push(new.len() as u8);
    out.extend_from_slice(new);
    out.extend_from_slice(&h[r.end..]);
    out
}

/// Encodes the payload of a content header frame (class, weight, body size, properties).
pub fn encode_header_payload(body_size: u64, properties: &AMQPProperties) -> Bytes {
    let mut buf = Vec::with_capacity(64);
    buf.put_u16(60);
    buf.put_u16(0);
    buf.put_u64(body_size);
    match gen_properties(properties)(WriteContext::from(buf)) {
        Ok(ctx) => Bytes::from(ctx.write),
        Err(e) => {
            tracing::error!(error = %e, "failed to encode content properties");
            let mut buf = Vec::with_capacity(14);
            buf.put_u16(60);
            buf.put_u16(0);
            buf.put_u64(body_size);
            buf.put_u16(0);
            Bytes::from(buf)
        }
    }
}

/// Appends an AMQP short string (length octet + bytes), cut at 255 bytes.
pub(crate) fn put_short_str(out: &mut Vec<u8>, s: &str) {
    let b = &s.as_bytes()[..s.len().min(255)];
    out.put_u8(b.len() as u8);
    out.extend_from_slice(b);
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::protocol::basic::AMQPProperties;
    use amq_protocol::types::AMQPValue;

    #[test]
    fn reads_the_fields_the_broker_needs_and_rewrites_reply_to() {
        let mut headers = FieldTable::default();
        headers.insert("k".into(), AMQPValue::LongString("v".into()));
        let props = AMQPProperties::default()
            .with_content_type("application/json".into())
            .with_headers(headers.clone())
            .with_delivery_mode(2)
            .with_priority(7)
            .with_correlation_id("c".into())
            .with_reply_to("amq.rabbitmq.reply-to".into())
            .with_expiration("1500".into())
            .with_timestamp(42)
            .with_user_id("guest".into())
            .with_app_id("app".into());
        let h = encode_header_payload(3, &props);
        let v = PropsView::parse(&h).unwrap();
        assert_eq!(v.delivery_mode, Some(2));
        assert_eq!(v.priority, Some(7));
        assert_eq!(PropsView::text(&h, &v.expiration), Some("1500"));
        assert_eq!(PropsView::text(&h, &v.user_id), Some("guest"));
        assert_eq!(v.headers_table(&h), Some(headers));
        let h2 = with_reply_to(&h, &v, "amq.rabbitmq.reply-to.abc");
        let (_, decoded) = amq_protocol::frame::parsing::parse_content_header(&h2[..]).unwrap();
        assert_eq!(
            decoded.properties.reply_to().as_ref().map(|s| s.as_str()),
            Some("amq.rabbitmq.reply-to.abc")
        );
        assert_eq!(
            decoded.properties.app_id().as_ref().map(|s| s.as_str()),
            Some("app")
        );
        assert!(PropsView::parse(&h[..h.len() - 2]).is_none());
    }
}
