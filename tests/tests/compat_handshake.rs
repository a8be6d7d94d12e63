//! Connection handshake compatibility: protocol header, server properties, tune values,
//! authentication and vhost errors, connection close, as RabbitMQ does them.

use amq_protocol::frame::AMQPFrame;
use amq_protocol::protocol::{self as proto, AMQPClass};
use lapin::types::FieldTable;
use lapin::{types::AMQPValue, Connection, ConnectionProperties};
use warren_tests::{close, compat_test, table, table_str, RawEvent};

compat_test! {
    #[tokio::test]
    async fn server_properties_and_mechanisms(target: Target) {
        let mut raw = target.raw().await;
        raw.send_bytes(b"AMQP\x00\x00\x09\x01").await;
        let start = match raw.recv_method(0).await {
            AMQPClass::Connection(proto::connection::AMQPMethod::Start(s)) => s,
            other => panic!("{target}: expected connection.start, got {other:?}"),
        };
        assert_eq!(
            (start.version_major, start.version_minor),
            (0, 9),
            "{target}: protocol version in connection.start"
        );
        let mechanisms = String::from_utf8_lossy(start.mechanisms.as_bytes()).into_owned();
        let mut mechs: Vec<&str> = mechanisms.split(' ').collect();
        mechs.sort();
        assert_eq!(mechs, ["AMQPLAIN", "PLAIN"], "{target}: mechanisms");
        assert_eq!(
            String::from_utf8_lossy(start.locales.as_bytes()),
            "en_US",
            "{target}: locales"
        );
        let props = &start.server_properties;
        if target.is_rabbitmq() {
            assert_eq!(
                table_str(props, "product").as_deref(),
                Some("RabbitMQ"),
                "{target}: product"
            );
        }
        for key in ["product", "version", "platform", "copyright", "information"] {
            assert!(
                table_str(props, key).is_some(),
                "{target}: server property {key} (a long string) missing: {props:?}"
            );
        }
        let caps = match props.inner().get("capabilities") {
            Some(AMQPValue::FieldTable(t)) => t.clone(),
            other => panic!("{target}: capabilities is not a table: {other:?}"),
        };
        let expected = [
            "publisher_confirms",
            "exchange_exchange_bindings",
            "basic.nack",
            "consumer_cancel_notify",
            "connection.blocked",
            "consumer_priorities",
            "authentication_failure_close",
            "per_consumer_qos",
            "direct_reply_to",
        ];
        for cap in expected {
            assert_eq!(
                caps.inner().get(cap),
                Some(&AMQPValue::Boolean(true)),
                "{target}: capability {cap}"
            );
        }
        assert_eq!(
            caps.inner().len(),
            expected.len(),
            "{target}: exactly RabbitMQ's nine capabilities: {caps:?}"
        );
    }
}

compat_test! {
    #[tokio::test]
    async fn tune_values(target: Target) {
        let mut raw = target.raw().await;
        raw.handshake_until_open("guest", "guest", FieldTable::default())
            .await;
        let tune = raw.finish_tune().await;
        assert_eq!(
            (tune.channel_max, tune.frame_max, tune.heartbeat),
            (2047, 131072, 60),
            "{target}: connection.tune channel_max/frame_max/heartbeat"
        );

        // lapin negotiates the same values.
        let conn = target.connect().await;
        let cfg = conn.configuration();
        assert_eq!(
            (cfg.channel_max(), cfg.frame_max(), cfg.heartbeat()),
            (2047, 131072, 60),
            "{target}: negotiated by lapin"
        );
        close(conn).await;
    }
}

compat_test! {
    #[tokio::test]
    async fn open_ok_and_clean_close(target: Target) {
        let mut raw = target.raw().await;
        raw.handshake().await;
        raw.send_method(
            0,
            AMQPClass::Connection(proto::connection::AMQPMethod::Close(
                proto::connection::Close {
                    reply_code: 200,
                    reply_text: "bye".into(),
                    class_id: 0,
                    method_id: 0,
                },
            )),
        )
        .await;
        match raw.recv_frame().await {
            AMQPFrame::Method(
                0,
                AMQPClass::Connection(proto::connection::AMQPMethod::CloseOk(_)),
            ) => {}
            other => panic!("{target}: expected connection.close-ok, got {other:?}"),
        }
        // RabbitMQ leaves closing the socket to the client after close-ok (it only times out
        // after 30 s), so nothing more is asserted here.
    }
}

