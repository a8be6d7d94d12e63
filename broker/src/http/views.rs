//! The JSON objects of the list endpoints, field for field as RabbitMQ 3.x's management API
//! writes them: queues, exchanges, bindings, connections, channels, consumers, vhosts.

use super::json::{message_stats, table};
use crate::core::stats::{
    BindingInfo, ChannelInfo, ConnInfo, ConsumerInfo, ExchangeInfo, QueueInfo, Stats,
};
use serde_json::{json, Map, Value};
use std::time::SystemTime;

fn insert_stats(m: &mut Map<String, Value>, c: Option<&crate::core::stats::Counters>, full: bool) {
    if let Some(c) = c.filter(|c| !c.is_empty()) {
        m.insert("message_stats".into(), message_stats(c, full));
    }
}

fn depth(m: &mut Map<String, Value>, key: &str, n: u64, rate: f64) {
    m.insert(key.into(), json!(n));
    m.insert(format!("{key}_details"), json!({"rate": rate}));
}

/// A queue.
pub(crate) fn queue(q: &QueueInfo, stats: &Stats, node: &str) -> Value {
    let rates = stats.depth_rates(&q.vhost, &q.name);
    let mut m = json!({
        "name": q.name,
        "vhost": q.vhost,
        "durable": q.durable,
        "auto_delete": q.auto_delete,
        "exclusive": q.owner.is_some(),
        "arguments": table(&q.arguments),
        "node": node,
        "type": "classic",
        "state": "running",
        "consumers": q.consumers,
        "consumer_capacity": if q.consumers > 0 { 1.0 } else { 0.0 },
        "consumer_utilisation": if q.consumers > 0 { 1.0 } else { 0.0 },
        "exclusive_consumer_tag": null,
        "single_active_consumer_tag": null,
        "policy": null,
        "operator_policy": null,
        "effective_policy_definition": {},
        "head_message_timestamp": null,
        "recoverable_slaves": null,
        "memory": q.ready_bytes + q.unacked_bytes,
        "message_bytes": q.ready_bytes + q.unacked_bytes,
        "message_bytes_ready": q.ready_bytes,
        "message_bytes_unacknowledged": q.unacked_bytes,
        "message_bytes_ram": q.ready_bytes + q.unacked_bytes,
        "message_bytes_persistent": 0,
        "message_bytes_paged_out": 0,
        "messages_ram": q.ready + q.unacked,
        "messages_ready_ram": q.ready,
        "messages_unacknowledged_ram": q.unacked,
        "messages_persistent": 0,
        "messages_paged_out": 0,
    });
    let m = m.as_object_mut().expect("object");
    depth(m, "messages", q.ready + q.unacked, rates[0]);
    depth(m, "messages_ready", q.ready, rates[1]);
    depth(m, "messages_unacknowledged", q.unacked, rates[2]);
    insert_stats(m, stats.of_queue(&q.vhost, &q.name), false);
    Value::Object(std::mem::take(m))
}

/// An exchange ("" shows as the default exchange).
pub(crate) fn exchange(x: &ExchangeInfo, stats: &Stats) -> Value {
    let mut m = json!({
        "name": x.name,
        "vhost": x.vhost,
        "type": x.kind,
        "durable": x.durable,
        "auto_delete": x.auto_delete,
        "internal": x.internal,
        "arguments": table(&x.arguments),
        "user_who_performed_action": "rmq-internal",
    });
    let m = m.as_object_mut().expect("object");
    insert_stats(m, stats.of_exchange(&x.vhost, &x.name), false);
    Value::Object(std::mem::take(m))
}

/// RabbitMQ's properties_key: the routing key (with `~` and the arguments' hash when there
/// are arguments), `~` for an empty key.
pub(crate) fn properties_key(b: &BindingInfo) -> String {
    let key = if b.routing_key.is_empty() {
        "~".to_string()
    } else {
        b.routing_key.replace('%', "%25").replace('~', "%7E")
    };
    if b.arguments.inner().is_empty() {
        return key;
    }
    let mut h = crc32fast::Hasher::new();
    h.update(table(&b.arguments).to_string().as_bytes());
    use base64::Engine;
    let hash = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(h.finalize().to_be_bytes());
    format!("{key}~{hash}")
}

/// A binding.
pub(crate) fn binding(b: &BindingInfo) -> Value {
    json!({
        "source": b.source,
        "vhost": b.vhost,
        "destination": b.destination,
        "destination_type": b.destination_type,
        "routing_key": b.routing_key,
        "arguments": table(&b.arguments),
        "properties_key": properties_key(b),
    })
}

