//! Fault injection: Warren calls over a network that breaks on purpose.
//!
//! Each scenario puts a [`Proxy`] between a Warren client or server and the broker and cuts,
//! delays or refuses connections, restarts the broker, or kills a server mid-call, while calls
//! are made. Every scenario runs on the bundled broker and, when `WARREN_TEST_AMQP_URL` is set,
//! on RabbitMQ (the broker restart on the bundled broker only). The assertions are the promise
//! of the framework:
//! - every call returns the right value or a typed [`Error`] no later than its deadline plus a
//!   small slack; there is no wrong result;
//! - a non-idempotent call (`memory_add`) takes effect exactly once per call id;
//! - afterwards no reply queue and no consumer is left on the broker.
//!
//! Run with `cargo test -p warren-tests --test faults -- --nocapture` to see the numbers of the
//! cut-every-2s scenario.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use lapin::options::{BasicAckOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use warren_broker::{Broker, BrokerHandle};
use warren_examples::{Calc, CalculatorClient, CalculatorServer, Op};
use warren_rpc::{CallOptions, Client, Error, ReplyQueue, RetryPolicy, Server};
use warren_tests::proxy::Proxy;
use warren_tests::rpc_support::{
    calculator, raw_calls, ProbeClient, ProbeImpl, ProbeServer, RawRequest,
};
use warren_tests::{compat_test, consume, unique, Target};

/// How late past its deadline a call may end, for scheduling on a loaded machine.
const SLACK: Duration = Duration::from_secs(2);

/// The budget of each call in the streams.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// A retry policy for a flaky network: many quick attempts, all inside the call's deadline.
fn flaky_network_policy() -> RetryPolicy {
    RetryPolicy::new()
        .max_attempts(20)
        .backoff(Duration::from_millis(20), Duration::from_millis(500))
        .attempt_timeout(Duration::from_millis(1500))
}

async fn client_at(url: &str, reply_queue: ReplyQueue) -> Client {
    Client::builder()
        .timeout(CALL_TIMEOUT)
        .retry(flaky_network_policy())
        .reply_queue(reply_queue)
        .connect(url)
        .await
        .unwrap_or_else(|e| panic!("client failed to connect to {url}: {e}"))
}

async fn calculator_server(url: &str, queue: &str) -> Server {
    Server::builder()
        .queue_name(queue)
        .shutdown_grace(Duration::from_secs(2))
        .serve(url, CalculatorServer::new(Calc::new()))
        .await
        .unwrap_or_else(|e| panic!("server failed to start on {url}: {e}"))
}

/// The consumer count of `queue` (passive declare on a fresh connection to `url`), `None` if
/// the queue does not exist.
async fn consumers(url: &str, queue: &str) -> Option<u32> {
    let conn = lapin::Connection::connect(url, lapin::ConnectionProperties::default())
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"));
    let ch = conn
        .create_channel()
        .await
        .unwrap_or_else(|e| panic!("channel on {url}: {e}"));
    let declared = ch
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await;
    warren_tests::close(conn).await;
    declared.ok().map(|q| q.consumer_count())
}

