//! MessagePack of a call: the request arguments and the reply envelope, encoded and decoded
//! with the codec the client and server use.
//!
//! Run with: `cargo bench -p warren-rpc --bench msgpack`

// criterion_group! generates a public function without docs.
#![allow(missing_docs)]

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use serde::{Deserialize, Serialize};
use warren_rpc::Codec;

/// Arguments as the client encodes them: borrowed, named fields.
#[derive(Serialize)]
struct ArgsRef<'a> {
    a: i64,
    b: i64,
    pad: &'a str,
}

/// Arguments as the server decodes them.
#[derive(Deserialize)]
#[allow(dead_code)]
struct Args {
    a: i64,
    b: i64,
    pad: String,
}

/// The reply envelope `{"ok": value}`.
#[derive(Serialize, Deserialize)]
struct Reply {
    ok: i64,
}

/// A padding string that makes the encoded arguments exactly `size` bytes.
fn pad_for(size: usize) -> String {
    let mut pad = String::new();
    loop {
        let len = Codec::MsgPack
            .encode(&ArgsRef {
                a: 1_000_000,
                b: -42,
                pad: &pad,
            })
            .expect("encodes")
            .len();
        if len >= size {
            return pad;
        }
        pad.push('x');
    }
}

fn call(c: &mut Criterion) {
    for size in [64usize, 16 * 1024] {
        let pad = pad_for(size);
        let args = ArgsRef {
            a: 1_000_000,
            b: -42,
            pad: &pad,
        };
        let body = Codec::MsgPack.encode(&args).expect("encodes");
        let mut group = c.benchmark_group(format!("msgpack_{size}B"));
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function("encode_args", |b| {
            b.iter(|| black_box(Codec::MsgPack.encode(black_box(&args)).expect("encodes")))
        });
        group.bench_function("decode_args", |b| {
            b.iter(|| {
                let args: Args = Codec::MsgPack.decode(black_box(&body)).expect("decodes");
                black_box(args.a + args.b)
            })
        });
        group.finish();
    }
    let reply = Codec::MsgPack
        .encode(&Reply { ok: 999_958 })
        .expect("encodes");
    let mut group = c.benchmark_group("msgpack_reply");
    group.bench_function("encode", |b| {
        b.iter(|| {
            black_box(Codec::MsgPack.encode(&Reply {
                ok: black_box(999_958),
            }))
        })
    });
    group.bench_function("decode", |b| {
        b.iter(|| {
            let r: Reply = Codec::MsgPack.decode(black_box(&reply)).expect("decodes");
            black_box(r.ok)
        })
    });
    group.finish();
}

criterion_group!(benches, call);
criterion_main!(benches);
