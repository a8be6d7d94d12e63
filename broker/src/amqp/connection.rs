//! One client connection: protocol header, handshake (start, tune, open), then the frame loop
//! that multiplexes channels, heartbeats both ways, and closing in either direction.
//!
//! Reading and handling happen in the connection's task; writing happens in a writer task fed by
//! the connection's [`Outbox`], which batches everything queued into as few socket writes as
//! possible.

use super::channel::{close_in_state, release_tx, reply_text, Channel, Ctx};
use super::frame::{self, next_frame, RawFrame};
use super::handshake::{close_method, handshake, Peer, Track};
use super::outbox::{Out, Outbox};
use super::writer::{write_loop, Backlog};
use crate::core::error::{AmqpError, Code};
use crate::core::message::{ChannelKey, ConnId};
use crate::core::stats::ConnInfo;
use crate::shared::Shared;
use crate::transport::Transport;
use amq_protocol::protocol::{channel, connection, parse_class, AMQPClass};
use bytes::BytesMut;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::{timeout, Instant};

/// How long we wait for connection.close-ok after sending connection.close.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug)]
enum Stop {
    /// The peer went away or the socket failed.
    Gone,
    /// We are done (close handshake finished, or fatal error already reported).
    Done,
}

/// Serves one accepted stream (TCP, or TLS over TCP) until it closes.
pub(crate) async fn serve<S: Transport>(
    shared: Arc<Shared>,
    mut stream: S,
    peer: Peer,
    conn_id: ConnId,
    shutdown: watch::Receiver<bool>,
) {
    let mut buf = BytesMut::with_capacity(16 * 1024);
    // A vhost or user deletion, or the management API, asks the connection to close through
    // this.
    let (forced_tx, forced) = watch::channel(None::<String>);
    let forced_tx = Arc::new(forced_tx);
    let api_close = forced_tx.clone();
    let track = Track {
        id: conn_id,
        close: Box::new(move |why: &str| {
            forced_tx.send_replace(Some(why.to_string()));
        }),
    };
    // The whole handshake, from the first byte to open-ok, within RabbitMQ's
    // `handshake_timeout`: a socket that never finishes it is dropped, so idle sockets cannot
    // pile up (each holds this buffer and a task).
    let hs = match timeout(
        shared.config.limits.handshake_timeout,
        handshake(&shared, &mut stream, &mut buf, &peer, track),
    )
    .await
    {
        Ok(Ok(Some(hs))) => hs,
        Ok(Ok(None)) | Ok(Err(_)) => {
            shared.access.close_connection(conn_id);
            let _ = stream.shutdown().await;
            return;
        }
        Err(_) => {
            tracing::info!(peer = %peer.addr, "closing connection: handshake timeout");
            shared.access.close_connection(conn_id);
            let _ = stream.shutdown().await;
            return;
        }
    };
    let peer = peer.addr;
    tracing::debug!(%peer, user = %hs.user, vhost = %hs.vhost, "connection open");
    let (outbox, rx, queued) = Outbox::new(hs.cancel_notify);
    {
        let mut state = shared.state.lock();
        state.add_connection(conn_id, Arc::new(outbox.clone()));
        state.describe_connection(
            conn_id,
            ConnInfo {
                protocol: "AMQP 0-9-1".into(),
                peer,
                local: stream.local_addr().unwrap_or(peer),
                user: hs.user.clone(),
                vhost: hs.vhost.clone(),
                client_properties: hs.client_properties.clone(),
                tune: (hs.frame_max, hs.channel_max, hs.heartbeat),
                direct: false,
                connected_at: std::time::SystemTime::now(),
                close: Arc::new(move |reason: &str| {
                    api_close.send_replace(Some(reason.to_string()));
                }),
            },
        );
    }
    let (read_half, write_half) = stream.split();
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
        open_channels: hs.channels,
        frame_max: hs.frame_max,
        channel_max: hs.channel_max,
        channels: HashMap::new(),
        closing: None,
        publisher: false,
        blocked_capable: hs.blocked_capable,
    };
    let result = conn
        .run(read_half, buf, hs.heartbeat, shutdown, forced)
        .await;
    tracing::debug!(%peer, ?result, "connection closed");
    {
        let mut state = shared.state.lock();
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
    shared.access.close_connection(conn_id);
}

struct Connection {
    shared: Arc<Shared>,
    id: ConnId,
    outbox: Outbox,
    vhost: String,
    user: String,
    /// How many channels are open, for the user's channel limit (shared with the access
    /// layer's connection tracking).
    open_channels: Arc<AtomicUsize>,
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
        mut reader: impl AsyncRead + Unpin,
        mut buf: BytesMut,
        heartbeat: u16,
        mut shutdown: watch::Receiver<bool>,
        mut forced: watch::Receiver<Option<String>>,
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
                        let result = self.on_frame(f);
                        self.open_channels
                            .store(self.channels.len(), Ordering::Relaxed);
                        if let Err(stop) = result {
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
                Ok(()) = forced.changed(), if self.closing.is_none() => {
                    // 320 with the reason given: a deleted vhost or user, or the management
                    // API (its X-Reason header, else "Closed via management plugin").
                    let why = forced.borrow_and_update().clone().unwrap_or_default();
                    self.start_close(AmqpError::new(Code::ConnectionForced, why));
                }
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
        let mut state = self.shared.state.lock();
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
            let decoded = if frame::method_tables_within(&f.payload) {
                parse_class(&f.payload[..]).ok().map(|(_, m)| m)
            } else {
                tracing::warn!(
                    conn = self.id,
                    "field tables nested too deep; refusing the frame"
                );
                None
            };
            match decoded {
                Some(m) => Some(m),
                None => {
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
                self.shared.state.lock().remove_connection(self.id);
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

    /// A frame for a channel that is not open: channel.open opens it (within channel_max);
    /// anything else is a connection error, as in RabbitMQ.
    fn on_unopened_channel(&mut self, key: ChannelKey, method: Option<AMQPClass>) {
        let id = key.channel;
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
                if let Err(err) = self.shared.access.check_channel(self.id) {
                    self.start_close(err);
                    return;
                }
                self.channels.insert(id, Channel::new(id));
                self.shared.state.lock().open_channel(key, &self.vhost);
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
    }

    fn on_channel_frame(&mut self, f: RawFrame, method: Option<AMQPClass>) {
        let id = f.channel;
        let key = ChannelKey {
            conn: self.id,
            channel: id,
        };
        if !self.channels.contains_key(&id) {
            self.on_unopened_channel(key, method);
            return;
        }
        let ch = self.channels.get_mut(&id).expect("checked above");
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
            let mut state = self.shared.state.lock();
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
            access: &self.shared.access,
            max_message_size: self.shared.config.limits.max_message_size,
        };
        // A bug that panics while serving this channel must not take the other connections
        // down: the panic is contained here (the state lock it poisoned is recovered by
        // StateLock) and this connection is closed with 541, as RabbitMQ closes a connection
        // whose channel process crashed.
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            ch.on_frame(&ctx, f, method)
        }));
        let result = outcome.unwrap_or_else(|_| {
            tracing::error!(
                conn = self.id,
                channel = id,
                "handler panicked; closing connection"
            );
            Err(AmqpError::new(
                Code::InternalError,
                format!("the broker failed while serving channel {id}"),
            ))
        });
        if let Err(err) = result {
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
                let mut state = self.shared.state.lock();
                close_in_state(ch, &mut state, key);
            }
        }
    }
}
