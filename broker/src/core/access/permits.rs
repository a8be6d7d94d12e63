//! Which operation needs which permission on which resource, as RabbitMQ 3.10's
//! `rabbit_channel` checks them, for every front-end: AMQP channels, and MQTT and STOMP
//! sessions, which RabbitMQ's plugins run on an AMQP channel of a direct connection, so they
//! are checked by the same code.
//!
//! Declaring and deleting need configure; binding and unbinding need write on the destination
//! and read on the source (plus the topic read permission for the routing key on a topic
//! source); publishing needs write on the exchange (the default exchange is checked as
//! `amq.default`) and, on a topic exchange, the topic write permission for the routing key;
//! consuming, getting and purging need read on the queue. Passive declares need nothing.
//! Refusals are 403 ACCESS_REFUSED errors with RabbitMQ's texts (see `registry.rs`).
//!
//! Like RabbitMQ's `permission_cache`, a [`Permits`] remembers its last granted checks, so a
//! publisher pays for one regex match per exchange, not per message; any change to the access
//! data invalidates every cache (a generation number).

use super::{Access, Perm, Resource, TopicVars};
use crate::core::error::{AmqpError, AmqpResult, Code};
use crate::core::exchange::Destination;
use crate::core::state::StateLock;
use amq_protocol::types::{AMQPValue, FieldTable};

/// As RabbitMQ's `?MAX_PERMISSION_CACHE_SIZE`.
const CACHE_SIZE: usize = 12;

/// Who asks, and where: what every check needs.
#[derive(Clone, Copy)]
pub(crate) struct Who<'a> {
    /// Users, permissions and limits.
    pub(crate) access: &'a Access,
    /// The broker state (whether a queue or exchange exists, what type an exchange is).
    pub(crate) state: &'a StateLock,
    /// The authenticated user.
    pub(crate) user: &'a str,
    /// The connection's vhost.
    pub(crate) vhost: &'a str,
    /// The MQTT client id (`{client_id}` in topic permissions); None elsewhere.
    pub(crate) client_id: Option<&'a str>,
}

/// `a == b` without calling `memcmp` on two empty names (the default exchange, checked on
/// every publish): glibc's AVX-512 `memcmp` of length 0 does a masked load from Rust's
/// dangling pointer, a microcode assist that cost a tenth of the broker's time (perf).
fn same_name(a: &str, b: &str) -> bool {
    a.len() == b.len() && (a.is_empty() || a == b)
}

impl Who<'_> {
    fn vars(&self) -> TopicVars<'_> {
        TopicVars {
            user: self.user,
            vhost: self.vhost,
            client_id: self.client_id,
        }
    }
}

/// The checks a channel (or session) passed, valid while the access data's generation is
/// unchanged.
#[derive(Debug, Default)]
pub(crate) struct Permits {
    generation: u64,
    granted: Vec<(Resource, String, Perm)>,
}

fn default_exchange() -> AmqpError {
    AmqpError::new(
        Code::AccessRefused,
        "operation not permitted on the default exchange",
    )
}

fn arg_text<'a>(args: &'a FieldTable, key: &str) -> Option<&'a str> {
    match args.inner().get(key)? {
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok(),
        AMQPValue::ShortString(s) => Some(s.as_str()),
        _ => None,
    }
}

impl Permits {
    /// `check_resource_access`, through the cache.
    pub(crate) fn resource(
        &mut self,
        who: &Who<'_>,
        kind: Resource,
        name: &str,
        perm: Perm,
    ) -> AmqpResult<()> {
        let generation = who.access.generation();
        if self.generation != generation {
            self.generation = generation;
            self.granted.clear();
        }
        if self
            .granted
            .iter()
            .any(|(k, n, p)| *k == kind && *p == perm && same_name(n, name))
        {
            return Ok(());
        }
        who.access
            .read()
            .check_resource(who.user, who.vhost, kind, name, perm)?;
        if self.granted.len() == CACHE_SIZE {
            self.granted.pop();
        }
        self.granted.insert(0, (kind, name.to_string(), perm));
        Ok(())
    }

    /// The topic permission for a routing key, when `exchange` is a topic exchange.
    pub(crate) fn topic(
        &self,
        who: &Who<'_>,
        is_topic: bool,
        exchange: &str,
        routing_key: &str,
        perm: Perm,
    ) -> AmqpResult<()> {
        if !is_topic {
            return Ok(());
        }
        who.access
            .read()
            .check_topic_with(&who.vars(), exchange, routing_key, perm)
    }

