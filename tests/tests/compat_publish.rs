//! Publishing compatibility: mandatory and basic.return, publisher confirms, transactions,
//! confirm/tx exclusion, expiration (TTL and bad values), user-id validation, and
//! channel errors that leave the connection alive.

use amq_protocol::frame::AMQPFrame;
use amq_protocol::protocol::{self as proto, AMQPClass};
use lapin::{
    options::{BasicAckOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions},
    types::FieldTable,
    BasicProperties, Confirmation,
};
use warren_tests::{
    close, compat_test, declare_exclusive, drain, expect_error, get, get_body, publish_confirmed,
    publish_with, unique,
};

fn mandatory() -> BasicPublishOptions {
    BasicPublishOptions {
        mandatory: true,
        ..Default::default()
    }
}

compat_test! {
    #[tokio::test]
    async fn mandatory_unroutable_is_returned_no_route(t: Target) {
        let (conn, ch) = t.open_confirm().await;
        let key = unique("nowhere");
        let props = BasicProperties::default().with_message_id("mid-1".into());
        let c = publish_with(
            &t,
            &ch,
            "amq.direct",
            &key,
            mandatory(),
            b"lost",
            props.clone(),
        )
        .await;
        match c {
            Confirmation::Ack(Some(ret)) => {
                assert_eq!(
                    (ret.reply_code, ret.reply_text.as_str()),
                    (312, "NO_ROUTE"),
                    "{t}: return code/text"
                );
                assert_eq!(
                    ret.delivery.exchange.as_str(),
                    "amq.direct",
                    "{t}: returned exchange"
                );
                assert_eq!(
                    ret.delivery.routing_key.as_str(),
                    key,
                    "{t}: returned routing key"
                );
                assert_eq!(ret.delivery.data, b"lost", "{t}: returned body");
                assert_eq!(ret.delivery.properties, props, "{t}: returned properties");
            }
            other => panic!("{t}: expected basic.return then ack, got {other:?}"),
        }
        // Without mandatory, unroutable messages are dropped silently (and still acked).
        let c = publish_with(
            &t,
            &ch,
            "amq.direct",
            &key,
            BasicPublishOptions::default(),
            b"dropped",
            BasicProperties::default(),
        )
        .await;
        assert!(
            matches!(c, Confirmation::Ack(None)),
            "{t}: non-mandatory unroutable: {c:?}"
        );
        // Default exchange to a missing queue is unroutable too.
        let c = publish_with(
            &t,
            &ch,
            "",
            &key,
            mandatory(),
            b"lost",
            BasicProperties::default(),
        )
        .await;
        assert!(
            matches!(c, Confirmation::Ack(Some(ref r)) if r.reply_code == 312),
            "{t}: default exchange, missing queue: {c:?}"
        );
        close(conn).await;
    }
}

compat_test! {
    #[tokio::test]
    async fn mandatory_return_on_raw_wire_precedes_ack(t: Target) {
        let mut raw = t.raw_open().await;
        let reply = raw
            .call(
                1,
                AMQPClass::Confirm(proto::confirm::AMQPMethod::Select(proto::confirm::Select {
                    nowait: false,
                })),
            )
            .await;
        assert!(
            matches!(
                reply,
                AMQPClass::Confirm(proto::confirm::AMQPMethod::SelectOk(_))
            ),
            "{t}: select-ok: {reply:?}"
        );
        let key = unique("nowhere");
        let mut bytes = warren_tests::encode(&AMQPFrame::Method(
            1,
            AMQPClass::Basic(proto::basic::AMQPMethod::Publish(proto::basic::Publish {
                exchange: "amq.direct".into(),
                routing_key: key.as_str().into(),
                mandatory: true,
                immediate: false,
            })),
        ));
        bytes.extend(warren_tests::encode(&AMQPFrame::Header(
            1,
            amq_protocol::frame::AMQPContentHeader {
                class_id: 60,
                body_size: 3,
                properties: BasicProperties::default(),
            },
        )));
        bytes.extend(warren_tests::encode(&AMQPFrame::Body(1, b"abc".to_vec())));
        raw.send_bytes(&bytes).await;
        match raw.recv_frame().await {
            AMQPFrame::Method(1, AMQPClass::Basic(proto::basic::AMQPMethod::Return(r))) => {
                assert_eq!(
                    (r.reply_code, r.reply_text.as_str()),
                    (312, "NO_ROUTE"),
                    "{t}: basic.return"
                );
                assert_eq!(
                    (r.exchange.as_str(), r.routing_key.as_str()),
                    ("amq.direct", key.as_str()),
                    "{t}: basic.return names"
                );
            }
            other => panic!("{t}: expected basic.return first, got {other:?}"),
        }
        match raw.recv_frame().await {
            AMQPFrame::Header(1, h) => assert_eq!(h.body_size, 3, "{t}: returned content header"),
            other => panic!("{t}: expected content header, got {other:?}"),
        }
        match raw.recv_frame().await {
            AMQPFrame::Body(1, b) => assert_eq!(b, b"abc", "{t}: returned body"),
            other => panic!("{t}: expected body, got {other:?}"),
        }
        match raw.recv_frame().await {
            AMQPFrame::Method(1, AMQPClass::Basic(proto::basic::AMQPMethod::Ack(a))) => {
                assert_eq!(
                    (a.delivery_tag, a.multiple),
                    (1, false),
                    "{t}: confirm of the first publish"
                );
            }
            other => panic!("{t}: expected basic.ack after the return, got {other:?}"),
        }
    }
}

