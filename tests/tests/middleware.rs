//! Middleware on both brokers: a server layer checking a token set by a client layer (a typed
//! `unauthenticated` fault without it), and per-method call counts, errors and latency exported
//! through the `metrics` facade, read back from metrics-util's debugging recorder.
//!
//! The recorder is process-global, so this binary installs it once; every series is labelled
//! with its server's unique queue, which keeps the brokers' and the tests' numbers apart.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard, OnceLock};

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use warren_examples::auth::{bearer, RequireTokenLayer};
use warren_examples::{Calc, CalcError, CalculatorServer};
use warren_rpc::middleware::{LoggingLayer, MetricsLayer};
use warren_rpc::{Client, Error, FaultCode, Server};
use warren_tests::rpc_support::{calculator, serve};
use warren_tests::{compat_test, WAIT};

fn snapshotter() -> &'static Snapshotter {
    static SNAPSHOTTER: OnceLock<Snapshotter> = OnceLock::new();
    SNAPSHOTTER.get_or_init(|| {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        recorder
            .install()
            .expect("the only recorder of this binary");
        snapshotter
    })
}

/// One series: its name and labels.
type Series = (String, BTreeMap<String, String>);

/// Everything recorded so far. A snapshot of the debugging recorder resets its counters and
/// drains its histograms, so every snapshot is added up here: counters to their totals,
/// histograms to their sample counts.
fn recorded() -> MutexGuard<'static, HashMap<Series, u64>> {
    static TOTALS: OnceLock<Mutex<HashMap<Series, u64>>> = OnceLock::new();
    let mut totals = TOTALS
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    for (key, _, _, value) in snapshotter().snapshot().into_vec() {
        let labels = key
            .key()
            .labels()
            .map(|l| (l.key().to_owned(), l.value().to_owned()))
            .collect();
        let n = match value {
            DebugValue::Counter(n) => n,
            DebugValue::Histogram(samples) => samples.len() as u64,
            DebugValue::Gauge(_) => 0,
        };
        *totals
            .entry((key.key().name().to_owned(), labels))
            .or_default() += n;
    }
    totals
}

/// The total of counter (or the sample count of histogram) `name` over the series whose labels
/// include every pair of `labels`.
fn counter(name: &str, labels: &[(&str, &str)]) -> u64 {
    recorded()
        .iter()
        .filter(|((series, series_labels), _)| {
            series == name
                && labels
                    .iter()
                    .all(|(k, v)| series_labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, n)| n)
        .sum()
}

/// Whether histogram `name` with these labels has samples.
fn has_histogram(name: &str, labels: &[(&str, &str)]) -> bool {
    counter(name, labels) > 0
}

compat_test! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn auth_layer_and_metrics_on_both_sides(target: Target) {
        snapshotter();
        let builder = Server::builder()
            .layer(LoggingLayer)
            .layer(MetricsLayer)
            .layer(RequireTokenLayer::new("s3cret"));
        let (server, queue) = serve(&target, builder, CalculatorServer::new(Calc::new())).await;
        let q = queue.as_str();

        let trusted = Client::builder()
            .timeout(WAIT)
            .layer(LoggingLayer)
            .layer(MetricsLayer)
            .layer(bearer("s3cret"))
            .connect(target.url())
            .await
            .unwrap();
        let calc = calculator(&trusted, q);
        for i in 0..3 {
            assert_eq!(calc.add(i, i).await.unwrap(), 2 * i, "{target}");
        }
        assert_eq!(
            calc.div(1, 0).await.unwrap(),
            Err(CalcError::DivisionByZero)
        );
        // Reserved methods pass through the layers too.
        assert_eq!(trusted.ping(q).await.unwrap().service, queue, "{target}");

        for (name, client) in [
            (
                "no token",
                Client::builder()
                    .timeout(WAIT)
                    .connect(target.url())
                    .await
                    .unwrap(),
            ),
            (
                "wrong token",
                Client::builder()
                    .timeout(WAIT)
                    .layer(bearer("guess"))
                    .connect(target.url())
                    .await
                    .unwrap(),
            ),
        ] {
            let err = calculator(&client, q).add(2, 3).await.unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::Fault {
                        code: FaultCode::Unauthenticated,
                        ..
                    }
                ),
                "{target}: {name}: {err:?}"
            );
            assert!(!err.is_retryable(), "{target}: {name}");
            let err = client.describe(q).await.unwrap_err();
            assert_eq!(
                err.fault_code(),
                Some(&FaultCode::Unauthenticated),
                "{target}"
            );
            client.close().await;
        }

        let server_add = [("service", q), ("method", "add")];
        assert_eq!(
            counter("warren_rpc_server_calls_total", &server_add),
            5,
            "{target}"
        );
        assert_eq!(
            counter(
                "warren_rpc_server_errors_total",
                &[
                    ("service", q),
                    ("method", "add"),
                    ("kind", "unauthenticated")
                ]
            ),
            2,
            "{target}: the rejected calls, by kind"
        );
        assert_eq!(
            counter(
                "warren_rpc_server_errors_total",
                &[("service", q), ("method", "div"), ("kind", "err")]
            ),
            1,
            "{target}: an application error"
        );
        assert_eq!(
            counter(
                "warren_rpc_server_calls_total",
                &[("service", q), ("method", "$ping")]
            ),
            1,
            "{target}"
        );
        assert!(
            has_histogram("warren_rpc_server_duration_seconds", &server_add),
            "{target}"
        );
        assert_eq!(
            counter(
                "warren_rpc_client_calls_total",
                &[("service", q), ("method", "add")]
            ),
            3,
            "{target}: only the client with the metrics layer counts"
        );
        assert_eq!(
            counter(
                "warren_rpc_client_errors_total",
                &[("service", q), ("method", "div"), ("kind", "err")]
            ),
            1,
            "{target}"
        );
        assert!(
            has_histogram(
                "warren_rpc_client_duration_seconds",
                &[("service", q), ("method", "add")]
            ),
            "{target}"
        );

        trusted.close().await;
        server.shutdown().await;
        target.delete_queues(&[q]).await;
    }
}

compat_test! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn client_metrics_count_framework_errors_by_kind(target: Target) {
        snapshotter();
        let client = Client::builder()
            .timeout(WAIT)
            .layer(MetricsLayer)
            .connect(target.url())
            .await
            .unwrap();
        let nobody = warren_tests::unique("nobody");
        let err = calculator(&client, &nobody).add(1, 2).await.unwrap_err();
        assert!(
            matches!(err, Error::ServiceUnavailable { .. }),
            "{target}: {err:?}"
        );
        assert_eq!(
            counter(
                "warren_rpc_client_errors_total",
                &[("service", &nobody), ("kind", "service_unavailable")]
            ),
            1,
            "{target}"
        );
        client.close().await;
    }
}