compat_test! {
    #[tokio::test]
    async fn wrong_protocol_header_gets_091_header_back(target: Target) {
        for header in [
            &b"AMQP\x00\x00\x0a\x00"[..], // 0-10
            &b"AMQP\x03\x01\x00\x00"[..], // AMQP 1.0 SASL
            &b"HTTP/1.1"[..],
        ] {
            let mut raw = target.raw().await;
            raw.send_bytes(header).await;
            match raw.recv().await {
                RawEvent::Header(h) => assert_eq!(
                    &h, b"AMQP\x00\x00\x09\x01",
                    "{target}: header sent back for {header:?}"
                ),
                other => panic!("{target}: for header {header:?} expected AMQP0091, got {other:?}"),
            }
            raw.expect_eof().await;
        }
        target.assert_healthy().await;
    }
}

compat_test! {
    #[tokio::test]
    async fn bad_credentials_access_refused(target: Target) {
        // A client that advertises authentication_failure_close gets connection.close 403.
        let mut raw = target.raw().await;
        let caps = table(vec![(
            "capabilities",
            AMQPValue::FieldTable(table(vec![(
                "authentication_failure_close",
                AMQPValue::Boolean(true),
            )])),
        )]);
        raw.handshake_until_open("guest", "wrong-password", caps)
            .await;
        let close = raw.expect_connection_close().await;
        assert_eq!(
            (close.code, close.text.as_str()),
            (
                403,
                "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN. \
                 For details see the broker logfile."
            ),
            "{target}: bad password close"
        );

        // One that does not just sees the socket closed, without connection.close.
        let mut raw = target.raw().await;
        raw.handshake_until_open("guest", "wrong-password", FieldTable::default())
            .await;
        match raw.recv().await {
            RawEvent::Eof => {}
            other => {
                panic!("{target}: bad password without capability: expected EOF, got {other:?}")
            }
        }

        let url = target.url_with("nobody", "guest", "/");
        let res = Connection::connect(&url, ConnectionProperties::default()).await;
        assert!(res.is_err(), "{target}: lapin with unknown user must fail");
        target.assert_healthy().await;
    }
}

compat_test! {
    #[tokio::test]
    async fn unknown_vhost_not_allowed(target: Target) {
        let mut raw = target.raw().await;
        raw.handshake_until_open("guest", "guest", FieldTable::default())
            .await;
        raw.finish_tune().await;
        raw.send_method(
            0,
            AMQPClass::Connection(proto::connection::AMQPMethod::Open(
                proto::connection::Open {
                    virtual_host: "no-such-vhost".into(),
                },
            )),
        )
        .await;
        let close = raw.expect_connection_close().await;
        assert_eq!(
            (close.code, close.text.as_str()),
            (530, "NOT_ALLOWED - vhost no-such-vhost not found"),
            "{target}: unknown vhost"
        );
        assert_eq!(
            (close.class_id, close.method_id),
            (10, 40),
            "{target}: unknown vhost blames connection.open"
        );

        let url = target.url_with("guest", "guest", "no-such-vhost");
        let res = Connection::connect(&url, ConnectionProperties::default()).await;
        match res {
            Ok(_) => panic!("{target}: lapin connect to unknown vhost succeeded"),
            Err(e) => {
                let code = warren_tests::amqp_error(&e).map(|(c, _)| c);
                assert!(
                    code.is_none() || code == Some(530),
                    "{target}: lapin error for unknown vhost: {e:?}"
                );
            }
        }
        target.assert_healthy().await;
    }
}

/// The AMQPLAIN response: a field table without its length prefix.
fn amqplain(user: &str, password: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in [("LOGIN", user), ("PASSWORD", password)] {
        out.push(k.len() as u8);
        out.extend_from_slice(k.as_bytes());
        out.push(b'S');
        out.extend_from_slice(&(v.len() as u32).to_be_bytes());
        out.extend_from_slice(v.as_bytes());
    }
    out
}

async fn start_ok(raw: &mut warren_tests::RawConn, mechanism: &str, response: Vec<u8>) {
    raw.send_bytes(b"AMQP\x00\x00\x09\x01").await;
    match raw.recv_method(0).await {
        AMQPClass::Connection(proto::connection::AMQPMethod::Start(_)) => {}
        other => panic!("{}: expected connection.start, got {other:?}", raw.target()),
    }
    raw.send_method(
        0,
        AMQPClass::Connection(proto::connection::AMQPMethod::StartOk(
            proto::connection::StartOk {
                client_properties: warren_tests::client_properties(),
                mechanism: mechanism.into(),
                response: response.into(),
                locale: "en_US".into(),
            },
        )),
    )
    .await;
}

compat_test! {
    #[tokio::test]
    async fn amqplain_login(target: Target) {
        let mut raw = target.raw().await;
        start_ok(&mut raw, "AMQPLAIN", amqplain("guest", "guest")).await;
        let tune = raw.finish_tune().await;
        assert_eq!(
            tune.frame_max, 131072,
            "{target}: AMQPLAIN login reaches tune"
        );

        let mut raw = target.raw().await;
        start_ok(&mut raw, "AMQPLAIN", amqplain("guest", "nope")).await;
        let close = raw.expect_connection_close().await;
        assert_eq!(
            (close.code, close.text.as_str()),
            (
                403,
                "ACCESS_REFUSED - Login was refused using authentication mechanism AMQPLAIN. \
                 For details see the broker logfile."
            ),
            "{target}: AMQPLAIN with a bad password"
        );
    }
}

