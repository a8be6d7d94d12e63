//! How long one message holds the broker's state lock: publish, route, enqueue and deliver to
//! a consumer (and its ack), with no sockets. One lock serves every core, so 1 / this time is
//! the most messages per second the broker can move however many cores it has.
//!
//! Run with: `cargo bench -p warren-broker --bench lock`

// criterion_group! generates a public function without docs.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use warren_broker::bench::LockHold;

fn hold(c: &mut Criterion) {
    let mut group = c.benchmark_group("state_lock_per_message");
    group.throughput(Throughput::Elements(1));
    for (name, acks, size) in [
        ("no_ack_16B", false, 16),
        ("ack_16B", true, 16),
        ("no_ack_1KiB", false, 1024),
    ] {
        let mut core = LockHold::new(acks, size);
        group.bench_function(name, |b| b.iter(|| core.one_message()));
        assert!(core.delivered() > 0, "the bench delivered nothing");
    }
    group.finish();
}

criterion_group!(benches, hold);
criterion_main!(benches);
