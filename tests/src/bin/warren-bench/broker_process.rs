//! The broker under test as a child process (so the RSS read is the broker's own), the
//! `serve-broker` fallback that runs the library in this binary, and reading RSS from /proc.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::BoxResult;

/// How to start warren-broker.
pub(crate) enum BrokerBin {
    /// The `warren-broker` binary.
    Binary(PathBuf),
    /// This binary, re-executed with `serve-broker`.
    SelfHosted(PathBuf),
}

impl BrokerBin {
    pub(crate) fn find(explicit: Option<PathBuf>) -> BoxResult<BrokerBin> {
        if let Some(path) = explicit {
            return Ok(BrokerBin::Binary(path));
        }
        let me = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
        let sibling = me.with_file_name("warren-broker");
        build_sibling_broker(&me);
        if sibling.is_file() {
            Ok(BrokerBin::Binary(sibling))
        } else {
            Ok(BrokerBin::SelfHosted(me))
        }
    }

    pub(crate) fn describe(&self) -> String {
        match self {
            BrokerBin::Binary(p) => format!("{} (child process)", p.display()),
            BrokerBin::SelfHosted(p) => format!(
                "{} serve-broker (child process; warren-broker binary not built)",
                p.display()
            ),
        }
    }
}

/// Under `cargo run --release`, builds the `warren-broker` binary next to this one (a no-op
/// when it is fresh), so that one command measures the real binary and not a stale one.
fn build_sibling_broker(me: &std::path::Path) {
    let Some(cargo) = std::env::var_os("CARGO") else {
        return;
    };
    let Some(profile_dir) = me.parent() else {
        return;
    };
    if profile_dir.file_name().and_then(|n| n.to_str()) != Some("release") {
        return;
    }
    let Some(target_dir) = profile_dir.parent() else {
        return;
    };
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml");
    eprintln!("building warren-broker (release) ...");
    let status = Command::new(cargo)
        .args([
            "build",
            "--release",
            "-p",
            "warren-broker",
            "--bin",
            "warren-broker",
        ])
        .arg("--manifest-path")
        .arg(manifest)
        .arg("--target-dir")
        .arg(target_dir)
        .status();
    if !matches!(status, Ok(s) if s.success()) {
        eprintln!("warren-bench: building warren-broker failed; using what is there");
    }
}

/// A warren-broker child process, killed on drop.
pub(crate) struct ChildBroker {
    pub(crate) child: Child,
    pub(crate) url: String,
    pub(crate) pid: u32,
    /// The broker's data directory (durable definitions, persistent messages), removed on drop.
    pub(crate) data_dir: PathBuf,
    /// Log lines at WARN or ERROR the broker printed.
    pub(crate) complaints: Arc<Mutex<Vec<String>>>,
}

impl ChildBroker {
    pub(crate) fn start(bin: &BrokerBin) -> BoxResult<ChildBroker> {
        let mut cmd = match bin {
            BrokerBin::Binary(p) => {
                // The AMQP path only, as the self-hosted fallback runs it (no HTTP listeners).
                let mut c = Command::new(p);
                c.args(["--no-management", "--no-prometheus"]);
                c
            }
            BrokerBin::SelfHosted(p) => {
                let mut c = Command::new(p);
                c.arg("serve-broker");
                c
            }
        };
        let data_dir = std::env::temp_dir().join(format!(
            "warren-bench-data-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        cmd.args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data_dir)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("start warren-broker: {e}"))?;
        let complaints = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        {
            let complaints = Arc::clone(&complaints);
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if let Some(addr) = line.strip_prefix("warren-broker ready on ") {
                        let _ = tx.send(addr.trim().to_owned());
                    } else if line.contains("WARN") || line.contains("ERROR") {
                        let mut c = complaints.lock().expect("complaints lock");
                        if c.len() < 1000 {
                            c.push(line);
                        }
                    }
                }
            });
        }
        {
            let complaints = Arc::clone(&complaints);
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    let mut c = complaints.lock().expect("complaints lock");
                    if c.len() < 1000 {
                        c.push(line);
                    }
                }
            });
        }
        let addr = match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err("warren-broker did not print its ready line in 10 s".into());
            }
        };
        let pid = child.id();
        Ok(ChildBroker {
            child,
            url: format!("amqp://guest:guest@{addr}/%2f"),
            pid,
            data_dir,
            complaints,
        })
    }
}

impl Drop for ChildBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// `serve-broker`: the bundled broker in this process, as the warren-broker binary runs it.
pub(crate) fn serve_broker(listen: SocketAddr, data_dir: Option<PathBuf>) -> ExitCode {
    // One thread, as the warren-broker binary runs by default.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("serve-broker: runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let mut builder = warren_broker::Broker::builder().listen(listen);
        if let Some(dir) = data_dir {
            builder = builder.data_dir(dir);
        }
        let broker = match builder.start().await {
            Ok(b) => b,
            Err(e) => {
                eprintln!("serve-broker: {e}");
                return ExitCode::FAILURE;
            }
        };
        println!("warren-broker ready on {}", broker.local_addr());
        let _ = tokio::signal::ctrl_c().await;
        broker.shutdown().await;
        ExitCode::SUCCESS
    })
}

/// The resident set size of a process, in KiB.
pub(crate) fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// RabbitMQ's Erlang VM process.
pub(crate) fn find_beam() -> Option<u32> {
    let out = Command::new("pgrep")
        .args(["-f", "beam.smp"])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.trim().parse().ok())
}
