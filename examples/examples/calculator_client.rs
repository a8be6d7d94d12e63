//! Run with: cargo run -p warren-examples --example calculator_client -- --url amqp://guest:guest@127.0.0.1:5672/%2f --calls 10000 --concurrency 100
//!
//! Calls a calculator served elsewhere (see `calculator_server`). Without `--calls` it makes a
//! few calls and prints them; with `--calls N` it makes N calls with `--concurrency C` in flight,
//! checks every answer, prints a one-line summary and exits non-zero if any call failed.
//!
//! On a RabbitMQ cluster, repeat `--url` for every node and add `--confirm`: the client moves to
//! the next node when its node goes away (docs/scale-out.md).
//!
//! Over TLS: `--url amqps://guest:guest@localhost:5671/%2f --tls-ca ca.pem`, plus `--tls-cert
//! client.pem --tls-key client.key` (or `--tls-pkcs12 client.p12`) for a client certificate.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use futures::StreamExt;
use warren_examples::{CalculatorClient, Op};
use warren_rpc::{CallOptions, Client, Codec};

/// Call the `calculator` service.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// The broker's URL. Repeat it for the nodes of a RabbitMQ cluster: the first that answers
    /// is used, and the next one when it goes away.
    #[arg(
        long = "url",
        value_name = "URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    urls: Vec<String>,

    #[command(flatten)]
    tls: warren_examples::TlsArgs,

    /// Load mode: make this many calls and print a summary.
    #[arg(long)]
    calls: Option<u64>,

    /// Load mode: how many calls are in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,

    /// The budget of each call, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,

    /// Encode calls as JSON instead of MessagePack.
    #[arg(long)]
    json: bool,

    /// Call this queue instead of `calculator`.
    #[arg(long)]
    queue: Option<String>,

    /// Wait for the broker's publisher confirm of each call (so a request a quorum queue
    /// refuses while it elects a leader is sent again at once).
    #[arg(long)]
    confirm: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,lapin=error".into()),
        )
        .init();
    let args = Args::parse();
    match run(args).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<bool, warren_rpc::Error> {
    let client = Client::builder()
        .timeout(Duration::from_millis(args.timeout_ms))
        .codec(if args.json {
            Codec::Json
        } else {
            Codec::MsgPack
        })
        .confirm_calls(args.confirm)
        .tls(args.tls.tls()?)
        .urls(args.urls.iter().skip(1).cloned())
        .connect(args.urls.first().map_or("", String::as_str))
        .await?;
    let mut options = CallOptions::new();
    if let Some(queue) = &args.queue {
        options = options.service(queue.as_str());
    }
    let calc = CalculatorClient::new(client.clone()).with_options(options);
    let ok = match args.calls {
        None => demo(&calc).await?,
        Some(calls) => load(&calc, calls, args.concurrency.max(1)).await,
    };
    client.close().await;
    Ok(ok)
}

async fn demo(calc: &CalculatorClient) -> Result<bool, warren_rpc::Error> {
    println!("add(2, 3)       = {}", calc.add(2, 3).await?);
    println!("sub(2, 3)       = {}", calc.sub(2, 3).await?);
    println!("mul(2, 3)       = {}", calc.mul(2, 3).await?);
    println!("div(7, 2)       = {:?}", calc.div(7, 2).await?);
    println!("div(7, 0)       = {:?}", calc.div(7, 0).await?);
    println!("memory_add(5)   = {}", calc.memory_add(5).await?);
    println!("memory_recall() = {}", calc.memory_recall().await?);
    Ok(true)
}

/// Makes `calls` calls with `concurrency` in flight; prints one summary line.
async fn load(calc: &CalculatorClient, calls: u64, concurrency: usize) -> bool {
    let started = Instant::now();
    let mut results = futures::stream::iter(0..calls)
        .map(|i| {
            let op = Op::from_seed(i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5bd1_e995);
            async move {
                let sent = Instant::now();
                let result = op.call(calc).await;
                (op, result, sent.elapsed())
            }
        })
        .buffer_unordered(concurrency);

    let mut ok = 0u64;
    let mut failed: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut latencies = Vec::with_capacity(usize::try_from(calls).unwrap_or(0));
    while let Some((op, result, latency)) = results.next().await {
        latencies.push(latency);
        match result {
            Ok(answer) if answer == op.expected() => ok += 1,
            Ok(answer) => {
                *failed.entry("wrong_answer").or_default() += 1;
                eprintln!("wrong answer to {op:?}: {answer:?}");
            }
            Err(e) => *failed.entry(e.kind()).or_default() += 1,
        }
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let percentile = |p: f64| -> f64 {
        if latencies.is_empty() {
            return 0.0;
        }
        let index = ((latencies.len() as f64 - 1.0) * p).round() as usize;
        latencies[index].as_secs_f64() * 1000.0
    };
    let failed_total: u64 = failed.values().sum();
    let by_kind = if failed.is_empty() {
        String::new()
    } else {
        let kinds: Vec<String> = failed.iter().map(|(k, n)| format!("{k}={n}")).collect();
        format!(" ({})", kinds.join(" "))
    };
    println!(
        "calls={calls} concurrency={concurrency} ok={ok} failed={failed_total}{by_kind} \
         p50={:.2}ms p99={:.2}ms rate={:.0} calls/s elapsed={:.2}s",
        percentile(0.50),
        percentile(0.99),
        calls as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64(),
    );
    failed_total == 0
}
