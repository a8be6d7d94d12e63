//! The load generator's frame-level client: warren-tests' [`FrameStream`] and handshake, plus
//! what a load generator needs on top: batches of pre-encoded publishes, deliveries and
//! publisher confirms counted from the frame bytes without parsing them.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use amq_protocol::frame::{AMQPContentHeader, AMQPFrame};
use amq_protocol::protocol::AMQPClass;
use lapin::types::FieldTable;
use lapin::BasicProperties;
use warren_tests::raw::{frame_len, handshake, try_encode, FrameStream};

use crate::throughput::Lead;
use crate::BoxResult;

/// A minimal AMQP 0-9-1 client for the load-generator check: the handshake, then either
/// pre-encoded publishes written in large batches, or a no-ack consumer that counts
/// `basic.deliver` frames without parsing them. Nothing lapin does per message is done here.
pub(crate) struct RawAmqp {
    io: FrameStream,
    frame_max: u32,
}

impl RawAmqp {
    /// Connects to `url`, completes the handshake and opens channel 1.
    pub(crate) async fn connect(url: &str) -> BoxResult<RawAmqp> {
        let uri: amq_protocol::uri::AMQPUri = url.parse().map_err(|e| format!("url: {e}"))?;
        let mut io = FrameStream::connect((uri.authority.host.as_str(), uri.authority.port))
            .await
            .map_err(|e| format!("tcp connect: {e}"))?;
        let user = &uri.authority.userinfo;
        let tune = handshake::connect(
            &mut io,
            &user.username,
            &user.password,
            &uri.vhost,
            FieldTable::default(),
        )
        .await
        .map_err(|e| e.to_string())?;
        handshake::open_channel(&mut io, 1)
            .await
            .map_err(|e| e.to_string())?;
        Ok(RawAmqp {
            io,
            frame_max: tune.frame_max,
        })
    }

    /// Writes bytes as they are.
    pub(crate) async fn write(&mut self, bytes: &[u8]) -> BoxResult<()> {
        self.io.write(bytes).await.map_err(|e| e.to_string())
    }

    /// Writes one method frame.
    pub(crate) async fn send(&mut self, channel: u16, method: AMQPClass) -> BoxResult<()> {
        self.io
            .send_method(channel, method)
            .await
            .map_err(|e| e.to_string())
    }

    /// The next method frame (other frames are skipped).
    pub(crate) async fn method(&mut self) -> BoxResult<AMQPClass> {
        self.io
            .next_method()
            .await
            .map(|(_, m)| m)
            .map_err(|e| e.to_string())
    }

