//! Durable definitions as JSON: what `definitions.json` holds, and how a broker restores it.
//!
//! Only durable entities are kept: durable exchanges (not the predeclared `amq.*` ones), durable
//! queues, and bindings whose source exchange is durable and whose destination is a durable queue
//! or exchange (as RabbitMQ keeps them).

use crate::core::exchange::{Binding, Destination, Exchange, ExchangeKind};
use crate::core::queue::Queue;
use crate::core::state::State;
use crate::core::vhost::Vhost;
use amq_protocol::types::FieldTable;
use serde_json::{json, Value};
use std::collections::HashMap;

/// Whether a binding to `d` is part of the durable definitions (its source must be durable
/// too).
pub(crate) fn is_durable_destination(vh: &Vhost, d: &Destination) -> bool {
    match d {
        Destination::Queue(q) => vh.queues.get(q).is_some_and(|q| q.durable),
        Destination::Exchange(x) => vh.exchanges.get(x).is_some_and(|x| x.durable),
    }
}

/// The durable definitions of every vhost.
pub fn snapshot(vhosts: &HashMap<String, Vhost>) -> Value {
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
            .filter(|q| q.durable)
            .map(|q| {
                json!({
                    "name": &*q.name,
                    "auto_delete": q.auto_delete,
                    "arguments": q.args,
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

fn table(v: &Value) -> FieldTable {
    serde_json::from_value(v.clone()).unwrap_or_default()
}

fn text(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn flag(v: &Value, key: &str) -> bool {
    v.get(key).and_then(Value::as_bool).unwrap_or(false)
}

/// Restores definitions written by [`snapshot`] into `state`.
pub fn restore(state: &mut State, defs: &Value) {
    let Some(vhosts) = defs.get("vhosts").and_then(Value::as_object) else {
        return;
    };
    for (name, d) in vhosts {
        state.add_vhost(name);
        let empty = Vec::new();
        let list = |key: &str| {
            d.get(key)
                .and_then(Value::as_array)
                .unwrap_or(&empty)
                .clone()
        };
        let queues = list("queues");
        let exchanges = list("exchanges");
        let bindings = list("bindings");
        let mut ids = Vec::new();
        for _ in &queues {
            ids.push(state.next_queue_id());
        }
        let resident = state.resident_counter();
        let vh = state.vhosts_mut().get_mut(name).expect("just added");
        for x in exchanges {
            let Some(kind) = ExchangeKind::parse(&text(&x, "type")) else {
                continue;
            };
            let xname = text(&x, "name");
            vh.exchanges.insert(
                xname.clone(),
                Exchange::new(
                    xname,
                    kind,
                    true,
                    flag(&x, "auto_delete"),
                    flag(&x, "internal"),
                    table(&x["arguments"]),
                ),
            );
        }
        for (q, id) in queues.iter().zip(ids) {
            let qname = text(q, "name");
            vh.queues.insert(
                qname.clone(),
                Queue::new(
                    id,
                    qname,
                    true,
                    None,
                    flag(q, "auto_delete"),
                    table(&q["arguments"]),
                )
                .with_resident_counter(resident.clone()),
            );
        }
        for b in bindings {
            let dest = text(&b, "destination");
            let destination = if text(&b, "destination_type") == "exchange" {
                Destination::Exchange(dest)
            } else {
                Destination::Queue(dest)
            };
            if let Some(x) = vh.exchanges.get_mut(&text(&b, "source")) {
                x.bind(Binding::new(
                    destination,
                    text(&b, "routing_key"),
                    table(&b["arguments"]),
                ));
            }
        }
    }
}
