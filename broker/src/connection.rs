//! One client connection: protocol header, handshake (start, tune, open), then the frame loop
//! that multiplexes channels, heartbeats both ways, and closing in either direction.
//!
//! Reading and handling happen in the connection's task; writing happens in a writer task fed by
//! the connection's [`Outbox`], which batches everything queued into as few socket writes as
//! possible.

use crate::broker::Shared;
use crate::channel::{close_in_state, release_tx, reply_text, Channel, Ctx};
use crate::error::{AmqpError, Code};
use crate::frame::{self, next_frame, RawFrame, FRAME_MIN_SIZE, PROTOCOL_HEADER};
use crate::queue::{ChannelKey, ConnId};
use crate::state::{Out, Outbox};
use amq_protocol::protocol::{channel, connection, parse_class, AMQPClass};
use amq_protocol::types::{AMQPValue, FieldTable, LongString};
use bytes::{BufMut, BytesMut};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::time::{timeout, Instant};

/// How long a client has to complete the handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long we wait for connection.close-ok after sending connection.close.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug)]
enum Stop {
    /// The peer went away or the socket failed.
    Gone,
    /// We are done (close handshake finished, or fatal error already reported).
    Done,
}

/// Serves one accepted socket until it closes.
pub(crate) async fn serve(
    shared: Arc<Shared>,
    mut stream: TcpStream,
    peer: SocketAddr,
    conn_id: ConnId,
    shutdown: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let hs = match timeout(
        HANDSHAKE_TIMEOUT,
        handshake(&shared, &mut stream, &mut buf, peer),
    )
    .await
    {
        Ok(Ok(Some(hs))) => hs,
        Ok(Ok(None)) | Ok(Err(_)) | Err(_) => {
            let _ = stream.shutdown().await;
            return;
        }
    };
    tracing::debug!(%peer, user = %hs.user, vhost = %hs.vhost, "connection open");
    let (outbox, rx, queued) = Outbox::new();
    shared.state.lock().expect("state lock").add_connection(
        conn_id,
        outbox.clone(),
        hs.cancel_notify,
    );
    let (read_half, write_half) = stream.into_split();
    let writer = tokio::spawn(write_loop(
        write_half,
        rx,
        Backlog {
            queued,
            drained: outbox.drained(),
        },
        hs.frame_max,
        hs.heartbeat,
        shared.clone(),
        conn_id,
    ));
    let mut conn = Connection {
        shared: shared.clone(),
        id: conn_id,
        outbox,
        vhost: hs.vhost,
        user: hs.user,
        frame_max: hs.frame_max,
        channel_max: hs.channel_max,
        channels: HashMap::new(),
        closing: None,
        publisher: false,
        blocked_capable: hs.blocked_capable,
    };
    let result = conn.run(read_half, buf, hs.heartbeat, shutdown).await;
    tracing::debug!(%peer, ?result, "connection closed");
    {
        let mut state = shared.state.lock().expect("state lock");
        for (id, ch) in conn.channels.iter_mut() {
            let key = ChannelKey {
                conn: conn_id,
                channel: *id,
            };
            release_tx(ch, &mut state, key);
        }
        state.remove_connection(conn_id);
    }
    conn.outbox.send(Out::Close);
    drop(conn);
    let _ = writer.await;
}

struct Handshake {
    blocked_capable: bool,
    user: String,
    vhost: String,
    frame_max: u32,
    channel_max: u16,
    heartbeat: u16,
    cancel_notify: bool,
}

fn server_properties() -> FieldTable {
    let mut caps = FieldTable::default();
    for cap in [
        "publisher_confirms",
        "exchange_exchange_bindings",
        "basic.nack",
        "consumer_cancel_notify",
        "connection.blocked",
        "consumer_priorities",
        "authentication_failure_close",
        "per_consumer_qos",
        "direct_reply_to",
    ] {
        caps.insert(cap.into(), AMQPValue::Boolean(true));
    }
    let mut props = FieldTable::default();
    props.insert("capabilities".into(), AMQPValue::FieldTable(caps));
    for (k, v) in [
        ("product", "Warren"),
        ("version", env!("CARGO_PKG_VERSION")),
        ("platform", "Rust"),
        ("cluster_name", "warren@localhost"),
        ("copyright", "The Warren authors"),
        (
            "information",
            "warren-broker, an AMQP 0-9-1 broker compatible with RabbitMQ",
        ),
    ] {
        props.insert(k.into(), AMQPValue::LongString(v.into()));
    }
    props
}

