//! [`RawConn`]: the frame-level client as the compatibility suites use it. Every read is
//! bounded by [`WAIT`], and anything but what a test expects is a panic that names the target.

use std::{fmt, future::Future, time::Duration};

use amq_protocol::frame::{parse_frame, AMQPContentHeader, AMQPFrame};
use amq_protocol::protocol::{self as proto, AMQPClass};
use lapin::{types::FieldTable, BasicProperties};
use tokio::net::TcpStream;

use super::codec::{client_properties, close_of, encode, CloseInfo};
use super::{handshake, FrameStream, RawError};
use crate::{QUIET, WAIT};

/// What a [`RawConn`] read.
#[derive(Debug)]
pub enum RawEvent {
    /// A frame that amq-protocol parsed (boxed: frames are large).
    Frame(Box<AMQPFrame>),
    /// A frame amq-protocol could not parse: type, channel, payload.
    Unparsed(u8, u16, Vec<u8>),
    /// The `AMQP....` protocol header (sent back on a protocol mismatch).
    Header([u8; 8]),
    /// The peer closed the socket (or reset it).
    Eof,
    /// Nothing arrived in time.
    Timeout,
}

/// A frame-level AMQP client over a plain TCP stream, for exact protocol assertions and
/// malformed input.
pub struct RawConn {
    target: &'static str,
    vhost: String,
    io: FrameStream,
    tune: Option<proto::connection::Tune>,
}

impl fmt::Debug for RawConn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RawConn({})", self.target)
    }
}

impl RawConn {
    /// A client on a connected stream to the broker `target` (its name, for messages), which
    /// will open `vhost`.
    pub fn new(target: &'static str, vhost: String, stream: TcpStream) -> Self {
        RawConn {
            target,
            vhost,
            io: FrameStream::new(stream),
            tune: None,
        }
    }

