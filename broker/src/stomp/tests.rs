//! The STOMP session's sequences driven in memory (frames in, outbox items out, no socket),
//! and random input: bytes for the decoder, frames for the session, neither may panic. The
//! end-to-end suite (tests/tests/stomp_compat.rs) checks the same behaviour over sockets
//! against RabbitMQ.

use super::frame::{encode, Decoder, Frame};
use super::outbox::{Out, Outbox, Receiver};
use super::session::{Link, Session, Step};
use crate::core::sink::Event;
use crate::shared::Shared;
use bytes::BytesMut;
use rand::{Rng, SeedableRng};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

fn shared() -> Arc<Shared> {
    Shared::for_tests()
}

fn session(shared: &Arc<Shared>) -> (Session, Receiver) {
    let (outbox, rx): (Outbox, Receiver) = Outbox::new();
    let conn = shared.next_conn_id();
    let loopback = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 61613);
    let link = Link {
        peer: loopback,
        local: loopback,
        web: false,
        close: Arc::new(|_: &str| {}),
    };
    (
        Session::new(shared.clone(), conn, link, outbox, "session-test".into()),
        rx,
    )
}

fn frame(command: &str, headers: &[(&str, &str)], body: &str) -> Frame {
    let mut f = Frame::new(
        command,
        headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    f.body = body.as_bytes().to_vec().into();
    f
}

/// The commands of the frames queued, and the consumer tags and delivery tags of deliveries.
fn commands(rx: &mut Receiver) -> Vec<String> {
    rx.drain()
        .into_iter()
        .filter_map(|o| match o {
            Out::Frame(f) => Some(f.command),
            Out::Core(Event::Deliver { delivery_tag, .. }) => {
                Some(format!("DELIVER {delivery_tag}"))
            }
            _ => None,
        })
        .collect()
}

const CONNECT: &[(&str, &str)] = &[
    ("accept-version", "1.2"),
    ("login", "guest"),
    ("passcode", "guest"),
];

#[test]
fn connect_subscribe_send_ack_and_transactions() {
    let shared = shared();
    let (mut s, mut rx) = session(&shared);
    assert_eq!(
        s.handle(frame("SEND", &[("destination", "/queue/q")], "x")),
        Step::Continue
    );
    assert_eq!(commands(&mut rx), ["ERROR"], "nothing before CONNECT");
    s.handle(frame("CONNECT", CONNECT, ""));
    assert_eq!(commands(&mut rx), ["CONNECTED"]);
    let sub = [
        ("destination", "/queue/q"),
        ("id", "s"),
        ("ack", "client-individual"),
        ("receipt", "r"),
    ];
    s.handle(frame("SUBSCRIBE", &sub, ""));
    assert_eq!(commands(&mut rx), ["RECEIPT"]);
    s.handle(frame(
        "SEND",
        &[("destination", "/queue/q"), ("receipt", "sent")],
        "one",
    ));
    assert_eq!(commands(&mut rx), ["DELIVER 1", "RECEIPT"]);
    s.handle(frame("BEGIN", &[("transaction", "t")], ""));
    s.handle(frame(
        "SEND",
        &[("destination", "/queue/q"), ("transaction", "t")],
        "two",
    ));
    assert_eq!(commands(&mut rx), Vec::<String>::new(), "held until COMMIT");
    s.handle(frame(
        "ACK",
        &[("id", "T_s@@session-test@@1"), ("transaction", "t")],
        "",
    ));
    s.handle(frame("COMMIT", &[("transaction", "t")], ""));
    assert_eq!(commands(&mut rx), ["DELIVER 2"]);
    // An unknown delivery tag is a channel error in RabbitMQ: ERROR, then close.
    let step = s.handle(frame("ACK", &[("id", "T_s@@session-test@@1")], ""));
    assert_eq!(step, Step::Close);
    assert_eq!(commands(&mut rx), ["ERROR"]);
    s.close();
    // The unacknowledged second message went back to its queue with the session.
    let (mut s2, mut rx2) = session(&shared);
    s2.handle(frame("CONNECT", CONNECT, ""));
    s2.handle(frame(
        "SUBSCRIBE",
        &[("destination", "/queue/q"), ("id", "s")],
        "",
    ));
    assert_eq!(commands(&mut rx2), ["CONNECTED", "DELIVER 1"]);
}

/// The receipt of a frame whose error closes the session: after the ERROR for what RabbitMQ's
/// plugin waits for (SUBSCRIBE), before it for what it only sends (ACK); over Web-STOMP the
/// ERROR never arrives, nor a receipt that follows it. The session is counted as a connection
/// until closed.
#[test]
fn receipts_of_closing_frames_come_in_rabbitmq_order() {
    let shared = shared();
    for (command, headers, expected) in [
        (
            "SUBSCRIBE",
            &[("destination", "/amq/queue/missing"), ("id", "t")][..],
            ["ERROR", "RECEIPT"],
        ),
        (
            "ACK",
            &[("id", "T_s@@session-test@@9")][..],
            ["RECEIPT", "ERROR"],
        ),
    ] {
        for web in [false, true] {
            let (mut s, mut rx) = session(&shared);
            if web {
                let (outbox, web_rx) = Outbox::new();
                let loopback = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 15674);
                let link = Link {
                    peer: loopback,
                    local: loopback,
                    web: true,
                    close: Arc::new(|_: &str| {}),
                };
                s = Session::new(
                    shared.clone(),
                    shared.next_conn_id(),
                    link,
                    outbox,
                    "w".into(),
                );
                rx = web_rx;
            }
            s.handle(frame("CONNECT", CONNECT, ""));
            let sub = [("destination", "/queue/rq"), ("id", "s"), ("ack", "client")];
            s.handle(frame("SUBSCRIBE", &sub, ""));
            assert_eq!(commands(&mut rx), ["CONNECTED"]);
            let counted = shared.access.connections().len();
            let mut headers = headers.to_vec();
            headers.push(("receipt", "r"));
            assert_eq!(s.handle(frame(command, &headers, "")), Step::Close);
            let got = commands(&mut rx);
            // Over Web-STOMP, what would come after the ERROR is lost with it.
            let expected: Vec<&str> = if web {
                expected
                    .iter()
                    .copied()
                    .take_while(|c| *c != "ERROR")
                    .collect()
            } else {
                expected.to_vec()
            };
            assert_eq!(got, expected, "{command} (Web-STOMP: {web})");
            s.close();
            assert_eq!(shared.access.connections().len(), counted - 1);
        }
    }
}

