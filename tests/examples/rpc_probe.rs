//! A fixed number of sequential warren-rpc calls, for profiling the framework's per-call cost
//! with an instruction counter (`valgrind --tool=callgrind`), which a timed benchmark on a busy
//! 2-core machine cannot give. The broker runs in its own process:
//!
//! ```text
//! cargo build --release -p warren-tests --example rpc_probe
//! warren-broker --memory-only --listen 127.0.0.1:5680 &
//! valgrind --tool=callgrind target/release/examples/rpc_probe amqp://127.0.0.1:5680 2000
//! ```
//!
//! It runs 200 warm-up calls, then the given count, and prints the count, so instructions per
//! call are (total of a run with N) - (total of a run with 0), divided by N.

use std::time::Instant;

/// The bench's `add`.
#[warren_rpc::service(name = "rpc_probe")]
trait Probe {
    /// `a + b`.
    #[warren(idempotent)]
    async fn add(&self, a: i64, b: i64) -> i64;
}

struct Adder;

impl Probe for Adder {
    async fn add(&self, a: i64, b: i64) -> i64 {
        a.wrapping_add(b)
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "amqp://127.0.0.1:5672".into());
    let calls: u64 = args.next().map_or(Ok(1000), |n| n.parse())?;
    let server = warren_rpc::Server::builder()
        .serve(&url, ProbeServer::new(Adder))
        .await?;
    let client = ProbeClient::new(warren_rpc::Client::connect(&url).await?);
    for i in 0..200 {
        assert_eq!(client.add(i, 1).await?, i + 1);
    }
    let start = Instant::now();
    for i in 0..calls as i64 {
        assert_eq!(client.add(i, 1).await?, i + 1);
    }
    let took = start.elapsed();
    println!(
        "{calls} calls, {:.1} µs each",
        took.as_secs_f64() * 1e6 / calls.max(1) as f64
    );
    drop(client);
    server.shutdown().await;
    Ok(())
}
