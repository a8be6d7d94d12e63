//! Definitions as JSON: what `definitions.json` holds (durable topology, restored at boot),
//! and RabbitMQ's definitions format, exported and imported whole (users, vhosts,
//! permissions, limits and topology), as `GET`/`POST /api/definitions` and `--definitions`.
//!
//! Only durable entities are kept: durable exchanges (not the predeclared `amq.*` ones), durable
//! queues, and bindings whose source exchange is durable and whose destination is a durable queue
//! or exchange (as RabbitMQ keeps them).

use crate::core::access::json::list;
use crate::core::access::Access;
use crate::core::exchange::{Destination, ExchangeKind};
use crate::core::fieldtable::to_json;
use crate::core::state::{State, StateLock};
use crate::core::topology::{ExchangeDeclare, QueueDeclare};
use crate::core::vhost::Vhost;
use amq_protocol::types::FieldTable;
use serde_json::{json, Value};

/// Whether a binding to `d` is part of the durable definitions (its source must be durable
/// too).
pub(crate) fn is_durable_destination(vh: &Vhost, d: &Destination) -> bool {
    match d {
        Destination::Queue(q) => vh.queues.get(q).is_some_and(|q| q.is_durable()),
        Destination::Exchange(x) => vh.exchanges.get(x).is_some_and(|x| x.durable),
    }
}