/// Waits (bounded) until `queue` has exactly `expected` consumers; returns the last count.
async fn settle_consumers(url: &str, queue: &str, expected: u32) -> Option<u32> {
    let mut last = None;
    for _ in 0..30 {
        last = consumers(url, queue).await;
        if last == Some(expected) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    last
}

/// What a stream of calls produced.
#[derive(Debug, Default)]
struct Tally {
    made: u64,
    ok: u64,
    failed: BTreeMap<&'static str, u64>,
    wrong: Vec<String>,
    late: Vec<String>,
    worst: Duration,
    /// Totals returned by successful `memory_add(1)` calls.
    totals: Vec<i64>,
    /// `memory_add` calls that failed: each may or may not have taken effect.
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
        self.worst = self.worst.max(other.worst);
        self.totals.extend(other.totals);
        self.memory_failed += other.memory_failed;
    }

    fn record_latency(&mut self, what: &str, latency: Duration) {
        self.worst = self.worst.max(latency);
        if latency > CALL_TIMEOUT + SLACK {
            self.late.push(format!("{what} took {latency:?}"));
        }
    }

    fn summary(&self) -> String {
        let failed: u64 = self.failed.values().sum();
        let kinds: Vec<String> = self
            .failed
            .iter()
            .map(|(k, n)| format!("{k}={n}"))
            .collect();
        format!(
            "calls made={} succeeded={} failed={} ({}) wrong={} worst latency={:.0}ms",
            self.made,
            self.ok,
            failed,
            if kinds.is_empty() {
                "none".to_owned()
            } else {
                kinds.join(" ")
            },
            self.wrong.len(),
            self.worst.as_secs_f64() * 1000.0
        )
    }

    /// The promise: right values or typed errors, in time; `memory_add` exactly once per call.
    fn check(&self, what: &str, recalled: i64) {
        assert!(self.made > 0, "{what}: no calls were made");
        assert!(
            self.wrong.is_empty(),
            "{what}: wrong results: {:?}",
            self.wrong
        );
        assert!(self.late.is_empty(), "{what}: late calls: {:?}", self.late);
        // Each successful memory_add(1) ran exactly once: the totals it saw are distinct, and
        // the final total counts them plus at most the failed ones (which may have run once).
        let distinct: HashSet<i64> = self.totals.iter().copied().collect();
        assert_eq!(
            distinct.len(),
            self.totals.len(),
            "{what}: two memory_add calls saw the same total: {:?}",
            self.totals
        );
        let succeeded = i64::try_from(self.totals.len()).unwrap();
        let failed = i64::try_from(self.memory_failed).unwrap();
        assert!(
            recalled >= succeeded && recalled <= succeeded + failed,
            "{what}: memory holds {recalled} after {succeeded} successful and {failed} failed \
             memory_add(1) calls: some call took effect twice or not at all"
        );
        assert!(
            self.totals.iter().all(|t| *t >= 1 && *t <= recalled),
            "{what}: a total outside 1..={recalled}: {:?}",
            self.totals
        );
    }
}

/// Makes calls from `workers` concurrent loops until `until`: arithmetic (idempotent) and
/// every fifth call `memory_add(1)` (not idempotent). Bounded by time and by count.
async fn stream_of_calls(calc: &CalculatorClient, workers: u64, until: Instant) -> Tally {
    const MAX_CALLS_PER_WORKER: u64 = 20_000;
    let loops = (0..workers).map(|w| {
        let calc = calc.clone();
        async move {
            let mut tally = Tally::default();
            for i in 0..MAX_CALLS_PER_WORKER {
                if Instant::now() >= until {
                    break;
                }
                tally.made += 1;
                let started = Instant::now();
                if i % 5 == 4 {
                    let result = calc.memory_add(1).await;
                    tally.record_latency("memory_add(1)", started.elapsed());
                    match result {
                        Ok(total) => {
                            tally.ok += 1;
                            tally.totals.push(total);
                        }
                        Err(e) => {
                            *tally.failed.entry(e.kind()).or_default() += 1;
                            tally.memory_failed += 1;
                        }
                    }
                } else {
                    let op = Op::from_seed((w << 32 | i).wrapping_mul(0x9E37_79B9_7F4A_7C15));
                    let result = op.call(&calc).await;
                    tally.record_latency(&format!("{op:?}"), started.elapsed());
                    match result {
                        Ok(answer) if answer == op.expected() => tally.ok += 1,
                        Ok(answer) => tally.wrong.push(format!("{op:?} -> {answer:?}")),
                        Err(e) => *tally.failed.entry(e.kind()).or_default() += 1,
                    }
                }
            }
            tally
        }
    });
    let mut total = Tally::default();
    for tally in futures::future::join_all(loops).await {
        total.merge(tally);
    }
    total
}

/// Whether a reply queue is gone from the broker (passive declare fails).
async fn queue_gone(target: &Target, queue: &str) -> bool {
    consumers(target.url(), queue).await.is_none()
}