fn rfc3339_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A connection. A direct one (MQTT, STOMP) has the fields RabbitMQ lists for the direct
/// connections of its plugins: no authentication mechanism, TLS details or user-provided
/// name, no heartbeat timeout for MQTT, and MQTT's `variable_map` (its client id).
pub(crate) fn connection(c: &ConnInfo, channels: usize, node: &str) -> Value {
    let name = c.name();
    let user_provided = c
        .client_properties
        .inner()
        .get("connection_name")
        .map(super::json::value);
    let mut v = json!({
        "name": name,
        "node": node,
        "type": if c.direct { "direct" } else { "network" },
        "protocol": c.protocol,
        "auth_mechanism": "PLAIN",
        "user": c.user,
        "user_who_performed_action": c.user,
        "vhost": c.vhost,
        "host": c.local.ip().to_string(),
        "port": c.local.port(),
        "peer_host": c.peer.ip().to_string(),
        "peer_port": c.peer.port(),
        "ssl": false,
        "peer_cert_subject": null,
        "peer_cert_issuer": null,
        "peer_cert_validity": null,
        "ssl_protocol": null,
        "ssl_key_exchange": null,
        "ssl_cipher": null,
        "ssl_hash": null,
        "state": "running",
        "channels": channels,
        "channel_max": c.tune.1,
        "frame_max": c.tune.0,
        "timeout": c.tune.2,
        "connected_at": rfc3339_ms(c.connected_at),
        "client_properties": table(&c.client_properties),
        "user_provided_name": user_provided,
    });
    if c.direct {
        let m = v.as_object_mut().expect("object");
        for key in [
            "auth_mechanism",
            "peer_cert_subject",
            "peer_cert_issuer",
            "peer_cert_validity",
            "ssl_protocol",
            "ssl_key_exchange",
            "ssl_cipher",
            "ssl_hash",
            "user_provided_name",
        ] {
            m.remove(key);
        }
        if c.protocol.contains("MQTT") {
            m.remove("timeout");
            if let Some(id) = c.client_properties.inner().get("client_id") {
                m.insert(
                    "variable_map".into(),
                    json!({ "client_id": super::json::value(id) }),
                );
            }
        }
    }
    v
}

/// A channel (`conn` is its connection, when described).
pub(crate) fn channel(
    ch: &ChannelInfo,
    conn: Option<&ConnInfo>,
    stats: &Stats,
    node: &str,
) -> Value {
    let conn_name = conn.map(|c| c.name()).unwrap_or_default();
    let mut m = json!({
        "name": format!("{conn_name} ({})", ch.key.channel),
        "number": ch.key.channel,
        "node": node,
        "vhost": ch.vhost,
        "user": conn.map(|c| c.user.clone()),
        "user_who_performed_action": conn.map(|c| c.user.clone()),
        "connection_details": {
            "name": conn_name,
            "peer_host": conn.map(|c| c.peer.ip().to_string()),
            "peer_port": conn.map(|c| c.peer.port()),
        },
        "consumer_count": ch.consumers,
        "messages_unacknowledged": ch.unacked,
        "messages_unconfirmed": 0,
        "messages_uncommitted": 0,
        "acks_uncommitted": 0,
        "prefetch_count": ch.prefetch,
        "global_prefetch_count": ch.global_prefetch,
        "state": if ch.active { "running" } else { "flow" },
        "confirm": false,
        "transactional": false,
    });
    let m = m.as_object_mut().expect("object");
    insert_stats(m, stats.of_channel(ch.key), true);
    Value::Object(std::mem::take(m))
}

/// A consumer.
pub(crate) fn consumer(c: &ConsumerInfo, conn: Option<&ConnInfo>) -> Value {
    let conn_name = conn.map(|c| c.name()).unwrap_or_default();
    json!({
        "consumer_tag": c.tag,
        "queue": {"name": c.queue, "vhost": c.vhost},
        "channel_details": {
            "name": format!("{conn_name} ({})", c.channel.channel),
            "number": c.channel.channel,
            "connection_name": conn_name,
            "peer_host": conn.map(|c| c.peer.ip().to_string()),
            "peer_port": conn.map(|c| c.peer.port()),
            "user": conn.map(|c| c.user.clone()),
        },
        "ack_required": c.ack_required,
        "exclusive": c.exclusive,
        "prefetch_count": c.prefetch,
        "active": true,
        "activity_status": "up",
        "arguments": if c.priority != 0 { json!({"x-priority": c.priority}) } else { json!({}) },
    })
}
