//! Exchange compatibility: declare/delete/bind/unbind and their errors, routing by every
//! exchange type (direct, fanout, topic, headers), predeclared `amq.*` exchanges,
//! exchange-to-exchange bindings, alternate exchanges, internal and auto-delete exchanges.
//!
//! Routing is checked without sleeps: publish on a confirm-mode channel (RabbitMQ confirms a
//! routed message once every queue has it), then read each queue with basic.get.

use lapin::{
    options::{
        BasicPublishOptions, ExchangeBindOptions, ExchangeDeclareOptions, ExchangeDeleteOptions,
        ExchangeUnbindOptions, QueueBindOptions,
    },
    types::{AMQPValue, FieldTable},
    BasicProperties, Channel, Confirmation, ExchangeKind,
};
use warren_tests::{
    close, compat_test, declare_exclusive, drain, expect_error, get_body, long_str,
    publish_confirmed, publish_with, table, unique, Target,
};

async fn declare(
    t: &Target,
    ch: &Channel,
    name: &str,
    kind: ExchangeKind,
    opts: ExchangeDeclareOptions,
    args: FieldTable,
) {
    ch.exchange_declare(name.into(), kind, opts, args)
        .await
        .unwrap_or_else(|e| panic!("{t}: exchange.declare {name}: {e}"));
}

async fn bind(t: &Target, ch: &Channel, queue: &str, exchange: &str, key: &str, args: FieldTable) {
    ch.queue_bind(
        queue.into(),
        exchange.into(),
        key.into(),
        QueueBindOptions::default(),
        args,
    )
    .await
    .unwrap_or_else(|e| panic!("{t}: queue.bind {queue} to {exchange} with {key:?}: {e}"));
}

fn auto_delete() -> ExchangeDeclareOptions {
    ExchangeDeclareOptions {
        auto_delete: true,
        ..Default::default()
    }
}

compat_test! {
    #[tokio::test]
    async fn declare_is_idempotent_and_passive_finds_it(t: Target) {
        let (conn, ch) = t.open().await;
        let x = unique("x");
        declare(
            &t,
            &ch,
            &x,
            ExchangeKind::Direct,
            Default::default(),
            FieldTable::default(),
        )
        .await;
        declare(
            &t,
            &ch,
            &x,
            ExchangeKind::Direct,
            Default::default(),
            FieldTable::default(),
        )
        .await;
        let passive = ExchangeDeclareOptions {
            passive: true,
            ..Default::default()
        };
        // A passive declare ignores the type.
        declare(
            &t,
            &ch,
            &x,
            ExchangeKind::Fanout,
            passive,
            FieldTable::default(),
        )
        .await;
        ch.exchange_delete(x.as_str().into(), ExchangeDeleteOptions::default())
            .await
            .unwrap_or_else(|e| panic!("{t}: exchange.delete: {e}"));
        let res = ch
            .exchange_declare(
                x.as_str().into(),
                ExchangeKind::Direct,
                passive,
                FieldTable::default(),
            )
            .await;
        expect_error(
            &t,
            "passive declare of deleted exchange",
            res,
            404,
            &format!("NOT_FOUND - no exchange '{x}' in vhost '/'"),
        );
        close(conn).await;
    }
}

compat_test! {
    #[tokio::test]
    async fn passive_declare_of_missing_exchange_closes_channel_only(t: Target) {
        let (conn, ch) = t.open().await;
        let x = unique("missing");
        let passive = ExchangeDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let res = ch
            .exchange_declare(
                x.as_str().into(),
                ExchangeKind::Direct,
                passive,
                FieldTable::default(),
            )
            .await;
        expect_error(
            &t,
            "passive declare",
            res,
            404,
            &format!("NOT_FOUND - no exchange '{x}' in vhost '/'"),
        );
        assert!(!ch.status().connected(), "{t}: channel closed after 404");
        // The connection survives a channel error.
        let ch2 = conn
            .create_channel()
            .await
            .unwrap_or_else(|e| panic!("{t}: new channel after channel error: {e}"));
        declare(
            &t,
            &ch2,
            "amq.direct",
            ExchangeKind::Direct,
            passive,
            FieldTable::default(),
        )
        .await;
        close(conn).await;
    }
}

