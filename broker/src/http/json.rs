//! RabbitMQ's JSON for statistics (`message_stats` with `_details.rate`), and the field table
//! conversions of `core/fieldtable.rs` under the names the handlers use.

use crate::core::stats::{Counters, Stat, STATS};
use serde_json::{json, Map, Value};

pub(crate) use crate::core::fieldtable::{
    from_json as to_table, to_json as table, value_json as value,
};

/// `message_stats` as RabbitMQ writes it: each stat with its `_details.rate`. RabbitMQ writes
/// every stat for channels, vhosts and the overview (`full`), and only the stats counted so far
/// for queues and exchanges.
pub(crate) fn message_stats(c: &Counters, full: bool) -> Value {
    let mut m = Map::new();
    for s in STATS {
        let n = c.get(s);
        let exchange_only = matches!(s, Stat::PublishIn | Stat::PublishOut);
        if (n == 0 && !full) || (full && exchange_only) {
            continue;
        }
        m.insert(s.name().into(), json!(n));
        m.insert(format!("{}_details", s.name()), json!({"rate": c.rate(s)}));
    }
    // deliver_get: deliver + deliver_no_ack + get + get_no_ack, as RabbitMQ derives it.
    let parts = [Stat::Deliver, Stat::DeliverNoAck, Stat::Get, Stat::GetNoAck];
    let dg: u64 = parts.iter().map(|s| c.get(*s)).sum();
    if dg > 0 || full {
        let rate: f64 = parts.iter().map(|s| c.rate(*s)).sum();
        m.insert("deliver_get".into(), json!(dg));
        m.insert("deliver_get_details".into(), json!({"rate": rate}));
    }
    Value::Object(m)
}
