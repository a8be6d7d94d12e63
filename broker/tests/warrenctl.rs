//! The `warrenctl` binary as a script runs it: against a broker started here (management API
//! on an ephemeral port) and, where `WARREN_TEST_MGMT_URL` names one, the reference RabbitMQ,
//! with the same commands and exit codes.

use serde_json::Value;
use std::process::{Command, Output};

/// Runs warrenctl with `--url url` and `args`.
fn ctl(url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_warrenctl"))
        .args(["--url", url])
        .args(args)
        .env_remove("WARRENCTL_USER")
        .env_remove("WARRENCTL_PASSWORD")
        .output()
        .expect("warrenctl runs")
}

fn ok(url: &str, args: &[&str]) -> String {
    let out = ctl(url, args);
    assert!(
        out.status.success(),
        "{url}: warrenctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn json(url: &str, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    serde_json::from_str(&ok(url, &all)).expect("--json prints JSON")
}

fn unique(what: &str) -> String {
    format!("warren-test.{what}.{}", uuid::Uuid::new_v4())
}

/// The commands a script relies on, on the broker behind `url`.
fn script(url: &str) {
    let q = unique("ctl-q");
    let x = unique("ctl-x");
    let status = ok(url, &["status"]);
    assert!(status.contains("RabbitMQ API version"), "{url}: {status}");
    ok(url, &["declare", "queue", &q, "--durable", "false"]);
    ok(
        url,
        &[
            "declare",
            "exchange",
            &x,
            "--type",
            "fanout",
            "--durable",
            "false",
        ],
    );
    ok(
        url,
        &["declare", "binding", "--source", &x, "--destination", &q],
    );
    let queues = json(url, &["list", "queues"]);
    assert!(
        queues
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["name"] == q.as_str() && v["durable"] == false),
        "{url}: {queues}"
    );
    let table = ok(url, &["list", "bindings"]);
    assert!(
        table.lines().next().unwrap().starts_with("vhost"),
        "{url}: {table}"
    );
    assert!(
        table.lines().any(|l| l.contains(&x) && l.contains(&q)),
        "{url}: {table}"
    );
    ok(url, &["purge", &q]);
    let defs = json(url, &["export"]);
    assert!(
        defs["queues"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["name"] == q.as_str()),
        "{url}"
    );
    ok(url, &["delete", "queue", &q]);
    ok(url, &["delete", "exchange", &x]);
    // Exit codes: 1 refused (404), 4 bad credentials, 3 unreachable, 2 usage.
    assert_eq!(
        ctl(url, &["delete", "queue", &q]).status.code(),
        Some(1),
        "{url}"
    );
    assert_eq!(
        ctl(url, &["-p", "wrong", "status"]).status.code(),
        Some(4),
        "{url}"
    );
    assert_eq!(
        ctl("http://127.0.0.1:1", &["status"]).status.code(),
        Some(3)
    );
    assert_eq!(
        ctl(url, &["list", "nonsense"]).status.code(),
        Some(2),
        "{url}"
    );
    let conns = json(url, &["list", "connections"]);
    assert!(conns.is_array(), "{url}: {conns}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warrenctl_against_warren() {
    let any = "127.0.0.1:0".parse().unwrap();
    let broker = warren_broker::Broker::builder()
        .listen(any)
        .management(any)
        .start()
        .await
        .expect("broker starts");
    let url = format!("http://{}", broker.management_addr().unwrap());
    tokio::task::spawn_blocking(move || script(&url))
        .await
        .unwrap();
    broker.shutdown().await;
}

#[test]
fn warrenctl_against_rabbitmq() {
    match std::env::var("WARREN_TEST_MGMT_URL")
        .ok()
        .filter(|v| !v.is_empty())
    {
        Some(url) => script(&url),
        None => println!("skipped rabbitmq variant: WARREN_TEST_MGMT_URL not set"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_connection_reaches_the_client() {
    use lapin::{Connection, ConnectionProperties};
    let any = "127.0.0.1:0".parse().unwrap();
    let broker = warren_broker::Broker::builder()
        .listen(any)
        .management(any)
        .start()
        .await
        .expect("broker starts");
    let url = format!("http://{}", broker.management_addr().unwrap());
    let conn = Connection::connect(&broker.amqp_url(), ConnectionProperties::default())
        .await
        .unwrap();
    let u = url.clone();
    let name = tokio::task::spawn_blocking(move || {
        let conns = json(&u, &["list", "connections"]);
        conns[0]["name"].as_str().unwrap().to_string()
    })
    .await
    .unwrap();
    let u = url.clone();
    tokio::task::spawn_blocking(move || {
        ok(&u, &["close-connection", &name, "--reason", "maintenance"])
    })
    .await
    .unwrap();
    let mut events = Box::pin(conn.events_listener());
    use futures::StreamExt;
    let reason = loop {
        match events.next().await {
            Some(lapin::Event::Error(e)) => break e.to_string(),
            Some(_) => {}
            None => panic!("no close"),
        }
    };
    assert!(
        reason.contains("CONNECTION_FORCED - maintenance"),
        "{reason}"
    );
    broker.shutdown().await;
}
