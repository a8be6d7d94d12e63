//! One MQTT connection, over TCP or a WebSocket: waits (at most 10 s, RabbitMQ's
//! `mqtt.login_timeout`) for CONNECT, logs the client in, takes its client id over, then reads
//! packets into its [`Session`] and writes what the session and the core send back, until
//! DISCONNECT, an error, a missed keep-alive, a takeover or the broker's shutdown.
//!
//! As in RabbitMQ, the will is published when the client vanished (the socket closed or
//! failed without DISCONNECT, or it was silent for 1.5 keep-alive intervals), not after a
//! protocol error, a refused operation, a takeover, or a close by the broker (its vhost or
//! user deleted, the management API). While a memory or disk alarm is on, no connection is
//! read.
//!
//! Once logged in, a connection is counted against the vhost's and the user's connection
//! limits (`core::access`) and listed by the management API as RabbitMQ lists it: a direct
//! connection named after its socket, protocol `MQTT 3.1.1` (`MQTT 3.1.0` for 3.1 clients,
//! `Web MQTT ...` over WebSocket), one channel, client properties `product` and
//! `client_id`.

use super::codec::{connect_level, next_packet, CodecError};
use super::login::login;
use super::session::{encoded, Close, Opening, Session};
use super::MqttShared;
use crate::core::message::ConnId;
use crate::core::sink::{Event, Sink};
use crate::core::stats::ConnInfo;
use crate::shared::Shared;
use crate::ws::{MessageKind, WsConnection, WsReader, WsWriter};
use amq_protocol::types::{AMQPValue, FieldTable, LongString};
use bytes::{Bytes, BytesMut};
use mqttbytes::v4::{ConnAck, Connect, ConnectReturnCode, Packet};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};
use tokio::sync::watch;
use tokio::time::Instant;

/// How long a client has to send CONNECT (RabbitMQ's `mqtt.login_timeout`).
const LOGIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Above this many queued outbound bytes the core stops delivering to the connection.
const HIGH_WATER: usize = 4 * 1024 * 1024;

/// What reaches the connection task besides the socket's bytes.
#[derive(Debug)]
pub(crate) enum ToConn {
    /// An event of the core (a delivery).
    Core(Event),
    /// An encoded packet (a PUBACK released by an fsync).
    Packet(Bytes),
}

/// The connection's [`Sink`]: the core's events go to the connection task.
#[derive(Debug)]
struct MqttSink {
    tx: UnboundedSender<ToConn>,
    queued: Arc<AtomicUsize>,
    /// The core was told the connection is congested: resume it once drained.
    stalled: Arc<AtomicBool>,
}

impl Sink for MqttSink {
    fn send(&self, event: Event) {
        self.queued.fetch_add(event.weight(), Ordering::Relaxed);
        let _ = self.tx.send(ToConn::Core(event));
    }

    fn congested(&self) -> bool {
        let congested = self.queued.load(Ordering::Relaxed) > HIGH_WATER;
        if congested {
            self.stalled.store(true, Ordering::Relaxed);
        }
        congested
    }
}

/// A client's byte stream: a socket, or a WebSocket whose messages carry the packets.
pub(crate) enum Transport<S> {
    /// MQTT over TCP (or TLS).
    Stream(S),
    /// MQTT over WebSocket (subprotocol `mqtt`): one packet per binary message out.
    Ws(WsConnection<S>),
}

enum Reader<S> {
    Stream(ReadHalf<S>),
    Ws(WsReader<S>),
}

enum Writer<S> {
    Stream(WriteHalf<S>),
    Ws(WsWriter<S>),
}

