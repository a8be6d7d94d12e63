//! The exchange class: declare, delete, bind and unbind (exchange-to-exchange bindings).

use super::channel::{Channel, Ctx};
use crate::core::access::{Perm, Resource};
use crate::core::error::{AmqpError, AmqpResult, Code};
use crate::core::exchange::Destination;
use crate::core::topology::ExchangeDeclare;
use amq_protocol::protocol::{exchange, AMQPClass};

impl Channel {
    pub(super) fn exchange_method(
        &mut self,
        ctx: &Ctx<'_>,
        m: exchange::AMQPMethod,
    ) -> AmqpResult<()> {
        use exchange::AMQPMethod as X;
        self.permit_exchange_method(ctx, &m)?;
        let mut state = ctx.state.lock();
        let (nowait, ok) = match m {
            X::Declare(d) => {
                // Lets the tests show that a panic in one connection's handler leaves every
                // other connection working.
                #[cfg(test)]
                if d.exchange.as_str() == super::tests::PANIC_EXCHANGE {
                    panic!("test-induced panic while holding the state lock");
                }
                state.exchange_declare(
                    ctx.vhost,
                    ExchangeDeclare {
                        name: d.exchange.to_string(),
                        kind: d.kind.to_string(),
                        passive: d.passive,
                        durable: d.durable,
                        auto_delete: d.auto_delete,
                        internal: d.internal,
                        args: d.arguments,
                    },
                )?;
                (d.nowait, X::DeclareOk(exchange::DeclareOk {}))
            }
            X::Delete(d) => {
                state.exchange_delete(ctx.vhost, d.exchange.as_str(), d.if_unused)?;
                (d.nowait, X::DeleteOk(exchange::DeleteOk {}))
            }
            X::Bind(b) => {
                state.bind(
                    ctx.vhost,
                    ctx.conn,
                    b.source.as_str(),
                    Destination::Exchange(b.destination.to_string()),
                    b.routing_key.as_str(),
                    b.arguments,
                )?;
                (b.nowait, X::BindOk(exchange::BindOk {}))
            }
            X::Unbind(b) => {
                state.unbind(
                    ctx.vhost,
                    ctx.conn,
                    b.source.as_str(),
                    Destination::Exchange(b.destination.to_string()),
                    b.routing_key.as_str(),
                    &b.arguments,
                )?;
                (b.nowait, X::UnbindOk(exchange::UnbindOk {}))
            }
            _ => return Err(AmqpError::new(Code::CommandInvalid, "unimplemented method")),
        };
        drop(state);
        self.reply(ctx, nowait, AMQPClass::Exchange(ok));
        Ok(())
    }

    /// The permissions an exchange method needs (see `access.rs`).
    fn permit_exchange_method(
        &mut self,
        ctx: &Ctx<'_>,
        m: &exchange::AMQPMethod,
    ) -> AmqpResult<()> {
        use exchange::AMQPMethod as X;
        match m {
            X::Declare(d) if !d.passive => {
                self.permit_exchange_declare(ctx, d.exchange.as_str(), &d.arguments)
            }
            // The default exchange and amq.* ones are refused by the core first, as RabbitMQ
            // checks those before the permission.
            X::Delete(d)
                if !d.exchange.as_str().is_empty() && !d.exchange.as_str().starts_with("amq.") =>
            {
                self.permit(
                    ctx,
                    Resource::Exchange,
                    d.exchange.as_str(),
                    Perm::Configure,
                )
            }
            X::Bind(b) => self.permit_binding(
                ctx,
                b.source.as_str(),
                &Destination::Exchange(b.destination.to_string()),
                b.routing_key.as_str(),
            ),
            X::Unbind(b) => self.permit_binding(
                ctx,
                b.source.as_str(),
                &Destination::Exchange(b.destination.to_string()),
                b.routing_key.as_str(),
            ),
            _ => Ok(()),
        }
    }
}
