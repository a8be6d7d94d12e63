//! Run with: cargo run -p warren-examples --example calculator_server -- --url amqp://guest:guest@127.0.0.1:5672/%2f
//!
//! Serves the calculator on any broker (RabbitMQ or `warren-broker`) until Ctrl-C, then shuts
//! down gracefully: in-flight calls finish, get their replies and are acked.

use std::time::Duration;

use clap::Parser;
use warren_examples::{Calc, CalculatorServer};
use warren_rpc::Server;

/// Serve the `calculator` service.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// The broker's URL.
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    url: String,

    /// How many calls run at once (also the prefetch count).
    #[arg(long, default_value_t = 64)]
    concurrency: u16,

    /// Declare the service queue durable.
    #[arg(long)]
    durable: bool,

    /// The queue type, e.g. `quorum` on a RabbitMQ cluster (needs --durable).
    #[arg(long)]
    queue_type: Option<String>,

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
        .shutdown_grace(Duration::from_secs(10));
    if let Some(queue_type) = args.queue_type {
        builder = builder.queue_type(queue_type);
    }
    if let Some(queue) = args.queue {
        builder = builder.queue_name(queue);
    }
    let server = builder
        .serve(&args.url, CalculatorServer::new(Calc::new()))
        .await?;
    println!(
        "serving `{}` on {} (Ctrl-C to stop)",
        server.queue(),
        args.url
    );
    tokio::signal::ctrl_c().await?;
    println!("shutting down");
    server.shutdown().await;
    Ok(())
}
