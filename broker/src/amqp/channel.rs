//! One AMQP channel: the method state machine for everything but channel open/close (which the
//! connection handles), content assembly for basic.publish, publisher confirms and transactions.
//!
//! A channel lives inside its connection's task. Methods that touch exchanges, queues or
//! deliveries take the broker state lock for the duration of one method.

use super::frame::{self, RawFrame};
use super::outbox::{Out, Outbox};
use crate::core::delivery::{ConsumeOptions, REPLY_TO};
use crate::core::error::{AmqpError, AmqpResult, Code};
use crate::core::exchange::Destination;
use crate::core::fieldtable::value_string;
use crate::core::message::{parse_expiration, ChannelKey, ConnId, Message};
use crate::core::props::{encode_header_payload, with_reply_to, PropsView};
use crate::core::session::Unacked;
use crate::core::settle::SettleOp;
use crate::core::state::{State, StateLock};
use crate::core::topology::{ExchangeDeclare, QueueDeclare};
use amq_protocol::protocol::basic;
use amq_protocol::protocol::{channel, confirm, exchange, queue, tx, AMQPClass};
use amq_protocol::types::{AMQPValue, ShortString};
use bytes::{Bytes, BytesMut};
use std::sync::Arc;

/// What a channel needs from its connection.
pub(crate) struct Ctx<'a> {
    /// The broker state.
    pub state: &'a StateLock,
    /// The connection.
    pub conn: ConnId,
    /// The connection's outbox.
    pub outbox: &'a Outbox,
    /// The connection's vhost.
    pub vhost: &'a str,
    /// The authenticated user.
    pub user: &'a str,
    /// Largest accepted message body.
    pub max_message_size: u64,
}

/// A message being received: the publish method, then its header, then its body frames.
struct Pending {
    publish: basic::Publish,
    header: Option<Bytes>,
    body_size: u64,
    parts: Vec<Bytes>,
    received: u64,
}

/// A settled-in-transaction ack or reject, applied on commit.
struct TxSettle {
    taken: Vec<(u64, Unacked)>,
    op: SettleOp,
}

#[derive(Default)]
struct Tx {
    publishes: Vec<(Arc<Message>, bool)>,
    settles: Vec<TxSettle>,
}

/// Per-channel protocol state.
pub(crate) struct Channel {
    id: u16,
    /// We sent channel.close and wait for close-ok; everything else is ignored.
    pub closing: bool,
    pending: Option<Pending>,
    confirm: bool,
    next_publish_seq: u64,
    tx: Option<Tx>,
    last_queue: Option<String>,
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

fn unexpected(text: String, class_id: u16, method_id: u16) -> AmqpError {
    AmqpError::new(Code::UnexpectedFrame, text).on(class_id, method_id)
}

impl Channel {
    /// A newly opened channel.
    pub fn new(id: u16) -> Self {
        Channel {
            id,
            closing: false,
            pending: None,
            confirm: false,
            next_publish_seq: 1,
            tx: None,
            last_queue: None,
        }
    }

    fn key(&self, ctx: &Ctx<'_>) -> ChannelKey {
        ChannelKey {
            conn: ctx.conn,
            channel: self.id,
        }
    }