compat_test! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connections_cut_every_two_seconds(target: Target) {
        const RUN: Duration = Duration::from_secs(9);
        let proxy = Proxy::start(target.addr()).await;
        let url = proxy.url_for(target.url());
        let queue = unique("calculator-cuts");
        let server = calculator_server(&url, &queue).await;
        // One client on direct reply-to, one on its own reply queue (to check none leak).
        let direct = client_at(&url, ReplyQueue::Auto).await;
        let exclusive = client_at(&url, ReplyQueue::Exclusive).await;
        let reply_queues = Arc::new(Mutex::new(HashSet::new()));
        reply_queues.lock().unwrap().insert(exclusive.reply_to());

        let until = Instant::now() + RUN;
        let cutter = async {
            let mut cuts = 0u32;
            while Instant::now() + Duration::from_secs(2) < until {
                tokio::time::sleep(Duration::from_secs(2)).await;
                proxy.cut_all();
                cuts += 1;
            }
            cuts
        };
        let watcher = async {
            // Remember every reply queue the exclusive client used, while it reconnects.
            while Instant::now() < until {
                let name = exclusive.reply_to();
                if !name.is_empty() {
                    reply_queues.lock().unwrap().insert(name);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        let (direct_calc, exclusive_calc) =
            (calculator(&direct, &queue), calculator(&exclusive, &queue));
        let (cuts, mut tally, other, ()) = tokio::join!(
            cutter,
            stream_of_calls(&direct_calc, 12, until),
            stream_of_calls(&exclusive_calc, 4, until),
            watcher,
        );
        tally.merge(other);

        let recalled = calculator(&direct, &queue)
            .with_timeout(Duration::from_secs(10))
            .memory_recall()
            .await
            .unwrap_or_else(|e| panic!("{target}: memory_recall after the cuts: {e}"));
        println!(
            "{target}: cut every 2s ({cuts} cuts, {} connections through the proxy): {}",
            proxy.accepted(),
            tally.summary()
        );
        tally.check(&format!("{target}: cuts"), recalled);
        assert!(cuts >= 3, "{target}: only {cuts} cuts");
        assert!(
            tally.ok * 10 >= tally.made * 9,
            "{target}: fewer than 90% of calls succeeded: {}",
            tally.summary()
        );

        // One live consumer: the server's consumers on cut connections are gone.
        assert_eq!(
            settle_consumers(target.url(), &queue, 1).await,
            Some(1),
            "{target}: consumers on the service queue while serving"
        );
        direct.close().await;
        exclusive.close().await;
        server.shutdown().await;
        assert_eq!(
            settle_consumers(target.url(), &queue, 0).await,
            Some(0),
            "{target}: consumers left after shutdown"
        );
        let names: Vec<String> = reply_queues.lock().unwrap().iter().cloned().collect();
        assert!(
            names.len() > 1,
            "{target}: the exclusive client never reconnected"
        );
        for name in &names {
            let mut gone = false;
            for _ in 0..30 {
                gone = queue_gone(&target, name).await;
                if gone {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            assert!(gone, "{target}: reply queue {name} leaked");
        }
        target.delete_queues(&[&queue]).await;
    }
}

/// Starts a bundled broker on an ephemeral loopback port.
async fn start_broker() -> BrokerHandle {
    Broker::builder()
        .listen("127.0.0.1:0".parse().expect("literal address"))
        .start()
        .await
        .unwrap_or_else(|e| panic!("bundled broker failed to start: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bundled_broker_stopped_and_restarted() {
    // Clients and servers reach the broker through a proxy, so the restarted broker (on a new
    // port) is at the same address for them.
    let broker = start_broker().await;
    let proxy = Proxy::start(broker.local_addr()).await;
    let url = proxy.url_for(&broker.amqp_url());
    let queue = unique("calculator-restart");
    let server = calculator_server(&url, &queue).await;
    let client = client_at(&url, ReplyQueue::Auto).await;
    let calc = calculator(&client, &queue);

    let until = Instant::now() + Duration::from_secs(6);
    let restart = async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        broker.shutdown().await;
        proxy.cut_all();
        // Down for a second: connection attempts fail meanwhile.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let restarted = start_broker().await;
        proxy.set_target(restarted.local_addr());
        restarted
    };
    let (tally, restarted) = tokio::join!(stream_of_calls(&calc, 8, until), restart);
    let recalled = calc
        .with_timeout(Duration::from_secs(10))
        .memory_recall()
        .await
        .expect("memory_recall after the restart");
    println!("bundled: broker restart: {}", tally.summary());
    // The server process kept its memory; the broker lost the queue and the server declared
    // it again.
    tally.check("bundled: restart", recalled);
    let direct = restarted.amqp_url();
    assert_eq!(
        settle_consumers(&direct, &queue, 1).await,
        Some(1),
        "bundled: the server consumes the re-declared queue"
    );
    client.close().await;
    server.shutdown().await;
    assert_eq!(settle_consumers(&direct, &queue, 0).await, Some(0));
    restarted.shutdown().await;
}

compat_test! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn server_killed_mid_call_and_another_started(target: Target) {
        let queue = unique("probe-kill");
        // The first server reaches the broker through a proxy: cutting it and refusing its
        // reconnections is, for the broker, the server process dying.
        let proxy = Proxy::start(target.addr()).await;
        let doomed = Server::builder()
            .queue_name(queue.as_str())
            .shutdown_grace(Duration::from_millis(100))
            .serve(
                &proxy.url_for(target.url()),
                ProbeServer::new(ProbeImpl::default()),
            )
            .await
            .unwrap_or_else(|e| panic!("{target}: first server: {e}"));
        let client = client_at(target.url(), ReplyQueue::Auto).await;
        let probe = ProbeClient::new(client.clone()).with_options(
            CallOptions::new()
                .service(queue.as_str())
                .timeout(Duration::from_secs(8)),
        );
        let calls = (0..4).map(|_| {
            let probe = probe.clone();
            async move {
                let started = Instant::now();
                (probe.sleep(1500).await, started.elapsed())
            }
        });
        let calls = futures::future::join_all(calls);
        let kill_and_replace = async {
            tokio::time::sleep(Duration::from_millis(400)).await;
            proxy.stop_accepting();
            proxy.cut_all();
            Server::builder()
                .queue_name(queue.as_str())
                .serve(target.url(), ProbeServer::new(ProbeImpl::default()))
                .await
                .unwrap_or_else(|e| panic!("{target}: second server: {e}"))
        };
        let (results, replacement) = tokio::join!(calls, kill_and_replace);
        for (result, elapsed) in results {
            assert_eq!(
                result.as_ref().ok(),
                Some(&1500),
                "{target}: a call taken by the killed server: {result:?}"
            );
            assert!(
                elapsed < Duration::from_secs(8) + SLACK,
                "{target}: {elapsed:?}"
            );
        }
        assert_eq!(
            settle_consumers(target.url(), &queue, 1).await,
            Some(1),
            "{target}: only the replacement consumes"
        );
        client.close().await;
        doomed.shutdown().await;
        replacement.shutdown().await;
        assert_eq!(
            settle_consumers(target.url(), &queue, 0).await,
            Some(0),
            "{target}"
        );
        target.delete_queues(&[&queue]).await;
    }
}

compat_test! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn duplicate_delivery_of_a_non_idempotent_call_runs_once(target: Target) {
        // (1) The same call id three times, two at once and one later: one execution.
        let queue = unique("calculator-dup");
        let server = calculator_server(target.url(), &queue).await;
        let add = RawRequest::json("memory_add", r#"{"x": 5}"#);
        let replies = raw_calls(&target, &queue, &[add.clone(), add.clone()]).await;
        let again = raw_calls(&target, &queue, &[add]).await;
        for reply in replies.iter().chain(&again) {
            assert_eq!(
                reply.json(),
                serde_json::json!({"ok": 5}),
                "{target}: a duplicate"
            );
        }
        let client = client_at(target.url(), ReplyQueue::Auto).await;
        let calc = calculator(&client, &queue);
        assert_eq!(calc.memory_recall().await.unwrap(), 5, "{target}: ran once");

        // (2) The server loses its connection after running the call, before its reply and
        // ack reach the broker (they are held in the proxy): the broker redelivers, and the
        // server answers from its cache.
        let proxy = Proxy::start(target.addr()).await;
        let behind = calculator_server(&proxy.url_for(target.url()), &queue).await;
        // Both servers consume the queue; stop the direct one so the proxied one gets it.
        server.shutdown().await;
        proxy.set_delay(Duration::from_millis(400));
        let patient = calc.with_timeout(Duration::from_secs(8));
        let cut = async {
            tokio::time::sleep(Duration::from_millis(650)).await;
            proxy.set_delay(Duration::ZERO);
            proxy.cut_all();
        };
        let (result, ()) = tokio::join!(patient.memory_add(7), cut);
        assert_eq!(result.ok(), Some(7), "{target}: the redelivered call");
        assert_eq!(
            calc.memory_recall().await.unwrap(),
            7,
            "{target}: the redelivered call ran once"
        );

        // (3) The client loses its connection after the server replied, before the reply
        // reached it: it resends the call (same id) and gets the cached reply.
        let client_proxy = Proxy::start(target.addr()).await;
        let resender = client_at(&client_proxy.url_for(target.url()), ReplyQueue::Auto).await;
        client_proxy.set_delay(Duration::from_millis(400));
        let cut = async {
            tokio::time::sleep(Duration::from_millis(650)).await;
            client_proxy.set_delay(Duration::ZERO);
            client_proxy.cut_all();
        };
        let resent = calculator(&resender, &queue).with_timeout(Duration::from_secs(8));
        let (result, ()) = tokio::join!(resent.memory_add(3), cut);
        assert_eq!(result.ok(), Some(10), "{target}: the resent call");
        assert_eq!(
            calc.memory_recall().await.unwrap(),
            10,
            "{target}: the resent call ran once"
        );

        resender.close().await;
        client.close().await;
        behind.shutdown().await;
        assert_eq!(
            settle_consumers(target.url(), &queue, 0).await,
            Some(0),
            "{target}"
        );
        target.delete_queues(&[&queue]).await;
    }
}

/// A raw consumer that records every request on `queue` and answers only attempts >= `answer_from`.
async fn recording_server(
    target: &Target,
    queue: &str,
    answer_from: i64,
) -> (lapin::Connection, Arc<Mutex<Vec<(String, i64, i64)>>>) {
    let (conn, ch) = target.open().await;
    ch.queue_declare(
        queue.into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap_or_else(|e| panic!("{target}: declare: {e}"));
    let mut consumer = consume(target, &ch, queue, "", false).await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Some(Ok(delivery)) = consumer.next().await {
            let props = &delivery.properties;
            let headers = props.headers().clone().unwrap_or_default();
            let int = |name: &str| match headers.inner().get(name) {
                Some(lapin::types::AMQPValue::LongLongInt(v)) => *v,
                other => panic!("header {name}: {other:?}"),
            };
            let id = props
                .message_id()
                .as_ref()
                .map(|m| m.to_string())
                .unwrap_or_default();
            assert_eq!(
                props.correlation_id().as_ref().map(|c| c.to_string()),
                Some(id.clone()),
                "message_id and correlation_id are the call id"
            );
            let attempt = int("x-warren-attempt");
            log.lock()
                .unwrap()
                .push((id.clone(), attempt, int("x-warren-timeout-ms")));
            if attempt >= answer_from {
                if let Some(reply_to) = props.reply_to().clone() {
                    let reply = rmp_serde::to_vec_named(&serde_json::json!({"ok": attempt}))
                        .expect("encodable");
                    let _ = ch
                        .basic_publish(
                            "".into(),
                            reply_to,
                            Default::default(),
                            &reply,
                            lapin::BasicProperties::default()
                                .with_correlation_id(id.as_str().into())
                                .with_content_type("application/msgpack".into()),
                        )
                        .await;
                }
            }
            let _ = delivery.ack(BasicAckOptions::default()).await;
        }
    });
    (conn, seen)
}

compat_test! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn attempts_reuse_the_call_id_and_count_up(target: Target) {
        // An idempotent method is sent again when an attempt gets no reply in time; the
        // recording server answers the third attempt only.
        let queue = unique("recorded");
        let (conn, seen) = recording_server(&target, &queue, 3).await;
        let quick = RetryPolicy::new()
            .max_attempts(5)
            .backoff(Duration::from_millis(10), Duration::from_millis(50))
            .attempt_timeout(Duration::from_millis(300));
        // The client's policy never retries; the per-method policy of `add` does.
        let client = Client::builder()
            .retry(RetryPolicy::never())
            .method_retry("add", quick)
            .connect(target.url())
            .await
            .unwrap_or_else(|e| panic!("{target}: client: {e}"));
        // `add` is idempotent: it returns whatever the recording server answers (the attempt).
        let calc = CalculatorClient::new(client.clone()).with_options(
            CallOptions::new()
                .service(queue.as_str())
                .timeout(Duration::from_secs(5)),
        );
        assert_eq!(
            calc.add(1, 1).await.unwrap(),
            3,
            "{target}: answered attempt"
        );
        let attempts = seen.lock().unwrap().clone();
        assert_eq!(attempts.len(), 3, "{target}: {attempts:?}");
        assert!(
            attempts.iter().all(|(id, _, _)| *id == attempts[0].0),
            "{target}: one call id: {attempts:?}"
        );
        let numbers: Vec<i64> = attempts.iter().map(|(_, n, _)| *n).collect();
        assert_eq!(numbers, [1, 2, 3], "{target}");
        assert!(
            attempts.windows(2).all(|w| w[1].2 < w[0].2),
            "{target}: each attempt carries the budget left: {attempts:?}"
        );

        // A non-idempotent method is not sent again on a silent server: one request, and a
        // deadline error by the deadline: `Expired`, since the server never said it started.
        seen.lock().unwrap().clear();
        let started = Instant::now();
        let result = calc
            .with_options(
                CallOptions::new()
                    .service(queue.as_str())
                    .retry(quick)
                    .timeout(Duration::from_secs(1)),
            )
            .memory_add(1)
            .await;
        assert!(
            matches!(result, Err(Error::Expired { .. })),
            "{target}: {result:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(1) + SLACK,
            "{target}"
        );
        assert_eq!(seen.lock().unwrap().len(), 1, "{target}: sent once");

        // `mul`, idempotent too, has no policy of its own: the client's (never retry) applies.
        seen.lock().unwrap().clear();
        let result = calc.with_timeout(Duration::from_secs(1)).mul(2, 2).await;
        assert!(
            matches!(result, Err(Error::Expired { .. })),
            "{target}: {result:?}"
        );
        assert_eq!(seen.lock().unwrap().len(), 1, "{target}: mul sent once");

        client.close().await;
        warren_tests::close(conn).await;
        target.delete_queues(&[&queue]).await;
    }
}

compat_test! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn calls_wait_for_a_refused_connection_until_their_deadline(target: Target) {
        let proxy = Proxy::start(target.addr()).await;
        let queue = unique("calculator-down");
        let server = calculator_server(target.url(), &queue).await;
        let client = client_at(&proxy.url_for(target.url()), ReplyQueue::Auto).await;
        let calc = calculator(&client, &queue);
        assert_eq!(calc.add(1, 2).await.unwrap(), 3, "{target}");

        // The network goes away for longer than the call's budget: a connection error at the
        // deadline, not a hang and not a wrong answer.
        proxy.stop_accepting();
        proxy.cut_all();
        let started = Instant::now();
        let result = calc.with_timeout(Duration::from_secs(1)).add(2, 2).await;
        let elapsed = started.elapsed();
        assert!(
            matches!(result, Err(Error::Connection { .. })),
            "{target}: {result:?}"
        );
        assert!(
            elapsed < Duration::from_secs(1) + SLACK,
            "{target}: {elapsed:?}"
        );

        // It comes back within the next call's budget: the call succeeds.
        let patient = calc.with_timeout(Duration::from_secs(5));
        let back = async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            proxy.start_accepting();
        };
        let (result, ()) = tokio::join!(patient.add(2, 2), back);
        assert_eq!(result.ok(), Some(4), "{target}");
        assert!(client.is_connected(), "{target}");

        client.close().await;
        server.shutdown().await;
        target.delete_queues(&[&queue]).await;
    }
}

