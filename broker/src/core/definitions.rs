//! Durable definitions as JSON: what `definitions.json` holds, and how a broker restores it.
//!
//! Only durable entities are kept: durable exchanges (not the predeclared `amq.*` ones), durable
//! queues, and bindings whose source exchange is durable and whose destination is a durable queue
//! or exchange (as RabbitMQ keeps them).

use crate::core::exchange::Destination;
use crate::core::vhost::Vhost;
use amq_protocol::types::FieldTable;
use serde_json::{json, Value};
use std::collections::HashMap;

/// Whether a binding to `d` is part of the durable definitions (its source must be durable
/// too).
pub(crate) fn is_durable_destination(vh: &Vhost, d: &Destination) -> bool {
    match d {
        Destination::Queue(q) => vh.queues.get(q).is_some_and(|q| q.is_durable()),
        Destination::Exchange(x) => vh.exchanges.get(x).is_some_and(|x| x.durable),
    }
}

/// The durable definitions of every vhost.
pub(crate) fn snapshot(vhosts: &HashMap<String, Vhost>) -> Value {
    let mut out = serde_json::Map::new();
    for (name, vh) in vhosts {
        let mut exchanges = Vec::new();
        let mut bindings = Vec::new();
        for x in vh.exchanges.values().filter(|x| x.durable) {
            if !x.name.starts_with("amq.") {
                exchanges.push(json!({
                    "name": x.name,
                    "type": x.kind.name(),
                    "auto_delete": x.auto_delete,
                    "internal": x.internal,
                    "arguments": x.args,
                }));
            }
            for b in x
                .bindings
                .iter()
                .filter(|b| is_durable_destination(vh, &b.destination))
            {
                let (kind, dest) = match &b.destination {
                    Destination::Queue(q) => ("queue", q),
                    Destination::Exchange(e) => ("exchange", e),
                };
                bindings.push(json!({
                    "source": x.name,
                    "destination": dest,
                    "destination_type": kind,
                    "routing_key": b.key,
                    "arguments": b.args,
                }));
            }
        }
        let queues: Vec<Value> = vh
            .queues
            .values()
            .filter(|q| q.is_durable())
            .map(|q| {
                json!({
                    "name": &**q.name(),
                    "auto_delete": q.is_auto_delete(),
                    "arguments": q.args(),
                })
            })
            .collect();
        out.insert(
            name.clone(),
            json!({"exchanges": exchanges, "queues": queues, "bindings": bindings}),
        );
    }
    json!({ "version": 1, "vhosts": out })
}

pub(super) fn table(v: &Value) -> FieldTable {
    serde_json::from_value(v.clone()).unwrap_or_default()
}

pub(super) fn text(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

pub(super) fn flag(v: &Value, key: &str) -> bool {
    v.get(key).and_then(Value::as_bool).unwrap_or(false)
}
