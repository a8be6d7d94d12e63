//! One OpenTelemetry trace across a client and a server (warren-rpc's `opentelemetry` feature),
//! on the bundled broker and, when `WARREN_TEST_AMQP_URL` is set, on RabbitMQ.
//!
//! The test installs a `tracing` subscriber with an OpenTelemetry layer exporting to memory,
//! makes a call inside a span of its own, and checks the exported spans: the client's
//! `warren.call` span is a child of the caller's span, the server's `warren.handle` span a child
//! of `warren.call` (the same trace id, the call's span id as parent), and the handler's
//! `Context::trace` shows the handler span's own ids. The subscriber is global, so this binary
//! holds this one test.

use std::time::Instant;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tracing::Instrument;
use tracing_subscriber::layer::SubscriberExt;
use warren_rpc::Server;
use warren_tests::rpc_support::{client, probe, serve_probe};
use warren_tests::{targets, WAIT};

/// The first exported span that `matches`, waiting for it to be exported (the server closes
/// its span after it acked the request, maybe after the caller has its reply).
async fn exported(
    exporter: &InMemorySpanExporter,
    what: &str,
    matches: impl Fn(&SpanData) -> bool,
) -> SpanData {
    let until = Instant::now() + WAIT;
    loop {
        let spans = exporter.get_finished_spans().expect("the exporter works");
        if let Some(span) = spans.into_iter().find(|span| matches(span)) {
            return span;
        }
        assert!(Instant::now() < until, "{what} was not exported");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_spans_client_and_server() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("warren-tests")));
    tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");

    for target in targets().await {
        let (server, queue) = serve_probe(&target, Server::builder()).await;
        let client = client(&target).await;
        let caller = tracing::info_span!("caller");
        let seen = probe(&client, &queue)
            .trace()
            .instrument(caller.clone())
            .await
            .unwrap_or_else(|e| panic!("{target}: {e}"));
        drop(caller);

        // The handler's span, by the span id its context showed.
        let handle = exported(&exporter, "the handler's span", |s| {
            s.name == "warren.handle" && s.span_context.span_id().to_string() == seen.span_id
        })
        .await;
        let call = exported(&exporter, "the call's span", |s| {
            s.name == "warren.call" && s.span_context.trace_id() == handle.span_context.trace_id()
        })
        .await;
        let caller = exported(&exporter, "the caller's span", |s| {
            s.name == "caller" && s.span_context.trace_id() == handle.span_context.trace_id()
        })
        .await;

        assert_eq!(
            call.parent_span_id,
            caller.span_context.span_id(),
            "{target}: warren.call is a child of the caller's span"
        );
        assert_eq!(
            handle.span_context.trace_id(),
            call.span_context.trace_id(),
            "{target}: one trace"
        );
        assert_eq!(
            handle.parent_span_id,
            call.span_context.span_id(),
            "{target}: warren.handle is a child of warren.call"
        );
        assert!(handle.parent_span_is_remote, "{target}");
        assert_eq!(
            seen.trace_id,
            handle.span_context.trace_id().to_string(),
            "{target}: the handler's context shows the trace"
        );
        assert_eq!(
            seen.span_id,
            handle.span_context.span_id().to_string(),
            "{target}: the handler's context shows its own span"
        );
        assert_eq!(
            seen.parent_span_id,
            Some(call.span_context.span_id().to_string()),
            "{target}"
        );
        server.shutdown().await;
        target.delete_queues(&[&queue]).await;
    }
    let _ = provider.shutdown();
}
