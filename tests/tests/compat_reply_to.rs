//! Direct reply-to compatibility (`amq.rabbitmq.reply-to`), the path Warren's RPC uses by
//! default: no-ack consumers only, reply_to rewritten per channel, replies routed back to the
//! caller's channel, and the errors RabbitMQ gives for misuse.

use lapin::{
    options::{BasicConsumeOptions, BasicPublishOptions, QueueDeclareOptions},
    types::FieldTable,
    BasicProperties, Confirmation,
};
use warren_tests::{
    close, compat_test, consume, declare_exclusive, expect_error, get, next_delivery,
    publish_confirmed, publish_with, unique,
};

const REPLY_TO: &str = "amq.rabbitmq.reply-to";

fn no_ack() -> BasicConsumeOptions {
    BasicConsumeOptions {
        no_ack: true,
        ..Default::default()
    }
}

compat_test! {
    #[tokio::test]
    async fn request_reply_round_trip(t: Target) {
        // The server side: a plain queue.
        let (server_conn, server_ch) = t.open_confirm().await;
        let service = declare_exclusive(&t, &server_ch).await;

        // The caller consumes the pseudo-queue (no-ack) and publishes with reply_to set.
        let (caller_conn, caller_ch) = t.open_confirm().await;
        let mut replies = consume(&t, &caller_ch, REPLY_TO, "replies", true).await;
        let props = BasicProperties::default()
            .with_reply_to(REPLY_TO.into())
            .with_correlation_id("call-1".into());
        publish_confirmed(&t, &caller_ch, "", &service, b"ping", props).await;

        let request = get(&t, &server_ch, &service, true).await.expect("request");
        let reply_to = request
            .delivery
            .properties
            .reply_to()
            .clone()
            .unwrap_or_else(|| panic!("{t}: request lost its reply_to"));
        assert!(
            reply_to.as_str().starts_with("amq.rabbitmq.reply-to.")
                && reply_to.as_str().len() > REPLY_TO.len() + 1,
            "{t}: reply_to rewritten to a per-channel name: {reply_to}"
        );
        assert_eq!(
            request
                .delivery
                .properties
                .correlation_id()
                .as_ref()
                .map(|s| s.as_str()),
            Some("call-1"),
            "{t}: correlation id untouched"
        );

        // The replier publishes to the default exchange with the rewritten name. (Not
        // mandatory: RabbitMQ 3.10 delivers a mandatory reply and also returns it NO_ROUTE.)
        publish_confirmed(
            &t,
            &server_ch,
            "",
            reply_to.as_str(),
            b"pong",
            BasicProperties::default().with_correlation_id("call-1".into()),
        )
        .await;
        let reply = next_delivery(&t, &mut replies).await;
        assert_eq!(reply.data, b"pong", "{t}: reply body");
        assert_eq!(reply.exchange.as_str(), "", "{t}: reply exchange");
        assert_eq!(
            reply.routing_key.as_str(),
            reply_to.as_str(),
            "{t}: reply routing key is the rewritten name"
        );
        assert_eq!(
            reply
                .properties
                .correlation_id()
                .as_ref()
                .map(|s| s.as_str()),
            Some("call-1"),
            "{t}: reply correlation id"
        );

        // Two requests from the same channel carry the same rewritten name.
        publish_confirmed(
            &t,
            &caller_ch,
            "",
            &service,
            b"again",
            BasicProperties::default().with_reply_to(REPLY_TO.into()),
        )
        .await;
        let second = get(&t, &server_ch, &service, true)
            .await
            .expect("second request");
        assert_eq!(
            second.delivery.properties.reply_to().as_ref(),
            Some(&reply_to),
            "{t}: stable per channel"
        );

        // Once the caller's channel is gone, replies to its name are unroutable.
        close(caller_conn).await;
        let c = publish_with(
            &t,
            &server_ch,
            "",
            reply_to.as_str(),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            b"late",
            BasicProperties::default(),
        )
        .await;
        assert!(
            matches!(c, Confirmation::Ack(Some(ref r)) if r.reply_code == 312 && r.reply_text.as_str() == "NO_ROUTE"),
            "{t}: reply to a closed caller is returned NO_ROUTE: {c:?}"
        );
        close(server_conn).await;
    }
}

