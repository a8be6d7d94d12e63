//! The MQTT session driven in memory, without sockets: packets in, packets and core events
//! out (the real clients' scenarios are in tests/tests/mqtt.rs).

use super::session::{Opening, Session};
use super::MqttShared;
use crate::core::sink::{Event, Sink};
use crate::shared::Shared;
use amq_protocol::types::AMQPValue;
use bytes::Bytes;
use mqttbytes::v4::{Packet, PubAck, Publish, Subscribe};
use mqttbytes::QoS;
use std::sync::{Arc, Mutex};

/// Keeps the core's events for the test to hand to the session.
#[derive(Debug, Default)]
struct Events(Mutex<Vec<Event>>);

impl Sink for Events {
    fn send(&self, event: Event) {
        self.0.lock().unwrap().push(event);
    }
    fn congested(&self) -> bool {
        false
    }
}

fn shared() -> Arc<Shared> {
    Shared::for_tests()
}

fn open(
    shared: &Arc<Shared>,
    mqtt: &Arc<MqttShared>,
    conn: u64,
    id: &str,
) -> (Session, Arc<Events>) {
    let events = Arc::new(Events::default());
    shared.state.lock().add_connection(conn, events.clone());
    let (to_conn, _) = tokio::sync::mpsc::unbounded_channel();
    let session = Session::open(Opening {
        shared: shared.clone(),
        mqtt: mqtt.clone(),
        conn,
        user: "guest".into(),
        vhost: "/".into(),
        client_id: id.into(),
        clean: true,
        will: None,
        to_conn,
    })
    .expect("session opens");
    (session, events)
}

fn take(s: &mut Session) -> Vec<Bytes> {
    std::mem::take(&mut s.out)
}

#[test]
fn a_qos1_publish_becomes_a_persistent_amqp_message_and_a_qos1_delivery() {
    let (shared, mqtt) = (shared(), Arc::new(MqttShared::default()));
    let (mut sub, sub_events) = open(&shared, &mqtt, 1, "sub");
    assert_eq!(
        take(&mut sub),
        vec![Bytes::from_static(b"\x20\x02\x00\x00")]
    );
    sub.on_packet(Packet::Subscribe(Subscribe::new("a/+", QoS::ExactlyOnce)))
        .unwrap();
    // SUBACK grants QoS 1 for QoS 2.
    assert_eq!(
        take(&mut sub),
        vec![Bytes::from_static(b"\x90\x03\x00\x00\x01")]
    );

    let (mut publisher, _) = open(&shared, &mqtt, 2, "pub");
    take(&mut publisher);
    let mut p = Publish::new("a/b", QoS::AtLeastOnce, b"hi".to_vec());
    p.pkid = 7;
    publisher.on_packet(Packet::Publish(p)).unwrap();
    assert_eq!(
        take(&mut publisher),
        vec![Bytes::from_static(b"\x40\x02\x00\x07")]
    );

    let event = sub_events.0.lock().unwrap().pop().expect("a delivery");
    let Event::Deliver { ref msg, .. } = event else {
        panic!("{event:?}")
    };
    assert_eq!(
        (msg.exchange.as_str(), msg.routing_key.as_str()),
        ("amq.topic", "a.b")
    );
    let props = msg.properties();
    assert_eq!(*props.delivery_mode(), Some(2));
    let headers = props.headers().clone().unwrap();
    assert_eq!(
        headers.inner().get("x-mqtt-publish-qos"),
        Some(&AMQPValue::ShortShortInt(1))
    );
    assert_eq!(
        headers.inner().get("x-mqtt-dup"),
        Some(&AMQPValue::Boolean(false))
    );

    sub.on_event(event).unwrap();
    // PUBLISH, QoS 1, packet id 1, topic a/b, payload hi.
    assert_eq!(
        take(&mut sub),
        vec![Bytes::from_static(b"\x32\x09\x00\x03a/b\x00\x01hi")]
    );
    sub.on_packet(Packet::PubAck(PubAck::new(1))).unwrap();
    assert!(take(&mut sub).is_empty());
}

#[test]
fn a_retained_message_goes_to_a_later_subscriber_of_its_exact_topic() {
    let (shared, mqtt) = (shared(), Arc::new(MqttShared::default()));
    let (mut publisher, _) = open(&shared, &mqtt, 1, "pub");
    let mut p = Publish::new("r/t", QoS::AtMostOnce, b"kept".to_vec());
    p.retain = true;
    publisher.on_packet(Packet::Publish(p)).unwrap();
    let (mut sub, _) = open(&shared, &mqtt, 2, "sub");
    take(&mut sub);
    sub.on_packet(Packet::Subscribe(Subscribe::new("r/+", QoS::AtLeastOnce)))
        .unwrap();
    assert_eq!(
        take(&mut sub).len(),
        1,
        "a wildcard filter gets no retained message"
    );
    let mut s = Subscribe::new("r/t", QoS::AtLeastOnce);
    s.pkid = 2;
    sub.on_packet(Packet::Subscribe(s)).unwrap();
    let out = take(&mut sub);
    // SUBACK, then the retained PUBLISH at QoS 0 (the lower of the two), retain flag set.
    assert_eq!(out[1], Bytes::from_static(b"\x31\x09\x00\x03r/tkept"));
}
