//! Flow control: when the memory alarm goes off, publishing connections get connection.blocked
//! and are no longer read; consumers keep consuming; connection.unblocked when it clears.

use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use std::time::Duration;
use warren_broker::Broker;

async fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_alarm_blocks_publishers_not_consumers() {
    let broker = Broker::builder()
        .listen("127.0.0.1:0".parse().unwrap())
        .start()
        .await
        .unwrap();
    let url = broker.amqp_url();
    let publisher = Connection::connect(&url, ConnectionProperties::default())
        .await
        .unwrap();
    let consumer = Connection::connect(&url, ConnectionProperties::default())
        .await
        .unwrap();
    let pch = publisher.create_channel().await.unwrap();
    let cch = consumer.create_channel().await.unwrap();
    cch.queue_declare("fc".into(), Default::default(), FieldTable::default())
        .await
        .unwrap();
    let publish = |n: &'static [u8]| {
        let pch = pch.clone();
        async move {
            pch.basic_publish(
                "".into(),
                "fc".into(),
                BasicPublishOptions::default(),
                n,
                BasicProperties::default(),
            )
            .await
            .unwrap();
        }
    };
    publish(b"before").await;
    // Wait until the broker has it, so the alarm below cannot overtake it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let q = cch
            .queue_declare(
                "fc".into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        if q.message_count() == 1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "first message never arrived"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Any resident size is above a 1-byte watermark: the alarm goes off.
    broker.set_memory_high_watermark(1);
    assert!(broker.is_blocked());
    // The publisher is blocked on its next publish; it is told so. (lapin itself holds
    // publishes while blocked, so this one completes only after the alarm clears.)
    let during = tokio::spawn(publish(b"during"));
    wait_for("connection.blocked", || publisher.status().blocked()).await;
    // The consumer still gets what was queued before the alarm.
    let got = cch
        .basic_get("fc".into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .expect("message published before the alarm");
    assert_eq!(&got.delivery.data[..], b"before");
    // The blocked publisher's message is not read while the alarm is on.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let q = cch
        .queue_declare(
            "fc".into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    assert_eq!(q.message_count(), 0, "blocked publisher is not read");

    // Clear the alarm: connection.unblocked, and the held message arrives.
    broker.set_memory_high_watermark(u64::MAX);
    wait_for("connection.unblocked", || !publisher.status().blocked()).await;
    tokio::time::timeout(Duration::from_secs(20), during)
        .await
        .expect("held publish completes")
        .unwrap();
    let mut got = None;
    for _ in 0..100 {
        got = cch
            .basic_get("fc".into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap();
        if got.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(&got.expect("held message").delivery.data[..], b"during");
    broker.shutdown().await;
}