    /// queue.bind / unbind and exchange.bind / unbind: write on the destination, neither end
    /// the default exchange, read on the source, and the topic read permission for the
    /// routing key when the source is a topic exchange (`binding_action`).
    pub(crate) fn binding(
        &mut self,
        who: &Who<'_>,
        source: &str,
        destination: &Destination,
        routing_key: &str,
    ) -> AmqpResult<()> {
        let (kind, dest) = match destination {
            Destination::Queue(q) => (Resource::Queue, q.as_str()),
            Destination::Exchange(x) => (Resource::Exchange, x.as_str()),
        };
        self.resource(who, kind, dest, Perm::Write)?;
        if source.is_empty() || (kind == Resource::Exchange && dest.is_empty()) {
            return Err(default_exchange());
        }
        self.resource(who, Resource::Exchange, source, Perm::Read)?;
        let is_topic = who.state.lock().exchange_is_topic(who.vhost, source);
        self.topic(who, is_topic, source, routing_key, Perm::Read)
    }

    /// queue.declare (not passive) of a named queue, before it is declared: the reserved
    /// `amq.` prefix (403), configure on the queue and, for a new queue, the vhost's queue
    /// limit and, with a dead-letter exchange, read on the queue and write on that exchange.
    pub(crate) fn queue_declare(
        &mut self,
        who: &Who<'_>,
        name: &str,
        args: &FieldTable,
    ) -> AmqpResult<()> {
        if name.starts_with("amq.") {
            return Err(AmqpError::new(
                Code::AccessRefused,
                format!("queue name '{name}' contains reserved prefix 'amq.*'"),
            ));
        }
        self.resource(who, Resource::Queue, name, Perm::Configure)?;
        let (exists, count) = {
            let state = who.state.lock();
            (
                state.has_queue(who.vhost, name),
                state.queue_count(who.vhost),
            )
        };
        if exists {
            return Ok(());
        }
        who.access.check_queue_limit(who.vhost, name, count)?;
        if let Some(dlx) = arg_text(args, "x-dead-letter-exchange") {
            self.resource(who, Resource::Queue, name, Perm::Read)?;
            self.resource(who, Resource::Exchange, dlx, Perm::Write)?;
        }
        Ok(())
    }

    /// The same checks for a server-named queue, made once its `amq.gen-` name exists (the
    /// caller deletes the queue again when they fail). `count` is the vhost's queue count
    /// before the declaration.
    pub(crate) fn server_named(
        &mut self,
        who: &Who<'_>,
        name: &str,
        args: &FieldTable,
        count: usize,
    ) -> AmqpResult<()> {
        self.resource(who, Resource::Queue, name, Perm::Configure)?;
        who.access.check_queue_limit(who.vhost, name, count)?;
        if let Some(dlx) = arg_text(args, "x-dead-letter-exchange") {
            self.resource(who, Resource::Queue, name, Perm::Read)?;
            self.resource(who, Resource::Exchange, dlx, Perm::Write)?;
        }
        Ok(())
    }

    /// exchange.declare (not passive): configure on the exchange and, for a new exchange with
    /// an alternate exchange, read on it and write on the alternate. The default exchange and
    /// reserved names are refused by the core with RabbitMQ's texts first.
    pub(crate) fn exchange_declare(
        &mut self,
        who: &Who<'_>,
        name: &str,
        args: &FieldTable,
    ) -> AmqpResult<()> {
        if name.is_empty() {
            return Err(default_exchange());
        }
        self.resource(who, Resource::Exchange, name, Perm::Configure)?;
        let exists = who.state.lock().has_exchange(who.vhost, name);
        if !exists {
            if let Some(ae) = arg_text(args, "alternate-exchange") {
                self.resource(who, Resource::Exchange, name, Perm::Read)?;
                self.resource(who, Resource::Exchange, ae, Perm::Write)?;
            }
        }
        Ok(())
    }

    /// basic.publish, in `rabbit_channel`'s order: write on the exchange, the exchange must
    /// exist and not be internal (the core's 404 and 403), then the topic write permission
    /// for the routing key on a topic exchange.
    pub(crate) fn publish(
        &mut self,
        who: &Who<'_>,
        exchange: &str,
        routing_key: &str,
    ) -> AmqpResult<()> {
        self.resource(who, Resource::Exchange, exchange, Perm::Write)?;
        let is_topic = {
            let state = who.state.lock();
            state.check_publish(who.vhost, exchange)?;
            state.exchange_is_topic(who.vhost, exchange)
        };
        self.topic(who, is_topic, exchange, routing_key, Perm::Write)
    }
}
