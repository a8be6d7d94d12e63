//! A virtual host: its exchanges (with RabbitMQ's predeclared `amq.*` ones) and its queues.

use super::exchange::{Exchange, ExchangeKind};
use super::queue::Queue;
use amq_protocol::types::FieldTable;
use std::collections::HashMap;

/// Exchanges and queues of one virtual host.
#[derive(Debug)]
pub(crate) struct Vhost {
    /// The vhost name.
    pub(crate) name: String,
    /// Exchanges by name (the default exchange "" is implicit).
    pub(crate) exchanges: HashMap<String, Exchange>,
    /// Queues by name.
    pub(crate) queues: HashMap<String, Queue>,
}

impl Vhost {
    /// A vhost with RabbitMQ's predeclared exchanges.
    pub(crate) fn new(name: &str) -> Self {
        let mut exchanges = HashMap::new();
        for (n, k) in [
            ("amq.direct", ExchangeKind::Direct),
            ("amq.fanout", ExchangeKind::Fanout),
            ("amq.topic", ExchangeKind::Topic),
            ("amq.headers", ExchangeKind::Headers),
            ("amq.match", ExchangeKind::Headers),
        ] {
            exchanges.insert(
                n.to_string(),
                Exchange::new(n.into(), k, true, false, false, FieldTable::default()),
            );
        }
        Vhost {
            name: name.to_string(),
            exchanges,
            queues: HashMap::new(),
        }
    }
}
