//! STOMP compatibility: the scenarios of `tests/python/compat_stomp.py` (stomp.py for STOMP,
//! pika for AMQP) run against Warren's STOMP front-end and against RabbitMQ's STOMP plugin on
//! the reference node (STOMP 127.0.0.1:61614, AMQP 127.0.0.1:5673, guest/guest: started by
//! `../shared/refnode.sh start`), with the same assertions; one test per group and broker.
//! Also: a STOMP client calling a warren-rpc service (`rpc_call`), and a headless Chromium page
//! speaking STOMP over a WebSocket (`browser_web_stomp`).
//!
//! Without stomp.py or pika, or without the reference node, a variant says it was skipped,
//! unless `CI` is set, where that is a failure.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use warren_broker::Broker;

/// Where one broker's STOMP, Web-STOMP and AMQP listeners are.
#[derive(Debug, Clone)]
struct StompTarget {
    name: &'static str,
    stomp: SocketAddr,
    web_stomp: SocketAddr,
    amqp_url: String,
}

/// The Warren broker of this test binary, with STOMP and Web-STOMP on ephemeral ports, on a
/// runtime of its own that outlives each test's.
fn bundled() -> StompTarget {
    static TARGET: OnceLock<StompTarget> = OnceLock::new();
    TARGET
        .get_or_init(|| {
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("broker runtime");
                runtime.block_on(async move {
                    let any: SocketAddr = "127.0.0.1:0".parse().expect("address");
                    let broker = Broker::builder()
                        .listen(any)
                        .stomp_listen(any)
                        .web_stomp_listen(any)
                        .start()
                        .await
                        .expect("bundled broker starts");
                    let _ = tx.send(StompTarget {
                        name: "bundled",
                        stomp: broker.stomp_addr().expect("STOMP listener"),
                        web_stomp: broker.web_stomp_addr().expect("Web-STOMP listener"),
                        amqp_url: broker.amqp_url(),
                    });
                    std::future::pending::<()>().await;
                });
            });
            rx.recv().expect("bundled broker address")
        })
        .clone()
}

/// The reference node, or why it is skipped.
fn reference() -> Result<StompTarget, String> {
    let stomp: SocketAddr = "127.0.0.1:61614".parse().expect("address");
    if std::net::TcpStream::connect(stomp).is_err() {
        return Err(
            "the reference node's STOMP (127.0.0.1:61614) is unreachable; \
                    run ../shared/refnode.sh start"
                .to_string(),
        );
    }
    Ok(StompTarget {
        name: "rabbitmq",
        stomp,
        web_stomp: "127.0.0.1:15674".parse().expect("address"),
        amqp_url: "amqp://guest:guest@127.0.0.1:5673/%2f".to_string(),
    })
}

/// Says why a variant cannot run: skipped, or a failure under CI.
fn skip(why: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("CI is set but {why}");
    }
    println!("skipped: {why}");
}

