//! A connection's writer task: takes everything the outbox queued, encodes it (deliveries by
//! hand, the hot path; other methods through amq-protocol), merges runs of publisher confirms,
//! and writes as few times as it can. It also sends heartbeats and tells the core when a
//! congested client caught up.

use super::frame;
use super::outbox::{Out, Outbox, OUTBOX_HIGH_WATER};
use crate::core::message::ConnId;
use crate::core::props::put_short_str;
use crate::core::sink::Event;
use crate::shared::Shared;
use amq_protocol::protocol::{channel, AMQPClass};
use bytes::BufMut;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Encodes a frame carrying a message: a hand-written method frame (this is the hot path, and
/// these three methods are simple), then the message's header and body frames.
fn encode_content(out: &mut Vec<u8>, item: &Out, frame_max: u32) {
    let start = out.len();
    out.put_u8(frame::FRAME_METHOD);
    let (channel, msg) = match item {
        Out::Core(Event::Deliver {
            channel,
            consumer_tag,
            delivery_tag,
            redelivered,
            msg,
        }) => {
            out.put_u16(*channel);
            out.put_u32(0);
            out.put_u16(60);
            out.put_u16(60);
            put_short_str(out, consumer_tag);
            out.put_u64(*delivery_tag);
            out.put_u8(*redelivered as u8);
            put_short_str(out, &msg.exchange);
            put_short_str(out, &msg.routing_key);
            (*channel, msg)
        }
        Out::Core(Event::GetOk {
            channel,
            delivery_tag,
            redelivered,
            message_count,
            msg,
        }) => {
            out.put_u16(*channel);
            out.put_u32(0);
            out.put_u16(60);
            out.put_u16(71);
            out.put_u64(*delivery_tag);
            out.put_u8(*redelivered as u8);
            put_short_str(out, &msg.exchange);
            put_short_str(out, &msg.routing_key);
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
            put_short_str(out, reply_text);
            put_short_str(out, &msg.exchange);
            put_short_str(out, &msg.routing_key);
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
pub(super) struct Backlog {
    pub(super) queued: Arc<AtomicUsize>,
    pub(super) drained: Arc<tokio::sync::Notify>,
}

pub(super) async fn write_loop<W: AsyncWrite + Unpin>(
    mut wr: W,
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
                        if write_out(&mut wr, &out).await.is_err() {
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
        if write_out(&mut wr, &out).await.is_err() {
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
        if before > 4 * OUTBOX_HIGH_WATER && after <= 4 * OUTBOX_HIGH_WATER {
            drained.notify_one();
        }
        if before > OUTBOX_HIGH_WATER && after <= OUTBOX_HIGH_WATER {
            shared.state.lock().resume_connection(conn);
        }
        if close {
            let _ = wr.flush().await;
            let _ = wr.shutdown().await;
            return;
        }
    }
}

/// Writes a batch and flushes it: a no-op for TCP, while TLS may hold records until flushed.
async fn write_out<W: AsyncWrite + Unpin>(wr: &mut W, out: &[u8]) -> std::io::Result<()> {
    wr.write_all(out).await?;
    wr.flush().await
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
}
