//! Topology: declaring, checking (RabbitMQ's equivalence rules), binding and deleting exchanges
//! and queues, and restoring the durable definitions at boot.

use super::definitions::{flag, table, text};
use super::delivery::REPLY_TO;
use super::error::{AmqpError, AmqpResult, Code};
use super::exchange::{self, Binding, Destination, Exchange, ExchangeKind};
use super::fieldtable::{args_equal, describe_args, value_string};
use super::message::ConnId;
use super::queue::Queue;
use super::sink::Event;
use super::state::{gen_name, State};
use amq_protocol::types::{AMQPValue, FieldTable};
use serde_json::Value;
use std::time::Instant;

/// Options of queue.declare.
#[derive(Debug, Clone)]
pub(crate) struct QueueDeclare {
    /// Queue name ("" for a server-named queue).
    pub(crate) name: String,
    /// Only check that it exists.
    pub(crate) passive: bool,
    /// Durable.
    pub(crate) durable: bool,
    /// Exclusive to the declaring connection.
    pub(crate) exclusive: bool,
    /// Deleted with its last consumer.
    pub(crate) auto_delete: bool,
    /// Arguments.
    pub(crate) args: FieldTable,
}

/// Options of exchange.declare.
#[derive(Debug, Clone)]
pub(crate) struct ExchangeDeclare {
    /// Exchange name.
    pub(crate) name: String,
    /// Type name.
    pub(crate) kind: String,
    /// Only check that it exists.
    pub(crate) passive: bool,
    /// Durable.
    pub(crate) durable: bool,
    /// Deleted when its last binding goes.
    pub(crate) auto_delete: bool,
    /// Not publishable by clients.
    pub(crate) internal: bool,
    /// Arguments.
    pub(crate) args: FieldTable,
}

const QUEUE_EQUIVALENCE_ARGS: &[&str] = &[
    "x-expires",
    "x-message-ttl",
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-max-length",
    "x-max-length-bytes",
    "x-max-priority",
    "x-overflow",
    "x-queue-mode",
    "x-queue-type",
    "x-single-active-consumer",
];

impl State {
    // ----- exchanges -----------------------------------------------------------------------

    /// exchange.declare.
    pub(crate) fn exchange_declare(&mut self, vhost: &str, d: ExchangeDeclare) -> AmqpResult<()> {
        let vh = self.vhosts.get_mut(vhost).expect("channel vhost exists");
        if d.name.is_empty() {
            return Err(AmqpError::new(
                Code::AccessRefused,
                "operation not permitted on the default exchange",
            ));
        }
        if d.passive {
            return match vh.exchanges.get(&d.name) {
                Some(_) => Ok(()),
                None => Err(AmqpError::no_exchange(&d.name, vhost)),
            };
        }
        let Some(kind) = ExchangeKind::parse(&d.kind) else {
            return Err(AmqpError::new(
                Code::CommandInvalid,
                format!("unknown exchange type '{}'", d.kind),
            ));
        };
        if let Some(x) = vh.exchanges.get(&d.name) {
            let what = format!("exchange '{}' in vhost '{}'", d.name, vhost);
            let check = |field: &str, current: &str, received: &str| -> AmqpResult<()> {
                if current == received {
                    Ok(())
                } else {
                    Err(AmqpError::precondition(format!(
                        "inequivalent arg '{field}' for {what}: received '{received}' but current is '{current}'"
                    )))
                }
            };
            check("type", x.kind.name(), kind.name())?;
            check("durable", &x.durable.to_string(), &d.durable.to_string())?;
            check(
                "auto_delete",
                &x.auto_delete.to_string(),
                &d.auto_delete.to_string(),
            )?;
            check("internal", &x.internal.to_string(), &d.internal.to_string())?;
            let key = "alternate-exchange";
            let (cur, new) = (x.args.inner().get(key), d.args.inner().get(key));
            if !args_equal(cur, new) {
                let (received, current) = describe_args(new, cur);
                return Err(AmqpError::precondition(format!(
                    "inequivalent arg '{key}' for {what}: received {received} but current is {current}"
                )));
            }
            return Ok(());
        }
        if d.name.starts_with("amq.") {
            return Err(AmqpError::new(
                Code::AccessRefused,
                format!(
                    "exchange name '{}' contains reserved prefix 'amq.*'",
                    d.name
                ),
            ));
        }
        let durable = d.durable;
        vh.exchanges.insert(
            d.name.clone(),
            Exchange::new(d.name, kind, d.durable, d.auto_delete, d.internal, d.args),
        );
        if durable {
            self.save_definitions();
        }
        Ok(())
    }

