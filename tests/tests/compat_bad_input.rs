//! Bad input on the wire, thrown at a running broker with hand-built frames: each must get
//! RabbitMQ's connection.close code (and the method it blames), never a crash, and a fresh
//! connection must work afterwards.
//!
//! Texts that RabbitMQ builds from Erlang terms (`all octets = <<...>>`) are checked by their
//! stable parts: the code name prefix and the error atom.

use amq_protocol::frame::AMQPFrame;
use amq_protocol::protocol::{self as proto, AMQPClass};
use lapin::BasicProperties;
use warren_tests::{
    close, compat_test, encode, frame_bytes, frame_bytes_with_end, method_payload,
    publish_confirmed, CloseInfo, RawConn, RawEvent, Target,
};

const METHOD: u8 = 1;
const HEADER: u8 = 2;
const BODY: u8 = 3;
const HEARTBEAT: u8 = 8;

fn qos() -> AMQPClass {
    AMQPClass::Basic(proto::basic::AMQPMethod::Qos(proto::basic::Qos {
        prefetch_count: 1,
        global: false,
    }))
}

fn publish(exchange: &str, key: &str) -> AMQPClass {
    AMQPClass::Basic(proto::basic::AMQPMethod::Publish(proto::basic::Publish {
        exchange: exchange.into(),
        routing_key: key.into(),
        mandatory: false,
        immediate: false,
    }))
}

/// A content header payload: class, weight, body size, no properties.
fn header_payload(class_id: u16, body_size: u64) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&class_id.to_be_bytes());
    p.extend_from_slice(&0u16.to_be_bytes());
    p.extend_from_slice(&body_size.to_be_bytes());
    p.extend_from_slice(&0u16.to_be_bytes());
    p
}

fn assert_close(
    t: &Target,
    what: &str,
    got: &CloseInfo,
    code: u16,
    class_method: (u16, u16),
    text: &str,
) {
    assert_eq!(
        (got.code, got.text.as_str(), (got.class_id, got.method_id)),
        (code, text, class_method),
        "{t}: {what}"
    );
}

fn assert_close_like(
    t: &Target,
    what: &str,
    got: &CloseInfo,
    code: u16,
    prefix: &str,
    contains: &str,
) {
    assert!(
        got.code == code && got.text.starts_with(prefix) && got.text.contains(contains),
        "{t}: {what}: expected {code} {prefix:?}...{contains:?}..., got {got:?}"
    );
}

async fn open1(t: &Target) -> RawConn {
    t.raw_open().await
}

