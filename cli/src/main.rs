//! `warren`: list, describe, call, ping and benchmark Warren services from a shell, on any
//! broker (the bundled `warren-broker` or RabbitMQ).
//!
//! ```sh
//! warren services
//! warren describe calculator
//! warren call calculator add '{"a": 2, "b": 3}'
//! warren ping calculator
//! warren stats calculator
//! warren bench calculator add '{"a": 2, "b": 3}' --calls 10000 --concurrency 32
//! ```
//!
//! The broker is `--url` (repeatable: the first that answers is used), else `$WARREN_URL`,
//! else `amqp://guest:guest@127.0.0.1:5672/%2f`. Output is readable by default and JSON with
//! `--json`. Calls travel as `application/json`, so arguments and results are plain JSON. On
//! failure the command prints the typed error (its kind and message) and exits with status 1.

mod output;

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use futures::stream::{self, StreamExt};
use serde_json::Value;
use warren_rpc::introspect::{self, PingReply};
use warren_rpc::middleware::{RawReply, SetHeadersLayer};
use warren_rpc::{BroadcastOptions, CallOptions, Client, Codec, Error, MethodSpec};

use crate::output::Failure;

/// The broker used when neither `--url` nor `WARREN_URL` says otherwise.
const DEFAULT_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// Talk to Warren services from the command line.
#[derive(Debug, Parser)]
#[command(name = "warren", version, about)]
struct Cli {
    /// The broker's URL; repeat it to give alternatives, tried in order.
    #[arg(long, global = true, env = "WARREN_URL", value_delimiter = ',')]
    url: Vec<String>,

    /// Print JSON instead of readable text.
    #[arg(long, global = true)]
    json: bool,

    /// The budget of each call, in milliseconds.
    #[arg(long, global = true, default_value_t = 5000)]
    timeout_ms: u64,

    /// How long broadcasts (`services`, `ping`) collect replies, in milliseconds.
    #[arg(long, global = true, default_value_t = 1000)]
    wait_ms: u64,

    /// An application header sent with every call, `name=value` (e.g. an auth token).
    #[arg(long = "header", global = true, value_parser = parse_header)]
    headers: Vec<(String, String)>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List the services with running servers, and how many replicas each has.
    Services,
    /// Show the methods of a service: parameters, result and error types, options.
    Describe {
        /// The service (queue) name.
        service: String,
    },
    /// Call a method with JSON arguments and print its JSON result.
    Call {
        /// The service (queue) name.
        service: String,
        /// The method name.
        method: String,
        /// The arguments as a JSON object, parameter name to value.
        #[arg(default_value = "{}")]
        args: String,
    },
    /// Ping every replica of a service: one line per replica.
    Ping {
        /// The service (queue) name.
        service: String,
    },
    /// Per-method counters of every replica of a service: calls, errors, latency.
    Stats {
        /// The service (queue) name.
        service: String,
    },
    /// Call a method many times concurrently and report throughput and latency.
    Bench {
        /// The service (queue) name.
        service: String,
        /// The method name.
        method: String,
        /// The arguments as a JSON object.
        #[arg(default_value = "{}")]
        args: String,
        /// How many calls in total.
        #[arg(long, default_value_t = 1000)]
        calls: u64,
        /// How many calls in flight at once.
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
    },
}

fn parse_header(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(name, value)| (name.trim().to_owned(), value.to_owned()))
        .filter(|(name, _)| !name.is_empty())
        .ok_or_else(|| format!("expected name=value, got `{text}`"))
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = cli.json;
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            failure.print(json);
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), Failure> {
    let client = connect(&cli).await?;
    let out = output::Printer { json: cli.json };
    let result = match &cli.command {
        Command::Services => services(&client, &cli, &out).await,
        Command::Describe { service } => {
            let description = client.describe(service).await?;
            out.description(&description);
            Ok(())
        }
        Command::Call {
            service,
            method,
            args,
        } => call(&client, &cli, service, method, args, &out).await,
        Command::Ping { service } => {
            let replicas = client.ping_all(service, &broadcast_options(&cli)).await?;
            let pings = ok_replicas(replicas)?;
            out.pings(&pings);
            Ok(())
        }
        Command::Stats { service } => {
            let method = introspect::reserved_method("", introspect::STATS);
            let options = broadcast_options(&cli).service(service.as_str());
            let replicas = client
                .broadcast_call::<_, introspect::StatsReply>(&method, &Empty {}, &options)
                .await?;
            out.stats(&ok_replicas(replicas)?);
            Ok(())
        }
        Command::Bench {
            service,
            method,
            args,
            calls,
            concurrency,
        } => {
            bench(
                &client,
                &cli,
                service,
                method,
                args,
                *calls,
                *concurrency,
                &out,
            )
            .await
        }
    };
    client.close().await;
    result
}

/// Connects to the first URL that answers (the others are the client's fallbacks, as for the
/// nodes of a cluster).
async fn connect(cli: &Cli) -> Result<Client, Failure> {
    let (first, rest) = match cli.url.split_first() {
        Some((first, rest)) => (first.as_str(), rest),
        None => (DEFAULT_URL, &[][..]),
    };
    let mut builder = Client::builder()
        .codec(Codec::Json)
        .timeout(Duration::from_millis(cli.timeout_ms))
        .connection_name("warren-cli")
        .urls(rest.iter().cloned());
    if !cli.headers.is_empty() {
        let layer = cli
            .headers
            .iter()
            .fold(SetHeadersLayer::new(), |layer, (name, value)| {
                layer.header(name, value)
            });
        builder = builder.layer(layer);
    }
    builder.connect(first).await.map_err(Failure::from)
}