async fn write_frames(stream: &mut TcpStream, f: impl FnOnce(&mut Vec<u8>)) -> std::io::Result<()> {
    let mut out = Vec::new();
    f(&mut out);
    stream.write_all(&out).await
}

async fn read_frame(stream: &mut TcpStream, buf: &mut BytesMut) -> Result<Option<RawFrame>, ()> {
    loop {
        match next_frame(buf, FRAME_MIN_SIZE) {
            Ok(Some(f)) => return Ok(Some(f)),
            Ok(None) => {}
            Err(_) => return Err(()),
        }
        match stream.read_buf(buf).await {
            Ok(0) | Err(_) => return Ok(None),
            Ok(_) => {}
        }
    }
}

async fn read_method(stream: &mut TcpStream, buf: &mut BytesMut) -> Option<AMQPClass> {
    let f = read_frame(stream, buf).await.ok()??;
    if f.kind != frame::FRAME_METHOD || f.channel != 0 {
        return None;
    }
    parse_class(&f.payload[..]).ok().map(|(_, m)| m)
}

async fn close_handshake(stream: &mut TcpStream, err: AmqpError) {
    let _ = write_frames(stream, |out| {
        frame::write_method(out, 0, close_method(&err));
    })
    .await;
    let _ = stream.flush().await;
    // Give the client a moment to read the close before the socket goes.
    tokio::time::sleep(Duration::from_millis(50)).await;
}

fn close_method(err: &AmqpError) -> AMQPClass {
    AMQPClass::Connection(connection::AMQPMethod::Close(connection::Close {
        reply_code: err.code as u16,
        reply_text: reply_text(&err.text),
        class_id: err.class_id,
        method_id: err.method_id,
    }))
}

/// Parses the credentials of a PLAIN or AMQPLAIN response.
fn credentials(mechanism: &str, response: &[u8]) -> Option<(String, String)> {
    match mechanism {
        "PLAIN" => {
            let mut parts = response.split(|b| *b == 0);
            let _authzid = parts.next()?;
            let user = parts.next()?;
            let pass = parts.next()?;
            Some((
                String::from_utf8(user.to_vec()).ok()?,
                String::from_utf8(pass.to_vec()).ok()?,
            ))
        }
        "AMQPLAIN" => {
            // A field table without its length prefix.
            let mut framed = Vec::with_capacity(response.len() + 4);
            framed.put_u32(response.len() as u32);
            framed.extend_from_slice(response);
            let (_, table) = amq_protocol::types::parsing::parse_field_table(&framed[..]).ok()?;
            let get = |k: &str| match table.inner().get(k)? {
                AMQPValue::LongString(s) => String::from_utf8(s.as_bytes().to_vec()).ok(),
                AMQPValue::ShortString(s) => Some(s.to_string()),
                _ => None,
            };
            Some((get("LOGIN")?, get("PASSWORD")?))
        }
        _ => None,
    }
}

