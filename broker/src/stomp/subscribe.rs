//! SUBSCRIBE, UNSUBSCRIBE, ACK and NACK, and the queues behind destinations, as RabbitMQ's
//! STOMP plugin sets them up (rabbit_stomp_processor:do_subscribe/4, rabbit_routing_util).
//!
//! A subscription is a consumer whose tag is `T_` + its `id` (or `Q_` + its destination when
//! it has no id), so message ids (`TAG@@SESSION@@DELIVERY-TAG`) name it. `/queue/NAME` declares
//! a durable queue NAME; `/topic/KEY` and `/exchange/NAME/KEY` declare a queue of their own
//! (`stomp-subscription-...`: non-exclusive, auto-delete, durable when the subscription is) and
//! bind it; `/amq/queue/NAME` and `/reply-queue/NAME` consume an existing queue.
//!
//! Each step passes the permission checks of RabbitMQ's channel (configure to declare, read
//! to consume, write on the queue and read on the exchange to bind); a `/topic/` subscription
//! first passes the plugin's own topic read check (`check_subscription_access`), whose
//! refusal RabbitMQ words without the `ACCESS_REFUSED - ` prefix of a channel error.

use super::destination::{subscription_queue_name, Destination};
use super::frame::Frame;
use super::outbox::{Out, SubView};
use super::session::{bad_transaction, Failure, Session, Subscription, TxAction};
use crate::core::access::{Perm, Resource, TopicVars};
use crate::core::delivery::ConsumeOptions;
use crate::core::exchange::Destination as Bound;
use crate::core::state::State;
use crate::core::topology::QueueDeclare;
use amq_protocol::types::{AMQPValue, FieldTable, LongString};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Queue arguments a SUBSCRIBE or SEND may carry as headers, and whether each is a string.
const ARGUMENT_HEADERS: [(&str, bool); 8] = [
    ("x-dead-letter-exchange", true),
    ("x-dead-letter-routing-key", true),
    ("x-expires", false),
    ("x-max-length", false),
    ("x-max-length-bytes", false),
    ("x-max-priority", false),
    ("x-message-ttl", false),
    ("x-queue-type", true),
];

/// The destination header of a frame, parsed, with RabbitMQ's errors.
pub(super) fn destination(frame: &Frame) -> Result<(String, Destination), Failure> {
    let Some(hdr) = frame.header("destination") else {
        return Err(Failure::error(
            "Missing destination",
            format!(
                "\"{}\" must include a 'destination' header\n",
                frame.command
            ),
        ));
    };
    let dest =
        Destination::parse(hdr).map_err(|e| Failure::Error(e.message.to_string(), e.detail))?;
    Ok((hdr.to_string(), dest))
}

/// The error for a destination that cannot be used with a command (`/temp-queue/` anywhere
/// but in a reply-to).
pub(super) fn invalid_for(hdr: &str, command: &str) -> Failure {
    Failure::error(
        "Invalid destination",
        format!("'{hdr}' is not a valid destination for '{command}'\n"),
    )
}

/// The queue.declare a destination's headers ask for (rabbit_stomp_util:build_params/2 and
/// build_arguments/1 over the destination's defaults).
pub(super) fn declare_options(
    frame: &Frame,
    name: String,
    durable_default: bool,
    topic_like: bool,
) -> Result<QueueDeclare, Failure> {
    let durable = frame
        .bool_header("durable")
        .or(frame.bool_header("persistent"))
        .unwrap_or(durable_default);
    let defaults = if topic_like {
        (Some(false), Some(true))
    } else {
        (None, None)
    };
    let exclusive = frame.bool_header("exclusive").or(defaults.0);
    let auto_delete = frame.bool_header("auto-delete").or(defaults.1);
    let mut args = BTreeMap::new();
    for (name, is_string) in ARGUMENT_HEADERS {
        let Some(v) = frame.header(name) else {
            continue;
        };
        let value = if is_string {
            AMQPValue::LongString(LongString::from(v.trim()))
        } else {
            AMQPValue::LongLongInt(v.trim().parse().map_err(|_| Failure::processing())?)
        };
        args.insert(name.into(), value);
    }
    Ok(QueueDeclare {
        name,
        passive: false,
        durable,
        exclusive: exclusive.unwrap_or(!durable),
        auto_delete: auto_delete.unwrap_or(!durable),
        args: FieldTable::from(args),
    })
}

impl Session {
    /// Declares a `/queue/` destination's queue, once per session (as RabbitMQ's route state).
    pub(super) fn ensure_queue(&mut self, frame: &Frame, name: &str) -> Result<(), Failure> {
        if name.is_empty() {
            return Err(Failure::error(
                "Invalid destination",
                "Destination cannot be blank",
            ));
        }
        if self.declared.contains(name) {
            return Ok(());
        }
        let d = declare_options(frame, name.to_string(), true, false)?;
        self.declare(d)?;
        self.declared.insert(name.to_string());
        Ok(())
    }

