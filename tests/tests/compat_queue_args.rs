//! RabbitMQ's queue and consumer arguments: dead-lettering (x-dead-letter-exchange and
//! -routing-key, with the x-death header), x-max-length with drop-head and reject-publish,
//! x-message-ttl, x-expires, x-max-priority, x-single-active-consumer and consumer priorities.

use lapin::{
    options::{
        BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicRejectOptions,
        QueueDeclareOptions,
    },
    types::{AMQPValue, FieldTable},
    BasicProperties, Channel, Confirmation,
};
use warren_tests::{
    close, compat_test, drain, expect_error, expect_no_delivery, fill, get, long_str,
    next_delivery, publish, publish_confirmed, publish_with, table, unique, Target,
};

async fn declare(t: &Target, ch: &Channel, name: &str, args: FieldTable) {
    ch.queue_declare(
        name.into(),
        QueueDeclareOptions {
            exclusive: true,
            ..Default::default()
        },
        args,
    )
    .await
    .unwrap_or_else(|e| panic!("{t}: queue.declare {name}: {e}"));
}

fn x_death(props: &BasicProperties) -> Vec<FieldTable> {
    let headers = props.headers().clone().unwrap_or_default();
    match headers.inner().get("x-death") {
        Some(AMQPValue::FieldArray(a)) => a
            .as_slice()
            .iter()
            .map(|v| match v {
                AMQPValue::FieldTable(t) => t.clone(),
                other => panic!("x-death entry is not a table: {other:?}"),
            })
            .collect(),
        other => panic!("no x-death array in {headers:?}: {other:?}"),
    }
}

