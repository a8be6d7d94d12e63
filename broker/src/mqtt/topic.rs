//! Topics: RabbitMQ's translation between MQTT topics and AMQP routing keys on `amq.topic`,
//! and the retained-message store.
//!
//! MQTT -> AMQP replaces `/` with `.` and `+` with `*` (`#` means the same in both); AMQP ->
//! MQTT replaces `*` with `+` and `.` with `/`. As in RabbitMQ, nothing else is escaped: an
//! MQTT topic containing `.` reaches AMQP with an extra word boundary.
//!
//! Retained messages are kept per vhost under the topic translated to its MQTT form and are
//! looked up by the exact topic filter of a SUBSCRIBE, as RabbitMQ's retainer does: a
//! wildcard filter gets only a message retained under that very filter.

use bytes::Bytes;
use std::collections::HashMap;
use std::sync::Mutex;

/// The AMQP routing key (or binding key) of an MQTT topic (or topic filter).
pub(crate) fn to_amqp(topic: &str) -> String {
    topic.replace('/', ".").replace('+', "*")
}

/// The MQTT topic of an AMQP routing key.
pub(crate) fn to_mqtt(routing_key: &str) -> String {
    routing_key.replace('*', "+").replace('.', "/")
}

/// A retained message: what a new subscriber to its topic is sent.
#[derive(Debug, Clone)]
pub(crate) struct Retained {
    /// The QoS it was published with (0 or 1; QoS 2 was granted as 1).
    pub(crate) qos: u8,
    /// The payload.
    pub(crate) payload: Bytes,
}

/// Retained messages of every vhost, by MQTT topic.
#[derive(Debug, Default)]
pub(crate) struct RetainedStore {
    by_vhost: Mutex<HashMap<String, HashMap<String, Retained>>>,
}

impl RetainedStore {
    /// Retains `msg` under `topic` (an empty payload clears the topic, as MQTT says).
    pub(crate) fn retain(&self, vhost: &str, topic: &str, msg: Retained) {
        let key = to_mqtt(topic);
        let mut all = self.by_vhost.lock().unwrap_or_else(|p| p.into_inner());
        let topics = all.entry(vhost.to_string()).or_default();
        if msg.payload.is_empty() {
            topics.remove(&key);
        } else {
            topics.insert(key, msg);
        }
    }

    /// The message retained under exactly this topic filter, if any.
    pub(crate) fn fetch(&self, vhost: &str, filter: &str) -> Option<(String, Retained)> {
        let key = to_mqtt(filter);
        let all = self.by_vhost.lock().unwrap_or_else(|p| p.into_inner());
        let msg = all.get(vhost)?.get(&key)?.clone();
        Some((key, msg))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn translates_topics_as_rabbitmq() {
        assert_eq!(to_amqp("a/+/c/#"), "a.*.c.#");
        assert_eq!(to_amqp("/a"), ".a");
        assert_eq!(to_mqtt("a.*.c.#"), "a/+/c/#");
        assert_eq!(to_mqtt("x.y"), "x/y");
    }

    #[test]
    fn retained_messages_by_exact_topic_and_cleared_by_an_empty_payload() {
        let store = RetainedStore::default();
        let msg = |p: &'static [u8]| Retained {
            qos: 1,
            payload: Bytes::from_static(p),
        };
        store.retain("/", "a/b", msg(b"1"));
        assert_eq!(store.fetch("/", "a/b").unwrap().1.payload, "1");
        assert!(store.fetch("/", "a/+").is_none());
        assert!(store.fetch("other", "a/b").is_none());
        store.retain("/", "a/b", msg(b""));
        assert!(store.fetch("/", "a/b").is_none());
    }
}
