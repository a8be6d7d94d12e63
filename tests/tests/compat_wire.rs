//! Wire-level behaviour a client relies on: bodies split to the negotiated frame_max,
//! channel_max as negotiated by the client, `nowait` methods that get no reply, pipelined
//! methods answered in order.

use amq_protocol::frame::AMQPFrame;
use amq_protocol::protocol::{self as proto, AMQPClass};
use lapin::{types::FieldTable, BasicProperties};
use warren_tests::{compat_test, unique, RawConn, Target};

/// Handshake with the client's own tune-ok values.
async fn handshake_tuned(t: &Target, channel_max: u16, frame_max: u32) -> RawConn {
    let mut raw = t.raw().await;
    raw.handshake_until_open("guest", "guest", warren_tests::client_properties())
        .await;
    match raw.recv_method(0).await {
        AMQPClass::Connection(proto::connection::AMQPMethod::Tune(_)) => {}
        other => panic!("{t}: expected tune, got {other:?}"),
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
        other => panic!("{t}: expected open-ok, got {other:?}"),
    }
    raw
}

fn get_method(queue: &str) -> AMQPClass {
    AMQPClass::Basic(proto::basic::AMQPMethod::Get(proto::basic::Get {
        queue: queue.into(),
        no_ack: true,
    }))
}

compat_test! {
    #[tokio::test]
    async fn bodies_are_split_to_the_clients_frame_max(t: Target) {
        body_split(&t, 8192, &[8184, 1816]).await;
    }
}

compat_test! {
    #[tokio::test]
    async fn bodies_are_split_to_the_smallest_frame_max(t: Target) {
        body_split(&t, 4096, &[4088, 4088, 1824]).await;
    }
}

async fn body_split(t: &Target, frame_max: u32, expected_sizes: &[usize]) {
    {
        let mut raw = handshake_tuned(t, 2047, frame_max).await;
        raw.open_channel(1).await;
        let q = unique("frames");
        raw.declare_queue(1, &q, true).await;
        let body: Vec<u8> = (0..10_000u32).map(|i| (i % 253) as u8).collect();
        // Publish in frames that respect the negotiated frame_max too.
        let mut bytes = warren_tests::encode(&AMQPFrame::Method(
            1,
            AMQPClass::Basic(proto::basic::AMQPMethod::Publish(proto::basic::Publish {
                exchange: "".into(),
                routing_key: q.as_str().into(),
                mandatory: false,
                immediate: false,
            })),
        ));
        bytes.extend(warren_tests::encode(&AMQPFrame::Header(
            1,
            amq_protocol::frame::AMQPContentHeader {
                class_id: 60,
                body_size: body.len() as u64,
                properties: BasicProperties::default(),
            },
        )));
        for chunk in body.chunks(frame_max as usize - 8) {
            bytes.extend(warren_tests::encode(&AMQPFrame::Body(1, chunk.to_vec())));
        }
        raw.send_bytes(&bytes).await;
        let reply = raw.call(1, get_method(&q)).await;
        assert!(
            matches!(reply, AMQPClass::Basic(proto::basic::AMQPMethod::GetOk(_))),
            "{t}: get-ok: {reply:?}"
        );
        match raw.recv_frame().await {
            AMQPFrame::Header(1, h) => assert_eq!(h.body_size, 10_000, "{t}: body size"),
            other => panic!("{t}: expected a content header, got {other:?}"),
        }
        let mut got = Vec::new();
        let mut sizes = Vec::new();
        while got.len() < body.len() {
            match raw.recv_frame().await {
                AMQPFrame::Body(1, b) => {
                    sizes.push(b.len());
                    got.extend(b);
                }
                other => panic!("{t}: expected body frames, got {other:?}"),
            }
        }
        assert_eq!(
            sizes, expected_sizes,
            "{t}: body frames of at most frame_max - 8 bytes"
        );
        assert!(got == body, "{t}: body reassembled intact");
    }
}

compat_test! {
    #[tokio::test]
    async fn channel_max_from_the_client(t: Target) {
        let mut raw = handshake_tuned(&t, 2, 131_072).await;
        raw.open_channel(1).await;
        raw.open_channel(2).await;
        raw.send_method(
            3,
            AMQPClass::Channel(proto::channel::AMQPMethod::Open(proto::channel::Open {})),
        )
        .await;
        let c = raw.expect_connection_close().await;
        assert_eq!(
            (c.code, c.text.as_str(), c.class_id, c.method_id),
            (
                530,
                "NOT_ALLOWED - number of channels opened (2) has reached the negotiated channel_max (2)",
                0,
                0
            ),
            "{t}: a third channel with channel_max 2"
        );
    }
}

