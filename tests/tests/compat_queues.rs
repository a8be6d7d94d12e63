//! Queue compatibility: exclusive, auto-delete, passive, server-named and empty-name queues,
//! message/consumer counts, purge, delete with if-unused/if-empty, and their errors.

use lapin::{
    options::{
        BasicCancelOptions, BasicConsumeOptions, QueueDeclareOptions, QueueDeleteOptions,
        QueuePurgeOptions,
    },
    types::FieldTable,
    BasicProperties, Channel,
};
use warren_tests::{
    close, compat_test, consume, drain, expect_error, fill, get_body, publish_confirmed, unique,
    Target,
};

async fn declare(t: &Target, ch: &Channel, name: &str, opts: QueueDeclareOptions) -> lapin::Queue {
    ch.queue_declare(name.into(), opts, FieldTable::default())
        .await
        .unwrap_or_else(|e| panic!("{t}: queue.declare {name:?}: {e}"))
}

fn exclusive() -> QueueDeclareOptions {
    QueueDeclareOptions {
        exclusive: true,
        ..Default::default()
    }
}

fn passive() -> QueueDeclareOptions {
    QueueDeclareOptions {
        passive: true,
        ..Default::default()
    }
}

compat_test! {
    #[tokio::test]
    async fn server_named_queue(t: Target) {
        let (conn, ch) = t.open().await;
        let q = declare(&t, &ch, "", exclusive()).await;
        let name = q.name().as_str();
        assert!(
            name.starts_with("amq.gen-"),
            "{t}: server-named queue {name}"
        );
        assert_eq!(name.len(), 30, "{t}: amq.gen- plus 22 characters: {name}");
        assert!(
            name["amq.gen-".len()..]
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            "{t}: url-safe base64 suffix: {name}"
        );
        let q2 = declare(&t, &ch, "", exclusive()).await;
        assert_ne!(q.name(), q2.name(), "{t}: names are unique");
        close(conn).await;
    }
}

compat_test! {
    #[tokio::test]
    async fn declare_ok_counts_messages_and_consumers(t: Target) {
        let (conn, ch) = t.open_confirm().await;
        let name = unique("q");
        let q = declare(&t, &ch, &name, exclusive()).await;
        assert_eq!(
            (q.message_count(), q.consumer_count()),
            (0, 0),
            "{t}: new queue"
        );
        fill(&t, &ch, &name, 3).await;
        let q = declare(&t, &ch, &name, exclusive()).await;
        assert_eq!(
            (q.message_count(), q.consumer_count()),
            (3, 0),
            "{t}: three ready"
        );
        let consumer_ch = conn.create_channel().await.expect("channel");
        consumer_ch
            .basic_qos(1, Default::default())
            .await
            .expect("qos");
        let _c1 = consume(&t, &consumer_ch, name.as_str(), "c1", false).await;
        let _c2 = consume(&t, &consumer_ch, name.as_str(), "c2", false).await;
        // Each consumer holds one unacked message; declare-ok counts only ready ones.
        let mut tries = 0;
        let q = loop {
            let q = declare(&t, &ch, &name, passive()).await;
            if q.message_count() == 1 || tries == 50 {
                break q;
            }
            tries += 1;
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        };
        assert_eq!(
            (q.message_count(), q.consumer_count()),
            (1, 2),
            "{t}: ready count excludes unacked; two consumers"
        );
        close(conn).await;
    }
}

compat_test! {
    #[tokio::test]
    async fn passive_declare_of_missing_queue(t: Target) {
        let (conn, ch) = t.open().await;
        let name = unique("missing");
        let res = ch
            .queue_declare(name.as_str().into(), passive(), FieldTable::default())
            .await;
        expect_error(
            &t,
            "passive declare",
            res,
            404,
            &format!("NOT_FOUND - no queue '{name}' in vhost '/'"),
        );
        let ch = conn
            .create_channel()
            .await
            .unwrap_or_else(|e| panic!("{t}: connection survives: {e}"));
        declare(&t, &ch, "", exclusive()).await;
        close(conn).await;
    }
}

