//! Exhaustion and hostile input: what a peer can send to use up the broker's memory, stack or
//! connection slots, and that the broker refuses it while everyone else keeps working.
//!
//! - Sockets that never finish the handshake are closed after the handshake timeout (RabbitMQ's
//!   `handshake_timeout`, 10 s; short here through `Limits`), whether they send nothing or stop
//!   half way, and a flood of them holds no slot for ever: a real client gets through and every
//!   idle socket is closed by the broker.
//! - Wide field tables (100 KiB of arguments or headers) work on both brokers.
//! - Field tables nested deeper than the decoder's stack allows are refused (Warren only:
//!   RabbitMQ accepts any depth; Warren refuses more than 64 levels instead of crashing).
//!
//! Abuse of `channel_max` and `frame_max` is covered in `compat_bad_input.rs`
//! (`channel_max_counts_open_channels`, `oversized_frames`).

use std::time::Duration;

use amq_protocol::protocol::{self as proto, AMQPClass};
use amq_protocol::types::{AMQPValue, FieldTable};
use lapin::options::{BasicGetOptions, BasicPublishOptions, QueueDeclareOptions};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use warren_broker::{Broker, BrokerHandle, Limits};
use warren_tests::{
    close, compat_test, frame_bytes, method_payload, round_trip, unique, RawConn, RawEvent, Target,
    WAIT,
};

/// A broker of the test's own with a short handshake timeout and these many connection slots.
async fn broker_with(handshake_timeout: Duration, max_connections: usize) -> BrokerHandle {
    let limits = Limits {
        handshake_timeout,
        max_connections,
        ..Limits::default()
    };
    Broker::builder()
        .listen("127.0.0.1:0".parse().expect("address"))
        .limits(limits)
        .start()
        .await
        .expect("broker starts")
}

/// Waits (bounded by `within`) until the broker closes `socket`; panics if it stays open.
async fn expect_closed_by_broker(socket: &mut TcpStream, within: Duration, what: &str) {
    let mut buf = [0u8; 64];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, socket.read(&mut buf)).await {
            Err(_) => panic!("{what}: socket still open after {within:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return,
            // connection.start after a protocol header; keep reading until the close.
            Ok(Ok(_)) => continue,
        }
    }
}

