//! One MQTT session on the core, as RabbitMQ's MQTT processor runs it: packets in, packets out,
//! with no socket (the connection task in `connection.rs` moves the bytes).
//!
//! The session is one core connection with one channel. Subscriptions are bindings from
//! `amq.topic` to the client's two queues, `mqtt-subscription-<client id>qos0` (not durable,
//! auto-delete, consumed without acknowledgements) and `...qos1` (durable; auto-delete for a
//! clean session, else kept with `x-expires` of 24 hours; consumed with acknowledgements and a
//! prefetch of 10). A QoS 1 PUBLISH from the client is a persistent AMQP message acknowledged
//! with PUBACK once the core took it (after the fsync when it was written to disk); a delivery
//! on the QoS 1 queue is acknowledged to the core when the client's PUBACK arrives.
//!
//! Permissions are checked as RabbitMQ 3.10 checks them, since its plugin runs the session on
//! an AMQP channel (`core::access::permits`, with the client id as `{client_id}` in topic
//! permissions): SUBSCRIBE declares the queue (configure on it), consumes it (read on it) and
//! binds it (write on it, read on `amq.topic`, topic read on the routing key); UNSUBSCRIBE
//! unbinds (the same checks); PUBLISH first passes the plugin's own topic write check, then the
//! channel's (write on `amq.topic`, topic write); CONNECT of a clean session deletes a kept
//! queue (configure), of a kept one consumes it again (configure, read). A refusal closes the
//! connection without a word (no SUBACK failure code: RabbitMQ 3.10 sends none), except where
//! RabbitMQ's own plumbing does otherwise: a refused CONNECT setup answers CONNACK 3; a QoS 1
//! PUBLISH refused by the channel gets no PUBACK and the connection goes on (RabbitMQ publishes
//! it on a second, unlinked channel, which dies alone, and every later QoS 1 PUBLISH is lost
//! with it); a retained PUBLISH (or will) refused by the channel is retained all the same (the
//! plugin hands it to its retainer without waiting for the channel). The will passes the topic
//! write check first and is not published at all when refused.

use super::codec::qos;
use super::connection::ToConn;
use super::retained::Retained;
use super::topic::{to_amqp, to_mqtt};
use super::MqttShared;
use crate::core::access::permits::{Permits, Who};
use crate::core::access::{Perm, Resource, TopicVars};
use crate::core::delivery::ConsumeOptions;
use crate::core::error::{AmqpError, AmqpResult};
use crate::core::exchange::Destination;
use crate::core::fieldtable::value_int;
use crate::core::message::{ChannelKey, ConnId, Message};
use crate::core::sink::Event;
use crate::core::topology::QueueDeclare;
use crate::shared::Shared;
use amq_protocol::protocol::basic::AMQPProperties;
use amq_protocol::types::{AMQPValue, FieldTable};
use bytes::{Bytes, BytesMut};
use mqttbytes::v4::{
    ConnAck, ConnectReturnCode, LastWill, Packet, PubAck, Publish, SubAck, Subscribe,
    SubscribeReasonCode, UnsubAck, Unsubscribe,
};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc::UnboundedSender;

/// The exchange MQTT topics live on (RabbitMQ's `mqtt.exchange`).
pub(crate) const EXCHANGE: &str = "amq.topic";
/// Unacknowledged QoS 1 deliveries per client (RabbitMQ's `mqtt.prefetch`).
const PREFETCH: u16 = 10;
/// `x-expires` of a kept QoS 1 subscription queue (RabbitMQ's `mqtt.subscription_ttl`).
const SUBSCRIPTION_TTL_MS: i64 = 86_400_000;
/// The AMQP channel number the session uses on its core connection.
const CHANNEL: u16 = 1;

/// Why a session ends the connection (the socket is closed; MQTT 3.1.1 has no server
/// DISCONNECT).
#[derive(Debug)]
pub(crate) enum Close {
    /// The client sent DISCONNECT: no will.
    Disconnect,
    /// A protocol or core error: logged, no will (as RabbitMQ).
    Error(String),
}

impl From<AmqpError> for Close {
    fn from(e: AmqpError) -> Self {
        Close::Error(format!("{} - {}", e.code as u16, e.text))
    }
}

