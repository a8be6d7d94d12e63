//! The `warren-broker` binary as a user runs it: durable by default in its default data
//! directory, `--memory-only` as the explicit (and loudly logged) alternative, and a graceful
//! stop on SIGTERM (clients get 320 CONNECTION_FORCED, exit status 0).
//!
//! Every run gets a temporary HOME and no WARREN_DATA_DIR / XDG_DATA_HOME, so the default data
//! directory lands in the temporary HOME and never in the real one.

use futures::StreamExt;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A `warren-broker` child process; killed on drop if still running.
struct BrokerProcess {
    child: Child,
    url: String,
    /// Everything it logged on stderr so far.
    log: Arc<Mutex<Vec<String>>>,
    /// Every line it printed on stdout so far (read by a thread of its own, so that the pipe
    /// stays open), e.g. "warren-broker management on https://127.0.0.1:40000".
    announced: Arc<Mutex<Vec<String>>>,
}

impl BrokerProcess {
    /// Starts the binary with `args` and HOME = `home`, and waits for its "ready" line.
    fn start(home: &Path, args: &[&str]) -> BrokerProcess {
        Self::start_from(
            Command::new(env!("CARGO_BIN_EXE_warren-broker")),
            home,
            args,
        )
    }

    /// Starts the binary through `sh`, which first sets the soft open-file limit to `soft`
    /// (`ulimit -Sn`) and then `exec`s it, so the child is the broker itself.
    #[cfg(unix)]
    fn start_with_soft_nofile(home: &Path, soft: u64, args: &[&str]) -> BrokerProcess {
        let mut sh = Command::new("sh");
        sh.arg("-c")
            .arg(format!("ulimit -Sn {soft} && exec \"$0\" \"$@\""))
            .arg(env!("CARGO_BIN_EXE_warren-broker"));
        Self::start_from(sh, home, args)
    }