    /// queue.declare of a named queue, with the channel's checks (configure, the reserved
    /// prefix, the vhost's queue limit, the dead-letter exchange).
    fn declare(&mut self, d: QueueDeclare) -> Result<String, Failure> {
        self.permit(|p, who| p.queue_declare(who, &d.name, &d.args))?;
        let vhost = &self.login().vhost;
        Ok(self
            .shared
            .state
            .lock()
            .queue_declare(vhost, self.conn, d)?
            .0)
    }

    /// The plugin's topic read check of a `/topic/` SUBSCRIBE (no `{client_id}` here).
    fn subscription_access(&self, key: &str) -> Result<(), Failure> {
        let login = self.login();
        let vars = TopicVars {
            user: &login.user,
            vhost: &login.vhost,
            client_id: None,
        };
        self.shared
            .access
            .read()
            .check_topic_with(&vars, "amq.topic", key, Perm::Read)
            .map_err(|mut e| {
                // Raised by the plugin itself, not by a channel: no "ACCESS_REFUSED - ".
                if let Some((_, text)) = e.text.split_once(" - ") {
                    e.text = text.to_string();
                }
                Failure::Fatal(e)
            })
    }

    /// The queue a subscription consumes, declared as its destination requires.
    fn source_queue(
        &mut self,
        frame: &Frame,
        hdr: &str,
        dest: &Destination,
    ) -> Result<String, Failure> {
        match dest {
            Destination::Queue(name) => {
                self.ensure_queue(frame, name)?;
                Ok(name.clone())
            }
            Destination::AmqQueue(name) | Destination::ReplyQueue(name) => Ok(name.clone()),
            Destination::TempQueue(_) => Err(invalid_for(hdr, "SUBSCRIBE")),
            Destination::Topic(_) | Destination::Exchange(..) => {
                let durable_sub = frame.bool_header("durable") == Some(true)
                    || frame.bool_header("persistent") == Some(true);
                let name = match frame.header("x-queue-name") {
                    Some(n) => n.to_string(),
                    None => {
                        let id = match frame.header("id") {
                            Some(id) if durable_sub => id.to_string(),
                            _ => uuid::Uuid::new_v4().to_string(),
                        };
                        subscription_queue_name(dest.routing().1, &id)
                    }
                };
                let d = declare_options(frame, name, false, true)?;
                self.declare(d)
            }
        }
    }

    /// The consumer, then the binding (of a topic or exchange subscription), each after the
    /// channel's checks: read on the queue, then write on it and read on the exchange.
    fn consume_and_bind(
        &mut self,
        queue: &str,
        opts: ConsumeOptions,
        dest: &Destination,
    ) -> Result<(), Failure> {
        self.permit(|p, who| p.resource(who, Resource::Queue, queue, Perm::Read))?;
        let vhost = self.login().vhost.clone();
        self.shared.state.lock().consume(self.key(), queue, opts)?;
        let (exchange, key) = dest.routing();
        if !exchange.is_empty() {
            let bound = Bound::Queue(queue.to_string());
            self.permit(|p, who| p.binding(who, exchange, &bound, key))?;
            self.shared.state.lock().bind(
                &vhost,
                self.conn,
                exchange,
                bound,
                key,
                FieldTable::default(),
            )?;
        }
        Ok(())
    }

    /// SUBSCRIBE: queue, prefetch, consumer, binding.
    pub(super) fn subscribe(&mut self, frame: &Frame) -> Result<(), Failure> {
        let (hdr, dest) = destination(frame)?;
        if let Destination::Topic(key) = &dest {
            self.subscription_access(key)?;
        }
        let prefetch = frame
            .int_header("prefetch-count")
            .map_err(|_| Failure::processing())?
            .map(|n| u16::try_from(n).map_err(|_| Failure::processing()))
            .transpose()?;
        let (no_ack, multiple) = match frame.header("ack").unwrap_or("auto") {
            "auto" => (true, false),
            "client" => (false, true),
            "client-individual" => (false, false),
            _ => return Err(Failure::processing()),
        };
        let queue = self.source_queue(frame, &hdr, &dest)?;
        let (tag, description) = consumer_tag(frame).map_err(|_| Failure::processing())?;
        if let Some(n) = prefetch {
            self.shared.state.lock().qos(self.key(), n, false);
        }
        if self.subs.contains_key(&tag) {
            self.last_words(super::outbox::error_frame(
                "Duplicated subscription identifier",
                &format!("A subscription identified by '{tag}' already exists."),
            ));
            // RabbitMQ stops the session "normally", which still sends the receipt.
            if let Some(id) = frame.header("receipt") {
                self.last_words(super::session::receipt_frame(id));
            }
            return Err(Failure::Silent);
        }
        let tag: Arc<str> = tag.into();
        let view = SubView {
            id: frame.header("id").map(str::to_string),
            ack_header: !no_ack && self.login().version == "1.2",
            description,
        };
        self.outbox.send(Out::Subscribed(tag.clone(), view));
        let opts = ConsumeOptions {
            tag: tag.to_string(),
            no_ack,
            exclusive: false,
            args: FieldTable::default(),
        };
        let vhost = self.login().vhost.clone();
        if let Err(e) = self.consume_and_bind(&queue, opts, &dest) {
            if matches!(dest, Destination::Topic(_) | Destination::Exchange(..)) {
                // The queue is the subscription's own: it goes (as RabbitMQ cleans it up).
                let mut state = self.shared.state.lock();
                state.cancel(self.key(), &tag);
                let _ = state.queue_delete(&vhost, self.conn, &queue, false, false);
            }
            return Err(e);
        }
        self.shared.state.lock().pump(&vhost, &queue);
        self.subs.insert(
            tag.to_string(),
            Subscription {
                dest: hdr,
                multiple,
            },
        );
        Ok(())
    }