/// The state of one connected client.
pub(crate) struct Session {
    shared: Arc<Shared>,
    mqtt: Arc<MqttShared>,
    key: ChannelKey,
    user: String,
    vhost: String,
    client_id: String,
    clean: bool,
    will: Option<LastWill>,
    /// The session's permission cache (its AMQP channel's, in RabbitMQ).
    perms: Permits,
    /// A QoS 1 PUBLISH was refused by the channel: as RabbitMQ's dead publishing channel,
    /// later QoS 1 PUBLISHes are lost (not routed, no PUBACK).
    qos1_lost: bool,
    /// Topic filter -> the QoS of each queue it is bound to.
    subscriptions: HashMap<String, Vec<u8>>,
    /// Consumer tags on the QoS 0 and QoS 1 queues.
    tags: [Option<Arc<str>>; 2],
    /// Packet id of a QoS 1 delivery -> its core delivery tag.
    awaiting_ack: HashMap<u16, u64>,
    next_id: u16,
    /// PUBACKs waiting for an fsync: later ones wait behind them, to keep their order.
    syncing: Arc<AtomicUsize>,
    to_conn: UnboundedSender<ToConn>,
    /// Packets to send, in order.
    pub(crate) out: Vec<Bytes>,
}

/// What CONNECT needs besides its packet.
pub(crate) struct Opening {
    pub(crate) shared: Arc<Shared>,
    pub(crate) mqtt: Arc<MqttShared>,
    pub(crate) conn: ConnId,
    pub(crate) user: String,
    pub(crate) vhost: String,
    pub(crate) client_id: String,
    pub(crate) clean: bool,
    pub(crate) will: Option<LastWill>,
    pub(crate) to_conn: UnboundedSender<ToConn>,
}

/// The queues of a client id, as RabbitMQ names them.
pub(crate) fn queue_name(client_id: &str, qos: u8) -> String {
    format!("mqtt-subscription-{client_id}qos{qos}")
}

/// Encodes one packet.
pub(crate) fn encoded(packet: &Packet) -> Bytes {
    let mut b = BytesMut::with_capacity(64);
    super::codec::encode(packet, &mut b);
    b.freeze()
}

impl Session {
    /// Sets the session up on the core (the connection's sink already registered) and answers
    /// CONNACK: a clean session drops the client's kept QoS 1 queue; otherwise an existing one
    /// is consumed again and reported as session present. When that is refused (permissions)
    /// or fails, CONNACK 3, as RabbitMQ.
    pub(crate) fn open(o: Opening) -> Result<Session, ConnectReturnCode> {
        let key = ChannelKey {
            conn: o.conn,
            channel: CHANNEL,
        };
        let mut s = Session {
            shared: o.shared,
            mqtt: o.mqtt,
            key,
            user: o.user,
            vhost: o.vhost,
            client_id: o.client_id,
            clean: o.clean,
            will: o.will,
            perms: Permits::default(),
            qos1_lost: false,
            subscriptions: HashMap::new(),
            tags: [None, None],
            awaiting_ack: HashMap::new(),
            next_id: 1,
            syncing: Arc::new(AtomicUsize::new(0)),
            to_conn: o.to_conn,
            out: Vec::new(),
        };
        {
            let mut state = s.shared.state.lock();
            state.open_channel(key, &s.vhost);
            state.qos(key, PREFETCH, false);
        }
        let present = s.session_present().map_err(|e| {
            tracing::warn!(client_id = %s.client_id, text = %e.text, "MQTT cannot set up the session");
            ConnectReturnCode::ServiceUnavailable
        })?;
        s.send(Packet::ConnAck(ConnAck::new(
            ConnectReturnCode::Success,
            present,
        )));
        Ok(s)
    }

    fn session_present(&mut self) -> AmqpResult<bool> {
        let q1 = queue_name(&self.client_id, 1);
        let exists = self
            .shared
            .state
            .lock()
            .queue_declare(&self.vhost, self.key.conn, passive(&q1))
            .is_ok();
        match (exists, self.clean) {
            (false, _) => Ok(false),
            (true, true) => {
                self.permit(|p, who| p.resource(who, Resource::Queue, &q1, Perm::Configure))?;
                self.shared.state.lock().queue_delete(
                    &self.vhost,
                    self.key.conn,
                    &q1,
                    false,
                    false,
                )?;
                Ok(false)
            }
            (true, false) => {
                self.ensure_queue(1)?;
                Ok(true)
            }
        }
    }

