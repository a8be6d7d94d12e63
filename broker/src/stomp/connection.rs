//! One STOMP connection, whatever carries it (TCP, or a WebSocket): the reader loop that
//! decodes frames and hands them to the session, the login timeout, the client's heart-beats,
//! the resource alarm and the broker's shutdown; the writer task beside it (outbox.rs).
//!
//! As RabbitMQ: a client that has not logged in after 10 s is disconnected, a frame larger
//! than 4 MiB (64 KiB before CONNECT succeeds) or one that does not parse closes the
//! connection without an ERROR frame, a client silent for two of its heart-beat periods is
//! disconnected, and a publishing client is not read while a memory or disk alarm is on.
//!
//! A connection the broker closes (its vhost or user deleted, or the management API) gets
//! the ERROR RabbitMQ's plugin sends when its AMQP channel dies that way: `AMQP channel died`,
//! with the Erlang exit reason as the body.

use super::frame::{Decoder, FrameError};
use super::outbox::{error_frame, write_loop, Out, Outbox, Renderer, Wire};
use super::session::{Link, Session, Step};
use crate::core::message::ConnId;
use crate::shared::Shared;
use base64::Engine;
use bytes::BytesMut;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// How long a client has to log in (RabbitMQ's `stomp.login_timeout`).
const LOGIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest frame once logged in (RabbitMQ's `stomp.max_frame_size`).
pub(crate) const MAX_FRAME: usize = 4 * 1024 * 1024;
/// Largest frame before CONNECT succeeded (RabbitMQ's `max_frame_size_unauthenticated`).
pub(crate) const MAX_FRAME_UNAUTHENTICATED: usize = 64 * 1024;

/// Where a connection's bytes come from: a TCP stream, or a WebSocket's messages.
pub(crate) trait Source: Send {
    /// Appends what arrived to `buf`; Ok(0) when the peer closed.
    fn read<'a>(
        &'a mut self,
        buf: &'a mut BytesMut,
    ) -> impl Future<Output = io::Result<usize>> + Send + 'a;
}

/// Serves one STOMP connection until it closes.
pub(crate) async fn serve<S: Source, W: Wire + 'static>(
    shared: Arc<Shared>,
    source: S,
    wire: W,
    (peer, local, web): (SocketAddr, SocketAddr, bool),
    conn: ConnId,
    shutdown: watch::Receiver<bool>,
) {
    let session_id = format!("session-{}", random_id());
    let (outbox, rx) = Outbox::new();
    let (beat_tx, beat_rx) = watch::channel(None);
    let renderer = Renderer::new(session_id.clone());
    let writer = tokio::spawn(write_loop(wire, rx, renderer, beat_rx));
    let (forced_tx, forced) = watch::channel(None::<String>);
    let link = Link {
        peer,
        local,
        web,
        close: Arc::new(move |why: &str| {
            forced_tx.send_replace(Some(why.to_string()));
        }),
    };
    let mut session = Session::new(shared.clone(), conn, link, outbox.clone(), session_id);
    let why = read_loop(&mut session, &shared, source, beat_tx, shutdown, forced).await;
    tracing::debug!(%peer, conn, why, "STOMP connection closed");
    session.close();
    outbox.send(Out::Close);
    drop(session);
    drop(outbox);
    let _ = writer.await;
}

/// Reads and handles frames until the connection must close; returns why.
async fn read_loop<S: Source>(
    session: &mut Session,
    shared: &Shared,
    mut source: S,
    beat_tx: watch::Sender<Option<Duration>>,
    mut shutdown: watch::Receiver<bool>,
    mut forced: watch::Receiver<Option<String>>,
) -> &'static str {
    let login_deadline = Instant::now() + LOGIN_TIMEOUT;
    let mut decoder = Decoder::default();
    let mut buf = BytesMut::with_capacity(8 * 1024);
    let mut last_read = Instant::now();
    let mut alarm = shared.alarm.subscribe();
    let mut publisher = false;
    loop {
        loop {
            let max = if session.is_connected() {
                MAX_FRAME
            } else {
                MAX_FRAME_UNAUTHENTICATED
            };
            let frame = match decoder.next(&mut buf, max) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => return framing_error(session, e),
            };
            publisher |= frame.command == "SEND";
            let was_connected = session.is_connected();
            if handle(session, frame) == Step::Close {
                return "closed by the session";
            }
            if !was_connected && session.is_connected() {
                let send = session.heartbeat().0;
                beat_tx.send_replace((!send.is_zero()).then_some(send));
            }
        }
        let blocked = publisher && *alarm.borrow_and_update();
        let receive = session.heartbeat().1;
        let wake = if !session.is_connected() {
            login_deadline
        } else if !receive.is_zero() && !blocked {
            last_read + receive * 2
        } else {
            Instant::now() + Duration::from_secs(3600)
        };
        tokio::select! {
            r = source.read(&mut buf), if !blocked => match r {
                Ok(0) | Err(_) => return "peer closed",
                Ok(_) => last_read = Instant::now(),
            },
            _ = alarm.changed() => last_read = Instant::now(),
            _ = tokio::time::sleep_until(wake) => {
                if !session.is_connected() {
                    tracing::info!(conn = session.conn, "STOMP client did not log in in time");
                    return "login timeout";
                }
                if !receive.is_zero() && last_read.elapsed() >= receive * 2 {
                    tracing::warn!(conn = session.conn, "STOMP detected missed client heartbeat(s)");
                    return "missed heart-beats";
                }
            }
            Ok(()) = forced.changed() => {
                let why = forced.borrow().clone().unwrap_or_default();
                session.last_words(error_frame("AMQP channel died", &channel_died(&why)));
                return "closed by the broker";
            }
            _ = shutdown.changed() => {
                session.outbox.frame(error_frame(
                    "connection_forced",
                    "CONNECTION_FORCED - broker forced connection closure with reason 'shutdown'",
                ));
                return "broker shutdown";
            }
        }
    }
}