    fn start_from(mut command: Command, home: &Path, args: &[&str]) -> BrokerProcess {
        let mut child = command
            .args(["--listen", "127.0.0.1:0"])
            .args(["--management-listen", "127.0.0.1:0"])
            .args(["--prometheus-listen", "127.0.0.1:0"])
            .args(args)
            .env("HOME", home)
            .env_remove("WARREN_DATA_DIR")
            .env_remove("XDG_DATA_HOME")
            .env("RUST_LOG", "info")
            .current_dir(home)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn warren-broker");
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("stderr");
        {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    log.lock().expect("log lock").push(line);
                }
            });
        }
        let stdout = child.stdout.take().expect("stdout");
        let announced = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        {
            let announced = Arc::clone(&announced);
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if let Some(a) = line.strip_prefix("warren-broker ready on ") {
                        let _ = ready_tx.send(a.trim().to_owned());
                    }
                    announced.lock().expect("stdout lock").push(line);
                }
            });
        }
        // Ends with the pipe (the process exited) when no ready line came.
        let addr = ready_rx.recv().ok();
        let addr = addr.unwrap_or_else(|| {
            let status = child.wait().expect("wait");
            panic!(
                "warren-broker exited ({status}) before it was ready; stderr: {:?}",
                log.lock().expect("log lock")
            )
        });
        BrokerProcess {
            child,
            url: format!("amqp://guest:guest@{addr}/%2f"),
            log,
            announced,
        }
    }

    /// The URL the binary announced for `what` ("management", "prometheus") after its ready
    /// line, waiting (bounded) for the stdout thread to catch up.
    fn announced_url(&self, what: &str) -> String {
        let prefix = format!("warren-broker {what} on ");
        let give_up = Instant::now() + Duration::from_secs(10);
        loop {
            let lines = self.announced.lock().expect("stdout lock").clone();
            if let Some(url) = lines.iter().find_map(|l| l.strip_prefix(&prefix)) {
                return url.to_owned();
            }
            assert!(Instant::now() < give_up, "no {what} line in {lines:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGTERM with the `kill` command, as a service manager or container runtime does.
    fn terminate(&self) {
        self.signal("TERM");
    }

    /// Sends the signal `name` (`TERM`, `INT`) with the `kill` command.
    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed: {status}");
    }

    /// Waits for the process to exit (bounded, so a hang fails the test instead of CI).
    fn wait(&mut self) -> ExitStatus {
        let give_up = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < give_up,
                "warren-broker did not exit after the signal"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The stderr lines that contain `needle`, waiting (bounded) for at least one: stderr is
    /// read by a thread of its own, which may not have caught up with the process yet. Empty
    /// if none came.
    fn wait_logged(&self, needle: &str) -> Vec<String> {
        let give_up = Instant::now() + Duration::from_secs(10);
        loop {
            let lines = self.logged(needle);
            if !lines.is_empty() || Instant::now() >= give_up {
                return lines;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The stderr lines so far that contain `needle`.
    fn logged(&self, needle: &str) -> Vec<String> {
        self.log
            .lock()
            .expect("log lock")
            .iter()
            .filter(|l| l.contains(needle))
            .cloned()
            .collect()
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fresh temporary directory standing in for HOME, removed on drop.
struct TempHome(PathBuf);

impl TempHome {
    fn new(name: &str) -> TempHome {
        let dir = std::env::temp_dir().join(format!(
            "warren-binary-{name}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock")
                .as_nanos()
        ));
        std::fs::create_dir_all(&dir).expect("create temp HOME");
        TempHome(dir)
    }

    /// Where the binary keeps its data without flags: $HOME/.local/share/warren-broker.
    fn default_data_dir(&self) -> PathBuf {
        self.0.join(".local/share/warren-broker")
    }
}

impl Drop for TempHome {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn channel(url: &str) -> (Connection, Channel) {
    let conn = Connection::connect(url, ConnectionProperties::default())
        .await
        .expect("connect");
    let ch = conn.create_channel().await.expect("channel");
    (conn, ch)
}

#[tokio::test]
async fn sigterm_closes_connections_with_320_and_exits_0() {
    let home = TempHome::new("sigterm");
    let mut broker = BrokerProcess::start(&home.0, &[]);
    let (conn, ch) = channel(&broker.url).await;
    ch.queue_declare(
        "binary.sigterm".into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("declare");
    let mut events = conn.events_listener();

    broker.terminate();

    let error = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(event) = events.next().await {
            if let lapin::Event::Error(err) = event {
                return Some(err);
            }
        }
        None
    })
    .await
    .expect("the client saw the connection close")
    .expect("an error event before the event stream ended");
    match error.kind() {
        lapin::ErrorKind::ProtocolError(amqp) => {
            assert_eq!(amqp.get_id(), 320, "close code, got {amqp}");
            assert!(
                amqp.get_message().as_str().contains("shutdown"),
                "close text, got {amqp}"
            );
        }
        other => panic!("expected connection.close 320 from the broker, got {other:?}"),
    }

    let status = broker.wait();
    assert_eq!(
        status.code(),
        Some(0),
        "exit status after SIGTERM: {status}"
    );
    assert!(
        !broker.wait_logged("shutting down").is_empty(),
        "the stop is logged"
    );
}

/// The soft and hard "Max open files" of a process, from /proc/PID/limits.
#[cfg(target_os = "linux")]
fn open_file_limits(pid: u32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("read limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("a Max open files line");
    let mut fields = line["Max open files".len()..].split_whitespace();
    let soft = fields.next().expect("soft limit").to_owned();
    let hard = fields.next().expect("hard limit").to_owned();
    (soft, hard)
}

/// A log line without its colour codes (ESC [ ... m).
#[cfg(target_os = "linux")]
fn without_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Started with a soft open-file limit of 64, the binary raises it to the hard limit (so it
/// can hold as many connections as the system allows) and logs it at info.
#[cfg(target_os = "linux")]
#[test]
fn raises_its_soft_open_file_limit_to_the_hard_limit() {
    let home = TempHome::new("nofile");
    let broker = BrokerProcess::start_with_soft_nofile(&home.0, 64, &["--memory-only"]);
    let (soft, hard) = open_file_limits(broker.child.id());
    assert_ne!(
        hard, "64",
        "the hard limit of this machine is 64: nothing to raise"
    );
    // An unlimited hard limit cannot be the soft one: the broker takes Linux's default
    // fs.nr_open then.
    let expected = if hard == "unlimited" {
        "1048576"
    } else {
        &hard
    };
    assert_eq!(
        soft, expected,
        "the broker's soft limit after start (hard: {hard})"
    );
    let logged = broker.wait_logged("raised the open-file limit");
    assert_eq!(logged.len(), 1, "one info line, got {logged:?}");
    let line = without_ansi(&logged[0]);
    assert!(
        line.contains("INFO") && line.contains("from=64") && line.contains(&format!("to={soft}")),
        "the line names the level and both limits: {line}"
    );
}

/// Persistent messages published without confirms just before the stop.
const UNCONFIRMED: u32 = 200;

#[tokio::test]
async fn without_flags_a_durable_queue_and_persistent_message_survive_a_restart() {
    let home = TempHome::new("durable");
    let queue = "binary.durable";
    let mut first = BrokerProcess::start(&home.0, &[]);
    assert!(
        home.default_data_dir().is_dir(),
        "the default data directory is created on first start"
    );
    let shown = home.default_data_dir().display().to_string();
    assert!(
        !first.wait_logged(&shown).is_empty(),
        "the data directory is logged at start: {:?}",
        first.logged("")
    );
    {
        let (conn, ch) = channel(&first.url).await;
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .expect("confirm.select");
        ch.queue_declare(
            queue.into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("declare");
        for (body, mode) in [(&b"persistent"[..], 2), (&b"transient"[..], 1)] {
            let confirm = ch
                .basic_publish(
                    "".into(),
                    queue.into(),
                    BasicPublishOptions::default(),
                    body,
                    BasicProperties::default().with_delivery_mode(mode),
                )
                .await
                .expect("publish")
                .await
                .expect("confirm");
            assert!(confirm.is_ack(), "publish confirmed");
        }
        // Unconfirmed persistent messages: the broker has handled them once it answers the
        // connection.close that follows them, but nothing says they reached the disk; the
        // graceful stop must flush them.
        let unconfirmed = conn.create_channel().await.expect("channel");
        for i in 0..UNCONFIRMED {
            unconfirmed
                .basic_publish(
                    "".into(),
                    queue.into(),
                    BasicPublishOptions::default(),
                    format!("unconfirmed {i}").as_bytes(),
                    BasicProperties::default().with_delivery_mode(2),
                )
                .await
                .expect("publish");
        }
        conn.close(200, "bye".into()).await.expect("close");
    }
    first.terminate();
    assert_eq!(first.wait().code(), Some(0), "first run exits 0");
    drop(first);

    let second = BrokerProcess::start(&home.0, &[]);
    let (conn, ch) = channel(&second.url).await;
    let declared = ch
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("the durable queue survived the restart");
    assert_eq!(
        declared.message_count(),
        1 + UNCONFIRMED,
        "the persistent messages survived, the transient one did not"
    );
    let got = ch
        .basic_get(queue.into(), BasicGetOptions { no_ack: true })
        .await
        .expect("basic.get")
        .expect("a message");
    assert_eq!(got.delivery.data, b"persistent");
    for i in 0..UNCONFIRMED {
        let got = ch
            .basic_get(queue.into(), BasicGetOptions { no_ack: true })
            .await
            .expect("basic.get")
            .expect("a message");
        assert_eq!(got.delivery.data, format!("unconfirmed {i}").as_bytes());
    }
    let _ = conn.close(200, "bye".into()).await;
}

#[tokio::test]
async fn memory_only_warns_and_writes_nothing() {
    let home = TempHome::new("memory");
    let mut broker = BrokerProcess::start(&home.0, &["--memory-only"]);
    assert!(
        !broker.wait_logged("memory-only").is_empty(),
        "a warning at start: {:?}",
        broker.logged("")
    );
    let (conn, ch) = channel(&broker.url).await;
    ch.queue_declare(
        "binary.memory.transient".into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("declare");
    ch.queue_declare(
        "binary.memory.durable".into(),
        QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        },
        FieldTable::default(),
    )
    .await
    .expect("declare");
    let _ = conn.close(200, "bye".into()).await;
    let warnings = broker.wait_logged("binary.memory.durable");
    assert_eq!(warnings.len(), 1, "one warning for the durable queue");
    assert!(warnings[0].contains("WARN"), "{warnings:?}");
    // The transient queue was declared first: had it been warned about, that line would be
    // on stderr before the durable queue's.
    assert!(
        broker.logged("binary.memory.transient").is_empty(),
        "no warning for a transient queue"
    );
    assert!(
        !home.default_data_dir().exists(),
        "--memory-only creates no data directory"
    );
    // Ctrl-C stops it as gracefully as SIGTERM.
    broker.signal("INT");
    let status = broker.wait();
    assert_eq!(status.code(), Some(0), "exit status after SIGINT: {status}");
}

#[tokio::test]
async fn definitions_flag_loads_users_vhosts_and_permissions_at_boot() {
    let home = TempHome::new("definitions");
    // A user as RabbitMQ exports it: salt 0x01020304 ++ SHA-256(salt ++ "s3cret"), base64.
    let hash = "AQIDBLq/hWyT4GNQ5SjFtltSvLoQIZIQIckdYAqRUvj04Npv";
    let defs = serde_json::json!({
        "users": [{"name": "app", "password_hash": hash,
                   "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": []}],
        "vhosts": [{"name": "apps"}],
        "permissions": [{"user": "app", "vhost": "apps", "configure": "^app\\.",
                         "write": ".*", "read": ".*"}],
        "queues": [{"name": "app.jobs", "vhost": "apps", "durable": true,
                    "auto_delete": false, "arguments": {}}]
    });
    let file = home.0.join("definitions.json");
    std::fs::write(&file, defs.to_string()).expect("write definitions");
    let broker = BrokerProcess::start(
        &home.0,
        &[
            "--memory-only",
            "--definitions",
            file.to_str().expect("utf-8 path"),
        ],
    );
    let url = broker
        .url
        .replace("guest:guest", "app:s3cret")
        .replace("%2f", "apps");
    let (conn, ch) = channel(&url).await;
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    ch.queue_declare("app.jobs".into(), passive, FieldTable::default())
        .await
        .expect("the queue from the definitions");
    let refused = ch
        .queue_declare(
            "other".into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect_err("configure is limited to app.*");
    assert!(refused.to_string().contains("ACCESS_REFUSED"), "{refused}");
    let _ = conn.close(200, "bye".into()).await;
}

#[test]
fn https_flags_serve_the_management_api_and_metrics_over_tls() {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let home = TempHome::new("https");
    let ca_key = KeyPair::generate().expect("CA key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params
        .distinguished_name
        .push(DnType::CommonName, "binary-test-ca");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = params.self_signed(&ca_key).expect("CA");
    let key = KeyPair::generate().expect("key");
    let params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .expect("params");
    let server = params
        .signed_by(&key, &ca, &ca_key)
        .expect("server certificate");
    let file = |name: &str, text: String| {
        let path = home.0.join(name);
        std::fs::write(&path, text).expect("write");
        path.to_str().expect("utf-8 path").to_owned()
    };
    let (ca_file, cert, key) = (
        file("ca.pem", ca.pem()),
        file("server.pem", server.pem()),
        file("server.key", key.serialize_pem()),
    );
    let broker = BrokerProcess::start(
        &home.0,
        &[
            "--memory-only",
            "--management-tls-cert",
            &cert,
            "--management-tls-key",
            &key,
            "--prometheus-tls-cert",
            &cert,
            "--prometheus-tls-key",
            &key,
        ],
    );
    let mgmt = broker.announced_url("management");
    let prom = broker.announced_url("prometheus");
    assert!(
        mgmt.starts_with("https://") && prom.starts_with("https://"),
        "{mgmt} {prom}"
    );
    // warrenctl with the CA reaches the management API; /metrics answers over TLS.
    let out = Command::new(env!("CARGO_BIN_EXE_warrenctl"))
        .args(["--url", &mgmt, "--cacert", &ca_file, "--json", "status"])
        .env_remove("WARRENCTL_USER")
        .env_remove("WARRENCTL_PASSWORD")
        .output()
        .expect("warrenctl runs");
    assert!(
        out.status.success(),
        "warrenctl over HTTPS: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der().clone()).expect("CA certificate");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let agent = ureq::AgentBuilder::new()
        .tls_config(Arc::new(config))
        .timeout(Duration::from_secs(10))
        .build();
    let metrics = agent
        .get(&format!("{prom}/metrics"))
        .call()
        .expect("GET /metrics over HTTPS")
        .into_string()
        .expect("text");
    assert!(metrics.contains("rabbitmq_"), "{metrics}");
}