compat_test! {
    #[tokio::test]
    async fn unknown_auth_mechanism(target: Target) {
        let mut raw = target.raw().await;
        start_ok(&mut raw, "CRAM-MD5", b"whatever".to_vec()).await;
        // RabbitMQ 3.10 drops the socket without a connection.close here, even for clients
        // that advertise authentication_failure_close.
        match raw.recv().await {
            RawEvent::Eof => {}
            other => {
                panic!("{target}: unknown mechanism: expected the socket closed, got {other:?}")
            }
        }
        target.assert_healthy().await;
    }
}

compat_test! {
    #[tokio::test]
    async fn silent_client_is_dropped_after_missed_heartbeats(target: Target) {
        let mut raw = target.raw().await;
        raw.handshake_until_open("guest", "guest", warren_tests::client_properties())
            .await;
        let tune = match raw.recv_method(0).await {
            AMQPClass::Connection(proto::connection::AMQPMethod::Tune(t)) => t,
            other => panic!("{target}: expected tune, got {other:?}"),
        };
        raw.send_method(
            0,
            AMQPClass::Connection(proto::connection::AMQPMethod::TuneOk(
                proto::connection::TuneOk {
                    channel_max: tune.channel_max,
                    frame_max: tune.frame_max,
                    heartbeat: 1,
                },
            )),
        )
        .await;
        raw.send_method(
            0,
            AMQPClass::Connection(proto::connection::AMQPMethod::Open(
                proto::connection::Open {
                    virtual_host: "/".into(),
                },
            )),
        )
        .await;
        let started = std::time::Instant::now();
        // Read (and ignore) the broker's heartbeats, never sending any: the broker must give up.
        loop {
            match raw.recv_within(std::time::Duration::from_secs(6)).await {
                RawEvent::Eof => break,
                RawEvent::Timeout => {
                    panic!("{target}: still connected after 6 s of client silence")
                }
                RawEvent::Frame(f) => {
                    if let Some((_, true, info)) = warren_tests::close_of(&f) {
                        panic!("{target}: expected the socket dropped without connection.close, got {info:?}");
                    }
                }
                _ => {}
            }
        }
        assert!(
            started.elapsed() >= std::time::Duration::from_millis(1000),
            "{target}: dropped before a single heartbeat interval passed"
        );
    }
}

compat_test! {
    #[tokio::test]
    async fn other_protocol_versions_get_091_header(target: Target) {
        for header in [
            &b"AMQP\x00\x00\x09\x00"[..],
            &b"AMQP\x00\x00\x08\x00"[..],
            &b"AMQP\x00\x00\x09\x02"[..],
            &b"AMQP\x00\x01\x09\x01"[..],
        ] {
            let mut raw = target.raw().await;
            raw.send_bytes(header).await;
            match raw.recv().await {
                RawEvent::Header(h) => assert_eq!(
                    &h, b"AMQP\x00\x00\x09\x01",
                    "{target}: header sent back for {header:?}"
                ),
                other => panic!("{target}: for header {header:?} expected AMQP0091, got {other:?}"),
            }
            raw.expect_eof().await;
        }
    }
}

compat_test! {
    #[tokio::test]
    async fn frame_before_protocol_header(target: Target) {
        let mut raw = target.raw().await;
        raw.send(amq_protocol::frame::AMQPFrame::Heartbeat).await;
        raw.send_bytes(&[0; 8]).await;
        match raw.recv().await {
            RawEvent::Header(h) => assert_eq!(&h, b"AMQP\x00\x00\x09\x01", "{target}: header"),
            other => {
                panic!("{target}: expected AMQP0091 for a frame instead of a header, got {other:?}")
            }
        }
        raw.expect_eof().await;
    }
}

compat_test! {
    #[tokio::test]
    async fn empty_vhost_name_not_allowed(target: Target) {
        let mut raw = target.raw().await;
        raw.handshake_until_open("guest", "guest", warren_tests::client_properties())
            .await;
        raw.finish_tune().await;
        raw.send_method(
            0,
            AMQPClass::Connection(proto::connection::AMQPMethod::Open(
                proto::connection::Open {
                    virtual_host: "".into(),
                },
            )),
        )
        .await;
        let close = raw.expect_connection_close().await;
        assert_eq!(
            (
                close.code,
                close.text.as_str(),
                close.class_id,
                close.method_id
            ),
            (530, "NOT_ALLOWED - vhost  not found", 10, 40),
            "{target}: vhost ''"
        );
    }
}

