//! Topic routing with many bindings: the matcher alone, and an exchange routing a key against
//! 100 to 10,000 bindings.
//!
//! Run with: `cargo bench -p warren-broker --bench topic`

// criterion_group! generates a public function without docs.
#![allow(missing_docs)]

use amq_protocol::types::FieldTable;
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use warren_broker::bench::{
    split_words, topic_match, Binding, Destination, Exchange, ExchangeKind,
};

/// A topic exchange with `n` bindings of mixed shapes (literal, `*`, `#`), each to its own
/// queue; about one in a hundred matches `stock.nyse.<id>.trade`.
fn exchange_with(n: usize) -> Exchange {
    let mut x = Exchange::new(
        "bench.topic".into(),
        ExchangeKind::Topic,
        false,
        false,
        false,
        FieldTable::default(),
    );
    for i in 0..n {
        let key = match i % 4 {
            0 => format!("stock.nyse.{i}.trade"),
            1 => format!("stock.*.{i}.*"),
            2 => format!("stock.#.{i}"),
            _ => format!("fx.{}.#", i % 100),
        };
        x.bind(Binding::new(
            Destination::Queue(format!("q{i}")),
            key,
            FieldTable::default(),
        ));
    }
    x
}

fn matcher(c: &mut Criterion) {
    let mut group = c.benchmark_group("topic_match");
    let words = split_words("stock.nyse.42.trade.extra.words");
    let cases = [
        ("literal_miss", "stock.nyse.41.trade"),
        ("star", "stock.*.42.*.*.*"),
        ("hash_tail", "stock.#"),
        ("hash_middle", "stock.#.words"),
        ("hash_backtrack", "#.42.#.words"),
    ];
    for (name, pattern) in cases {
        let pattern: Vec<String> = split_words(pattern)
            .into_iter()
            .map(str::to_owned)
            .collect();
        group.bench_function(name, |b| {
            b.iter(|| black_box(topic_match(black_box(&pattern), black_box(&words))))
        });
    }
    group.bench_function("split_words", |b| {
        b.iter(|| black_box(split_words(black_box("stock.nyse.42.trade.extra.words"))))
    });
    group.finish();
}

fn routing(c: &mut Criterion) {
    let mut group = c.benchmark_group("topic_route");
    for n in [100usize, 1000, 10_000] {
        let x = exchange_with(n);
        let mut out = Vec::with_capacity(n);
        group.throughput(Throughput::Elements(1));
        group.bench_function(format!("{n}_bindings"), |b| {
            b.iter(|| {
                out.clear();
                x.route(black_box("stock.nyse.42.trade"), None, &mut out);
                black_box(out.len())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, matcher, routing);
criterion_main!(benches);
