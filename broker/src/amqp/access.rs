//! Which AMQP operation needs which permission on which resource, as `rabbit_channel` checks
//! them (RabbitMQ 3.10): the rules and texts live in `core::access::permits`, shared with the
//! MQTT and STOMP front-ends; this is the channel's side of them. Each channel keeps its own
//! cache of granted checks ([`Permits`]), as RabbitMQ's `permission_cache`.

use super::channel::{Channel, Ctx};
use crate::core::access::permits::{Permits, Who};
use crate::core::access::{Perm, Resource};
use crate::core::error::AmqpResult;
use crate::core::exchange::Destination;
use amq_protocol::types::FieldTable;

/// The checks a channel passed (see [`Permits`]).
pub(crate) type PermCache = Permits;

impl Ctx<'_> {
    /// Who the channel's checks are made for.
    fn who(&self) -> Who<'_> {
        Who {
            access: self.access,
            state: self.state,
            user: self.user,
            vhost: self.vhost,
            client_id: None,
        }
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
        self.perms.resource(&ctx.who(), kind, name, perm)
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
        self.perms
            .topic(&ctx.who(), is_topic, exchange, routing_key, perm)
    }

    /// queue.bind / unbind and exchange.bind / unbind (`binding_action`).
    pub(super) fn permit_binding(
        &mut self,
        ctx: &Ctx<'_>,
        source: &str,
        destination: &Destination,
        routing_key: &str,
    ) -> AmqpResult<()> {
        self.perms
            .binding(&ctx.who(), source, destination, routing_key)
    }

    /// queue.declare (not passive) of a named queue, before it is declared.
    pub(super) fn permit_queue_declare(
        &mut self,
        ctx: &Ctx<'_>,
        name: &str,
        args: &FieldTable,
    ) -> AmqpResult<()> {
        self.perms.queue_declare(&ctx.who(), name, args)
    }

    /// The same checks for a server-named queue, once its `amq.gen-` name exists.
    pub(super) fn permit_server_named(
        &mut self,
        ctx: &Ctx<'_>,
        name: &str,
        args: &FieldTable,
        count: usize,
    ) -> AmqpResult<()> {
        self.perms.server_named(&ctx.who(), name, args, count)
    }

    /// exchange.declare (not passive).
    pub(super) fn permit_exchange_declare(
        &mut self,
        ctx: &Ctx<'_>,
        name: &str,
        args: &FieldTable,
    ) -> AmqpResult<()> {
        self.perms.exchange_declare(&ctx.who(), name, args)
    }
}
