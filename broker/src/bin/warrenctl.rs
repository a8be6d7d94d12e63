//! `warrenctl`: operate a Warren broker (or a RabbitMQ node) from the command line, through the
//! management HTTP API (`/api/...`), as `rabbitmqadmin` does.
//!
//! `warrenctl status`, `warrenctl list queues`, `warrenctl purge NAME`, `warrenctl export
//! defs.json`... Tables by default, `--json` for scripts. Exit codes: 0 done; 1 the server
//! refused the request (4xx/5xx other than 401; its reason is printed); 2 bad usage; 3 the
//! server could not be reached; 4 authentication failed (401). `docs/operations.md` has the
//! full reference.

use clap::{Parser, Subcommand, ValueEnum};
use serde_json::{json, Value};
use std::process::ExitCode;

/// Operate a Warren broker (or RabbitMQ) through its management HTTP API.
#[derive(Debug, Parser)]
#[command(name = "warrenctl", version, about)]
struct Cli {
    /// The management API's base URL.
    #[arg(
        long,
        global = true,
        env = "WARRENCTL_URL",
        default_value = "http://127.0.0.1:15672"
    )]
    url: String,
    /// CA certificates (PEM) to trust for an https:// URL instead of the built-in roots, as
    /// curl's --cacert: for a broker whose certificate a private CA signed.
    #[arg(long, global = true, env = "WARRENCTL_CACERT", value_name = "FILE")]
    cacert: Option<std::path::PathBuf>,
    /// User name.
    #[arg(
        long,
        short = 'u',
        global = true,
        env = "WARRENCTL_USER",
        default_value = "guest"
    )]
    user: String,
    /// Password.
    #[arg(
        long,
        short = 'p',
        global = true,
        env = "WARRENCTL_PASSWORD",
        default_value = "guest",
        hide_env_values = true
    )]
    password: String,
    /// Virtual host for commands that act on one.
    #[arg(long, global = true, default_value = "/")]
    vhost: String,
    /// Print the server's JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The node: versions, object counts, message totals.
    Status,
    /// Lists objects of one kind (all vhosts).
    List {
        /// What to list.
        kind: Kind,
    },
    /// Removes every ready message of a queue.
    Purge {
        /// The queue.
        queue: String,
    },
    /// Deletes a queue, an exchange or a vhost.
    Delete {
        /// What to delete.
        kind: DeleteKind,
        /// Its name.
        name: String,
    },
    /// Closes a client connection (its name as `list connections` shows it).
    CloseConnection {
        /// The connection's name, e.g. "127.0.0.1:50000 -> 127.0.0.1:5672".
        name: String,
        /// The reason the client is told.
        #[arg(long, default_value = "Closed via warrenctl")]
        reason: String,
    },
    /// Writes the definitions (all, or --vhost's with --only-vhost) to a file or stdout.
    Export {
        /// The file ("-" or nothing for stdout).
        file: Option<String>,
        /// Only the definitions of --vhost.
        #[arg(long)]
        only_vhost: bool,
    },
    /// Imports definitions (RabbitMQ's format) from a file ("-" for stdin).
    Import {
        /// The file.
        file: String,
        /// Into --vhost only.
        #[arg(long)]
        only_vhost: bool,
    },
    /// Declares a queue, an exchange, a binding or a vhost.
    Declare {
        #[command(subcommand)]
        what: Declare,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Kind {
    Queues,
    Exchanges,
    Bindings,
    Connections,
    Channels,
    Consumers,
    Users,
    Vhosts,
    Permissions,
    /// Warren RPC services the broker has seen (Warren only).
    Services,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum DeleteKind {
    Queue,
    Exchange,
    Vhost,
}

#[derive(Debug, Subcommand)]
enum Declare {
    /// A queue.
    Queue {
        /// Its name.
        name: String,
        /// Survives a restart.
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        durable: bool,
        /// Deleted with its last consumer.
        #[arg(long)]
        auto_delete: bool,
        /// Arguments as a JSON object, e.g. '{"x-max-length": 10}'.
        #[arg(long)]
        arguments: Option<String>,
    },
    /// An exchange.
    Exchange {
        /// Its name.
        name: String,
        /// direct, fanout, topic or headers.
        #[arg(long = "type", default_value = "direct")]
        kind: String,
        /// Survives a restart.
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        durable: bool,
        /// Deleted when its last binding goes.
        #[arg(long)]
        auto_delete: bool,
        /// Not publishable by clients.
        #[arg(long)]
        internal: bool,
        /// Arguments as a JSON object.
        #[arg(long)]
        arguments: Option<String>,
    },
    /// A binding from an exchange to a queue or exchange.
    Binding {
        /// The source exchange.
        #[arg(long)]
        source: String,
        /// The destination's name.
        #[arg(long)]
        destination: String,
        /// queue or exchange.
        #[arg(long, default_value = "queue")]
        destination_type: String,
        /// The binding key.
        #[arg(long, default_value = "")]
        routing_key: String,
        /// Arguments as a JSON object.
        #[arg(long)]
        arguments: Option<String>,
    },
    /// A virtual host.
    Vhost {
        /// Its name.
        name: String,
    },
}

/// Why a command failed, with its exit code.
#[derive(Debug)]
enum Failure {
    /// The server answered with an error status.
    Refused(u16, String),
    /// 401.
    Auth(String),
    /// No answer.
    Unreachable(String),
    /// Bad input on our side.
    Usage(String),
}

impl Failure {
    fn code(&self) -> u8 {
        match self {
            Failure::Refused(..) => 1,
            Failure::Usage(_) => 2,
            Failure::Unreachable(_) => 3,
            Failure::Auth(_) => 4,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Refused(status, reason) => write!(f, "refused ({status}): {reason}"),
            Failure::Auth(reason) => write!(f, "authentication failed: {reason}"),
            Failure::Unreachable(e) => write!(f, "cannot reach the server: {e}"),
            Failure::Usage(e) => write!(f, "{e}"),
        }
    }
}

/// A client of one management API.
struct Api {
    base: String,
    auth: String,
    agent: ureq::Agent,
}

/// A TLS client configuration trusting only the CA certificates in the PEM file `path`.
fn trusting(path: &std::path::Path) -> Result<std::sync::Arc<rustls::ClientConfig>, Failure> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let bad = |e: String| Failure::Usage(format!("--cacert {}: {e}", path.display()));
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path).map_err(|e| bad(e.to_string()))? {
        let cert = cert.map_err(|e| bad(e.to_string()))?;
        roots.add(cert).map_err(|e| bad(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad("no certificate in the file".into()));
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(std::sync::Arc::new(config))
}

/// Percent-encodes one path segment (RabbitMQ's API names vhost "/" as %2F).
fn seg(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Api {
    fn new(cli: &Cli) -> Result<Api, Failure> {
        use base64::Engine;
        let token = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", cli.user, cli.password));
        let mut agent = ureq::AgentBuilder::new().timeout(std::time::Duration::from_secs(30));
        if let Some(path) = &cli.cacert {
            agent = agent.tls_config(trusting(path)?);
        }
        Ok(Api {
            base: cli.url.trim_end_matches('/').to_string(),
            auth: format!("Basic {token}"),
            agent: agent.build(),
        })
    }

    /// Sends a request; the parsed JSON answer (Null for an empty body).
    fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        reason: Option<&str>,
    ) -> Result<Value, Failure> {
        let mut req = self
            .agent
            .request(method, &format!("{}/api/{path}", self.base))
            .set("Authorization", &self.auth)
            .set("Content-Type", "application/json");
        if let Some(r) = reason {
            req = req.set("X-Reason", r);
        }
        let result = match body {
            Some(b) => req.send_string(b),
            None => req.call(),
        };
        let resp = match result {
            Ok(r) => r,
            Err(ureq::Error::Status(status, r)) => {
                let text = r.into_string().unwrap_or_default();
                let reason = serde_json::from_str::<Value>(&text)
                    .ok()
                    .and_then(|v| v.get("reason").and_then(Value::as_str).map(str::to_string))
                    .unwrap_or(text);
                return Err(if status == 401 {
                    Failure::Auth(reason)
                } else {
                    Failure::Refused(status, reason)
                });
            }
            Err(e) => return Err(Failure::Unreachable(e.to_string())),
        };
        let text = resp
            .into_string()
            .map_err(|e| Failure::Unreachable(e.to_string()))?;
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).map_err(|e| Failure::Unreachable(format!("not JSON: {e}")))
    }

    fn get(&self, path: &str) -> Result<Value, Failure> {
        self.call("GET", path, None, None)
    }
}

/// Looks a dotted path up in a JSON object, as a table cell.
fn cell(v: &Value, path: &str) -> String {
    let x = path.split('.').try_fold(v, |v, k| v.get(k));
    match x {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| x.as_str().map_or(x.to_string(), str::to_string))
            .collect::<Vec<_>>()
            .join(","),
        Some(other) => other.to_string(),
    }
}