    /// exchange.delete.
    pub(crate) fn exchange_delete(
        &mut self,
        vhost: &str,
        name: &str,
        if_unused: bool,
    ) -> AmqpResult<()> {
        if name.is_empty() {
            return Err(AmqpError::new(
                Code::AccessRefused,
                "operation not permitted on the default exchange",
            ));
        }
        if name.starts_with("amq.") {
            return Err(AmqpError::new(
                Code::AccessRefused,
                format!("deletion of system exchange '{name}' in vhost '{vhost}' not allowed"),
            ));
        }
        let vh = self.vhosts.get_mut(vhost).expect("channel vhost exists");
        let Some(x) = vh.exchanges.get(name) else {
            // RabbitMQ: deleting a missing exchange succeeds.
            return Ok(());
        };
        if if_unused && !x.bindings.is_empty() {
            return Err(AmqpError::precondition(format!(
                "exchange '{name}' in vhost '{vhost}' in use"
            )));
        }
        self.delete_exchange_inner(vhost, name);
        Ok(())
    }

    pub(super) fn delete_exchange_inner(&mut self, vhost: &str, name: &str) {
        let Some(vh) = self.vhosts.get_mut(vhost) else {
            return;
        };
        self.stats.forget_exchange(vhost, name);
        if vh.exchanges.remove(name).is_some_and(|x| x.durable) {
            self.save_definitions();
        }
        let Some(vh) = self.vhosts.get_mut(vhost) else {
            return;
        };
        let dest = Destination::Exchange(name.to_string());
        let mut sources = Vec::new();
        for x in vh.exchanges.values_mut() {
            if x.unbind_destination(&dest) > 0 {
                sources.push(x.name.clone());
            }
        }
        for s in sources {
            self.maybe_auto_delete_exchange(vhost, &s);
        }
    }

    pub(super) fn maybe_auto_delete_exchange(&mut self, vhost: &str, name: &str) {
        let delete = self
            .vhosts
            .get(vhost)
            .and_then(|v| v.exchanges.get(name))
            .is_some_and(|x| x.auto_delete && x.bindings.is_empty());
        if delete {
            self.delete_exchange_inner(vhost, name);
        }
    }

    /// queue.bind / exchange.bind: binds `destination` to `source`.
    pub(crate) fn bind(
        &mut self,
        vhost: &str,
        conn: ConnId,
        source: &str,
        destination: Destination,
        key: &str,
        args: FieldTable,
    ) -> AmqpResult<()> {
        let vh = self.vhosts.get_mut(vhost).expect("channel vhost exists");
        match &destination {
            Destination::Queue(q) => {
                let Some(queue) = vh.queues.get(q) else {
                    return Err(AmqpError::no_queue(q, vhost));
                };
                if !queue.usable_by(conn) {
                    return Err(AmqpError::locked(q, vhost));
                }
            }
            Destination::Exchange(x) => {
                if x.is_empty() {
                    return Err(AmqpError::new(
                        Code::AccessRefused,
                        "operation not permitted on the default exchange",
                    ));
                }
                if !vh.exchanges.contains_key(x) {
                    return Err(AmqpError::no_exchange(x, vhost));
                }
            }
        }
        if source.is_empty() {
            return Err(AmqpError::new(
                Code::AccessRefused,
                "operation not permitted on the default exchange",
            ));
        }
        // Only bindings between durable ends are written to the definitions.
        let durable_destination =
            crate::core::definitions::is_durable_destination(vh, &destination);
        let Some(x) = vh.exchanges.get_mut(source) else {
            return Err(AmqpError::no_exchange(source, vhost));
        };
        if x.kind == ExchangeKind::Headers {
            exchange::validate_headers_binding(&args).map_err(AmqpError::precondition)?;
        }
        if x.bind(Binding::new(destination, key.to_string(), args))
            && x.durable
            && durable_destination
        {
            self.save_definitions();
        }
        Ok(())
    }

    /// queue.unbind / exchange.unbind.
    pub(crate) fn unbind(
        &mut self,
        vhost: &str,
        conn: ConnId,
        source: &str,
        destination: Destination,
        key: &str,
        args: &FieldTable,
    ) -> AmqpResult<()> {
        let vh = self.vhosts.get_mut(vhost).expect("channel vhost exists");
        if let Destination::Queue(q) = &destination {
            if let Some(queue) = vh.queues.get(q) {
                if !queue.usable_by(conn) {
                    return Err(AmqpError::locked(q, vhost));
                }
            }
        }
        if source.is_empty() {
            return Err(AmqpError::new(
                Code::AccessRefused,
                "operation not permitted on the default exchange",
            ));
        }
        let durable_destination =
            crate::core::definitions::is_durable_destination(vh, &destination);
        // As RabbitMQ 3.x: unbinding from or to something that does not exist succeeds.
        let Some(x) = vh.exchanges.get_mut(source) else {
            return Ok(());
        };
        if x.unbind(&destination, key, args) {
            if x.durable && durable_destination {
                self.save_definitions();
            }
            self.maybe_auto_delete_exchange(vhost, source);
        }
        Ok(())
    }

