//! The connection handshake: protocol header, start / start-ok (PLAIN and AMQPLAIN), tune /
//! tune-ok, open / open-ok, with RabbitMQ's answers to every way a client can get it wrong.

use super::channel::reply_text;
use super::frame::{self, next_frame, RawFrame, FRAME_MIN_SIZE, PROTOCOL_HEADER};
use crate::core::access::{AuthUser, Closer};
use crate::core::error::{AmqpError, Code};
use crate::core::message::ConnId;
use crate::shared::Shared;
use crate::tls::TlsPeer;
use amq_protocol::protocol::{connection, parse_class, AMQPClass};
use amq_protocol::types::{AMQPValue, FieldTable, LongString};
use bytes::{BufMut, BytesMut};
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub(super) struct Handshake {
    pub(super) blocked_capable: bool,
    pub(super) user: String,
    /// Channels open on the connection, counted against the user's channel limit.
    pub(super) channels: Arc<AtomicUsize>,
    pub(super) vhost: String,
    pub(super) frame_max: u32,
    pub(super) channel_max: u16,
    pub(super) heartbeat: u16,
    pub(super) cancel_notify: bool,
    pub(super) client_properties: amq_protocol::types::FieldTable,
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

/// A stream the handshake runs over (TCP or TLS).
pub(super) trait Io: AsyncRead + AsyncWrite + Unpin {}
impl<T: AsyncRead + AsyncWrite + Unpin> Io for T {}

async fn write_frames(stream: &mut impl Io, f: impl FnOnce(&mut Vec<u8>)) -> std::io::Result<()> {
    let mut out = Vec::new();
    f(&mut out);
    stream.write_all(&out).await?;
    stream.flush().await
}

async fn read_frame(stream: &mut impl Io, buf: &mut BytesMut) -> Result<Option<RawFrame>, ()> {
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

async fn read_method(stream: &mut impl Io, buf: &mut BytesMut) -> Option<AMQPClass> {
    let f = read_frame(stream, buf).await.ok()??;
    if f.kind != frame::FRAME_METHOD || f.channel != 0 {
        return None;
    }
    if !frame::method_tables_within(&f.payload) {
        return None;
    }
    parse_class(&f.payload[..]).ok().map(|(_, m)| m)
}

async fn close_handshake(stream: &mut impl Io, err: AmqpError) {
    let _ = write_frames(stream, |out| {
        frame::write_method(out, 0, close_method(&err));
    })
    .await;
    let _ = stream.flush().await;
    // Give the client a moment to read the close before the socket goes.
    tokio::time::sleep(Duration::from_millis(50)).await;
}

pub(super) fn close_method(err: &AmqpError) -> AMQPClass {
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
            if !crate::core::fieldtable::table_nesting_within(
                &framed,
                crate::core::fieldtable::MAX_TABLE_DEPTH,
            ) {
                return None;
            }
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

/// Who is connecting: the address, and over TLS what the certificate says.
pub(crate) struct Peer {
    pub(crate) addr: SocketAddr,
    pub(crate) tls: Option<TlsPeer>,
}

/// The mechanisms offered in connection.start: EXTERNAL too on a listener that verifies client
/// certificates (as RabbitMQ with `rabbitmq_auth_mechanism_ssl` enabled, which offers it on every
/// TLS connection and refuses a peer without a certificate when it picks it).
fn mechanisms(peer: &Peer) -> &'static str {
    match &peer.tls {
        Some(tls) if tls.external => "PLAIN AMQPLAIN EXTERNAL",
        _ => "PLAIN AMQPLAIN",
    }
}

/// Checks a start-ok's credentials: the user who logs in, or why not (for the log). EXTERNAL
/// logs in the user its verified certificate names, without a password (RabbitMQ's
/// `rabbit_auth_mechanism_ssl`, with its refusal texts).
fn authenticate(
    shared: &Shared,
    mechanism: &str,
    response: &[u8],
    peer: &Peer,
) -> Result<AuthUser, String> {
    if mechanism == "EXTERNAL" {
        let tls = peer.tls.as_ref().ok_or("not a TLS-enabled connection")?;
        let name = tls.cert_name.clone()?;
        return shared.access.authenticate_by_name(&name, peer.addr.ip());
    }
    match credentials(mechanism, response) {
        Some((user, pass)) => shared.access.authenticate(&user, &pass, peer.addr.ip()),
        None => Err("invalid credentials format".to_string()),
    }
}

/// How the connection is known to the access layer once open: its id and how a vhost or user
/// deletion closes it.
pub(super) struct Track {
    pub(super) id: ConnId,
    pub(super) close: Closer,
}

/// How long RabbitMQ makes a client whose login failed wait before it closes the socket
/// (`?SILENT_CLOSE_DELAY` in rabbit_reader), so failed logins cannot be retried quickly.
const SILENT_CLOSE_DELAY: Duration = Duration::from_secs(3);

/// A refused login, as RabbitMQ answers it: connection.close 403 with a text that names only
/// the mechanism (when the client announced `authentication_failure_close`; otherwise nothing
/// is sent), then the socket is held for [`SILENT_CLOSE_DELAY`] before it is closed.
async fn refuse_login(stream: &mut impl Io, mechanism: &str, failure_close: bool) {
    if failure_close {
        let err = AmqpError::new(
            Code::AccessRefused,
            format!(
                "Login was refused using authentication mechanism {mechanism}. For details see the broker logfile."
            ),
        )
        .on(10, 11);
        let _ = write_frames(stream, |out| {
            frame::write_method(out, 0, close_method(&err))
        })
        .await;
        let _ = stream.flush().await;
    }
    tokio::time::sleep(SILENT_CLOSE_DELAY).await;
}

pub(super) async fn handshake(
    shared: &Shared,
    stream: &mut impl Io,
    buf: &mut BytesMut,
    peer: &Peer,
    track: Track,
) -> std::io::Result<Option<Handshake>> {
    while buf.len() < 8 {
        if stream.read_buf(buf).await? == 0 {
            return Ok(None);
        }
    }
    if &buf[..8] != PROTOCOL_HEADER {
        // Like RabbitMQ: answer with the protocol header we speak, then close.
        stream.write_all(PROTOCOL_HEADER).await?;
        stream.flush().await?;
        return Ok(None);
    }
    let _ = buf.split_to(8);
    let start = AMQPClass::Connection(connection::AMQPMethod::Start(connection::Start {
        version_major: 0,
        version_minor: 9,
        server_properties: server_properties(),
        mechanisms: LongString::from(mechanisms(peer)),
        locales: LongString::from("en_US"),
    }));
    write_frames(stream, |out| frame::write_method(out, 0, start)).await?;

    let Some(AMQPClass::Connection(connection::AMQPMethod::StartOk(start_ok))) =
        read_method(stream, buf).await
    else {
        return Ok(None);
    };
    let mechanism = start_ok.mechanism.as_str();
    if !mechanisms(peer).split(' ').any(|m| m == mechanism) {
        // Before the connection is open RabbitMQ reports this only in its log.
        tracing::warn!(peer = %peer.addr, mechanism, "unknown authentication mechanism");
        return Ok(None);
    }
    let capability = |name: &str| match start_ok.client_properties.inner().get("capabilities") {
        Some(AMQPValue::FieldTable(caps)) => {
            matches!(caps.inner().get(name), Some(AMQPValue::Boolean(true)))
        }
        _ => false,
    };
    let failure_close = capability("authentication_failure_close");
    let user = match authenticate(shared, mechanism, start_ok.response.as_bytes(), peer) {
        Ok(user) => user,
        Err(why) => {
            tracing::warn!(peer = %peer.addr, mechanism, "{mechanism} login refused: {why}");
            refuse_login(stream, mechanism, failure_close).await;
            return Ok(None);
        }
    };
    let cancel_notify = capability("consumer_cancel_notify");
    let blocked_capable = capability("connection.blocked");

    let Some((frame_max, channel_max, heartbeat)) = tune(shared, stream, buf, peer.addr).await?
    else {
        return Ok(None);
    };

    let Some(AMQPClass::Connection(connection::AMQPMethod::Open(open))) =
        read_method(stream, buf).await
    else {
        return Ok(None);
    };
    let vhost = open.virtual_host.to_string();
    let channels = Arc::new(AtomicUsize::new(0));
    if let Err(err) =
        shared
            .access
            .open_connection(track.id, &user.name, &vhost, channels.clone(), track.close)
    {
        tracing::error!(peer = %peer.addr, user = %user.name, vhost, "{}", err.text);
        close_handshake(stream, err.on(10, 40)).await;
        return Ok(None);
    }
    let open_ok = AMQPClass::Connection(connection::AMQPMethod::OpenOk(connection::OpenOk {}));
    write_frames(stream, |out| frame::write_method(out, 0, open_ok)).await?;
    Ok(Some(Handshake {
        blocked_capable,
        user: user.name,
        channels,
        vhost,
        frame_max,
        channel_max,
        heartbeat,
        cancel_notify,
        client_properties: start_ok.client_properties,
    }))
}

/// connection.tune / tune-ok: returns the negotiated (frame_max, channel_max, heartbeat), or
/// None when the client's answer is out of range (RabbitMQ then drops the socket).
async fn tune(
    shared: &Shared,
    stream: &mut impl Io,
    buf: &mut BytesMut,
    peer: SocketAddr,
) -> std::io::Result<Option<(u32, u16, u16)>> {
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
    Ok(Some((frame_max, channel_max, tune_ok.heartbeat)))
}

#[cfg(test)]
mod tests {
    use super::*;

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