/// Prints rows as an aligned table with a header.
fn table(items: &[Value], columns: &[&str]) {
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|v| columns.iter().map(|c| cell(v, c)).collect())
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([c.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<&str>| {
        let parts: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", parts.join("  ").trim_end());
    };
    line(columns.to_vec());
    for r in &rows {
        line(r.iter().map(String::as_str).collect());
    }
}

fn columns(kind: Kind) -> (&'static str, &'static [&'static str]) {
    match kind {
        Kind::Queues => (
            "queues",
            &[
                "vhost",
                "name",
                "messages",
                "messages_ready",
                "messages_unacknowledged",
                "consumers",
                "durable",
            ],
        ),
        Kind::Exchanges => (
            "exchanges",
            &[
                "vhost",
                "name",
                "type",
                "durable",
                "auto_delete",
                "internal",
            ],
        ),
        Kind::Bindings => (
            "bindings",
            &[
                "vhost",
                "source",
                "destination",
                "destination_type",
                "routing_key",
            ],
        ),
        Kind::Connections => (
            "connections",
            &["name", "user", "vhost", "protocol", "channels", "state"],
        ),
        Kind::Channels => (
            "channels",
            &[
                "name",
                "user",
                "vhost",
                "consumer_count",
                "messages_unacknowledged",
                "prefetch_count",
            ],
        ),
        Kind::Consumers => (
            "consumers",
            &[
                "queue.vhost",
                "queue.name",
                "consumer_tag",
                "channel_details.name",
                "ack_required",
                "prefetch_count",
            ],
        ),
        Kind::Users => ("users", &["name", "tags"]),
        Kind::Vhosts => ("vhosts", &["name", "messages"]),
        Kind::Permissions => (
            "permissions",
            &["user", "vhost", "configure", "write", "read"],
        ),
        Kind::Services => (
            "warren/services",
            &[
                "vhost",
                "name",
                "requests",
                "replies",
                "expired",
                "returned",
                "in_flight",
            ],
        ),
    }
}

fn show(cli: &Cli, v: &Value, cols: &[&str]) {
    if cli.json {
        println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
    } else if let Value::Array(items) = v {
        table(items, cols);
    }
}

fn status(cli: &Cli, api: &Api) -> Result<(), Failure> {
    let o = api.get("overview")?;
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&o).unwrap_or_default());
        return Ok(());
    }
    for (label, path) in [
        ("product", "product_name"),
        ("product version", "product_version"),
        ("RabbitMQ API version", "rabbitmq_version"),
        ("node", "node"),
        ("connections", "object_totals.connections"),
        ("channels", "object_totals.channels"),
        ("queues", "object_totals.queues"),
        ("exchanges", "object_totals.exchanges"),
        ("consumers", "object_totals.consumers"),
        ("messages", "queue_totals.messages"),
        ("messages ready", "queue_totals.messages_ready"),
        (
            "messages unacknowledged",
            "queue_totals.messages_unacknowledged",
        ),
        ("publish rate /s", "message_stats.publish_details.rate"),
        ("deliver rate /s", "message_stats.deliver_get_details.rate"),
    ] {
        println!("{label:<24} {}", cell(&o, path));
    }
    Ok(())
}

