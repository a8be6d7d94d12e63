//! Run with: cargo run -p warren-examples --example calculator
//!
//! Everything in one process: starts the bundled broker on a free port, a calculator server and
//! a client, then shows results, an application error, a streamed reply, a timeout, a cancelled
//! call and an unavailable service; then introspection (`$describe`, `$ping` to every replica,
//! `$stats`) and a broadcast to two replicas.

use std::time::{Duration, Instant};

use futures::StreamExt;
use warren_examples::{Calc, CalculatorClient, CalculatorServer};
use warren_rpc::{BroadcastOptions, CallOptions, CancelToken, Client, Context, Error, Server};

/// A service with one slow method, to show what a deadline does.
#[warren_rpc::service(name = "reports")]
pub trait Reports {
    /// Takes `delay_ms` milliseconds to write a report.
    async fn slow_report(&self, delay_ms: u64) -> String;
}

struct Reporter;

impl Reports for Reporter {
    async fn slow_report(&self, delay_ms: u64) -> String {
        let started = Instant::now();
        let cx = Context::current().expect("handlers run with a context");
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(delay_ms)) => {}
            // The caller gave up (it cancelled, or its deadline passed): stop writing.
            () = cx.cancelled() => {
                println!(
                    "         (server: report {} stopped after {}ms: cancelled)",
                    cx.call_id(),
                    started.elapsed().as_millis()
                );
            }
        }
        format!("report written in {delay_ms}ms")
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // lapin logs every returned message at WARN; here a return is expected (the unavailable
    // service below) and Warren reports it as an error value, so that log is silenced.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,lapin::returned_messages=error".into()),
        )
        .init();

    let started = Instant::now();
    let broker = warren_broker::Broker::builder()
        .listen("127.0.0.1:0".parse()?)
        .start()
        .await?;
    let url = broker.amqp_url();
    println!(
        "broker   listening at {url} (ready in {:?})",
        started.elapsed()
    );

    let calculator = Server::builder()
        .concurrency(16)
        .serve(&url, CalculatorServer::new(Calc::new()))
        .await?;
    let reports = Server::serve(&url, ReportsServer::new(Reporter)).await?;
    println!(
        "servers  serving `{}` and `{}`",
        calculator.queue(),
        reports.queue()
    );

    let client = Client::builder()
        .timeout(Duration::from_secs(5))
        .connect(&url)
        .await?;
    println!("client   replies via {}", client.reply_to());
    let calc = CalculatorClient::new(client.clone());

    println!();
    println!("add(2, 3)          = {}", calc.add(2, 3).await?);
    println!("sub(10, 4)         = {}", calc.sub(10, 4).await?);
    println!("mul(6, 7)          = {}", calc.mul(6, 7).await?);
    match calc.div(84, 2).await? {
        Ok(q) => println!("div(84, 2)         = {q}"),
        Err(e) => println!("div(84, 2)         -> application error: {e}"),
    }
    // An application error is a value of the method's error type, not a framework error.
    match calc.div(1, 0).await? {
        Ok(q) => println!("div(1, 0)          = {q} (unexpected)"),
        Err(e) => println!("div(1, 0)          -> application error: {e} ({e:?})"),
    }
    println!("memory_add(10)     = {}", calc.memory_add(10).await?);
    println!("memory_add(32)     = {}", calc.memory_add(32).await?);
    println!("memory_recall()    = {}", calc.memory_recall().await?);

    // A streamed reply: items arrive one by one, under the caller's flow control.
    let mut fib = calc.fibonacci(12);
    let mut items = Vec::new();
    while let Some(n) = fib.next().await {
        items.push(n?);
    }
    println!("fibonacci(12)      = {items:?} (streamed)");
    // Taking only the first items and dropping the stream cancels it on the server.
    let first: Vec<u64> = calc
        .fibonacci(1_000_000)
        .take(5)
        .map(|n| n.unwrap_or_default())
        .collect()
        .await;
    println!("fibonacci(1000000) -> first {first:?}, then dropped (the server stops)");

    // A deadline shorter than the work: the caller gets a timeout by its deadline.
    let quick = ReportsClient::new(client.clone()).with_timeout(Duration::from_millis(200));
    let asked = Instant::now();
    match quick.slow_report(2_000).await {
        Ok(report) => println!("slow_report(2000)  = {report} (unexpected)"),
        Err(e @ Error::DeadlineExceeded { .. }) => println!(
            "slow_report(2000)  -> {e} after {}ms (retryable: {})",
            asked.elapsed().as_millis(),
            e.is_retryable()
        ),
        Err(e) => return Err(e.into()),
    }
    let patient = ReportsClient::new(client.clone());
    println!("slow_report(50)    = {}", patient.slow_report(50).await?);

    // Cancelled by the caller: the server hears of it and stops the handler.
    let token = CancelToken::new();
    let cancellable = ReportsClient::new(client.clone())
        .with_options(CallOptions::new().cancel_token(token.clone()));
    let canceller = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        token.cancel();
    });
    match cancellable.slow_report(10_000).await {
        Ok(report) => println!("slow_report(10000) = {report} (unexpected)"),
        Err(e @ Error::Cancelled) => println!("slow_report(10000) -> {e}"),
        Err(e) => return Err(e.into()),
    }
    canceller.await?;
    // Give the server's note a moment to print before the next line.
    tokio::time::sleep(Duration::from_millis(50)).await;

    // No queue for the service: the broker returns the request and the caller knows at once.
    let nobody =
        CalculatorClient::new(client.clone()).with_options(CallOptions::new().service("abacus"));
    let asked = Instant::now();
    match nobody.add(1, 1).await {
        Ok(sum) => println!("abacus.add(1, 1)   = {sum} (unexpected)"),
        Err(e) => println!(
            "abacus.add(1, 1)   -> {e} after {}ms (retryable: {})",
            asked.elapsed().as_millis(),
            e.is_retryable()
        ),
    }

    // Introspection: what does the service offer, who serves it, what have they served?
    println!();
    let description = client.describe("calculator").await?;
    println!(
        "$describe {} (protocol {}):",
        description.service, description.protocol
    );
    for m in &description.methods {
        let params: Vec<String> = m
            .params
            .iter()
            .map(|p| format!("{}: {}", p.name, p.ty))
            .collect();
        let returns = match &m.error {
            Some(err) => format!("Result<{}, {err}>", m.returns),
            None => m.returns.clone(),
        };
        let idempotent = if m.idempotent { "  [idempotent]" } else { "" };
        println!(
            "  {}({}) -> {returns}{idempotent}",
            m.name,
            params.join(", ")
        );
    }
    // A second replica; a broadcast reaches both, each with its own memory.
    let replica = Server::serve(&url, CalculatorServer::new(Calc::new())).await?;
    let every = BroadcastOptions::new().timeout(Duration::from_millis(500));
    for ping in client.ping_all("calculator", &every).await? {
        let ping = ping.result?;
        println!(
            "$ping     instance {} on {} (pid {}), up {}ms, {} in flight",
            ping.instance, ping.host, ping.pid, ping.uptime_ms, ping.in_flight
        );
    }
    let totals = calc.broadcast().max_replies(2).memory_add(1).await?;
    for total in totals {
        println!(
            "broadcast memory_add(1) -> {} from {}",
            total.result?,
            total.instance.unwrap_or_default()
        );
    }
    let stats = client.stats("calculator").await?;
    for (method, s) in stats.methods.iter().filter(|(_, s)| s.calls > 0) {
        println!(
            "$stats    {method}: {} call(s), errors {:?}, p50 {:.3}ms",
            s.calls,
            s.errors,
            s.p50_ms.unwrap_or_default()
        );
    }
    replica.shutdown().await;

    println!();
    client.close().await;
    calculator.shutdown().await;
    reports.shutdown().await;
    broker.shutdown().await;
    println!("done in {:?}", started.elapsed());
    Ok(())
}