compat_test! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn silent_partitions_are_noticed_by_heartbeats(target: Target) {
        let queue = unique("calculator-partition");
        let server = calculator_server(target.url(), &queue).await;
        let proxy = Proxy::start(target.addr()).await;
        // A 1 s heartbeat: a connection silent for about 2 s counts as dead.
        let client = Client::builder()
            .timeout(Duration::from_secs(10))
            .heartbeat(Duration::from_secs(1))
            .retry(flaky_network_policy())
            .connect(&proxy.url_for(target.url()))
            .await
            .unwrap_or_else(|e| panic!("{target}: client: {e}"));
        let calc = calculator(&client, &queue);
        assert_eq!(calc.add(1, 2).await.unwrap(), 3, "{target}");

        // The network goes silent without closing anything: no socket error to notice, only
        // missing heartbeats. The call in flight is resent on a new connection.
        proxy.freeze_all();
        let started = Instant::now();
        let non_idempotent = calc.memory_add(4);
        let idempotent = calc.mul(6, 7);
        let (added, product) = tokio::join!(non_idempotent, idempotent);
        let elapsed = started.elapsed();
        assert_eq!(product.ok(), Some(42), "{target}: mul across a partition");
        assert_eq!(
            added.ok(),
            Some(4),
            "{target}: memory_add across a partition"
        );
        assert!(
            elapsed < Duration::from_secs(10) + SLACK,
            "{target}: {elapsed:?}"
        );
        assert!(
            proxy.accepted() >= 2,
            "{target}: the client did not reconnect"
        );
        assert_eq!(calc.memory_recall().await.unwrap(), 4, "{target}: ran once");

        client.close().await;
        server.shutdown().await;
        target.delete_queues(&[&queue]).await;
    }
}