    // ----- queues --------------------------------------------------------------------------

    /// queue.declare: returns (name, message count, consumer count).
    pub(crate) fn queue_declare(
        &mut self,
        vhost: &str,
        conn: ConnId,
        d: QueueDeclare,
    ) -> AmqpResult<(String, u32, u32)> {
        if d.name.starts_with(REPLY_TO) {
            return if d.name == REPLY_TO || self.reply_names.contains_key(&d.name) {
                Ok((d.name, 0, 1))
            } else {
                Err(AmqpError::no_queue(&d.name, vhost))
            };
        }
        let vh = self.vhosts.get_mut(vhost).expect("channel vhost exists");
        if d.passive {
            let Some(q) = vh.queues.get(&d.name) else {
                return Err(AmqpError::no_queue(&d.name, vhost));
            };
            if !q.usable_by(conn) {
                return Err(AmqpError::locked(&d.name, vhost));
            }
            return Ok((d.name, q.message_count(), q.consumer_count()));
        }
        let name = if d.name.is_empty() {
            gen_name("amq.gen-")
        } else {
            d.name.clone()
        };
        let durable = d.durable && !d.exclusive;
        if let Some(q) = vh.queues.get_mut(&name) {
            // Strict, as RabbitMQ: the owner must match the declaration exactly.
            if q.owner() != d.exclusive.then_some(conn) {
                return Err(AmqpError::locked(&name, vhost));
            }
            let what = format!("queue '{name}' in vhost '{vhost}'");
            for (field, cur, new) in [
                ("durable", q.is_durable(), durable),
                ("auto_delete", q.is_auto_delete(), d.auto_delete),
            ] {
                if cur != new {
                    return Err(AmqpError::precondition(format!(
                        "inequivalent arg '{field}' for {what}: received '{new}' but current is '{cur}'"
                    )));
                }
            }
            for key in QUEUE_EQUIVALENCE_ARGS {
                let (cur, new) = (q.args().inner().get(*key), d.args.inner().get(*key));
                if *key == "x-queue-type" {
                    let norm = |v: Option<&AMQPValue>| match v {
                        None => Some("classic".to_string()),
                        Some(v) => value_string(v),
                    };
                    if norm(cur).is_some() && norm(cur) == norm(new) {
                        continue;
                    }
                }
                if !args_equal(cur, new) {
                    let (received, current) = describe_args(new, cur);
                    return Err(AmqpError::precondition(format!(
                        "inequivalent arg '{key}' for {what}: received {received} but current is {current}"
                    )));
                }
            }
            q.touch(Instant::now());
            return Ok((name, q.message_count(), q.consumer_count()));
        }
        if name.starts_with("amq.") && !d.name.is_empty() {
            return Err(AmqpError::new(
                Code::AccessRefused,
                format!("queue name '{name}' contains reserved prefix 'amq.*'"),
            ));
        }
        crate::core::args::validate_queue_args(&name, vhost, &d.args)?;
        self.stats.churn(super::stats::Churn::QueueCreated);
        self.stats.churn(super::stats::Churn::QueueDeclared);
        let id = self.next_queue_id;
        self.next_queue_id += 1;
        let owner = d.exclusive.then_some(conn);
        let q = Queue::new(id, name.clone(), durable, owner, d.auto_delete, d.args)
            .with_resident_counter(self.resident.clone());
        vh.queues.insert(name.clone(), q);
        if durable {
            self.save_definitions();
            if self.store.is_none() && self.warn_durable_without_storage {
                tracing::warn!(queue = %name, vhost, "durable queue declared on a memory-only broker: it and its messages are lost when the broker stops");
            }
        }
        Ok((name, 0, 0))
    }

    pub(super) fn queue_mut(
        &mut self,
        vhost: &str,
        name: &str,
        conn: ConnId,
    ) -> AmqpResult<&mut Queue> {
        let q = self
            .vhosts
            .get_mut(vhost)
            .and_then(|v| v.queues.get_mut(name))
            .ok_or_else(|| AmqpError::no_queue(name, vhost))?;
        if !q.usable_by(conn) {
            return Err(AmqpError::locked(name, vhost));
        }
        Ok(q)
    }

    /// queue.purge: returns the number of messages removed.
    pub(crate) fn queue_purge(&mut self, vhost: &str, conn: ConnId, name: &str) -> AmqpResult<u32> {
        let purged = self.queue_mut(vhost, name, conn)?.purge();
        for m in &purged {
            self.forget(m);
        }
        Ok(purged.len() as u32)
    }