/// Dead-lettering is asynchronous in RabbitMQ: poll the queue for up to [`warren_tests::WAIT`].
async fn get_eventually(
    t: &Target,
    ch: &Channel,
    queue: &str,
) -> Option<lapin::message::BasicGetMessage> {
    let deadline = tokio::time::Instant::now() + warren_tests::WAIT;
    loop {
        if let Some(m) = get(t, ch, queue, true).await {
            return Some(m);
        }
        if tokio::time::Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

fn str_field(t: &FieldTable, key: &str) -> String {
    warren_tests::table_str(t, key).unwrap_or_else(|| panic!("no string {key} in {t:?}"))
}

fn strs(t: &FieldTable, key: &str) -> Vec<String> {
    match t.inner().get(key) {
        Some(AMQPValue::FieldArray(a)) => a
            .as_slice()
            .iter()
            .map(|v| match v {
                AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
                other => panic!("{key} entry not a string: {other:?}"),
            })
            .collect(),
        other => panic!("{key} not an array: {other:?}"),
    }
}

fn count(t: &FieldTable) -> i64 {
    match t.inner().get("count") {
        Some(AMQPValue::LongLongInt(n)) => *n,
        Some(AMQPValue::LongInt(n)) => i64::from(*n),
        other => panic!("x-death count: {other:?}"),
    }
}

compat_test! {
    #[tokio::test]
    async fn dead_letter_on_reject_with_x_death(t: Target) {
        let (conn, ch) = t.open_confirm().await;
        let dlq = unique("dlq");
        let work = unique("work");
        declare(&t, &ch, &dlq, FieldTable::default()).await;
        declare(
            &t,
            &ch,
            &work,
            table(vec![
                ("x-dead-letter-exchange", long_str("")),
                ("x-dead-letter-routing-key", long_str(&dlq)),
            ]),
        )
        .await;
        publish_confirmed(&t, &ch, "", &work, b"doomed", BasicProperties::default()).await;
        let m = get(&t, &ch, &work, false).await.expect("message");
        m.delivery
            .acker
            .reject(BasicRejectOptions { requeue: false })
            .await
            .expect("reject");
        let dead = get_eventually(&t, &ch, &dlq)
            .await
            .unwrap_or_else(|| panic!("{t}: nothing dead-lettered"));
        assert_eq!(dead.delivery.data, b"doomed", "{t}: dead-lettered body");
        assert_eq!(
            dead.delivery.exchange.as_str(),
            "",
            "{t}: dead-letter exchange"
        );
        assert_eq!(
            dead.delivery.routing_key.as_str(),
            dlq,
            "{t}: dead-letter routing key"
        );
        let deaths = x_death(&dead.delivery.properties);
        assert_eq!(deaths.len(), 1, "{t}: one x-death entry: {deaths:?}");
        let d = &deaths[0];
        assert_eq!(str_field(d, "reason"), "rejected", "{t}: x-death reason");
        assert_eq!(str_field(d, "queue"), work, "{t}: x-death queue");
        assert_eq!(str_field(d, "exchange"), "", "{t}: x-death exchange");
        assert_eq!(
            strs(d, "routing-keys"),
            std::slice::from_ref(&work),
            "{t}: x-death routing-keys"
        );
        assert_eq!(count(d), 1, "{t}: x-death count");
        assert!(
            matches!(d.inner().get("time"), Some(AMQPValue::Timestamp(_))),
            "{t}: x-death time is a timestamp: {d:?}"
        );
        let headers = dead
            .delivery
            .properties
            .headers()
            .clone()
            .unwrap_or_default();
        assert_eq!(
            warren_tests::table_str(&headers, "x-first-death-reason").as_deref(),
            Some("rejected"),
            "{t}: x-first-death-reason"
        );
        assert_eq!(
            warren_tests::table_str(&headers, "x-first-death-queue").as_deref(),
            Some(work.as_str()),
            "{t}: x-first-death-queue"
        );
        assert_eq!(
            warren_tests::table_str(&headers, "x-first-death-exchange").as_deref(),
            Some(""),
            "{t}: x-first-death-exchange"
        );

        // nack without requeue dead-letters too; requeue=true does not.
        publish_confirmed(&t, &ch, "", &work, b"nacked", BasicProperties::default()).await;
        let m = get(&t, &ch, &work, false).await.expect("message");
        m.delivery
            .acker
            .nack(BasicNackOptions {
                requeue: true,
                multiple: false,
            })
            .await
            .expect("nack requeue");
        assert!(
            get(&t, &ch, &dlq, true).await.is_none(),
            "{t}: requeue does not dead-letter"
        );
        let m = get(&t, &ch, &work, false).await.expect("message again");
        m.delivery
            .acker
            .nack(BasicNackOptions {
                requeue: false,
                multiple: false,
            })
            .await
            .expect("nack");
        let dead = get_eventually(&t, &ch, &dlq)
            .await
            .unwrap_or_else(|| panic!("{t}: nack not dead-lettered"));
        assert_eq!(dead.delivery.data, b"nacked", "{t}: nacked body");
        close(conn).await;
    }
}

compat_test! {
    #[tokio::test]
    async fn dead_letter_on_expiry_keeps_original_routing_key(t: Target) {
        let (conn, ch) = t.open_confirm().await;
        let dlx = unique("dlx");
        ch.exchange_declare(
            dlx.as_str().into(),
            lapin::ExchangeKind::Fanout,
            Default::default(),
            FieldTable::default(),
        )
        .await
        .expect("declare dlx");
        let dlq = unique("dlq");
        declare(&t, &ch, &dlq, FieldTable::default()).await;
        ch.queue_bind(
            dlq.as_str().into(),
            dlx.as_str().into(),
            "".into(),
            Default::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind");
        let work = unique("work");
        declare(
            &t,
            &ch,
            &work,
            table(vec![
                ("x-dead-letter-exchange", long_str(&dlx)),
                ("x-message-ttl", AMQPValue::LongInt(0)),
            ]),
        )
        .await;
        publish_confirmed(
            &t,
            &ch,
            "",
            &work,
            b"expired",
            BasicProperties::default().with_expiration("60000".into()),
        )
        .await;
        // Expiry is asynchronous: poll briefly.
        let dead = get_eventually(&t, &ch, &dlq).await;
        let dead = dead.unwrap_or_else(|| panic!("{t}: expired message not dead-lettered"));
        assert_eq!(
            dead.delivery.routing_key.as_str(),
            work,
            "{t}: original routing key kept without x-dead-letter-routing-key"
        );
        assert_eq!(
            dead.delivery.exchange.as_str(),
            dlx,
            "{t}: delivered via the dead-letter exchange"
        );
        let d = &x_death(&dead.delivery.properties)[0];
        assert_eq!(str_field(d, "reason"), "expired", "{t}: x-death reason");
        assert_eq!(
            dead.delivery
                .properties
                .expiration()
                .as_ref()
                .map(|s| s.as_str()),
            None,
            "{t}: per-message expiration removed when dead-lettered"
        );
        assert_eq!(
            warren_tests::table_str(d, "original-expiration").as_deref(),
            Some("60000"),
            "{t}: original-expiration recorded in x-death"
        );
        close(conn).await;
        t.delete_exchanges(&[&dlx]).await;
    }
}

compat_test! {
    #[tokio::test]
    async fn max_length_drops_head(t: Target) {
        let (conn, ch) = t.open_confirm().await;
        let q = unique("maxlen");
        let dlq = unique("dlq");
        declare(&t, &ch, &dlq, FieldTable::default()).await;
        declare(
            &t,
            &ch,
            &q,
            table(vec![
                ("x-max-length", AMQPValue::LongInt(2)),
                ("x-dead-letter-exchange", long_str("")),
                ("x-dead-letter-routing-key", long_str(&dlq)),
            ]),
        )
        .await;
        fill(&t, &ch, &q, 4).await;
        assert_eq!(
            drain(&t, &ch, &q).await,
            ["m2", "m3"],
            "{t}: oldest dropped"
        );
        let dead = get_eventually(&t, &ch, &dlq)
            .await
            .expect("dead-lettered head");
        assert_eq!(
            str_field(&x_death(&dead.delivery.properties)[0], "reason"),
            "maxlen",
            "{t}: reason maxlen"
        );
        assert_eq!(dead.delivery.data, b"m0", "{t}: first dropped message");
        close(conn).await;
    }
}

compat_test! {
    #[tokio::test]
    async fn max_length_reject_publish_nacks(t: Target) {
        let (conn, ch) = t.open_confirm().await;
        let q = unique("full");
        declare(
            &t,
            &ch,
            &q,
            table(vec![
                ("x-max-length", AMQPValue::LongInt(1)),
                ("x-overflow", long_str("reject-publish")),
            ]),
        )
        .await;
        publish_confirmed(&t, &ch, "", &q, b"fits", BasicProperties::default()).await;
        let c = publish(&t, &ch, "", &q, b"rejected", BasicProperties::default()).await;
        assert!(
            matches!(c, Confirmation::Nack(_)),
            "{t}: publish to a full reject-publish queue is nacked: {c:?}"
        );
        // The queue matched, so a mandatory message is not returned as unroutable: the nack
        // alone says it was refused.
        let c = publish_with(
            &t,
            &ch,
            "",
            &q,
            BasicPublishOptions {
                mandatory: true,
                ..BasicPublishOptions::default()
            },
            b"rejected too",
            BasicProperties::default(),
        )
        .await;
        assert!(
            matches!(c, Confirmation::Nack(None)),
            "{t}: a mandatory publish to a full reject-publish queue is nacked, not returned: {c:?}"
        );
        assert_eq!(
            drain(&t, &ch, &q).await,
            ["fits"],
            "{t}: only the first message kept"
        );
        close(conn).await;
    }
}

compat_test! {
    #[tokio::test]
    async fn max_length_bytes(t: Target) {
        let (conn, ch) = t.open_confirm().await;
        let q = unique("maxbytes");
        declare(
            &t,
            &ch,
            &q,
            table(vec![("x-max-length-bytes", AMQPValue::LongInt(10))]),
        )
        .await;
        for body in ["aaaa", "bbbb", "cccc"] {
            publish_confirmed(&t, &ch, "", &q, body.as_bytes(), BasicProperties::default()).await;
        }
        assert_eq!(
            drain(&t, &ch, &q).await,
            ["bbbb", "cccc"],
            "{t}: bodies over 10 bytes drop the head"
        );
        close(conn).await;
    }
}

compat_test! {
    #[tokio::test]
    async fn queue_expires_when_unused(t: Target) {
        let (conn, ch) = t.open().await;
        let q = unique("expires");
        ch.queue_declare(
            q.as_str().into(),
            QueueDeclareOptions::default(),
            table(vec![("x-expires", AMQPValue::LongInt(100))]),
        )
        .await
        .expect("declare");
        // Any use (even a passive declare) restarts the timer, so look only once, later.
        tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
        let res = ch
            .queue_declare(
                q.as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await;
        expect_error(
            &t,
            "queue unused for 1 s with x-expires 100",
            res,
            404,
            &format!("NOT_FOUND - no queue '{q}' in vhost '/'"),
        );
        close(conn).await;
    }
}

async fn expect_invalid_args(t: &Target, cases: Vec<(FieldTable, String)>) {
    let (conn, _) = t.open().await;
    for (args, text) in cases {
        let q = unique("badarg");
        let ch = conn.create_channel().await.expect("channel");
        let res = ch
            .queue_declare(
                q.as_str().into(),
                QueueDeclareOptions {
                    exclusive: true,
                    ..Default::default()
                },
                args.clone(),
            )
            .await;
        expect_error(
            t,
            &format!("declare with {args:?}"),
            res,
            406,
            &text.replace("{q}", &q),
        );
    }
    close(conn).await;
}

compat_test! {
    #[tokio::test]
    async fn invalid_queue_arguments(t: Target) {
        let cases: Vec<(FieldTable, String)> = vec![
            (
                table(vec![("x-max-length", AMQPValue::LongInt(-1))]),
                "PRECONDITION_FAILED - invalid arg 'x-max-length' for queue '{q}' in vhost '/': {value_negative,-1}".into(),
            ),
        ];
        expect_invalid_args(&t, cases).await;
    }
}

compat_test! {
    #[tokio::test]
    async fn invalid_queue_argument_texts(t: Target) {
        let cases: Vec<(FieldTable, String)> = vec![
            (
                table(vec![("x-overflow", long_str("explode"))]),
                "PRECONDITION_FAILED - invalid arg 'x-overflow' for queue '{q}' in vhost '/': invalid_overflow".into(),
            ),
            (
                table(vec![("x-expires", AMQPValue::LongInt(0))]),
                "PRECONDITION_FAILED - invalid arg 'x-expires' for queue '{q}' in vhost '/': {value_zero,0}".into(),
            ),
            (
                table(vec![("x-message-ttl", long_str("soon"))]),
                "PRECONDITION_FAILED - invalid arg 'x-message-ttl' for queue '{q}' in vhost '/': \"expected integer, got longstr\"".into(),
            ),
        ];
        expect_invalid_args(&t, cases).await;
    }
}

compat_test! {
    #[tokio::test]
    async fn priority_queue_orders_by_priority(t: Target) {
        let (conn, ch) = t.open_confirm().await;
        let q = unique("prio");
        declare(
            &t,
            &ch,
            &q,
            table(vec![("x-max-priority", AMQPValue::ShortShortUInt(5))]),
        )
        .await;
        for (body, prio) in [
            ("low", 1u8),
            ("none", 0),
            ("high", 5),
            ("mid", 3),
            ("over", 9),
            ("high2", 5),
        ] {
            let props = if body == "none" {
                BasicProperties::default()
            } else {
                BasicProperties::default().with_priority(prio)
            };
            publish_confirmed(&t, &ch, "", &q, body.as_bytes(), props).await;
        }
        // Priorities above x-max-priority count as the maximum; equal priorities keep FIFO.
        assert_eq!(
            drain(&t, &ch, &q).await,
            ["high", "over", "high2", "mid", "low", "none"],
            "{t}: priority order"
        );
        close(conn).await;
    }
}

compat_test! {
    #[tokio::test]
    async fn single_active_consumer(t: Target) {
        let (conn, ch) = t.open_confirm().await;
        let q = unique("sac");
        declare(
            &t,
            &ch,
            &q,
            table(vec![("x-single-active-consumer", AMQPValue::Boolean(true))]),
        )
        .await;
        let cch = conn.create_channel().await.expect("channel");
        let opts = BasicConsumeOptions {
            no_ack: true,
            ..Default::default()
        };
        let mut first = cch
            .basic_consume(
                q.as_str().into(),
                "first".into(),
                opts,
                FieldTable::default(),
            )
            .await
            .expect("consume");
        let mut second = cch
            .basic_consume(
                q.as_str().into(),
                "second".into(),
                opts,
                FieldTable::default(),
            )
            .await
            .expect("consume");
        fill(&t, &ch, &q, 4).await;
        for i in 0..4 {
            let d = next_delivery(&t, &mut first).await;
            assert_eq!(
                d.data,
                format!("m{i}").as_bytes(),
                "{t}: the active consumer gets everything in order"
            );
        }
        expect_no_delivery(&t, &mut second, "the standby consumer gets nothing").await;
        cch.basic_cancel("first".into(), Default::default())
            .await
            .expect("cancel");
        publish_confirmed(&t, &ch, "", &q, b"after", BasicProperties::default()).await;
        let d = next_delivery(&t, &mut second).await;
        assert_eq!(d.data, b"after", "{t}: the standby takes over");
        close(conn).await;
    }
}

compat_test! {
    #[tokio::test]
    async fn consumer_priority(t: Target) {
        let (conn, ch) = t.open_confirm().await;
        let q = unique("cprio");
        declare(&t, &ch, &q, FieldTable::default()).await;
        let cch = conn.create_channel().await.expect("channel");
        let opts = BasicConsumeOptions {
            no_ack: true,
            ..Default::default()
        };
        let mut low = cch
            .basic_consume(q.as_str().into(), "low".into(), opts, FieldTable::default())
            .await
            .expect("consume");
        let mut high = cch
            .basic_consume(
                q.as_str().into(),
                "high".into(),
                opts,
                table(vec![("x-priority", AMQPValue::LongInt(10))]),
            )
            .await
            .expect("consume");
        fill(&t, &ch, &q, 4).await;
        for i in 0..4 {
            let d = next_delivery(&t, &mut high).await;
            assert_eq!(
                d.data,
                format!("m{i}").as_bytes(),
                "{t}: the higher-priority consumer gets all while it can take them"
            );
        }
        expect_no_delivery(&t, &mut low, "lower-priority consumer idle").await;
        close(conn).await;
    }
}

compat_test! {
    #[tokio::test]
    async fn dead_letter_cycle_counts_deaths(t: Target) {
        let (conn, ch) = t.open_confirm().await;
        let a = unique("cycle-a");
        let b = unique("cycle-b");
        // a dead-letters into b, b dead-letters back into a.
        declare(
            &t,
            &ch,
            &a,
            table(vec![
                ("x-dead-letter-exchange", long_str("")),
                ("x-dead-letter-routing-key", long_str(&b)),
            ]),
        )
        .await;
        declare(
            &t,
            &ch,
            &b,
            table(vec![
                ("x-dead-letter-exchange", long_str("")),
                ("x-dead-letter-routing-key", long_str(&a)),
            ]),
        )
        .await;
        publish_confirmed(&t, &ch, "", &a, b"loop", BasicProperties::default()).await;
        for (from, to) in [(&a, &b), (&b, &a), (&a, &b)] {
            let m = get(&t, &ch, from, false).await.expect("message");
            m.delivery
                .acker
                .reject(BasicRejectOptions { requeue: false })
                .await
                .expect("reject");
            let _ = to;
            // Wait until it arrives in `to`, without taking it.
            let deadline = tokio::time::Instant::now() + warren_tests::WAIT;
            loop {
                let q = ch
                    .queue_declare(
                        to.as_str().into(),
                        QueueDeclareOptions {
                            passive: true,
                            ..Default::default()
                        },
                        FieldTable::default(),
                    )
                    .await
                    .expect("passive declare");
                if q.message_count() == 1 {
                    break;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "{t}: dead letter did not arrive"
                );
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
        let m = get(&t, &ch, &b, true).await.expect("message in b");
        let deaths = x_death(&m.delivery.properties);
        let summary: Vec<(String, String, i64)> = deaths
            .iter()
            .map(|d| (str_field(d, "queue"), str_field(d, "reason"), count(d)))
            .collect();
        assert_eq!(
            summary,
            [
                (a.clone(), "rejected".to_string(), 2),
                (b.clone(), "rejected".to_string(), 1)
            ],
            "{t}: one x-death entry per queue and reason, most recent first, with counts"
        );
        close(conn).await;
    }
}

fn quorum() -> FieldTable {
    table(vec![("x-queue-type", long_str("quorum"))])
}

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..Default::default()
    }
}

compat_test! {
    #[tokio::test]
    #[ignore = "bundled broker: refuses x-queue-type quorum (not clustered)"]
    async fn quorum_queue_declare_rules(t: Target) {
        let (conn, ch) = t.open().await;
        let q = unique("quorum");
        ch.queue_declare(q.as_str().into(), durable(), quorum())
            .await
            .unwrap_or_else(|e| panic!("{t}: declare a quorum queue: {e}"));
        ch.queue_declare(q.as_str().into(), durable(), quorum())
            .await
            .unwrap_or_else(|e| panic!("{t}: redeclare a quorum queue: {e}"));
        let mut cases: Vec<(QueueDeclareOptions, FieldTable, String)> = vec![
            (
                durable(),
                FieldTable::default(),
                format!("PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue '{q}' in vhost '/': received none but current is the value 'quorum' of type 'longstr'"),
            ),
            (
                durable(),
                table(vec![("x-queue-type", long_str("classic"))]),
                format!("PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue '{q}' in vhost '/': received 'classic' but current is 'quorum'"),
            ),
        ];
        let q2 = unique("quorum-bad");
        cases.push((
            QueueDeclareOptions::default(),
            quorum(),
            format!("PRECONDITION_FAILED - invalid property 'non-durable' for queue '{q2}' in vhost '/'"),
        ));
        cases.push((
            QueueDeclareOptions { durable: true, exclusive: true, ..Default::default() },
            quorum(),
            format!("PRECONDITION_FAILED - invalid property 'exclusive-owner' for queue '{q2}' in vhost '/'"),
        ));
        cases.push((
            QueueDeclareOptions { durable: true, auto_delete: true, ..Default::default() },
            quorum(),
            format!("PRECONDITION_FAILED - invalid property 'auto-delete' for queue '{q2}' in vhost '/'"),
        ));
        cases.push((
            durable(),
            table(vec![("x-queue-type", long_str("bogus"))]),
            format!("PRECONDITION_FAILED - invalid arg 'x-queue-type' for queue '{q2}' in vhost '/': \"unsupported queue type 'bogus'\""),
        ));
        for (opts, args, text) in cases {
            let name = if text.contains(&q) { &q } else { &q2 };
            let ch = conn.create_channel().await.expect("channel");
            let res = ch
                .queue_declare(name.as_str().into(), opts, args.clone())
                .await;
            expect_error(
                &t,
                &format!("declare {name} with {opts:?} {args:?}"),
                res,
                406,
                &text,
            );
        }
        let ch = conn.create_channel().await.expect("channel");
        let res = ch.queue_declare("".into(), durable(), quorum()).await;
        expect_error(
            &t,
            "server-named quorum queue",
            res,
            406,
            "PRECONDITION_FAILED - Cannot declare a server-named queue for type rabbit_quorum_queue",
        );
        // A classic queue cannot become a quorum queue.
        let classic = unique("classic");
        let ch = conn.create_channel().await.expect("channel");
        ch.queue_declare(
            classic.as_str().into(),
            QueueDeclareOptions {
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("classic");
        let res = ch
            .queue_declare(
                classic.as_str().into(),
                QueueDeclareOptions {
                    auto_delete: true,
                    ..Default::default()
                },
                quorum(),
            )
            .await;
        expect_error(
            &t,
            "classic redeclared as quorum",
            res,
            406,
            &format!("PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue '{classic}' in vhost '/': received the value 'quorum' of type 'longstr' but current is none"),
        );
        close(conn).await;
        t.delete_queues(&[&q, &q2, &classic]).await;
    }
}

compat_test! {
    #[tokio::test]
    #[ignore = "bundled broker: refuses x-queue-type quorum (not clustered)"]
    async fn quorum_queue_counts_deliveries(t: Target) {
        let (conn, ch) = t.open_confirm().await;
        let q = unique("quorum");
        ch.queue_declare(q.as_str().into(), durable(), quorum())
            .await
            .unwrap_or_else(|e| panic!("{t}: declare a quorum queue: {e}"));
        publish_confirmed(&t, &ch, "", &q, b"x", BasicProperties::default()).await;
        let first = get(&t, &ch, &q, false).await.expect("message");
        let headers = first
            .delivery
            .properties
            .headers()
            .clone()
            .unwrap_or_default();
        assert_eq!(
            headers.inner().get("x-delivery-count"),
            Some(&AMQPValue::LongLongInt(0)),
            "{t}: RabbitMQ 3.10 quorum queues send x-delivery-count 0 on a first delivery"
        );
        first
            .delivery
            .acker
            .nack(BasicNackOptions {
                requeue: true,
                multiple: false,
            })
            .await
            .expect("nack");
        let again = get(&t, &ch, &q, true).await.expect("redelivery");
        assert!(again.delivery.redelivered, "{t}: redelivered");
        let headers = again
            .delivery
            .properties
            .headers()
            .clone()
            .unwrap_or_default();
        assert_eq!(
            headers.inner().get("x-delivery-count"),
            Some(&AMQPValue::LongLongInt(1)),
            "{t}: x-delivery-count after one requeue"
        );
        close(conn).await;
        t.delete_queues(&[&q]).await;
    }
}

compat_test! {
    #[tokio::test]
    async fn max_length_counts_ready_messages_and_requeue_can_overflow(t: Target) {
        let (conn, ch) = t.open_confirm().await;
        let q = unique("maxlen-unacked");
        declare(
            &t,
            &ch,
            &q,
            table(vec![("x-max-length", AMQPValue::LongInt(1))]),
        )
        .await;
        publish_confirmed(&t, &ch, "", &q, b"m0", BasicProperties::default()).await;
        let m0 = get(&t, &ch, &q, false).await.expect("m0");
        // m0 is unacked, so it does not count: m1 fits, m2 pushes m1 out.
        publish_confirmed(&t, &ch, "", &q, b"m1", BasicProperties::default()).await;
        publish_confirmed(&t, &ch, "", &q, b"m2", BasicProperties::default()).await;
        let passive = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let ok = ch
            .queue_declare(q.as_str().into(), passive, FieldTable::default())
            .await
            .expect("passive");
        assert_eq!(
            ok.message_count(),
            1,
            "{t}: one ready message under x-max-length 1"
        );
        // Requeueing m0 overflows the queue: the head (m0 itself) is dropped.
        m0.delivery
            .acker
            .reject(BasicRejectOptions { requeue: true })
            .await
            .expect("reject");
        let mut left = Vec::new();
        while let Some(m) = get(&t, &ch, &q, true).await {
            left.push((
                String::from_utf8_lossy(&m.delivery.data).into_owned(),
                m.delivery.redelivered,
            ));
        }
        assert_eq!(
            left,
            [("m2".to_string(), false)],
            "{t}: only the newest message remains"
        );
        close(conn).await;
    }
}

compat_test! {
    #[tokio::test]
    async fn per_message_ttl_expires_only_at_the_head(t: Target) {
        let (conn, ch) = t.open_confirm().await;
        let q = unique("ttl-head");
        declare(&t, &ch, &q, FieldTable::default()).await;
        publish_confirmed(
            &t,
            &ch,
            "",
            &q,
            b"A",
            BasicProperties::default().with_expiration("60000".into()),
        )
        .await;
        publish_confirmed(
            &t,
            &ch,
            "",
            &q,
            b"B",
            BasicProperties::default().with_expiration("1".into()),
        )
        .await;
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let passive = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let ok = ch
            .queue_declare(q.as_str().into(), passive, FieldTable::default())
            .await
            .expect("passive");
        assert_eq!(
            ok.message_count(),
            2,
            "{t}: an expired message behind a live one is still counted"
        );
        let a = get(&t, &ch, &q, true).await.expect("A");
        assert_eq!(a.delivery.data, b"A", "{t}: the live message");
        assert_eq!(
            a.message_count, 0,
            "{t}: B expires once it reaches the head"
        );
        assert!(get(&t, &ch, &q, true).await.is_none(), "{t}: B is gone");
        close(conn).await;
    }
}

compat_test! {
    #[tokio::test]
    async fn more_invalid_queue_arguments(t: Target) {
        let cases: Vec<(FieldTable, String)> = vec![
            (
                table(vec![("x-queue-mode", long_str("bogus"))]),
                "PRECONDITION_FAILED - invalid arg 'x-queue-mode' for queue '{q}' in vhost '/': \"unsupported queue mode 'bogus'\"".into(),
            ),
            (
                table(vec![("x-max-priority", AMQPValue::LongInt(256))]),
                "PRECONDITION_FAILED - invalid arg 'x-max-priority' for queue '{q}' in vhost '/': {max_value_exceeded,256}".into(),
            ),
            (
                table(vec![("x-max-priority", AMQPValue::LongInt(-1))]),
                "PRECONDITION_FAILED - invalid arg 'x-max-priority' for queue '{q}' in vhost '/': {value_negative,-1}".into(),
            ),
            (
                table(vec![("x-dead-letter-routing-key", long_str("k"))]),
                "PRECONDITION_FAILED - invalid arg 'x-dead-letter-routing-key' for queue '{q}' in vhost '/': routing_key_but_no_dlx_defined".into(),
            ),
            (
                table(vec![("x-max-length", long_str("10"))]),
                "PRECONDITION_FAILED - invalid arg 'x-max-length' for queue '{q}' in vhost '/': \"expected integer, got longstr\"".into(),
            ),
            (
                table(vec![("x-single-active-consumer", long_str("yes"))]),
                "PRECONDITION_FAILED - invalid arg 'x-single-active-consumer' for queue '{q}' in vhost '/': {unacceptable_type,longstr}".into(),
            ),
            (
                table(vec![("x-message-ttl", AMQPValue::LongInt(-5))]),
                "PRECONDITION_FAILED - invalid arg 'x-message-ttl' for queue '{q}' in vhost '/': {value_negative,-5}".into(),
            ),
            (
                table(vec![("x-expires", AMQPValue::LongLongInt(1 << 40))]),
                "PRECONDITION_FAILED - invalid arg 'x-expires' for queue '{q}' in vhost '/': {value_too_large,1099511627776}".into(),
            ),
            (
                table(vec![("x-max-length", AMQPValue::Boolean(true))]),
                "PRECONDITION_FAILED - invalid arg 'x-max-length' for queue '{q}' in vhost '/': \"expected integer, got bool\"".into(),
            ),
        ];
        expect_invalid_args(&t, cases).await;
        // Accepted as they are: lazy mode and reject-publish-dlx.
        let (conn, ch) = t.open().await;
        for args in [
            table(vec![("x-queue-mode", long_str("lazy"))]),
            table(vec![("x-overflow", long_str("reject-publish-dlx"))]),
        ] {
            declare(&t, &ch, &unique("ok-arg"), args).await;
        }
        close(conn).await;
    }
}

compat_test! {
    #[tokio::test]
    async fn sender_selected_distribution_cc_bcc(t: Target) {
        let (conn, ch) = t.open_confirm().await;
        let mut queues = Vec::new();
        for k in ["to", "cc", "bcc"] {
            let q = warren_tests::declare_exclusive(&t, &ch).await;
            ch.queue_bind(
                q.as_str().into(),
                "amq.direct".into(),
                format!("{k}.{q}").as_str().into(),
                Default::default(),
                FieldTable::default(),
            )
            .await
            .expect("bind");
            queues.push(q);
        }
        let mut cc = lapin::types::FieldArray::default();
        cc.push(long_str(&format!("cc.{}", queues[1])));
        let mut bcc = lapin::types::FieldArray::default();
        bcc.push(long_str(&format!("bcc.{}", queues[2])));
        let headers = table(vec![
            ("CC", AMQPValue::FieldArray(cc.clone())),
            ("BCC", AMQPValue::FieldArray(bcc)),
            ("x", AMQPValue::LongInt(1)),
        ]);
        let key = format!("to.{}", queues[0]);
        publish_confirmed(
            &t,
            &ch,
            "amq.direct",
            &key,
            b"m",
            BasicProperties::default().with_headers(headers),
        )
        .await;
        let expected_headers = table(vec![
            ("CC", AMQPValue::FieldArray(cc)),
            ("x", AMQPValue::LongInt(1)),
        ]);
        for q in &queues {
            let m = get(&t, &ch, q, true)
                .await
                .unwrap_or_else(|| panic!("{t}: {q} got nothing"));
            assert_eq!(
                m.delivery.routing_key.as_str(),
                key,
                "{t}: delivered with the original routing key"
            );
            assert_eq!(
                m.delivery.properties.headers().as_ref(),
                Some(&expected_headers),
                "{t}: CC kept, BCC removed"
            );
        }
        close(conn).await;
    }
}