    /// The target's name, for assertion messages.
    pub fn target(&self) -> &'static str {
        self.target
    }

    /// The tune the broker proposed, once the handshake got that far.
    pub fn tune(&self) -> Option<&proto::connection::Tune> {
        self.tune.as_ref()
    }

    /// Writes bytes as they are.
    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        // A broker may close the socket on bad input while we are still writing: not an error.
        let _ = self.io.write_flush(bytes).await;
    }

    /// Writes one frame.
    pub async fn send(&mut self, frame: AMQPFrame) {
        let bytes = encode(&frame);
        self.send_bytes(&bytes).await;
    }

    /// Writes one method frame.
    pub async fn send_method(&mut self, channel: u16, method: AMQPClass) {
        self.send(AMQPFrame::Method(channel, method)).await;
    }

    /// Writes basic.publish plus its content header and one body frame (none when empty).
    pub async fn publish(
        &mut self,
        channel: u16,
        exchange: &str,
        routing_key: &str,
        props: BasicProperties,
        body: &[u8],
    ) {
        let mut bytes = encode(&AMQPFrame::Method(
            channel,
            AMQPClass::Basic(proto::basic::AMQPMethod::Publish(proto::basic::Publish {
                exchange: exchange.into(),
                routing_key: routing_key.into(),
                mandatory: false,
                immediate: false,
            })),
        ));
        bytes.extend(encode(&AMQPFrame::Header(
            channel,
            AMQPContentHeader {
                class_id: 60,
                body_size: body.len() as u64,
                properties: props,
            },
        )));
        if !body.is_empty() {
            bytes.extend(encode(&AMQPFrame::Body(channel, body.to_vec())));
        }
        self.send_bytes(&bytes).await;
    }

    /// Reads the next event within `wait`.
    pub async fn recv_within(&mut self, wait: Duration) -> RawEvent {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(ev) = self.take_buffered() {
                return ev;
            }
            match tokio::time::timeout_at(deadline, self.io.read_more()).await {
                Err(_) => return RawEvent::Timeout,
                Ok(Ok(0)) | Ok(Err(_)) => {
                    if self.io.buffered().is_empty() {
                        return RawEvent::Eof;
                    }
                    return RawEvent::Unparsed(0, 0, self.io.take_all().to_vec());
                }
                Ok(Ok(_)) => {}
            }
        }
    }

    /// Reads the next event within [`WAIT`].
    pub async fn recv(&mut self) -> RawEvent {
        self.recv_within(WAIT).await
    }

    fn take_buffered(&mut self) -> Option<RawEvent> {
        if self.io.buffered().starts_with(b"AMQP") {
            let h: [u8; 8] = self.io.buffered().get(..8)?.try_into().ok()?;
            self.io.consume(8);
            return Some(RawEvent::Header(h));
        }
        let bytes = self.io.take_frame()?;
        Some(match parse_frame(&bytes[..]) {
            Ok((_, frame)) => RawEvent::Frame(Box::new(frame)),
            Err(_) => RawEvent::Unparsed(
                bytes[0],
                u16::from_be_bytes([bytes[1], bytes[2]]),
                bytes[7..bytes.len() - 1].to_vec(),
            ),
        })
    }

    /// The next frame other than a heartbeat; panics on anything else.
    pub async fn recv_frame(&mut self) -> AMQPFrame {
        loop {
            match self.recv().await {
                RawEvent::Frame(f) if matches!(*f, AMQPFrame::Heartbeat) => continue,
                RawEvent::Frame(f) => return *f,
                other => panic!("{}: expected a frame, got {other:?}", self.target),
            }
        }
    }

    /// The next method on `channel` (skipping heartbeats); panics on anything else.
    pub async fn recv_method(&mut self, channel: u16) -> AMQPClass {
        match self.recv_frame().await {
            AMQPFrame::Method(ch, m) if ch == channel => m,
            other => panic!(
                "{}: expected a method on channel {channel}, got {other:?}",
                self.target
            ),
        }
    }

    /// Sends the protocol header and answers connection.start with PLAIN credentials, as a
    /// client would; returns connection.start. Stops before connection.tune.
    pub async fn handshake_until_open(
        &mut self,
        user: &str,
        password: &str,
        client_properties: FieldTable,
    ) -> proto::connection::Start {
        let start = handshake::start(&mut self.io, user, password, client_properties);
        step(self.target, "connection.start", start).await
    }

    /// Answers connection.tune with the broker's own values.
    pub async fn finish_tune(&mut self) -> proto::connection::Tune {
        let tune = step(
            self.target,
            "connection.tune",
            handshake::tune(&mut self.io),
        )
        .await;
        self.tune = Some(tune.clone());
        tune
    }

    /// The whole handshake as guest/guest on the target's vhost, advertising the usual client
    /// capabilities ([`client_properties`]); returns connection.start.
    pub async fn handshake(&mut self) -> proto::connection::Start {
        self.handshake_with(client_properties()).await
    }

    /// The whole handshake as guest/guest with the given client properties.
    pub async fn handshake_with(
        &mut self,
        client_properties: FieldTable,
    ) -> proto::connection::Start {
        let start = self
            .handshake_until_open("guest", "guest", client_properties)
            .await;
        self.finish_tune().await;
        let open = handshake::open(&mut self.io, &self.vhost);
        step(self.target, "connection.open", open).await;
        start
    }

    /// Opens a channel and waits for open-ok.
    pub async fn open_channel(&mut self, channel: u16) {
        let open = handshake::open_channel(&mut self.io, channel);
        step(self.target, "channel.open", open).await;
    }

    /// Declares a queue (non-durable; exclusive as asked) and waits for declare-ok.
    pub async fn declare_queue(&mut self, channel: u16, name: &str, exclusive: bool) {
        let reply = self
            .call(
                channel,
                AMQPClass::Queue(proto::queue::AMQPMethod::Declare(proto::queue::Declare {
                    queue: name.into(),
                    passive: false,
                    durable: false,
                    exclusive,
                    auto_delete: false,
                    nowait: false,
                    arguments: FieldTable::default(),
                })),
            )
            .await;
        assert!(
            matches!(
                reply,
                AMQPClass::Queue(proto::queue::AMQPMethod::DeclareOk(_))
            ),
            "{}: expected queue.declare-ok, got {reply:?}",
            self.target
        );
    }

    /// Starts a consumer with an explicit tag and waits for consume-ok.
    pub async fn consume(&mut self, channel: u16, queue: &str, tag: &str, no_ack: bool) {
        let reply = self
            .call(
                channel,
                AMQPClass::Basic(proto::basic::AMQPMethod::Consume(proto::basic::Consume {
                    queue: queue.into(),
                    consumer_tag: tag.into(),
                    no_local: false,
                    no_ack,
                    exclusive: false,
                    nowait: false,
                    arguments: FieldTable::default(),
                })),
            )
            .await;
        assert!(
            matches!(reply, AMQPClass::Basic(proto::basic::AMQPMethod::ConsumeOk(ref ok)) if ok.consumer_tag.as_str() == tag),
            "{}: expected basic.consume-ok for {tag}, got {reply:?}",
            self.target
        );
    }

    /// Sends a synchronous method and returns the reply on the same channel.
    pub async fn call(&mut self, channel: u16, method: AMQPClass) -> AMQPClass {
        self.send_method(channel, method).await;
        self.recv_method(channel).await
    }

    /// Waits for connection.close (skipping other frames), answers close-ok, and expects the
    /// socket to close.
    pub async fn expect_connection_close(&mut self) -> CloseInfo {
        let info = self.expect_connection_close_only().await;
        self.expect_eof().await;
        info
    }

    /// Waits for connection.close (skipping other frames) and answers close-ok, without waiting
    /// for the socket to close. After a frame that is too large RabbitMQ reads no further and
    /// only drops the socket 3 s later.
    pub async fn expect_connection_close_only(&mut self) -> CloseInfo {
        loop {
            match self.recv().await {
                RawEvent::Frame(f) => {
                    if let Some((_, true, info)) = close_of(&f) {
                        self.send_method(
                            0,
                            AMQPClass::Connection(proto::connection::AMQPMethod::CloseOk(
                                proto::connection::CloseOk {},
                            )),
                        )
                        .await;
                        return info;
                    }
                }
                RawEvent::Unparsed(..) => continue,
                other => panic!("{}: expected connection.close, got {other:?}", self.target),
            }
        }
    }

    /// Waits for channel.close on `channel` (skipping other frames) and answers close-ok.
    pub async fn expect_channel_close(&mut self, channel: u16) -> CloseInfo {
        loop {
            match self.recv().await {
                RawEvent::Frame(f) => match close_of(&f) {
                    Some((ch, false, info)) if ch == channel => {
                        self.send_method(
                            channel,
                            AMQPClass::Channel(proto::channel::AMQPMethod::CloseOk(
                                proto::channel::CloseOk {},
                            )),
                        )
                        .await;
                        return info;
                    }
                    Some((_, true, info)) => panic!(
                        "{}: expected channel.close on {channel}, got connection.close {info:?}",
                        self.target
                    ),
                    _ => continue,
                },
                other => panic!(
                    "{}: expected channel.close on {channel}, got {other:?}",
                    self.target
                ),
            }
        }
    }

    /// Expects the broker to close the socket (any data before that is ignored).
    pub async fn expect_eof(&mut self) {
        loop {
            match self.recv().await {
                RawEvent::Eof => return,
                RawEvent::Timeout => panic!("{}: socket still open after {WAIT:?}", self.target),
                _ => continue,
            }
        }
    }

    /// Asserts that nothing but heartbeats arrives within [`QUIET`].
    pub async fn expect_silence(&mut self, why: &str) {
        loop {
            match self.recv_within(QUIET).await {
                RawEvent::Timeout => return,
                RawEvent::Frame(f) if matches!(*f, AMQPFrame::Heartbeat) => continue,
                other => panic!("{}: {why}: expected silence, got {other:?}", self.target),
            }
        }
    }
}

/// Runs one step of the shared handshake within [`WAIT`], panicking with the target name if it
/// fails.
async fn step<T>(target: &str, what: &str, step: impl Future<Output = Result<T, RawError>>) -> T {
    match tokio::time::timeout(WAIT, step).await {
        Err(_) => panic!("{target}: {what}: nothing within {WAIT:?}"),
        Ok(Err(e)) => panic!("{target}: {what}: {e}"),
        Ok(Ok(v)) => v,
    }
}
