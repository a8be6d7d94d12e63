//! The `warren` binary against running calculator servers, on the bundled broker and (with
//! `WARREN_TEST_AMQP_URL`) on RabbitMQ: every command, readable and `--json`, and the exit
//! status and typed error of failures.

use std::process::Output;

use warren_examples::auth::RequireTokenLayer;
use warren_examples::{Calc, CalculatorServer};
use warren_rpc::Server;
use warren_tests::{targets, unique, Target};

/// Runs `warren --url <target> ARGS...`.
async fn warren(target: &Target, args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_warren"))
        .arg("--url")
        .arg(target.url())
        .arg("--wait-ms")
        .arg("1500")
        .args(args)
        .env_remove("WARREN_URL")
        .output()
        .await
        .expect("the warren binary runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts success and returns stdout.
fn ok(target: &Target, what: &str, output: &Output) -> String {
    assert!(
        output.status.success(),
        "{target}: {what} failed: {}{}",
        stdout(output),
        stderr(output)
    );
    stdout(output)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_against_two_calculator_replicas() {
    for target in targets().await {
        let queue = unique("calculator");
        let mut servers = Vec::new();
        for _ in 0..2 {
            servers.push(
                Server::builder()
                    .queue_name(queue.clone())
                    .serve(target.url(), CalculatorServer::new(Calc::new()))
                    .await
                    .unwrap_or_else(|e| panic!("{target}: server: {e}")),
            );
        }
        let q = queue.as_str();

        let out = ok(
            &target,
            "call",
            &warren(&target, &["call", q, "add", r#"{"a":2,"b":3}"#]).await,
        );
        assert_eq!(out, "5\n", "{target}: call prints the result");
        let out = ok(
            &target,
            "call --json",
            &warren(
                &target,
                &["--json", "call", q, "div", r#"{"a": 84, "b": 2}"#],
            )
            .await,
        );
        assert_eq!(out.trim(), r#"{"ok":42}"#, "{target}");

        // A streaming method, called by a peer that does not ask for a stream: one reply.
        let out = ok(
            &target,
            "call fibonacci",
            &warren(&target, &["--json", "call", q, "fibonacci", r#"{"n": 6}"#]).await,
        );
        assert_eq!(out.trim(), r#"{"ok":[0,1,1,2,3,5]}"#, "{target}");

        let out = ok(
            &target,
            "describe",
            &warren(&target, &["describe", q]).await,
        );
        for line in [
            "add(a: i64, b: i64) -> i64  [idempotent]",
            "sub(a: i64, b: i64) -> i64  [idempotent]",
            "mul(a: i64, b: i64) -> i64  [idempotent]",
            "div(a: i64, b: i64) -> Result<i64, CalcError>  [idempotent]",
            "memory_add(x: i64) -> i64",
            "memory_recall() -> i64  [idempotent]",
            "fibonacci(n: u32) -> Stream<u64>",
        ] {
            assert!(
                out.contains(line),
                "{target}: describe lacks `{line}`:\n{out}"
            );
        }
        let out = ok(
            &target,
            "describe --json",
            &warren(&target, &["--json", "describe", q]).await,
        );
        let json: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            json["methods"].as_array().map(Vec::len),
            Some(7),
            "{target}"
        );

        let out = ok(&target, "ping", &warren(&target, &["ping", q]).await);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2, "{target}: one line per replica:\n{out}");
        assert!(lines
            .iter()
            .all(|l| l.starts_with(q) && l.contains("instance=")));
        assert_ne!(lines[0], lines[1], "{target}");

        let out = ok(&target, "services", &warren(&target, &["services"]).await);
        assert!(
            out.lines().any(|l| l == format!("{q}  2 replicas")),
            "{target}: services lists {q}:\n{out}"
        );

        let out = ok(
            &target,
            "bench",
            &warren(
                &target,
                &[
                    "--json",
                    "bench",
                    q,
                    "add",
                    r#"{"a":2,"b":3}"#,
                    "--calls",
                    "200",
                    "--concurrency",
                    "8",
                ],
            )
            .await,
        );
        let report: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(report["calls"], 200, "{target}: {report}");
        assert_eq!(
            report["errors"],
            serde_json::json!({}),
            "{target}: {report}"
        );

        let out = ok(
            &target,
            "stats",
            &warren(&target, &["--json", "stats", q]).await,
        );
        let stats: serde_json::Value = serde_json::from_str(&out).unwrap();
        let adds: u64 = stats
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["methods"]["add"]["calls"].as_u64().unwrap())
            .sum();
        assert_eq!(
            adds, 202,
            "{target}: 1 call, bench's probe and 200 bench calls"
        );

        // Failures: exit status 1 and the typed error.
        for (args, kind) in [
            (vec!["call", q, "div", r#"{"a":1,"b":0}"#], "(err)"),
            (vec!["call", q, "pow", "{}"], "(fault:unknown_method)"),
            (vec!["call", q, "add", r#"{"a":1}"#], "(fault:bad_request)"),
            (vec!["call", q, "add", "[1, 2]"], "(usage)"),
            (
                vec!["call", "warren-test.nobody", "add", "{}"],
                "(service_unavailable)",
            ),
            (vec!["ping", "warren-test.nobody"], "(service_unavailable)"),
        ] {
            let output = warren(&target, &args).await;
            assert_eq!(output.status.code(), Some(1), "{target}: {args:?}");
            assert!(
                stderr(&output).starts_with(&format!("error {kind}")),
                "{target}: {args:?}: {}",
                stderr(&output)
            );
        }
        let output = warren(&target, &["--json", "call", q, "div", r#"{"a":1,"b":0}"#]).await;
        assert_eq!(output.status.code(), Some(1), "{target}");
        let error: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
        assert_eq!(error["error"]["kind"], "err", "{target}");
        assert_eq!(error["error"]["value"], "DivisionByZero", "{target}");

        for server in servers {
            server.shutdown().await;
        }
        target.delete_queues(&[q]).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_carry_a_token_to_a_server_that_checks_it() {
    for target in targets().await {
        let queue = unique("calculator");
        let server = Server::builder()
            .queue_name(queue.clone())
            .layer(RequireTokenLayer::new("s3cret"))
            .serve(target.url(), CalculatorServer::new(Calc::new()))
            .await
            .unwrap();
        let q = queue.as_str();
        let output = warren(&target, &["call", q, "add", r#"{"a":2,"b":3}"#]).await;
        assert_eq!(output.status.code(), Some(1), "{target}");
        assert!(
            stderr(&output).starts_with("error (fault:unauthenticated)"),
            "{target}: {}",
            stderr(&output)
        );
        let output = warren(
            &target,
            &[
                "--header",
                "authorization=Bearer s3cret",
                "call",
                q,
                "add",
                r#"{"a":2,"b":3}"#,
            ],
        )
        .await;
        assert_eq!(ok(&target, "call with a token", &output), "5\n", "{target}");
        server.shutdown().await;
        target.delete_queues(&[q]).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_comes_from_the_environment_and_bad_urls_fail() {
    for target in targets().await {
        let queue = unique("calculator");
        let server = Server::builder()
            .queue_name(queue.clone())
            .serve(target.url(), CalculatorServer::new(Calc::new()))
            .await
            .unwrap();
        let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_warren"))
            .args(["call", &queue, "mul", r#"{"a":6,"b":7}"#])
            .env("WARREN_URL", target.url())
            .output()
            .await
            .unwrap();
        assert_eq!(ok(&target, "WARREN_URL", &output), "42\n", "{target}");

        // The first URL refuses connections; the second is used.
        let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_warren"))
            .args([
                "--url",
                "amqp://guest:guest@127.0.0.1:1/%2f",
                "--url",
                target.url(),
            ])
            .args(["call", &queue, "sub", r#"{"a":6,"b":7}"#])
            .env_remove("WARREN_URL")
            .output()
            .await
            .unwrap();
        assert_eq!(ok(&target, "two URLs", &output), "-1\n", "{target}");
        server.shutdown().await;
        target.delete_queues(&[&queue]).await;
    }
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_warren"))
        .args(["--url", "amqp://guest:guest@127.0.0.1:1/%2f", "services"])
        .env_remove("WARREN_URL")
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).starts_with("error (connection)"),
        "{}",
        stderr(&output)
    );
}