/// Proves a broker serves a normal client: a round trip through a server-named queue.
async fn assert_serves(url: &str, what: &str) {
    let conn = tokio::time::timeout(
        WAIT * 2,
        Connection::connect(url, ConnectionProperties::default()),
    )
    .await
    .unwrap_or_else(|_| panic!("{what}: connect timed out"))
    .unwrap_or_else(|e| panic!("{what}: connect: {e}"));
    round_trip(&conn, what).await;
    close(conn).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_that_never_finish_the_handshake_are_closed() {
    let broker = broker_with(Duration::from_millis(300), 1024).await;
    let addr = broker.local_addr();
    // A client that does finish is not cut off by the timeout: opened first, it still works
    // once the idle sockets below, opened after it, have been timed out.
    let conn = Connection::connect(&broker.amqp_url(), ConnectionProperties::default())
        .await
        .expect("connect");
    let mut silent = TcpStream::connect(addr).await.expect("connect");
    let mut header_only = TcpStream::connect(addr).await.expect("connect");
    header_only
        .write_all(b"AMQP\x00\x00\x09\x01")
        .await
        .expect("header");
    let mut half_byte = TcpStream::connect(addr).await.expect("connect");
    half_byte.write_all(b"AM").await.expect("two bytes");
    expect_closed_by_broker(&mut silent, WAIT, "a socket that sends nothing").await;
    expect_closed_by_broker(
        &mut header_only,
        WAIT,
        "a socket that stops after the protocol header",
    )
    .await;
    expect_closed_by_broker(
        &mut half_byte,
        WAIT,
        "a socket that stops inside the protocol header",
    )
    .await;
    let ch = conn
        .create_channel()
        .await
        .expect("an open connection outlives the handshake timeout");
    drop(ch);
    close(conn).await;
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_idle_sockets_holds_no_slot_for_ever() {
    // 16 slots, 200 idle sockets: slots are freed as handshakes time out, so a real client gets
    // its turn, and every idle socket is closed by the broker in the end.
    let broker = broker_with(Duration::from_millis(200), 16).await;
    let addr = broker.local_addr();
    let mut flood = Vec::new();
    for _ in 0..200 {
        flood.push(TcpStream::connect(addr).await.expect("flood connect"));
    }
    assert_serves(&broker.amqp_url(), "a client during the flood").await;
    for (i, socket) in flood.iter_mut().enumerate() {
        expect_closed_by_broker(socket, WAIT * 2, &format!("idle socket {i}")).await;
    }
    assert_serves(&broker.amqp_url(), "a client after the flood").await;
    broker.shutdown().await;
}

/// A table of `n` entries `k0000`.. each holding a 100-byte string.
fn wide_table(n: usize) -> FieldTable {
    let mut t = FieldTable::default();
    for i in 0..n {
        t.insert(
            format!("k{i:04}").into(),
            AMQPValue::LongString("v".repeat(100).into()),
        );
    }
    t
}

compat_test! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn wide_field_tables_work(t: Target) {
        // ~110 KiB of headers and of queue arguments, within frame_max: accepted and kept.
        let (conn, ch) = t.open().await;
        let q = unique("wide-args");
        let args = {
            let mut a = wide_table(1000);
            a.insert("x-max-length".into(), AMQPValue::LongInt(10));
            a
        };
        ch.queue_declare(q.as_str().into(), QueueDeclareOptions::default(), args)
            .await
            .unwrap_or_else(|e| panic!("{t}: declare with wide arguments: {e}"));
        let headers = wide_table(1000);
        ch.basic_publish("".into(), q.as_str().into(), BasicPublishOptions::default(), b"wide",
            BasicProperties::default().with_headers(headers.clone()))
            .await
            .unwrap_or_else(|e| panic!("{t}: publish: {e}"));
        let got = ch
            .basic_get(q.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap_or_else(|e| panic!("{t}: get: {e}"))
            .unwrap_or_else(|| panic!("{t}: the message is there"));
        assert_eq!(got.delivery.properties.headers().as_ref().map(|h| h.inner().len()), Some(1000), "{t}: headers kept");
        close(conn).await;
        t.delete_queues(&[&q]).await;
        t.assert_healthy().await;
    }
}

/// An encoded field table (with its length) nesting `depth` tables under the key `k`.
fn nested_table(depth: usize) -> Vec<u8> {
    let mut inner: Vec<u8> = Vec::new();
    for _ in 1..depth {
        let mut t = vec![1, b'k', b'F'];
        t.extend_from_slice(&(inner.len() as u32).to_be_bytes());
        t.extend_from_slice(&inner);
        inner = t;
    }
    let mut out = (inner.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&inner);
    out
}

/// A raw connection to `broker`, through the handshake, channel 1 open.
async fn raw_open(broker: &BrokerHandle) -> RawConn {
    let stream = TcpStream::connect(broker.local_addr())
        .await
        .expect("connect");
    let mut raw = RawConn::new("bundled", "/".into(), stream);
    raw.handshake().await;
    raw.open_channel(1).await;
    raw
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deeply_nested_tables_are_refused_without_crashing() {
    let broker = broker_with(Duration::from_secs(10), 1024).await;
    // ~18,000 levels in one queue.declare: enough to overflow the decoder's stack.
    let mut declare = vec![0, 50, 0, 10, 0, 0, 1, b'q', 0];
    declare.extend_from_slice(&nested_table(18_000));
    let mut raw = raw_open(&broker).await;
    raw.send_bytes(&frame_bytes(1, 1, &declare)).await;
    let close = raw.expect_connection_close().await;
    assert_eq!(
        (close.code, close.class_id, close.method_id),
        (501, 50, 10),
        "too deep: FRAME_ERROR on queue.declare: {close:?}"
    );

    // The same in a message's headers: the content header is refused.
    let mut raw = raw_open(&broker).await;
    let publish = method_payload(AMQPClass::Basic(proto::basic::AMQPMethod::Publish(
        proto::basic::Publish {
            exchange: "".into(),
            routing_key: "nowhere".into(),
            mandatory: false,
            immediate: false,
        },
    )));
    let mut header = vec![0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x20, 0];
    header.extend_from_slice(&nested_table(18_000));
    let mut bytes = frame_bytes(1, 1, &publish);
    bytes.extend(frame_bytes(2, 1, &header));
    raw.send_bytes(&bytes).await;
    let close = raw.expect_connection_close().await;
    assert_eq!(close.code, 501, "too deep headers: FRAME_ERROR: {close:?}");

    // And in connection.start-ok's client properties, before any login: the socket is closed.
    let stream = TcpStream::connect(broker.local_addr())
        .await
        .expect("connect");
    let mut raw = RawConn::new("bundled", "/".into(), stream);
    raw.send_bytes(b"AMQP\x00\x00\x09\x01").await;
    let _start = raw.recv_frame().await;
    let mut start_ok = vec![0, 10, 0, 11];
    start_ok.extend_from_slice(&nested_table(18_000));
    raw.send_bytes(&frame_bytes(1, 0, &start_ok)).await;
    raw.expect_eof().await;

    // 64 levels are fine.
    let mut declare = vec![0, 50, 0, 10, 0, 0, 1, b'q', 0];
    declare.extend_from_slice(&nested_table(64));
    let mut raw = raw_open(&broker).await;
    raw.send_bytes(&frame_bytes(1, 1, &declare)).await;
    match raw.recv().await {
        RawEvent::Frame(f) => assert!(
            matches!(
                *f,
                amq_protocol::frame::AMQPFrame::Method(
                    1,
                    AMQPClass::Queue(proto::queue::AMQPMethod::DeclareOk(_))
                )
            ),
            "64 levels: declare-ok, got {f:?}"
        ),
        other => panic!("64 levels: declare-ok, got {other:?}"),
    }
    assert_serves(&broker.amqp_url(), "after the nested tables").await;
    broker.shutdown().await;
}

/// Answers connection.tune with `tune-ok` values changed by `over`, then asks to open `/`;
/// the broker must not open the connection, and must close the socket.
async fn tune_ok_refused(
    t: &Target,
    over: impl FnOnce(&mut proto::connection::TuneOk),
    what: &str,
) {
    let mut raw = t.raw().await;
    raw.handshake_until_open("guest", "guest", warren_tests::client_properties())
        .await;
    let tune = match raw.recv_method(0).await {
        AMQPClass::Connection(proto::connection::AMQPMethod::Tune(tune)) => tune,
        other => panic!("{t}: expected tune, got {other:?}"),
    };
    let mut ok = proto::connection::TuneOk {
        channel_max: tune.channel_max,
        frame_max: tune.frame_max,
        heartbeat: 0,
    };
    over(&mut ok);
    raw.send_method(
        0,
        AMQPClass::Connection(proto::connection::AMQPMethod::TuneOk(ok)),
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
    loop {
        match raw.recv().await {
            RawEvent::Eof => return,
            RawEvent::Timeout => panic!("{t}: {what}: socket still open"),
            RawEvent::Frame(f) => assert!(
                !matches!(
                    *f,
                    amq_protocol::frame::AMQPFrame::Method(
                        0,
                        AMQPClass::Connection(proto::connection::AMQPMethod::OpenOk(_))
                    )
                ),
                "{t}: {what}: the connection must not open"
            ),
            _ => {}
        }
    }
}

compat_test! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tune_ok_beyond_the_offer_is_refused(t: Target) {
        tune_ok_refused(&t, |ok| ok.frame_max += 1, "frame_max above the offer").await;
        tune_ok_refused(&t, |ok| ok.channel_max += 1, "channel_max above the offer").await;
        tune_ok_refused(&t, |ok| ok.frame_max = 4095, "frame_max below the 4096 minimum").await;
        t.assert_healthy().await;
    }
}