async fn handshake(
    shared: &Shared,
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    peer: SocketAddr,
) -> std::io::Result<Option<Handshake>> {
    while buf.len() < 8 {
        if stream.read_buf(buf).await? == 0 {
            return Ok(None);
        }
    }
    if &buf[..8] != PROTOCOL_HEADER {
        // Like RabbitMQ: answer with the protocol header we speak, then close.
        stream.write_all(PROTOCOL_HEADER).await?;
        return Ok(None);
    }
    let _ = buf.split_to(8);
    let start = AMQPClass::Connection(connection::AMQPMethod::Start(connection::Start {
        version_major: 0,
        version_minor: 9,
        server_properties: server_properties(),
        mechanisms: LongString::from("PLAIN AMQPLAIN"),
        locales: LongString::from("en_US"),
    }));
    write_frames(stream, |out| frame::write_method(out, 0, start)).await?;

    let Some(AMQPClass::Connection(connection::AMQPMethod::StartOk(start_ok))) =
        read_method(stream, buf).await
    else {
        return Ok(None);
    };
    let mechanism = start_ok.mechanism.as_str();
    if mechanism != "PLAIN" && mechanism != "AMQPLAIN" {
        // Before the connection is open RabbitMQ reports this only in its log.
        tracing::warn!(%peer, mechanism, "unknown authentication mechanism");
        return Ok(None);
    }
    let creds = credentials(mechanism, start_ok.response.as_bytes());
    let capability = |name: &str| match start_ok.client_properties.inner().get("capabilities") {
        Some(AMQPValue::FieldTable(caps)) => {
            matches!(caps.inner().get(name), Some(AMQPValue::Boolean(true)))
        }
        _ => false,
    };
    let failure_close = capability("authentication_failure_close");
    let user = creds.and_then(|(u, p)| shared.config.authenticate(&u, &p, peer.ip()).then_some(u));
    let Some(user) = user else {
        tracing::warn!(%peer, "login refused");
        let err = AmqpError::new(
            Code::AccessRefused,
            format!(
                "Login was refused using authentication mechanism {mechanism}. For details see the broker logfile."
            ),
        )
        .on(10, 11);
        if failure_close {
            close_handshake(stream, err).await;
        }
        // Without the capability, RabbitMQ just closes the socket.
        return Ok(None);
    };
    let cancel_notify = capability("consumer_cancel_notify");
    let blocked_capable = capability("connection.blocked");

    let limits = &shared.config.limits;
    let tune = AMQPClass::Connection(connection::AMQPMethod::Tune(connection::Tune {
        channel_max: limits.channel_max,
        frame_max: limits.frame_max,
        heartbeat: limits.heartbeat,
    }));
    write_frames(stream, |out| frame::write_method(out, 0, tune)).await?;
    let Some(AMQPClass::Connection(connection::AMQPMethod::TuneOk(tune_ok))) =
        read_method(stream, buf).await
    else {
        return Ok(None);
    };
    let frame_max = if tune_ok.frame_max == 0 {
        limits.frame_max
    } else {
        tune_ok.frame_max
    };
    // Out-of-range tune-ok values: RabbitMQ drops the socket without a connection.close.
    if frame_max < FRAME_MIN_SIZE
        || frame_max > limits.frame_max
        || tune_ok.channel_max > limits.channel_max
    {
        tracing::warn!(%peer, frame_max, channel_max = tune_ok.channel_max, "tune-ok out of range");
        return Ok(None);
    }
    let channel_max = match tune_ok.channel_max {
        0 => limits.channel_max,
        n => n,
    };

    let Some(AMQPClass::Connection(connection::AMQPMethod::Open(open))) =
        read_method(stream, buf).await
    else {
        return Ok(None);
    };
    let vhost = open.virtual_host.to_string();
    let known = shared.state.lock().expect("state lock").has_vhost(&vhost);
    if !known {
        let err = AmqpError::new(Code::NotAllowed, format!("vhost {vhost} not found")).on(10, 40);
        close_handshake(stream, err).await;
        return Ok(None);
    }
    let open_ok = AMQPClass::Connection(connection::AMQPMethod::OpenOk(connection::OpenOk {}));
    write_frames(stream, |out| frame::write_method(out, 0, open_ok)).await?;
    Ok(Some(Handshake {
        blocked_capable,
        user,
        vhost,
        frame_max,
        channel_max,
        heartbeat: tune_ok.heartbeat,
        cancel_notify,
    }))
}

struct Connection {
    shared: Arc<Shared>,
    id: ConnId,
    outbox: Outbox,
    vhost: String,
    user: String,
    frame_max: u32,
    channel_max: u16,
    channels: HashMap<u16, Channel>,
    /// Set once we sent connection.close: when we give up waiting for close-ok.
    closing: Option<Instant>,
    /// It has published: a resource alarm blocks it.
    publisher: bool,
    /// The client understands connection.blocked / unblocked.
    blocked_capable: bool,
}

