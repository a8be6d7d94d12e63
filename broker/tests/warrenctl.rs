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
        .env_remove("WARRENCTL_CACERT")
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
    // Listen before the close: lapin does not replay an event to a listener made after it.
    let mut events = Box::pin(conn.events_listener());
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
    use futures::StreamExt;
    let closed = async {
        loop {
            match events.next().await {
                Some(lapin::Event::Error(e)) => break e.to_string(),
                Some(_) => {}
                None => panic!("no close"),
            }
        }
    };
    let reason = tokio::time::timeout(std::time::Duration::from_secs(30), closed)
        .await
        .expect("the client hears the close within 30 s");
    assert!(
        reason.contains("CONNECTION_FORCED - maintenance"),
        "{reason}"
    );
    broker.shutdown().await;
}

/// A CA and a server certificate for localhost it signed, made here (rcgen): the CA PEM, the
/// server's certificate and key PEM.
fn test_certificates() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let ca_key = KeyPair::generate().expect("CA key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params
        .distinguished_name
        .push(DnType::CommonName, "warrenctl-test-ca");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = params.self_signed(&ca_key).expect("CA");
    let key = KeyPair::generate().expect("server key");
    let mut params = CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let server = params
        .signed_by(&key, &ca, &ca_key)
        .expect("server certificate");
    (ca.pem(), server.pem(), key.serialize_pem())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warrenctl_over_https_with_a_private_ca() {
    let (ca, cert, key) = test_certificates();
    let dir = std::env::temp_dir().join(unique("warrenctl-https"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, &ca).expect("CA file");
    let any = "127.0.0.1:0".parse().unwrap();
    let broker = warren_broker::Broker::builder()
        .listen(any)
        .management(any)
        .management_tls(warren_broker::TlsConfig::new(cert, key))
        .start()
        .await
        .expect("broker starts");
    let url = format!(
        "https://localhost:{}",
        broker.management_addr().unwrap().port()
    );
    tokio::task::spawn_blocking(move || {
        let ca = ca_file.to_str().expect("path");
        // --cacert: the whole script over HTTPS.
        let status = ok(&url, &["--cacert", ca, "status"]);
        assert!(status.contains("RabbitMQ API version"), "{status}");
        let queues = json(&url, &["--cacert", ca, "list", "queues"]);
        assert!(queues.is_array(), "{queues}");
        // The same CA from the environment.
        let out = Command::new(env!("CARGO_BIN_EXE_warrenctl"))
            .args(["--url", &url, "status"])
            .env("WARRENCTL_CACERT", ca)
            .output()
            .expect("warrenctl runs");
        assert!(
            out.status.success(),
            "WARRENCTL_CACERT: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Without the CA the server is not trusted: exit 3, cannot reach the server.
        let out = ctl(&url, &["status"]);
        assert_eq!(out.status.code(), Some(3), "{out:?}");
        // A --cacert that is no certificate is bad usage: exit 2.
        let out = ctl(&url, &["--cacert", "/dev/null", "status"]);
        assert_eq!(out.status.code(), Some(2), "{out:?}");
    })
    .await
    .unwrap();
    broker.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
