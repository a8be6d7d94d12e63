//! Run with: cargo run -p warren-examples --example calculator_server -- --url amqp://guest:guest@127.0.0.1:5672/%2f
//!
//! Serves the calculator on any broker (RabbitMQ or `warren-broker`) until Ctrl-C, then shuts
//! down gracefully: in-flight calls finish, get their replies and are acked.
//!
//! On a RabbitMQ cluster (docs/scale-out.md), give every node and a quorum queue:
//! `--url amqp://guest:guest@127.0.0.1:5691/%2f --url amqp://guest:guest@127.0.0.1:5692/%2f
//! --url amqp://guest:guest@127.0.0.1:5693/%2f --queue-type quorum`.
//!
//! Over TLS: `--url amqps://guest:guest@localhost:5671/%2f --tls-ca ca.pem` (add `--tls-cert
//! client.pem --tls-key client.key` for a broker that asks for a client certificate, and
//! `?auth_mechanism=external` to the URL to log in as the certificate).

use std::time::Duration;

use clap::Parser;
use warren_examples::{Calc, CalculatorServer};
use warren_rpc::Server;

/// Serve the `calculator` service.
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

    /// How many calls run at once (also the prefetch count).
    #[arg(long, default_value_t = 64)]
    concurrency: u16,

    /// Declare the service queue durable.
    #[arg(long)]
    durable: bool,

    /// The queue type, e.g. `quorum` on a RabbitMQ cluster (always durable, with a delivery
    /// limit).
    #[arg(long)]
    queue_type: Option<String>,

    /// With `--queue-type quorum`: how many times a request may come back unacked (its server
    /// died running it) before it is answered with a `delivery_limit` fault.
    #[arg(long)]
    delivery_limit: Option<u32>,

    /// Consume this queue instead of `calculator`.
    #[arg(long)]
    queue: Option<String>,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,lapin=warn".into()),
        )
        .init();
    let args = Args::parse();

    let mut builder = Server::builder()
        .concurrency(args.concurrency)
        .durable(args.durable)
        .shutdown_grace(Duration::from_secs(10))
        .tls(args.tls.tls()?);
    if let Some(queue_type) = args.queue_type {
        builder = builder.queue_type(queue_type);
    }
    if let Some(limit) = args.delivery_limit {
        builder = builder.delivery_limit(limit);
    }
    if let Some(queue) = args.queue {
        builder = builder.queue_name(queue);
    }
    // clap's default makes the list non-empty.
    let (first, others) = args.urls.split_first().ok_or("no --url given")?;
    let server = builder
        .urls(others.iter().cloned())
        .serve(first, CalculatorServer::new(Calc::new()))
        .await?;
    println!(
        "serving `{}` on {} (Ctrl-C to stop)",
        server.queue(),
        args.urls.join(" or ")
    );
    tokio::signal::ctrl_c().await?;
    println!("shutting down");
    server.shutdown().await;
    Ok(())
}
