//! Warren on a RabbitMQ cluster: several broker URLs, quorum queues, a node killed mid-stream.
//!
//! The cluster is three RabbitMQ nodes on this machine, started by `scripts/cluster.sh start`;
//! `WARREN_TEST_CLUSTER_URLS` lists their AMQP URLs in node order, comma separated (CI starts
//! the cluster and sets it). Without it the cluster tests print that they were skipped. The
//! tests drive the script to kill -9 a node and start it again, and its `rabbitmqctl` to look
//! for leaked queues, consumers and connections.
//!
//! - `failover_to_the_next_url` (bundled brokers, always runs): a client and a server given
//!   several URLs skip a dead one and move to the next broker when theirs shuts down.
//! - `a_request_that_kills_its_server_every_time_ends_as_a_fault` (a quorum queue on the
//!   cluster, or on `WARREN_TEST_AMQP_URL`): the delivery limit ends a poison request.
//! - `a_node_killed_mid_stream` (the cluster): the scenario of docs/scale-out.md, whose figures
//!   it prints.
//!
//! Run by hand with:
//! `scripts/cluster.sh start && WARREN_TEST_CLUSTER_URLS=$(scripts/cluster.sh urls | paste -sd,)
//! cargo test -p warren-tests --test cluster -- --nocapture`

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lapin::options::QueueDeleteOptions;
use tokio::sync::Notify;
use warren_broker::Broker;
use warren_examples::{Calc, Calculator, CalculatorClient, CalculatorServer};
use warren_rpc::{
    CallOptions, Client, Context, Error, FaultCode, MemoryReplyCache, RetryPolicy, Server,
    ServerBuilder,
};
use warren_tests::{unique, WAIT};

/// The budget of each call of the scenario.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// How late past its deadline a call may end, for scheduling on a loaded machine.
const SLACK: Duration = Duration::from_secs(3);

/// The cluster's AMQP URLs in node order (node 1 first), if the cluster tests should run.
fn cluster_urls() -> Option<Vec<String>> {
    let urls: Vec<String> = std::env::var("WARREN_TEST_CLUSTER_URLS")
        .ok()?
        .split(',')
        .map(|u| u.trim().to_owned())
        .filter(|u| !u.is_empty())
        .collect();
    (urls.len() == 3).then_some(urls)
}

/// Runs `scripts/cluster.sh ARGS`: its standard output, or its standard error if it failed.
async fn try_cluster(args: &[&str]) -> Result<String, String> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/cluster.sh");
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new("bash")
            .arg(&script)
            .args(&args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "cluster.sh {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    })
    .await
    .expect("cluster.sh task")
}

/// Runs `scripts/cluster.sh ARGS` and returns its standard output; panics when it fails.
async fn cluster(args: &[&str]) -> String {
    try_cluster(args).await.unwrap_or_else(|e| panic!("{e}"))
}