/// The durable definitions of every vhost.
pub(crate) fn snapshot(vhosts: &super::FastMap<String, Vhost>) -> Value {
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

/// Arguments from JSON: the typed form `definitions.json` keeps (`{"k": {"LongString": ..}}`,
/// serde's form of a field table), else RabbitMQ's plain JSON (`{"k": 10}`) as definitions
/// exported by RabbitMQ carry them.
pub(super) fn table(v: &Value) -> FieldTable {
    let typed = v.as_object().is_some_and(|m| {
        m.values().all(|x| {
            x.as_object().is_some_and(|o| o.len() == 1)
                && serde_json::from_value::<amq_protocol::types::AMQPValue>(x.clone()).is_ok()
        })
    });
    if typed {
        if let Ok(t) = serde_json::from_value(v.clone()) {
            return t;
        }
    }
    crate::core::fieldtable::from_json(v).unwrap_or_default()
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

// ----- RabbitMQ's definitions format (export, import, `--definitions`) ----------------------

/// The topology entries of a definitions document, checked and ready to apply.
#[derive(Default)]
struct Topology {
    exchanges: Vec<(String, ExchangeDeclare)>,
    queues: Vec<(String, QueueDeclare)>,
    /// (vhost, source, destination, routing key, arguments).
    bindings: Vec<(String, String, Destination, String, FieldTable)>,
}

/// Everything as RabbitMQ's `GET /api/definitions` exports it: users, vhosts, permissions,
/// topic permissions, vhost limits, then exchanges (not the default, `amq.*` or internal
/// ones), queues (not exclusive ones) and bindings (not the default exchange's) of every vhost.
pub(crate) fn export(state: &State, access: &Access) -> Value {
    let mut out = access.export();
    let (mut exchanges, mut queues, mut bindings) = (Vec::new(), Vec::new(), Vec::new());
    let mut names: Vec<&String> = state.vhosts.keys().collect();
    names.sort();
    for name in names {
        let vh = &state.vhosts[name];
        let mut xs: Vec<_> = vh.exchanges.values().collect();
        xs.sort_by(|a, b| a.name.cmp(&b.name));
        for x in xs {
            if !x.name.starts_with("amq.") && !x.internal {
                exchanges.push(json!({"name": x.name, "vhost": name, "type": x.kind.name(),
                    "durable": x.durable, "auto_delete": x.auto_delete, "internal": x.internal,
                    "arguments": to_json(&x.args)}));
            }
            for b in &x.bindings {
                let (kind, dest) = match &b.destination {
                    Destination::Queue(q) => ("queue", q),
                    Destination::Exchange(e) => ("exchange", e),
                };
                bindings.push(json!({"source": x.name, "vhost": name, "destination": dest,
                    "destination_type": kind, "routing_key": b.key, "arguments": to_json(&b.args)}));
            }
        }
        let mut qs: Vec<_> = vh.queues.values().filter(|q| q.owner().is_none()).collect();
        qs.sort_by(|a, b| a.name().cmp(b.name()));
        for q in qs {
            queues.push(
                json!({"name": &**q.name(), "vhost": name, "durable": q.is_durable(),
                "auto_delete": q.is_auto_delete(), "arguments": to_json(q.args())}),
            );
        }
    }
    out["rabbit_version"] = json!("3.10.8");
    out["rabbitmq_version"] = json!("3.10.8");
    out["product_name"] = json!("Warren");
    out["product_version"] = json!(env!("CARGO_PKG_VERSION"));
    out["global_parameters"] = json!([]);
    out["policies"] = json!([]);
    out["exchanges"] = json!(exchanges);
    out["queues"] = json!(queues);
    out["bindings"] = json!(bindings);
    out
}

/// Imports a RabbitMQ definitions document (`POST /api/definitions`, `--definitions`): users,
/// vhosts, permissions, topic permissions, vhost limits, exchanges, queues and bindings.
/// Everything is checked first and nothing is applied when anything is wrong. Entities that
/// exist already are kept as they are (as RabbitMQ's import does); names starting with `amq.`
/// are skipped with a warning, as RabbitMQ does.
pub(crate) fn import(state: &StateLock, access: &Access, defs: &Value) -> Result<(), String> {
    if !defs.is_object() {
        return Err("definitions must be a JSON object".into());
    }
    let mut vhosts: Vec<String> = access.vhosts().into_iter().map(|v| v.name).collect();
    for v in defs
        .get("vhosts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        vhosts.extend(v.get("name").and_then(Value::as_str).map(str::to_string));
    }
    let topology = {
        let st = state.lock();
        parse_topology(&st, defs, &vhosts)?
    };
    access.import(state, defs).map_err(|e| e.to_string())?;
    let mut st = state.lock();
    for (vhost, x) in topology.exchanges {
        if !st.has_exchange(&vhost, &x.name) {
            st.exchange_declare(&vhost, x).map_err(|e| e.text)?;
        }
    }
    for (vhost, q) in topology.queues {
        if !st.has_queue(&vhost, &q.name) {
            st.queue_declare(&vhost, 0, q).map_err(|e| e.text)?;
        }
    }
    for (vhost, source, dest, key, args) in topology.bindings {
        st.bind(&vhost, 0, &source, dest, &key, args)
            .map_err(|e| e.text)?;
    }
    Ok(())
}

/// Checks the exchanges, queues and bindings of a document against the current state and
/// the vhosts there will be.
fn parse_topology(state: &State, defs: &Value, vhosts: &[String]) -> Result<Topology, String> {
    let mut t = Topology::default();
    let vhost_of = |v: &Value| -> Result<String, String> {
        let vh = text(v, "vhost");
        if vhosts.contains(&vh) {
            Ok(vh)
        } else {
            Err(format!("vhost '{vh}' does not exist (in {v})"))
        }
    };
    for x in list(defs, "exchanges")? {
        let (vhost, name) = (vhost_of(x)?, text(x, "name"));
        if name.is_empty() || name.starts_with("amq.") {
            tracing::warn!(
                exchange = name,
                "skipping import of a default or amq.* exchange"
            );
            continue;
        }
        let kind = text(x, "type");
        if ExchangeKind::parse(&kind).is_none() {
            return Err(format!(
                "unknown exchange type '{kind}' for exchange '{name}'"
            ));
        }
        t.exchanges.push((
            vhost,
            ExchangeDeclare {
                name,
                kind,
                passive: false,
                durable: flag(x, "durable"),
                auto_delete: flag(x, "auto_delete"),
                internal: flag(x, "internal"),
                args: table(&x["arguments"]),
            },
        ));
    }
    for q in list(defs, "queues")? {
        let (vhost, name) = (vhost_of(q)?, text(q, "name"));
        if name.is_empty() || name.starts_with("amq.") {
            tracing::warn!(queue = name, "skipping import of a queue named amq.*");
            continue;
        }
        let args = table(&q["arguments"]);
        crate::core::args::validate_queue_args(&name, &vhost, &args).map_err(|e| e.text)?;
        t.queues.push((
            vhost,
            QueueDeclare {
                name,
                passive: false,
                durable: flag(q, "durable"),
                exclusive: false,
                auto_delete: flag(q, "auto_delete"),
                args,
            },
        ));
    }
    for b in list(defs, "bindings")? {
        let vhost = vhost_of(b)?;
        let (source, dest) = (text(b, "source"), text(b, "destination"));
        let exchange_known = |n: &str| {
            state.has_exchange(&vhost, n) && !n.is_empty()
                || t.exchanges.iter().any(|(v, x)| *v == vhost && x.name == n)
        };
        let destination = if text(b, "destination_type") == "exchange" {
            if !exchange_known(&dest) {
                return Err(format!(
                    "no exchange '{dest}' in vhost '{vhost}' for a binding"
                ));
            }
            Destination::Exchange(dest)
        } else {
            let queue_known = state
                .vhosts
                .get(&vhost)
                .and_then(|v| v.queues.get(&dest))
                .is_some_and(|q| q.owner().is_none())
                || t.queues.iter().any(|(v, q)| *v == vhost && q.name == dest);
            if !queue_known {
                return Err(format!(
                    "no queue '{dest}' in vhost '{vhost}' for a binding"
                ));
            }
            Destination::Queue(dest)
        };
        if !exchange_known(&source) {
            return Err(format!(
                "no exchange '{source}' in vhost '{vhost}' for a binding"
            ));
        }
        t.bindings.push((
            vhost,
            source,
            destination,
            text(b, "routing_key"),
            table(&b["arguments"]),
        ));
    }
    Ok(t)
}