impl Connection {
    async fn run(
        &mut self,
        mut reader: tokio::net::tcp::OwnedReadHalf,
        mut buf: BytesMut,
        heartbeat: u16,
        mut shutdown: watch::Receiver<bool>,
    ) -> Stop {
        // A peer that sends nothing for two heartbeat intervals is gone (as in RabbitMQ).
        let idle_limit = (heartbeat > 0).then(|| Duration::from_secs(heartbeat as u64 * 2));
        let mut last_read = Instant::now();
        let mut alarm = self.shared.alarm.subscribe();
        let drained = self.outbox.drained();
        let mut blocked = false;
        loop {
            // A publishing connection stops being read while a resource alarm is on (as in
            // RabbitMQ), after being told with connection.blocked; consumers keep going.
            let should_block =
                *alarm.borrow_and_update() && self.publisher && self.closing.is_none();
            if should_block != blocked {
                blocked = should_block;
                if self.blocked_capable {
                    let m = if blocked {
                        connection::AMQPMethod::Blocked(connection::Blocked {
                            reason: "low on memory or disk space".into(),
                        })
                    } else {
                        connection::AMQPMethod::Unblocked(connection::Unblocked {})
                    };
                    self.outbox.method(0, AMQPClass::Connection(m));
                }
                if !blocked {
                    last_read = Instant::now();
                }
            }
            loop {
                match next_frame(&mut buf, self.frame_max) {
                    Ok(Some(f)) => {
                        if let Err(stop) = self.on_frame(f) {
                            return stop;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        self.fatal(AmqpError {
                            code: Code::FrameError,
                            text: e.text(),
                            class_id: 0,
                            method_id: 0,
                        });
                        return Stop::Done;
                    }
                }
            }
            let wake = match (self.closing, idle_limit) {
                (Some(t), _) => t,
                (None, Some(limit)) if !blocked => last_read + limit,
                (None, _) => Instant::now() + Duration::from_secs(3600),
            };
            let backlogged = self.outbox.backlogged();
            tokio::select! {
                _ = alarm.changed() => {}
                _ = drained.notified(), if backlogged => {}
                r = reader.read_buf(&mut buf), if !blocked && !backlogged => match r {
                    Ok(0) | Err(_) => return Stop::Gone,
                    Ok(_) => last_read = Instant::now(),
                },
                _ = tokio::time::sleep_until(wake) => {
                    if self.closing.is_some() {
                        return Stop::Done;
                    }
                    if !blocked && idle_limit.is_some_and(|l| last_read.elapsed() >= l) {
                        tracing::warn!(conn = self.id, "missed heartbeats from client, closing");
                        return Stop::Gone;
                    }
                },
                _ = shutdown.changed(), if self.closing.is_none() => {
                    self.start_close(AmqpError::new(
                        Code::ConnectionForced,
                        "broker forced connection closure with reason 'shutdown'",
                    ));
                }
            }
        }
    }

    /// Sends connection.close and waits (bounded) for close-ok, ignoring everything else.
    fn start_close(&mut self, err: AmqpError) {
        if self.closing.is_some() {
            return;
        }
        tracing::info!(conn = self.id, code = err.code as u16, text = %err.text, "closing connection");
        self.outbox.method(0, close_method(&err));
        self.closing = Some(Instant::now() + CLOSE_TIMEOUT);
        self.drop_channels();
    }

    /// Closes every channel: consumers cancelled, unacked messages requeued.
    fn drop_channels(&mut self) {
        let mut state = self.shared.state.lock().expect("state lock");
        for (id, ch) in self.channels.iter_mut() {
            let key = ChannelKey {
                conn: self.id,
                channel: *id,
            };
            close_in_state(ch, &mut state, key);
        }
        self.channels.clear();
    }

    /// Reports an error after which we cannot read the stream any more, then stops.
    fn fatal(&mut self, err: AmqpError) {
        tracing::warn!(conn = self.id, text = %err.text, "fatal connection error");
        self.outbox.method(0, close_method(&err));
    }

    fn on_frame(&mut self, f: RawFrame) -> Result<(), Stop> {
        if !matches!(
            f.kind,
            frame::FRAME_METHOD | frame::FRAME_HEADER | frame::FRAME_BODY | frame::FRAME_HEARTBEAT
        ) {
            let (which, snip) = frame::snippet(&f.payload);
            self.fatal(AmqpError::new(
                Code::FrameError,
                format!("type {}, {which} octets = {snip}: unknown_frame", f.kind),
            ));
            return Err(Stop::Done);
        }
        if f.kind == frame::FRAME_HEARTBEAT && !f.payload.is_empty() {
            let (which, snip) = frame::snippet(&f.payload);
            self.fatal(AmqpError::new(
                Code::FrameError,
                format!("type 8, {which} octets = {snip}: unknown_frame"),
            ));
            return Err(Stop::Done);
        }
        let method = if f.kind == frame::FRAME_METHOD {
            match parse_class(&f.payload[..]) {
                Ok((_, m)) => Some(m),
                Err(_) => {
                    let ids = if f.payload.len() >= 4 {
                        (
                            u16::from_be_bytes([f.payload[0], f.payload[1]]),
                            u16::from_be_bytes([f.payload[2], f.payload[3]]),
                        )
                    } else {
                        (0, 0)
                    };
                    if !frame::is_known_method(ids.0, ids.1) {
                        // RabbitMQ cannot even name an unknown method: it drops the socket.
                        tracing::warn!(conn = self.id, ?ids, "unknown method; closing socket");
                        return Err(Stop::Gone);
                    }
                    let args = frame::erlang_binary(&f.payload[4..], false);
                    self.fatal(
                        AmqpError::new(Code::FrameError, format!("cannot decode {args}"))
                            .on(ids.0, ids.1),
                    );
                    return Err(Stop::Done);
                }
            }
        } else {
            None
        };
        if self.closing.is_some() {
            return match method {
                Some(AMQPClass::Connection(connection::AMQPMethod::CloseOk(_))) => Err(Stop::Done),
                Some(AMQPClass::Connection(connection::AMQPMethod::Close(_))) => {
                    self.send_close_ok();
                    Err(Stop::Done)
                }
                _ => Ok(()),
            };
        }
        if f.channel == 0 {
            return self.on_channel0(f, method);
        }
        if let Some(AMQPClass::Basic(amq_protocol::protocol::basic::AMQPMethod::Publish(_))) =
            &method
        {
            self.publisher = true;
        }
        if f.kind == frame::FRAME_HEARTBEAT {
            self.start_close(AmqpError::new(
                Code::UnexpectedFrame,
                "type 8, all octets = <<>>".to_string(),
            ));
            return Ok(());
        }
        self.on_channel_frame(f, method);
        Ok(())
    }

    fn send_close_ok(&mut self) {
        self.outbox.method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::CloseOk(connection::CloseOk {})),
        );
    }

    fn on_channel0(&mut self, f: RawFrame, method: Option<AMQPClass>) -> Result<(), Stop> {
        match (f.kind, method) {
            (frame::FRAME_HEARTBEAT, _) => Ok(()),
            (_, Some(AMQPClass::Connection(connection::AMQPMethod::Close(_)))) => {
                // Reply, then let the client close the socket first (as RabbitMQ in practice
                // does): clients report a server-side close right after close-ok as an error.
                self.send_close_ok();
                self.drop_channels();
                // Exclusive queues go with the connection now, not when the socket closes.
                self.shared
                    .state
                    .lock()
                    .expect("state lock")
                    .remove_connection(self.id);
                self.closing = Some(Instant::now() + Duration::from_secs(1));
                Ok(())
            }
            (_, Some(AMQPClass::Connection(connection::AMQPMethod::CloseOk(_)))) => Err(Stop::Done),
            (_, Some(AMQPClass::Connection(connection::AMQPMethod::UpdateSecret(_)))) => {
                self.outbox.method(
                    0,
                    AMQPClass::Connection(connection::AMQPMethod::UpdateSecretOk(
                        connection::UpdateSecretOk {},
                    )),
                );
                Ok(())
            }
            (_, Some(m)) => {
                let (c, mid) = (m.get_amqp_class_id(), m.get_amqp_method_id());
                self.start_close(
                    AmqpError::new(
                        Code::ChannelError,
                        "unexpected method in connection state running",
                    )
                    .on(c, mid),
                );
                Ok(())
            }
            (kind, None) => {
                let (which, snip) = frame::snippet(&f.payload);
                self.start_close(AmqpError::new(
                    Code::UnexpectedFrame,
                    format!("type {kind}, {which} octets = {snip}"),
                ));
                Ok(())
            }
        }
    }

    fn on_channel_frame(&mut self, f: RawFrame, method: Option<AMQPClass>) {
        let id = f.channel;
        let key = ChannelKey {
            conn: self.id,
            channel: id,
        };
        let Some(ch) = self.channels.get_mut(&id) else {
            match method {
                Some(AMQPClass::Channel(channel::AMQPMethod::Open(_))) => {
                    if self.channels.len() >= self.channel_max as usize {
                        self.start_close(
                            AmqpError::new(
                                Code::NotAllowed,
                                format!(
                                    "number of channels opened ({}) has reached the negotiated channel_max ({})",
                                    self.channels.len(),
                                    self.channel_max
                                ),
                            )
                        );
                        return;
                    }
                    self.channels.insert(id, Channel::new(id));
                    self.shared
                        .state
                        .lock()
                        .expect("state lock")
                        .open_channel(key, &self.vhost);
                    self.outbox.method(
                        id,
                        AMQPClass::Channel(channel::AMQPMethod::OpenOk(channel::OpenOk {})),
                    );
                }
                Some(m) => {
                    let (c, mid) = (m.get_amqp_class_id(), m.get_amqp_method_id());
                    self.start_close(
                        AmqpError::new(Code::ChannelError, "expected 'channel.open'").on(c, mid),
                    );
                }
                None => self.start_close(AmqpError::new(
                    Code::UnexpectedFrame,
                    "expected method frame, got non method frame instead",
                )),
            }
            return;
        };
        if ch.closing {
            match method {
                Some(AMQPClass::Channel(channel::AMQPMethod::CloseOk(_))) => {
                    self.channels.remove(&id);
                }
                Some(AMQPClass::Channel(channel::AMQPMethod::Close(_))) => {
                    self.outbox.method(
                        id,
                        AMQPClass::Channel(channel::AMQPMethod::CloseOk(channel::CloseOk {})),
                    );
                }
                _ => {}
            }
            return;
        }
        if let Some(AMQPClass::Channel(channel::AMQPMethod::Close(_))) = method {
            let mut state = self.shared.state.lock().expect("state lock");
            close_in_state(ch, &mut state, key);
            drop(state);
            self.channels.remove(&id);
            self.outbox.method(
                id,
                AMQPClass::Channel(channel::AMQPMethod::CloseOk(channel::CloseOk {})),
            );
            return;
        }
        let ctx = Ctx {
            state: &self.shared.state,
            conn: self.id,
            outbox: &self.outbox,
            vhost: &self.vhost,
            user: &self.user,
            max_message_size: self.shared.config.limits.max_message_size,
        };
        if let Err(err) = ch.on_frame(&ctx, f, method) {
            if err.code.is_hard() {
                self.start_close(err);
            } else {
                tracing::debug!(conn = self.id, channel = id, text = %err.text, "channel error");
                ch.closing = true;
                self.outbox.method(
                    id,
                    AMQPClass::Channel(channel::AMQPMethod::Close(channel::Close {
                        reply_code: err.code as u16,
                        reply_text: reply_text(&err.text),
                        class_id: err.class_id,
                        method_id: err.method_id,
                    })),
                );
                let mut state = self.shared.state.lock().expect("state lock");
                close_in_state(ch, &mut state, key);
            }
        }
    }
}