compat_test! {
    #[tokio::test]
    async fn publisher_confirms_count_from_one(t: Target) {
        let mut raw = t.raw_open().await;
        let reply = raw
            .call(
                1,
                AMQPClass::Confirm(proto::confirm::AMQPMethod::Select(proto::confirm::Select {
                    nowait: false,
                })),
            )
            .await;
        assert!(
            matches!(
                reply,
                AMQPClass::Confirm(proto::confirm::AMQPMethod::SelectOk(_))
            ),
            "{t}: select-ok: {reply:?}"
        );
        let q = unique("confirms");
        raw.declare_queue(1, &q, true).await;
        for i in 0..5 {
            raw.publish(
                1,
                "",
                &q,
                BasicProperties::default(),
                format!("m{i}").as_bytes(),
            )
            .await;
        }
        // Acks may be combined with multiple; together they must cover tags 1..=5 exactly once.
        let mut confirmed = 0u64;
        while confirmed < 5 {
            match raw.recv_frame().await {
                AMQPFrame::Method(1, AMQPClass::Basic(proto::basic::AMQPMethod::Ack(a))) => {
                    assert!(
                        a.delivery_tag > confirmed && a.delivery_tag <= 5,
                        "{t}: ack tag {} after {confirmed}",
                        a.delivery_tag
                    );
                    if !a.multiple {
                        assert_eq!(a.delivery_tag, confirmed + 1, "{t}: single ack in order");
                    }
                    confirmed = a.delivery_tag;
                }
                other => panic!("{t}: expected basic.ack, got {other:?}"),
            }
        }
        // confirm.select again is fine (idempotent).
        let reply = raw
            .call(
                1,
                AMQPClass::Confirm(proto::confirm::AMQPMethod::Select(proto::confirm::Select {
                    nowait: false,
                })),
            )
            .await;
        assert!(
            matches!(
                reply,
                AMQPClass::Confirm(proto::confirm::AMQPMethod::SelectOk(_))
            ),
            "{t}: second select-ok: {reply:?}"
        );
    }
}

compat_test! {
    #[tokio::test]
    async fn confirms_with_lapin(t: Target) {
        let (conn, ch) = t.open_confirm().await;
        let q = declare_exclusive(&t, &ch).await;
        let mut pending = Vec::new();
        for i in 0..20 {
            pending.push(
                ch.basic_publish(
                    "".into(),
                    q.as_str().into(),
                    Default::default(),
                    format!("m{i}").as_bytes(),
                    BasicProperties::default(),
                )
                .await
                .expect("publish"),
            );
        }
        let returned = ch
            .wait_for_confirms()
            .await
            .unwrap_or_else(|e| panic!("{t}: wait_for_confirms: {e}"));
        assert!(returned.is_empty(), "{t}: nothing returned");
        for p in pending {
            assert!(
                matches!(p.await, Ok(Confirmation::Ack(None))),
                "{t}: every publish acked"
            );
        }
        assert_eq!(drain(&t, &ch, &q).await.len(), 20, "{t}: all delivered");
        close(conn).await;
    }
}