    /// Declares an exclusive queue on channel 1 (gone when this connection closes).
    pub(crate) async fn declare_exclusive(&mut self, queue: &str) -> BoxResult<()> {
        use amq_protocol::protocol::queue;
        self.send(
            1,
            AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
                queue: queue.into(),
                passive: false,
                durable: false,
                exclusive: true,
                auto_delete: false,
                nowait: false,
                arguments: FieldTable::default(),
            })),
        )
        .await?;
        match self.method().await? {
            AMQPClass::Queue(queue::AMQPMethod::DeclareOk(_)) => Ok(()),
            other => Err(format!("expected queue.declare-ok, got {other:?}")),
        }
    }

    /// Starts a no-ack consumer of `queue` on channel 1.
    pub(crate) async fn consume(&mut self, queue: &str) -> BoxResult<()> {
        use amq_protocol::protocol::basic;
        let consume = AMQPClass::Basic(basic::AMQPMethod::Consume(basic::Consume {
            queue: queue.into(),
            consumer_tag: "".into(),
            no_local: false,
            no_ack: true,
            exclusive: false,
            nowait: false,
            arguments: FieldTable::default(),
        }));
        self.call(consume, "basic.consume", |m| {
            matches!(m, AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(_))).then_some(())
        })
        .await
    }

    /// Declares a queue on channel 1 (not durable; `exclusive` to this connection or not) and
    /// waits for declare-ok.
    pub(crate) async fn declare_queue(&mut self, queue: &str, exclusive: bool) -> BoxResult<()> {
        use amq_protocol::protocol::queue;
        let declare = AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
            queue: queue.into(),
            passive: false,
            durable: false,
            exclusive,
            auto_delete: false,
            nowait: false,
            arguments: FieldTable::default(),
        }));
        self.call(declare, "queue.declare", |m| {
            matches!(m, AMQPClass::Queue(queue::AMQPMethod::DeclareOk(_))).then_some(())
        })
        .await
    }

    /// Deletes a queue on channel 1 and waits for delete-ok.
    pub(crate) async fn delete_queue(&mut self, queue: &str) -> BoxResult<()> {
        use amq_protocol::protocol::queue;
        let delete = AMQPClass::Queue(queue::AMQPMethod::Delete(queue::Delete {
            queue: queue.into(),
            if_unused: false,
            if_empty: false,
            nowait: false,
        }));
        self.call(delete, "queue.delete", |m| {
            matches!(m, AMQPClass::Queue(queue::AMQPMethod::DeleteOk(_))).then_some(())
        })
        .await
    }

    /// Sends `method` on channel 1 and waits for the next method frame, which `ok` accepts;
    /// a channel or connection close instead is the error, with the broker's code and text.
    async fn call<T>(
        &mut self,
        method: AMQPClass,
        what: &str,
        ok: impl Fn(&AMQPClass) -> Option<T>,
    ) -> BoxResult<T> {
        use amq_protocol::protocol::{channel, connection};
        self.send(1, method)
            .await
            .map_err(|e| format!("{what}: {e}"))?;
        let answer = self.method().await.map_err(|e| format!("{what}: {e}"))?;
        if let Some(v) = ok(&answer) {
            return Ok(v);
        }
        Err(match answer {
            AMQPClass::Channel(channel::AMQPMethod::Close(c)) => {
                format!("{what}: channel closed: {} {}", c.reply_code, c.reply_text)
            }
            AMQPClass::Connection(connection::AMQPMethod::Close(c)) => {
                format!(
                    "{what}: connection closed: {} {}",
                    c.reply_code, c.reply_text
                )
            }
            other => format!("{what}: unexpected answer {other:?}"),
        })
    }

    /// Reads what the broker sent and counts the `basic.deliver` frames in it.
    pub(crate) async fn count_deliveries(&mut self) -> BoxResult<u64> {
        self.io.fill().await.map_err(|e| e.to_string())?;
        let buf = self.io.buffered();
        let mut n = 0;
        let mut at = 0;
        while let Some(len) = frame_len(&buf[at..]) {
            if buf[at] == 1 && len >= 12 && buf[at + 7..at + 11] == [0, 60, 0, 60] {
                n += 1;
            }
            at += len;
        }
        self.io.consume(at);
        Ok(n)
    }

    /// Publishes until `until`, writing pre-encoded batches of publishes. Returns how many.
    pub(crate) async fn publish_for(
        &mut self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        until: Instant,
        lead: &Lead,
    ) -> BoxResult<u64> {
        let one = self.encode_publish(exchange, routing_key, body, BasicProperties::default())?;
        // About 64 KiB per write, at least one message.
        let per_batch = (64 * 1024 / one.len()).max(1);
        let batch = one.repeat(per_batch);
        let mut published = 0u64;
        while Instant::now() < until {
            if lead.exceeded() {
                tokio::time::sleep(Duration::from_millis(1)).await;
                continue;
            }
            lead.add(per_batch as u64);
            self.write(&batch).await?;
            published += per_batch as u64;
        }
        Ok(published)
    }

    /// Writes `messages` (pre-encoded publishes of `one` bytes each, laid end to end) from the
    /// first to the last and again from the first, in writes of about 64 KiB, until `until`.
    /// Returns how many publishes were written.
    pub(crate) async fn publish_cycle_for(
        &mut self,
        messages: &[u8],
        one: usize,
        until: Instant,
        lead: &Lead,
    ) -> BoxResult<u64> {
        if one == 0 || messages.is_empty() || !messages.chunks_exact(one).remainder().is_empty() {
            return Err("publish_cycle_for: messages are not whole publishes".into());
        }
        let per_write = (64 * 1024 / one).max(1) * one;
        let mut at = 0;
        let mut published = 0u64;
        while Instant::now() < until {
            if lead.exceeded() {
                tokio::time::sleep(Duration::from_millis(1)).await;
                continue;
            }
            let end = (at + per_write).min(messages.len());
            let n = ((end - at) / one) as u64;
            lead.add(n);
            self.write(&messages[at..end]).await?;
            published += n;
            at = if end == messages.len() { 0 } else { end };
        }
        Ok(published)
    }

    /// A round trip on channel 1 (basic.qos): when it returns, the broker has processed every
    /// publish sent before it.
    pub(crate) async fn sync(&mut self) -> BoxResult<()> {
        use amq_protocol::protocol::basic;
        self.send(
            1,
            AMQPClass::Basic(basic::AMQPMethod::Qos(basic::Qos {
                prefetch_count: 0,
                global: false,
            })),
        )
        .await?;
        let wait = async {
            loop {
                if let AMQPClass::Basic(basic::AMQPMethod::QosOk(_)) = self.method().await? {
                    return Ok(());
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(60), wait)
            .await
            .map_err(|_| "no basic.qos-ok 60 s after publishing stopped".to_owned())?
    }

    /// The frames of one publish on channel 1.
    pub(crate) fn encode_publish(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> BoxResult<Vec<u8>> {
        use amq_protocol::protocol::basic;
        let mut one = encode_frame(&AMQPFrame::Method(
            1,
            AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
                exchange: exchange.into(),
                routing_key: routing_key.into(),
                mandatory: false,
                immediate: false,
            })),
        ))?;
        one.extend(encode_frame(&AMQPFrame::Header(
            1,
            AMQPContentHeader {
                class_id: 60,
                body_size: body.len() as u64,
                properties,
            },
        ))?);
        let chunk = (self.frame_max as usize).saturating_sub(8).max(1);
        for part in body.chunks(chunk) {
            one.extend(encode_frame(&AMQPFrame::Body(1, part.to_vec()))?);
        }
        Ok(one)
    }

    /// The stream and the bytes read but not consumed, to read and write from two tasks.
    pub(crate) fn into_parts(self) -> (tokio::net::TcpStream, bytes::BytesMut) {
        self.io.into_parts()
    }

    /// Closes the connection politely, waiting briefly for close-ok.
    pub(crate) async fn close(mut self) {
        use amq_protocol::protocol::connection as conn;
        let close = AMQPClass::Connection(conn::AMQPMethod::Close(conn::Close {
            reply_code: 200,
            reply_text: "bye".into(),
            class_id: 0,
            method_id: 0,
        }));
        if self.send(0, close).await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                while let Ok(m) = self.method().await {
                    if matches!(m, AMQPClass::Connection(conn::AMQPMethod::CloseOk(_))) {
                        break;
                    }
                }
            })
            .await;
        }
    }
}

/// Counts publisher confirms from `basic.ack` / `basic.nack` frames, single or multiple.
#[derive(Default)]
pub(crate) struct ConfirmCounter {
    /// Every tag up to this one is confirmed.
    base: u64,
    /// Tags above `base` confirmed one by one.
    singles: BTreeSet<u64>,
}

impl ConfirmCounter {
    /// Records a confirm; returns how many publishes it newly confirms.
    pub(crate) fn confirm(&mut self, tag: u64, multiple: bool) -> u64 {
        if multiple {
            if tag <= self.base {
                return 0;
            }
            let above = self.singles.split_off(&(tag + 1));
            let covered = self.singles.len() as u64;
            self.singles = above;
            let n = tag - self.base - covered;
            self.base = tag;
            n
        } else if tag > self.base && self.singles.insert(tag) {
            1
        } else {
            0
        }
    }
}

/// Serializes a frame, as the load generator's error.
fn encode_frame(frame: &AMQPFrame) -> BoxResult<Vec<u8>> {
    try_encode(frame).map_err(|e| e.to_string())
}
