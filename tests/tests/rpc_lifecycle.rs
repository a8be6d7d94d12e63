//! End-to-end tests of a call's life beyond one request and one reply: its trace crossing into
//! the server, cancellation by the caller, telling an expired call from one that ran out of
//! time, and streamed replies with flow control. Each case runs on the bundled broker and, when
//! `WARREN_TEST_AMQP_URL` is set, on RabbitMQ.
//!
//! Waits are bounded (`WAIT`) polls for something to happen, or a short quiet time (`QUIET`) to
//! be confident that something does not; no assertion is about speed.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use warren_rpc::{CallOptions, CancelToken, Client, Codec, Error, FaultCode, Server, TraceContext};
use warren_tests::proxy::Proxy;
use warren_tests::rpc_support::{
    client, probe, raw_call, serve_probe, serve_shared_probe, ProbeEffects, ProbeImpl, ProbeServer,
    RawRequest,
};
use warren_tests::{compat_test, Target, QUIET, WAIT};

/// Slack allowed past a deadline for scheduling on a loaded CI machine.
const SLACK: Duration = Duration::from_secs(2);

async fn cleanup(target: &Target, server: Server, queue: &str) {
    server.shutdown().await;
    target.delete_queues(&[queue]).await;
}

/// Waits (up to [`WAIT`]) until `counter` reaches `at_least`; panics with `what` otherwise.
async fn wait_for(counter: &AtomicU64, at_least: u64, what: &str) {
    let until = Instant::now() + WAIT;
    while ProbeEffects::get(counter) < at_least {
        assert!(
            Instant::now() < until,
            "{what}: still {}",
            ProbeEffects::get(counter)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until `counter` stops changing for [`QUIET`]; returns its value.
async fn settled(counter: &AtomicU64) -> u64 {
    let mut last = ProbeEffects::get(counter);
    loop {
        tokio::time::sleep(QUIET).await;
        let now = ProbeEffects::get(counter);
        if now == last {
            return now;
        }
        last = now;
    }
}

compat_test! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_handler_continues_the_callers_trace(target: Target) {
        let (inner, inner_queue) = serve_probe(&target, Server::builder()).await;
        let client = client(&target).await;
        let (outer, outer_queue) = serve(
            &target,
            ProbeServer::new(ProbeImpl::with_relay(probe(&client, &inner_queue))),
        )
        .await;

        // A trace given by the caller: the handler's span is its child.
        let parent = TraceContext::new_root().with_tracestate(Some("warren=test"));
        let seen = probe(&client, &outer_queue)
            .with_options(
                CallOptions::new()
                    .service(outer_queue.as_str())
                    .trace(parent.clone()),
            )
            .trace()
            .await
            .unwrap();
        assert_eq!(seen.trace_id, parent.trace_id().to_string(), "{target}");
        assert_eq!(
            seen.parent_span_id,
            Some(parent.span_id().to_string()),
            "{target}: the caller's span is the handler's parent"
        );
        assert_ne!(seen.span_id, parent.span_id().to_string(), "{target}");

        // Without one, each call starts a trace, and still names its span as the parent.
        let calls = probe(&client, &outer_queue);
        let (a, b) = (calls.trace().await.unwrap(), calls.trace().await.unwrap());
        assert_ne!(a.trace_id, b.trace_id, "{target}: a new trace per call");
        assert!(a.parent_span_id.is_some(), "{target}");

        // A call made by a handler continues the handler's trace.
        let (outer_seen, inner_seen) = calls.relay_trace().await.unwrap().unwrap();
        assert_eq!(outer_seen.trace_id, inner_seen.trace_id, "{target}");
        assert!(inner_seen.parent_span_id.is_some(), "{target}");
        assert_ne!(inner_seen.span_id, outer_seen.span_id, "{target}");

        cleanup(&target, outer, &outer_queue).await;
        cleanup(&target, inner, &inner_queue).await;
    }
}

async fn serve(target: &Target, service: ProbeServer<ProbeImpl>) -> (Server, String) {
    warren_tests::rpc_support::serve(target, Server::builder(), service).await
}

compat_test! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dropping_a_call_stops_its_handler(target: Target) {
        let state = Arc::new(ProbeImpl::default());
        let effects = state.effects();
        let (server, queue) = serve_shared_probe(&target, Server::builder(), state).await;
        let client = client(&target).await;
        let probe = probe(&client, &queue).with_options(
            CallOptions::new()
                .service(queue.as_str())
                .timeout(Duration::from_secs(60)),
        );

        // The caller gives up on a long call once it has started ticking.
        tokio::select! {
            result = probe.tick(100_000, 5) => panic!("{target}: the call ended: {result:?}"),
            () = wait_for(&effects.ticks, 3, "the handler ticks") => {}
        }
        wait_for(
            &effects.noticed_cancel,
            1,
            "the handler hears of the cancel",
        )
        .await;
        let ticks = settled(&effects.ticks).await;
        assert!(ticks < 100_000, "{target}: the handler ran to its end");
        tokio::time::sleep(QUIET).await;
        assert_eq!(
            ProbeEffects::get(&effects.ticks),
            ticks,
            "{target}: side effects go on after the cancel"
        );
        assert_eq!(client.pending_calls(), 0, "{target}");

        // The same with an explicit token: the caller gets `Cancelled`.
        let token = CancelToken::new();
        let cancelling = probe.with_options(
            CallOptions::new()
                .service(queue.as_str())
                .timeout(Duration::from_secs(60))
                .cancel_token(token.clone()),
        );
        let call = tokio::spawn(async move { cancelling.tick(100_000, 5).await });
        wait_for(&effects.ticks, ticks + 3, "the second handler ticks").await;
        token.cancel();
        let result = tokio::time::timeout(WAIT, call).await.unwrap().unwrap();
        assert!(
            matches!(result, Err(Error::Cancelled)),
            "{target}: {result:?}"
        );
        wait_for(&effects.noticed_cancel, 2, "the second handler hears of it").await;
        let after = settled(&effects.ticks).await;
        tokio::time::sleep(QUIET).await;
        assert_eq!(ProbeEffects::get(&effects.ticks), after, "{target}");

        // The server still serves.
        assert_eq!(probe.tick(2, 1).await.unwrap(), 2, "{target}");
        cleanup(&target, server, &queue).await;
    }
}

compat_test! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_call_cancelled_before_a_server_took_it_never_runs(target: Target) {
        // One slot, kept busy, so the next call waits in the queue.
        let (server, queue) = serve_probe(&target, Server::builder().concurrency(1)).await;
        let client = client(&target).await;
        let probe = probe(&client, &queue);
        let busy = probe.sleep(800);
        let token = CancelToken::new();
        let queued = async {
            let cancellable = probe.with_options(
                CallOptions::new()
                    .service(queue.as_str())
                    .timeout(Duration::from_secs(30))
                    .cancel_token(token.clone()),
            );
            let waiting = cancellable.count_slowly(0);
            tokio::select! {
                result = waiting => result,
                () = async {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    token.cancel();
                    futures::future::pending::<()>().await;
                } => unreachable!(),
            }
        };
        let (busy, queued) = tokio::join!(busy, queued);
        assert_eq!(busy.unwrap(), 800, "{target}");
        assert!(
            matches!(queued, Err(Error::Cancelled)),
            "{target}: {queued:?}"
        );
        // The server took the cancelled request after the busy one, and skipped it.
        assert_eq!(
            probe.count_slowly(0).await.unwrap(),
            1,
            "{target}: the cancelled call ran"
        );
        cleanup(&target, server, &queue).await;
    }
}