compat_test! {
    #[tokio::test]
    async fn tx_and_confirm_are_exclusive(t: Target) {
        let (conn, ch) = t.open().await;
        ch.tx_select().await.expect("tx.select");
        let res = ch.confirm_select(ConfirmSelectOptions::default()).await;
        expect_error(
            &t,
            "confirm.select on a tx channel",
            res,
            406,
            "PRECONDITION_FAILED - cannot switch from tx to confirm mode",
        );
        let ch = conn.create_channel().await.expect("channel");
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .expect("confirm.select");
        let res = ch.tx_select().await;
        expect_error(
            &t,
            "tx.select on a confirm channel",
            res,
            406,
            "PRECONDITION_FAILED - cannot switch from confirm to tx mode",
        );
        close(conn).await;
    }
}

compat_test! {
    #[tokio::test]
    async fn tx_commit_and_rollback_of_publishes(t: Target) {
        let (conn, ch) = t.open().await;
        let q = declare_exclusive(&t, &ch).await;
        let tx = conn.create_channel().await.expect("channel");
        tx.tx_select().await.expect("tx.select");
        tx.basic_publish(
            "".into(),
            q.as_str().into(),
            Default::default(),
            b"one",
            BasicProperties::default(),
        )
        .await
        .expect("publish");
        tx.basic_publish(
            "".into(),
            q.as_str().into(),
            Default::default(),
            b"two",
            BasicProperties::default(),
        )
        .await
        .expect("publish");
        // A synchronous round trip on the tx channel proves the broker has the publishes.
        tx.basic_qos(0, Default::default()).await.expect("qos");
        assert!(
            get_body(&t, &ch, &q).await.is_none(),
            "{t}: uncommitted publishes are invisible"
        );
        tx.tx_commit().await.expect("commit");
        assert_eq!(
            drain(&t, &ch, &q).await,
            ["one", "two"],
            "{t}: committed publishes visible in order"
        );
        tx.basic_publish(
            "".into(),
            q.as_str().into(),
            Default::default(),
            b"three",
            BasicProperties::default(),
        )
        .await
        .expect("publish");
        tx.tx_rollback().await.expect("rollback");
        tx.tx_commit().await.expect("empty commit");
        assert!(
            get_body(&t, &ch, &q).await.is_none(),
            "{t}: rolled-back publish discarded"
        );
        close(conn).await;
    }
}

compat_test! {
    #[tokio::test]
    async fn tx_commit_and_rollback_of_acks(t: Target) {
        let (conn, ch) = t.open_confirm().await;
        let q = declare_exclusive(&t, &ch).await;
        publish_confirmed(&t, &ch, "", &q, b"a", BasicProperties::default()).await;
        publish_confirmed(&t, &ch, "", &q, b"b", BasicProperties::default()).await;
        let tx = conn.create_channel().await.expect("channel");
        tx.tx_select().await.expect("tx.select");
        let a = get(&t, &tx, &q, false).await.expect("a");
        let b = get(&t, &tx, &q, false).await.expect("b");
        tx.basic_ack(a.delivery.delivery_tag, BasicAckOptions::default())
            .await
            .expect("ack a");
        tx.tx_rollback().await.expect("rollback");
        // After rollback, a is still unacked; ack both and commit.
        tx.basic_ack(b.delivery.delivery_tag, BasicAckOptions { multiple: true })
            .await
            .expect("ack a,b");
        tx.tx_commit().await.expect("commit");
        tx.close(200, "bye".into()).await.expect("close");
        assert!(
            drain(&t, &ch, &q).await.is_empty(),
            "{t}: committed acks removed both messages"
        );

        // Acks not committed are undone when the channel closes.
        publish_confirmed(&t, &ch, "", &q, b"c", BasicProperties::default()).await;
        let tx = conn.create_channel().await.expect("channel");
        tx.tx_select().await.expect("tx.select");
        let c = get(&t, &tx, &q, false).await.expect("c");
        tx.basic_ack(c.delivery.delivery_tag, BasicAckOptions::default())
            .await
            .expect("ack c");
        tx.close(200, "bye".into()).await.expect("close");
        assert_eq!(
            warren_tests::take_n(&t, &ch, &q, 1).await,
            [("c".to_string(), true)],
            "{t}: uncommitted ack is not applied"
        );
        close(conn).await;
    }
}

