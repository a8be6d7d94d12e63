//! Durability: the `warren-broker` binary is run as a child process on a data directory,
//! killed with SIGKILL during confirmed publishing, and restarted on the same directory. Every
//! confirmed persistent message must come back, in order, with its properties; durable
//! definitions survive; transient messages and non-durable entities do not.

use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

struct BrokerProcess {
    child: Child,
    url: String,
}

impl BrokerProcess {
    fn start(dir: &Path) -> BrokerProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_warren-broker"))
            .args(["--management-listen", "127.0.0.1:0"])
            .args(["--prometheus-listen", "127.0.0.1:0"])
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn warren-broker");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("ready line");
        let addr = line
            .trim()
            .rsplit(' ')
            .next()
            .expect("address in ready line")
            .to_string();
        BrokerProcess {
            child,
            url: format!("amqp://guest:guest@{addr}/%2f"),
        }
    }

    fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        let _ = self.child.wait();
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "warren-durability-{name}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn channel(url: &str) -> (Connection, Channel) {
    let conn = Connection::connect(url, ConnectionProperties::default())
        .await
        .expect("connect");
    let ch = conn.create_channel().await.expect("channel");
    (conn, ch)
}

async fn drain(ch: &Channel, queue: &str) -> Vec<(u64, BasicProperties)> {
    let mut out = Vec::new();
    while let Some(m) = ch
        .basic_get(queue.into(), BasicGetOptions { no_ack: true })
        .await
        .expect("basic.get")
    {
        let n: u64 = std::str::from_utf8(&m.delivery.data)
            .unwrap()
            .parse()
            .unwrap();
        out.push((n, m.delivery.properties.clone()));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirmed_messages_survive_kill_9_in_order() {
    let dir = temp_dir("kill9");
    let broker = BrokerProcess::start(&dir);
    let (_conn, ch) = channel(&broker.url).await;
    ch.queue_declare(
        "durable-q".into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();

    // Publish with a window of outstanding confirms; record the highest n such that every
    // message <= n is confirmed. Kill the broker once enough are confirmed, mid-stream.
    let confirmed = Arc::new(AtomicU64::new(0));
    let publisher = {
        let ch = ch.clone();
        let confirmed = confirmed.clone();
        tokio::spawn(async move {
            let mut window = std::collections::VecDeque::new();
            for n in 1..=200_000u64 {
                let props = BasicProperties::default()
                    .with_delivery_mode(2)
                    .with_content_type("text/plain".into())
                    .with_message_id(format!("m{n}").as_str().into());
                let Ok(pending) = ch
                    .basic_publish(
                        "".into(),
                        "durable-q".into(),
                        BasicPublishOptions::default(),
                        n.to_string().as_bytes(),
                        props,
                    )
                    .await
                else {
                    return;
                };
                window.push_back((n, pending));
                while window.len() > 256 {
                    let (m, p) = window.pop_front().unwrap();
                    match p.await {
                        Ok(c) if c.is_ack() => confirmed.store(m, Ordering::SeqCst),
                        _ => return,
                    }
                }
            }
        })
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while confirmed.load(Ordering::SeqCst) < 3_000 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    broker.kill();
    let before_kill = confirmed.load(Ordering::SeqCst);
    let _ = publisher.await;
    assert!(before_kill >= 3_000, "publishing too slow: {before_kill}");

    let broker = BrokerProcess::start(&dir);
    let (_conn, ch) = channel(&broker.url).await;
    let got = drain(&ch, "durable-q").await;
    let ns: Vec<u64> = got.iter().map(|(n, _)| *n).collect();
    println!(
        "kill -9: confirmed before kill {before_kill}, recovered {}",
        ns.len()
    );
    assert!(
        ns.len() as u64 >= before_kill,
        "lost confirmed messages: confirmed {before_kill}, recovered {}",
        ns.len()
    );
    // In order, no duplicates, no gaps: exactly 1..=len.
    for (i, n) in ns.iter().enumerate() {
        assert_eq!(*n, i as u64 + 1, "recovered out of order or duplicated");
    }
    let (_, props) = &got[0];
    assert_eq!(props.delivery_mode(), &Some(2));
    assert_eq!(props.message_id().as_ref().map(|s| s.as_str()), Some("m1"));
    assert_eq!(
        props.content_type().as_ref().map(|s| s.as_str()),
        Some("text/plain")
    );
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_definitions_survive_and_transient_state_does_not() {
    let dir = temp_dir("defs");
    let broker = BrokerProcess::start(&dir);
    let (conn, ch) = channel(&broker.url).await;
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    let mut args = FieldTable::default();
    args.insert("x-max-length".into(), AMQPValue::LongInt(100));
    ch.queue_declare("dq".into(), durable, args).await.unwrap();
    ch.queue_declare(
        "tq".into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.exchange_declare(
        "dx".into(),
        lapin::ExchangeKind::Topic,
        ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.queue_bind(
        "dq".into(),
        "dx".into(),
        "a.#".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    for (body, mode) in [("1", 2u8), ("2", 1u8), ("3", 2u8)] {
        ch.basic_publish(
            "dx".into(),
            "a.b".into(),
            BasicPublishOptions::default(),
            body.as_bytes(),
            BasicProperties::default().with_delivery_mode(mode),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
    // Ack one persistent message: it must not come back.
    let m = ch
        .basic_get("dq".into(), BasicGetOptions::default())
        .await
        .unwrap()
        .expect("a message");
    assert_eq!(&m.delivery.data[..], b"1");
    m.delivery.ack(BasicAckOptions::default()).await.unwrap();
    // Acks reach the disk with the next group commit, not before their ack returns (as in
    // RabbitMQ): a confirmed persistent publish after it is the point where it is on disk.
    ch.queue_declare("sync".into(), durable, FieldTable::default())
        .await
        .unwrap();
    ch.basic_publish(
        "".into(),
        "sync".into(),
        BasicPublishOptions::default(),
        b"sync",
        BasicProperties::default().with_delivery_mode(2),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    conn.close(200, "bye".into()).await.unwrap();
    broker.kill();

    let broker = BrokerProcess::start(&dir);
    let (_conn, ch) = channel(&broker.url).await;
    let q = ch
        .queue_declare(
            "dq".into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("durable queue survives");
    assert_eq!(q.message_count(), 1, "only the unacked persistent message");
    // The binding survived: publishing through the exchange reaches the queue.
    ch.basic_publish(
        "dx".into(),
        "a.c".into(),
        BasicPublishOptions::default(),
        b"4",
        BasicProperties::default(),
    )
    .await
    .unwrap();
    let got = drain(&ch, "dq").await;
    let ns: Vec<u64> = got.iter().map(|(n, _)| *n).collect();
    assert_eq!(ns, vec![3, 4]);
    let err = ch
        .queue_declare(
            "tq".into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect_err("transient queue is gone");
    assert!(err.to_string().contains("NOT_FOUND"), "{err}");
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
}