compat_test! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn expired_calls_are_told_from_calls_that_ran_out_of_time(target: Target) {
        let (server, queue) = serve_probe(&target, Server::builder().concurrency(1)).await;
        let client = client(&target).await;
        let probe = probe(&client, &queue);
        let budget = Duration::from_millis(300);

        // Started, then out of time.
        let asked = Instant::now();
        let ran = probe.with_timeout(budget).sleep(1_000).await;
        assert!(
            matches!(ran, Err(Error::DeadlineExceeded { timeout }) if timeout <= budget),
            "{target}: {ran:?}"
        );
        assert!(asked.elapsed() < budget + SLACK, "{target}");
        assert!(!ran.unwrap_err().is_retryable(), "{target}");

        // Never started: the only slot is busy until after the deadline.
        let busy = probe.sleep(800);
        let queued = async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            probe.with_timeout(budget).count_slowly(0).await
        };
        let (busy, queued) = tokio::join!(busy, queued);
        assert_eq!(busy.unwrap(), 800, "{target}");
        assert!(
            matches!(queued, Err(Error::Expired { .. })),
            "{target}: {queued:?}"
        );
        assert!(queued.unwrap_err().is_retryable(), "{target}: it never ran");
        assert_eq!(probe.count_slowly(0).await.unwrap(), 1, "{target}");
        cleanup(&target, server, &queue).await;
    }
}