compat_test! {
    #[tokio::test]
    async fn tx_commit_without_select(t: Target) {
        let (conn, ch) = t.open().await;
        let res = ch.tx_commit().await;
        expect_error(
            &t,
            "tx.commit without tx.select",
            res,
            406,
            "PRECONDITION_FAILED - channel is not transactional",
        );
        let ch = conn.create_channel().await.expect("channel");
        let res = ch.tx_rollback().await;
        expect_error(
            &t,
            "tx.rollback without tx.select",
            res,
            406,
            "PRECONDITION_FAILED - channel is not transactional",
        );
        close(conn).await;
    }
}

compat_test! {
    #[tokio::test]
    async fn bad_expiration_is_refused(t: Target) {
        for (value, text) in [
            (
                "abc",
                "PRECONDITION_FAILED - invalid expiration 'abc': no_integer",
            ),
            (
                "",
                "PRECONDITION_FAILED - invalid expiration '': no_integer",
            ),
            (
                "10abc",
                "PRECONDITION_FAILED - invalid expiration '10abc': {leftover_string,\"abc\"}",
            ),
            (
                "-1",
                "PRECONDITION_FAILED - invalid expiration '-1': {value_negative,-1}",
            ),
            (
                "1.5",
                "PRECONDITION_FAILED - invalid expiration '1.5': {leftover_string,\".5\"}",
            ),
        ] {
            let (conn, ch) = t.open_confirm().await;
            let q = declare_exclusive(&t, &ch).await;
            let pending = ch
                .basic_publish(
                    "".into(),
                    q.as_str().into(),
                    Default::default(),
                    b"x",
                    BasicProperties::default().with_expiration(value.into()),
                )
                .await
                .expect("publish is asynchronous");
            expect_error(
                &t,
                &format!("expiration {value:?}"),
                pending.await,
                406,
                text,
            );
            close(conn).await;
        }
    }
}

compat_test! {
    #[tokio::test]
    async fn expiration_zero_expires_unless_consumed_at_once(t: Target) {
        let (conn, ch) = t.open_confirm().await;
        let q = declare_exclusive(&t, &ch).await;
        publish_confirmed(
            &t,
            &ch,
            "",
            &q,
            b"gone",
            BasicProperties::default().with_expiration("0".into()),
        )
        .await;
        publish_confirmed(
            &t,
            &ch,
            "",
            &q,
            b"kept",
            BasicProperties::default().with_expiration("60000".into()),
        )
        .await;
        let m = get(&t, &ch, &q, true)
            .await
            .expect("the long-lived message");
        assert_eq!(
            m.delivery.data, b"kept",
            "{t}: expiration 0 dropped the first message"
        );
        assert_eq!(
            m.delivery
                .properties
                .expiration()
                .as_ref()
                .map(|s| s.as_str()),
            Some("60000"),
            "{t}: expiration property delivered unchanged"
        );
        close(conn).await;
    }
}

compat_test! {
    #[tokio::test]
    async fn per_queue_message_ttl(t: Target) {
        let (conn, ch) = t.open_confirm().await;
        let q = unique("ttl");
        ch.queue_declare(
            q.as_str().into(),
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            warren_tests::table(vec![("x-message-ttl", lapin::types::AMQPValue::LongInt(0))]),
        )
        .await
        .expect("declare");
        publish_confirmed(&t, &ch, "", &q, b"expires", BasicProperties::default()).await;
        assert!(
            get_body(&t, &ch, &q).await.is_none(),
            "{t}: x-message-ttl 0 expires messages with no consumer"
        );
        close(conn).await;
    }
}

