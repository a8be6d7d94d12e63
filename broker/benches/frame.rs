//! Frame decode and encode on the broker's hot path: splitting a stream of publishes into
//! frames and parsing their methods and content headers, and writing deliveries.
//!
//! Run with: `cargo bench -p warren-broker --bench frame`

// criterion_group! generates a public function without docs.
#![allow(missing_docs)]

use amq_protocol::frame::parsing::parse_content_header;
use amq_protocol::frame::{gen_frame, AMQPContentHeader, AMQPFrame, WriteContext};
use amq_protocol::protocol::basic::{self, AMQPProperties};
use amq_protocol::protocol::{parse_class, AMQPClass};
use bytes::BytesMut;
use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use warren_broker::bench::{
    encode_header_payload, next_frame, write_body, write_header, write_method, FRAME_BODY,
    FRAME_HEADER, FRAME_METHOD,
};

/// Publishes in one read buffer, as a pipelining client sends them.
const BATCH: usize = 1000;

/// The bytes of `count` basic.publish + header + body frame triples, as lapin sends them.
fn publish_stream(count: usize, body: &[u8]) -> Vec<u8> {
    let properties = AMQPProperties::default()
        .with_content_type("application/msgpack".into())
        .with_correlation_id("8c4f1c1e-6f0a-4a53-9a8e-3b2f0d2b7c11".into())
        .with_reply_to("amq.rabbitmq.reply-to".into());
    let mut out = Vec::new();
    for _ in 0..count {
        let frames = [
            AMQPFrame::Method(
                1,
                AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
                    exchange: "".into(),
                    routing_key: "calculator".into(),
                    mandatory: false,
                    immediate: false,
                })),
            ),
            AMQPFrame::Header(
                1,
                AMQPContentHeader {
                    class_id: 60,
                    body_size: body.len() as u64,
                    properties: properties.clone(),
                },
            ),
            AMQPFrame::Body(1, body.to_vec()),
        ];
        for frame in &frames {
            out = gen_frame(frame)(WriteContext::from(out))
                .expect("encodes into a Vec")
                .write;
        }
    }
    out
}

/// Splits the buffer into frames and parses each method and content header, as the
/// connection and channel do.
fn decode_all(mut buf: BytesMut) -> usize {
    let mut bodies = 0;
    while let Some(frame) = next_frame(&mut buf, 131_072).expect("well-formed stream") {
        match frame.kind {
            FRAME_METHOD => {
                let (_, method) = parse_class(&frame.payload[..]).expect("valid method");
                black_box(method);
            }
            FRAME_HEADER => {
                let (_, header) = parse_content_header(&frame.payload[..]).expect("valid header");
                black_box(header);
            }
            FRAME_BODY => bodies += frame.payload.len(),
            _ => {}
        }
    }
    bodies
}

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode_publish");
    for size in [16usize, 1024, 16 * 1024] {
        let stream = publish_stream(BATCH, &vec![7u8; size]);
        group.throughput(Throughput::Elements(BATCH as u64));
        group.bench_function(format!("{size}B"), |b| {
            b.iter_batched(
                || BytesMut::from(&stream[..]),
                decode_all,
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

fn encode(c: &mut Criterion) {
    let properties = AMQPProperties::default()
        .with_content_type("application/msgpack".into())
        .with_correlation_id("8c4f1c1e-6f0a-4a53-9a8e-3b2f0d2b7c11".into());
    let mut group = c.benchmark_group("encode_deliver");
    for size in [16usize, 1024, 16 * 1024] {
        let body = vec![7u8; size];
        let header = encode_header_payload(size as u64, &properties);
        group.throughput(Throughput::Elements(1));
        // The header payload is encoded once per message and shared by every delivery of it;
        // each delivery writes a basic.deliver method, the header and the body.
        let mut out = Vec::with_capacity(64 * 1024);
        let mut tag = 0u64;
        group.bench_function(format!("{size}B"), |b| {
            b.iter(|| {
                out.clear();
                tag += 1;
                write_method(
                    &mut out,
                    1,
                    AMQPClass::Basic(basic::AMQPMethod::Deliver(basic::Deliver {
                        consumer_tag: "amq.ctag-bench".into(),
                        delivery_tag: tag,
                        redelivered: false,
                        exchange: "".into(),
                        routing_key: "calculator".into(),
                    })),
                );
                write_header(&mut out, 1, &header);
                write_body(&mut out, 1, &body, 131_072);
                black_box(out.len())
            })
        });
        group.bench_function(format!("header_payload_{size}B"), |b| {
            b.iter(|| black_box(encode_header_payload(size as u64, black_box(&properties))))
        });
    }
    group.finish();
}

criterion_group!(benches, decode, encode);
criterion_main!(benches);