/// `rabbitmqctl ARGS` on node 2 (the node the scenario never kills), quiet, without headers.
async fn ctl(args: &[&str]) -> String {
    let mut all = vec!["ctl", "2"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--quiet", "--no-table-headers"]);
    cluster(&all).await
}

/// How many consumers the cluster lists on `queue`.
async fn consumers_on(queue: &str) -> usize {
    ctl(&["list_consumers", "queue_name"])
        .await
        .lines()
        .filter(|line| line.trim() == queue)
        .count()
}

/// Waits (bounded) until the cluster lists `expected` consumers on `queue`; returns the last
/// count.
async fn settle_consumers(queue: &str, expected: usize) -> usize {
    let mut last = usize::MAX;
    for _ in 0..30 {
        last = consumers_on(queue).await;
        if last == expected {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    last
}

/// The names of the cluster's client connections whose name starts with `prefix`.
async fn connections_named(prefix: &str) -> Vec<String> {
    let listed = ctl(&["list_connections", "client_properties"]).await;
    let mut names: Vec<String> = listed
        .match_indices(prefix)
        .map(|(at, _)| {
            listed[at..]
                .split(|c: char| c == '"' || c == '>' || c.is_whitespace())
                .next()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    names.sort();
    names
}

/// The port of an `amqp://user:pass@host:port/vhost` URL.
fn port_of(url: &str) -> &str {
    url.rsplit(':')
        .next()
        .and_then(|tail| tail.split('/').next())
        .unwrap_or_default()
}

/// What every replica of the scenario's calculator shares, as replicas share a database: the
/// calculator state, and how often each `memory_add` call id ran.
#[derive(Debug, Default)]
struct Ledger {
    calc: Calc,
    memory_runs: Mutex<HashMap<String, u32>>,
}

/// One replica of the calculator: the shared ledger, counting `memory_add` executions.
#[derive(Debug, Clone, Default)]
struct Replica {
    ledger: Arc<Ledger>,
}

impl Calculator for Replica {
    async fn add(&self, a: i64, b: i64) -> i64 {
        self.ledger.calc.add(a, b).await
    }

    async fn sub(&self, a: i64, b: i64) -> i64 {
        self.ledger.calc.sub(a, b).await
    }

    async fn mul(&self, a: i64, b: i64) -> i64 {
        self.ledger.calc.mul(a, b).await
    }

    async fn div(&self, a: i64, b: i64) -> Result<i64, warren_examples::CalcError> {
        self.ledger.calc.div(a, b).await
    }

    async fn memory_add(&self, x: i64) -> i64 {
        let id = Context::current()
            .map(|cx| cx.call_id().to_string())
            .unwrap_or_default();
        *self
            .ledger
            .memory_runs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(id)
            .or_default() += 1;
        self.ledger.calc.memory_add(x).await
    }

    async fn memory_recall(&self) -> i64 {
        self.ledger.calc.memory_recall().await
    }

    async fn fibonacci(&self, n: u32) -> warren_rpc::Stream<u64> {
        self.ledger.calc.fibonacci(n).await
    }
}

/// A port nothing listens on (bound, then released).
fn dead_url() -> String {
    let socket = std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    let addr = socket.local_addr().expect("local address");
    format!("amqp://guest:guest@{addr}/%2f")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_to_the_next_url() {
    let first = Broker::builder()
        .listen("127.0.0.1:0".parse().unwrap())
        .start()
        .await
        .expect("first broker");
    let second = Broker::builder()
        .listen("127.0.0.1:0".parse().unwrap())
        .start()
        .await
        .expect("second broker");
    let urls = [first.amqp_url(), second.amqp_url()];
    let queue = unique("calculator-failover");
    // The URL given first is dead: both connect to the first of the others that answers.
    let replica = Replica::default();
    let server = Server::builder()
        .queue_name(&queue)
        .shutdown_grace(Duration::from_secs(1))
        .urls(urls.clone())
        .serve(&dead_url(), CalculatorServer::new(replica.clone()))
        .await
        .expect("a server given a dead URL and two live ones starts");
    let client = Client::builder()
        .timeout(CALL_TIMEOUT)
        // Room for the server to reach the second broker while calls are returned unrouted.
        .retry(RetryPolicy::new().max_attempts(30))
        .urls(urls)
        .connect(&dead_url())
        .await
        .expect("a client given a dead URL and two live ones connects");
    let calc =
        CalculatorClient::new(client.clone()).with_options(CallOptions::new().service(&queue));
    assert_eq!(calc.add(2, 3).await.expect("add on the first broker"), 5);
    assert_eq!(calc.memory_add(1).await.expect("memory_add"), 1);

    // The first broker goes away: both move to the second, the server declares its queue
    // there, and calls (retried while that happens) are answered by the same replica.
    first.shutdown().await;
    assert_eq!(
        calc.add(20, 3).await.expect("add after the failover"),
        23,
        "a call after the first broker shut down"
    );
    assert_eq!(
        calc.memory_add(1)
            .await
            .expect("memory_add after the failover"),
        2
    );
    assert!(client.is_connected());
    assert!(!server.is_finished());

    // Both now live on the second broker: shutting it down too leaves calls failing with a
    // typed error by their deadline, and the client keeps trying every URL.
    second.shutdown().await;
    let quick = calc.with_timeout(Duration::from_millis(800));
    let err = quick.add(1, 1).await.expect_err("no broker is left");
    assert!(
        matches!(
            err,
            Error::Connection { .. } | Error::DeadlineExceeded { .. }
        ),
        "{err:?}"
    );
    let runs = replica.ledger.memory_runs.lock().unwrap().clone();
    assert_eq!(runs.len(), 2);
    assert!(runs.values().all(|n| *n == 1), "{runs:?}");
    client.close().await;
    server.shutdown().await;
}

/// A service whose one method never finishes: its server loses its connection while running it.
#[warren_rpc::service(name = "crasher")]
trait Crasher {
    /// Counts a run, says so, and hangs.
    async fn crash(&self) -> u32;
}

struct CrasherImpl {
    runs: Arc<AtomicU32>,
    started: Arc<Notify>,
}

impl Crasher for CrasherImpl {
    async fn crash(&self) -> u32 {
        let run = self.runs.fetch_add(1, Ordering::SeqCst) + 1;
        self.started.notify_one();
        tokio::time::sleep(Duration::from_secs(120)).await;
        run
    }
}

/// A quorum queue counts deliveries; when a request came back `LIMIT` times without an ack
/// (each server that took it lost its connection running it, as a crash would), the next
/// server answers it with a `delivery_limit` fault instead of running it a third time, before
/// RabbitMQ would drop it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_kills_its_server_every_time_ends_as_a_fault() {
    const LIMIT: u32 = 2;
    let url = match (cluster_urls(), std::env::var("WARREN_TEST_AMQP_URL")) {
        // Node 2: the scenario, running at the same time, kills node 1.
        (Some(urls), _) => urls[1].clone(),
        (None, Ok(url)) if !url.is_empty() => url,
        _ => {
            println!(
                "skipped: quorum queues need RabbitMQ (WARREN_TEST_CLUSTER_URLS or \
                 WARREN_TEST_AMQP_URL); the bundled broker has none"
            );
            return;
        }
    };
    let queue = unique("crasher");
    let runs = Arc::new(AtomicU32::new(0));
    let started = Arc::new(Notify::new());
    let serve = || {
        Server::builder()
            .queue_name(&queue)
            .queue_type("quorum")
            .delivery_limit(LIMIT)
            .shutdown_grace(Duration::from_millis(100))
            .serve(
                &url,
                CrasherServer::new(CrasherImpl {
                    runs: Arc::clone(&runs),
                    started: Arc::clone(&started),
                }),
            )
    };
    let mut server = serve().await.expect("a server on a quorum queue starts");
    let client = Client::builder()
        .timeout(Duration::from_secs(60))
        .confirm_calls(true)
        .retry(RetryPolicy::never())
        .connect(&url)
        .await
        .expect("client connects");
    let crasher =
        CrasherClient::new(client.clone()).with_options(CallOptions::new().service(&queue));
    let call = tokio::spawn(async move { crasher.crash().await });
    for crash in 1..=LIMIT {
        tokio::time::timeout(WAIT * 2, started.notified())
            .await
            .unwrap_or_else(|_| panic!("delivery {crash} never reached a handler"));
        // The server goes away with the request unacked: the queue hands it back.
        server.shutdown().await;
        server = serve().await.expect("the next server starts");
    }
    let result = tokio::time::timeout(WAIT * 2, call)
        .await
        .expect("the call ends at the delivery limit, not at its deadline")
        .expect("call task");
    match result {
        Err(Error::Fault {
            code: FaultCode::DeliveryLimit,
            message,
        }) => println!("delivery limit {LIMIT}: the caller got the fault: {message}"),
        other => panic!("expected a delivery_limit fault, got {other:?}"),
    }
    assert_eq!(
        runs.load(Ordering::SeqCst),
        LIMIT,
        "the handler ran once per delivery before the limit, and not on the last one"
    );
    client.close().await;
    server.shutdown().await;
    delete_queue(&url, &queue).await;
}

/// Deletes `queue` through a fresh connection to `url`.
async fn delete_queue(url: &str, queue: &str) {
    let conn = lapin::Connection::connect(url, lapin::ConnectionProperties::default())
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"));
    let channel = conn.create_channel().await.expect("channel");
    channel
        .queue_delete(queue.into(), QueueDeleteOptions::default())
        .await
        .unwrap_or_else(|e| panic!("delete {queue}: {e}"));
    warren_tests::close(conn).await;
}

/// What the stream of calls produced.
#[derive(Debug, Default)]
struct Tally {
    made: u64,
    ok: u64,
    failed: BTreeMap<&'static str, u64>,
    wrong: Vec<String>,
    late: Vec<String>,
    /// When each successful call got its answer.
    answers: Vec<Instant>,
    /// Totals returned by successful `memory_add(1)` calls.
    totals: Vec<i64>,
    memory_failed: u64,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.made += other.made;
        self.ok += other.ok;
        for (kind, n) in other.failed {
            *self.failed.entry(kind).or_default() += n;
        }
        self.wrong.extend(other.wrong);
        self.late.extend(other.late);
        self.answers.extend(other.answers);
        self.totals.extend(other.totals);
        self.memory_failed += other.memory_failed;
    }

    fn failures(&self) -> String {
        if self.failed.is_empty() {
            return "none".to_owned();
        }
        let kinds: Vec<String> = self
            .failed
            .iter()
            .map(|(k, n)| format!("{k}={n}"))
            .collect();
        kinds.join(" ")
    }

    /// The longest time without an answer that overlaps `from..to`.
    fn longest_pause(&mut self, from: Instant, to: Instant) -> Duration {
        self.answers.sort();
        self.answers
            .windows(2)
            .filter(|w| w[1] >= from && w[0] <= to)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap_or(to - from)
    }
}

/// One call of the stream, with its outcome recorded in `tally`.
async fn one_call(calc: &CalculatorClient, tally: &mut Tally, worker: u64, i: u64) {
    tally.made += 1;
    let started = Instant::now();
    let memory = i % 4 == 3;
    let (a, b) = (
        i64::try_from(worker).unwrap_or(0),
        i64::try_from(i).unwrap_or(0),
    );
    let outcome = tokio::time::timeout(CALL_TIMEOUT + SLACK, async {
        if memory {
            calc.memory_add(1).await
        } else {
            calc.add(a, b).await
        }
    })
    .await;
    let what = if memory {
        "memory_add(1)".to_owned()
    } else {
        format!("add({a}, {b})")
    };
    match outcome {
        Err(_) => tally.late.push(format!(
            "{what} had no outcome after {:?}",
            started.elapsed()
        )),
        Ok(Ok(value)) => {
            tally.ok += 1;
            tally.answers.push(Instant::now());
            if memory {
                tally.totals.push(value);
            } else if value != a + b {
                tally.wrong.push(format!("{what} = {value}"));
            }
        }
        Ok(Err(err)) => {
            *tally.failed.entry(err.kind()).or_default() += 1;
            if memory {
                tally.memory_failed += 1;
            }
            if started.elapsed() > CALL_TIMEOUT + SLACK {
                tally.late.push(format!(
                    "{what} failed after {:?}: {err}",
                    started.elapsed()
                ));
            }
        }
    }
}

/// Calls from `workers` concurrent loops until `stop`: `add` (idempotent) and every fourth call
/// `memory_add(1)` (not idempotent).
async fn stream_of_calls(calc: &CalculatorClient, workers: u64, stop: &AtomicBool) -> Tally {
    let loops = (0..workers).map(|worker| async move {
        let mut tally = Tally::default();
        let mut i = 0;
        while !stop.load(Ordering::SeqCst) {
            one_call(calc, &mut tally, worker, i).await;
            i += 1;
        }
        tally
    });
    let mut total = Tally::default();
    for tally in futures::future::join_all(loops).await {
        total.merge(tally);
    }
    total
}

/// Starts node 1 again if the scenario ends (or panics) while it is down.
struct RestartOnDrop {
    killed: AtomicBool,
}

impl Drop for RestartOnDrop {
    fn drop(&mut self) {
        if self.killed.load(Ordering::SeqCst) {
            let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/cluster.sh");
            let _ = std::process::Command::new("bash")
                .arg(script)
                .args(["start-node", "1"])
                .output();
        }
    }
}

fn replica_builder(queue: &str, name: String, cache: &Arc<MemoryReplyCache>) -> ServerBuilder {
    Server::builder()
        .queue_name(queue)
        .queue_type("quorum")
        .concurrency(16)
        .shutdown_grace(Duration::from_secs(2))
        .connection_name(name)
        .reply_cache(Arc::clone(cache))
}

/// The scenario: two calculator replicas on nodes 1 and 2 of the cluster, one quorum queue
/// (its leader on node 1, where it was declared), a client on node 1 streaming `add` and
/// `memory_add` calls with publisher confirms; node 1 is killed with kill -9 mid-stream and
/// started again. Every call ends with the right value or a typed error by its deadline;
/// `memory_add` runs once per call id; afterwards no consumer, connection or queue is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_stream() {
    const WORKERS: u64 = 8;
    let Some(urls) = cluster_urls() else {
        println!(
            "skipped: no RabbitMQ cluster (start one with scripts/cluster.sh start and set \
             WARREN_TEST_CLUSTER_URLS to its URLs, comma separated)"
        );
        return;
    };
    // RUST_LOG=warren_rpc=debug shows the reconnections.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    // All three nodes run as one cluster (a node an earlier run left down is started again).
    if try_cluster(&["status"]).await.is_err() {
        cluster(&["start"]).await;
    }
    let queue = unique("calculator-cluster");
    let tag = format!(
        "warren-scenario-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let ledger = Arc::new(Ledger::default());
    // The replicas de-duplicate together: a request redelivered to the other replica after a
    // lost connection is answered from the shared cache (see docs/scale-out.md).
    // WARREN_TEST_CLUSTER_SEPARATE_CACHES=1 gives each replica its own cache instead, to measure
    // what sharing buys: the scenario then reports double executions instead of failing on them.
    let separate = std::env::var("WARREN_TEST_CLUSTER_SEPARATE_CACHES").is_ok_and(|v| v == "1");
    let cache = Arc::new(MemoryReplyCache::default());
    let cache_b = if separate {
        Arc::new(MemoryReplyCache::default())
    } else {
        Arc::clone(&cache)
    };
    let replica = || {
        CalculatorServer::new(Replica {
            ledger: Arc::clone(&ledger),
        })
    };
    let server_a = replica_builder(&queue, format!("{tag}-server-a"), &cache)
        .urls([urls[1].clone(), urls[2].clone()])
        .serve(&urls[0], replica())
        .await
        .expect("replica A starts on node 1");
    let server_b = replica_builder(&queue, format!("{tag}-server-b"), &cache_b)
        .urls([urls[2].clone(), urls[0].clone()])
        .serve(&urls[1], replica())
        .await
        .expect("replica B starts on node 2");
    let client = Client::builder()
        .timeout(CALL_TIMEOUT)
        .confirm_calls(true)
        .retry(
            RetryPolicy::new()
                .max_attempts(20)
                .backoff(Duration::from_millis(50), Duration::from_secs(1))
                .attempt_timeout(Duration::from_secs(3)),
        )
        .connection_name(format!("{tag}-client"))
        .urls([urls[1].clone(), urls[2].clone()])
        .connect(&urls[0])
        .await
        .expect("client connects to node 1");
    let calc =
        CalculatorClient::new(client.clone()).with_options(CallOptions::new().service(&queue));

    // The connection names show the nodes.
    let (port1, port2) = (port_of(&urls[0]), port_of(&urls[1]));
    let before = connections_named(&tag).await;
    for expected in [
        format!("{tag}-client@127.0.0.1:{port1}"),
        format!("{tag}-server-a@127.0.0.1:{port1}"),
        format!("{tag}-server-b@127.0.0.1:{port2}"),
    ] {
        assert!(before.contains(&expected), "{expected} not in {before:?}");
    }

    let stop = AtomicBool::new(false);
    let guard = RestartOnDrop {
        killed: AtomicBool::new(false),
    };
    let on_node_1 = |names: &[String]| {
        names
            .iter()
            .any(|n| n.ends_with(&format!("@127.0.0.1:{port1}")))
    };
    let chaos = async {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let killed_at = Instant::now();
        guard.killed.store(true, Ordering::SeqCst);
        cluster(&["kill", "1"]).await;
        // While node 1 is down: the client and replica A reconnect to the other nodes.
        let mut moved = Vec::new();
        for _ in 0..6 {
            moved = connections_named(&tag).await;
            if moved.len() == 3 && !on_node_1(&moved) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        tokio::time::sleep(
            (killed_at + Duration::from_secs(4)).saturating_duration_since(Instant::now()),
        )
        .await;
        cluster(&["start-node", "1"]).await;
        guard.killed.store(false, Ordering::SeqCst);
        let back_at = Instant::now();
        tokio::time::sleep(Duration::from_secs(3)).await;
        stop.store(true, Ordering::SeqCst);
        (killed_at, back_at, moved)
    };
    let ((killed_at, back_at, moved), mut tally) =
        tokio::join!(chaos, stream_of_calls(&calc, WORKERS, &stop));
    let pause = tally.longest_pause(killed_at, back_at);
    let after_back = tally.answers.iter().filter(|t| **t > back_at).count();
    let during = tally
        .answers
        .iter()
        .filter(|t| **t > killed_at && **t <= back_at)
        .count();

    let recalled = calc
        .memory_recall()
        .await
        .expect("memory_recall after the scenario");
    let runs = ledger.memory_runs.lock().unwrap().clone();
    let executions: u32 = runs.values().sum();
    println!(
        "cluster scenario: calls={} ok={} failed: {} | memory_add: {} answered, {} failed, {} \
         executions of {} call ids | node 1 down {:.1}s: {} answers meanwhile, longest pause in answers {:.0}ms \
         | {} answers after it came back",
        tally.made,
        tally.ok,
        tally.failures(),
        tally.totals.len(),
        tally.memory_failed,
        executions,
        runs.len(),
        (back_at - killed_at).as_secs_f64(),
        during,
        pause.as_secs_f64() * 1000.0,
        after_back,
    );

    assert!(tally.wrong.is_empty(), "wrong answers: {:?}", tally.wrong);
    assert!(
        tally.late.is_empty(),
        "calls past their deadline: {:?}",
        tally.late
    );
    assert!(after_back > 0, "no call succeeded after node 1 came back");
    // memory_add ran once per call id, each run added 1, every answered call ran.
    let twice: Vec<_> = runs.iter().filter(|(_, n)| **n != 1).collect();
    assert_eq!(
        recalled,
        i64::from(executions),
        "the memory counts one per execution"
    );
    if separate {
        println!(
            "separate reply caches: {} memory_add call ids ran more than once",
            twice.len()
        );
        return;
    }
    assert!(twice.is_empty(), "memory_add ran more than once: {twice:?}");
    let distinct: HashSet<i64> = tally.totals.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        tally.totals.len(),
        "two memory_add calls got the same total"
    );
    assert!(tally.totals.iter().all(|t| (1..=recalled).contains(t)));
    let answered = u64::try_from(tally.totals.len()).unwrap();
    let executed = u64::try_from(runs.len()).unwrap();
    assert!(
        answered <= executed && executed <= answered + tally.memory_failed,
        "{executed} memory_add executions for {answered} answered and {} failed calls",
        tally.memory_failed
    );

    // Replica A and the client left node 1 for other nodes while it was down, and their
    // connection names say so; two consumers, none stale.
    println!("connections while node 1 was down: {moved:?}");
    assert_eq!(moved.len(), 3, "one connection each: {moved:?}");
    assert!(
        !on_node_1(&moved),
        "a connection named after node 1 while it was down: {moved:?}"
    );
    assert_eq!(settle_consumers(&queue, 2).await, 2, "consumers on {queue}");

    client.close().await;
    server_a.shutdown().await;
    server_b.shutdown().await;
    assert_eq!(settle_consumers(&queue, 0).await, 0, "consumers left");
    let mut left = connections_named(&tag).await;
    for _ in 0..10 {
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        left = connections_named(&tag).await;
    }
    assert!(left.is_empty(), "connections left: {left:?}");
    delete_queue(&urls[1], &queue).await;
    let queues = ctl(&["list_queues", "name"]).await;
    assert!(
        !queues.lines().any(|q| q.trim() == queue),
        "{queue} still listed"
    );
    drop(guard);
}
