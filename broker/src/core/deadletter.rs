//! Dead-lettering: the copy of a message that goes to a queue's dead-letter exchange, with the
//! `x-death` history and `x-first-death-*` headers written exactly as RabbitMQ writes them.

use super::fieldtable::value_string;
use super::message::Message;
use amq_protocol::protocol::basic::AMQPProperties;
use amq_protocol::types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};
use std::time::{SystemTime, UNIX_EPOCH};

fn long(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.as_bytes().to_vec()))
}

/// Why a message is dead-lettered, as written in x-death.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DeathReason {
    /// Rejected or nacked without requeue.
    Rejected,
    /// Its TTL passed.
    Expired,
    /// The queue was over its length limit.
    Maxlen,
}

impl DeathReason {
    /// The reason as RabbitMQ writes it.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            DeathReason::Rejected => "rejected",
            DeathReason::Expired => "expired",
            DeathReason::Maxlen => "maxlen",
        }
    }
}

/// Copies `p` without its expiration (a dead-lettered message does not expire again).
fn without_expiration(p: &AMQPProperties, headers: FieldTable) -> AMQPProperties {
    let mut n = AMQPProperties::default().with_headers(headers);
    macro_rules! copy {
        ($get:ident, $set:ident) => {
            if let Some(v) = p.$get().clone() {
                n = n.$set(v);
            }
        };
    }
    copy!(content_type, with_content_type);
    copy!(content_encoding, with_content_encoding);
    copy!(delivery_mode, with_delivery_mode);
    copy!(priority, with_priority);
    copy!(correlation_id, with_correlation_id);
    copy!(reply_to, with_reply_to);
    copy!(message_id, with_message_id);
    copy!(timestamp, with_timestamp);
    copy!(kind, with_type);
    copy!(user_id, with_user_id);
    copy!(app_id, with_app_id);
    copy!(cluster_id, with_cluster_id);
    n
}

/// The message to publish to `dlx` when `msg` dies in `queue` for `reason`.
pub(crate) fn dead_letter(
    msg: &Message,
    queue: &str,
    reason: DeathReason,
    dlx: &str,
    dlrk: Option<&str>,
) -> Message {
    let original = msg.properties();
    let mut headers = original.headers().clone().unwrap_or_default();
    let mut deaths: Vec<AMQPValue> = match headers.inner().get("x-death") {
        Some(AMQPValue::FieldArray(a)) => a.as_slice().to_vec(),
        _ => Vec::new(),
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let same = deaths.iter().position(|d| match d {
        AMQPValue::FieldTable(t) => {
            t.inner().get("queue").and_then(value_string).as_deref() == Some(queue)
                && t.inner().get("reason").and_then(value_string).as_deref()
                    == Some(reason.as_str())
        }
        _ => false,
    });
    let entry = match same {
        Some(i) => {
            let AMQPValue::FieldTable(mut t) = deaths.remove(i) else {
                unreachable!("matched a table")
            };
            let count = t
                .inner()
                .get("count")
                .and_then(super::fieldtable::value_int)
                .unwrap_or(0);
            t.insert("count".into(), AMQPValue::LongLongInt(count as i64 + 1));
            t.insert("time".into(), AMQPValue::Timestamp(now));
            t
        }
        None => {
            let mut t = FieldTable::default();
            t.insert("count".into(), AMQPValue::LongLongInt(1));
            t.insert("reason".into(), long(reason.as_str()));
            t.insert("queue".into(), long(queue));
            t.insert("time".into(), AMQPValue::Timestamp(now));
            t.insert("exchange".into(), long(&msg.exchange));
            t.insert(
                "routing-keys".into(),
                AMQPValue::FieldArray(FieldArray::from(vec![long(&msg.routing_key)])),
            );
            if let Some(exp) = original.expiration() {
                t.insert("original-expiration".into(), long(exp.as_str()));
            }
            t
        }
    };
    deaths.insert(0, AMQPValue::FieldTable(entry));
    headers.insert(
        "x-death".into(),
        AMQPValue::FieldArray(FieldArray::from(deaths)),
    );
    for (k, v) in [
        ("x-first-death-reason", reason.as_str()),
        ("x-first-death-queue", queue),
        ("x-first-death-exchange", msg.exchange.as_str()),
    ] {
        if !headers.contains_key(k) {
            headers.insert(ShortString::from(k), long(v));
        }
    }
    let properties = without_expiration(&original, headers);
    Message::with_properties(
        dlx.to_string(),
        dlrk.unwrap_or(&msg.routing_key).to_string(),
        &properties,
        msg.body.clone(),
    )
}

/// Whether the message's history shows it already died in `queue` (a dead-letter cycle).
pub(crate) fn is_cycle(msg: &Message, queue: &str) -> bool {
    let Some(headers) = msg.headers() else {
        return false;
    };
    let Some(AMQPValue::FieldArray(deaths)) = headers.inner().get("x-death") else {
        return false;
    };
    // The newest entry is the death being processed; a cycle is an older one for this queue
    // with no rejection anywhere in the history.
    let mut seen_queue = false;
    for d in deaths.as_slice().iter().skip(1) {
        if let AMQPValue::FieldTable(t) = d {
            if t.inner().get("reason").and_then(value_string).as_deref() == Some("rejected") {
                return false;
            }
            if t.inner().get("queue").and_then(value_string).as_deref() == Some(queue) {
                seen_queue = true;
            }
        }
    }
    seen_queue
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn x_death_counts_and_first_death_headers() {
        let m = Message::with_properties(
            "ex".into(),
            "rk".into(),
            &AMQPProperties::default().with_expiration("100".into()),
            Bytes::from_static(b"b"),
        );
        let d1 = dead_letter(&m, "q", DeathReason::Expired, "dlx", None);
        assert_eq!(d1.routing_key, "rk");
        assert!(d1.properties().expiration().is_none());
        assert!(d1.expiration_ms.is_none());
        let h = d1.headers().unwrap();
        assert_eq!(
            h.inner().get("x-first-death-reason"),
            Some(&long("expired"))
        );
        let d2 = dead_letter(&d1, "q", DeathReason::Expired, "dlx", Some("k2"));
        assert_eq!(d2.routing_key, "k2");
        let h = d2.headers().unwrap();
        let Some(AMQPValue::FieldArray(a)) = h.inner().get("x-death") else {
            panic!("x-death missing")
        };
        assert_eq!(a.as_slice().len(), 1);
        let AMQPValue::FieldTable(t) = &a.as_slice()[0] else {
            panic!("entry is a table")
        };
        assert_eq!(t.inner().get("count"), Some(&AMQPValue::LongLongInt(2)));
    }
}
