//! End-to-end tests of warren-rpc: typed calls through a broker, on the bundled broker and, when
//! `WARREN_TEST_AMQP_URL` is set, on RabbitMQ.
//!
//! Each test runs its case once per target (see `warren_tests::targets`); every server consumes
//! a queue of its own so tests can share one RabbitMQ. Assertions about time only check that an
//! error came no later than its deadline plus a generous slack, never how fast something ran.

use std::time::{Duration, Instant};

use futures::future::join_all;
use lapin::options::QueueDeclareOptions;
use lapin::types::{AMQPValue, FieldTable};
use warren_examples::{CalcError, Op};
use warren_rpc::{CallOptions, Client, Codec, Error, FaultCode, ReplyQueue, RetryPolicy, Server};
use warren_tests::rpc_support::{
    calculator, client, probe, raw_call, raw_calls, serve, serve_calculator, serve_probe,
    ProbeImpl, ProbeServer, RawRequest,
};
use warren_tests::{compat_test, Target};

/// Slack allowed past a deadline for scheduling on a loaded CI machine.
const SLACK: Duration = Duration::from_secs(2);

async fn cleanup(target: &Target, server: Server, queue: &str) {
    server.shutdown().await;
    target.delete_queues(&[queue]).await;
}

compat_test! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn calls_return_values_and_application_errors(target: Target) {
        let (server, queue) = serve_calculator(&target, Server::builder()).await;
        let client = client(&target).await;
        assert_eq!(
            client.reply_to(),
            "amq.rabbitmq.reply-to",
            "{target}: direct reply-to by default"
        );
        for codec in [Codec::MsgPack, Codec::Json] {
            let calc = calculator(&client, &queue)
                .with_options(CallOptions::new().service(queue.as_str()).codec(codec));
            let t = format!("{target}/{codec}");
            assert_eq!(calc.add(2, 3).await.unwrap(), 5, "{t}: add");
            assert_eq!(calc.sub(2, 3).await.unwrap(), -1, "{t}: sub");
            assert_eq!(calc.mul(-4, 3).await.unwrap(), -12, "{t}: mul");
            assert_eq!(calc.div(7, 2).await.unwrap(), Ok(3), "{t}: div");
            assert_eq!(
                calc.div(7, 0).await.unwrap(),
                Err(CalcError::DivisionByZero),
                "{t}: an application error is a value, not a framework error"
            );
            assert_eq!(
                calc.div(i64::MIN, -1).await.unwrap(),
                Err(CalcError::Overflow),
                "{t}: overflow"
            );
        }
        let calc = calculator(&client, &queue);
        assert_eq!(calc.memory_add(5).await.unwrap(), 5, "{target}: memory_add");
        assert_eq!(
            calc.memory_add(-2).await.unwrap(),
            3,
            "{target}: memory_add"
        );
        assert_eq!(
            calc.memory_recall().await.unwrap(),
            3,
            "{target}: memory_recall"
        );
        assert_eq!(client.pending_calls(), 0, "{target}: nothing left pending");
        cleanup(&target, server, &queue).await;
    }
}

compat_test! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn thousands_of_concurrent_calls(target: Target) {
        const CALLS: u64 = 3000;
        let (server, queue) = serve_calculator(&target, Server::builder().concurrency(64)).await;
        let client = client(&target).await;
        let calc = calculator(&client, &queue);
        // Every call is in flight at once on one connection and channel.
        let calls = (0..CALLS).map(|i| {
            let op = Op::from_seed(i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let calc = &calc;
            async move { (op, op.call(calc).await) }
        });
        let results = join_all(calls).await;
        for (op, result) in &results {
            match result {
                Ok(answer) => assert_eq!(*answer, op.expected(), "{target}: {op:?}"),
                Err(e) => panic!("{target}: {op:?} failed: {e}"),
            }
        }
        assert_eq!(client.pending_calls(), 0, "{target}: nothing left pending");
        cleanup(&target, server, &queue).await;
    }
}

