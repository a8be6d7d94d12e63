//! SEND and transactions: a frame becomes an AMQP message (mapping.rs) published to the
//! destination's exchange and routing key, now or at COMMIT; its receipt is sent once the
//! message is safe (after the store's fsync for a persistent message in a durable queue, as
//! RabbitMQ sends it on the publisher confirm). A `reply-to` of `/temp-queue/ID` is rewritten
//! to a private queue the session declares and consumes on first use.

use super::destination::Destination;
use super::frame::Frame;
use super::mapping::properties;
use super::outbox::{Out, SubView};
use super::session::{bad_transaction, receipt_frame, Failure, Session, Subscription, TxAction};
use super::subscribe::{destination, invalid_for, settle};
use crate::core::delivery::ConsumeOptions;
use crate::core::error::AmqpError;
use crate::core::message::{expiration_error, Message};
use crate::core::state::State;
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
        let shared = self.shared.clone();
        let mut state = shared.state.lock();
        match &dest {
            Destination::Queue(name) => self.ensure_queue(&mut state, frame, name)?,
            Destination::TempQueue(_) => return Err(invalid_for(&hdr, "SEND")),
            _ => {}
        }
        let frame = self.rewrite_reply_to(&mut state, frame)?;
        let props = properties(&frame).map_err(|_| Failure::processing())?;
        self.check(&props, frame.body.len())?;
        let (exchange, key) = dest.routing();
        let msg = Arc::new(Message::with_properties(
            exchange.to_string(),
            key.to_string(),
            &props,
            frame.body.clone(),
        ));
        let receipt = frame.header("receipt").map(str::to_string);
        if let Some(tx) = frame.header("transaction") {
            let actions = self.txs.get_mut(tx).ok_or_else(|| bad_transaction(tx))?;
            actions.push(TxAction::Publish(msg, receipt));
            return Ok(());
        }
        self.publish(&mut state, msg, receipt)
    }

    /// RabbitMQ's channel checks on a published message: size, `expiration`, `user-id`.
    fn check(&self, props: &AMQPProperties, size: usize) -> Result<(), Failure> {
        let max = self.shared.config.limits.max_message_size;
        if size as u64 > max {
            return Err(AmqpError::precondition(format!(
                "message size {size} is larger than configured max size {max}"
            ))
            .into());
        }
        if let Some(exp) = props.expiration() {
            if let Err(reason) = expiration_error(exp.as_str()) {
                return Err(AmqpError::precondition(format!(
                    "invalid expiration '{exp}': {reason}"
                ))
                .into());
            }
        }
        match props.user_id() {
            Some(uid) => Ok(self
                .shared
                .access
                .check_user_id(&self.login().user, uid.as_str())?),
            None => Ok(()),
        }
    }

    /// Publishes, then sends the receipt once the message is safe.
    fn publish(
        &mut self,
        state: &mut State,
        msg: Arc<Message>,
        receipt: Option<String>,
    ) -> Result<(), Failure> {
        let vhost = &self.login().vhost;
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
    fn rewrite_reply_to(&mut self, state: &mut State, frame: &Frame) -> Result<Frame, Failure> {
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
            None => self.reply_queue(state, &id)?,
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
    /// exclusive, auto-delete; consumed without acks under the tag `T_/temp-queue/ID`.
    fn reply_queue(&mut self, state: &mut State, id: &str) -> Result<String, Failure> {
        let vhost = self.login().vhost.clone();
        let d = QueueDeclare {
            name: String::new(),
            passive: false,
            durable: false,
            exclusive: true,
            auto_delete: true,
            args: FieldTable::default(),
        };
        let (queue, _, _) = state.queue_declare(&vhost, self.conn, d)?;
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
        state.consume(self.key(), &queue, opts)?;
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
        let shared = self.shared.clone();
        let mut state = shared.state.lock();
        for action in actions {
            match action {
                TxAction::Publish(msg, receipt) => self.publish(&mut state, msg, receipt)?,
                settle_action => settle(&mut state, self.key(), settle_action)?,
            }
        }
        Ok(())
    }
}