    /// queue.delete: returns the number of messages deleted.
    pub(crate) fn queue_delete(
        &mut self,
        vhost: &str,
        conn: ConnId,
        name: &str,
        if_unused: bool,
        if_empty: bool,
    ) -> AmqpResult<u32> {
        let q = match self.queue_mut(vhost, name, conn) {
            Ok(q) => q,
            // RabbitMQ: deleting a missing queue succeeds with a count of 0.
            Err(e) if e.code == Code::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        if if_unused && q.has_consumers() {
            return Err(AmqpError::precondition(format!(
                "queue '{name}' in vhost '{vhost}' in use"
            )));
        }
        if if_empty && q.has_ready() {
            return Err(AmqpError::precondition(format!(
                "queue '{name}' in vhost '{vhost}' not empty"
            )));
        }
        Ok(self.delete_queue_inner(vhost, name))
    }

    pub(super) fn delete_queue_inner(&mut self, vhost: &str, name: &str) -> u32 {
        let Some(vh) = self.vhosts.get_mut(vhost) else {
            return 0;
        };
        let Some(q) = vh.queues.remove(name) else {
            return 0;
        };
        self.stats.forget_queue(vhost, name);
        self.stats.churn(super::stats::Churn::QueueDeleted);
        let durable = q.is_durable();
        let dest = Destination::Queue(name.to_string());
        let mut sources = Vec::new();
        for x in vh.exchanges.values_mut() {
            if x.unbind_destination(&dest) > 0 {
                sources.push(x.name.clone());
            }
        }
        for c in q.consumers() {
            if let Some(slot) = self.channels.get_mut(&c.channel) {
                slot.consumers.remove(&c.tag);
                slot.sink.send(Event::Cancelled {
                    channel: c.channel.channel,
                    consumer_tag: c.tag.clone(),
                });
            }
        }
        for s in sources {
            self.maybe_auto_delete_exchange(vhost, &s);
        }
        // Account the ready messages out (the broker-wide resident count) and free their store
        // records and pages.
        let mut q = q;
        let count = q.message_count();
        for m in q.purge() {
            self.forget(&m);
        }
        if durable {
            self.save_definitions();
        }
        count
    }

    pub(super) fn maybe_auto_delete(&mut self, vhost: &str, name: &str) {
        let delete = self
            .vhosts
            .get(vhost)
            .and_then(|v| v.queues.get(name))
            .is_some_and(|q| q.is_unused_auto_delete());
        if delete {
            self.delete_queue_inner(vhost, name);
        }
    }

    /// Restores the durable definitions written by `definitions::snapshot`.
    pub(crate) fn restore_definitions(&mut self, defs: &Value) {
        let Some(vhosts) = defs.get("vhosts").and_then(Value::as_object) else {
            return;
        };
        for (name, d) in vhosts {
            self.add_vhost(name);
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
                ids.push(self.next_queue_id());
            }
            let resident = self.resident_counter();
            let vh = self.vhosts_mut().get_mut(name).expect("just added");
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
}

impl State {
    /// Whether a queue exists in a vhost.
    pub(crate) fn has_queue(&self, vhost: &str, name: &str) -> bool {
        self.vhosts
            .get(vhost)
            .is_some_and(|v| v.queues.contains_key(name))
    }

    /// Whether an exchange exists in a vhost ("" always does).
    pub(crate) fn has_exchange(&self, vhost: &str, name: &str) -> bool {
        name.is_empty()
            || self
                .vhosts
                .get(vhost)
                .is_some_and(|v| v.exchanges.contains_key(name))
    }

    /// Whether an exchange exists and is a topic exchange (topic permissions apply to it).
    pub(crate) fn exchange_is_topic(&self, vhost: &str, name: &str) -> bool {
        // The default exchange is direct; skipping the lookup also skips comparing two empty
        // names (see `stats::exchange_key` for what that costs).
        if name.is_empty() {
            return false;
        }
        self.vhosts
            .get(vhost)
            .and_then(|v| v.exchanges.get(name))
            .is_some_and(|x| x.kind == ExchangeKind::Topic)
    }

    /// How many queues a vhost has.
    pub(crate) fn queue_count(&self, vhost: &str) -> usize {
        self.vhosts.get(vhost).map_or(0, |v| v.queues.len())
    }

    /// The names of every vhost.
    pub(crate) fn vhost_names(&self) -> Vec<String> {
        self.vhosts.keys().cloned().collect()
    }

    /// Deletes a vhost and everything in it: its queues (consumers cancelled, messages and
    /// their stored copies dropped), exchanges and bindings. Its connections must be closed
    /// first (`Access::delete_vhost` does that). Returns whether it existed.
    pub(crate) fn delete_vhost(&mut self, name: &str) -> bool {
        let queues: Vec<String> = match self.vhosts.get(name) {
            Some(v) => v.queues.keys().cloned().collect(),
            None => return false,
        };
        for q in queues {
            self.delete_queue_inner(name, &q);
        }
        self.vhosts.remove(name);
        self.save_definitions();
        true
    }
}