compat_test! {
    #[tokio::test]
    async fn nowait_methods_get_no_reply(t: Target) {
        let mut raw = t.raw_open().await;
        let x = unique("nowait-x");
        let q = unique("nowait-q");
        let methods = vec![
            AMQPClass::Exchange(proto::exchange::AMQPMethod::Declare(
                proto::exchange::Declare {
                    exchange: x.as_str().into(),
                    kind: "fanout".into(),
                    passive: false,
                    durable: false,
                    auto_delete: false,
                    internal: false,
                    nowait: true,
                    arguments: FieldTable::default(),
                },
            )),
            AMQPClass::Queue(proto::queue::AMQPMethod::Declare(proto::queue::Declare {
                queue: q.as_str().into(),
                passive: false,
                durable: false,
                exclusive: true,
                auto_delete: false,
                nowait: true,
                arguments: FieldTable::default(),
            })),
            AMQPClass::Queue(proto::queue::AMQPMethod::Bind(proto::queue::Bind {
                queue: q.as_str().into(),
                exchange: x.as_str().into(),
                routing_key: "".into(),
                nowait: true,
                arguments: FieldTable::default(),
            })),
            AMQPClass::Confirm(proto::confirm::AMQPMethod::Select(proto::confirm::Select {
                nowait: true,
            })),
            AMQPClass::Basic(proto::basic::AMQPMethod::Consume(proto::basic::Consume {
                queue: q.as_str().into(),
                consumer_tag: "nw".into(),
                no_local: false,
                no_ack: true,
                exclusive: false,
                nowait: true,
                arguments: FieldTable::default(),
            })),
            AMQPClass::Basic(proto::basic::AMQPMethod::Cancel(proto::basic::Cancel {
                consumer_tag: "nw".into(),
                nowait: true,
            })),
            AMQPClass::Queue(proto::queue::AMQPMethod::Purge(proto::queue::Purge {
                queue: q.as_str().into(),
                nowait: true,
            })),
            AMQPClass::Queue(proto::queue::AMQPMethod::Unbind(proto::queue::Unbind {
                queue: q.as_str().into(),
                exchange: x.as_str().into(),
                routing_key: "".into(),
                arguments: FieldTable::default(),
            })),
        ];
        let mut bytes = Vec::new();
        for m in methods {
            bytes.extend(warren_tests::encode(&AMQPFrame::Method(1, m)));
        }
        // Close with a synchronous method whose reply must be the very next frame: qos-ok,
        // except for the queue.unbind-ok which has no nowait flag and comes first.
        bytes.extend(warren_tests::encode(&AMQPFrame::Method(
            1,
            AMQPClass::Basic(proto::basic::AMQPMethod::Qos(proto::basic::Qos {
                prefetch_count: 1,
                global: false,
            })),
        )));
        raw.send_bytes(&bytes).await;
        match raw.recv_frame().await {
            AMQPFrame::Method(1, AMQPClass::Queue(proto::queue::AMQPMethod::UnbindOk(_))) => {}
            other => panic!("{t}: expected only queue.unbind-ok then qos-ok, got {other:?}"),
        }
        match raw.recv_frame().await {
            AMQPFrame::Method(1, AMQPClass::Basic(proto::basic::AMQPMethod::QosOk(_))) => {}
            other => panic!("{t}: expected qos-ok next, got {other:?}"),
        }
        // Everything declared with nowait exists.
        let reply = raw
            .call(
                1,
                AMQPClass::Queue(proto::queue::AMQPMethod::Declare(proto::queue::Declare {
                    queue: q.as_str().into(),
                    passive: true,
                    durable: false,
                    exclusive: false,
                    auto_delete: false,
                    nowait: false,
                    arguments: FieldTable::default(),
                })),
            )
            .await;
        assert!(
            matches!(reply, AMQPClass::Queue(proto::queue::AMQPMethod::DeclareOk(ref ok)) if ok.consumer_count == 0),
            "{t}: queue declared with nowait, consumer cancelled with nowait: {reply:?}"
        );
        let reply = raw
            .call(
                1,
                AMQPClass::Exchange(proto::exchange::AMQPMethod::Delete(
                    proto::exchange::Delete {
                        exchange: x.as_str().into(),
                        if_unused: false,
                        nowait: false,
                    },
                )),
            )
            .await;
        assert!(
            matches!(
                reply,
                AMQPClass::Exchange(proto::exchange::AMQPMethod::DeleteOk(_))
            ),
            "{t}: exchange declared with nowait: {reply:?}"
        );
    }
}

compat_test! {
    #[tokio::test]
    async fn pipelined_methods_are_answered_in_order(t: Target) {
        let mut raw = t.raw_open().await;
        let names: Vec<String> = (0..20).map(|i| unique(&format!("pipe{i}"))).collect();
        let mut bytes = Vec::new();
        for n in &names {
            bytes.extend(warren_tests::encode(&AMQPFrame::Method(
                1,
                AMQPClass::Queue(proto::queue::AMQPMethod::Declare(proto::queue::Declare {
                    queue: n.as_str().into(),
                    passive: false,
                    durable: false,
                    exclusive: true,
                    auto_delete: false,
                    nowait: false,
                    arguments: FieldTable::default(),
                })),
            )));
        }
        raw.send_bytes(&bytes).await;
        for n in &names {
            match raw.recv_frame().await {
                AMQPFrame::Method(1, AMQPClass::Queue(proto::queue::AMQPMethod::DeclareOk(ok))) => {
                    assert_eq!(ok.queue.as_str(), n, "{t}: declare-oks in request order");
                }
                other => panic!("{t}: expected declare-ok for {n}, got {other:?}"),
            }
        }
    }
}

compat_test! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_connections_at_once(t: Target) {
        let conns = futures::future::join_all((0..10).map(|_| t.open())).await;
        let declared = futures::future::join_all(
            conns
                .iter()
                .map(|(_, ch)| warren_tests::declare_exclusive(&t, ch)),
        )
        .await;
        assert_eq!(declared.len(), 10, "{t}: ten connections served");
        futures::future::join_all(conns.into_iter().map(|(conn, _)| warren_tests::close(conn)))
            .await;
        t.assert_healthy().await;
    }
}
