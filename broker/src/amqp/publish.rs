//! basic.publish's content: the header and body frames after the method, assembled into a
//! message, checked as RabbitMQ checks it, then published (or kept for the transaction),
//! with the return and the confirm it earns.

use super::channel::{unexpected, Channel, Ctx};
use super::frame;
use super::outbox::Out;
use crate::core::access::{Perm, Resource};
use crate::core::delivery::REPLY_TO;
use crate::core::error::{AmqpError, AmqpResult, Code};
use crate::core::fieldtable::value_string;
use crate::core::message::{expiration_error, Message};
use crate::core::props::{encode_header_payload, with_reply_to, PropsView};
use amq_protocol::types::{AMQPValue, FieldTable};
use bytes::{Bytes, BytesMut};
use std::sync::Arc;

impl Channel {
    pub(super) fn on_header(&mut self, ctx: &Ctx<'_>, payload: Bytes) -> AmqpResult<()> {
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

    pub(super) fn on_body(&mut self, ctx: &Ctx<'_>, payload: Bytes) -> AmqpResult<()> {
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
        let header = p.header.expect("header received");
        let fail = |e: AmqpError| e.on(60, 40);
        let (view, headers) = decode_header(&header).map_err(fail)?;
        let body = assemble(p.parts, p.body_size);
        if body.len() as u64 > ctx.max_message_size {
            return Err(fail(AmqpError::precondition(format!(
                "message size {} is larger than configured max size {}",
                body.len(),
                ctx.max_message_size
            ))));
        }
        let exchange = p.publish.exchange.as_str();
        self.permit(ctx, Resource::Exchange, exchange, Perm::Write)
            .map_err(fail)?;
        let mut state = ctx.state.lock();
        state.check_publish(ctx.vhost, exchange).map_err(fail)?;
        let is_topic = state.exchange_is_topic(ctx.vhost, exchange);
        let routing_key = p.publish.routing_key.as_str();
        self.permit_topic(ctx, is_topic, exchange, routing_key, Perm::Write)
            .map_err(fail)?;
        let reply_name = state.reply_name(self.key(ctx));
        let (header, cc) =
            checked_header(ctx, header, view, headers, reply_name, p.body_size).map_err(fail)?;
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
        state.count_published(
            self.key(ctx),
            ctx.vhost,
            &routed,
            p.publish.mandatory,
            self.confirm,
        );
        if routed.is_unroutable() && p.publish.mandatory {
            state.note_returned(ctx.vhost, &msg);
        }
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

    pub(super) fn send_return(&self, ctx: &Ctx<'_>, msg: Arc<Message>) {
        ctx.outbox.send(Out::Return {
            channel: self.id,
            reply_code: 312,
            reply_text: "NO_ROUTE",
            msg,
        });
    }
}

/// The body from its frames: one frame's bytes are used as they are (no copy).
fn assemble(parts: Vec<Bytes>, size: u64) -> Bytes {
    match parts.len() {
        0 => Bytes::new(),
        1 => parts.into_iter().next().expect("one part"),
        _ => {
            let mut b = BytesMut::with_capacity(size as usize);
            for part in parts {
                b.extend_from_slice(&part);
            }
            b.freeze()
        }
    }
}

/// Decodes a content header's properties (and its headers table, if any), with RabbitMQ's
/// errors for what cannot be decoded.
fn decode_header(header: &[u8]) -> AmqpResult<(PropsView, Option<FieldTable>)> {
    let Some(view) = PropsView::parse(header) else {
        let (which, snip) = frame::snippet(header);
        return Err(AmqpError::new(
            Code::FrameError,
            format!("type 2, {which} octets = {snip}: cannot decode content header"),
        ));
    };
    let headers = match view.headers {
        None => None,
        Some(_) => Some(
            view.headers_table(header)
                .ok_or_else(|| AmqpError::new(Code::SyntaxError, "cannot decode headers table"))?,
        ),
    };
    Ok((view, headers))
}

/// Checks a published message's properties as RabbitMQ does (decodable, a valid expiration,
/// a user-id that is the authenticated user's, a direct reply-to that exists) and returns the
/// header to store: reply-to rewritten to the channel's reply queue, BCC removed, with the
/// extra routing keys of CC and BCC (sender-selected distribution).
fn checked_header(
    ctx: &Ctx<'_>,
    mut header: Bytes,
    mut view: PropsView,
    headers: Option<FieldTable>,
    reply_name: Option<&str>,
    body_size: u64,
) -> AmqpResult<(Bytes, Vec<String>)> {
    if PropsView::text(&header, &view.reply_to) == Some(REPLY_TO) {
        let Some(name) = reply_name else {
            return Err(AmqpError::precondition(
                "fast reply consumer does not exist",
            ));
        };
        header = Bytes::from(with_reply_to(&header, &view, name));
        // Offsets of every later property moved: read the rewritten header afresh.
        view = PropsView::parse(&header).expect("rewritten header is well-formed");
    }
    if let Some(exp) = PropsView::text(&header, &view.expiration) {
        if let Err(reason) = expiration_error(exp) {
            return Err(AmqpError::precondition(format!(
                "invalid expiration '{exp}': {reason}"
            )));
        }
    }
    if let Some(uid) = PropsView::text(&header, &view.user_id) {
        ctx.access.check_user_id(ctx.user, uid)?;
    }
    let Some(h) = &headers else {
        return Ok((header, Vec::new()));
    };
    // Sender-selected distribution: CC and BCC list more routing keys; BCC is removed before
    // delivery.
    let mut cc = Vec::new();
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
        let props = Message::new(String::new(), String::new(), header.clone(), Bytes::new())
            .map(|m| m.properties())
            .unwrap_or_default()
            .with_headers(kept.into());
        header = encode_header_payload(body_size, &props);
    }
    Ok((header, cc))
}