fn json_arg(raw: &Option<String>) -> Result<Value, Failure> {
    match raw {
        None => Ok(json!({})),
        Some(s) => match serde_json::from_str::<Value>(s) {
            Ok(v @ Value::Object(_)) => Ok(v),
            _ => Err(Failure::Usage(format!(
                "--arguments must be a JSON object, got {s}"
            ))),
        },
    }
}

fn declare(cli: &Cli, api: &Api, what: &Declare) -> Result<(), Failure> {
    let vh = seg(&cli.vhost);
    let (path, body) = match what {
        Declare::Queue {
            name,
            durable,
            auto_delete,
            arguments,
        } => (
            format!("queues/{vh}/{}", seg(name)),
            json!({"durable": durable, "auto_delete": auto_delete, "arguments": json_arg(arguments)?}),
        ),
        Declare::Exchange {
            name,
            kind,
            durable,
            auto_delete,
            internal,
            arguments,
        } => (
            format!("exchanges/{vh}/{}", seg(name)),
            json!({"type": kind, "durable": durable, "auto_delete": auto_delete, "internal": internal, "arguments": json_arg(arguments)?}),
        ),
        Declare::Binding {
            source,
            destination,
            destination_type,
            routing_key,
            arguments,
        } => {
            let d = match destination_type.as_str() {
                "queue" => "q",
                "exchange" => "e",
                other => {
                    return Err(Failure::Usage(format!(
                        "--destination-type must be queue or exchange, not {other}"
                    )))
                }
            };
            let path = format!("bindings/{vh}/e/{}/{d}/{}", seg(source), seg(destination));
            api.call(
                "POST",
                &path,
                Some(
                    &json!({"routing_key": routing_key, "arguments": json_arg(arguments)?})
                        .to_string(),
                ),
                None,
            )?;
            println!("binding declared");
            return Ok(());
        }
        Declare::Vhost { name } => (format!("vhosts/{}", seg(name)), json!({})),
    };
    api.call("PUT", &path, Some(&body.to_string()), None)?;
    println!("declared");
    Ok(())
}