fn python_ready() -> Result<(), String> {
    match Command::new("python3")
        .args(["-c", "import stomp, pika"])
        .output()
    {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!(
            "python3 cannot import stomp and pika (pip install stomp.py pika): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Err(format!("python3 not runnable: {e}")),
    }
}

/// Runs one scenario group of compat_stomp.py against `target` and fails on any FAIL line.
async fn run_group(target: &StompTarget, group: &str, extra: &[String]) {
    if let Err(why) = python_ready() {
        return skip(&why);
    }
    let script: PathBuf = [env!("CARGO_MANIFEST_DIR"), "python", "compat_stomp.py"]
        .iter()
        .collect();
    let mut cmd = Command::new("python3");
    cmd.arg(&script)
        .arg(group)
        .arg(target.stomp.to_string())
        .arg(&target.amqp_url)
        .arg(target.name)
        .args(extra);
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("join")
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !stderr.trim().is_empty() {
        println!("stderr:\n{stderr}");
    }
    let failures: Vec<&str> = stdout.lines().filter(|l| l.starts_with("FAIL")).collect();
    assert!(
        out.status.success() && failures.is_empty(),
        "{}: STOMP scenarios of {group} failed:\n{}",
        target.name,
        failures.join("\n")
    );
}

/// One test per broker for each scenario group.
macro_rules! stomp_groups {
    ($($group:ident),* $(,)?) => {$(
        mod $group {
            use super::*;

            #[tokio::test]
            async fn bundled() {
                run_group(&super::bundled(), stringify!($group), &[]).await;
            }

            #[tokio::test]
            async fn rabbitmq() {
                match reference() {
                    Ok(t) => run_group(&t, stringify!($group), &[]).await,
                    Err(why) => skip(&why),
                }
            }
        }
    )*};
}

stomp_groups!(
    destinations,
    acks,
    transactions,
    durable,
    headers,
    bad_input,
    login_timeout
);

/// Warren only: RabbitMQ 3.13 and later close a connection sending a frame over 4 MiB
/// (`stomp.max_frame_size`); the 3.10 reference node has no such limit, so there is nothing
/// to compare with.
#[tokio::test]
async fn oversized_frame_closes_the_connection() {
    run_group(&bundled(), "oversized", &[]).await;
}

mod rpc_call {
    use super::*;
    use warren_examples::{Calc, CalculatorServer};

    /// A STOMP client calls the calculator, served by warren-rpc on the same broker: SEND to
    /// the service queue with the wire protocol's headers, a JSON body and a `/temp-queue/`
    /// reply-to; the reply comes back on the temp queue. `/queue/NAME` declares NAME durable
    /// (RabbitMQ's STOMP rule), so it is used with a server declaring a durable service
    /// queue; `/amq/queue/NAME` with the default (transient) one.
    async fn case(target: StompTarget, durable: bool) {
        let queue = format!("stomp-calc-{}", uuid::Uuid::new_v4().simple());
        let server = warren_rpc::Server::builder()
            .queue_name(queue.clone())
            .durable(durable)
            .serve(&target.amqp_url, CalculatorServer::new(Calc::new()))
            .await
            .unwrap_or_else(|e| panic!("{}: calculator server starts: {e}", target.name));
        let destination = if durable {
            format!("/queue/{queue}")
        } else {
            format!("/amq/queue/{queue}")
        };
        run_group(&target, "rpc", &[destination]).await;
        server.shutdown().await;
        let conn = lapin::Connection::connect(&target.amqp_url, Default::default())
            .await
            .expect("cleanup connection");
        let ch = conn.create_channel().await.expect("cleanup channel");
        let _ = ch
            .queue_delete(queue.as_str().into(), Default::default())
            .await;
        let _ = conn.close(200, "bye".into()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bundled() {
        case(super::bundled(), false).await;
        case(super::bundled(), true).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rabbitmq() {
        match reference() {
            Ok(t) => {
                case(t.clone(), false).await;
                case(t, true).await;
            }
            Err(why) => skip(&why),
        }
    }
}

mod browser_web_stomp {
    use super::*;
    use futures::StreamExt;
    use lapin::options::{BasicConsumeOptions, BasicPublishOptions, QueueDeclareOptions};
    use lapin::types::FieldTable;
    use lapin::{BasicProperties, Connection, ConnectionProperties};
    use std::time::Duration;

    /// The body of the next message on `queue`, consumed without acks.
    async fn next_body(ch: &lapin::Channel, queue: &str, what: &str) -> String {
        let mut consumer = ch
            .basic_consume(
                queue.into(),
                "".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("consume");
        let delivery = tokio::time::timeout(Duration::from_secs(30), consumer.next())
            .await
            .unwrap_or_else(|_| panic!("no {what} from the page"))
            .expect("a delivery")
            .expect("delivery ok");
        String::from_utf8_lossy(&delivery.data).into_owned()
    }

    /// A page in headless Chromium (tests/browser/web_stomp.html: a tiny STOMP client written
    /// in the page) subscribes over Web-STOMP and receives what an AMQP client publishes.
    async fn case(target: StompTarget) {
        let chromium = std::env::var("WARREN_TEST_CHROMIUM").unwrap_or_else(|_| "chromium".into());
        if Command::new(&chromium).arg("--version").output().is_err() {
            return skip(&format!(
                "{chromium} is not installed (apt-get install chromium)"
            ));
        }
        let conn = Connection::connect(&target.amqp_url, ConnectionProperties::default())
            .await
            .expect("AMQP connection");
        let ch = conn.create_channel().await.expect("channel");
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        let (ready, result, topic) = (
            format!("web-ready-{suffix}"),
            format!("web-result-{suffix}"),
            format!("web.{suffix}"),
        );
        for q in [&ready, &result] {
            ch.queue_declare(
                q.as_str().into(),
                QueueDeclareOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("declare");
        }
        let page: PathBuf = [env!("CARGO_MANIFEST_DIR"), "browser", "web_stomp.html"]
            .iter()
            .collect();
        let url = format!(
            "file://{}?ws=ws://{}/ws&topic={topic}&ready={ready}&result={result}",
            page.display(),
            target.web_stomp
        );
        let profile = std::env::temp_dir().join(format!("warren-chromium-{suffix}"));
        let mut browser = tokio::process::Command::new(&chromium)
            .args(["--headless", "--no-sandbox", "--disable-gpu"])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(&url)
            .kill_on_drop(true)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("chromium starts");
        assert_eq!(
            next_body(&ch, &ready, "ready").await,
            "ready",
            "{}",
            target.name
        );
        ch.basic_publish(
            "amq.topic".into(),
            topic.as_str().into(),
            BasicPublishOptions::default(),
            b"hello browser",
            BasicProperties::default(),
        )
        .await
        .expect("publish");
        let got = next_body(&ch, &result, "result").await;
        let _ = browser.kill().await;
        let _ = std::fs::remove_dir_all(&profile);
        let (protocol, body) = got.split_once(' ').unwrap_or(("", &got));
        assert_eq!(body, "hello browser", "{}: {got}", target.name);
        assert!(
            ["v10.stomp", "v11.stomp", "v12.stomp"].contains(&protocol),
            "{}: a STOMP subprotocol was chosen: {got}",
            target.name
        );
        for q in [&ready, &result] {
            let _ = ch.queue_delete(q.as_str().into(), Default::default()).await;
        }
        let _ = conn.close(200, "bye".into()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bundled() {
        case(super::bundled()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rabbitmq() {
        match reference() {
            Ok(t) => case(t).await,
            Err(why) => skip(&why),
        }
    }
}
