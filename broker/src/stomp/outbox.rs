//! A STOMP connection's way out: the ordered queue of what its client must receive (frames the
//! session built, and the core's deliveries through [`Sink`]), and the writer task that turns
//! deliveries into MESSAGE frames and writes them to the transport (a TCP socket, or a
//! WebSocket with one frame per message).
//!
//! Deliveries are rendered by the writer, off the state lock: it knows each subscription's id,
//! ack header and description because the session tells it, through this same ordered queue,
//! before the subscription can receive anything.

use super::destination::format as format_destination;
use super::frame::{encode, Frame};
use super::mapping::message_headers;
use crate::core::sink::{Event, Sink};
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Above this many queued bytes a connection gets no new deliveries until its writer caught
/// up, as for AMQP connections.
const HIGH_WATER: usize = 4 * 1024 * 1024;

/// What the writer needs to render deliveries of one subscription.
#[derive(Debug, Clone)]
pub(crate) struct SubView {
    /// The `subscription` header (None for the temp-queue reply consumers).
    pub(crate) id: Option<String>,
    /// Whether MESSAGE frames carry an `ack` header (client ack modes on STOMP 1.2).
    pub(crate) ack_header: bool,
    /// How RabbitMQ names it in errors, e.g. `id='s1'`.
    pub(crate) description: String,
}

/// Something on its way to the client.
#[derive(Debug)]
pub(crate) enum Out {
    /// A frame built by the session.
    Frame(Frame),
    /// A delivery or cancellation from the core.
    Core(Event),
    /// A subscription (consumer tag) starts: how to render its deliveries.
    Subscribed(Arc<str>, SubView),
    /// Bytes with no frame (a heart-beat), written as they are.
    Raw(&'static [u8]),
    /// Write everything before this, then close.
    Close,
}

/// The sending side of a connection's writer; the core's [`Sink`] for the connection.
#[derive(Debug, Clone)]
pub(crate) struct Outbox {
    tx: mpsc::UnboundedSender<Out>,
    queued: Arc<AtomicUsize>,
}

impl Outbox {
    /// An outbox and the receiving end for [`write_loop`].
    pub(crate) fn new() -> (Outbox, Receiver) {
        let (tx, rx) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        (
            Outbox {
                tx,
                queued: queued.clone(),
            },
            Receiver { rx, queued },
        )
    }

    /// Queues an item for the writer.
    pub(crate) fn send(&self, out: Out) {
        self.queued.fetch_add(weight(&out), Ordering::Relaxed);
        let _ = self.tx.send(out);
    }

    /// Queues a frame.
    pub(crate) fn frame(&self, frame: Frame) {
        self.send(Out::Frame(frame));
    }
}

fn weight(out: &Out) -> usize {
    match out {
        Out::Core(e) => e.weight(),
        Out::Frame(f) => f.body.len() + 64,
        _ => 64,
    }
}

impl Sink for Outbox {
    fn send(&self, event: Event) {
        Outbox::send(self, Out::Core(event));
    }

    fn congested(&self) -> bool {
        self.queued.load(Ordering::Relaxed) > HIGH_WATER
    }
}

/// The writer's end of an [`Outbox`].
#[derive(Debug)]
pub(crate) struct Receiver {
    rx: mpsc::UnboundedReceiver<Out>,
    queued: Arc<AtomicUsize>,
}

#[cfg(test)]
impl Receiver {
    /// Everything queued so far (tests drive sessions without a writer).
    pub(crate) fn drain(&mut self) -> Vec<Out> {
        std::iter::from_fn(|| self.rx.try_recv().ok()).collect()
    }
}

/// Where encoded frames go: a TCP stream (frames batched) or a WebSocket (one message each).
pub(crate) trait Wire: Send {
    /// Writes (or buffers) one encoded frame.
    fn send(&mut self, frame: Vec<u8>) -> impl Future<Output = io::Result<()>> + Send;
    /// Writes out whatever is buffered.
    fn flush(&mut self) -> impl Future<Output = io::Result<()>> + Send;
    /// Closes the transport.
    fn close(&mut self) -> impl Future<Output = ()> + Send;
}

/// What the writer knows of the session: its id (in message ids), and its subscriptions.
#[derive(Debug, Default)]
pub(crate) struct Renderer {
    /// The session id of the CONNECTED frame.
    session: String,
    subs: HashMap<Arc<str>, SubView>,
}

impl Renderer {
    /// A renderer for the session with this id.
    pub(crate) fn new(session: String) -> Self {
        Renderer {
            session,
            subs: HashMap::new(),
        }
    }