/// Encodes a frame carrying a message: a hand-written method frame (this is the hot path, and
/// these three methods are simple), then the message's header and body frames.
fn encode_content(out: &mut Vec<u8>, item: &Out, frame_max: u32) {
    let start = out.len();
    out.put_u8(frame::FRAME_METHOD);
    let (channel, msg) = match item {
        Out::Deliver {
            channel,
            consumer_tag,
            delivery_tag,
            redelivered,
            msg,
        } => {
            out.put_u16(*channel);
            out.put_u32(0);
            out.put_u16(60);
            out.put_u16(60);
            frame::put_short_str(out, consumer_tag);
            out.put_u64(*delivery_tag);
            out.put_u8(*redelivered as u8);
            frame::put_short_str(out, &msg.exchange);
            frame::put_short_str(out, &msg.routing_key);
            (*channel, msg)
        }
        Out::GetOk {
            channel,
            delivery_tag,
            redelivered,
            message_count,
            msg,
        } => {
            out.put_u16(*channel);
            out.put_u32(0);
            out.put_u16(60);
            out.put_u16(71);
            out.put_u64(*delivery_tag);
            out.put_u8(*redelivered as u8);
            frame::put_short_str(out, &msg.exchange);
            frame::put_short_str(out, &msg.routing_key);
            out.put_u32(*message_count);
            (*channel, msg)
        }
        Out::Return {
            channel,
            reply_code,
            reply_text,
            msg,
        } => {
            out.put_u16(*channel);
            out.put_u32(0);
            out.put_u16(60);
            out.put_u16(50);
            out.put_u16(*reply_code);
            frame::put_short_str(out, reply_text);
            frame::put_short_str(out, &msg.exchange);
            frame::put_short_str(out, &msg.routing_key);
            (*channel, msg)
        }
        _ => unreachable!("only content-carrying items"),
    };
    let size = (out.len() - start - 7) as u32;
    out[start + 3..start + 7].copy_from_slice(&size.to_be_bytes());
    out.put_u8(frame::FRAME_END);
    frame::write_header(out, channel, &msg.header);
    frame::write_body(out, channel, &msg.body, frame_max);
}

