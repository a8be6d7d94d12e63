//! The queue class: declare, bind, unbind, purge, delete.

use super::channel::{short, Channel, Ctx};
use crate::core::error::{AmqpError, AmqpResult, Code};
use crate::core::exchange::Destination;
use crate::core::topology::QueueDeclare;
use amq_protocol::protocol::{queue, AMQPClass};

impl Channel {
    pub(super) fn queue_method(&mut self, ctx: &Ctx<'_>, m: queue::AMQPMethod) -> AmqpResult<()> {
        use queue::AMQPMethod as Q;
        let (nowait, ok) = match m {
            Q::Declare(d) => {
                let (name, messages, consumers) = ctx.state.lock().queue_declare(
                    ctx.vhost,
                    ctx.conn,
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
                ctx.state.lock().bind(
                    ctx.vhost,
                    ctx.conn,
                    b.exchange.as_str(),
                    Destination::Queue(q),
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
                ctx.state.lock().unbind(
                    ctx.vhost,
                    ctx.conn,
                    b.exchange.as_str(),
                    Destination::Queue(q),
                    &key,
                    &b.arguments,
                )?;
                (false, Q::UnbindOk(queue::UnbindOk {}))
            }
            Q::Purge(p) => {
                let q = self.queue_name(&p.queue)?;
                let n = ctx.state.lock().queue_purge(ctx.vhost, ctx.conn, &q)?;
                (p.nowait, Q::PurgeOk(queue::PurgeOk { message_count: n }))
            }
            Q::Delete(d) => {
                let q = self.queue_name(&d.queue)?;
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
}
