//! Run with: cargo run -p warren-examples --example middleware
//!
//! Tower middleware on both sides of a call: the server checks a bearer token
//! ([`RequireTokenLayer`]), logs every call and counts it with the `metrics` facade; the client
//! sends the token ([`bearer`]) and counts its calls too. A client without the token gets the
//! typed fault `unauthenticated`. The metrics go to a debugging recorder printed at the end; any
//! `metrics` exporter (Prometheus, StatsD, ...) would pick up the same series.

use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use warren_examples::auth::{bearer, RequireTokenLayer};
use warren_examples::{Calc, CalculatorClient, CalculatorServer};
use warren_rpc::middleware::{LoggingLayer, MetricsLayer};
use warren_rpc::{Client, Error, FaultCode, Server};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,warren_rpc::middleware=info".into()),
        )
        .init();
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install()?;

    let broker = warren_broker::Broker::builder()
        .listen("127.0.0.1:0".parse()?)
        .start()
        .await?;
    let url = broker.amqp_url();

    // Outermost first: log, count, then check the token.
    let server = Server::builder()
        .layer(LoggingLayer)
        .layer(MetricsLayer)
        .layer(RequireTokenLayer::new("s3cret"))
        .serve(&url, CalculatorServer::new(Calc::new()))
        .await?;

    let client = Client::builder()
        .timeout(Duration::from_secs(5))
        .layer(MetricsLayer)
        .layer(bearer("s3cret"))
        .connect(&url)
        .await?;
    let calc = CalculatorClient::new(client.clone());
    println!("with the token:    add(2, 3) = {}", calc.add(2, 3).await?);
    println!("with the token:    mul(6, 7) = {}", calc.mul(6, 7).await?);

    let anonymous_client = Client::connect(&url).await?;
    let anonymous = CalculatorClient::new(anonymous_client.clone());
    match anonymous.add(2, 3).await {
        Err(
            e @ Error::Fault {
                code: FaultCode::Unauthenticated,
                ..
            },
        ) => println!("without the token: add(2, 3) -> {e}"),
        other => return Err(format!("expected unauthenticated, got {other:?}").into()),
    }

    println!();
    println!("metrics:");
    let mut lines: Vec<String> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let labels: Vec<String> = key
                .key()
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            let value = match value {
                DebugValue::Counter(n) => n.to_string(),
                DebugValue::Gauge(g) => g.to_string(),
                DebugValue::Histogram(samples) => format!("{} sample(s)", samples.len()),
            };
            format!("  {}{{{}}} {}", key.key().name(), labels.join(","), value)
        })
        .collect();
    lines.sort();
    for line in lines {
        println!("{line}");
    }

    client.close().await;
    anonymous_client.close().await;
    server.shutdown().await;
    broker.shutdown().await;
    Ok(())
}