/// Handles a frame; a panic (a bug) closes this connection only, as a crashed STOMP process
/// does in RabbitMQ, and the others go on (the state lock recovers, see `StateLock`).
fn handle(session: &mut Session, frame: super::frame::Frame) -> Step {
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| session.handle(frame)));
    outcome.unwrap_or_else(|_| {
        tracing::error!(
            conn = session.conn,
            "STOMP frame handler panicked; closing connection"
        );
        session.last_words(error_frame("Processing error", "Processing error"));
        Step::Close
    })
}

fn framing_error(session: &Session, e: FrameError) -> &'static str {
    tracing::warn!(conn = session.conn, error = %e, "STOMP detected framing error; closing");
    "framing error"
}

/// The body of the ERROR RabbitMQ's plugin sends when the broker closes its connection
/// (`amqp_direct_connection:server_close/3` with 320 and `why`): its channel's exit reason,
/// as Erlang's `~p` lays it out after `Reason: ` (80 columns, nested tuples indented by 4).
pub(crate) fn channel_died(why: &str) -> String {
    let text = erlang_string(why);
    // The widths: "Reason: " 8, "{shutdown," 10, "{connection_closing," 20,
    // "{server_initiated_close,320," 28, and a closing brace per level still open.
    let n = text.len();
    let inner = format!("{{server_initiated_close,320,{text}}}");
    if 8 + 10 + 20 + 28 + n + 3 <= 78 {
        return format!("Reason: {{shutdown,{{connection_closing,{inner}}}}}");
    }
    let head = "Reason: {shutdown,\n            ";
    if 12 + 20 + 28 + n + 3 <= 78 {
        return format!("{head}{{connection_closing,{inner}}}}}");
    }
    let head = format!("{head}{{connection_closing,\n                ");
    if 16 + 28 + n + 3 <= 78 {
        return format!("{head}{inner}}}}}");
    }
    format!("{head}{{server_initiated_close,320,\n                    {text}}}}}}}")
}

/// A string as Erlang's `~p` prints it (RabbitMQ's reason texts are byte lists: each byte one
/// character), quoted with `"` and `\` escaped; one with bytes that are not printable Latin-1
/// is printed as a list of integers.
fn erlang_string(s: &str) -> String {
    let printable =
        |b: u8| matches!(b, 32..=126 | 160..=255 | b'\n' | b'\r' | b'\t' | 8 | 11 | 12 | 27);
    if !s.bytes().all(printable) {
        let items: Vec<String> = s.bytes().map(|b| b.to_string()).collect();
        return format!("[{}]", items.join(","));
    }
    let mut out = String::from("\"");
    crate::core::error::push_erlang_escaped(&mut out, s);
    out.push('"');
    out
}

/// A session id's random part: 16 random bytes, base64url, as RabbitMQ's `rabbit_guid`.
fn random_id() -> String {
    let bytes: [u8; 16] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::channel_died;

    #[test]
    fn channel_death_reasons_are_laid_out_as_erlang_does() {
        // Each as RabbitMQ 3.10's Erlang (OTP 25) prints it.
        assert_eq!(
            channel_died("vhost 'v' is down"),
            "Reason: {shutdown,\n            {connection_closing,\n                {server_initiated_close,320,\"vhost 'v' is down\"}}}"
        );
        assert_eq!(
            channel_died("user 'pu-1fd91d' is deleted"),
            "Reason: {shutdown,\n            {connection_closing,\n                {server_initiated_close,320,\"user 'pu-1fd91d' is deleted\"}}}"
        );
        assert_eq!(
            channel_died(&"x".repeat(29)),
            format!("Reason: {{shutdown,\n            {{connection_closing,\n                {{server_initiated_close,320,\"{}\"}}}}}}", "x".repeat(29))
        );
        assert_eq!(
            channel_died("vhost 'vvvvvvvvvvvvvvvvvvvv' is down"),
            "Reason: {shutdown,\n            {connection_closing,\n                {server_initiated_close,320,\n                    \"vhost 'vvvvvvvvvvvvvvvvvvvv' is down\"}}}"
        );
        assert_eq!(
            channel_died(&"x".repeat(13)),
            format!("Reason: {{shutdown,\n            {{connection_closing,{{server_initiated_close,320,\"{}\"}}}}}}", "x".repeat(13))
        );
        assert_eq!(
            channel_died("xxxxxxx"),
            "Reason: {shutdown,{connection_closing,{server_initiated_close,320,\"xxxxxxx\"}}}"
        );
        assert_eq!(
            channel_died("a\nb"),
            "Reason: {shutdown,{connection_closing,{server_initiated_close,320,\"a\\nb\"}}}"
        );
        assert_eq!(
            channel_died("vhost 'a\"b\\\\c' is down"),
            "Reason: {shutdown,\n            {connection_closing,\n                {server_initiated_close,320,\"vhost 'a\\\"b\\\\\\\\c' is down\"}}}"
        );
    }
}
