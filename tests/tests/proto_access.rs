//! Permissions, connection limits and the connection list of the MQTT and STOMP front-ends,
//! and messages across the two: each scenario of `tests/python/proto_access.py` (hand-written
//! MQTT and STOMP clients on plain sockets and WebSockets, the management API for users,
//! vhosts, permissions and limits) runs against a bundled broker with its management API and
//! MQTT, Web-MQTT, STOMP and Web-STOMP listeners on ephemeral ports (`NAME::bundled`) and
//! against the reference RabbitMQ node's plugins (`NAME::rabbitmq`: management API
//! 127.0.0.1:15673, MQTT 1884, Web-MQTT 15675, STOMP 61614, Web-STOMP 15674, started by
//! `../shared/refnode.sh start`), with the same assertions. Without the reference node the
//! `rabbitmq` tests say they were skipped; without python3 every test says so too, unless `CI`
//! is set.

use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;
use warren_broker::Broker;

/// Where a scenario reaches a broker.
struct Endpoints {
    mgmt: String,
    mqtt: String,
    ws: String,
    stomp: String,
    web_stomp: String,
}

/// Runs one scenario; panics with its output when it fails.
async fn run(scenario: &'static str, target: &'static str, at: Endpoints) {
    match Command::new("python3").arg("--version").output() {
        Ok(out) if out.status.success() => {}
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI is set but python3 is missing"
            );
            println!("skipped {scenario} on {target}: python3 is not runnable");
            return;
        }
    }
    warren_tests::python_scenario(
        "proto_access.py",
        scenario,
        vec![
            "--mgmt".into(),
            at.mgmt,
            "--mqtt".into(),
            at.mqtt,
            "--ws".into(),
            at.ws,
            "--stomp".into(),
            at.stomp,
            "--web-stomp".into(),
            at.web_stomp,
        ],
        target,
    )
    .await;
}

async fn bundled(scenario: &'static str) {
    let any: SocketAddr = "127.0.0.1:0".parse().expect("address");
    let broker = Broker::builder()
        .listen(any)
        .management(any)
        .mqtt_listen(any)
        .web_mqtt_listen(any)
        .stomp_listen(any)
        .web_stomp_listen(any)
        .start()
        .await
        .expect("the bundled broker starts");
    let addr = |a: Option<SocketAddr>, what: &str| {
        a.unwrap_or_else(|| panic!("{what} listener")).to_string()
    };
    let at = Endpoints {
        mgmt: format!("http://{}", addr(broker.management_addr(), "management")),
        mqtt: addr(broker.mqtt_local_addr(), "MQTT"),
        ws: addr(broker.web_mqtt_local_addr(), "Web-MQTT"),
        stomp: addr(broker.stomp_addr(), "STOMP"),
        web_stomp: addr(broker.web_stomp_addr(), "Web-STOMP"),
    };
    run(scenario, "bundled", at).await;
    broker.shutdown().await;
}

async fn rabbitmq(scenario: &'static str) {
    let mgmt = std::env::var("WARREN_TEST_MGMT_URL")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "http://127.0.0.1:15673".to_owned());
    for port in [1884, 61614, 15673] {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        if TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_err() {
            println!("skipped {scenario} on rabbitmq: the reference node ({addr}) is unreachable (../shared/refnode.sh start)");
            return;
        }
    }
    let at = Endpoints {
        mgmt,
        mqtt: "127.0.0.1:1884".into(),
        ws: "127.0.0.1:15675".into(),
        stomp: "127.0.0.1:61614".into(),
        web_stomp: "127.0.0.1:15674".into(),
    };
    run(scenario, "rabbitmq", at).await;
}

warren_tests::scenarios! {
    /// A user with restricted queue and topic permissions: allowed SUBSCRIBE and PUBLISH go
    /// through; refused ones, and a refused will, close the connection without SUBACK or
    /// PUBACK, are not routed, not retained; `{client_id}` in a topic permission.
    mqtt_permissions,
    /// Without write on amq.topic: QoS 0 closes, QoS 1 gets no PUBACK and goes on; retained
    /// messages and wills are retained but never routed.
    mqtt_exchange_write,
    /// vhost and user connection limits (CONNACK 5, the vhost's before the password), the
    /// connection list (`MQTT 3.1.1`, `MQTT 3.1.0`, `Web MQTT 3.1.1`, direct, one channel),
    /// connections closed when their user or vhost is deleted.
    mqtt_limits,
    /// Every STOMP destination kind, SEND, temp queues, durable subscriptions and transactions
    /// refused: `access_refused` ERROR frames with RabbitMQ's texts and receipt order, then
    /// the connection closes; what is allowed goes through.
    stomp_permissions,
    /// STOMP connection limits (`Bad CONNECT`, the vhost's before the password), the
    /// connection list (`STOMP 1.2`, `STOMP 1.1`, `Web STOMP 1.2`), and the `AMQP channel
    /// died` ERROR when the user or vhost is deleted.
    stomp_limits,
    /// MQTT to a STOMP /topic/ subscriber and STOMP to MQTT subscribers: payloads, STOMP
    /// headers (`persistent`), MQTT QoS.
    cross_protocol,
}