compat_test! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn exclusive_reply_queue_works_like_direct_reply_to(target: Target) {
        let (server, queue) = serve_calculator(&target, Server::builder()).await;
        let client = Client::builder()
            .reply_queue(ReplyQueue::Exclusive)
            .connect(target.url())
            .await
            .unwrap_or_else(|e| panic!("{target}: connect: {e}"));
        assert_ne!(client.reply_to(), "amq.rabbitmq.reply-to", "{target}");
        let calc = calculator(&client, &queue);
        let results = join_all((0..200i64).map(|i| calc.add(i, i))).await;
        for (i, r) in results.into_iter().enumerate() {
            assert_eq!(r.unwrap(), 2 * i as i64, "{target}: add over a reply queue");
        }
        drop(calc);
        client.close().await;
        cleanup(&target, server, &queue).await;
    }
}

compat_test! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn faults_unknown_method_bad_arguments_and_panics(target: Target) {
        let (server, queue) = serve_probe(&target, Server::builder()).await;

        let replies = raw_calls(
            &target,
            &queue,
            &[
                RawRequest::json("no_such_method", "{}"),
                RawRequest::json("echo", r#"{"text": 42}"#),
                RawRequest::json("echo", "not json"),
                RawRequest {
                    content_type: Some("text/plain".into()),
                    ..RawRequest::json("echo", r#"{"text":"x"}"#)
                },
                RawRequest {
                    method: None,
                    ..RawRequest::json("echo", r#"{"text":"x"}"#)
                },
            ],
        )
        .await;
        let codes: Vec<String> = replies
            .iter()
            .map(|r| {
                let json = r.json();
                json["fault"]["code"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{target}: expected a fault, got {json}"))
                    .to_owned()
            })
            .collect();
        let mut codes_sorted = codes.clone();
        codes_sorted.sort();
        assert_eq!(
            codes_sorted,
            [
                "bad_request",
                "bad_request",
                "bad_request",
                "bad_request",
                "unknown_method"
            ],
            "{target}: fault codes"
        );

        let client = client(&target).await;
        let probe = probe(&client, &queue);
        match probe.explode("boom".into()).await {
            Err(Error::Fault { code, message }) => {
                assert_eq!(code, FaultCode::HandlerPanicked, "{target}");
                assert!(message.contains("boom"), "{target}: {message}");
            }
            other => panic!("{target}: expected handler_panicked, got {other:?}"),
        }
        // The server survived the panic.
        assert_eq!(
            probe.echo("still here".into()).await.unwrap(),
            "still here",
            "{target}"
        );
        cleanup(&target, server, &queue).await;
    }
}

compat_test! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn slow_handler_times_out_by_the_deadline(target: Target) {
        let (server, queue) = serve_probe(&target, Server::builder()).await;
        let client = client(&target).await;
        let probe = probe(&client, &queue);
        let budget = Duration::from_millis(300);
        let started = Instant::now();
        let result = probe.with_timeout(budget).sleep(10_000).await;
        let elapsed = started.elapsed();
        // The server reported that it started the call: it ran past its deadline.
        assert!(
            matches!(result, Err(Error::DeadlineExceeded { .. })),
            "{target}: expected DeadlineExceeded, got {result:?}"
        );
        assert!(!result.unwrap_err().is_retryable(), "{target}");
        assert!(
            elapsed < budget + SLACK,
            "{target}: timed out after {elapsed:?}"
        );
        // The server still answers, and nothing stays pending in the client.
        assert_eq!(probe.sleep(1).await.unwrap(), 1, "{target}");
        assert_eq!(client.pending_calls(), 0, "{target}");
        cleanup(&target, server, &queue).await;
    }
}

compat_test! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn missing_service_is_unavailable_at_once(target: Target) {
        // Unconfirmed calls (the default) learn it from the returned request, confirmed ones
        // from the confirm that carries it.
        for confirm_calls in [false, true] {
            let t = format!("{target} (confirm_calls {confirm_calls})");
            let client = Client::builder()
                .timeout(Duration::from_secs(30))
                .confirm_calls(confirm_calls)
                .connect(target.url())
                .await
                .unwrap_or_else(|e| panic!("{t}: connect: {e}"));
            let nobody = warren_tests::unique("nobody");
            let calc = calculator(&client, &nobody).with_options(
                CallOptions::new()
                    .service(nobody.as_str())
                    .timeout(Duration::from_secs(30)),
            );
            let started = Instant::now();
            let result = calc.add(1, 2).await;
            match &result {
                Err(e @ Error::ServiceUnavailable { service }) => {
                    assert_eq!(service, &nobody, "{t}");
                    assert!(e.is_retryable(), "{t}");
                }
                other => panic!("{t}: expected ServiceUnavailable, got {other:?}"),
            }
            // Far sooner than the 30 s budget: the broker returned the request.
            assert!(started.elapsed() < Duration::from_secs(10), "{t}");
            // One-way calls learn it too.
            let probe = probe(&client, &nobody);
            assert!(
                matches!(probe.record(1).await, Err(Error::ServiceUnavailable { .. })),
                "{t}: one-way call to a missing service"
            );
            assert_eq!(client.pending_calls(), 0, "{t}");
            client.close().await;
        }
    }
}

compat_test! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn confirmed_calls_learn_that_the_broker_refused_the_request(target: Target) {
        // A service queue that takes nothing: full at length 0, refusing new messages.
        let queue = warren_tests::unique("full");
        let (conn, ch) = target.open().await;
        let mut args = FieldTable::default();
        args.insert("x-max-length".into(), AMQPValue::LongInt(0));
        args.insert(
            "x-overflow".into(),
            AMQPValue::LongString("reject-publish".into()),
        );
        ch.queue_declare(queue.as_str().into(), QueueDeclareOptions::default(), args)
            .await
            .unwrap_or_else(|e| panic!("{target}: queue.declare: {e}"));
        let client = Client::builder()
            .confirm_calls(true)
            .retry(RetryPolicy::never())
            .connect(target.url())
            .await
            .unwrap_or_else(|e| panic!("{target}: connect: {e}"));
        let calc = calculator(&client, &queue).with_options(
            CallOptions::new()
                .service(queue.as_str())
                .timeout(Duration::from_secs(30)),
        );
        let started = Instant::now();
        let result = calc.add(1, 2).await;
        assert!(
            matches!(result, Err(Error::PublishRejected)),
            "{target}: expected PublishRejected, got {result:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(10), "{target}");
        client.close().await;
        target.delete_queues(&[&queue]).await;
        warren_tests::close(conn).await;
    }
}

compat_test! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn requests_expire_while_queued(target: Target) {
        // A server with one slot, kept busy, so the next request waits in the queue.
        let (server, queue) = serve(
            &target,
            Server::builder().concurrency(1),
            warren_examples::CalculatorServer::new(warren_examples::Calc::new()),
        )
        .await;
        let client = client(&target).await;
        let calc = calculator(&client, &queue);

        // Stop the server: the queue stays, with nobody consuming it.
        server.shutdown().await;
        let result = calc
            .with_timeout(Duration::from_millis(200))
            .memory_add(7)
            .await;
        // No server took it: the broker dropped it at its expiration, and the caller knows it
        // never ran.
        assert!(
            matches!(result, Err(Error::Expired { .. })),
            "{target}: expected Expired, got {result:?}"
        );
        assert!(result.unwrap_err().is_retryable(), "{target}");
        tokio::time::sleep(Duration::from_millis(300)).await;

        // A new server on the same queue must not run the expired request.
        let server = warren_rpc::Server::builder()
            .queue_name(queue.clone())
            .serve(
                target.url(),
                warren_examples::CalculatorServer::new(warren_examples::Calc::new()),
            )
            .await
            .unwrap();
        assert_eq!(
            calc.memory_recall().await.unwrap(),
            0,
            "{target}: an expired request was executed"
        );
        cleanup(&target, server, &queue).await;
    }
}

