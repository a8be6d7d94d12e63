//! MQTT and Web-MQTT with real clients: each scenario of `tests/python/mqtt_compat.py`
//! (paho-mqtt over TCP and WebSocket, pika on the AMQP side, mosquitto_pub/mosquitto_sub, raw
//! sockets for bad input) runs against a bundled broker with its MQTT listeners on ephemeral
//! ports (`NAME::bundled`) and against the reference RabbitMQ node's MQTT plugin
//! (`NAME::rabbitmq`: MQTT 127.0.0.1:1884, Web-MQTT 127.0.0.1:15675/ws, AMQP 5673, started by
//! `../shared/refnode.sh start`), with the same assertions. Without the reference node the
//! `rabbitmq` tests say they were skipped; without python3, paho-mqtt and pika every test says
//! so too, unless `CI` is set.

use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;
use warren_broker::Broker;

/// Where the scenarios reach a broker.
struct Endpoints {
    mqtt: String,
    ws: String,
    amqp: String,
}

/// The reference node (`../shared/refnode.sh`).
const REFNODE_MQTT: &str = "127.0.0.1:1884";
const REFNODE_WS: &str = "127.0.0.1:15675";
const REFNODE_AMQP: &str = "amqp://guest:guest@127.0.0.1:5673/%2f";

fn clients_missing() -> Option<String> {
    let probe = "import paho.mqtt.client, pika";
    match Command::new("python3").args(["-c", probe]).output() {
        Ok(out) if out.status.success() => None,
        Ok(out) => Some(format!(
            "python3 cannot import paho-mqtt and pika: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Some(format!("python3 not runnable: {e}")),
    }
}

/// Runs one scenario; panics with its output when it fails.
async fn run(scenario: &'static str, target: &'static str, at: Endpoints) {
    if let Some(why) = clients_missing() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but {why} (pip install paho-mqtt pika)"
        );
        println!("skipped {scenario} on {target}: {why}");
        return;
    }
    warren_tests::python_scenario(
        "mqtt_compat.py",
        scenario,
        vec![
            "--mqtt".into(),
            at.mqtt,
            "--ws".into(),
            at.ws,
            "--amqp".into(),
            at.amqp,
        ],
        target,
    )
    .await;
}

async fn bundled(scenario: &'static str) {
    let any: SocketAddr = "127.0.0.1:0".parse().expect("address");
    let broker = Broker::builder()
        .listen(any)
        .mqtt_listen(any)
        .web_mqtt_listen(any)
        .start()
        .await
        .expect("the bundled broker starts");
    let at = Endpoints {
        mqtt: broker.mqtt_local_addr().expect("MQTT listener").to_string(),
        ws: broker
            .web_mqtt_local_addr()
            .expect("Web-MQTT listener")
            .to_string(),
        amqp: broker.amqp_url(),
    };
    run(scenario, "bundled", at).await;
    broker.shutdown().await;
}

async fn rabbitmq(scenario: &'static str) {
    let addr: SocketAddr = REFNODE_MQTT.parse().expect("address");
    if TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_err() {
        println!("skipped {scenario} on rabbitmq: the reference node's MQTT ({REFNODE_MQTT}) is unreachable (../shared/refnode.sh start)");
        return;
    }
    let at = Endpoints {
        mqtt: REFNODE_MQTT.into(),
        ws: REFNODE_WS.into(),
        amqp: REFNODE_AMQP.into(),
    };
    run(scenario, "rabbitmq", at).await;
}

warren_tests::scenarios! {
    /// QoS 0 and 1 publishes to QoS 0 and 1 (and 2, granted as 1) subscriptions.
    qos,
    /// `+` and `#` filters.
    wildcards,
    /// A retained message reaches a later subscriber of its exact topic, flagged retained;
    /// live messages are not flagged; an empty retained payload clears it.
    retained,
    /// The will after an abrupt close and after a keep-alive timeout, not after DISCONNECT.
    will,
    /// Clean session off: session present on reconnect, QoS 1 messages queued meanwhile
    /// delivered; a clean session drops the kept one.
    session,
    /// A second connection with the same client id closes the first.
    takeover,
    /// MQTT publishes as AMQP messages on amq.topic: routing key, delivery mode, headers.
    mqtt_to_amqp,
    /// An AMQP publish to amq.topic reaches an MQTT subscriber.
    amqp_to_mqtt,
    /// MQTT over WebSocket (paho-mqtt's websockets transport, path /ws), across transports.
    websocket,
    /// mosquitto_pub and mosquitto_sub.
    mosquitto,
    /// Malformed and refused packets close that connection as RabbitMQ does; others go on.
    bad_input,
    /// A client that never sends CONNECT is closed after the login timeout (10 s).
    no_connect,
    /// A PUBLISH over 128 MiB closes the connection without PUBACK.
    oversized,
}