compat_test! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn streams_deliver_every_item_in_order_then_end(target: Target) {
        let (server, queue) = serve_probe(&target, Server::builder()).await;
        let client = client(&target).await;
        for codec in [Codec::MsgPack, Codec::Json] {
            for window in [1, 3, 32] {
                let numbers = probe(&client, &queue).with_options(
                    CallOptions::new()
                        .service(queue.as_str())
                        .codec(codec)
                        .stream_window(window),
                );
                let items: Vec<u32> = numbers
                    .numbers(100, 0)
                    .map(|item| item.unwrap_or_else(|e| panic!("{target}/{codec}: {e}")))
                    .collect()
                    .await;
                assert_eq!(
                    items,
                    (0..100).collect::<Vec<_>>(),
                    "{target}/{codec}/{window}"
                );
            }
        }
        let empty: Vec<_> = probe(&client, &queue).numbers(0, 0).collect().await;
        assert!(empty.is_empty(), "{target}: {empty:?}");

        // A stream that fails ends with its error, after the items before it.
        let mut broken = probe(&client, &queue).numbers_then_panic(3);
        for expected in 0..3 {
            assert_eq!(broken.next().await.unwrap().unwrap(), expected, "{target}");
        }
        match broken.next().await {
            Some(Err(Error::Fault { code, .. })) => {
                assert_eq!(code, FaultCode::HandlerPanicked, "{target}")
            }
            other => panic!("{target}: expected the fault, got {other:?}"),
        }
        assert!(
            broken.next().await.is_none(),
            "{target}: nothing after the error"
        );
        assert!(
            broken.next().await.is_none(),
            "{target}: nor when polled again"
        );

        // A caller that knows nothing of streams gets every item in one reply.
        let reply = raw_call(
            &target,
            &queue,
            RawRequest::json("numbers", r#"{"n": 4, "every_ms": 0}"#),
        )
        .await;
        assert_eq!(
            reply.json(),
            serde_json::json!({"ok": [0, 1, 2, 3]}),
            "{target}"
        );
        assert_eq!(client.pending_calls(), 0, "{target}");
        cleanup(&target, server, &queue).await;
    }
}

compat_test! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_slow_caller_holds_back_the_producer(target: Target) {
        const WINDOW: u32 = 4;
        let state = Arc::new(ProbeImpl::default());
        let effects = state.effects();
        let (server, queue) = serve_shared_probe(&target, Server::builder(), state).await;
        let client = client(&target).await;
        let numbers = probe(&client, &queue).with_options(
            CallOptions::new()
                .service(queue.as_str())
                .stream_window(WINDOW),
        );
        let mut stream = numbers.numbers(1_000, 0);
        for expected in 0..2 {
            assert_eq!(stream.next().await.unwrap().unwrap(), expected, "{target}");
        }
        // The caller pauses: the server produces no more than the credit it was given.
        let produced = settled(&effects.produced).await;
        assert!(
            produced <= u64::from(WINDOW) + 2,
            "{target}: {produced} produced for 2 taken with a window of {WINDOW}"
        );
        // Taking the rest refills the credit as it goes.
        let mut next = 2;
        while let Some(item) = stream.next().await {
            assert_eq!(item.unwrap(), next, "{target}");
            next += 1;
        }
        assert_eq!(next, 1_000, "{target}");
        cleanup(&target, server, &queue).await;
    }
}