compat_test! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn requests_waiting_behind_a_busy_server_expire(target: Target) {
        let (server, queue) = serve_probe(&target, Server::builder().concurrency(1)).await;
        let client = client(&target).await;
        let probe = probe(&client, &queue);
        let busy = probe.sleep(600);
        let queued = async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            probe
                .with_timeout(Duration::from_millis(200))
                .count_slowly(0)
                .await
        };
        let (busy, queued) = tokio::join!(busy, queued);
        assert_eq!(busy.unwrap(), 600, "{target}");
        assert!(
            matches!(queued, Err(Error::Expired { .. })),
            "{target}: expected Expired (no server started it), got {queued:?}"
        );
        // Whether the broker dropped it or the server skipped it, it never ran.
        assert_eq!(
            probe.count_slowly(0).await.unwrap(),
            1,
            "{target}: the expired call ran"
        );
        cleanup(&target, server, &queue).await;
    }
}

compat_test! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn oneway_calls_get_no_reply_and_run(target: Target) {
        let (server, queue) = serve_probe(&target, Server::builder().concurrency(1)).await;
        let client = client(&target).await;
        let probe = probe(&client, &queue);
        for v in 1..=10 {
            probe.record(v).await.unwrap();
        }
        assert_eq!(
            client.pending_calls(),
            0,
            "{target}: one-way calls wait for nothing"
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let recorded = probe.recorded().await.unwrap();
            if recorded.len() == 10 {
                let mut sorted = recorded.clone();
                sorted.sort();
                assert_eq!(sorted, (1..=10).collect::<Vec<_>>(), "{target}");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{target}: recorded only {recorded:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        cleanup(&target, server, &queue).await;
    }
}

compat_test! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn wire_format_in_json_and_msgpack(target: Target) {
        #[derive(serde::Serialize)]
        struct Args {
            a: i64,
            b: i64,
        }
        let (server, queue) = serve_calculator(&target, Server::builder()).await;

        let request = RawRequest::json("add", r#"{"a": 2, "b": 3}"#);
        let id = request.call_id.clone();
        let reply = raw_call(&target, &queue, request).await;
        assert_eq!(
            reply.content_type.as_deref(),
            Some("application/json"),
            "{target}"
        );
        assert_eq!(
            reply.correlation_id.as_deref(),
            Some(id.as_str()),
            "{target}"
        );
        assert_eq!(reply.json(), serde_json::json!({"ok": 5}), "{target}");

        let reply = raw_call(
            &target,
            &queue,
            RawRequest::json("div", r#"{"a": 1, "b": 0}"#),
        )
        .await;
        assert_eq!(
            reply.json(),
            serde_json::json!({"err": "DivisionByZero"}),
            "{target}"
        );

        // A budget too large for the server's clock is no deadline, never a crash.
        let huge = RawRequest {
            timeout_ms: Some(i64::MAX),
            ..RawRequest::json("add", r#"{"a": 1, "b": 1}"#)
        };
        let reply = raw_call(&target, &queue, huge).await;
        assert_eq!(
            reply.json(),
            serde_json::json!({"ok": 2}),
            "{target}: huge budget"
        );

        let reply = raw_call(&target, &queue, RawRequest::json("memory_recall", "{}")).await;
        assert_eq!(reply.json(), serde_json::json!({"ok": 0}), "{target}");

        let reply = raw_call(
            &target,
            &queue,
            RawRequest::msgpack("mul", &Args { a: 6, b: 7 }),
        )
        .await;
        assert_eq!(
            reply.content_type.as_deref(),
            Some("application/msgpack"),
            "{target}"
        );
        let body: serde_json::Value = rmp_serde::from_slice(&reply.body).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"ok": 42}),
            "{target}: msgpack map with string keys"
        );

        cleanup(&target, server, &queue).await;
    }
}

compat_test! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn serde_shapes_survive_both_codecs(target: Target) {
        use warren_tests::rpc_support::{Document, Shape};
        let document = Document {
            title: "ünïcode ✓".into(),
            tags: Some(vec!["a".into(), String::new()]),
            scores: [("x".to_owned(), 1.5), ("y".to_owned(), -0.25)].into(),
            shapes: vec![
                Shape::Point,
                Shape::Circle(2.5),
                Shape::Segment(-1, 1),
                Shape::Rect { w: 3, h: 4 },
            ],
            blob: (0..=255).collect(),
            nothing: (),
            big: u64::MAX,
        };
        let (server, queue) = serve_probe(&target, Server::builder()).await;
        let client = client(&target).await;
        for codec in [Codec::MsgPack, Codec::Json] {
            let probe = probe(&client, &queue)
                .with_options(CallOptions::new().service(queue.as_str()).codec(codec));
            let t = format!("{target}/{codec}");
            let shape = Shape::Rect { w: 1, h: 2 };
            let swapped = probe
                .swap(document.clone(), shape.clone(), false)
                .await
                .unwrap();
            assert_eq!(swapped, Ok((shape.clone(), document.clone())), "{t}");
            let failed = probe.swap(document.clone(), shape.clone(), true).await;
            assert_eq!(failed.unwrap(), Err(shape), "{t}");
        }
        cleanup(&target, server, &queue).await;
    }
}