fn run(cli: &Cli) -> Result<(), Failure> {
    let api = Api::new(cli)?;
    let vh = seg(&cli.vhost);
    match &cli.command {
        Command::Status => status(cli, &api),
        Command::List { kind } => {
            let (path, cols) = columns(*kind);
            show(cli, &api.get(path)?, cols);
            Ok(())
        }
        Command::Purge { queue } => {
            api.call(
                "DELETE",
                &format!("queues/{vh}/{}/contents", seg(queue)),
                None,
                None,
            )?;
            println!("queue {queue} purged");
            Ok(())
        }
        Command::Delete { kind, name } => {
            let path = match kind {
                DeleteKind::Queue => format!("queues/{vh}/{}", seg(name)),
                DeleteKind::Exchange => format!("exchanges/{vh}/{}", seg(name)),
                DeleteKind::Vhost => format!("vhosts/{}", seg(name)),
            };
            api.call("DELETE", &path, None, None)?;
            println!("deleted");
            Ok(())
        }
        Command::CloseConnection { name, reason } => {
            api.call(
                "DELETE",
                &format!("connections/{}", seg(name)),
                None,
                Some(reason),
            )?;
            println!("connection closed");
            Ok(())
        }
        Command::Export { file, only_vhost } => {
            let path = if *only_vhost {
                format!("definitions/{vh}")
            } else {
                "definitions".into()
            };
            let defs = serde_json::to_string_pretty(&api.get(&path)?).unwrap_or_default();
            match file.as_deref() {
                None | Some("-") => println!("{defs}"),
                Some(f) => std::fs::write(f, defs + "\n")
                    .map_err(|e| Failure::Usage(format!("cannot write {f}: {e}")))?,
            }
            Ok(())
        }
        Command::Import { file, only_vhost } => {
            let text = if file == "-" {
                std::io::read_to_string(std::io::stdin())
            } else {
                std::fs::read_to_string(file)
            }
            .map_err(|e| Failure::Usage(format!("cannot read {file}: {e}")))?;
            let path = if *only_vhost {
                format!("definitions/{vh}")
            } else {
                "definitions".into()
            };
            api.call("POST", &path, Some(&text), None)?;
            println!("definitions imported");
            Ok(())
        }
        Command::Declare { what } => declare(cli, &api, what),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("warrenctl: {f}");
            ExitCode::from(f.code())
        }
    }
}
