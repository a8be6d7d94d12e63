//! Which AMQP operation needs which permission on which resource, as `rabbit_channel` checks
//! them (RabbitMQ 3.10): declare and delete need configure; binding needs write on the
//! destination and read on the source (plus the topic read permission on a topic source);
//! publishing needs write on the exchange (the default exchange is checked as `amq.default`)
//! and, on a topic exchange, the topic write permission for the routing key; consume, get and
//! purge need read on the queue. Passive declares need nothing. Refusals are 403
//! ACCESS_REFUSED channel errors with RabbitMQ's texts (see `core::access::registry`).
//!
//! Like RabbitMQ's `permission_cache`, each channel remembers its last granted checks, so a
//! publisher pays for one regex match per exchange, not per message; any change to the access
//! data invalidates every cache (a generation number).

use super::channel::{Channel, Ctx};
use crate::core::access::{Perm, Resource};
use crate::core::error::{AmqpError, AmqpResult, Code};
use crate::core::exchange::Destination;
use amq_protocol::types::{AMQPValue, FieldTable};

/// As RabbitMQ's `?MAX_PERMISSION_CACHE_SIZE`.
const CACHE_SIZE: usize = 12;

/// The checks a channel passed, valid while the access data's generation is unchanged.
#[derive(Debug, Default)]
pub(crate) struct PermCache {
    generation: u64,
    granted: Vec<(Resource, String, Perm)>,
}

/// `a == b` without calling `memcmp` on two empty names (the default exchange, checked on
/// every publish): glibc's AVX-512 `memcmp` of length 0 does a masked load from Rust's
/// dangling pointer, a microcode assist that cost a tenth of the broker's time (perf).
fn same_name(a: &str, b: &str) -> bool {
    a.len() == b.len() && (a.is_empty() || a == b)
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

impl Channel {
    /// `check_resource_access`, through the channel's cache.
    pub(super) fn permit(
        &mut self,
        ctx: &Ctx<'_>,
        kind: Resource,
        name: &str,
        perm: Perm,
    ) -> AmqpResult<()> {
        let generation = ctx.access.generation();
        let cache = &mut self.perms;
        if cache.generation != generation {
            cache.generation = generation;
            cache.granted.clear();
        }
        if cache
            .granted
            .iter()
            .any(|(k, n, p)| *k == kind && *p == perm && same_name(n, name))
        {
            return Ok(());
        }
        ctx.access
            .read()
            .check_resource(ctx.user, ctx.vhost, kind, name, perm)?;
        if cache.granted.len() == CACHE_SIZE {
            cache.granted.pop();
        }
        cache.granted.insert(0, (kind, name.to_string(), perm));
        Ok(())
    }

    /// The topic permission for a routing key, when `exchange` is a topic exchange.
    pub(super) fn permit_topic(
        &self,
        ctx: &Ctx<'_>,
        is_topic: bool,
        exchange: &str,
        routing_key: &str,
        perm: Perm,
    ) -> AmqpResult<()> {
        if !is_topic {
            return Ok(());
        }
        ctx.access
            .read()
            .check_topic(ctx.user, ctx.vhost, exchange, routing_key, perm)
    }

    /// queue.bind / unbind and exchange.bind / unbind: write on the destination, neither end
    /// the default exchange, read on the source, and the topic read permission for the
    /// routing key when the source is a topic exchange (`binding_action_with_checks`).
    pub(super) fn permit_binding(
        &mut self,
        ctx: &Ctx<'_>,
        source: &str,
        destination: &Destination,
        routing_key: &str,
    ) -> AmqpResult<()> {
        let (kind, dest) = match destination {
            Destination::Queue(q) => (Resource::Queue, q.as_str()),
            Destination::Exchange(x) => (Resource::Exchange, x.as_str()),
        };
        self.permit(ctx, kind, dest, Perm::Write)?;
        if source.is_empty() || (kind == Resource::Exchange && dest.is_empty()) {
            return Err(default_exchange());
        }
        self.permit(ctx, Resource::Exchange, source, Perm::Read)?;
        let is_topic = ctx.state.lock().exchange_is_topic(ctx.vhost, source);
        self.permit_topic(ctx, is_topic, source, routing_key, Perm::Read)
    }

    /// queue.declare (not passive) of a named queue, before it is declared: the reserved
    /// `amq.` prefix (403), configure on the queue and, for a new queue, the vhost's queue
    /// limit and, with a dead-letter exchange, read on the queue and write on that exchange.
    pub(super) fn permit_queue_declare(
        &mut self,
        ctx: &Ctx<'_>,
        name: &str,
        args: &FieldTable,
    ) -> AmqpResult<()> {
        if name.starts_with("amq.") {
            return Err(AmqpError::new(
                Code::AccessRefused,
                format!("queue name '{name}' contains reserved prefix 'amq.*'"),
            ));
        }
        self.permit(ctx, Resource::Queue, name, Perm::Configure)?;
        let (exists, count) = {
            let state = ctx.state.lock();
            (
                state.has_queue(ctx.vhost, name),
                state.queue_count(ctx.vhost),
            )
        };
        if exists {
            return Ok(());
        }
        ctx.access.check_queue_limit(ctx.vhost, name, count)?;
        if let Some(dlx) = arg_text(args, "x-dead-letter-exchange") {
            self.permit(ctx, Resource::Queue, name, Perm::Read)?;
            self.permit(ctx, Resource::Exchange, dlx, Perm::Write)?;
        }
        Ok(())
    }

    /// The same checks for a server-named queue, made once its `amq.gen-` name exists (the
    /// caller deletes the queue again when they fail). `count` is the vhost's queue count
    /// before the declaration.
    pub(super) fn permit_server_named(
        &mut self,
        ctx: &Ctx<'_>,
        name: &str,
        args: &FieldTable,
        count: usize,
    ) -> AmqpResult<()> {
        self.permit(ctx, Resource::Queue, name, Perm::Configure)?;
        ctx.access.check_queue_limit(ctx.vhost, name, count)?;
        if let Some(dlx) = arg_text(args, "x-dead-letter-exchange") {
            self.permit(ctx, Resource::Queue, name, Perm::Read)?;
            self.permit(ctx, Resource::Exchange, dlx, Perm::Write)?;
        }
        Ok(())
    }

    /// exchange.declare (not passive): configure on the exchange and, for a new exchange with
    /// an alternate exchange, read on it and write on the alternate. The default exchange and
    /// reserved names are refused by the core with RabbitMQ's texts first.
    pub(super) fn permit_exchange_declare(
        &mut self,
        ctx: &Ctx<'_>,
        name: &str,
        args: &FieldTable,
    ) -> AmqpResult<()> {
        if name.is_empty() {
            return Err(default_exchange());
        }
        self.permit(ctx, Resource::Exchange, name, Perm::Configure)?;
        let exists = ctx.state.lock().has_exchange(ctx.vhost, name);
        if !exists {
            if let Some(ae) = arg_text(args, "alternate-exchange") {
                self.permit(ctx, Resource::Exchange, name, Perm::Read)?;
                self.permit(ctx, Resource::Exchange, ae, Perm::Write)?;
            }
        }
        Ok(())
    }
}