compat_test! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn duplicate_requests_execute_once(target: Target) {
        let (server, queue) = serve_probe(&target, Server::builder()).await;

        // The same call id twice, the second while the first still runs.
        let first = RawRequest::json("count_slowly", r#"{"ms": 300}"#);
        let replies = raw_calls(&target, &queue, &[first.clone(), first.clone()]).await;
        for reply in &replies {
            assert_eq!(
                reply.json(),
                serde_json::json!({"ok": 1}),
                "{target}: in-flight duplicate"
            );
        }
        // And again after it finished: replayed from the cache.
        let reply = raw_call(&target, &queue, first).await;
        assert_eq!(
            reply.json(),
            serde_json::json!({"ok": 1}),
            "{target}: replayed duplicate"
        );

        // A new call id runs.
        let reply = raw_call(
            &target,
            &queue,
            RawRequest::json("count_slowly", r#"{"ms": 0}"#),
        )
        .await;
        assert_eq!(
            reply.json(),
            serde_json::json!({"ok": 2}),
            "{target}: a new call"
        );
        cleanup(&target, server, &queue).await;
    }
}

compat_test! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn handlers_see_their_call_context(target: Target) {
        let (server, queue) = serve_probe(&target, Server::builder()).await;
        let client = client(&target).await;
        let probe = probe(&client, &queue).with_timeout(Duration::from_secs(3));
        let info = probe.context().await.unwrap();
        assert_eq!(info.attempt, 1, "{target}");
        assert!(
            uuid::Uuid::parse_str(&info.call_id).is_ok(),
            "{target}: {info:?}"
        );
        let remaining = info.remaining_ms.expect("a budget");
        assert!(remaining <= 3000 && remaining > 0, "{target}: {info:?}");
        cleanup(&target, server, &queue).await;
    }
}

