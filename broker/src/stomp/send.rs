//! SEND and transactions: a frame becomes an AMQP message (mapping.rs) published to the
//! destination's exchange and routing key, now or at COMMIT; its receipt is sent once the
//! message is safe (after the store's fsync for a persistent message in a durable queue, as
//! RabbitMQ sends it on the publisher confirm). A `reply-to` of `/temp-queue/ID` is rewritten
//! to a private queue the session declares and consumes on first use.
//!
//! Publishing passes the checks of RabbitMQ's channel in its order: the message's size, write
//! on the exchange, the exchange's existence, the topic write permission for the routing key
//! on a topic exchange, then the `user-id` and `expiration` properties; in a transaction, the
//! permissions are checked at COMMIT, when RabbitMQ's plugin publishes.

use super::destination::Destination;
use super::frame::Frame;
use super::mapping::properties;
use super::outbox::{Out, SubView};
use super::session::{bad_transaction, receipt_frame, Failure, Session, Subscription, TxAction};
use super::subscribe::{destination, invalid_for, settle};
use crate::core::access::{Perm, Resource};
use crate::core::delivery::ConsumeOptions;
use crate::core::error::AmqpError;
use crate::core::message::{expiration_error, Message};
use crate::core::topology::QueueDeclare;
use amq_protocol::protocol::basic::AMQPProperties;
use amq_protocol::types::FieldTable;
use std::sync::Arc;

impl Session {
    /// SEND: publish (or keep for the transaction), then the receipt.
    pub(super) fn send(&mut self, frame: &Frame) -> Result<(), Failure> {
        if frame.header("message-id").is_some() {
            return Err(Failure::error(
                "Invalid header",
                "'message-id' is not allowed on 'SEND'.\n",
            ));
        }
        let (hdr, dest) = destination(frame)?;
        match &dest {
            Destination::Queue(name) => self.ensure_queue(frame, name)?,
            Destination::TempQueue(_) => return Err(invalid_for(&hdr, "SEND")),
            _ => {}
        }
        let frame = self.rewrite_reply_to(frame)?;
        let props = properties(&frame).map_err(|_| Failure::processing())?;
        let (exchange, key) = dest.routing();
        let msg = Arc::new(Message::with_properties(
            exchange.to_string(),
            key.to_string(),
            &props,
            frame.body.clone(),
        ));
        let receipt = frame.header("receipt").map(str::to_string);
        if let Some(tx) = frame.header("transaction") {
            self.check_size(frame.body.len())?;
            self.check_properties(&props)?;
            let actions = self.txs.get_mut(tx).ok_or_else(|| bad_transaction(tx))?;
            actions.push(TxAction::Publish(msg, receipt));
            return Ok(());
        }
        self.check_size(frame.body.len())?;
        self.permit(|p, who| p.publish(who, &msg.exchange, &msg.routing_key))?;
        self.check_properties(&props)?;
        self.publish(msg, receipt, true)
    }

    /// RabbitMQ's channel's first check on a published message: its size.
    fn check_size(&self, size: usize) -> Result<(), Failure> {
        let max = self.shared.config.limits.max_message_size;
        if size as u64 > max {
            return Err(AmqpError::precondition(format!(
                "message size {size} is larger than configured max size {max}"
            ))
            .into());
        }
        Ok(())
    }

    /// Its checks of the properties, after the permissions: `user-id`, then `expiration`.
    fn check_properties(&self, props: &AMQPProperties) -> Result<(), Failure> {
        if let Some(uid) = props.user_id() {
            self.shared
                .access
                .check_user_id(&self.login().user, uid.as_str())?;
        }
        if let Some(exp) = props.expiration() {
            if let Err(reason) = expiration_error(exp.as_str()) {
                return Err(AmqpError::precondition(format!(
                    "invalid expiration '{exp}': {reason}"
                ))
                .into());
            }
        }
        Ok(())
    }