compat_test! {
    #[tokio::test]
    async fn reply_consumer_must_be_no_ack(t: Target) {
        let (conn, ch) = t.open().await;
        let res = ch
            .basic_consume(
                REPLY_TO.into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map(|_| ());
        expect_error(
            &t,
            "ack-mode consume of reply-to",
            res,
            406,
            "PRECONDITION_FAILED - reply consumer cannot acknowledge",
        );
        close(conn).await;
    }
}

compat_test! {
    #[tokio::test]
    async fn reply_consumer_only_once_per_channel(t: Target) {
        let (conn, ch) = t.open().await;
        let _first = consume(&t, &ch, REPLY_TO, "a", true).await;
        let res = ch
            .basic_consume(REPLY_TO.into(), "b".into(), no_ack(), FieldTable::default())
            .await
            .map(|_| ());
        expect_error(
            &t,
            "second reply consumer on a channel",
            res,
            406,
            "PRECONDITION_FAILED - reply consumer already set",
        );
        // Another channel may have its own.
        let ch2 = conn.create_channel().await.expect("channel");
        ch2.basic_consume(REPLY_TO.into(), "c".into(), no_ack(), FieldTable::default())
            .await
            .unwrap_or_else(|e| panic!("{t}: reply consumer on another channel: {e}"));
        close(conn).await;
    }
}

compat_test! {
    #[tokio::test]
    async fn publish_with_reply_to_without_consumer_fails(t: Target) {
        let (conn, ch) = t.open_confirm().await;
        let q = declare_exclusive(&t, &ch).await;
        let pending = ch
            .basic_publish(
                "".into(),
                q.as_str().into(),
                Default::default(),
                b"x",
                BasicProperties::default().with_reply_to(REPLY_TO.into()),
            )
            .await
            .expect("publish is asynchronous");
        expect_error(
            &t,
            "reply_to without a reply consumer",
            pending.await,
            406,
            "PRECONDITION_FAILED - fast reply consumer does not exist",
        );
        close(conn).await;
    }
}

compat_test! {
    #[tokio::test]
    async fn reply_consumer_on_another_channel_does_not_count(t: Target) {
        let (conn, ch) = t.open_confirm().await;
        let q = declare_exclusive(&t, &ch).await;
        let other = conn.create_channel().await.expect("channel");
        let _c = consume(&t, &other, REPLY_TO, "", true).await;
        let pending = ch
            .basic_publish(
                "".into(),
                q.as_str().into(),
                Default::default(),
                b"x",
                BasicProperties::default().with_reply_to(REPLY_TO.into()),
            )
            .await
            .expect("publish is asynchronous");
        expect_error(
            &t,
            "reply consumer on a different channel",
            pending.await,
            406,
            "PRECONDITION_FAILED - fast reply consumer does not exist",
        );
        close(conn).await;
    }
}

compat_test! {
    #[tokio::test]
    async fn reply_to_other_values_are_left_alone(t: Target) {
        let (conn, ch) = t.open_confirm().await;
        let q = declare_exclusive(&t, &ch).await;
        let mine = unique("replies");
        publish_confirmed(
            &t,
            &ch,
            "",
            &q,
            b"x",
            BasicProperties::default().with_reply_to(mine.as_str().into()),
        )
        .await;
        let m = get(&t, &ch, &q, true).await.expect("message");
        assert_eq!(
            m.delivery
                .properties
                .reply_to()
                .as_ref()
                .map(|s| s.as_str()),
            Some(mine.as_str()),
            "{t}: ordinary reply_to untouched"
        );
        close(conn).await;
    }
}

compat_test! {
    #[tokio::test]
    async fn reply_to_pseudo_queue_declare(t: Target) {
        let (conn, ch) = t.open().await;
        let q = ch
            .queue_declare(
                REPLY_TO.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap_or_else(|e| panic!("{t}: passive declare of {REPLY_TO}: {e}"));
        assert_eq!(
            (q.name().as_str(), q.message_count(), q.consumer_count()),
            (REPLY_TO, 0, 1),
            "{t}: the pseudo-queue always exists and reports one consumer"
        );
        close(conn).await;
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
    async fn reply_to_names_as_queues(t: Target) {
        let (server_conn, server_ch) = t.open_confirm().await;
        let service = declare_exclusive(&t, &server_ch).await;
        let (caller_conn, caller_ch) = t.open_confirm().await;
        let _replies = consume(&t, &caller_ch, REPLY_TO, "", true).await;
        publish_confirmed(
            &t,
            &caller_ch,
            "",
            &service,
            b"req",
            BasicProperties::default().with_reply_to(REPLY_TO.into()),
        )
        .await;
        let request = get(&t, &server_ch, &service, true).await.expect("request");
        let reply_to = request
            .delivery
            .properties
            .reply_to()
            .clone()
            .expect("reply_to");

        // A live rewritten name passes a passive declare, like a queue with one consumer.
        let q = server_ch
            .queue_declare(reply_to.clone(), passive(), FieldTable::default())
            .await
            .unwrap_or_else(|e| panic!("{t}: passive declare of {reply_to}: {e}"));
        assert_eq!(
            (q.name().as_str(), q.message_count(), q.consumer_count()),
            (reply_to.as_str(), 0, 1),
            "{t}: passive declare of the rewritten name"
        );
        // A made-up one does not exist.
        let bogus = "amq.rabbitmq.reply-to.bogus";
        let ch = server_conn.create_channel().await.expect("channel");
        let res = ch
            .queue_declare(bogus.into(), passive(), FieldTable::default())
            .await;
        expect_error(
            &t,
            "passive declare of a bogus reply name",
            res,
            404,
            &format!("NOT_FOUND - no queue '{bogus}' in vhost '/'"),
        );
        // The pseudo-queue can be declared (even non-passively) but not read or bound.
        let ch = server_conn.create_channel().await.expect("channel");
        let q = ch
            .queue_declare(
                REPLY_TO.into(),
                QueueDeclareOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap_or_else(|e| panic!("{t}: declare of {REPLY_TO}: {e}"));
        assert_eq!(
            (q.message_count(), q.consumer_count()),
            (0, 1),
            "{t}: declare-ok counts"
        );
        let res = ch
            .basic_get(REPLY_TO.into(), Default::default())
            .await
            .map(|m| m.is_some());
        expect_error(
            &t,
            "basic.get from the pseudo-queue",
            res,
            404,
            &format!("NOT_FOUND - no queue '{REPLY_TO}' in vhost '/'"),
        );
        // Publishing to a bogus reply name, or to the pseudo-queue's own name, routes nowhere.
        for key in [bogus, REPLY_TO] {
            let c = publish_with(
                &t,
                &server_ch,
                "",
                key,
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                b"x",
                BasicProperties::default(),
            )
            .await;
            assert!(
                matches!(c, Confirmation::Ack(Some(ref r)) if r.reply_code == 312),
                "{t}: publish to {key} is returned NO_ROUTE: {c:?}"
            );
        }
        close(caller_conn).await;
        close(server_conn).await;
    }
}

compat_test! {
    #[tokio::test]
    async fn cancelled_reply_consumer_no_longer_counts(t: Target) {
        let (conn, ch) = t.open_confirm().await;
        let q = declare_exclusive(&t, &ch).await;
        let c = consume(&t, &ch, REPLY_TO, "replies", true).await;
        publish_confirmed(
            &t,
            &ch,
            "",
            &q,
            b"ok",
            BasicProperties::default().with_reply_to(REPLY_TO.into()),
        )
        .await;
        ch.basic_cancel(c.tag(), Default::default())
            .await
            .expect("cancel");
        let pending = ch
            .basic_publish(
                "".into(),
                q.as_str().into(),
                Default::default(),
                b"x",
                BasicProperties::default().with_reply_to(REPLY_TO.into()),
            )
            .await
            .expect("publish is asynchronous");
        expect_error(
            &t,
            "reply_to after cancelling the reply consumer",
            pending.await,
            406,
            "PRECONDITION_FAILED - fast reply consumer does not exist",
        );
        close(conn).await;
    }
}

compat_test! {
    #[tokio::test]
    async fn reply_to_pseudo_queue_cannot_be_bound(t: Target) {
        let (server_conn, _) = t.open().await;
        let ch = server_conn.create_channel().await.expect("channel");
        let res = ch
            .queue_bind(
                REPLY_TO.into(),
                "amq.direct".into(),
                "k".into(),
                Default::default(),
                FieldTable::default(),
            )
            .await;
        expect_error(
            &t,
            "bind of the pseudo-queue",
            res,
            404,
            &format!("NOT_FOUND - no queue '{REPLY_TO}' in vhost '/'"),
        );
        close(server_conn).await;
    }
}