compat_test! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn calls_made_by_a_handler_inherit_its_deadline(target: Target) {
        let (inner, inner_queue) = serve_probe(&target, Server::builder()).await;
        // The relay's own client allows 30 s per call; the outer caller allows 1 s.
        let relay_client = Client::builder()
            .timeout(Duration::from_secs(30))
            .connect(target.url())
            .await
            .unwrap();
        let (outer, outer_queue) = serve(
            &target,
            Server::builder(),
            ProbeServer::new(ProbeImpl::with_relay(probe(&relay_client, &inner_queue))),
        )
        .await;
        let client = client(&target).await;
        let info = probe(&client, &outer_queue)
            .with_timeout(Duration::from_secs(1))
            .relay_context()
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("{target}: relay failed: {e}"));
        let remaining = info.remaining_ms.expect("a budget");
        assert!(
            remaining <= 1000,
            "{target}: the nested call got {remaining}ms, more than its caller's 1000ms"
        );
        cleanup(&target, outer, &outer_queue).await;
        cleanup(&target, inner, &inner_queue).await;
    }
}

compat_test! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shutdown_drains_calls_in_flight(target: Target) {
        let service = std::sync::Arc::new(ProbeImpl::default());
        let (server, queue) = serve(
            &target,
            Server::builder(),
            ProbeServer::from_arc(std::sync::Arc::clone(&service)),
        )
        .await;
        let client = client(&target).await;
        let probe = probe(&client, &queue);
        let call = tokio::spawn({
            let probe = probe.clone();
            async move { probe.count_slowly(300).await }
        });
        // Shut down once the handler is running.
        let started = Instant::now();
        while service.executions() == 0 {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "{target}: the call never started"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        server.shutdown().await;
        assert_eq!(
            call.await.unwrap().unwrap(),
            1,
            "{target}: the call in flight finished"
        );
        target.delete_queues(&[&queue]).await;
    }
}

/// Whether `python3` with pika and msgpack is available. In CI (env `CI` set) it must be.
fn python_ready() -> bool {
    let probe = std::process::Command::new("python3")
        .args(["-c", "import pika, msgpack"])
        .output();
    let ready = matches!(&probe, Ok(out) if out.status.success());
    if !ready {
        let why = match &probe {
            Ok(out) => String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            Err(e) => format!("python3: {e}"),
        };
        assert!(
            std::env::var_os("CI").is_none(),
            "CI needs python3 with pika and msgpack (pip install pika msgpack): {why}"
        );
        println!("skipped: python3 with pika and msgpack not available ({why})");
    }
    ready
}