/// Merges publisher confirms: a run of confirms with consecutive tags, starting right after the
/// last tag confirmed on the channel, becomes one frame with `multiple` set (as RabbitMQ sends
/// them). Confirms that arrive out of order (a persisted message waiting for fsync while later
/// transient ones are confirmed) go out one by one.
#[derive(Default)]
struct Confirms {
    /// Per channel: the lowest tag not yet confirmed.
    next: HashMap<u16, u64>,
    /// Per channel: tags above `next` already confirmed individually.
    ahead: HashMap<u16, std::collections::BTreeSet<u64>>,
    /// Confirms collected since the last flush: (channel, tag, ack).
    pending: Vec<(u16, u64, bool)>,
}

impl Confirms {
    fn reset(&mut self, channel: u16) {
        self.next.remove(&channel);
        self.ahead.remove(&channel);
    }

    fn flush(&mut self, out: &mut Vec<u8>) {
        if self.pending.is_empty() {
            return;
        }
        let emit = |out: &mut Vec<u8>, ch: u16, tag: u64, ack: bool, multiple: bool| {
            let m = if ack {
                amq_protocol::protocol::basic::AMQPMethod::Ack(amq_protocol::protocol::basic::Ack {
                    delivery_tag: tag,
                    multiple,
                })
            } else {
                amq_protocol::protocol::basic::AMQPMethod::Nack(
                    amq_protocol::protocol::basic::Nack {
                        delivery_tag: tag,
                        multiple,
                        requeue: false,
                    },
                )
            };
            frame::write_method(out, ch, AMQPClass::Basic(m));
        };
        // Open runs per channel: (start, end, ack).
        let mut runs: Vec<(u16, u64, u64, bool)> = Vec::new();
        for (ch, tag, ack) in std::mem::take(&mut self.pending) {
            let next = self.next.entry(ch).or_insert(1);
            if tag != *next {
                emit(out, ch, tag, ack, false);
                self.ahead.entry(ch).or_default().insert(tag);
                continue;
            }
            *next = tag + 1;
            let ahead = self.ahead.entry(ch).or_default();
            while ahead.remove(next) {
                *next += 1;
            }
            let end = *next - 1;
            match runs.iter_mut().find(|r| r.0 == ch) {
                Some(r) if r.3 == ack && r.2 + 1 == tag => r.2 = end,
                Some(r) => {
                    emit(out, r.0, r.2, r.3, r.2 > r.1);
                    *r = (ch, tag, end, ack);
                }
                None => runs.push((ch, tag, end, ack)),
            }
        }
        for (ch, start, end, ack) in runs {
            emit(out, ch, end, ack, end > start);
        }
    }
}

