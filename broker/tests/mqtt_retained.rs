//! MQTT retained messages survive a restart of a broker with a data directory, as RabbitMQ
//! keeps them on disk: an embedded broker is stopped and started again on the same directory,
//! and a new subscriber gets the message retained before; a retained message cleared (an
//! empty retained publish) stays cleared after the next restart. Raw MQTT 3.1.1 over TCP
//! (`mqttbytes` encodes and decodes the packets).

use bytes::BytesMut;
use mqttbytes::v4::{self, ConnAck, Connect, Login, Packet, PingReq, PubAck, Publish, Subscribe};
use mqttbytes::{Error as MqttError, QoS};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use warren_broker::{Broker, BrokerHandle};

/// How long a reply from the broker may take before the test fails.
const WAIT: Duration = Duration::from_secs(10);

struct Client {
    stream: TcpStream,
    buf: BytesMut,
    next_id: u16,
}

impl Client {
    /// Connects with a clean session as guest and checks the CONNACK.
    async fn connect(addr: SocketAddr, id: &str) -> Client {
        let stream = TcpStream::connect(addr).await.expect("MQTT connection");
        let mut c = Client {
            stream,
            buf: BytesMut::new(),
            next_id: 1,
        };
        let mut connect = Connect::new(id);
        connect.login = Some(Login::new("guest", "guest"));
        c.send(|b| connect.write(b)).await;
        match c.next().await {
            Packet::ConnAck(ConnAck { code, .. }) => {
                assert_eq!(code, v4::ConnectReturnCode::Success, "CONNACK")
            }
            other => panic!("expected CONNACK, got {other:?}"),
        }
        c
    }

    async fn send(&mut self, write: impl FnOnce(&mut BytesMut) -> Result<usize, MqttError>) {
        let mut out = BytesMut::new();
        write(&mut out).expect("encode");
        self.stream.write_all(&out).await.expect("send");
    }

    /// The next packet from the broker.
    async fn next(&mut self) -> Packet {
        loop {
            match v4::read(&mut self.buf, 1 << 20) {
                Ok(p) => return p,
                Err(MqttError::InsufficientBytes(_)) => {}
                Err(e) => panic!("malformed packet from the broker: {e:?}"),
            }
            let n = tokio::time::timeout(WAIT, self.stream.read_buf(&mut self.buf))
                .await
                .expect("the broker answers")
                .expect("read");
            assert!(n > 0, "the broker closed the connection");
        }
    }

    fn id(&mut self) -> u16 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Publishes a retained QoS 1 message and waits for its PUBACK.
    async fn retain(&mut self, topic: &str, payload: &[u8]) {
        let mut p = Publish::new(topic, QoS::AtLeastOnce, payload.to_vec());
        p.retain = true;
        p.pkid = self.id();
        self.send(|b| p.write(b)).await;
        match self.next().await {
            Packet::PubAck(a) => assert_eq!(a.pkid, p.pkid),
            other => panic!("expected PUBACK, got {other:?}"),
        }
    }

    /// Subscribes to `topic` at QoS 1 and returns the retained message the broker sends, if
    /// any: it comes right after the SUBACK, so a PINGRESP to a PINGREQ sent after it (the
    /// broker answers in order) means there is none.
    async fn retained(&mut self, topic: &str) -> Option<Publish> {
        let mut s = Subscribe::new(topic, QoS::AtLeastOnce);
        s.pkid = self.id();
        self.send(|b| s.write(b)).await;
        match self.next().await {
            Packet::SubAck(a) => assert_eq!(a.pkid, s.pkid),
            other => panic!("expected SUBACK, got {other:?}"),
        }
        self.send(|b| PingReq.write(b)).await;
        let mut got = Vec::new();
        loop {
            match self.next().await {
                Packet::Publish(p) => {
                    let ack = PubAck::new(p.pkid);
                    self.send(|b| ack.write(b)).await;
                    got.push(p);
                }
                Packet::PingResp => break,
                other => panic!("expected PUBLISH or PINGRESP, got {other:?}"),
            }
        }
        assert!(got.len() <= 1, "one retained message per topic: {got:?}");
        got.pop()
    }

    async fn disconnect(mut self) {
        self.send(|b| v4::Disconnect.write(b)).await;
    }
}

async fn start(dir: &Path) -> BrokerHandle {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    Broker::builder()
        .listen(any)
        .mqtt_listen(any)
        .data_dir(dir)
        .start()
        .await
        .expect("the broker starts on its data directory")
}

async fn restart(broker: BrokerHandle, dir: &Path) -> BrokerHandle {
    broker.shutdown().await;
    drop(broker);
    start(dir).await
}

fn temp_dir() -> PathBuf {
    std::env::temp_dir().join(format!("warren-mqtt-retained-{}", uuid::Uuid::new_v4()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_messages_and_their_clearing_survive_a_restart() {
    let dir = temp_dir();
    let broker = start(&dir).await;
    let mut publisher = Client::connect(broker.mqtt_local_addr().unwrap(), "publisher").await;
    publisher.retain("home/lamp/state", b"on").await;
    publisher.retain("home/door/state", b"closed").await;
    publisher.disconnect().await;

    let broker = restart(broker, &dir).await;
    let addr = broker.mqtt_local_addr().unwrap();
    let mut subscriber = Client::connect(addr, "subscriber-1").await;
    let lamp = subscriber
        .retained("home/lamp/state")
        .await
        .expect("the message retained before the restart");
    assert_eq!(
        (
            lamp.topic.as_str(),
            &lamp.payload[..],
            lamp.retain,
            lamp.qos
        ),
        ("home/lamp/state", &b"on"[..], true, QoS::AtLeastOnce)
    );
    let door = subscriber.retained("home/door/state").await;
    assert_eq!(door.expect("the second retained message").payload, "closed");
    subscriber.disconnect().await;

    // An empty retained publish clears the door's message; the lamp's stays.
    let mut publisher = Client::connect(addr, "publisher").await;
    publisher.retain("home/door/state", b"").await;
    publisher.disconnect().await;

    let broker = restart(broker, &dir).await;
    let addr = broker.mqtt_local_addr().unwrap();
    let mut subscriber = Client::connect(addr, "subscriber-2").await;
    assert!(
        subscriber.retained("home/door/state").await.is_none(),
        "the cleared message stays cleared after a restart"
    );
    let lamp = subscriber.retained("home/lamp/state").await;
    assert_eq!(lamp.expect("still retained").payload, "on");
    subscriber.disconnect().await;
    broker.shutdown().await;
    drop(broker);

    // Without a data directory they are kept in memory only.
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let memory = Broker::builder()
        .listen(any)
        .mqtt_listen(any)
        .start()
        .await
        .expect("memory-only broker");
    let mut c = Client::connect(memory.mqtt_local_addr().unwrap(), "memory").await;
    c.retain("home/lamp/state", b"off").await;
    assert_eq!(c.retained("home/lamp/state").await.unwrap().payload, "off");
    c.disconnect().await;
    memory.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