#[test]
fn random_bytes_never_panic_the_decoder() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(15);
    let alphabet = b"SENDCONNECT\n\r\0:\\ncx-content-length:12345destination/";
    for _ in 0..3000 {
        let len = rng.gen_range(0..300);
        let input: Vec<u8> = (0..len)
            .map(|_| {
                if rng.gen_bool(0.7) {
                    alphabet[rng.gen_range(0..alphabet.len())]
                } else {
                    rng.gen()
                }
            })
            .collect();
        let mut decoder = Decoder::default();
        let mut buf = BytesMut::new();
        'feed: for chunk in input.chunks(rng.gen_range(1..50)) {
            buf.extend_from_slice(chunk);
            loop {
                match decoder.next(&mut buf, 256) {
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(_) => break 'feed,
                }
            }
        }
    }
}

#[test]
fn random_frames_never_panic_a_session() {
    const COMMANDS: [&str; 12] = [
        "SEND",
        "SUBSCRIBE",
        "UNSUBSCRIBE",
        "ACK",
        "NACK",
        "BEGIN",
        "COMMIT",
        "ABORT",
        "DISCONNECT",
        "CONNECT",
        "FOO",
        "STOMP",
    ];
    const NAMES: [&str; 16] = [
        "destination",
        "id",
        "ack",
        "receipt",
        "transaction",
        "reply-to",
        "persistent",
        "durable",
        "priority",
        "expiration",
        "prefetch-count",
        "x-queue-name",
        "user-id",
        "auto-delete",
        "x-max-length",
        "heart-beat",
    ];
    const VALUES: [&str; 14] = [
        "/queue/q",
        "/topic/t",
        "/exchange/amq.direct/k",
        "/amq/queue/nope",
        "/temp-queue/x",
        "/reply-queue/y",
        "true",
        "client",
        "1",
        "-5",
        "T_1@@s@@1",
        "",
        "x@@y",
        "/bad/dest",
    ];
    let shared = shared();
    let mut rng = rand::rngs::StdRng::seed_from_u64(15);
    for _ in 0..300 {
        let (mut s, mut rx) = session(&shared);
        s.handle(frame("CONNECT", CONNECT, ""));
        for _ in 0..30 {
            let headers: Vec<(&str, &str)> = (0..rng.gen_range(0..5))
                .map(|_| {
                    (
                        NAMES[rng.gen_range(0..NAMES.len())],
                        VALUES[rng.gen_range(0..VALUES.len())],
                    )
                })
                .collect();
            let f = frame(COMMANDS[rng.gen_range(0..COMMANDS.len())], &headers, "body");
            // Every frame must also survive encoding and decoding.
            let mut bytes = Vec::new();
            encode(&f, &mut bytes);
            let _ = Decoder::default().next(&mut BytesMut::from(&bytes[..]), 1 << 20);
            if s.handle(f) == Step::Close {
                break;
            }
        }
        s.close();
        rx.drain();
    }
}

#[test]
fn a_subscription_whose_queue_is_deleted_is_gone() {
    let shared = shared();
    let (mut s, mut rx) = session(&shared);
    s.handle(frame("CONNECT", CONNECT, ""));
    s.handle(frame(
        "SUBSCRIBE",
        &[("destination", "/queue/gone"), ("id", "g")],
        "",
    ));
    let conn = 1_000_000; // any other connection
    shared
        .state
        .lock()
        .queue_delete("/", conn, "gone", false, false)
        .expect("delete");
    let cancelled = rx
        .drain()
        .into_iter()
        .any(|o| matches!(o, Out::Core(Event::Cancelled { .. })));
    assert!(cancelled, "the session is told its consumer was cancelled");
    s.handle(frame("UNSUBSCRIBE", &[("id", "g")], ""));
    assert_eq!(
        commands(&mut rx),
        ["ERROR"],
        "No subscription found, as RabbitMQ"
    );
}
