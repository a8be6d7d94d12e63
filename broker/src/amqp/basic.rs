//! The basic class: publish (its content is assembled in `publish.rs`), qos, consume,
//! cancel, get, ack / nack / reject, recover.

use super::channel::{short, Channel, Ctx, Pending, TxSettle};
use crate::core::access::{Perm, Resource};
use crate::core::delivery::{ConsumeOptions, REPLY_TO};
use crate::core::error::{AmqpError, AmqpResult, Code};
use crate::core::settle::SettleOp;
use amq_protocol::protocol::basic::{self, AMQPMethod as B};
use amq_protocol::protocol::AMQPClass;

impl Channel {
    /// Handles a method of the basic class.
    pub(super) fn basic_method(
        &mut self,
        ctx: &Ctx<'_>,
        method: B,
        payload: &[u8],
    ) -> AmqpResult<()> {
        let key = self.key(ctx);
        match method {
            B::Publish(p) => {
                if p.immediate {
                    return Err(AmqpError::new(Code::NotImplemented, "immediate=true"));
                }
                self.pending = Some(Pending {
                    publish: p,
                    header: None,
                    body_size: 0,
                    parts: Vec::new(),
                    received: 0,
                });
                Ok(())
            }
            B::Qos(q) => {
                // amq-protocol drops prefetch_size; read it from the payload (after class and
                // method ids) to refuse a non-zero value like RabbitMQ.
                let size = payload
                    .get(4..8)
                    .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                    .unwrap_or(0);
                if size != 0 {
                    return Err(AmqpError::new(
                        Code::NotImplemented,
                        format!("prefetch_size!=0 ({size})"),
                    ));
                }
                ctx.state.lock().qos(key, q.prefetch_count, q.global);
                ctx.outbox
                    .method(self.id, AMQPClass::Basic(B::QosOk(basic::QosOk {})));
                Ok(())
            }
            B::Consume(c) => self.consume(ctx, c),
            B::Cancel(c) => {
                ctx.state.lock().cancel(key, c.consumer_tag.as_str());
                self.reply(
                    ctx,
                    c.nowait,
                    AMQPClass::Basic(B::CancelOk(basic::CancelOk {
                        consumer_tag: c.consumer_tag,
                    })),
                );
                Ok(())
            }
            B::CancelOk(_) => Ok(()),
            B::Get(g) => {
                let queue = self.queue_name(&g.queue)?;
                self.permit(ctx, Resource::Queue, &queue, Perm::Read)?;
                let sent = ctx.state.lock().get(key, &queue, g.no_ack)?;
                if !sent {
                    ctx.outbox
                        .method(self.id, AMQPClass::Basic(B::GetEmpty(basic::GetEmpty {})));
                }
                Ok(())
            }
            B::Ack(a) => self.settle(ctx, a.delivery_tag, a.multiple, None),
            B::Nack(n) => self.settle(ctx, n.delivery_tag, n.multiple, Some(n.requeue)),
            B::Reject(r) => self.settle(ctx, r.delivery_tag, false, Some(r.requeue)),
            B::Recover(r) => {
                if !r.requeue {
                    return Err(AmqpError::new(Code::NotImplemented, "requeue=false"));
                }
                // recover-ok first: clients expect the redeliveries after it (as RabbitMQ's
                // queues redeliver asynchronously after the channel replied).
                ctx.outbox
                    .method(self.id, AMQPClass::Basic(B::RecoverOk(basic::RecoverOk {})));
                ctx.state.lock().recover(key);
                Ok(())
            }
            B::RecoverAsync(r) => {
                if !r.requeue {
                    return Err(AmqpError::new(Code::NotImplemented, "requeue=false"));
                }
                ctx.state.lock().recover(key);
                Ok(())
            }
            _ => Err(AmqpError::new(Code::CommandInvalid, "unimplemented method")),
        }
    }

    /// basic.consume: registers the consumer, answers consume-ok, then starts delivering.
    fn consume(&mut self, ctx: &Ctx<'_>, c: basic::Consume) -> AmqpResult<()> {
        let key = self.key(ctx);
        let queue = if c.queue.as_str() == REPLY_TO {
            REPLY_TO.to_string()
        } else {
            let q = self.queue_name(&c.queue)?;
            self.permit(ctx, Resource::Queue, &q, Perm::Read)?;
            q
        };
        let mut state = ctx.state.lock();
        let tag = state.consume(
            key,
            &queue,
            ConsumeOptions {
                tag: c.consumer_tag.to_string(),
                no_ack: c.no_ack,
                exclusive: c.exclusive,
                args: c.arguments,
            },
        )?;
        // consume-ok goes out ahead of the first delivery: both leave through the
        // same outbox, and the lock is still held.
        if !c.nowait {
            ctx.outbox.method(
                self.id,
                AMQPClass::Basic(B::ConsumeOk(basic::ConsumeOk {
                    consumer_tag: short(&tag),
                })),
            );
        }
        state.pump(ctx.vhost, &queue);
        Ok(())
    }

    fn settle(
        &mut self,
        ctx: &Ctx<'_>,
        tag: u64,
        multiple: bool,
        reject_requeue: Option<bool>,
    ) -> AmqpResult<()> {
        let key = self.key(ctx);
        let mut state = ctx.state.lock();
        if let Some(tx) = self.tx.as_mut() {
            let taken = state.take_unacked(key, tag, multiple)?;
            let op = match reject_requeue {
                None => SettleOp::Ack,
                Some(true) => SettleOp::Requeue,
                Some(false) => SettleOp::Discard,
            };
            tx.settles.push(TxSettle { taken, op });
            return Ok(());
        }
        match reject_requeue {
            None => state.ack(key, tag, multiple),
            Some(requeue) => state.reject(key, tag, multiple, requeue),
        }
    }
}