    /// Handles a frame for this channel (other than channel open/close, handled by the
    /// connection).
    pub fn on_frame(
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

    fn on_header(&mut self, ctx: &Ctx<'_>, payload: Bytes) -> AmqpResult<()> {
        let Some(p) = self.pending.as_mut().filter(|p| p.header.is_none()) else {
            return Err(if self.pending.is_some() {
                unexpected(
                    "expected content body, got non content body frame instead".into(),
                    60,
                    40,
                )
            } else {
                unexpected(
                    "expected method frame, got non method frame instead".into(),
                    0,
                    0,
                )
            });
        };
        let (Some(class_id), Some(body_size)) = (
            payload.get(0..2).map(|b| u16::from_be_bytes([b[0], b[1]])),
            frame::header_body_size(&payload),
        ) else {
            let (which, snip) = frame::snippet(&payload);
            return Err(AmqpError::new(
                Code::FrameError,
                format!("type 2, {which} octets = {snip}: cannot decode content header"),
            )
            .on(60, 40));
        };
        if class_id != 60 {
            return Err(unexpected(
                format!(
                    "expected content header for class 60, got one for class {class_id} instead"
                ),
                60,
                40,
            ));
        }
        if body_size > ctx.max_message_size.max(1 << 29) {
            return Err(AmqpError::new(
                Code::FrameError,
                format!(
                    "content body size {} exceeds maximum allowed size {}",
                    body_size,
                    ctx.max_message_size.max(1 << 29)
                ),
            )
            .on(60, 40));
        }
        p.body_size = body_size;
        p.header = Some(payload);
        if p.body_size == 0 {
            return self.complete(ctx);
        }
        Ok(())
    }

    fn on_body(&mut self, ctx: &Ctx<'_>, payload: Bytes) -> AmqpResult<()> {
        let Some(p) = self.pending.as_mut().filter(|p| p.header.is_some()) else {
            return Err(if self.pending.is_some() {
                unexpected(
                    "expected content header for class 60, got non content header frame instead"
                        .into(),
                    60,
                    40,
                )
            } else {
                unexpected(
                    "expected method frame, got non method frame instead".into(),
                    0,
                    0,
                )
            });
        };
        // Like RabbitMQ 3.x: a body longer than announced is swallowed and the channel keeps
        // waiting for content (the next method frame is then an UNEXPECTED_FRAME error).
        let overflow = p.received + payload.len() as u64 > p.body_size;
        p.received += payload.len() as u64;
        if overflow {
            p.parts.clear();
            return Ok(());
        }
        if !payload.is_empty() {
            p.parts.push(payload);
        }
        if p.received == p.body_size {
            return self.complete(ctx);
        }
        Ok(())
    }

    /// A whole message arrived: validate, then publish (or buffer it in the transaction).
    fn complete(&mut self, ctx: &Ctx<'_>) -> AmqpResult<()> {
        let p = self.pending.take().expect("pending publish");
        let mut header = p.header.expect("header received");
        let Some(mut view) = PropsView::parse(&header) else {
            let (which, snip) = frame::snippet(&header);
            return Err(AmqpError::new(
                Code::FrameError,
                format!("type 2, {which} octets = {snip}: cannot decode content header"),
            )
            .on(60, 40));
        };
        let headers = match view.headers {
            None => None,
            Some(_) => Some(view.headers_table(&header).ok_or_else(|| {
                AmqpError::new(Code::SyntaxError, "cannot decode headers table").on(60, 40)
            })?),
        };
        let body = match p.parts.len() {
            0 => Bytes::new(),
            1 => p.parts.into_iter().next().expect("one part"),
            _ => {
                let mut b = BytesMut::with_capacity(p.body_size as usize);
                for part in p.parts {
                    b.extend_from_slice(&part);
                }
                b.freeze()
            }
        };
        let fail = |e: AmqpError| e.on(60, 40);
        if body.len() as u64 > ctx.max_message_size {
            return Err(fail(AmqpError::precondition(format!(
                "message size {} is larger than configured max size {}",
                body.len(),
                ctx.max_message_size
            ))));
        }
        let exchange = p.publish.exchange.as_str();
        let mut state = ctx.state.lock();
        state.check_publish(ctx.vhost, exchange).map_err(fail)?;
        if PropsView::text(&header, &view.reply_to) == Some(REPLY_TO) {
            let Some(name) = state.reply_name(self.key(ctx)) else {
                return Err(fail(AmqpError::precondition(
                    "fast reply consumer does not exist",
                )));
            };
            header = Bytes::from(with_reply_to(&header, &view, name));
            // Offsets of every later property moved: read the rewritten header afresh.
            view = PropsView::parse(&header).expect("rewritten header is well-formed");
        }
        if let Some(exp) = PropsView::text(&header, &view.expiration) {
            if let Err(reason) = expiration_error(exp) {
                return Err(fail(AmqpError::precondition(format!(
                    "invalid expiration '{exp}': {reason}"
                ))));
            }
        }
        if let Some(uid) = PropsView::text(&header, &view.user_id) {
            if uid != ctx.user {
                return Err(fail(AmqpError::precondition(format!(
                    "user_id property set to '{uid}' but authenticated user was '{}'",
                    ctx.user
                ))));
            }
        }
        // Sender-selected distribution: CC and BCC list more routing keys; BCC is removed
        // before delivery.
        let mut cc = Vec::new();
        if let Some(h) = &headers {
            for key in ["CC", "BCC"] {
                if let Some(AMQPValue::FieldArray(a)) = h.inner().get(key) {
                    cc.extend(a.as_slice().iter().filter_map(value_string));
                }
            }
            if h.contains_key("BCC") {
                let kept: std::collections::BTreeMap<_, _> = h
                    .inner()
                    .iter()
                    .filter(|(k, _)| k.as_str() != "BCC")
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                let props =
                    Message::new(String::new(), String::new(), header.clone(), Bytes::new())
                        .map(|m| m.properties())
                        .unwrap_or_default()
                        .with_headers(kept.into());
                header = encode_header_payload(p.body_size, &props);
            }
        }
        let Some(mut msg) = Message::new(
            exchange.to_string(),
            p.publish.routing_key.to_string(),
            header,
            body,
        ) else {
            return Err(fail(AmqpError::new(
                Code::SyntaxError,
                "cannot decode properties",
            )));
        };
        msg.cc = cc;
        let msg = Arc::new(msg);
        if let Some(tx) = self.tx.as_mut() {
            tx.publishes.push((msg, p.publish.mandatory));
            return Ok(());
        }
        let routed = state.publish(ctx.vhost, msg.clone());
        let store = state.store().cloned();
        drop(state);
        if routed.is_unroutable() && p.publish.mandatory {
            self.send_return(ctx, msg);
        }
        if self.confirm {
            let tag = self.next_publish_seq;
            self.next_publish_seq += 1;
            let confirm = Out::Confirm {
                channel: self.id,
                tag,
                ack: routed.rejected == 0,
            };
            match store {
                // Confirm a persisted message only once it is on disk.
                Some(store) if routed.persisted => {
                    let outbox = ctx.outbox.clone();
                    store.after_sync(Box::new(move || outbox.send(confirm)));
                }
                _ => ctx.outbox.send(confirm),
            }
        }
        Ok(())
    }

    fn send_return(&self, ctx: &Ctx<'_>, msg: Arc<Message>) {
        ctx.outbox.send(Out::Return {
            channel: self.id,
            reply_code: 312,
            reply_text: "NO_ROUTE",
            msg,
        });
    }

    fn reply(&self, ctx: &Ctx<'_>, nowait: bool, method: AMQPClass) {
        if !nowait {
            ctx.outbox.method(self.id, method);
        }
    }

    fn queue_name(&self, name: &ShortString) -> AmqpResult<String> {
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
        use basic::AMQPMethod as B;
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
            AMQPClass::Basic(B::Publish(p)) => {
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
            AMQPClass::Basic(B::Qos(q)) => {
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
            AMQPClass::Basic(B::Consume(c)) => {
                let queue = if c.queue.as_str() == REPLY_TO {
                    REPLY_TO.to_string()
                } else {
                    self.queue_name(&c.queue)?
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
            AMQPClass::Basic(B::Cancel(c)) => {
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
            AMQPClass::Basic(B::CancelOk(_)) => Ok(()),
            AMQPClass::Basic(B::Get(g)) => {
                let queue = self.queue_name(&g.queue)?;
                let sent = ctx.state.lock().get(key, &queue, g.no_ack)?;
                if !sent {
                    ctx.outbox
                        .method(self.id, AMQPClass::Basic(B::GetEmpty(basic::GetEmpty {})));
                }
                Ok(())
            }
            AMQPClass::Basic(B::Ack(a)) => self.settle(ctx, a.delivery_tag, a.multiple, None),
            AMQPClass::Basic(B::Nack(n)) => {
                self.settle(ctx, n.delivery_tag, n.multiple, Some(n.requeue))
            }
            AMQPClass::Basic(B::Reject(r)) => {
                self.settle(ctx, r.delivery_tag, false, Some(r.requeue))
            }
            AMQPClass::Basic(B::Recover(r)) => {
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
            AMQPClass::Basic(B::RecoverAsync(r)) => {
                if !r.requeue {
                    return Err(AmqpError::new(Code::NotImplemented, "requeue=false"));
                }
                ctx.state.lock().recover(key);
                Ok(())
            }
            AMQPClass::Confirm(confirm::AMQPMethod::Select(s)) => {
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
            AMQPClass::Tx(m) => self.tx_method(ctx, m),
            _ => Err(AmqpError::new(Code::CommandInvalid, "unimplemented method")),
        }
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

    fn tx_method(&mut self, ctx: &Ctx<'_>, m: tx::AMQPMethod) -> AmqpResult<()> {
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

    fn exchange_method(&mut self, ctx: &Ctx<'_>, m: exchange::AMQPMethod) -> AmqpResult<()> {
        use exchange::AMQPMethod as X;
        let mut state = ctx.state.lock();
        let (nowait, ok) = match m {
            X::Declare(d) => {
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

    fn queue_method(&mut self, ctx: &Ctx<'_>, m: queue::AMQPMethod) -> AmqpResult<()> {
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

/// RabbitMQ's reason for refusing an `expiration` property, formatted as it prints it.
fn expiration_error(s: &str) -> Result<(), String> {
    if parse_expiration(s).is_ok() {
        return Ok(());
    }
    let digits_end = s
        .char_indices()
        .find(|(i, c)| !(c.is_ascii_digit() || (*i == 0 && (*c == '-' || *c == '+'))))
        .map_or(s.len(), |(i, _)| i);
    let number = &s[..digits_end];
    match number.parse::<i64>() {
        Err(_) => Err("no_integer".to_string()),
        Ok(_) if digits_end < s.len() => {
            Err(format!("{{leftover_string,\"{}\"}}", &s[digits_end..]))
        }
        Ok(n) if n < 0 => Err(format!("{{value_negative,{n}}}")),
        Ok(_) => Err("no_integer".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiration_errors_read_like_rabbitmq() {
        assert!(expiration_error("100").is_ok());
        assert_eq!(expiration_error("abc").unwrap_err(), "no_integer");
        assert_eq!(expiration_error("-5").unwrap_err(), "{value_negative,-5}");
        assert_eq!(
            expiration_error("10x").unwrap_err(),
            "{leftover_string,\"x\"}"
        );
    }

    #[test]
    fn short_strings_never_panic() {
        let long = "é".repeat(200);
        assert!(short(&long).as_str().len() <= 255);
    }
}