    /// UNSUBSCRIBE: cancels the consumer; with `durable:true` on a topic, deletes its queue.
    pub(super) fn unsubscribe(&mut self, frame: &Frame) -> Result<(), Failure> {
        let (tag, description) = consumer_tag(frame)?;
        let not_found = || {
            Failure::error(
                "No subscription found",
                format!(
                    "UNSUBSCRIBE must refer to an existing subscription.\nSubscription to \"{description}\" not found.\n"
                ),
            )
        };
        let sub = self.subs.remove(&tag).ok_or_else(not_found)?;
        let key = self.key();
        let vhost = self.login().vhost.clone();
        // A consumer the broker cancelled (its queue was deleted) is gone already: RabbitMQ
        // forgot the subscription when it sent the client its ERROR frame.
        if !self.shared.state.lock().cancel(key, &tag) {
            return Err(not_found());
        }
        let durable = frame.bool_header("durable") == Some(true)
            || frame.bool_header("persistent") == Some(true);
        if let (true, Ok(Destination::Topic(name)), Some(id)) =
            (durable, Destination::parse(&sub.dest), frame.header("id"))
        {
            let queue = frame
                .header("x-queue-name")
                .map_or_else(|| subscription_queue_name(&name, id), str::to_string);
            self.permit(|p, who| p.resource(who, Resource::Queue, &queue, Perm::Configure))?;
            self.shared
                .state
                .lock()
                .queue_delete(&vhost, self.conn, &queue, false, false)?;
        }
        Ok(())
    }

    /// ACK (`requeue` None) or NACK of the delivery a message id names.
    pub(super) fn ack(&mut self, frame: &Frame, requeue: Option<bool>) -> Result<(), Failure> {
        let header = if self.login().version == "1.2" {
            "id"
        } else {
            "message-id"
        };
        let command = &frame.command;
        let Some(value) = frame.header(header) else {
            return Err(Failure::error(
                "Missing header",
                format!("\"{command}\" must include the \"{header}\" header\n"),
            ));
        };
        let parts: Vec<&str> = value.split("@@").collect();
        let [tag, _session, delivery] = parts.as_slice() else {
            return Err(Failure::error(
                "Invalid header",
                format!("\"{command}\" must include a valid \"{header}\" header\n"),
            ));
        };
        let delivery: u64 = delivery.parse().map_err(|_| Failure::processing())?;
        let Some(sub) = self.subs.get(*tag) else {
            return Err(Failure::error(
                "Subscription not found",
                format!("Message with id \"{value}\" has no subscription"),
            ));
        };
        let action = TxAction::Settle(delivery, sub.multiple, requeue);
        if let Some(tx) = frame.header("transaction") {
            let actions = self.txs.get_mut(tx).ok_or_else(|| bad_transaction(tx))?;
            actions.push(action);
            return Ok(());
        }
        let mut state = self.shared.state.lock();
        settle(&mut state, self.key(), action)
    }
}

/// Applies an ACK or NACK now (outside a transaction, or at its COMMIT).
pub(super) fn settle(
    state: &mut State,
    key: crate::core::message::ChannelKey,
    action: TxAction,
) -> Result<(), Failure> {
    if let TxAction::Settle(tag, multiple, requeue) = action {
        match requeue {
            None => state.ack(key, tag, multiple)?,
            Some(requeue) => state.reject(key, tag, multiple, requeue)?,
        }
    }
    Ok(())
}

/// The consumer tag and description of a SUBSCRIBE or UNSUBSCRIBE (rabbit_stomp_util).
fn consumer_tag(frame: &Frame) -> Result<(String, String), Failure> {
    if let Some(id) = frame.header("id") {
        if id.starts_with("/temp-queue/") {
            return Err(Failure::error(
                "Invalid id",
                "UNSUBSCRIBE 'id' may not start with /temp-queue/\n",
            ));
        }
        return Ok((format!("T_{id}"), format!("id='{id}'")));
    }
    match frame.header("destination") {
        Some(d) => Ok((format!("Q_{d}"), format!("destination='{d}'"))),
        None => Err(Failure::error(
            "Missing destination or id",
            "UNSUBSCRIBE must include a 'destination' or 'id' header",
        )),
    }
}