compat_test! {
    #[tokio::test]
    async fn user_id_must_match_login(t: Target) {
        let (conn, ch) = t.open_confirm().await;
        let q = declare_exclusive(&t, &ch).await;
        publish_confirmed(
            &t,
            &ch,
            "",
            &q,
            b"me",
            BasicProperties::default().with_user_id("guest".into()),
        )
        .await;
        let m = get(&t, &ch, &q, true).await.expect("message");
        assert_eq!(
            m.delivery.properties.user_id().as_ref().map(|s| s.as_str()),
            Some("guest"),
            "{t}: user_id kept"
        );
        let pending = ch
            .basic_publish(
                "".into(),
                q.as_str().into(),
                Default::default(),
                b"x",
                BasicProperties::default().with_user_id("mallory".into()),
            )
            .await
            .expect("publish is asynchronous");
        expect_error(
            &t,
            "user_id mismatch",
            pending.await,
            406,
            "PRECONDITION_FAILED - user_id property set to 'mallory' but authenticated user was 'guest'",
        );
        close(conn).await;
    }
}

compat_test! {
    #[tokio::test]
    async fn channel_errors_keep_connection_alive(t: Target) {
        let (conn, _) = t.open().await;
        for _ in 0..3 {
            let ch = conn
                .create_channel()
                .await
                .unwrap_or_else(|e| panic!("{t}: channel after errors: {e}"));
            let res = ch
                .queue_declare(
                    unique("missing").as_str().into(),
                    QueueDeclareOptions {
                        passive: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await;
            assert!(
                matches!(
                    warren_tests::amqp_error(res.as_ref().unwrap_err()),
                    Some((404, _))
                ),
                "{t}: 404: {res:?}"
            );
        }
        assert!(
            conn.status().connected(),
            "{t}: connection still open after channel errors"
        );
        let ch = conn.create_channel().await.expect("channel");
        ch.confirm_select(Default::default())
            .await
            .expect("confirm");
        let q = declare_exclusive(&t, &ch).await;
        publish_confirmed(&t, &ch, "", &q, b"ok", BasicProperties::default()).await;
        assert_eq!(drain(&t, &ch, &q).await, ["ok"], "{t}: connection works");
        close(conn).await;
    }
}

compat_test! {
    #[tokio::test]
    async fn frames_after_channel_close_are_ignored_until_close_ok(t: Target) {
        let mut raw = t.raw_open().await;
        let missing = unique("missing");
        raw.send_method(
            1,
            AMQPClass::Queue(proto::queue::AMQPMethod::Declare(proto::queue::Declare {
                queue: missing.as_str().into(),
                passive: true,
                durable: false,
                exclusive: false,
                auto_delete: false,
                nowait: false,
                arguments: FieldTable::default(),
            })),
        )
        .await;
        // Keep talking on channel 1 before reading the close: the broker must drop these.
        raw.publish(1, "", "whatever", BasicProperties::default(), b"ignored")
            .await;
        raw.send_method(
            1,
            AMQPClass::Basic(proto::basic::AMQPMethod::Qos(proto::basic::Qos {
                prefetch_count: 1,
                global: false,
            })),
        )
        .await;
        match raw.recv_frame().await {
            AMQPFrame::Method(1, AMQPClass::Channel(proto::channel::AMQPMethod::Close(c))) => {
                assert_eq!(c.reply_code, 404, "{t}: channel.close code");
                assert_eq!(
                    (c.class_id, c.method_id),
                    (50, 10),
                    "{t}: blames queue.declare"
                );
            }
            other => panic!("{t}: expected channel.close, got {other:?}"),
        }
        raw.expect_silence("no reply to frames sent after the error")
            .await;
        raw.send_method(
            1,
            AMQPClass::Channel(proto::channel::AMQPMethod::CloseOk(
                proto::channel::CloseOk {},
            )),
        )
        .await;
        // The channel number can be reused after close-ok.
        raw.open_channel(1).await;
        let reply = raw
            .call(
                1,
                AMQPClass::Basic(proto::basic::AMQPMethod::Qos(proto::basic::Qos {
                    prefetch_count: 1,
                    global: false,
                })),
            )
            .await;
        assert!(
            matches!(reply, AMQPClass::Basic(proto::basic::AMQPMethod::QosOk(_))),
            "{t}: reopened channel works: {reply:?}"
        );
    }
}

compat_test! {
    #[tokio::test]
    async fn header_field_types_round_trip(t: Target) {
        use lapin::types::{AMQPValue as V, ByteArray, DecimalValue, FieldArray};
        let (conn, ch) = t.open_confirm().await;
        let q = declare_exclusive(&t, &ch).await;
        let mut array = FieldArray::default();
        array.push(V::LongInt(1));
        array.push(warren_tests::long_str("two"));
        array.push(V::Boolean(false));
        let headers = warren_tests::table(vec![
            ("bool", V::Boolean(true)),
            ("i8", V::ShortShortInt(-8)),
            ("u8", V::ShortShortUInt(200)),
            ("i16", V::ShortInt(-16000)),
            ("u16", V::ShortUInt(60000)),
            ("i32", V::LongInt(-2_000_000_000)),
            ("u32", V::LongUInt(4_000_000_000)),
            ("i64", V::LongLongInt(-9_000_000_000_000)),
            ("f32", V::Float(1.5)),
            ("f64", V::Double(-2.25)),
            (
                "decimal",
                V::DecimalValue(DecimalValue {
                    scale: 2,
                    value: 12345,
                }),
            ),
            ("string", warren_tests::long_str("héllo")),
            ("array", V::FieldArray(array)),
            ("timestamp", V::Timestamp(1_700_000_000)),
            (
                "table",
                V::FieldTable(warren_tests::table(vec![("inner", V::LongInt(7))])),
            ),
            ("bytes", V::ByteArray(ByteArray::from(vec![0u8, 1, 2, 255]))),
            ("void", V::Void),
        ]);
        let props = BasicProperties::default().with_headers(headers.clone());
        publish_confirmed(&t, &ch, "", &q, b"typed", props).await;
        let m = get(&t, &ch, &q, true).await.expect("message");
        let got = m.delivery.properties.headers().clone().unwrap_or_default();
        for (k, v) in headers.inner() {
            assert_eq!(
                got.inner().get(k),
                Some(v),
                "{t}: header {k} keeps its type and value"
            );
        }
        assert_eq!(
            got.inner().len(),
            headers.inner().len(),
            "{t}: no headers added"
        );
        close(conn).await;
    }
}

compat_test! {
    #[tokio::test]
    async fn content_header_bytes_pass_through_unchanged(t: Target) {
        let mut raw = t.raw_open().await;
        let q = unique("bytes");
        raw.declare_queue(1, &q, true).await;
        let props = BasicProperties::default()
            .with_content_type("application/msgpack".into())
            .with_headers(warren_tests::table(vec![
                ("x-warren-protocol", lapin::types::AMQPValue::LongInt(1)),
                ("traceparent", warren_tests::long_str("00-abc-def-01")),
            ]))
            .with_correlation_id("c".into())
            .with_message_id("m".into())
            .with_timestamp(42)
            .with_app_id("warren".into());
        raw.publish(1, "", &q, props.clone(), b"body").await;
        let reply = raw
            .call(
                1,
                AMQPClass::Basic(proto::basic::AMQPMethod::Get(proto::basic::Get {
                    queue: q.as_str().into(),
                    no_ack: true,
                })),
            )
            .await;
        assert!(
            matches!(reply, AMQPClass::Basic(proto::basic::AMQPMethod::GetOk(_))),
            "{t}: get-ok: {reply:?}"
        );
        match raw.recv_frame().await {
            AMQPFrame::Header(1, h) => {
                assert_eq!(h.body_size, 4, "{t}: body size");
                assert_eq!(
                    h.properties, props,
                    "{t}: properties delivered as published"
                );
                let sent = warren_tests::encode(&AMQPFrame::Header(
                    1,
                    amq_protocol::frame::AMQPContentHeader {
                        class_id: 60,
                        body_size: 4,
                        properties: props.clone(),
                    },
                ));
                let got = warren_tests::encode(&AMQPFrame::Header(1, h));
                assert_eq!(got, sent, "{t}: content header bytes identical");
            }
            other => panic!("{t}: expected a content header, got {other:?}"),
        }
        match raw.recv_frame().await {
            AMQPFrame::Body(1, b) => assert_eq!(b, b"body", "{t}: body"),
            other => panic!("{t}: expected a body, got {other:?}"),
        }
    }
}

compat_test! {
    #[tokio::test]
    async fn tx_returns_unroutable_mandatory_at_commit(t: Target) {
        let mut raw = t.raw_open().await;
        let reply = raw
            .call(
                1,
                AMQPClass::Tx(proto::tx::AMQPMethod::Select(proto::tx::Select {})),
            )
            .await;
        assert!(
            matches!(reply, AMQPClass::Tx(proto::tx::AMQPMethod::SelectOk(_))),
            "{t}: select-ok: {reply:?}"
        );
        let key = unique("nowhere");
        let mut bytes = warren_tests::encode(&AMQPFrame::Method(
            1,
            AMQPClass::Basic(proto::basic::AMQPMethod::Publish(proto::basic::Publish {
                exchange: "amq.direct".into(),
                routing_key: key.as_str().into(),
                mandatory: true,
                immediate: false,
            })),
        ));
        bytes.extend(warren_tests::encode(&AMQPFrame::Header(
            1,
            amq_protocol::frame::AMQPContentHeader {
                class_id: 60,
                body_size: 1,
                properties: BasicProperties::default(),
            },
        )));
        bytes.extend(warren_tests::encode(&AMQPFrame::Body(1, b"x".to_vec())));
        raw.send_bytes(&bytes).await;
        raw.expect_silence("no basic.return before tx.commit").await;
        raw.send_method(
            1,
            AMQPClass::Tx(proto::tx::AMQPMethod::Commit(proto::tx::Commit {})),
        )
        .await;
        match raw.recv_frame().await {
            AMQPFrame::Method(1, AMQPClass::Basic(proto::basic::AMQPMethod::Return(r))) => {
                assert_eq!(
                    (r.reply_code, r.reply_text.as_str()),
                    (312, "NO_ROUTE"),
                    "{t}: return at commit"
                );
            }
            other => panic!("{t}: expected basic.return at commit, got {other:?}"),
        }
        let mut saw_commit_ok = false;
        for _ in 0..3 {
            if let AMQPFrame::Method(1, AMQPClass::Tx(proto::tx::AMQPMethod::CommitOk(_))) =
                raw.recv_frame().await
            {
                saw_commit_ok = true;
                break;
            }
        }
        assert!(saw_commit_ok, "{t}: commit-ok after the returned message");
    }
}

compat_test! {
    #[tokio::test]
    async fn tx_rollback_of_rejects_and_nacks(t: Target) {
        use lapin::options::{BasicNackOptions, BasicRejectOptions};
        let (conn, ch) = t.open_confirm().await;
        let q = declare_exclusive(&t, &ch).await;
        publish_confirmed(&t, &ch, "", &q, b"m0", BasicProperties::default()).await;
        publish_confirmed(&t, &ch, "", &q, b"m1", BasicProperties::default()).await;
        let tx = conn.create_channel().await.expect("channel");
        tx.tx_select().await.expect("tx.select");
        let a = get(&t, &tx, &q, false).await.expect("m0");
        let b = get(&t, &tx, &q, false).await.expect("m1");
        tx.basic_reject(
            a.delivery.delivery_tag,
            BasicRejectOptions { requeue: true },
        )
        .await
        .expect("reject");
        tx.basic_nack(
            b.delivery.delivery_tag,
            BasicNackOptions {
                multiple: false,
                requeue: false,
            },
        )
        .await
        .expect("nack");
        tx.tx_rollback().await.expect("rollback");
        let passive = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let count = |ch: &lapin::Channel| {
            let ch = ch.clone();
            let q = q.clone();
            async move {
                ch.queue_declare(q.as_str().into(), passive, FieldTable::default())
                    .await
                    .expect("passive declare")
                    .message_count()
            }
        };
        assert_eq!(
            count(&ch).await,
            0,
            "{t}: rolled-back reject and nack leave both unacked"
        );
        tx.basic_reject(
            a.delivery.delivery_tag,
            BasicRejectOptions { requeue: true },
        )
        .await
        .expect("reject again");
        tx.tx_commit().await.expect("commit");
        assert_eq!(count(&ch).await, 1, "{t}: the committed reject requeued m0");
        tx.close(200, "bye".into()).await.expect("close");
        let left = warren_tests::take_n(&t, &ch, &q, 2).await;
        assert_eq!(
            left,
            [("m0".to_string(), true), ("m1".to_string(), true)],
            "{t}: m1, never settled, came back when the channel closed"
        );
        close(conn).await;
    }
}
