//! One AMQP channel: the method state machine for everything but channel open/close (which the
//! connection handles), content assembly for basic.publish, publisher confirms and transactions.
//!
//! A channel lives inside its connection's task. Methods that touch exchanges, queues or
//! deliveries take the broker state lock for the duration of one method.

use super::access::PermCache;
use super::frame::{self, RawFrame};
use super::outbox::Outbox;
use crate::core::access::Access;
use crate::core::error::{AmqpError, AmqpResult, Code};
use crate::core::message::{ChannelKey, ConnId, Message};
use crate::core::session::Unacked;
use crate::core::settle::SettleOp;
use crate::core::state::{State, StateLock};
use amq_protocol::protocol::{channel, confirm, AMQPClass};
use amq_protocol::types::ShortString;
use bytes::Bytes;
use std::sync::Arc;

/// What a channel needs from its connection.
pub(crate) struct Ctx<'a> {
    /// The broker state.
    pub(crate) state: &'a StateLock,
    /// The connection.
    pub(crate) conn: ConnId,
    /// The connection's outbox.
    pub(crate) outbox: &'a Outbox,
    /// The connection's vhost.
    pub(crate) vhost: &'a str,
    /// The authenticated user.
    pub(crate) user: &'a str,
    /// Users, permissions and limits.
    pub(crate) access: &'a Access,
    /// Largest accepted message body.
    pub(crate) max_message_size: u64,
}

/// A message being received: the publish method, then its header, then its body frames.
pub(super) struct Pending {
    pub(super) publish: amq_protocol::protocol::basic::Publish,
    pub(super) header: Option<Bytes>,
    pub(super) body_size: u64,
    pub(super) parts: Vec<Bytes>,
    pub(super) received: u64,
}

/// A settled-in-transaction ack or reject, applied on commit.
pub(super) struct TxSettle {
    pub(super) taken: Vec<(u64, Unacked)>,
    pub(super) op: SettleOp,
}

#[derive(Default)]
pub(super) struct Tx {
    pub(super) publishes: Vec<(Arc<Message>, bool)>,
    pub(super) settles: Vec<TxSettle>,
}

/// Per-channel protocol state.
pub(crate) struct Channel {
    pub(super) id: u16,
    /// We sent channel.close and wait for close-ok; everything else is ignored.
    pub(crate) closing: bool,
    pub(super) pending: Option<Pending>,
    pub(super) confirm: bool,
    pub(super) next_publish_seq: u64,
    pub(super) tx: Option<Tx>,
    pub(super) last_queue: Option<String>,
    /// Permission checks granted recently.
    pub(super) perms: PermCache,
}

/// A reply text as RabbitMQ sends it: over 255 bytes, cut to 252 and ended with "...".
pub(crate) fn reply_text(s: &str) -> ShortString {
    if s.len() <= 255 {
        return short(s);
    }
    let mut end = 252;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    short(&format!("{}...", &s[..end]))
}

/// Closes a channel in the broker's state: its open transaction is released first, so the
/// acks it never committed are requeued with the rest of its unacked messages.
pub(crate) fn close_in_state(ch: &mut Channel, state: &mut State, key: ChannelKey) {
    release_tx(ch, state, key);
    state.close_channel(key);
}

/// Releases what a closing channel holds in an open transaction: acks that were never
/// committed are undone, so the messages count as unacked again (and get requeued).
pub(crate) fn release_tx(ch: &mut Channel, state: &mut State, key: ChannelKey) {
    if let Some(tx) = ch.tx.take() {
        for s in tx.settles {
            state.restore_unacked(key, s.taken);
        }
    }
}

/// Encodes a short string, cutting it at 255 bytes (on a char boundary) rather than panicking.
pub(crate) fn short(s: &str) -> ShortString {
    let mut end = s.len().min(255);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    ShortString::try_new(&s[..end]).unwrap_or_default()
}

pub(super) fn unexpected(text: String, class_id: u16, method_id: u16) -> AmqpError {
    AmqpError::new(Code::UnexpectedFrame, text).on(class_id, method_id)
}

impl Channel {
    /// A newly opened channel.
    pub(crate) fn new(id: u16) -> Self {
        Channel {
            id,
            closing: false,
            pending: None,
            confirm: false,
            next_publish_seq: 1,
            tx: None,
            last_queue: None,
            perms: PermCache::default(),
        }
    }