    /// The frame a core event becomes, if any.
    fn render(&mut self, event: Event) -> Option<Frame> {
        match event {
            Event::Deliver {
                consumer_tag,
                delivery_tag,
                redelivered,
                msg,
                ..
            } => {
                let sub = self.subs.get(&consumer_tag)?;
                let message_id = format!("{consumer_tag}@@{}@@{delivery_tag}", self.session);
                let mut headers = Vec::with_capacity(16);
                if let Some(id) = &sub.id {
                    headers.push(("subscription".to_string(), id.clone()));
                }
                headers.push((
                    "destination".to_string(),
                    format_destination(&msg.exchange, &msg.routing_key),
                ));
                headers.push(("message-id".to_string(), message_id.clone()));
                headers.push(("redelivered".to_string(), redelivered.to_string()));
                if sub.ack_header {
                    headers.push(("ack".to_string(), message_id));
                }
                message_headers(&msg.properties(), &mut headers);
                let mut frame = Frame::new("MESSAGE", headers);
                frame.body = msg.body.clone();
                Some(frame)
            }
            Event::Cancelled { consumer_tag, .. } => {
                let sub = self.subs.remove(&consumer_tag)?;
                let mut frame = error_frame(
                    "Server cancelled subscription",
                    &format!(
                        "The server has canceled a subscription.\nNo more messages will be delivered for \"{}\".\n",
                        sub.description
                    ),
                );
                if let Some(id) = sub.id {
                    frame.headers.push(("subscription".to_string(), id));
                }
                Some(frame)
            }
            Event::GetOk { .. } => None,
        }
    }
}

/// An ERROR frame as RabbitMQ sends it: `message`, `content-type:text/plain` and the
/// supported versions, with the detail as body.
pub(crate) fn error_frame(message: &str, detail: &str) -> Frame {
    let mut f = Frame::new(
        "ERROR",
        vec![
            ("message".to_string(), message.to_string()),
            ("content-type".to_string(), "text/plain".to_string()),
            ("version".to_string(), "1.0,1.1,1.2".to_string()),
        ],
    );
    f.body = detail.as_bytes().to_vec().into();
    f
}

/// Writes everything queued for a connection, in order, until [`Out::Close`] or the outbox
/// is dropped; sends a heart-beat (an EOL) when nothing was written for `heartbeat`. The
/// heart-beat period arrives through `heartbeat` once CONNECT negotiated it.
pub(crate) async fn write_loop<W: Wire>(
    mut wire: W,
    mut rx: Receiver,
    mut renderer: Renderer,
    mut heartbeat: tokio::sync::watch::Receiver<Option<Duration>>,
) {
    let mut last_write = Instant::now();
    loop {
        let period = *heartbeat.borrow_and_update();
        let wake = period.map_or(Instant::now() + Duration::from_secs(3600), |p| {
            last_write + p
        });
        let first = tokio::select! {
            item = rx.rx.recv() => item,
            _ = heartbeat.changed() => continue,
            _ = tokio::time::sleep_until(wake) => Some(Out::Raw(b"\n")),
        };
        let Some(first) = first else { break };
        let mut batch = vec![first];
        while batch.len() < 256 {
            match rx.rx.try_recv() {
                Ok(item) => batch.push(item),
                Err(_) => break,
            }
        }
        let mut closing = false;
        for item in batch {
            rx.queued.fetch_sub(weight(&item), Ordering::Relaxed);
            let frame = match item {
                Out::Frame(f) => Some(f),
                Out::Core(e) => renderer.render(e),
                Out::Subscribed(tag, view) => {
                    renderer.subs.insert(tag, view);
                    None
                }
                Out::Raw(bytes) => {
                    if wire.send(bytes.to_vec()).await.is_err() {
                        return;
                    }
                    None
                }
                Out::Close => {
                    closing = true;
                    break;
                }
            };
            if let Some(f) = frame {
                let mut out = Vec::with_capacity(f.body.len() + 128);
                encode(&f, &mut out);
                if wire.send(out).await.is_err() {
                    return;
                }
            }
        }
        if wire.flush().await.is_err() {
            return;
        }
        last_write = Instant::now();
        if closing {
            break;
        }
    }
    wire.close().await;
}