compat_test! {
    #[tokio::test]
    async fn tune_ok_out_of_range_drops_the_connection(target: Target) {
        // frame_max below the 4096 minimum, frame_max above the server's, channel_max above the
        // server's: RabbitMQ drops the socket without a connection.close.
        let cases = [(2047u16, 1024u32), (2047, 262_144), (4000, 131_072)];
        let runs = cases.iter().map(|&(channel_max, frame_max)| {
            let target = &target;
            async move {
                let mut raw = target.raw().await;
                raw.handshake_until_open("guest", "guest", warren_tests::client_properties())
                    .await;
                match raw.recv_method(0).await {
                    AMQPClass::Connection(proto::connection::AMQPMethod::Tune(_)) => {}
                    other => panic!("{target}: expected tune, got {other:?}"),
                }
                raw.send_method(
                    0,
                    AMQPClass::Connection(proto::connection::AMQPMethod::TuneOk(
                        proto::connection::TuneOk {
                            channel_max,
                            frame_max,
                            heartbeat: 0,
                        },
                    )),
                )
                .await;
                loop {
                    match raw.recv_within(std::time::Duration::from_secs(6)).await {
                        RawEvent::Eof => break,
                        RawEvent::Frame(f) => {
                            if let Some((_, true, info)) = warren_tests::close_of(&f) {
                                panic!(
                                    "{target}: tune-ok {channel_max}/{frame_max}: expected no connection.close, got {info:?}"
                                );
                            }
                        }
                        other => panic!(
                            "{target}: tune-ok {channel_max}/{frame_max}: expected the socket dropped, got {other:?}"
                        ),
                    }
                }
            }
        });
        futures::future::join_all(runs).await;
    }
}

/// Checked on the bundled broker only, on a broker of its own: the shared RabbitMQ and the
/// bundled broker the other tests share must not be stopped. The expected close is what
/// RabbitMQ sends every client when the node stops.
#[tokio::test]
async fn graceful_shutdown_closes_connections_with_320() {
    let mut target = warren_tests::bundled().await;
    let mut raw = target.raw_open().await;
    let addr = target.addr();
    // Answer the close while the broker shuts down, as a client would.
    let (stopped, close) = tokio::join!(
        tokio::time::timeout(
            std::time::Duration::from_secs(10),
            target.shutdown_bundled()
        ),
        raw.expect_connection_close_only()
    );
    let stopped = stopped.unwrap_or_else(|_| panic!("bundled: shutdown did not finish"));
    assert!(stopped, "bundled: broker stopped");
    assert_eq!(
        (
            close.code,
            close.text.as_str(),
            close.class_id,
            close.method_id
        ),
        (
            320,
            "CONNECTION_FORCED - broker forced connection closure with reason 'shutdown'",
            0,
            0
        ),
        "{target}: connection.close on shutdown"
    );
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "{target}: listener closed after shutdown"
    );
}

compat_test! {
    #[tokio::test]
    async fn client_heartbeats_keep_the_connection_alive(target: Target) {
        let mut raw = target.raw().await;
        raw.handshake_until_open("guest", "guest", warren_tests::client_properties())
            .await;
        let tune = match raw.recv_method(0).await {
            AMQPClass::Connection(proto::connection::AMQPMethod::Tune(t)) => t,
            other => panic!("{target}: expected tune, got {other:?}"),
        };
        raw.send_method(
            0,
            AMQPClass::Connection(proto::connection::AMQPMethod::TuneOk(
                proto::connection::TuneOk {
                    channel_max: tune.channel_max,
                    frame_max: tune.frame_max,
                    heartbeat: 1,
                },
            )),
        )
        .await;
        raw.send_method(
            0,
            AMQPClass::Connection(proto::connection::AMQPMethod::Open(
                proto::connection::Open {
                    virtual_host: "/".into(),
                },
            )),
        )
        .await;
        match raw.recv_method(0).await {
            AMQPClass::Connection(proto::connection::AMQPMethod::OpenOk(_)) => {}
            other => panic!("{target}: expected open-ok, got {other:?}"),
        }
        raw.open_channel(1).await;
        // Nothing but heartbeats for 4 s: longer than the broker's patience with a silent client.
        for _ in 0..8 {
            raw.send(amq_protocol::frame::AMQPFrame::Heartbeat).await;
            match raw.recv_within(std::time::Duration::from_millis(500)).await {
                RawEvent::Timeout => {}
                RawEvent::Frame(f) if matches!(*f, amq_protocol::frame::AMQPFrame::Heartbeat) => {}
                other => panic!("{target}: connection with client heartbeats: got {other:?}"),
            }
        }
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
            "{target}: still serving after 4 s of heartbeats only: {reply:?}"
        );
    }
}