compat_test! {
    #[tokio::test]
    async fn redeclare_with_other_type_or_flags_is_precondition_failed(t: Target) {
        let (conn, ch) = t.open().await;
        let x = unique("x");
        declare(
            &t,
            &ch,
            &x,
            ExchangeKind::Direct,
            auto_delete(),
            FieldTable::default(),
        )
        .await;
        let res = ch
            .exchange_declare(
                x.as_str().into(),
                ExchangeKind::Fanout,
                auto_delete(),
                FieldTable::default(),
            )
            .await;
        expect_error(
            &t,
            "redeclare with other type",
            res,
            406,
            &format!(
                "PRECONDITION_FAILED - inequivalent arg 'type' for exchange '{x}' in vhost '/': \
                 received 'fanout' but current is 'direct'"
            ),
        );
        let ch = conn.create_channel().await.expect("channel");
        let res = ch
            .exchange_declare(
                x.as_str().into(),
                ExchangeKind::Direct,
                ExchangeDeclareOptions {
                    durable: true,
                    auto_delete: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await;
        expect_error(
            &t,
            "redeclare with other durable flag",
            res,
            406,
            &format!(
                "PRECONDITION_FAILED - inequivalent arg 'durable' for exchange '{x}' in vhost '/': \
                 received 'true' but current is 'false'"
            ),
        );
        let ch = conn.create_channel().await.expect("channel");
        ch.exchange_delete(x.as_str().into(), Default::default())
            .await
            .expect("delete");
        close(conn).await;
    }
}

compat_test! {
    #[tokio::test]
    async fn reserved_names_and_unknown_type(t: Target) {
        let (conn, ch) = t.open().await;
        let res = ch
            .exchange_declare(
                "amq.warren-test".into(),
                ExchangeKind::Direct,
                Default::default(),
                FieldTable::default(),
            )
            .await;
        expect_error(
            &t,
            "declare amq.*",
            res,
            403,
            "ACCESS_REFUSED - exchange name 'amq.warren-test' contains reserved prefix 'amq.*'",
        );
        let ch = conn.create_channel().await.expect("channel");
        let x = unique("x");
        let res = ch
            .exchange_declare(
                x.as_str().into(),
                ExchangeKind::Custom("no-such-type".into()),
                Default::default(),
                FieldTable::default(),
            )
            .await;
        match res {
            Ok(()) => panic!("{t}: unknown exchange type accepted"),
            Err(e) => {
                let (code, text) =
                    warren_tests::amqp_error(&e).unwrap_or_else(|| panic!("{t}: {e:?}"));
                assert_eq!(
                    (code, text.as_str()),
                    (
                        503,
                        "COMMAND_INVALID - unknown exchange type 'no-such-type'"
                    ),
                    "{t}: unknown exchange type"
                );
            }
        }
        target_healthy_after(&t).await;
        close(conn).await;
    }
}

async fn target_healthy_after(t: &Target) {
    t.assert_healthy().await;
}

compat_test! {
    #[tokio::test]
    async fn predeclared_amq_exchanges_exist_and_route(t: Target) {
        let (conn, ch) = t.open_confirm().await;
        let passive = ExchangeDeclareOptions {
            passive: true,
            ..Default::default()
        };
        for (name, kind) in [
            ("amq.direct", ExchangeKind::Direct),
            ("amq.fanout", ExchangeKind::Fanout),
            ("amq.topic", ExchangeKind::Topic),
            ("amq.headers", ExchangeKind::Headers),
            ("amq.match", ExchangeKind::Headers),
        ] {
            declare(&t, &ch, name, kind.clone(), passive, FieldTable::default()).await;
            // Redeclaring with the same type and flags (durable) is allowed.
            declare(
                &t,
                &ch,
                name,
                kind,
                ExchangeDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await;
        }
        let q = declare_exclusive(&t, &ch).await;
        let key = unique("rk");
        bind(&t, &ch, &q, "amq.direct", &key, FieldTable::default()).await;
        publish_confirmed(
            &t,
            &ch,
            "amq.direct",
            &key,
            b"via amq.direct",
            BasicProperties::default(),
        )
        .await;
        assert_eq!(
            drain(&t, &ch, &q).await,
            ["via amq.direct"],
            "{t}: amq.direct routes"
        );
        // Deleting a predeclared exchange is refused.
        let res = ch
            .exchange_delete("amq.direct".into(), Default::default())
            .await;
        expect_error(
            &t,
            "delete amq.direct",
            res,
            403,
            "ACCESS_REFUSED - deletion of system exchange 'amq.direct' in vhost '/' not allowed",
        );
        close(conn).await;
    }
}

compat_test! {
    #[tokio::test]
    async fn default_exchange_rules(t: Target) {
        let (conn, ch) = t.open_confirm().await;
        let q = declare_exclusive(&t, &ch).await;
        publish_confirmed(&t, &ch, "", &q, b"by name", BasicProperties::default()).await;
        assert_eq!(
            drain(&t, &ch, &q).await,
            ["by name"],
            "{t}: default exchange routes by queue name"
        );
        let res = ch
            .queue_bind(
                q.as_str().into(),
                "".into(),
                "k".into(),
                Default::default(),
                FieldTable::default(),
            )
            .await;
        expect_error(
            &t,
            "bind to default exchange",
            res,
            403,
            "ACCESS_REFUSED - operation not permitted on the default exchange",
        );
        let ch = conn.create_channel().await.expect("channel");
        let res = ch.exchange_delete("".into(), Default::default()).await;
        expect_error(
            &t,
            "delete default exchange",
            res,
            403,
            "ACCESS_REFUSED - operation not permitted on the default exchange",
        );
        close(conn).await;
    }
}

compat_test! {
    #[tokio::test]
    async fn direct_routing(t: Target) {
        let (conn, ch) = t.open_confirm().await;
        let x = unique("direct");
        declare(
            &t,
            &ch,
            &x,
            ExchangeKind::Direct,
            auto_delete(),
            FieldTable::default(),
        )
        .await;
        let qa = declare_exclusive(&t, &ch).await;
        let qb = declare_exclusive(&t, &ch).await;
        bind(&t, &ch, &qa, &x, "a", FieldTable::default()).await;
        bind(&t, &ch, &qb, &x, "b", FieldTable::default()).await;
        bind(&t, &ch, &qb, &x, "a", FieldTable::default()).await;
        // The same binding twice is one binding: no duplicate delivery.
        bind(&t, &ch, &qb, &x, "a", FieldTable::default()).await;
        for key in ["a", "b", "c", "A", ""] {
            publish_confirmed(&t, &ch, &x, key, key.as_bytes(), BasicProperties::default()).await;
        }
        assert_eq!(drain(&t, &ch, &qa).await, ["a"], "{t}: queue bound with a");
        assert_eq!(
            drain(&t, &ch, &qb).await,
            ["a", "b"],
            "{t}: queue bound with a and b"
        );
        ch.queue_unbind(
            qb.as_str().into(),
            x.as_str().into(),
            "a".into(),
            FieldTable::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("{t}: unbind: {e}"));
        publish_confirmed(
            &t,
            &ch,
            &x,
            "a",
            b"after unbind",
            BasicProperties::default(),
        )
        .await;
        assert_eq!(
            drain(&t, &ch, &qa).await,
            ["after unbind"],
            "{t}: qa still bound"
        );
        assert!(
            drain(&t, &ch, &qb).await.is_empty(),
            "{t}: qb unbound from a"
        );
        close(conn).await;
    }
}

compat_test! {
    #[tokio::test]
    async fn fanout_routing_ignores_key(t: Target) {
        let (conn, ch) = t.open_confirm().await;
        let x = unique("fanout");
        declare(
            &t,
            &ch,
            &x,
            ExchangeKind::Fanout,
            auto_delete(),
            FieldTable::default(),
        )
        .await;
        let qs = [
            declare_exclusive(&t, &ch).await,
            declare_exclusive(&t, &ch).await,
            declare_exclusive(&t, &ch).await,
        ];
        for (i, q) in qs.iter().enumerate() {
            bind(
                &t,
                &ch,
                q,
                &x,
                &format!("ignored-{i}"),
                FieldTable::default(),
            )
            .await;
        }
        publish_confirmed(&t, &ch, &x, "anything", b"one", BasicProperties::default()).await;
        publish_confirmed(&t, &ch, &x, "", b"two", BasicProperties::default()).await;
        for q in &qs {
            assert_eq!(
                drain(&t, &ch, q).await,
                ["one", "two"],
                "{t}: every fanout queue"
            );
        }
        close(conn).await;
    }
}

/// (binding pattern, keys it matches), recorded from RabbitMQ 3.10 for the keys in `TOPIC_KEYS`.
const TOPIC_CASES: &[(&str, &[&str])] = &[
    ("a.*.c", &["a.b.c"]),
    (
        "a.#",
        &[
            "a.b.c", "a", "a.b", "a..b", "a.x.y.b", "a.b.b", "a.", "a.b.c.d",
        ],
    ),
    ("#", TOPIC_KEYS),
    ("*", &["a", "b"]),
    ("a.#.b", &["a.b", "a..b", "a.x.y.b", "a.b.b"]),
    ("#.a", &["a", "b.a", ".a"]),
    ("a..b", &["a..b"]),
    ("*.*", &["a.b", "b.a", ".", "a.", ".a", "x.b"]),
    ("", &[""]),
    ("a.*", &["a.b", "a."]),
    ("#.#", TOPIC_KEYS),
    (
        "a.*.#",
        &["a.b.c", "a.b", "a..b", "a.x.y.b", "a.b.b", "a.", "a.b.c.d"],
    ),
    (
        "#.b.#",
        &[
            "a.b.c", "a.b", "a..b", "b.a", "a.x.y.b", "a.b.b", "b", "a.b.c.d", "x.b",
        ],
    ),
    (
        "*.#",
        &[
            "a.b.c", "a", "a.b", "a..b", "b.a", "a.x.y.b", "a.b.b", ".", "a.", ".a", "b",
            "a.b.c.d", "x.b",
        ],
    ),
    ("a.#.#.b", &["a.b", "a..b", "a.x.y.b", "a.b.b"]),
    (".a", &[".a"]),
    ("a.", &["a."]),
    (".", &["."]),
    ("*..*", &["a..b"]),
];

const TOPIC_KEYS: &[&str] = &[
    "a.b.c", "a", "a.b", "", "a..b", "b.a", "a.x.y.b", "a.b.b", ".", "a.", ".a", "b", "a.b.c.d",
    "x.b",
];

compat_test! {
    #[tokio::test]
    async fn topic_routing_wildcards_and_empty_words(t: Target) {
        let (conn, ch) = t.open_confirm().await;
        let x = unique("topic");
        declare(
            &t,
            &ch,
            &x,
            ExchangeKind::Topic,
            auto_delete(),
            FieldTable::default(),
        )
        .await;
        let mut queues = Vec::new();
        for (pattern, _) in TOPIC_CASES {
            let q = declare_exclusive(&t, &ch).await;
            bind(&t, &ch, &q, &x, pattern, FieldTable::default()).await;
            queues.push(q);
        }
        for key in TOPIC_KEYS {
            let body = if key.is_empty() { "<empty>" } else { key };
            publish_confirmed(
                &t,
                &ch,
                &x,
                key,
                body.as_bytes(),
                BasicProperties::default(),
            )
            .await;
        }
        for ((pattern, expected), q) in TOPIC_CASES.iter().zip(&queues) {
            let expected: Vec<&str> = expected
                .iter()
                .map(|k| if k.is_empty() { "<empty>" } else { k })
                .collect();
            assert_eq!(
                drain(&t, &ch, q).await,
                expected,
                "{t}: topic pattern {pattern:?}"
            );
        }
        close(conn).await;
    }
}

compat_test! {
    #[tokio::test]
    async fn headers_routing_match_kinds(t: Target) {
        let (conn, ch) = t.open_confirm().await;
        let x = unique("headers");
        declare(
            &t,
            &ch,
            &x,
            ExchangeKind::Headers,
            auto_delete(),
            FieldTable::default(),
        )
        .await;
        let s = long_str;
        let bindings: Vec<(&str, FieldTable, &[&str])> = vec![
            (
                "all_ab",
                table(vec![("x-match", s("all")), ("a", s("1")), ("b", s("2"))]),
                &["m_a1b2", "m_a1b2c"],
            ),
            (
                "any_ab",
                table(vec![("x-match", s("any")), ("a", s("1")), ("b", s("2"))]),
                &["m_a1b2", "m_a1", "m_b2", "m_a1b3", "m_a1xk", "m_a1b2c"],
            ),
            (
                "default_is_all",
                table(vec![("a", s("1")), ("b", s("2"))]),
                &["m_a1b2", "m_a1b2c"],
            ),
            (
                "all_ignores_x",
                table(vec![("x-match", s("all")), ("a", s("1")), ("x-k", s("v"))]),
                &["m_a1b2", "m_a1", "m_a1b3", "m_a1xk", "m_a1b2c"],
            ),
            (
                "all_with_x",
                table(vec![
                    ("x-match", s("all-with-x")),
                    ("a", s("1")),
                    ("x-k", s("v")),
                ]),
                &["m_a1xk"],
            ),
            (
                "any_ignores_x",
                table(vec![("x-match", s("any")), ("x-k", s("v"))]),
                &[],
            ),
            (
                "any_with_x",
                table(vec![("x-match", s("any-with-x")), ("x-k", s("v"))]),
                &["m_a1xk", "m_xk"],
            ),
            (
                "all_empty",
                table(vec![("x-match", s("all"))]),
                &[
                    "m_a1b2", "m_a1", "m_b2", "m_a1b3", "m_none", "m_empty", "m_a1xk", "m_xk",
                    "m_aint1", "m_a1b2c", "m_along1",
                ],
            ),
            ("any_empty", table(vec![("x-match", s("any"))]), &[]),
            // Numbers compare by value across integer types, never equal to a string.
            (
                "int_a",
                table(vec![("a", AMQPValue::LongInt(1))]),
                &["m_aint1", "m_along1"],
            ),
            // A void value means "present, any value".
            (
                "void_b",
                table(vec![("b", AMQPValue::Void)]),
                &["m_a1b2", "m_b2", "m_a1b3", "m_a1b2c"],
            ),
        ];
        let mut queues = Vec::new();
        for (name, args, _) in &bindings {
            let q = declare_exclusive(&t, &ch).await;
            bind(&t, &ch, &q, &x, name, args.clone()).await;
            queues.push(q);
        }
        let messages: Vec<(&str, Option<FieldTable>)> = vec![
            ("m_a1b2", Some(table(vec![("a", s("1")), ("b", s("2"))]))),
            ("m_a1", Some(table(vec![("a", s("1"))]))),
            ("m_b2", Some(table(vec![("b", s("2"))]))),
            ("m_a1b3", Some(table(vec![("a", s("1")), ("b", s("3"))]))),
            ("m_none", None),
            ("m_empty", Some(FieldTable::default())),
            ("m_a1xk", Some(table(vec![("a", s("1")), ("x-k", s("v"))]))),
            ("m_xk", Some(table(vec![("x-k", s("v"))]))),
            ("m_aint1", Some(table(vec![("a", AMQPValue::LongInt(1))]))),
            (
                "m_a1b2c",
                Some(table(vec![("a", s("1")), ("b", s("2")), ("c", s("3"))])),
            ),
            (
                "m_along1",
                Some(table(vec![("a", AMQPValue::LongLongInt(1))])),
            ),
        ];
        for (name, headers) in messages {
            let props = match headers {
                Some(h) => BasicProperties::default().with_headers(h),
                None => BasicProperties::default(),
            };
            publish_confirmed(&t, &ch, &x, "ignored", name.as_bytes(), props).await;
        }
        for ((name, _, expected), q) in bindings.iter().zip(&queues) {
            assert_eq!(
                drain(&t, &ch, q).await,
                *expected,
                "{t}: headers binding {name}"
            );
        }
        close(conn).await;
    }
}

compat_test! {
    #[tokio::test]
    async fn headers_invalid_x_match_is_refused(t: Target) {
        let (conn, ch) = t.open().await;
        let x = unique("headers");
        declare(
            &t,
            &ch,
            &x,
            ExchangeKind::Headers,
            auto_delete(),
            FieldTable::default(),
        )
        .await;
        let q = declare_exclusive(&t, &ch).await;
        let res = ch
            .queue_bind(
                q.as_str().into(),
                x.as_str().into(),
                "".into(),
                QueueBindOptions::default(),
                table(vec![("x-match", long_str("some"))]),
            )
            .await;
        expect_error(
            &t,
            "x-match some",
            res,
            406,
            "PRECONDITION_FAILED - Invalid x-match field value <<\"some\">>; expected all, any, all-with-x, or any-with-x",
        );
        close(conn).await;
        t.delete_exchanges(&[&x]).await;
    }
}

compat_test! {
    #[tokio::test]
    async fn bind_errors(t: Target) {
        let (conn, ch) = t.open().await;
        let x = unique("x");
        let missing_q = unique("missing-q");
        let missing_x = unique("missing-x");
        declare(
            &t,
            &ch,
            &x,
            ExchangeKind::Direct,
            auto_delete(),
            FieldTable::default(),
        )
        .await;
        let q = declare_exclusive(&t, &ch).await;

        let res = ch
            .queue_bind(
                q.as_str().into(),
                missing_x.as_str().into(),
                "k".into(),
                Default::default(),
                FieldTable::default(),
            )
            .await;
        expect_error(
            &t,
            "bind to missing exchange",
            res,
            404,
            &format!("NOT_FOUND - no exchange '{missing_x}' in vhost '/'"),
        );

        let ch = conn.create_channel().await.expect("channel");
        let res = ch
            .queue_bind(
                missing_q.as_str().into(),
                x.as_str().into(),
                "k".into(),
                Default::default(),
                FieldTable::default(),
            )
            .await;
        expect_error(
            &t,
            "bind missing queue",
            res,
            404,
            &format!("NOT_FOUND - no queue '{missing_q}' in vhost '/'"),
        );

        let ch = conn.create_channel().await.expect("channel");
        // Unbinding something never bound is fine.
        ch.queue_unbind(
            q.as_str().into(),
            x.as_str().into(),
            "never".into(),
            FieldTable::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("{t}: unbind of missing binding: {e}"));
        let res = ch
            .exchange_bind(
                x.as_str().into(),
                missing_x.as_str().into(),
                "k".into(),
                Default::default(),
                FieldTable::default(),
            )
            .await;
        expect_error(
            &t,
            "e2e bind from missing source",
            res,
            404,
            &format!("NOT_FOUND - no exchange '{missing_x}' in vhost '/'"),
        );
        close(conn).await;
        t.delete_exchanges(&[&x]).await;
    }
}

compat_test! {
    #[tokio::test]
    async fn delete_missing_exchange_is_ok_and_if_unused(t: Target) {
        let (conn, ch) = t.open().await;
        let missing = unique("missing");
        ch.exchange_delete(missing.as_str().into(), Default::default())
            .await
            .unwrap_or_else(|e| panic!("{t}: delete of missing exchange: {e}"));
        let x = unique("x");
        declare(
            &t,
            &ch,
            &x,
            ExchangeKind::Direct,
            Default::default(),
            FieldTable::default(),
        )
        .await;
        let q = declare_exclusive(&t, &ch).await;
        bind(&t, &ch, &q, &x, "k", FieldTable::default()).await;
        let res = ch
            .exchange_delete(
                x.as_str().into(),
                ExchangeDeleteOptions {
                    if_unused: true,
                    ..Default::default()
                },
            )
            .await;
        expect_error(
            &t,
            "delete if-unused with a binding",
            res,
            406,
            &format!("PRECONDITION_FAILED - exchange '{x}' in vhost '/' in use"),
        );
        let ch = conn.create_channel().await.expect("channel");
        ch.queue_unbind(
            q.as_str().into(),
            x.as_str().into(),
            "k".into(),
            FieldTable::default(),
        )
        .await
        .expect("unbind");
        ch.exchange_delete(
            x.as_str().into(),
            ExchangeDeleteOptions {
                if_unused: true,
                ..Default::default()
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{t}: delete if-unused without bindings: {e}"));
        close(conn).await;
    }
}

compat_test! {
    #[tokio::test]
    async fn exchange_to_exchange_bindings(t: Target) {
        let (conn, ch) = t.open_confirm().await;
        let src = unique("src");
        let dst = unique("dst");
        let dst2 = unique("dst2");
        declare(
            &t,
            &ch,
            &src,
            ExchangeKind::Topic,
            Default::default(),
            FieldTable::default(),
        )
        .await;
        declare(
            &t,
            &ch,
            &dst,
            ExchangeKind::Fanout,
            Default::default(),
            FieldTable::default(),
        )
        .await;
        declare(
            &t,
            &ch,
            &dst2,
            ExchangeKind::Direct,
            Default::default(),
            FieldTable::default(),
        )
        .await;
        let q = declare_exclusive(&t, &ch).await;
        let q2 = declare_exclusive(&t, &ch).await;
        bind(&t, &ch, &q, &dst, "", FieldTable::default()).await;
        bind(&t, &ch, &q2, &dst2, "k.x", FieldTable::default()).await;
        // Also bind q directly to src: a message reaching q by two paths arrives once.
        bind(&t, &ch, &q, &src, "k.*", FieldTable::default()).await;
        ch.exchange_bind(
            dst.as_str().into(),
            src.as_str().into(),
            "k.*".into(),
            ExchangeBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("{t}: exchange.bind: {e}"));
        ch.exchange_bind(
            dst2.as_str().into(),
            src.as_str().into(),
            "#".into(),
            ExchangeBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("{t}: exchange.bind: {e}"));
        // A cycle back to the source must not loop or duplicate.
        ch.exchange_bind(
            src.as_str().into(),
            dst.as_str().into(),
            "".into(),
            ExchangeBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("{t}: exchange.bind cycle: {e}"));
        for key in ["k.x", "k.y", "other"] {
            publish_confirmed(
                &t,
                &ch,
                &src,
                key,
                key.as_bytes(),
                BasicProperties::default(),
            )
            .await;
        }
        assert_eq!(
            drain(&t, &ch, &q).await,
            ["k.x", "k.y"],
            "{t}: via src -> dst (fanout) and directly, once each"
        );
        assert_eq!(
            drain(&t, &ch, &q2).await,
            ["k.x"],
            "{t}: via src -> dst2 (direct, key k.x)"
        );
        ch.exchange_unbind(
            dst.as_str().into(),
            src.as_str().into(),
            "k.*".into(),
            ExchangeUnbindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("{t}: exchange.unbind: {e}"));
        ch.queue_unbind(
            q.as_str().into(),
            src.as_str().into(),
            "k.*".into(),
            FieldTable::default(),
        )
        .await
        .expect("queue.unbind");
        publish_confirmed(&t, &ch, &src, "k.z", b"after", BasicProperties::default()).await;
        assert!(drain(&t, &ch, &q).await.is_empty(), "{t}: unbound");
        close(conn).await;
        t.delete_exchanges(&[&src, &dst, &dst2]).await;
    }
}

compat_test! {
    #[tokio::test]
    async fn alternate_exchange_takes_unroutable(t: Target) {
        let (conn, ch) = t.open_confirm().await;
        let ae = unique("ae");
        let x = unique("x");
        declare(
            &t,
            &ch,
            &ae,
            ExchangeKind::Fanout,
            Default::default(),
            FieldTable::default(),
        )
        .await;
        declare(
            &t,
            &ch,
            &x,
            ExchangeKind::Direct,
            Default::default(),
            table(vec![("alternate-exchange", long_str(&ae))]),
        )
        .await;
        let routed = declare_exclusive(&t, &ch).await;
        let unrouted = declare_exclusive(&t, &ch).await;
        bind(&t, &ch, &routed, &x, "yes", FieldTable::default()).await;
        bind(&t, &ch, &unrouted, &ae, "", FieldTable::default()).await;
        publish_confirmed(&t, &ch, &x, "yes", b"routed", BasicProperties::default()).await;
        // Mandatory is satisfied by the alternate exchange: no basic.return.
        let c = publish_with(
            &t,
            &ch,
            &x,
            "no",
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            b"to ae",
            BasicProperties::default(),
        )
        .await;
        assert!(
            matches!(c, Confirmation::Ack(None)),
            "{t}: unroutable with AE is acked, not returned: {c:?}"
        );
        assert_eq!(
            drain(&t, &ch, &routed).await,
            ["routed"],
            "{t}: routed normally"
        );
        assert_eq!(
            drain(&t, &ch, &unrouted).await,
            ["to ae"],
            "{t}: unroutable went to the alternate exchange"
        );
        close(conn).await;
        t.delete_exchanges(&[&x, &ae]).await;
    }
}

compat_test! {
    #[tokio::test]
    async fn missing_alternate_exchange_means_unroutable(t: Target) {
        let (conn, ch) = t.open_confirm().await;
        let x = unique("x");
        declare(
            &t,
            &ch,
            &x,
            ExchangeKind::Direct,
            auto_delete(),
            table(vec![("alternate-exchange", long_str(&unique("nowhere")))]),
        )
        .await;
        let c = publish_with(
            &t,
            &ch,
            &x,
            "k",
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            b"lost",
            BasicProperties::default(),
        )
        .await;
        match c {
            Confirmation::Ack(Some(ret)) => assert_eq!(
                (ret.reply_code, ret.reply_text.as_str()),
                (312, "NO_ROUTE"),
                "{t}: returned"
            ),
            other => panic!("{t}: expected ack with a basic.return, got {other:?}"),
        }
        close(conn).await;
        t.delete_exchanges(&[&x]).await;
    }
}

compat_test! {
    #[tokio::test]
    async fn internal_exchange_refuses_publish_but_routes_e2e(t: Target) {
        let (conn, ch) = t.open_confirm().await;
        let internal = unique("internal");
        let front = unique("front");
        declare(
            &t,
            &ch,
            &internal,
            ExchangeKind::Fanout,
            ExchangeDeclareOptions {
                internal: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await;
        declare(
            &t,
            &ch,
            &front,
            ExchangeKind::Fanout,
            Default::default(),
            FieldTable::default(),
        )
        .await;
        let q = declare_exclusive(&t, &ch).await;
        bind(&t, &ch, &q, &internal, "", FieldTable::default()).await;
        ch.exchange_bind(
            internal.as_str().into(),
            front.as_str().into(),
            "".into(),
            Default::default(),
            FieldTable::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("{t}: bind internal to front: {e}"));
        publish_confirmed(&t, &ch, &front, "", b"through", BasicProperties::default()).await;
        assert_eq!(
            drain(&t, &ch, &q).await,
            ["through"],
            "{t}: internal exchange routes e2e traffic"
        );

        let pending = ch
            .basic_publish(
                internal.as_str().into(),
                "".into(),
                Default::default(),
                b"direct",
                BasicProperties::default(),
            )
            .await
            .expect("publish is asynchronous");
        let res = pending.await;
        expect_error(
            &t,
            "publish to internal exchange",
            res,
            403,
            &format!(
                "ACCESS_REFUSED - cannot publish to internal exchange '{internal}' in vhost '/'"
            ),
        );
        close(conn).await;
        t.delete_exchanges(&[&internal, &front]).await;
    }
}

compat_test! {
    #[tokio::test]
    async fn publish_to_missing_exchange_closes_channel(t: Target) {
        let (conn, ch) = t.open_confirm().await;
        let missing = unique("missing");
        let pending = ch
            .basic_publish(
                missing.as_str().into(),
                "k".into(),
                Default::default(),
                b"x",
                BasicProperties::default(),
            )
            .await
            .expect("publish is asynchronous");
        expect_error(
            &t,
            "publish to missing exchange",
            pending.await,
            404,
            &format!("NOT_FOUND - no exchange '{missing}' in vhost '/'"),
        );
        let ch2 = conn
            .create_channel()
            .await
            .unwrap_or_else(|e| panic!("{t}: connection survives: {e}"));
        let q = declare_exclusive(&t, &ch2).await;
        assert!(
            get_body(&t, &ch2, &q).await.is_none(),
            "{t}: new channel works"
        );
        close(conn).await;
    }
}

compat_test! {
    #[tokio::test]
    async fn auto_delete_exchange_goes_with_last_binding(t: Target) {
        let (conn, ch) = t.open().await;
        let x = unique("autodel");
        declare(
            &t,
            &ch,
            &x,
            ExchangeKind::Direct,
            auto_delete(),
            FieldTable::default(),
        )
        .await;
        // Never bound: it stays.
        let passive = ExchangeDeclareOptions {
            passive: true,
            ..Default::default()
        };
        declare(
            &t,
            &ch,
            &x,
            ExchangeKind::Direct,
            passive,
            FieldTable::default(),
        )
        .await;
        let q1 = declare_exclusive(&t, &ch).await;
        let q2 = declare_exclusive(&t, &ch).await;
        bind(&t, &ch, &q1, &x, "a", FieldTable::default()).await;
        bind(&t, &ch, &q2, &x, "b", FieldTable::default()).await;
        ch.queue_unbind(
            q1.as_str().into(),
            x.as_str().into(),
            "a".into(),
            FieldTable::default(),
        )
        .await
        .expect("unbind");
        declare(
            &t,
            &ch,
            &x,
            ExchangeKind::Direct,
            passive,
            FieldTable::default(),
        )
        .await;
        // Deleting the last bound queue removes the binding and so the exchange.
        ch.queue_delete(q2.as_str().into(), Default::default())
            .await
            .expect("queue.delete");
        let res = ch
            .exchange_declare(
                x.as_str().into(),
                ExchangeKind::Direct,
                passive,
                FieldTable::default(),
            )
            .await;
        expect_error(
            &t,
            "auto-delete exchange after last binding",
            res,
            404,
            &format!("NOT_FOUND - no exchange '{x}' in vhost '/'"),
        );
        close(conn).await;
    }
}

compat_test! {
    #[tokio::test]
    async fn default_exchange_declare_and_passive(t: Target) {
        let (conn, _) = t.open().await;
        for passive in [true, false] {
            let ch = conn.create_channel().await.expect("channel");
            let res = ch
                .exchange_declare(
                    "".into(),
                    ExchangeKind::Direct,
                    ExchangeDeclareOptions {
                        passive,
                        durable: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await;
            expect_error(
                &t,
                &format!("declare of the default exchange, passive={passive}"),
                res,
                403,
                "ACCESS_REFUSED - operation not permitted on the default exchange",
            );
        }
        close(conn).await;
    }
}

compat_test! {
    #[tokio::test]
    async fn redeclare_with_other_arguments(t: Target) {
        let (conn, ch) = t.open().await;
        let x = unique("x");
        let ae1 = unique("ae1");
        declare(
            &t,
            &ch,
            &x,
            ExchangeKind::Direct,
            auto_delete(),
            table(vec![("alternate-exchange", long_str(&ae1))]),
        )
        .await;
        let res = ch
            .exchange_declare(
                x.as_str().into(),
                ExchangeKind::Direct,
                auto_delete(),
                table(vec![("alternate-exchange", long_str("other"))]),
            )
            .await;
        expect_error(
            &t,
            "redeclare with another alternate-exchange",
            res,
            406,
            &format!(
                "PRECONDITION_FAILED - inequivalent arg 'alternate-exchange' for exchange '{x}' \
                 in vhost '/': received 'other' but current is '{ae1}'"
            ),
        );
        // Arguments RabbitMQ does not know are not compared.
        let ch = conn.create_channel().await.expect("channel");
        declare(
            &t,
            &ch,
            &x,
            ExchangeKind::Direct,
            auto_delete(),
            table(vec![
                ("alternate-exchange", long_str(&ae1)),
                ("x-unknown", long_str("ignored")),
            ]),
        )
        .await;
        let res = ch
            .exchange_declare(
                x.as_str().into(),
                ExchangeKind::Direct,
                ExchangeDeclareOptions::default(),
                table(vec![("alternate-exchange", long_str(&ae1))]),
            )
            .await;
        expect_error(
            &t,
            "redeclare without auto-delete",
            res,
            406,
            &format!(
                "PRECONDITION_FAILED - inequivalent arg 'auto_delete' for exchange '{x}' in vhost \
                 '/': received 'false' but current is 'true'"
            ),
        );
        let ch = conn.create_channel().await.expect("channel");
        ch.exchange_delete(x.as_str().into(), Default::default())
            .await
            .expect("cleanup");
        close(conn).await;
    }
}

compat_test! {
    #[tokio::test]
    async fn headers_x_match_of_wrong_type(t: Target) {
        let (conn, ch) = t.open().await;
        let q = declare_exclusive(&t, &ch).await;
        let res = ch
            .queue_bind(
                q.as_str().into(),
                "amq.headers".into(),
                "".into(),
                QueueBindOptions::default(),
                table(vec![("x-match", AMQPValue::LongInt(1))]),
            )
            .await;
        expect_error(
            &t,
            "x-match as a number",
            res,
            406,
            "PRECONDITION_FAILED - Invalid x-match field type signedint (value 1); expected longstr",
        );
        close(conn).await;
    }
}

compat_test! {
    /// RabbitMQ's unbind is idempotent: missing exchanges, queues and bindings are all fine,
    /// except unbinding from the default exchange.
    #[tokio::test]
    async fn unbind_of_missing_things_is_ok(t: Target) {
        let (conn, ch) = t.open().await;
        let q = declare_exclusive(&t, &ch).await;
        let missing_x = unique("missing-x");
        let missing_q = unique("missing-q");
        ch.queue_unbind(
            q.as_str().into(),
            missing_x.as_str().into(),
            "k".into(),
            FieldTable::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("{t}: unbind from a missing exchange: {e}"));
        ch.queue_unbind(
            missing_q.as_str().into(),
            "amq.direct".into(),
            "k".into(),
            FieldTable::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("{t}: unbind of a missing queue: {e}"));
        ch.exchange_unbind(
            "amq.fanout".into(),
            missing_x.as_str().into(),
            "k".into(),
            ExchangeUnbindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("{t}: exchange.unbind from a missing source: {e}"));
        ch.exchange_unbind(
            missing_x.as_str().into(),
            "amq.fanout".into(),
            "k".into(),
            ExchangeUnbindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("{t}: exchange.unbind of a missing destination: {e}"));
        let res = ch
            .exchange_bind(
                missing_x.as_str().into(),
                "amq.fanout".into(),
                "k".into(),
                ExchangeBindOptions::default(),
                FieldTable::default(),
            )
            .await;
        expect_error(
            &t,
            "exchange.bind to a missing destination",
            res,
            404,
            &format!("NOT_FOUND - no exchange '{missing_x}' in vhost '/'"),
        );
        let ch = conn.create_channel().await.expect("channel");
        let res = ch
            .queue_unbind(
                q.as_str().into(),
                "".into(),
                q.as_str().into(),
                FieldTable::default(),
            )
            .await;
        expect_error(
            &t,
            "unbind from the default exchange",
            res,
            403,
            "ACCESS_REFUSED - operation not permitted on the default exchange",
        );
        let ch = conn.create_channel().await.expect("channel");
        let res = ch
            .queue_purge(missing_q.as_str().into(), Default::default())
            .await;
        expect_error(
            &t,
            "purge of a missing queue",
            res,
            404,
            &format!("NOT_FOUND - no queue '{missing_q}' in vhost '/'"),
        );
        close(conn).await;
    }
}

compat_test! {
    #[tokio::test]
    async fn deleting_an_exchange_or_queue_removes_its_bindings(t: Target) {
        let (conn, ch) = t.open_confirm().await;
        let x = unique("x");
        let q = unique("q");
        declare(
            &t,
            &ch,
            &x,
            ExchangeKind::Direct,
            Default::default(),
            FieldTable::default(),
        )
        .await;
        ch.queue_declare(q.as_str().into(), Default::default(), FieldTable::default())
            .await
            .expect("declare queue");
        bind(&t, &ch, &q, &x, "k", FieldTable::default()).await;
        // Exchange deleted and re-created: the old binding is gone.
        ch.exchange_delete(x.as_str().into(), Default::default())
            .await
            .expect("delete exchange");
        declare(
            &t,
            &ch,
            &x,
            ExchangeKind::Direct,
            Default::default(),
            FieldTable::default(),
        )
        .await;
        publish_confirmed(
            &t,
            &ch,
            &x,
            "k",
            b"after exchange delete",
            BasicProperties::default(),
        )
        .await;
        assert!(
            drain(&t, &ch, &q).await.is_empty(),
            "{t}: binding went with the exchange"
        );
        // Queue deleted and re-created: its binding is gone too.
        bind(&t, &ch, &q, &x, "k", FieldTable::default()).await;
        ch.queue_delete(q.as_str().into(), Default::default())
            .await
            .expect("delete queue");
        ch.queue_declare(q.as_str().into(), Default::default(), FieldTable::default())
            .await
            .expect("redeclare queue");
        publish_confirmed(
            &t,
            &ch,
            &x,
            "k",
            b"after queue delete",
            BasicProperties::default(),
        )
        .await;
        assert!(
            drain(&t, &ch, &q).await.is_empty(),
            "{t}: binding went with the queue"
        );
        // An exchange-to-exchange binding goes with its destination.
        let dst = unique("dst");
        declare(
            &t,
            &ch,
            &dst,
            ExchangeKind::Fanout,
            Default::default(),
            FieldTable::default(),
        )
        .await;
        ch.exchange_bind(
            dst.as_str().into(),
            x.as_str().into(),
            "k".into(),
            Default::default(),
            FieldTable::default(),
        )
        .await
        .expect("e2e bind");
        ch.exchange_delete(dst.as_str().into(), Default::default())
            .await
            .expect("delete destination");
        declare(
            &t,
            &ch,
            &dst,
            ExchangeKind::Fanout,
            Default::default(),
            FieldTable::default(),
        )
        .await;
        bind(&t, &ch, &q, &dst, "", FieldTable::default()).await;
        publish_confirmed(
            &t,
            &ch,
            &x,
            "k",
            b"after destination delete",
            BasicProperties::default(),
        )
        .await;
        assert!(
            drain(&t, &ch, &q).await.is_empty(),
            "{t}: e2e binding went with its destination"
        );
        close(conn).await;
        t.delete_queues(&[&q]).await;
        t.delete_exchanges(&[&x, &dst]).await;
    }
}

compat_test! {
    #[tokio::test]
    async fn auto_delete_exchange_goes_with_last_exchange_binding(t: Target) {
        let (conn, ch) = t.open().await;
        let src = unique("autodel-src");
        declare(
            &t,
            &ch,
            &src,
            ExchangeKind::Fanout,
            auto_delete(),
            FieldTable::default(),
        )
        .await;
        ch.exchange_bind(
            "amq.fanout".into(),
            src.as_str().into(),
            "".into(),
            Default::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind src -> amq.fanout");
        ch.exchange_unbind(
            "amq.fanout".into(),
            src.as_str().into(),
            "".into(),
            Default::default(),
            FieldTable::default(),
        )
        .await
        .expect("unbind");
        let res = ch
            .exchange_declare(
                src.as_str().into(),
                ExchangeKind::Fanout,
                ExchangeDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await;
        expect_error(
            &t,
            "auto-delete source after its last e2e binding",
            res,
            404,
            &format!("NOT_FOUND - no exchange '{src}' in vhost '/'"),
        );
        // Being the destination of a binding does not count.
        let ch = conn.create_channel().await.expect("channel");
        let dst = unique("autodel-dst");
        declare(
            &t,
            &ch,
            &dst,
            ExchangeKind::Fanout,
            auto_delete(),
            FieldTable::default(),
        )
        .await;
        ch.exchange_bind(
            dst.as_str().into(),
            "amq.fanout".into(),
            "".into(),
            Default::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind amq.fanout -> dst");
        ch.exchange_unbind(
            dst.as_str().into(),
            "amq.fanout".into(),
            "".into(),
            Default::default(),
            FieldTable::default(),
        )
        .await
        .expect("unbind");
        declare(
            &t,
            &ch,
            &dst,
            ExchangeKind::Fanout,
            ExchangeDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await;
        ch.exchange_delete(dst.as_str().into(), Default::default())
            .await
            .expect("cleanup");
        close(conn).await;
    }
}