compat_test! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn python_client_speaks_the_wire_protocol(target: Target) {
        if !python_ready() {
            return;
        }
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../examples/python/calculator_client.py"
        );
        let (server, queue) = serve_calculator(&target, Server::builder()).await;
        let run = tokio::process::Command::new("python3")
            .arg(script)
            .args(["--url", target.url(), "--service", &queue])
            .kill_on_drop(true)
            .output();
        let output = tokio::time::timeout(Duration::from_secs(30), run)
            .await
            .unwrap_or_else(|_| panic!("{target}: the Python client hung"))
            .unwrap_or_else(|e| panic!("{target}: cannot run python3: {e}"));
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "{target}: the Python client failed ({}):\n{stdout}\n{stderr}",
            output.status
        );
        assert!(stdout.contains("DivisionByZero"), "{target}: {stdout}");
        assert!(stdout.trim_end().ends_with("ok"), "{target}: {stdout}");
        cleanup(&target, server, &queue).await;
    }
}

compat_test! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn durable_and_quorum_service_queues(target: Target) {
        // Durable classic queue: everywhere.
        let (server, queue) = serve_calculator(&target, Server::builder().durable(true)).await;
        let client = client(&target).await;
        assert_eq!(
            calculator(&client, &queue).add(1, 2).await.unwrap(),
            3,
            "{target}"
        );
        cleanup(&target, server, &queue).await;

        // Quorum queue: RabbitMQ's choice for a cluster. The bundled broker is not clustered and
        // may refuse the type, but then with an error that says so.
        let queue = warren_tests::unique("calculator");
        let started = Server::builder()
            .durable(true)
            .queue_type("quorum")
            .queue_name(queue.clone())
            .serve(
                target.url(),
                warren_examples::CalculatorServer::new(warren_examples::Calc::new()),
            )
            .await;
        match started {
            Ok(server) => {
                let calc = calculator(&client, &queue);
                assert_eq!(
                    calc.add(20, 22).await.unwrap(),
                    42,
                    "{target}: quorum queue"
                );
                assert_eq!(
                    calc.memory_add(1).await.unwrap(),
                    1,
                    "{target}: quorum queue"
                );
                cleanup(&target, server, &queue).await;
            }
            Err(e) => {
                assert!(!target.is_rabbitmq(), "{target}: quorum queue refused: {e}");
                assert!(
                    e.to_string().contains("quorum"),
                    "{target}: unclear refusal: {e}"
                );
                println!("{target}: quorum queues refused: {e}");
            }
        }
    }
}

compat_test! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rust_client_calls_a_python_server(target: Target) {
        use tokio::io::AsyncBufReadExt;

        if !python_ready() {
            return;
        }
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../examples/python/calculator_server.py"
        );
        let queue = warren_tests::unique("calculator");
        let mut server = tokio::process::Command::new("python3")
            .arg(script)
            .args(["--url", target.url(), "--service", &queue])
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("{target}: cannot run python3: {e}"));
        let stdout = server.stdout.take().expect("piped stdout");
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let first = tokio::time::timeout(Duration::from_secs(15), lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("{target}: the Python server did not start"));
        assert_eq!(
            first.ok().flatten().as_deref(),
            Some("ready"),
            "{target}: Python server"
        );

        let client = client(&target).await;
        for codec in [Codec::MsgPack, Codec::Json] {
            let calc = calculator(&client, &queue)
                .with_options(CallOptions::new().service(queue.as_str()).codec(codec));
            let t = format!("{target}/{codec}");
            assert_eq!(calc.add(2, 3).await.unwrap(), 5, "{t}");
            assert_eq!(calc.div(-7, 2).await.unwrap(), Ok(-3), "{t}");
            assert_eq!(
                calc.div(1, 0).await.unwrap(),
                Err(CalcError::DivisionByZero),
                "{t}"
            );
        }
        let calc = calculator(&client, &queue);
        assert_eq!(calc.memory_add(4).await.unwrap(), 4, "{target}");
        assert_eq!(calc.memory_recall().await.unwrap(), 4, "{target}");
        let results = join_all((0..300u64).map(|i| {
            let op = Op::from_seed(i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let calc = &calc;
            async move { (op, op.call(calc).await) }
        }))
        .await;
        for (op, result) in results {
            assert_eq!(result.unwrap(), op.expected(), "{target}: {op:?}");
        }
        let reply = raw_call(&target, &queue, RawRequest::json("sqrt", r#"{"x": 4}"#)).await;
        assert_eq!(
            reply.json()["fault"]["code"],
            "unknown_method",
            "{target}: Python server fault"
        );
        let _ = server.kill().await;
        target.delete_queues(&[&queue]).await;
    }
}