compat_test! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dropping_a_stream_or_its_deadline_stops_the_server_side(target: Target) {
        let state = Arc::new(ProbeImpl::default());
        let effects = state.effects();
        let (server, queue) = serve_shared_probe(&target, Server::builder(), state).await;
        let client = client(&target).await;
        let numbers = probe(&client, &queue).with_options(
            CallOptions::new()
                .service(queue.as_str())
                .timeout(Duration::from_secs(60))
                .stream_window(8),
        );

        // Dropped after three items: the server drops the handler's stream at once (without
        // the cancel it would wait for credit until the deadline, a minute away).
        let mut stream = numbers.numbers(100_000, 1);
        for _ in 0..3 {
            stream.next().await.unwrap().unwrap();
        }
        drop(stream);
        wait_for(&effects.streams_dropped, 1, "the server drops the stream").await;

        // At the deadline the caller's stream ends with DeadlineExceeded and the server's
        // stream is dropped too.
        let budget = Duration::from_millis(1_000);
        let asked = Instant::now();
        let mut stream = numbers.with_timeout(budget).numbers(100_000, 20);
        let mut received = 0;
        let error = loop {
            match stream.next().await {
                Some(Ok(_)) => received += 1,
                Some(Err(err)) => break err,
                None => panic!("{target}: the stream ended without an error"),
            }
        };
        assert!(
            matches!(error, Error::DeadlineExceeded { .. }),
            "{target}: {error:?}"
        );
        assert!(received > 0, "{target}: items came before the deadline");
        assert!(asked.elapsed() < budget + SLACK, "{target}");
        assert!(stream.next().await.is_none(), "{target}");
        wait_for(
            &effects.streams_dropped,
            2,
            "the server stops at the deadline",
        )
        .await;
        assert_eq!(client.pending_calls(), 0, "{target}");
        cleanup(&target, server, &queue).await;
    }
}

compat_test! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lost_connection_interrupts_a_stream_with_a_retryable_error(target: Target) {
        let (server, queue) = serve_probe(&target, Server::builder()).await;
        let proxy = Proxy::start(target.addr()).await;
        let client = Client::builder()
            .timeout(Duration::from_secs(30))
            .connect(&proxy.url_for(target.url()))
            .await
            .unwrap_or_else(|e| panic!("{target}: connect through the proxy: {e}"));
        let mut stream = probe(&client, &queue).numbers(100_000, 5);
        for _ in 0..2 {
            stream.next().await.unwrap().unwrap();
        }
        proxy.cut_all();
        let error = loop {
            match tokio::time::timeout(WAIT, stream.next()).await {
                Ok(Some(Ok(_))) => continue,
                Ok(Some(Err(err))) => break err,
                Ok(None) => panic!("{target}: the stream ended without an error"),
                Err(_) => panic!("{target}: the stream hung after the connection was cut"),
            }
        };
        match &error {
            Error::StreamInterrupted { received, .. } => assert!(*received >= 2, "{target}"),
            other => panic!("{target}: expected StreamInterrupted, got {other:?}"),
        }
        assert!(error.is_retryable(), "{target}");
        // Once reconnected, a new stream works.
        let again: Vec<u32> = probe(&client, &queue)
            .with_options(
                CallOptions::new()
                    .service(queue.as_str())
                    .timeout(Duration::from_secs(20)),
            )
            .numbers(3, 0)
            .map(|item| item.unwrap())
            .collect()
            .await;
        assert_eq!(again, [0, 1, 2], "{target}");
        client.close().await;
        cleanup(&target, server, &queue).await;
    }
}