    /// Publishes (after the permission checks, unless `checked` says they were made), then
    /// sends the receipt once the message is safe.
    fn publish(
        &mut self,
        msg: Arc<Message>,
        receipt: Option<String>,
        checked: bool,
    ) -> Result<(), Failure> {
        if !checked {
            self.permit(|p, who| p.publish(who, &msg.exchange, &msg.routing_key))?;
        }
        let vhost = &self.login().vhost;
        let mut state = self.shared.state.lock();
        state.check_publish(vhost, &msg.exchange)?;
        let routed = state.publish(vhost, msg);
        let Some(id) = receipt else {
            return Ok(());
        };
        match state.store() {
            Some(store) if routed.persisted => {
                let outbox = self.outbox.clone();
                store.after_sync(Box::new(move || outbox.frame(receipt_frame(&id))));
            }
            _ => self.outbox.frame(receipt_frame(&id)),
        }
        Ok(())
    }

    /// The frame with a `/temp-queue/ID` reply-to replaced by the session's queue for ID.
    fn rewrite_reply_to(&mut self, frame: &Frame) -> Result<Frame, Failure> {
        let Some(reply_to) = frame.header("reply-to") else {
            return Ok(frame.clone());
        };
        let Destination::TempQueue(id) =
            Destination::parse(reply_to).map_err(|_| Failure::processing())?
        else {
            return Ok(frame.clone());
        };
        let queue = match self.reply_queues.get(&id) {
            Some(q) => q.clone(),
            None => self.reply_queue(&id)?,
        };
        let mut frame = frame.clone();
        for (k, v) in &mut frame.headers {
            if k == "reply-to" {
                *v = queue.clone();
                break;
            }
        }
        Ok(frame)
    }

    /// Declares and consumes the private queue behind `/temp-queue/ID`: server-named,
    /// exclusive, auto-delete; consumed without acks under the tag `T_/temp-queue/ID`. The
    /// configure permission is checked against its `amq.gen-` name, as RabbitMQ does.
    fn reply_queue(&mut self, id: &str) -> Result<String, Failure> {
        let vhost = self.login().vhost.clone();
        let d = QueueDeclare {
            name: String::new(),
            passive: false,
            durable: false,
            exclusive: true,
            auto_delete: true,
            args: FieldTable::default(),
        };
        let (queue, count) = {
            let mut state = self.shared.state.lock();
            let count = state.queue_count(&vhost);
            (state.queue_declare(&vhost, self.conn, d)?.0, count)
        };
        let args = FieldTable::default();
        if let Err(e) = self.permit(|p, who| p.server_named(who, &queue, &args, count)) {
            let _ = self
                .shared
                .state
                .lock()
                .queue_delete(&vhost, self.conn, &queue, false, false);
            return Err(e.into());
        }
        self.permit(|p, who| p.resource(who, Resource::Queue, &queue, Perm::Read))?;
        let tag = format!("T_/temp-queue/{id}");
        let view = SubView {
            id: Some(format!("/temp-queue/{id}")),
            ack_header: false,
            description: format!("id='/temp-queue/{id}'"),
        };
        self.outbox.send(Out::Subscribed(tag.as_str().into(), view));
        let opts = ConsumeOptions {
            tag: tag.clone(),
            no_ack: true,
            exclusive: false,
            args: FieldTable::default(),
        };
        self.shared.state.lock().consume(self.key(), &queue, opts)?;
        self.subs.insert(
            tag,
            Subscription {
                dest: queue.clone(),
                multiple: false,
            },
        );
        self.reply_queues.insert(id.to_string(), queue.clone());
        Ok(queue)
    }

    /// COMMIT: what the transaction kept, in order.
    pub(super) fn commit(&mut self, tx: &str) -> Result<(), Failure> {
        let actions = self.txs.remove(tx).ok_or_else(|| bad_transaction(tx))?;
        for action in actions {
            match action {
                TxAction::Publish(msg, receipt) => self.publish(msg, receipt, false)?,
                settle_action => {
                    let mut state = self.shared.state.lock();
                    settle(&mut state, self.key(), settle_action)?
                }
            }
        }
        Ok(())
    }
}
