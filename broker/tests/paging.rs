//! Paging: with a small in-memory budget, queued messages beyond it wait on disk and still come
//! back complete and in order; the broker's resident bytes for ready messages stay bounded.

use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use warren_broker::{Broker, Limits};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_beyond_the_budget_are_paged_and_come_back_in_order() {
    let limits = Limits {
        queue_memory_budget: 64 * 1024,
        ..Limits::default()
    };
    let broker = Broker::builder()
        .listen("127.0.0.1:0".parse().unwrap())
        .limits(limits)
        .start()
        .await
        .unwrap();
    let conn = Connection::connect(&broker.amqp_url(), ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.queue_declare("paged".into(), Default::default(), FieldTable::default())
        .await
        .unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let body = vec![b'x'; 1000];
    for i in 0..2000u32 {
        let mut b = body.clone();
        b[..4].copy_from_slice(&i.to_be_bytes());
        ch.basic_publish(
            "".into(),
            "paged".into(),
            BasicPublishOptions::default(),
            &b,
            BasicProperties::default().with_priority((i % 7) as u8),
        )
        .await
        .unwrap();
    }
    ch.wait_for_confirms().await.unwrap();
    // 2000 messages of ~1 KB against a 64 KiB budget: nearly all of them were paged out.
    let resident = broker.resident_bytes();
    assert!(
        resident < 256 * 1024,
        "resident bytes of ready messages: {resident}"
    );
    for i in 0..2000u32 {
        let m = ch
            .basic_get("paged".into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
            .expect("message");
        assert_eq!(&m.delivery.data[..4], &i.to_be_bytes(), "order");
        assert_eq!(m.delivery.data.len(), 1000);
        assert_eq!(m.delivery.properties.priority(), &Some((i % 7) as u8));
    }
    assert!(ch
        .basic_get("paged".into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .is_none());
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paged_fan_out_to_live_consumers_loses_nothing() {
    use futures::StreamExt;
    let limits = Limits {
        queue_memory_budget: 0,
        ..Limits::default()
    };
    let broker = Broker::builder()
        .listen("127.0.0.1:0".parse().unwrap())
        .limits(limits)
        .start()
        .await
        .unwrap();
    let conn = Connection::connect(&broker.amqp_url(), ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.exchange_declare(
        "fan".into(),
        lapin::ExchangeKind::Fanout,
        Default::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let mut consumers = Vec::new();
    for i in 0..3 {
        let q = format!("fan-{i}");
        ch.queue_declare(q.as_str().into(), Default::default(), FieldTable::default())
            .await
            .unwrap();
        ch.queue_bind(
            q.as_str().into(),
            "fan".into(),
            "".into(),
            Default::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        let cch = conn.create_channel().await.unwrap();
        let consumer = cch
            .basic_consume(
                q.as_str().into(),
                "".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        consumers.push((cch, consumer));
    }
    for i in 0..300u32 {
        ch.basic_publish(
            "fan".into(),
            "".into(),
            BasicPublishOptions::default(),
            &i.to_be_bytes(),
            BasicProperties::default(),
        )
        .await
        .unwrap();
    }
    for (_, consumer) in &mut consumers {
        for i in 0..300u32 {
            let d = tokio::time::timeout(std::time::Duration::from_secs(10), consumer.next())
                .await
                .expect("delivery in time")
                .expect("stream open")
                .expect("delivery");
            assert_eq!(&d.data[..], &i.to_be_bytes());
        }
    }
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_queue_releases_its_resident_bytes() {
    let broker = Broker::builder()
        .listen("127.0.0.1:0".parse().unwrap())
        .start()
        .await
        .unwrap();
    let conn = Connection::connect(&broker.amqp_url(), ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.queue_declare("full".into(), Default::default(), FieldTable::default())
        .await
        .unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    for _ in 0..100 {
        ch.basic_publish(
            "".into(),
            "full".into(),
            BasicPublishOptions::default(),
            &[0u8; 1000],
            BasicProperties::default(),
        )
        .await
        .unwrap();
    }
    ch.wait_for_confirms().await.unwrap();
    assert!(broker.resident_bytes() >= 100_000);
    ch.queue_delete("full".into(), Default::default())
        .await
        .unwrap();
    assert_eq!(
        broker.resident_bytes(),
        0,
        "resident bytes leaked by queue.delete"
    );
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paged_messages_that_expire_are_dead_lettered_whole() {
    use lapin::types::AMQPValue;
    let limits = Limits {
        queue_memory_budget: 0,
        ..Limits::default()
    };
    let broker = Broker::builder()
        .listen("127.0.0.1:0".parse().unwrap())
        .limits(limits)
        .start()
        .await
        .unwrap();
    let conn = Connection::connect(&broker.amqp_url(), ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.queue_declare("dead".into(), Default::default(), FieldTable::default())
        .await
        .unwrap();
    let mut args = FieldTable::default();
    args.insert("x-message-ttl".into(), AMQPValue::LongInt(1));
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString("".into()),
    );
    args.insert(
        "x-dead-letter-routing-key".into(),
        AMQPValue::LongString("dead".into()),
    );
    ch.queue_declare("expiring".into(), Default::default(), args)
        .await
        .unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    for i in 0..50u32 {
        ch.basic_publish(
            "".into(),
            "expiring".into(),
            BasicPublishOptions::default(),
            &i.to_be_bytes(),
            BasicProperties::default(),
        )
        .await
        .unwrap();
    }
    ch.wait_for_confirms().await.unwrap();
    // Every message expires (each one paged out, the budget being 0) and is dead-lettered.
    let mut got = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while got.len() < 50 && std::time::Instant::now() < deadline {
        match ch
            .basic_get("dead".into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        {
            Some(m) => got.push(u32::from_be_bytes(m.delivery.data[..4].try_into().unwrap())),
            None => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
        }
    }
    assert_eq!(got, (0..50).collect::<Vec<_>>(), "dead letters, in order");
    broker.shutdown().await;
}