    pub(super) fn key(&self, ctx: &Ctx<'_>) -> ChannelKey {
        ChannelKey {
            conn: ctx.conn,
            channel: self.id,
        }
    }

    /// Handles a frame for this channel (other than channel open/close, handled by the
    /// connection).
    pub(crate) fn on_frame(
        &mut self,
        ctx: &Ctx<'_>,
        raw: RawFrame,
        method: Option<AMQPClass>,
    ) -> AmqpResult<()> {
        match raw.kind {
            frame::FRAME_METHOD => {
                if let Some(p) = &self.pending {
                    let what = if p.header.is_none() {
                        "expected content header for class 60, got non content header frame instead"
                    } else {
                        "expected content body, got non content body frame instead"
                    };
                    return Err(unexpected(what.into(), 60, 40));
                }
                let method = method.expect("method frames are parsed by the connection");
                self.on_method(ctx, method, &raw.payload)
            }
            frame::FRAME_HEADER => self.on_header(ctx, raw.payload),
            frame::FRAME_BODY => self.on_body(ctx, raw.payload),
            _ => Err(unexpected(
                "expected method frame, got non method frame instead".into(),
                0,
                0,
            )),
        }
    }

    pub(super) fn reply(&self, ctx: &Ctx<'_>, nowait: bool, method: AMQPClass) {
        if !nowait {
            ctx.outbox.method(self.id, method);
        }
    }

    pub(super) fn queue_name(&self, name: &ShortString) -> AmqpResult<String> {
        if name.as_str().is_empty() {
            self.last_queue
                .clone()
                .ok_or_else(|| AmqpError::new(Code::NotFound, "no previously declared queue"))
        } else {
            Ok(name.to_string())
        }
    }

    fn on_method(&mut self, ctx: &Ctx<'_>, method: AMQPClass, payload: &[u8]) -> AmqpResult<()> {
        let ids = (method.get_amqp_class_id(), method.get_amqp_method_id());
        self.dispatch(ctx, method, payload)
            .map_err(|e| e.on(ids.0, ids.1))
    }

    fn dispatch(&mut self, ctx: &Ctx<'_>, method: AMQPClass, payload: &[u8]) -> AmqpResult<()> {
        let key = self.key(ctx);
        match method {
            AMQPClass::Channel(channel::AMQPMethod::Open(_)) => Err(AmqpError::new(
                Code::ChannelError,
                "second 'channel.open' seen",
            )),
            AMQPClass::Channel(channel::AMQPMethod::Flow(f)) => {
                if !f.active {
                    // RabbitMQ 3.x does not implement stopping deliveries with channel.flow.
                    return Err(AmqpError::new(Code::NotImplemented, "active=false"));
                }
                ctx.state.lock().flow(key, f.active);
                ctx.outbox.method(
                    self.id,
                    AMQPClass::Channel(channel::AMQPMethod::FlowOk(channel::FlowOk {
                        active: f.active,
                    })),
                );
                Ok(())
            }
            AMQPClass::Channel(channel::AMQPMethod::FlowOk(_)) => Ok(()),
            AMQPClass::Access(amq_protocol::protocol::access::AMQPMethod::Request(_)) => {
                ctx.outbox.method(
                    self.id,
                    AMQPClass::Access(amq_protocol::protocol::access::AMQPMethod::RequestOk(
                        amq_protocol::protocol::access::RequestOk {},
                    )),
                );
                Ok(())
            }
            AMQPClass::Exchange(m) => self.exchange_method(ctx, m),
            AMQPClass::Queue(m) => self.queue_method(ctx, m),
            AMQPClass::Basic(m) => self.basic_method(ctx, m, payload),
            AMQPClass::Confirm(confirm::AMQPMethod::Select(s)) => self.confirm_select(ctx, s),
            AMQPClass::Tx(m) => self.tx_method(ctx, m),
            _ => Err(AmqpError::new(Code::CommandInvalid, "unimplemented method")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_strings_never_panic() {
        let long = "é".repeat(200);
        assert!(short(&long).as_str().len() <= 255);
    }
}