fn broadcast_options(cli: &Cli) -> BroadcastOptions {
    BroadcastOptions::new()
        .timeout(Duration::from_millis(cli.wait_ms))
        .codec(Codec::Json)
}

/// The replies of the replicas, or the first replica's error when none answered well.
fn ok_replicas<T>(replicas: Vec<warren_rpc::Replica<T>>) -> Result<Vec<T>, Failure> {
    let mut ok = Vec::new();
    let mut first_err = None;
    for replica in replicas {
        match replica.result {
            Ok(value) => ok.push(value),
            Err(err) => {
                first_err.get_or_insert(err);
            }
        }
    }
    match first_err {
        Some(err) if ok.is_empty() => Err(err.into()),
        _ => Ok(ok),
    }
}

/// The empty arguments map.
#[derive(serde::Serialize)]
struct Empty {}

/// `warren services`: every server binds its instance queue to the discovery exchange, so a
/// `$ping` published there reaches each server of each service once.
async fn services(client: &Client, cli: &Cli, out: &output::Printer) -> Result<(), Failure> {
    let method = introspect::reserved_method("", introspect::PING);
    let options = broadcast_options(cli)
        .service("warren.discovery")
        .exchange(introspect::DISCOVERY_EXCHANGE);
    let replicas = match client
        .broadcast_call::<_, PingReply>(&method, &Empty {}, &options)
        .await
    {
        Ok(replicas) => replicas,
        // No discovery exchange: no server has ever run (or all are gone).
        Err(Error::ServiceUnavailable { .. }) => Vec::new(),
        Err(err) => return Err(err.into()),
    };
    let mut by_service: BTreeMap<String, Vec<PingReply>> = BTreeMap::new();
    for ping in ok_replicas(replicas)? {
        by_service
            .entry(ping.service.clone())
            .or_default()
            .push(ping);
    }
    out.services(&by_service);
    Ok(())
}

/// A method description for a name given on the command line. The process runs one command,
/// so the two names are leaked once rather than copied into every call.
fn method_spec(service: &str, method: &str) -> MethodSpec {
    let service: &'static str = Box::leak(service.to_owned().into_boxed_str());
    let method: &'static str = Box::leak(method.to_owned().into_boxed_str());
    MethodSpec::new(service, method)
}

fn json_args(args: &str) -> Result<Vec<u8>, Failure> {
    let value: Value = serde_json::from_str(args)
        .map_err(|e| Failure::usage(format!("the arguments are not JSON: {e}")))?;
    if !value.is_object() {
        return Err(Failure::usage(
            "the arguments must be a JSON object of parameter names to values, e.g. '{\"a\": 2, \"b\": 3}'",
        ));
    }
    serde_json::to_vec(&value).map_err(|e| Failure::usage(e.to_string()))
}

/// The value of an `{"ok": ...}` reply, or the application error or fault as a failure.
fn reply_value(reply: &RawReply) -> Result<Value, Failure> {
    let body: Value = serde_json::from_slice(&reply.body).map_err(|e| {
        Failure::from(Error::Decode {
            reason: format!("the reply is not JSON: {e}"),
        })
    })?;
    let Value::Object(mut map) = body else {
        return Err(Error::Decode {
            reason: "the reply is not a JSON object".into(),
        }
        .into());
    };
    if let Some(ok) = map.remove("ok") {
        return Ok(ok);
    }
    if let Some(err) = map.remove("err") {
        return Err(Failure::application(err));
    }
    if let Some(Value::Object(fault)) = map.remove("fault") {
        let text = |key: &str| fault.get(key).and_then(Value::as_str).unwrap_or("");
        return Err(Error::Fault {
            code: warren_rpc::FaultCode::parse(text("code")),
            message: text("message").to_owned(),
        }
        .into());
    }
    Err(Error::Decode {
        reason: "the reply has none of ok, err, fault".into(),
    }
    .into())
}

async fn call(
    client: &Client,
    cli: &Cli,
    service: &str,
    method: &str,
    args: &str,
    out: &output::Printer,
) -> Result<(), Failure> {
    let body = json_args(args)?;
    let spec = method_spec(service, method);
    let options = CallOptions::new().timeout(Duration::from_millis(cli.timeout_ms));
    let reply = client.call_raw(&spec, Codec::Json, body, &options).await?;
    let value = reply_value(&reply)?;
    out.value(&value);
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn bench(
    client: &Client,
    cli: &Cli,
    service: &str,
    method: &str,
    args: &str,
    calls: u64,
    concurrency: usize,
    out: &output::Printer,
) -> Result<(), Failure> {
    let body = json_args(args)?;
    let spec = method_spec(service, method);
    let options = CallOptions::new().timeout(Duration::from_millis(cli.timeout_ms));
    // One call first, so a wrong service or method fails fast with its typed error.
    reply_value(
        &client
            .call_raw(&spec, Codec::Json, body.clone(), &options)
            .await?,
    )?;
    let started = Instant::now();
    let results: Vec<(Duration, Option<String>)> = stream::iter(0..calls)
        .map(|_| {
            let body = body.clone();
            let (spec, options) = (&spec, &options);
            async move {
                let sent = Instant::now();
                let result = client.call_raw(spec, Codec::Json, body, options).await;
                let error = match result {
                    Ok(reply) => reply_value(&reply).err().map(|f| f.kind),
                    Err(err) => Some(err.kind().to_owned()),
                };
                (sent.elapsed(), error)
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    out.bench(&output::BenchReport::new(started.elapsed(), &results));
    Ok(())
}