/// Writes everything queued for a connection, batching, and sends heartbeats when idle.
/// What the writer shares with the outbox: the bytes still queued, and the signal that a
/// backlog drained.
struct Backlog {
    queued: Arc<AtomicUsize>,
    drained: Arc<tokio::sync::Notify>,
}

async fn write_loop(
    mut wr: OwnedWriteHalf,
    mut rx: mpsc::UnboundedReceiver<Out>,
    backlog: Backlog,
    frame_max: u32,
    heartbeat: u16,
    shared: Arc<Shared>,
    conn: ConnId,
) {
    let Backlog { queued, drained } = backlog;
    let mut out: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut confirms = Confirms::default();
    let interval = (heartbeat > 0).then(|| Duration::from_secs(heartbeat as u64));
    let mut last_write = Instant::now();
    loop {
        let first = match interval {
            Some(iv) => {
                tokio::select! {
                    m = rx.recv() => m,
                    _ = tokio::time::sleep_until(last_write + iv) => {
                        frame::write_heartbeat(&mut out);
                        if wr.write_all(&out).await.is_err() {
                            return;
                        }
                        out.clear();
                        last_write = Instant::now();
                        continue;
                    }
                }
            }
            None => rx.recv().await,
        };
        let Some(first) = first else {
            let _ = wr.shutdown().await;
            return;
        };
        let mut weight = 0usize;
        let mut close = false;
        let mut next = Some(first);
        while let Some(item) = next.take() {
            weight += Outbox::weight(&item);
            match item {
                Out::Confirm { channel, tag, ack } => confirms.pending.push((channel, tag, ack)),
                Out::Method(ch, m) => {
                    // Confirms go out before any other method, e.g. a channel.close-ok.
                    confirms.flush(&mut out);
                    if matches!(
                        m,
                        AMQPClass::Channel(
                            channel::AMQPMethod::OpenOk(_) | channel::AMQPMethod::CloseOk(_)
                        )
                    ) {
                        confirms.reset(ch);
                    }
                    frame::write_method(&mut out, ch, m);
                }
                Out::Close => close = true,
                content => encode_content(&mut out, &content, frame_max),
            }
            if close || out.len() >= 128 * 1024 {
                break;
            }
            next = rx.try_recv().ok();
        }
        confirms.flush(&mut out);
        if wr.write_all(&out).await.is_err() {
            // The peer is gone; the reader side notices and cleans up. Keep draining so
            // senders never block and queued counts stay right.
            queued.fetch_sub(weight, Ordering::Relaxed);
            out.clear();
            if close {
                return;
            }
            continue;
        }
        out.clear();
        if out.capacity() > 1024 * 1024 {
            out.shrink_to(64 * 1024);
        }
        last_write = Instant::now();
        // The value before this subtraction includes anything delivered meanwhile, so a delivery
        // that pushed the outbox over the mark is seen here and never leaves consumers stalled.
        let before = queued.fetch_sub(weight, Ordering::Relaxed);
        let after = before - weight;
        if before > 4 * crate::state::OUTBOX_HIGH_WATER
            && after <= 4 * crate::state::OUTBOX_HIGH_WATER
        {
            drained.notify_one();
        }
        if before > crate::state::OUTBOX_HIGH_WATER && after <= crate::state::OUTBOX_HIGH_WATER {
            shared
                .state
                .lock()
                .expect("state lock")
                .resume_connection(conn);
        }
        if close {
            let _ = wr.flush().await;
            let _ = wr.shutdown().await;
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(mut buf: &[u8]) -> Vec<(u64, bool, bool)> {
        let mut out = Vec::new();
        while !buf.is_empty() {
            let (rest, f) = amq_protocol::frame::parse_frame(buf).unwrap();
            buf = rest;
            match f {
                amq_protocol::frame::AMQPFrame::Method(
                    _,
                    AMQPClass::Basic(amq_protocol::protocol::basic::AMQPMethod::Ack(a)),
                ) => out.push((a.delivery_tag, true, a.multiple)),
                amq_protocol::frame::AMQPFrame::Method(
                    _,
                    AMQPClass::Basic(amq_protocol::protocol::basic::AMQPMethod::Nack(n)),
                ) => out.push((n.delivery_tag, false, n.multiple)),
                other => panic!("unexpected {other:?}"),
            }
        }
        out
    }

    #[test]
    fn confirms_merge_only_contiguous_runs() {
        let mut c = Confirms::default();
        let mut out = Vec::new();
        c.pending = vec![(1, 1, true), (1, 2, true), (1, 3, true)];
        c.flush(&mut out);
        assert_eq!(decode_all(&out), vec![(3, true, true)]);
        // 5 confirmed before 4 (4 waits for fsync): 5 alone, then 4 closes the gap.
        out.clear();
        c.pending = vec![(1, 5, true)];
        c.flush(&mut out);
        c.pending = vec![(1, 4, true), (1, 6, false), (1, 7, false)];
        c.flush(&mut out);
        assert_eq!(
            decode_all(&out),
            vec![(5, true, false), (5, true, true), (7, false, true)]
        );
    }

    #[test]
    fn plain_and_amqplain_credentials() {
        assert_eq!(
            credentials("PLAIN", b"\0guest\0secret"),
            Some(("guest".into(), "secret".into()))
        );
        let mut t = FieldTable::default();
        t.insert("LOGIN".into(), AMQPValue::LongString("bob".into()));
        t.insert("PASSWORD".into(), AMQPValue::LongString("pw".into()));
        let buf = amq_protocol::types::generation::gen_field_table(&t)(
            amq_protocol::frame::WriteContext::from(Vec::new()),
        )
        .unwrap()
        .write;
        assert_eq!(
            credentials("AMQPLAIN", &buf[4..]),
            Some(("bob".into(), "pw".into()))
        );
        assert_eq!(credentials("PLAIN", b"garbage"), None);
    }
}
