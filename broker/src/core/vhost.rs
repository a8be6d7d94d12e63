//! A virtual host: its exchanges (with RabbitMQ's predeclared `amq.*` ones) and its queues.

use super::exchange::{Exchange, ExchangeKind};
use super::queue::Queue;
use super::FastMap;
use amq_protocol::types::FieldTable;

/// Exchanges and queues of one virtual host.
#[derive(Debug)]
pub(crate) struct Vhost {
    /// The vhost name.
    pub(crate) name: String,
    /// Exchanges by name (the default exchange "" is implicit).
    pub(crate) exchanges: FastMap<String, Exchange>,
    /// Queues by name.
    pub(crate) queues: FastMap<String, Queue>,
}

impl Vhost {
    /// A vhost with RabbitMQ's predeclared exchanges.
    pub(crate) fn new(name: &str) -> Self {
        let mut exchanges = FastMap::default();
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
            queues: FastMap::default(),
        }
    }
}