compat_test! {
    #[tokio::test]
    async fn exclusive_queue_is_locked_to_its_connection(t: Target) {
        let (owner, ch) = t.open().await;
        let name = unique("excl");
        declare(&t, &ch, &name, exclusive()).await;
        let locked = warren_tests::reply_text(&format!(
            "RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '{name}' in vhost '/'. \
             It could be originally declared on another connection or the exclusive property value \
             does not match that of the original declaration."
        ));

        let (other, och) = t.open().await;
        let res = och
            .queue_declare(name.as_str().into(), exclusive(), FieldTable::default())
            .await;
        expect_error(&t, "declare from another connection", res, 405, &locked);
        let och = other.create_channel().await.expect("channel");
        let res = och
            .queue_declare(name.as_str().into(), passive(), FieldTable::default())
            .await;
        expect_error(
            &t,
            "passive declare from another connection",
            res,
            405,
            &locked,
        );
        let och = other.create_channel().await.expect("channel");
        let res = och
            .basic_consume(
                name.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map(|_| ());
        expect_error(&t, "consume from another connection", res, 405, &locked);
        let och = other.create_channel().await.expect("channel");
        let res = och
            .queue_delete(name.as_str().into(), QueueDeleteOptions::default())
            .await;
        expect_error(&t, "delete from another connection", res, 405, &locked);
        let och = other.create_channel().await.expect("channel");
        let res = och
            .queue_purge(name.as_str().into(), QueuePurgeOptions::default())
            .await;
        expect_error(&t, "purge from another connection", res, 405, &locked);

        // Publishing from another connection is allowed.
        let pch = other.create_channel().await.expect("channel");
        pch.confirm_select(Default::default())
            .await
            .expect("confirm");
        publish_confirmed(
            &t,
            &pch,
            "",
            &name,
            b"from other",
            BasicProperties::default(),
        )
        .await;
        assert_eq!(
            drain(&t, &ch, &name).await,
            ["from other"],
            "{t}: owner reads it"
        );

        // Another channel of the owner's connection may use it.
        let ch2 = owner.create_channel().await.expect("channel");
        declare(&t, &ch2, &name, passive()).await;

        // Closing the owner deletes the queue.
        close(owner).await;
        warren_tests::expect_queue_gone(&t, &other, &name, "exclusive queue after owner closed")
            .await;
        close(other).await;
    }
}

compat_test! {
    #[tokio::test]
    async fn auto_delete_queue_goes_with_last_consumer(t: Target) {
        let (conn, ch) = t.open().await;
        let name = unique("autodel");
        let opts = QueueDeclareOptions {
            auto_delete: true,
            ..Default::default()
        };
        declare(&t, &ch, &name, opts).await;
        // Never consumed: it stays.
        declare(&t, &ch, &name, passive()).await;
        let c1 = consume(&t, &ch, name.as_str(), "c1", false).await;
        let c2 = consume(&t, &ch, name.as_str(), "c2", false).await;
        ch.basic_cancel(c1.tag(), BasicCancelOptions::default())
            .await
            .expect("cancel");
        let q = declare(&t, &ch, &name, passive()).await;
        assert_eq!(q.consumer_count(), 1, "{t}: one consumer left");
        ch.basic_cancel(c2.tag(), BasicCancelOptions::default())
            .await
            .expect("cancel");
        warren_tests::expect_queue_gone(&t, &conn, &name, "auto-delete after last cancel").await;
        close(conn).await;
    }
}

compat_test! {
    #[tokio::test]
    async fn auto_delete_queue_goes_when_consumer_channel_closes(t: Target) {
        let (conn, ch) = t.open().await;
        let name = unique("autodel");
        declare(
            &t,
            &ch,
            &name,
            QueueDeclareOptions {
                auto_delete: true,
                ..Default::default()
            },
        )
        .await;
        let cch = conn.create_channel().await.expect("channel");
        let _c = consume(&t, &cch, name.as_str(), "", false).await;
        cch.close(200, "bye".into()).await.expect("channel.close");
        warren_tests::expect_queue_gone(
            &t,
            &conn,
            &name,
            "auto-delete after consumer channel closed",
        )
        .await;
        close(conn).await;
    }
}

compat_test! {
    #[tokio::test]
    async fn empty_name_means_last_declared_queue(t: Target) {
        let (conn, ch) = t.open_confirm().await;
        let q = declare(&t, &ch, "", exclusive()).await;
        let name = q.name().to_string();
        ch.queue_bind(
            "".into(),
            "amq.direct".into(),
            name.as_str().into(),
            Default::default(),
            FieldTable::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("{t}: bind with empty queue name: {e}"));
        publish_confirmed(
            &t,
            &ch,
            "amq.direct",
            &name,
            b"one",
            BasicProperties::default(),
        )
        .await;
        publish_confirmed(
            &t,
            &ch,
            "amq.direct",
            &name,
            b"two",
            BasicProperties::default(),
        )
        .await;
        assert_eq!(
            get_body(&t, &ch, "").await.as_deref(),
            Some(&b"one"[..]),
            "{t}: basic.get with empty name"
        );
        let purged = ch
            .queue_purge("".into(), Default::default())
            .await
            .unwrap_or_else(|e| panic!("{t}: purge '': {e}"));
        assert_eq!(purged, 1, "{t}: purge with empty name");
        // queue.declare itself never uses the shortcut: a passive declare of '' is a 404.
        let res = ch
            .queue_declare("".into(), passive(), FieldTable::default())
            .await;
        expect_error(
            &t,
            "passive declare of ''",
            res,
            404,
            "NOT_FOUND - no queue '' in vhost '/'",
        );

        // A fresh channel has no last queue.
        let ch2 = conn.create_channel().await.expect("channel");
        let res = ch2.queue_purge("".into(), Default::default()).await;
        expect_error(
            &t,
            "purge '' with no declared queue",
            res,
            404,
            "NOT_FOUND - no previously declared queue",
        );
        close(conn).await;
    }
}

compat_test! {
    #[tokio::test]
    async fn purge_counts(t: Target) {
        let (conn, ch) = t.open_confirm().await;
        let name = unique("purge");
        declare(&t, &ch, &name, exclusive()).await;
        fill(&t, &ch, &name, 5).await;
        // One unacked message is not purged.
        let held = warren_tests::get(&t, &ch, &name, false)
            .await
            .expect("message");
        let n = ch
            .queue_purge(name.as_str().into(), Default::default())
            .await
            .expect("purge");
        assert_eq!(n, 4, "{t}: purge counts ready messages only");
        let n = ch
            .queue_purge(name.as_str().into(), Default::default())
            .await
            .expect("purge");
        assert_eq!(n, 0, "{t}: second purge");
        held.delivery
            .acker
            .reject(lapin::options::BasicRejectOptions { requeue: true })
            .await
            .expect("reject");
        assert_eq!(
            drain(&t, &ch, &name).await,
            ["m0"],
            "{t}: unacked message survived the purge"
        );
        close(conn).await;
    }
}

compat_test! {
    #[tokio::test]
    async fn delete_if_unused_if_empty_and_counts(t: Target) {
        let (conn, ch) = t.open_confirm().await;
        let name = unique("del");
        declare(&t, &ch, &name, QueueDeclareOptions::default()).await;
        publish_confirmed(&t, &ch, "", &name, b"m", BasicProperties::default()).await;
        let res = ch
            .queue_delete(
                name.as_str().into(),
                QueueDeleteOptions {
                    if_empty: true,
                    ..Default::default()
                },
            )
            .await;
        expect_error(
            &t,
            "delete if-empty",
            res,
            406,
            &format!("PRECONDITION_FAILED - queue '{name}' in vhost '/' not empty"),
        );

        let ch = conn.create_channel().await.expect("channel");
        let _c = consume(&t, &ch, name.as_str(), "", false).await;
        let dch = conn.create_channel().await.expect("channel");
        let res = dch
            .queue_delete(
                name.as_str().into(),
                QueueDeleteOptions {
                    if_unused: true,
                    ..Default::default()
                },
            )
            .await;
        expect_error(
            &t,
            "delete if-unused",
            res,
            406,
            &format!("PRECONDITION_FAILED - queue '{name}' in vhost '/' in use"),
        );

        ch.close(200, "bye".into())
            .await
            .expect("close consumer channel");
        let dch = conn.create_channel().await.expect("channel");
        dch.confirm_select(Default::default())
            .await
            .expect("confirm");
        publish_confirmed(&t, &dch, "", &name, b"m2", BasicProperties::default()).await;
        // RabbitMQ drops a closed channel's consumers asynchronously: wait until they are gone.
        let deadline = tokio::time::Instant::now() + warren_tests::WAIT;
        while declare(&t, &dch, &name, passive()).await.consumer_count() > 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{t}: consumer still there after its channel closed"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let n = dch
            .queue_delete(
                name.as_str().into(),
                QueueDeleteOptions {
                    if_unused: true,
                    ..Default::default()
                },
            )
            .await
            .unwrap_or_else(|e| panic!("{t}: delete if-unused without consumers: {e}"));
        assert_eq!(n, 2, "{t}: delete-ok counts the messages deleted");
        // Deleting a missing queue is fine and reports zero.
        let n = dch
            .queue_delete(name.as_str().into(), QueueDeleteOptions::default())
            .await
            .unwrap_or_else(|e| panic!("{t}: delete of missing queue: {e}"));
        assert_eq!(n, 0, "{t}: delete of missing queue counts 0");
        close(conn).await;
    }
}

compat_test! {
    #[tokio::test]
    async fn redeclare_with_other_flags_and_reserved_names(t: Target) {
        let (conn, ch) = t.open().await;
        let name = unique("q");
        declare(
            &t,
            &ch,
            &name,
            QueueDeclareOptions {
                auto_delete: true,
                ..Default::default()
            },
        )
        .await;
        let res = ch
            .queue_declare(
                name.as_str().into(),
                QueueDeclareOptions {
                    durable: true,
                    auto_delete: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await;
        expect_error(
            &t,
            "redeclare durable",
            res,
            406,
            &format!("PRECONDITION_FAILED - inequivalent arg 'durable' for queue '{name}' in vhost '/': received 'true' but current is 'false'"),
        );
        let ch = conn.create_channel().await.expect("channel");
        let res = ch
            .queue_declare(
                name.as_str().into(),
                QueueDeclareOptions::default(),
                FieldTable::default(),
            )
            .await;
        expect_error(
            &t,
            "redeclare auto_delete",
            res,
            406,
            &format!("PRECONDITION_FAILED - inequivalent arg 'auto_delete' for queue '{name}' in vhost '/': received 'false' but current is 'true'"),
        );
        let ch = conn.create_channel().await.expect("channel");
        let res = ch
            .queue_declare(
                name.as_str().into(),
                QueueDeclareOptions {
                    auto_delete: true,
                    ..Default::default()
                },
                warren_tests::table(vec![(
                    "x-message-ttl",
                    lapin::types::AMQPValue::LongInt(1000),
                )]),
            )
            .await;
        expect_error(
            &t,
            "redeclare with an x-argument",
            res,
            406,
            &format!("PRECONDITION_FAILED - inequivalent arg 'x-message-ttl' for queue '{name}' in vhost '/': received the value '1000' of type 'signedint' but current is none"),
        );
        let ch = conn.create_channel().await.expect("channel");
        let res = ch
            .queue_declare(
                "amq.warren-test".into(),
                QueueDeclareOptions::default(),
                FieldTable::default(),
            )
            .await;
        expect_error(
            &t,
            "declare amq.*",
            res,
            403,
            "ACCESS_REFUSED - queue name 'amq.warren-test' contains reserved prefix 'amq.*'",
        );
        let ch = conn.create_channel().await.expect("channel");
        ch.queue_delete(name.as_str().into(), Default::default())
            .await
            .expect("cleanup");
        close(conn).await;
    }
}

fn locked(name: &str) -> String {
    warren_tests::reply_text(&format!(
        "RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '{name}' in vhost \
         '/'. It could be originally declared on another connection or the exclusive \
         property value does not match that of the original declaration."
    ))
}

compat_test! {
    #[tokio::test]
    async fn exclusive_queue_redeclared_non_exclusive_on_same_connection(t: Target) {
        let (conn, ch) = t.open().await;
        let excl = unique("excl");
        declare(&t, &ch, &excl, exclusive()).await;
        let ch2 = conn.create_channel().await.expect("channel");
        let res = ch2
            .queue_declare(
                excl.as_str().into(),
                QueueDeclareOptions::default(),
                FieldTable::default(),
            )
            .await;
        expect_error(
            &t,
            "exclusive queue redeclared as non-exclusive",
            res,
            405,
            &locked(&excl),
        );
        close(conn).await;
    }
}

compat_test! {
    #[tokio::test]
    async fn shared_queue_redeclared_exclusive_on_same_connection(t: Target) {
        let (conn, ch) = t.open().await;
        let shared = unique("shared");
        let auto = QueueDeclareOptions {
            auto_delete: true,
            ..Default::default()
        };
        declare(&t, &ch, &shared, auto).await;
        let res = ch
            .queue_declare(
                shared.as_str().into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await;
        expect_error(
            &t,
            "non-exclusive queue redeclared as exclusive",
            res,
            405,
            &locked(&shared),
        );
        close(conn).await;
        t.delete_queues(&[&shared]).await;
    }
}
