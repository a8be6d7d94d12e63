//! Transactions (the tx class) and publisher confirms (confirm.select): the two ways a
//! publisher learns that the broker took responsibility for its messages.

use super::channel::{Channel, Ctx, Tx};
use crate::core::error::{AmqpError, AmqpResult, Code};
use amq_protocol::protocol::{confirm, tx, AMQPClass};

impl Channel {
    /// confirm.select: publisher confirms for the rest of the channel's life.
    pub(super) fn confirm_select(&mut self, ctx: &Ctx<'_>, s: confirm::Select) -> AmqpResult<()> {
        if self.tx.is_some() {
            return Err(AmqpError::precondition(
                "cannot switch from tx to confirm mode",
            ));
        }
        self.confirm = true;
        self.reply(
            ctx,
            s.nowait,
            AMQPClass::Confirm(confirm::AMQPMethod::SelectOk(confirm::SelectOk {})),
        );
        Ok(())
    }

    pub(super) fn tx_method(&mut self, ctx: &Ctx<'_>, m: tx::AMQPMethod) -> AmqpResult<()> {
        let key = self.key(ctx);
        let ok = match m {
            tx::AMQPMethod::Select(_) => {
                if self.confirm {
                    return Err(AmqpError::precondition(
                        "cannot switch from confirm to tx mode",
                    ));
                }
                if self.tx.is_none() {
                    self.tx = Some(Tx::default());
                }
                tx::AMQPMethod::SelectOk(tx::SelectOk {})
            }
            tx::AMQPMethod::Commit(_) => {
                let Some(t) = self.tx.replace(Tx::default()) else {
                    return Err(AmqpError::precondition("channel is not transactional"));
                };
                let mut returns = Vec::new();
                let mut persisted = false;
                let store = {
                    let mut state = ctx.state.lock();
                    for (msg, mandatory) in t.publishes {
                        let routed = state.publish(ctx.vhost, msg.clone());
                        persisted |= routed.persisted;
                        if routed.is_unroutable() && mandatory {
                            state.note_returned(ctx.vhost, &msg);
                            returns.push(msg);
                        }
                    }
                    for s in t.settles {
                        state.settle_taken(key, s.taken, s.op);
                    }
                    state.store().cloned()
                };
                for msg in returns {
                    self.send_return(ctx, msg);
                }
                if let (true, Some(store)) = (persisted, store) {
                    // commit-ok only once the committed messages are on disk.
                    let outbox = ctx.outbox.clone();
                    let id = self.id;
                    store.after_sync(Box::new(move || {
                        outbox.method(id, AMQPClass::Tx(tx::AMQPMethod::CommitOk(tx::CommitOk {})));
                    }));
                    return Ok(());
                }
                tx::AMQPMethod::CommitOk(tx::CommitOk {})
            }
            tx::AMQPMethod::Rollback(_) => {
                let Some(t) = self.tx.replace(Tx::default()) else {
                    return Err(AmqpError::precondition("channel is not transactional"));
                };
                let mut state = ctx.state.lock();
                for s in t.settles {
                    state.restore_unacked(key, s.taken);
                }
                tx::AMQPMethod::RollbackOk(tx::RollbackOk {})
            }
            _ => return Err(AmqpError::new(Code::CommandInvalid, "unimplemented method")),
        };
        ctx.outbox.method(self.id, AMQPClass::Tx(ok));
        Ok(())
    }
}
