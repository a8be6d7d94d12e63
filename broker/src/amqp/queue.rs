//! The queue class: declare, bind, unbind, purge, delete.

use super::channel::{short, Channel, Ctx};
use crate::core::access::{Perm, Resource};
use crate::core::delivery::REPLY_TO;
use crate::core::error::{AmqpError, AmqpResult, Code};
use crate::core::exchange::Destination;
use crate::core::topology::QueueDeclare;
use amq_protocol::protocol::{queue, AMQPClass};

impl Channel {
    pub(super) fn queue_method(&mut self, ctx: &Ctx<'_>, m: queue::AMQPMethod) -> AmqpResult<()> {
        use queue::AMQPMethod as Q;
        let (nowait, ok) = match m {
            Q::Declare(d) => {
                let (name, messages, consumers) = self.declare_queue(
                    ctx,
                    QueueDeclare {
                        name: d.queue.as_str().replace(['\r', '\n'], ""),
                        passive: d.passive,
                        durable: d.durable,
                        exclusive: d.exclusive,
                        auto_delete: d.auto_delete,
                        args: d.arguments,
                    },
                )?;
                self.last_queue = Some(name.clone());
                (
                    d.nowait,
                    Q::DeclareOk(queue::DeclareOk {
                        queue: short(&name),
                        message_count: messages,
                        consumer_count: consumers,
                    }),
                )
            }
            Q::Bind(b) => {
                let q = self.queue_name(&b.queue)?;
                let key = if b.queue.as_str().is_empty() && b.routing_key.as_str().is_empty() {
                    q.clone()
                } else {
                    b.routing_key.to_string()
                };
                let dest = Destination::Queue(q);
                self.permit_binding(ctx, b.exchange.as_str(), &dest, &key)?;
                ctx.state.lock().bind(
                    ctx.vhost,
                    ctx.conn,
                    b.exchange.as_str(),
                    dest,
                    &key,
                    b.arguments,
                )?;
                (b.nowait, Q::BindOk(queue::BindOk {}))
            }
            Q::Unbind(b) => {
                let q = self.queue_name(&b.queue)?;
                let key = if b.queue.as_str().is_empty() && b.routing_key.as_str().is_empty() {
                    q.clone()
                } else {
                    b.routing_key.to_string()
                };
                let dest = Destination::Queue(q);
                self.permit_binding(ctx, b.exchange.as_str(), &dest, &key)?;
                ctx.state.lock().unbind(
                    ctx.vhost,
                    ctx.conn,
                    b.exchange.as_str(),
                    dest,
                    &key,
                    &b.arguments,
                )?;
                (false, Q::UnbindOk(queue::UnbindOk {}))
            }
            Q::Purge(p) => {
                let q = self.queue_name(&p.queue)?;
                self.permit(ctx, Resource::Queue, &q, Perm::Read)?;
                let n = ctx.state.lock().queue_purge(ctx.vhost, ctx.conn, &q)?;
                (p.nowait, Q::PurgeOk(queue::PurgeOk { message_count: n }))
            }
            Q::Delete(d) => {
                let q = self.queue_name(&d.queue)?;
                self.permit(ctx, Resource::Queue, &q, Perm::Configure)?;
                let n = ctx.state.lock().queue_delete(
                    ctx.vhost,
                    ctx.conn,
                    &q,
                    d.if_unused,
                    d.if_empty,
                )?;
                (d.nowait, Q::DeleteOk(queue::DeleteOk { message_count: n }))
            }
            _ => return Err(AmqpError::new(Code::CommandInvalid, "unimplemented method")),
        };
        self.reply(ctx, nowait, AMQPClass::Queue(ok));
        Ok(())
    }

    /// queue.declare with RabbitMQ's permission and limit checks: before the declaration for
    /// a named queue, right after it (undone when refused) for a server-named one, whose
    /// `amq.gen-` name is what the configure permission is matched against.
    fn declare_queue(&mut self, ctx: &Ctx<'_>, d: QueueDeclare) -> AmqpResult<(String, u32, u32)> {
        if d.passive || d.name.starts_with(REPLY_TO) {
            return ctx.state.lock().queue_declare(ctx.vhost, ctx.conn, d);
        }
        if !d.name.is_empty() {
            self.permit_queue_declare(ctx, &d.name, &d.args)?;
            return ctx.state.lock().queue_declare(ctx.vhost, ctx.conn, d);
        }
        let args = d.args.clone();
        let mut state = ctx.state.lock();
        let count = state.queue_count(ctx.vhost);
        let declared = state.queue_declare(ctx.vhost, ctx.conn, d)?;
        drop(state);
        if let Err(e) = self.permit_server_named(ctx, &declared.0, &args, count) {
            let _ = ctx
                .state
                .lock()
                .queue_delete(ctx.vhost, ctx.conn, &declared.0, false, false);
            return Err(e);
        }
        Ok(declared)
    }
}