impl<S: AsyncRead + AsyncWrite + Unpin> Reader<S> {
    /// Appends what arrives to `buf`; 0 when the client closed.
    async fn read(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        match self {
            Reader::Stream(r) => r.read_buf(buf).await,
            Reader::Ws(r) => Ok(match r.recv().await? {
                Some(data) if data.is_empty() => 1, // an empty message is not a close
                Some(data) => {
                    buf.extend_from_slice(&data);
                    data.len()
                }
                None => 0,
            }),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Writer<S> {
    async fn write(&mut self, packets: Vec<Bytes>) -> io::Result<()> {
        if packets.is_empty() {
            return Ok(());
        }
        match self {
            Writer::Stream(w) => {
                let mut all = BytesMut::with_capacity(packets.iter().map(Bytes::len).sum());
                for p in packets {
                    all.extend_from_slice(&p);
                }
                w.write_all(&all).await?;
                w.flush().await
            }
            Writer::Ws(w) => {
                for p in packets {
                    w.feed(p, MessageKind::Binary).await?;
                }
                w.flush().await
            }
        }
    }

    async fn close(&mut self) {
        match self {
            Writer::Stream(w) => {
                let _ = w.shutdown().await;
            }
            Writer::Ws(w) => w.close().await,
        }
    }
}

/// How the main loop ended.
enum End {
    /// DISCONNECT, an error, a takeover or shutdown: no will.
    Quiet,
    /// The client vanished (socket closed, failed, or keep-alive missed): the will goes out.
    Vanished,
}

/// What the whole connection needs.
pub(crate) struct Conn {
    pub(crate) shared: Arc<Shared>,
    pub(crate) mqtt: Arc<MqttShared>,
    pub(crate) id: ConnId,
    pub(crate) peer: SocketAddr,
    /// The broker's address the client connected to.
    pub(crate) local: SocketAddr,
    /// Whether the client came over WebSocket (Web-MQTT).
    pub(crate) web: bool,
    pub(crate) shutdown: watch::Receiver<bool>,
}

/// Asks a connection to close (a deleted vhost or user, the management API); the reason is
/// for the log, since MQTT 3.1.1 has no way to tell the client.
type Forced = watch::Receiver<Option<String>>;

/// Serves one accepted client until its connection ends.
pub(crate) async fn serve<S>(c: Conn, transport: Transport<S>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut reader, mut writer) = match transport {
        Transport::Stream(s) => {
            let (r, w) = tokio::io::split(s);
            (Reader::Stream(r), Writer::Stream(w))
        }
        Transport::Ws(ws) => (Reader::Ws(ws.reader), Writer::Ws(ws.writer)),
    };
    let max = usize::try_from(c.shared.config.limits.max_message_size).unwrap_or(usize::MAX);
    let mut buf = BytesMut::with_capacity(8 * 1024);
    let first = tokio::time::timeout(LOGIN_TIMEOUT, first_packet(&mut reader, &mut buf, max)).await;
    let (connect, level) = match first {
        Ok(Ok((Packet::Connect(connect), level))) => (connect, level),
        Ok(Ok(other)) => {
            tracing::warn!(peer = %c.peer, ?other, "MQTT: the first packet is not CONNECT; closing");
            return writer.close().await;
        }
        Ok(Err(e)) => {
            tracing::warn!(peer = %c.peer, error = %e, "MQTT: cannot read CONNECT; closing");
            return writer.close().await;
        }
        Err(_) => {
            tracing::warn!(peer = %c.peer, "MQTT: no CONNECT within the login timeout; closing");
            return writer.close().await;
        }
    };
    let (tx, rx) = mpsc::unbounded_channel();
    let queued = Arc::new(AtomicUsize::new(0));
    let stalled = Arc::new(AtomicBool::new(false));
    let sink = MqttSink {
        tx: tx.clone(),
        queued: queued.clone(),
        stalled: stalled.clone(),
    };
    let keep_alive = connect.keep_alive;
    let (forced_tx, mut forced) = watch::channel(None::<String>);
    let Some((mut session, ticket)) =
        open(&c, connect, level, sink, tx, forced_tx, &mut writer).await
    else {
        return writer.close().await;
    };
    tracing::info!(peer = %c.peer, client_id = session.client_id(), "MQTT connection open");
    let mut run = Running {
        c: &c,
        session: &mut session,
        buf,
        max,
        rx,
        queued,
        stalled,
        keep_alive,
    };
    let end = run
        .run(&mut reader, &mut writer, &ticket.kicked, &mut forced)
        .await;
    if let End::Vanished = end {
        session.publish_will();
    }
    c.shared.state.lock().remove_connection(c.id);
    c.mqtt.registry.unregister(session.client_id(), c.id);
    ticket.release();
    let _ = writer.write(std::mem::take(&mut session.out)).await;
    writer.close().await;
    c.shared.access.close_connection(c.id);
    tracing::info!(peer = %c.peer, client_id = session.client_id(), "MQTT connection closed");
}

/// Reads until the first whole packet; with it, the protocol level of a CONNECT (4 for
/// anything else).
async fn first_packet<S: AsyncRead + AsyncWrite + Unpin>(
    reader: &mut Reader<S>,
    buf: &mut BytesMut,
    max: usize,
) -> Result<(Packet, u8), CodecError> {
    loop {
        let level = connect_level(buf).unwrap_or(4);
        if let Some(p) = next_packet(buf, max)? {
            return Ok((p, level));
        }
        match reader.read(buf).await {
            Ok(0) | Err(_) => return Err(CodecError::Malformed("connection closed".into())),
            Ok(_) => {}
        }
    }
}

/// CONNECT: the client id, the login, the takeover of the id, the session on the core; answers
/// CONNACK. None when refused (the refusal was written, and the connection is no longer
/// counted). `level` is the CONNECT's protocol level; `forced` closes the connection.
async fn open<S: AsyncRead + AsyncWrite + Unpin>(
    c: &Conn,
    connect: Connect,
    level: u8,
    sink: MqttSink,
    tx: UnboundedSender<ToConn>,
    forced: watch::Sender<Option<String>>,
    writer: &mut Writer<S>,
) -> Option<(Session, super::registry::Ticket)> {
    let refuse = |code| vec![encoded(&Packet::ConnAck(ConnAck::new(code, false)))];
    if connect.client_id.is_empty() && !connect.clean_session {
        let _ = writer.write(refuse(ConnectReturnCode::BadClientId)).await;
        return None;
    }
    let credentials = connect
        .login
        .as_ref()
        .map(|l| (l.username.as_str(), l.password.as_str()));
    let forced = Arc::new(forced);
    let close = {
        let forced = forced.clone();
        move |why: &str| {
            forced.send_replace(Some(why.to_string()));
        }
    };
    let who = match login(
        &c.shared,
        credentials,
        c.peer.ip(),
        c.id,
        Box::new(close.clone()),
    ) {
        Ok(who) => who,
        Err(code) => {
            let _ = writer.write(refuse(code)).await;
            return None;
        }
    };
    let client_id = if connect.client_id.is_empty() {
        uuid::Uuid::new_v4().simple().to_string()
    } else {
        connect.client_id
    };
    let ticket = c.mqtt.registry.register(&client_id, c.id).await;
    {
        let mut state = c.shared.state.lock();
        state.add_connection(c.id, Arc::new(sink));
        state.describe_connection(c.id, describe(c, &who, &client_id, level, Arc::new(close)));
    }
    let opening = Opening {
        shared: c.shared.clone(),
        mqtt: c.mqtt.clone(),
        conn: c.id,
        user: who.user,
        vhost: who.vhost,
        client_id: client_id.clone(),
        clean: connect.clean_session,
        will: connect.last_will,
        to_conn: tx,
    };
    match Session::open(opening) {
        Ok(mut session) => {
            let out = std::mem::take(&mut session.out);
            if writer.write(out).await.is_err() {
                // Gone before CONNACK: the session is undone as after any close.
                c.shared.state.lock().remove_connection(c.id);
                c.mqtt.registry.unregister(&client_id, c.id);
                ticket.release();
                c.shared.access.close_connection(c.id);
                return None;
            }
            Some((session, ticket))
        }
        Err(code) => {
            c.shared.state.lock().remove_connection(c.id);
            c.mqtt.registry.unregister(&client_id, c.id);
            ticket.release();
            c.shared.access.close_connection(c.id);
            let _ = writer.write(refuse(code)).await;
            None
        }
    }
}

/// The connection as the management API lists it (RabbitMQ's adapter info for MQTT).
fn describe(
    c: &Conn,
    who: &super::login::LoggedIn,
    client_id: &str,
    level: u8,
    close: Arc<dyn Fn(&str) + Send + Sync>,
) -> ConnInfo {
    let version = if level == 3 { "3.1.0" } else { "3.1.1" };
    let name = if c.web { "Web MQTT" } else { "MQTT" };
    let mut props = FieldTable::default();
    props.insert(
        "product".into(),
        AMQPValue::LongString(LongString::from("MQTT client")),
    );
    props.insert(
        "client_id".into(),
        AMQPValue::LongString(LongString::from(client_id)),
    );
    ConnInfo {
        protocol: format!("{name} {version}"),
        peer: c.peer,
        local: c.local,
        user: who.user.clone(),
        vhost: who.vhost.clone(),
        client_properties: props,
        tune: (0, 1, 0),
        direct: true,
        connected_at: std::time::SystemTime::now(),
        close,
    }
}

/// The main loop's state.
struct Running<'a> {
    c: &'a Conn,
    session: &'a mut Session,
    buf: BytesMut,
    max: usize,
    rx: UnboundedReceiver<ToConn>,
    queued: Arc<AtomicUsize>,
    stalled: Arc<AtomicBool>,
    keep_alive: u16,
}

impl Running<'_> {
    async fn run<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        reader: &mut Reader<S>,
        writer: &mut Writer<S>,
        kicked: &tokio::sync::Notify,
        forced: &mut Forced,
    ) -> End {
        // A client silent for 1.5 keep-alive intervals is gone (MQTT 3.1.1, 3.1.2.10).
        let limit =
            (self.keep_alive > 0).then(|| Duration::from_millis(u64::from(self.keep_alive) * 1500));
        let mut last_read = Instant::now();
        let mut alarm = self.c.shared.alarm.subscribe();
        let mut shutdown = self.c.shutdown.clone();
        loop {
            if let Err(end) = self.handle_buffered() {
                return end;
            }
            if writer
                .write(std::mem::take(&mut self.session.out))
                .await
                .is_err()
            {
                return End::Vanished;
            }
            let blocked = *alarm.borrow_and_update();
            let deadline = match limit {
                Some(l) if !blocked => last_read + l,
                _ => Instant::now() + Duration::from_secs(3600),
            };
            tokio::select! {
                r = reader.read(&mut self.buf), if !blocked => match r {
                    Ok(0) | Err(_) => return End::Vanished,
                    Ok(_) => last_read = Instant::now(),
                },
                Some(msg) = self.rx.recv() => {
                    if let Err(end) = self.handle_inbound(msg) {
                        return end;
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {
                    if limit.is_some() && !blocked {
                        tracing::warn!(client_id = self.session.client_id(), "MQTT keep-alive timeout; closing");
                        return End::Vanished;
                    }
                }
                _ = alarm.changed() => last_read = Instant::now(),
                _ = kicked.notified() => return End::Quiet,
                Ok(()) = forced.changed() => {
                    let why = forced.borrow().clone().unwrap_or_default();
                    tracing::warn!(client_id = self.session.client_id(), %why, "MQTT connection closed by the broker");
                    return End::Quiet;
                }
                _ = shutdown.changed() => return End::Quiet,
            }
        }
    }

    /// Handles every whole packet in the buffer.
    fn handle_buffered(&mut self) -> Result<(), End> {
        loop {
            let packet = match next_packet(&mut self.buf, self.max) {
                Ok(Some(p)) => p,
                Ok(None) => return Ok(()),
                Err(e) => {
                    tracing::warn!(client_id = self.session.client_id(), error = %e, "MQTT protocol error; closing");
                    return Err(End::Quiet);
                }
            };
            let session = &mut *self.session;
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                session.on_packet(packet)
            }));
            self.check(outcome)?;
        }
    }

    /// Handles what the core or an fsync sent, and everything else already queued.
    fn handle_inbound(&mut self, first: ToConn) -> Result<(), End> {
        let mut next = Some(first);
        while let Some(msg) = next.take().or_else(|| self.rx.try_recv().ok()) {
            match msg {
                ToConn::Packet(p) => self.session.out.push(p),
                ToConn::Core(event) => {
                    self.queued.fetch_sub(event.weight(), Ordering::Relaxed);
                    let session = &mut *self.session;
                    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        session.on_event(event)
                    }));
                    self.check(outcome)?;
                }
            }
        }
        if self.stalled.swap(false, Ordering::Relaxed) {
            self.c.shared.state.lock().resume_connection(self.c.id);
        }
        Ok(())
    }

    fn check(&self, outcome: std::thread::Result<Result<(), Close>>) -> Result<(), End> {
        match outcome {
            Ok(Ok(())) => Ok(()),
            Ok(Err(Close::Disconnect)) => Err(End::Quiet),
            Ok(Err(Close::Error(why))) => {
                tracing::warn!(client_id = self.session.client_id(), %why, "MQTT connection error; closing");
                Err(End::Quiet)
            }
            Err(_) => {
                tracing::error!(
                    client_id = self.session.client_id(),
                    "MQTT handler panicked; closing the connection"
                );
                Err(End::Quiet)
            }
        }
    }
}