    /// Runs a check of the session's channel (with its cache).
    fn permit<T>(
        &mut self,
        check: impl FnOnce(&mut Permits, &Who<'_>) -> AmqpResult<T>,
    ) -> AmqpResult<T> {
        let mut perms = std::mem::take(&mut self.perms);
        let who = Who {
            access: &self.shared.access,
            state: &self.shared.state,
            user: &self.user,
            vhost: &self.vhost,
            client_id: Some(&self.client_id),
        };
        let out = check(&mut perms, &who);
        self.perms = perms;
        out
    }

    /// The plugin's own topic write check of a PUBLISH or will (`check_topic_access` on
    /// `amq.topic`, with the client id).
    fn topic_write(&self, topic: &str) -> AmqpResult<()> {
        let vars = TopicVars {
            user: &self.user,
            vhost: &self.vhost,
            client_id: Some(&self.client_id),
        };
        self.shared
            .access
            .read()
            .check_topic_with(&vars, EXCHANGE, &to_amqp(topic), Perm::Write)
    }

    fn send(&mut self, packet: Packet) {
        self.out.push(encoded(&packet));
    }

    /// The client id.
    pub(crate) fn client_id(&self) -> &str {
        &self.client_id
    }

    /// Handles a packet from the client.
    pub(crate) fn on_packet(&mut self, packet: Packet) -> Result<(), Close> {
        match packet {
            Packet::Publish(p) => self.on_publish(p),
            Packet::PubAck(a) => {
                self.on_puback(a.pkid);
                Ok(())
            }
            Packet::Subscribe(s) => self.on_subscribe(s),
            Packet::Unsubscribe(u) => self.on_unsubscribe(u),
            Packet::PingReq => {
                self.send(Packet::PingResp);
                Ok(())
            }
            Packet::Disconnect => Err(Close::Disconnect),
            Packet::Connect(_) => {
                // RabbitMQ answers a second CONNECT with another CONNACK and goes on.
                let present = !self.clean && self.tags[1].is_some();
                self.send(Packet::ConnAck(ConnAck::new(
                    ConnectReturnCode::Success,
                    present,
                )));
                Ok(())
            }
            // QoS 2 is granted as 1: the broker never starts its flows. Packets only a broker
            // sends are ignored, as is a stray PUBREL.
            Packet::PubRec(_) | Packet::PubRel(_) | Packet::PubComp(_) => Ok(()),
            Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp => {
                Err(Close::Error("packet type only a server sends".into()))
            }
        }
    }

    fn on_publish(&mut self, p: Publish) -> Result<(), Close> {
        // QoS 2 is downgraded to 1, as RabbitMQ does.
        let level = (p.qos as u8).min(1);
        self.topic_write(&p.topic)?;
        // The channel's checks: a refused QoS 0 PUBLISH kills the session's channel (and the
        // connection with it), a refused QoS 1 one its publishing channel only.
        let mut refused = None;
        let mut persisted = None;
        if level == 0 || !self.qos1_lost {
            match self.permit(|perms, who| perms.publish(who, EXCHANGE, &to_amqp(&p.topic))) {
                Ok(()) => {
                    persisted = Some(self.publish(&p.topic, p.payload.clone(), level, p.dup)?)
                }
                Err(e) if level == 1 => {
                    tracing::warn!(client_id = %self.client_id, text = %e.text, "MQTT QoS 1 publish refused");
                    self.qos1_lost = true;
                }
                Err(e) => refused = Some(e),
            }
        }
        if p.retain {
            let retained = Retained {
                qos: level,
                payload: p.payload,
            };
            self.mqtt.retained.retain(&self.vhost, &p.topic, retained);
        }
        if let Some(e) = refused {
            return Err(e.into());
        }
        if let (1, Some(persisted)) = (level, persisted) {
            self.puback(p.pkid, persisted);
        }
        Ok(())
    }

    /// Publishes to `amq.topic` with the properties RabbitMQ sets (the permissions checked);
    /// returns whether the message was written to disk.
    fn publish(
        &mut self,
        topic: &str,
        payload: Bytes,
        level: u8,
        dup: bool,
    ) -> Result<bool, Close> {
        let mut headers = FieldTable::default();
        headers.insert(
            "x-mqtt-publish-qos".into(),
            AMQPValue::ShortShortInt(level as i8),
        );
        headers.insert("x-mqtt-dup".into(), AMQPValue::Boolean(dup));
        let props = AMQPProperties::default()
            .with_headers(headers)
            .with_delivery_mode(if level == 0 { 1 } else { 2 });
        let msg = Message::with_properties(EXCHANGE.into(), to_amqp(topic), &props, payload);
        let mut state = self.shared.state.lock();
        state.check_publish(&self.vhost, EXCHANGE)?;
        Ok(state.publish(&self.vhost, Arc::new(msg)).persisted)
    }

    /// Acknowledges a QoS 1 PUBLISH: now, or after the fsync that makes it durable (and then
    /// every later PUBACK too, until that fsync, so that they keep their order).
    fn puback(&mut self, pkid: u16, persisted: bool) {
        let store = self.shared.state.lock().store().cloned();
        match store {
            Some(store) if persisted || self.syncing.load(Ordering::Acquire) > 0 => {
                self.syncing.fetch_add(1, Ordering::AcqRel);
                let (tx, syncing) = (self.to_conn.clone(), self.syncing.clone());
                store.after_sync(Box::new(move || {
                    syncing.fetch_sub(1, Ordering::AcqRel);
                    let _ = tx.send(ToConn::Packet(encoded(&Packet::PubAck(PubAck::new(pkid)))));
                }));
            }
            _ => self.send(Packet::PubAck(PubAck::new(pkid))),
        }
    }

    fn on_puback(&mut self, pkid: u16) {
        // An id the session does not wait for (a retained message, a bogus client) is ignored.
        if let Some(tag) = self.awaiting_ack.remove(&pkid) {
            let _ = self.shared.state.lock().ack(self.key, tag, false);
        }
    }

    /// SUBSCRIBE. RabbitMQ's parser lists the filters last first: it sets them up, and sends
    /// their retained messages, in that order (its SUBACK lists them in the packet's).
    fn on_subscribe(&mut self, s: Subscribe) -> Result<(), Close> {
        let mut granted = Vec::with_capacity(s.filters.len());
        for f in s.filters.iter().rev() {
            let level = (f.qos as u8).min(1);
            let queue = Destination::Queue(self.ensure_queue(level)?);
            let key = to_amqp(&f.path);
            self.permit(|p, who| p.binding(who, EXCHANGE, &queue, &key))?;
            self.shared.state.lock().bind(
                &self.vhost,
                self.key.conn,
                EXCHANGE,
                queue,
                &key,
                FieldTable::default(),
            )?;
            self.subscriptions
                .entry(f.path.clone())
                .or_default()
                .push(level);
            granted.push(SubscribeReasonCode::Success(qos(level)));
        }
        granted.reverse();
        self.send(Packet::SubAck(SubAck::new(s.pkid, granted)));
        let mut id = s.pkid.max(self.next_id);
        for f in s.filters.iter().rev() {
            id = self.send_retained(&f.path, f.qos as u8, id);
        }
        self.next_id = valid_id(id);
        Ok(())
    }

    /// Sends the message retained under exactly `filter`, if any, at the lower of its QoS and
    /// the subscription's; returns the next packet id to use.
    fn send_retained(&mut self, filter: &str, sub_qos: u8, id: u16) -> u16 {
        let Some((topic, msg)) = self.mqtt.retained.fetch(&self.vhost, filter) else {
            return id;
        };
        let level = sub_qos.min(msg.qos).min(1);
        let mut p = Publish::from_bytes(topic, qos(level), msg.payload);
        p.retain = true;
        if level == 1 {
            p.pkid = valid_id(id);
        }
        self.send(Packet::Publish(p));
        if level == 1 {
            valid_id(id.wrapping_add(1))
        } else {
            id
        }
    }

    fn on_unsubscribe(&mut self, u: Unsubscribe) -> Result<(), Close> {
        for topic in &u.topics {
            let mut levels = self.subscriptions.remove(topic).unwrap_or_default();
            levels.sort_unstable();
            levels.dedup();
            let key = to_amqp(topic);
            for level in levels {
                let queue = Destination::Queue(queue_name(&self.client_id, level));
                self.permit(|p, who| p.binding(who, EXCHANGE, &queue, &key))?;
                self.shared.state.lock().unbind(
                    &self.vhost,
                    self.key.conn,
                    EXCHANGE,
                    queue,
                    &key,
                    &FieldTable::default(),
                )?;
            }
        }
        self.send(Packet::UnsubAck(UnsubAck::new(u.pkid)));
        Ok(())
    }

    /// Declares the client's queue for `level` and consumes from it, once (configure on the
    /// queue for the declaration, read for the consumer).
    fn ensure_queue(&mut self, level: u8) -> AmqpResult<String> {
        let name = queue_name(&self.client_id, level);
        if self.tags[usize::from(level)].is_some() {
            return Ok(name);
        }
        let mut args = FieldTable::default();
        if level == 1 && !self.clean {
            args.insert(
                "x-expires".into(),
                AMQPValue::LongLongInt(SUBSCRIPTION_TTL_MS),
            );
        }
        self.permit(|p, who| p.queue_declare(who, &name, &args))?;
        let declare = QueueDeclare {
            name: name.clone(),
            passive: false,
            durable: level == 1,
            exclusive: false,
            auto_delete: level == 0 || self.clean,
            args,
        };
        self.shared
            .state
            .lock()
            .queue_declare(&self.vhost, self.key.conn, declare)?;
        self.permit(|p, who| p.resource(who, Resource::Queue, &name, Perm::Read))?;
        let mut state = self.shared.state.lock();
        let consume = ConsumeOptions {
            tag: String::new(),
            no_ack: level == 0,
            exclusive: false,
            args: FieldTable::default(),
        };
        let tag = state.consume(self.key, &name, consume)?;
        self.tags[usize::from(level)] = Some(tag);
        // Messages that waited in a kept queue go out now (after CONNACK or SUBACK, which
        // leave first: deliveries reach the connection through its sink).
        state.pump(&self.vhost, &name);
        Ok(name)
    }

    /// Turns a core event into a PUBLISH, as RabbitMQ's `amqp_callback`: the QoS is the
    /// queue's, lowered to the `x-mqtt-publish-qos` header's; a redelivery (or an MQTT
    /// duplicate) at QoS 0 is dropped.
    pub(crate) fn on_event(&mut self, event: Event) -> Result<(), Close> {
        let Event::Deliver {
            consumer_tag,
            delivery_tag,
            redelivered,
            msg,
            ..
        } = event
        else {
            if let Event::Cancelled { .. } = event {
                return Err(Close::Error("subscription queue deleted".into()));
            }
            return Ok(());
        };
        let queue_qos: u8 = if self.tags[0].as_deref() == Some(&*consumer_tag) {
            0
        } else {
            1
        };
        let headers = msg.headers().unwrap_or_default();
        let header_qos = headers
            .inner()
            .get("x-mqtt-publish-qos")
            .and_then(value_int)
            .map(|q| q.clamp(0, 1) as u8);
        let header_dup = matches!(
            headers.inner().get("x-mqtt-dup"),
            Some(AMQPValue::Boolean(true))
        );
        let dup = redelivered || header_dup;
        let level = if queue_qos == 0 {
            0
        } else {
            header_qos.unwrap_or(1)
        };
        let ack_now = queue_qos == 1 && level == 0;
        if !(dup && level == 0) {
            let mut p =
                Publish::from_bytes(to_mqtt(&msg.routing_key), qos(level), msg.body.clone());
            p.dup = dup;
            if level == 1 {
                p.pkid = self.next_id;
                self.awaiting_ack.insert(self.next_id, delivery_tag);
                self.next_id = valid_id(self.next_id.wrapping_add(1));
            }
            self.send(Packet::Publish(p));
        }
        if ack_now {
            let _ = self.shared.state.lock().ack(self.key, delivery_tag, false);
        }
        Ok(())
    }

    /// Publishes the will (on an abnormal close), retaining it when it says so: nothing when
    /// the topic write permission refuses it; retained but not routed when the channel does.
    pub(crate) fn publish_will(&mut self) {
        let Some(will) = self.will.take() else {
            return;
        };
        if let Err(e) = self.topic_write(&will.topic) {
            tracing::warn!(client_id = %self.client_id, text = %e.text, "could not send the last will");
            return;
        }
        let level = will.qos as u8;
        let permitted = self.permit(|p, who| p.publish(who, EXCHANGE, &to_amqp(&will.topic)));
        let published = permitted
            .map_err(Close::from)
            .and_then(|()| self.publish(&will.topic, will.message.clone(), level, false));
        if let Err(e) = published {
            tracing::warn!(client_id = %self.client_id, ?e, "could not publish the last will");
        }
        if will.retain {
            let retained = Retained {
                qos: level.min(1),
                payload: will.message,
            };
            self.mqtt
                .retained
                .retain(&self.vhost, &will.topic, retained);
        }
    }
}

fn passive(name: &str) -> QueueDeclare {
    QueueDeclare {
        name: name.to_string(),
        passive: true,
        durable: false,
        exclusive: false,
        auto_delete: false,
        args: FieldTable::default(),
    }
}

/// Packet ids run from 1 to 65534 and wrap back to 1, as RabbitMQ's.
fn valid_id(id: u16) -> u16 {
    if id == 0 || id == u16::MAX {
        1
    } else {
        id
    }
}