compat_test! {
    #[tokio::test]
    async fn garbage_after_handshake(t: Target) {
        let mut raw = t.raw().await;
        raw.handshake().await;
        raw.send_bytes(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
        let c = raw.expect_connection_close_only().await;
        assert_close_like(
            &t,
            "garbage",
            &c,
            501,
            "FRAME_ERROR - type 71, ",
            "frame_too_large",
        );
        assert_eq!(
            (c.class_id, c.method_id),
            (0, 0),
            "{t}: garbage blames no method"
        );
        t.assert_healthy().await;
    }
}

compat_test! {
    #[tokio::test]
    async fn unknown_frame_type(t: Target) {
        let mut raw = open1(&t).await;
        raw.send_bytes(&frame_bytes(9, 1, b"abc")).await;
        let c = raw.expect_connection_close().await;
        assert_close(
            &t,
            "frame type 9",
            &c,
            501,
            (0, 0),
            "FRAME_ERROR - type 9, all octets = <<\"abc\">>: unknown_frame",
        );
        t.assert_healthy().await;
    }
}

compat_test! {
    #[tokio::test]
    async fn heartbeat_with_payload_is_unknown_frame(t: Target) {
        let mut raw = open1(&t).await;
        raw.send_bytes(&frame_bytes(HEARTBEAT, 0, b"xx")).await;
        let c = raw.expect_connection_close().await;
        assert_close(
            &t,
            "heartbeat with payload",
            &c,
            501,
            (0, 0),
            "FRAME_ERROR - type 8, all octets = <<\"xx\">>: unknown_frame",
        );
    }
}

compat_test! {
    #[tokio::test]
    async fn heartbeat_on_a_channel(t: Target) {
        let mut raw = open1(&t).await;
        raw.send_bytes(&frame_bytes(HEARTBEAT, 1, b"")).await;
        let c = raw.expect_connection_close().await;
        assert_close(
            &t,
            "heartbeat on channel 1",
            &c,
            505,
            (0, 0),
            "UNEXPECTED_FRAME - type 8, all octets = <<>>",
        );
    }
}

compat_test! {
    #[tokio::test]
    async fn wrong_frame_end_octet(t: Target) {
        let mut raw = open1(&t).await;
        raw.send_bytes(&frame_bytes_with_end(
            METHOD,
            1,
            &method_payload(qos()),
            0x00,
        ))
        .await;
        let c = raw.expect_connection_close_only().await;
        assert_close_like(
            &t,
            "frame end 0x00",
            &c,
            501,
            "FRAME_ERROR - type 1, ",
            "{invalid_frame_end_marker,0}",
        );
        t.assert_healthy().await;
    }
}

compat_test! {
    #[tokio::test]
    async fn oversized_frames(t: Target) {
        // Declared size far above frame_max: refused from the frame header alone.
        let mut raw = open1(&t).await;
        let mut bytes = vec![METHOD, 0, 1];
        bytes.extend_from_slice(&200_000u32.to_be_bytes());
        bytes.extend_from_slice(&[0u8; 1000]);
        raw.send_bytes(&bytes).await;
        let c = raw.expect_connection_close_only().await;
        assert_close(
            &t,
            "200000-byte frame",
            &c,
            501,
            (0, 0),
            "FRAME_ERROR - type 1, all octets = <<>>: {frame_too_large,200000,131064}",
        );

        // A body frame one byte over frame_max: RabbitMQ tolerates payloads up to frame_max
        // (an 8-byte fudge for clients that forget the frame overhead), but not beyond.
        let mut raw = open1(&t).await;
        let mut bytes = encode(&AMQPFrame::Method(1, publish("", "nowhere")));
        bytes.extend(frame_bytes(HEADER, 1, &header_payload(60, 131_073)));
        bytes.extend(frame_bytes(BODY, 1, &vec![b'x'; 131_073]));
        raw.send_bytes(&bytes).await;
        let c = raw.expect_connection_close_only().await;
        assert_close(
            &t,
            "131073-byte body frame",
            &c,
            501,
            (0, 0),
            "FRAME_ERROR - type 3, all octets = <<>>: {frame_too_large,131073,131064}",
        );
        t.assert_healthy().await;
    }
}

compat_test! {
    #[tokio::test]
    async fn body_frame_of_exactly_frame_max_is_accepted(t: Target) {
        let mut raw = open1(&t).await;
        let mut bytes = encode(&AMQPFrame::Method(1, publish("", "nowhere")));
        bytes.extend(frame_bytes(HEADER, 1, &header_payload(60, 131_072)));
        bytes.extend(frame_bytes(BODY, 1, &vec![b'x'; 131_072]));
        bytes.extend(encode(&AMQPFrame::Method(1, qos())));
        raw.send_bytes(&bytes).await;
        match raw.recv_frame().await {
            AMQPFrame::Method(1, AMQPClass::Basic(proto::basic::AMQPMethod::QosOk(_))) => {}
            other => {
                panic!("{t}: a 131072-byte body frame is tolerated; expected qos-ok, got {other:?}")
            }
        }
    }
}

compat_test! {
    #[tokio::test]
    async fn method_on_unopened_channel(t: Target) {
        let mut raw = t.raw().await;
        raw.handshake().await;
        let declare = AMQPClass::Queue(proto::queue::AMQPMethod::Declare(proto::queue::Declare {
            queue: "q".into(),
            passive: false,
            durable: false,
            exclusive: false,
            auto_delete: false,
            nowait: false,
            arguments: Default::default(),
        }));
        raw.send_method(5, declare).await;
        let c = raw.expect_connection_close().await;
        assert_close(
            &t,
            "queue.declare on unopened channel 5",
            &c,
            504,
            (50, 10),
            "CHANNEL_ERROR - expected 'channel.open'",
        );

        let mut raw = t.raw().await;
        raw.handshake().await;
        raw.send_method(
            1,
            AMQPClass::Basic(proto::basic::AMQPMethod::Ack(proto::basic::Ack {
                delivery_tag: 1,
                multiple: false,
            })),
        )
        .await;
        let c = raw.expect_connection_close().await;
        assert_close(
            &t,
            "basic.ack on unopened channel",
            &c,
            504,
            (60, 80),
            "CHANNEL_ERROR - expected 'channel.open'",
        );
        t.assert_healthy().await;
    }
}

compat_test! {
    #[tokio::test]
    async fn method_after_channel_close_ok(t: Target) {
        let mut raw = open1(&t).await;
        let reply = raw
            .call(
                1,
                AMQPClass::Channel(proto::channel::AMQPMethod::Close(proto::channel::Close {
                    reply_code: 200,
                    reply_text: "bye".into(),
                    class_id: 0,
                    method_id: 0,
                })),
            )
            .await;
        assert!(
            matches!(
                reply,
                AMQPClass::Channel(proto::channel::AMQPMethod::CloseOk(_))
            ),
            "{t}: close-ok: {reply:?}"
        );
        raw.send_method(1, qos()).await;
        let c = raw.expect_connection_close().await;
        assert_close(
            &t,
            "basic.qos on a closed channel",
            &c,
            504,
            (60, 10),
            "CHANNEL_ERROR - expected 'channel.open'",
        );
    }
}

compat_test! {
    #[tokio::test]
    async fn second_channel_open(t: Target) {
        let mut raw = open1(&t).await;
        raw.send_method(
            1,
            AMQPClass::Channel(proto::channel::AMQPMethod::Open(proto::channel::Open {})),
        )
        .await;
        let c = raw.expect_connection_close().await;
        assert_close(
            &t,
            "channel.open twice",
            &c,
            504,
            (20, 10),
            "CHANNEL_ERROR - second 'channel.open' seen",
        );
    }
}

compat_test! {
    #[tokio::test]
    async fn channel_class_on_channel_zero(t: Target) {
        let mut raw = t.raw().await;
        raw.handshake().await;
        raw.send_method(
            0,
            AMQPClass::Channel(proto::channel::AMQPMethod::Open(proto::channel::Open {})),
        )
        .await;
        let c = raw.expect_connection_close().await;
        assert_close(
            &t,
            "channel.open on channel 0",
            &c,
            504,
            (20, 10),
            "CHANNEL_ERROR - unexpected method in connection state running",
        );
    }
}

compat_test! {
    #[tokio::test]
    async fn connection_class_on_a_channel(t: Target) {
        let mut raw = open1(&t).await;
        raw.send_method(
            1,
            AMQPClass::Connection(proto::connection::AMQPMethod::Open(
                proto::connection::Open {
                    virtual_host: "/".into(),
                },
            )),
        )
        .await;
        let c = raw.expect_connection_close().await;
        assert_close(
            &t,
            "connection.open on channel 1",
            &c,
            503,
            (10, 40),
            "COMMAND_INVALID - unimplemented method",
        );
    }
}

compat_test! {
    #[tokio::test]
    async fn unexpected_channel_close_ok(t: Target) {
        let mut raw = open1(&t).await;
        raw.send_method(
            1,
            AMQPClass::Channel(proto::channel::AMQPMethod::CloseOk(
                proto::channel::CloseOk {},
            )),
        )
        .await;
        let c = raw.expect_connection_close().await;
        assert_close(
            &t,
            "channel.close-ok out of the blue",
            &c,
            503,
            (20, 41),
            "COMMAND_INVALID - unimplemented method",
        );
    }
}

compat_test! {
    #[tokio::test]
    async fn content_body_without_header(t: Target) {
        let mut raw = open1(&t).await;
        raw.send_bytes(&frame_bytes(BODY, 1, b"hello")).await;
        let c = raw.expect_connection_close().await;
        assert_close(
            &t,
            "body frame with no publish",
            &c,
            505,
            (0, 0),
            "UNEXPECTED_FRAME - expected method frame, got non method frame instead",
        );
        t.assert_healthy().await;
    }
}

compat_test! {
    #[tokio::test]
    async fn content_header_without_method(t: Target) {
        let mut raw = open1(&t).await;
        raw.send_bytes(&frame_bytes(HEADER, 1, &header_payload(60, 5)))
            .await;
        let c = raw.expect_connection_close().await;
        assert_close(
            &t,
            "header frame with no publish",
            &c,
            505,
            (0, 0),
            "UNEXPECTED_FRAME - expected method frame, got non method frame instead",
        );
    }
}

compat_test! {
    #[tokio::test]
    async fn method_where_content_header_expected(t: Target) {
        let mut raw = open1(&t).await;
        let mut bytes = encode(&AMQPFrame::Method(1, publish("", "q")));
        bytes.extend(encode(&AMQPFrame::Method(1, qos())));
        raw.send_bytes(&bytes).await;
        let c = raw.expect_connection_close().await;
        assert_close(&t, "method after publish", &c, 505, (60, 40), "UNEXPECTED_FRAME - expected content header for class 60, got non content header frame instead");
    }
}

compat_test! {
    #[tokio::test]
    async fn method_where_content_body_expected(t: Target) {
        let mut raw = open1(&t).await;
        let mut bytes = encode(&AMQPFrame::Method(1, publish("", "q")));
        bytes.extend(frame_bytes(HEADER, 1, &header_payload(60, 5)));
        bytes.extend(encode(&AMQPFrame::Method(1, qos())));
        raw.send_bytes(&bytes).await;
        let c = raw.expect_connection_close().await;
        assert_close(
            &t,
            "method before the body",
            &c,
            505,
            (60, 40),
            "UNEXPECTED_FRAME - expected content body, got non content body frame instead",
        );
    }
}

compat_test! {
    #[tokio::test]
    async fn content_header_of_wrong_class(t: Target) {
        let mut raw = open1(&t).await;
        let mut bytes = encode(&AMQPFrame::Method(1, publish("", "q")));
        bytes.extend(frame_bytes(HEADER, 1, &header_payload(50, 3)));
        bytes.extend(frame_bytes(BODY, 1, b"abc"));
        raw.send_bytes(&bytes).await;
        let c = raw.expect_connection_close().await;
        assert_close(
            &t,
            "content header for class 50",
            &c,
            505,
            (60, 40),
            "UNEXPECTED_FRAME - expected content header for class 60, got one for class 50 instead",
        );
    }
}

compat_test! {
    #[tokio::test]
    async fn body_on_another_channel_than_its_header(t: Target) {
        let mut raw = open1(&t).await;
        raw.open_channel(2).await;
        let mut bytes = encode(&AMQPFrame::Method(1, publish("", "q")));
        bytes.extend(frame_bytes(HEADER, 1, &header_payload(60, 3)));
        bytes.extend(frame_bytes(BODY, 2, b"abc"));
        raw.send_bytes(&bytes).await;
        let c = raw.expect_connection_close().await;
        assert_close(
            &t,
            "body on channel 2 for a publish on 1",
            &c,
            505,
            (0, 0),
            "UNEXPECTED_FRAME - expected method frame, got non method frame instead",
        );
    }
}

compat_test! {
    #[tokio::test]
    async fn interleaved_content_on_two_channels_is_fine(t: Target) {
        let mut raw = open1(&t).await;
        raw.open_channel(2).await;
        let mut bytes = encode(&AMQPFrame::Method(1, publish("", "nowhere")));
        bytes.extend(encode(&AMQPFrame::Method(2, publish("", "nowhere"))));
        bytes.extend(frame_bytes(HEADER, 1, &header_payload(60, 3)));
        bytes.extend(frame_bytes(HEADER, 2, &header_payload(60, 3)));
        // An empty body frame is allowed and changes nothing.
        bytes.extend(frame_bytes(BODY, 1, b""));
        bytes.extend(frame_bytes(BODY, 1, b"abc"));
        bytes.extend(frame_bytes(BODY, 2, b"abc"));
        bytes.extend(encode(&AMQPFrame::Method(1, qos())));
        bytes.extend(encode(&AMQPFrame::Method(2, qos())));
        raw.send_bytes(&bytes).await;
        // Channels run independently: the two qos-oks may come in either order.
        let mut seen = Vec::new();
        for _ in 0..2 {
            match raw.recv_frame().await {
                AMQPFrame::Method(c, AMQPClass::Basic(proto::basic::AMQPMethod::QosOk(_))) => {
                    seen.push(c)
                }
                other => panic!("{t}: expected qos-ok, got {other:?}"),
            }
        }
        seen.sort();
        assert_eq!(seen, [1, 2], "{t}: both channels completed their messages");
    }
}

compat_test! {
    #[tokio::test]
    async fn body_longer_than_declared_leaves_channel_waiting(t: Target) {
        // RabbitMQ quirk: a body frame longer than the header's remaining size is swallowed and the
        // channel still expects body frames, so the next method is an UNEXPECTED_FRAME.
        let mut raw = open1(&t).await;
        let mut bytes = encode(&AMQPFrame::Method(1, publish("", "q")));
        bytes.extend(frame_bytes(HEADER, 1, &header_payload(60, 3)));
        bytes.extend(frame_bytes(BODY, 1, b"hello"));
        bytes.extend(encode(&AMQPFrame::Method(1, qos())));
        raw.send_bytes(&bytes).await;
        let c = raw.expect_connection_close().await;
        assert_close(
            &t,
            "5-byte body for a 3-byte message",
            &c,
            505,
            (60, 40),
            "UNEXPECTED_FRAME - expected content body, got non content body frame instead",
        );
    }
}

compat_test! {
    #[tokio::test]
    async fn undecodable_method_arguments(t: Target) {
        let mut raw = open1(&t).await;
        // queue.declare whose queue name says 5 bytes but only 2 follow.
        raw.send_bytes(&frame_bytes(
            METHOD,
            1,
            &[0, 50, 0, 10, 0, 0, 5, b'a', b'b'],
        ))
        .await;
        let c = raw.expect_connection_close().await;
        assert_close(
            &t,
            "truncated queue.declare",
            &c,
            501,
            (50, 10),
            "FRAME_ERROR - cannot decode <<0,0,5,97,98>>",
        );
        t.assert_healthy().await;
    }
}

compat_test! {
    #[tokio::test]
    async fn unknown_method_closes_socket(t: Target) {
        // RabbitMQ 3.10 cannot decode an unknown class or method id and drops the connection
        // without a connection.close.
        for payload in [[0u8, 60, 3, 231], [0, 99, 0, 10]] {
            let mut raw = open1(&t).await;
            raw.send_bytes(&frame_bytes(METHOD, 1, &payload)).await;
            match raw.recv().await {
                RawEvent::Eof => {}
                other => panic!(
                    "{t}: unknown method {payload:?}: expected the socket closed, got {other:?}"
                ),
            }
        }
        t.assert_healthy().await;
    }
}

compat_test! {
    #[tokio::test]
    async fn truncated_frame_then_disconnect(t: Target) {
        let mut raw = open1(&t).await;
        let full = encode(&AMQPFrame::Method(1, qos()));
        raw.send_bytes(&full[..full.len() / 2]).await;
        drop(raw);
        let mut raw = t.raw().await;
        raw.send_bytes(b"AMQP\x00\x00").await; // half a protocol header
        drop(raw);
        t.assert_healthy().await;
    }
}

compat_test! {
    #[tokio::test]
    async fn truncated_frame_waits_for_the_rest(t: Target) {
        let mut raw = open1(&t).await;
        let full = encode(&AMQPFrame::Method(1, qos()));
        raw.send_bytes(&full[..5]).await;
        raw.expect_silence("half a frame is not an error yet").await;
        raw.send_bytes(&full[5..]).await;
        match raw.recv_frame().await {
            AMQPFrame::Method(1, AMQPClass::Basic(proto::basic::AMQPMethod::QosOk(_))) => {}
            other => panic!("{t}: frame completed later: expected qos-ok, got {other:?}"),
        }
    }
}

compat_test! {
    #[tokio::test]
    async fn channel_max_counts_open_channels(t: Target) {
        let mut raw = t.raw().await;
        raw.handshake().await;
        // A channel number above channel_max is accepted by RabbitMQ (it limits the count).
        raw.open_channel(3000).await;
        let mut bytes = Vec::new();
        for ch in 1..=2046u16 {
            bytes.extend(encode(&AMQPFrame::Method(
                ch,
                AMQPClass::Channel(proto::channel::AMQPMethod::Open(proto::channel::Open {})),
            )));
        }
        raw.send_bytes(&bytes).await;
        // Each channel answers on its own, so open-oks may arrive in any order.
        let mut opened = std::collections::BTreeSet::new();
        while opened.len() < 2046 {
            match raw.recv_frame().await {
                AMQPFrame::Method(c, AMQPClass::Channel(proto::channel::AMQPMethod::OpenOk(_))) => {
                    assert!(opened.insert(c), "{t}: second open-ok for channel {c}");
                }
                other => panic!("{t}: expected open-oks, got {other:?}"),
            }
        }
        raw.send_method(
            2047,
            AMQPClass::Channel(proto::channel::AMQPMethod::Open(proto::channel::Open {})),
        )
        .await;
        let c = raw.expect_connection_close().await;
        assert_close(
            &t,
            "2048th channel",
            &c,
            530,
            (0, 0),
            "NOT_ALLOWED - number of channels opened (2047) has reached the negotiated channel_max (2047)",
        );
    }
}

compat_test! {
    #[tokio::test]
    async fn server_sends_heartbeats(t: Target) {
        let mut raw = t.raw().await;
        raw.handshake_until_open("guest", "guest", warren_tests::client_properties())
            .await;
        let tune = match raw.recv_method(0).await {
            AMQPClass::Connection(proto::connection::AMQPMethod::Tune(t)) => t,
            other => panic!("{t}: expected tune, got {other:?}"),
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
        match raw.recv_frame().await {
            AMQPFrame::Method(
                0,
                AMQPClass::Connection(proto::connection::AMQPMethod::OpenOk(_)),
            ) => {}
            other => panic!("{t}: expected open-ok, got {other:?}"),
        }
        match raw.recv_within(std::time::Duration::from_secs(3)).await {
            RawEvent::Frame(f) if matches!(*f, AMQPFrame::Heartbeat) => {}
            other => panic!("{t}: expected a heartbeat within 3 s at interval 1 s, got {other:?}"),
        }
    }
}

compat_test! {
    #[tokio::test]
    async fn client_that_stops_reading_does_not_block_others(t: Target) {
        // A consumer that never reads its socket.
        let mut stuck = open1(&t).await;
        let (conn, ch) = t.open_confirm().await;
        let q = warren_tests::unique("stuck");
        ch.queue_declare(q.as_str().into(), Default::default(), Default::default())
            .await
            .expect("declare");
        stuck.consume(1, &q, "stuck", true).await;
        let chunk = vec![b'z'; 64 * 1024];
        let mut pending = Vec::new();
        for _ in 0..256 {
            pending.push(
                ch.basic_publish(
                    "".into(),
                    q.as_str().into(),
                    Default::default(),
                    &chunk,
                    BasicProperties::default(),
                )
                .await
                .expect("publish"),
            );
        }
        for p in pending {
            let c = tokio::time::timeout(warren_tests::WAIT, p)
                .await
                .unwrap_or_else(|_| panic!("{t}: publisher confirm delayed by a stuck consumer"))
                .expect("confirm");
            assert!(c.is_ack(), "{t}: publish acked despite the stuck consumer");
        }
        // Other clients carry on.
        t.assert_healthy().await;
        publish_confirmed(
            &t,
            &ch,
            "",
            "amq.nonexistent-queue-name",
            b"x",
            BasicProperties::default(),
        )
        .await;
        drop(stuck);
        close(conn).await;
        t.delete_queues(&[&q]).await;
        t.assert_healthy().await;
    }
}
