//! One STOMP connection, whatever carries it (TCP, or a WebSocket): the reader loop that
//! decodes frames and hands them to the session, the login timeout, the client's heart-beats,
//! the resource alarm and the broker's shutdown; the writer task beside it (outbox.rs).
//!
//! As RabbitMQ: a client that has not logged in after 10 s is disconnected, a frame larger
//! than 4 MiB (64 KiB before CONNECT succeeds) or one that does not parse closes the
//! connection without an ERROR frame, a client silent for two of its heart-beat periods is
//! disconnected, and a publishing client is not read while a memory or disk alarm is on.

use super::frame::{Decoder, FrameError};
use super::outbox::{error_frame, write_loop, Out, Outbox, Renderer, Wire};
use super::session::{Session, Step};
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
    peer: SocketAddr,
    conn: ConnId,
    shutdown: watch::Receiver<bool>,
) {
    let session_id = format!("session-{}", random_id());
    let (outbox, rx) = Outbox::new();
    let (beat_tx, beat_rx) = watch::channel(None);
    let renderer = Renderer::new(session_id.clone());
    let writer = tokio::spawn(write_loop(wire, rx, renderer, beat_rx));
    let mut session = Session::new(shared.clone(), conn, peer.ip(), outbox.clone(), session_id);
    let why = read_loop(&mut session, &shared, source, beat_tx, shutdown).await;
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
        session
            .outbox
            .frame(error_frame("Processing error", "Processing error"));
        Step::Close
    })
}

fn framing_error(session: &Session, e: FrameError) -> &'static str {
    tracing::warn!(conn = session.conn, error = %e, "STOMP detected framing error; closing");
    "framing error"
}

/// A session id's random part: 16 random bytes, base64url, as RabbitMQ's `rabbit_guid`.
fn random_id() -> String {
    let bytes: [u8; 16] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}