compat_test! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_server_that_does_not_stream_answers_a_stream_with_one_list(target: Target) {
        use lapin::options::{BasicPublishOptions, QueueDeclareOptions};
        use lapin::types::{AMQPValue, FieldTable};
        use lapin::BasicProperties;

        // A v1 server written by hand: it replies to anything with one list.
        let queue = warren_tests::unique("v1-server");
        let (conn, ch) = target.open().await;
        ch.queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("{target}: queue.declare: {e}"));
        let mut requests = warren_tests::consume(&target, &ch, &queue, "v1", true).await;
        let server = tokio::spawn({
            let ch = ch.clone();
            async move {
                let request = requests
                    .next()
                    .await
                    .expect("a request")
                    .expect("delivered");
                let props = &request.properties;
                let headers = props.headers().clone().unwrap_or_default();
                let reply = BasicProperties::default()
                    .with_correlation_id(props.correlation_id().clone().expect("a call id"))
                    .with_content_type("application/json".into());
                ch.basic_publish(
                    "".into(),
                    props.reply_to().clone().expect("a reply queue"),
                    BasicPublishOptions::default(),
                    br#"{"ok":[7,8,9]}"#,
                    reply,
                )
                .await
                .expect("reply published");
                headers
            }
        });

        let client = client(&target).await;
        let items: Vec<u32> = probe(&client, &queue)
            .with_options(
                CallOptions::new()
                    .service(queue.as_str())
                    .codec(Codec::Json),
            )
            .numbers(3, 0)
            .map(|item| item.unwrap_or_else(|e| panic!("{target}: {e}")))
            .collect()
            .await;
        assert_eq!(items, [7, 8, 9], "{target}");

        // What the request said, on the wire.
        let headers = server.await.unwrap();
        let header = |name: &str| headers.inner().get(name).cloned();
        assert_eq!(
            header("x-warren-stream-credit"),
            Some(AMQPValue::LongLongInt(32)),
            "{target}: the default window"
        );
        assert_eq!(
            header("x-warren-notices"),
            Some(AMQPValue::LongLongInt(1)),
            "{target}"
        );
        match header("traceparent") {
            Some(AMQPValue::LongString(value)) => {
                let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
                assert!(
                    TraceContext::parse(&value, None).is_ok(),
                    "{target}: {value}"
                );
            }
            other => panic!("{target}: traceparent is {other:?}"),
        }
        target.delete_queues(&[&queue]).await;
        warren_tests::close(conn).await;
    }
}

compat_test! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn odd_additions_from_a_raw_peer_are_harmless(target: Target) {
        use lapin::options::BasicPublishOptions;
        use lapin::types::{AMQPValue, FieldTable};
        use lapin::BasicProperties;

        let (server, queue) = serve_probe(&target, Server::builder()).await;

        // Malformed trace contexts are ignored: the handler starts a trace of its own.
        for traceparent in [
            AMQPValue::LongString("nonsense".into()),
            AMQPValue::LongString("00-00000000000000000000000000000000-00f067aa0ba902b7-01".into()),
            AMQPValue::LongLongInt(7),
        ] {
            let request = RawRequest {
                headers: vec![("traceparent".into(), traceparent.clone())],
                ..RawRequest::json("trace", "{}")
            };
            let reply = raw_call(&target, &queue, request).await.json();
            assert!(reply["ok"]["trace_id"].is_string(), "{target}: {reply}");
            assert!(
                reply["ok"]["parent_span_id"].is_null(),
                "{target}: {traceparent:?} gave a parent: {reply}"
            );
        }

        // A credit far beyond anything sensible streams (it is capped, never a crash).
        let request = RawRequest {
            headers: vec![(
                "x-warren-stream-credit".into(),
                AMQPValue::LongLongInt(i64::MAX),
            )],
            ..RawRequest::json("numbers", r#"{"n": 3, "every_ms": 0}"#)
        };
        let first = raw_call(&target, &queue, request).await;
        assert_eq!(first.kind.as_deref(), Some("started"), "{target}");

        // Control messages the server cannot use are ignored.
        let (conn, ch) = target.open().await;
        let odd = [
            BasicProperties::default().with_type("cancel".into()),
            BasicProperties::default()
                .with_type("what-is-this".into())
                .with_correlation_id("x".into()),
            BasicProperties::default()
                .with_type("credit".into())
                .with_correlation_id("y".into())
                .with_headers({
                    let mut headers = FieldTable::default();
                    headers.insert("x-warren-credit".into(), AMQPValue::Boolean(true));
                    headers
                }),
        ];
        for properties in odd {
            ch.basic_publish(
                "warren.control".into(),
                queue.as_str().into(),
                BasicPublishOptions::default(),
                b"junk",
                properties,
            )
            .await
            .unwrap_or_else(|e| panic!("{target}: publish: {e}"));
        }
        warren_tests::close(conn).await;

        // The server still serves.
        let client = client(&target).await;
        assert_eq!(
            probe(&client, &queue)
                .echo("still here".into())
                .await
                .unwrap(),
            "still here",
            "{target}"
        );
        cleanup(&target, server, &queue).await;
    }
}
