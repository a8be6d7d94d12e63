//! Browser clients over WebSocket, with the libraries web pages use: in headless Chromium
//! (driven over the DevTools protocol, `warren_tests::browser`), a page
//! (`tests/browser/ws_clients.html`) loads @stomp/stompjs and MQTT.js's browser bundle and
//! talks to Web-STOMP and Web-MQTT (`ws://HOST:PORT/ws`) while an AMQP client (lapin) is on the
//! other side:
//!
//! - STOMP: the page subscribes to `/topic/KEY` and receives what AMQP publishes to
//!   `amq.topic` with that key; its SEND to `/amq/queue/Q` reaches the AMQP queue with its
//!   headers; it calls a warren-rpc calculator (docs/protocol.md, "Calling a service from
//!   STOMP") and gets the reply on its `/temp-queue/`.
//! - MQTT: the page subscribes to `a/b/+` and receives an AMQP publish to `a.b.c`; its QoS 1
//!   publish reaches an AMQP queue bound to `amq.topic`; a retained message reaches a client
//!   that subscribes later, flagged retained, and is cleared again.
//!
//! Each runs against a Warren broker of the test and against the reference node (Web-STOMP
//! 127.0.0.1:15674, Web-MQTT 127.0.0.1:15675, AMQP 5673: `../shared/refnode.sh start`) with the
//! same assertions; a failure on one broker does not stop the other's run, and the test fails
//! naming every broker that failed. One Chromium for both, one tab each; a screenshot of each
//! tab is saved under `target/browser-clients-screenshots/`.
//!
//! The libraries are not in the repository: `.ci/run` installs pinned versions from the npm
//! registry into a directory outside it and names that directory (the one holding
//! `node_modules`) in `WARREN_TEST_BROWSER_LIBS`. Without that variable, or without Chromium,
//! the test prints that it was skipped; without the reference node, that its `rabbitmq`
//! variant was. `WARREN_TEST_ONLY=bundled|rabbitmq` runs one variant.

use futures::FutureExt;
use lapin::options::{
    BasicGetOptions, BasicPublishOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use serde_json::{json, Value};
use std::net::{SocketAddr, TcpStream};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::time::Duration;
use warren_broker::Broker;
use warren_examples::{Calc, CalculatorServer};
use warren_tests::browser::{find_or_install_chromium, Browser, Page};
use warren_tests::table_str;

/// The reference node (`../shared/refnode.sh`).
const REFNODE_WEB_STOMP: &str = "127.0.0.1:15674";
const REFNODE_WEB_MQTT: &str = "127.0.0.1:15675";
const REFNODE_AMQP: &str = "amqp://guest:guest@127.0.0.1:5673/%2f";

/// How long a message may take to reach an AMQP queue.
const WAIT: Duration = Duration::from_secs(10);

/// One broker's Web-STOMP, Web-MQTT and AMQP.
struct Target {
    name: &'static str,
    web_stomp: SocketAddr,
    web_mqtt: SocketAddr,
    amqp_url: String,
}

/// The directory npm installed the libraries in, checked; None when the variable is unset.
fn libs_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("WARREN_TEST_BROWSER_LIBS").filter(|d| !d.is_empty())?;
    let dir = std::fs::canonicalize(&dir)
        .unwrap_or_else(|e| panic!("WARREN_TEST_BROWSER_LIBS={dir:?}: {e}"));
    for lib in [
        "@stomp/stompjs/bundles/stomp.umd.min.js",
        "mqtt/dist/mqtt.min.js",
    ] {
        let file = dir.join("node_modules").join(lib);
        assert!(
            file.is_file(),
            "WARREN_TEST_BROWSER_LIBS: {} is missing (npm install --prefix {} @stomp/stompjs@7 mqtt@5)",
            file.display(),
            dir.display()
        );
    }
    Some(dir)
}

/// The reference node, or why it is skipped.
fn reference() -> Result<Target, String> {
    for addr in [REFNODE_WEB_STOMP, REFNODE_WEB_MQTT] {
        let a: SocketAddr = addr.parse().expect("address");
        if TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_err() {
            return Err(format!(
                "the reference node ({addr}) is unreachable; run ../shared/refnode.sh start"
            ));
        }
    }
    Ok(Target {
        name: "rabbitmq",
        web_stomp: REFNODE_WEB_STOMP.parse().expect("address"),
        web_mqtt: REFNODE_WEB_MQTT.parse().expect("address"),
        amqp_url: REFNODE_AMQP.to_string(),
    })
}

/// Whether `WARREN_TEST_ONLY` leaves the variant `name` out.
fn left_out(name: &str) -> bool {
    std::env::var("WARREN_TEST_ONLY").is_ok_and(|only| !only.is_empty() && only != name)
}

/// A JavaScript string literal.
fn js(s: &str) -> String {
    serde_json::to_string(s).expect("a string")
}

/// Calls a page function that returns a promise; panics with the page's error.
async fn call(page: &mut Page<'_>, t: &Target, expr: &str) -> Value {
    page.eval(expr)
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", t.name))
}

/// The first message in the page's `received` that `predicate` (a JavaScript function of one
/// entry) accepts, once there is one.
async fn received(page: &mut Page<'_>, t: &Target, predicate: &str) -> Value {
    page.wait_for(&format!("received.find({predicate})"))
        .await
        .unwrap_or_else(|e| panic!("{}: nothing received: {e}", t.name))
}

/// The next message on `queue` (`basic.get` polled until one is there, or [`WAIT`]).
async fn get_one(ch: &Channel, t: &Target, queue: &str) -> lapin::message::BasicGetMessage {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let got = ch
            .basic_get(queue.into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap_or_else(|e| panic!("{}: basic.get {queue}: {e}", t.name));
        if let Some(m) = got {
            return m;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{}: nothing reached the AMQP queue {queue}",
            t.name
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn publish(ch: &Channel, t: &Target, key: &str, body: &[u8], props: BasicProperties) {
    ch.basic_publish(
        "amq.topic".into(),
        key.into(),
        BasicPublishOptions::default(),
        body,
        props,
    )
    .await
    .unwrap_or_else(|e| panic!("{}: AMQP publish: {e}", t.name));
}

/// STOMP with @stomp/stompjs: a topic subscription, a SEND to a queue, an RPC call.
async fn stomp(page: &mut Page<'_>, t: &Target, ch: &Channel, id: &str) {
    let url = format!("ws://{}/ws", t.web_stomp);
    let v = call(page, t, &format!("stompConnect({})", js(&url))).await;
    assert_eq!(
        (&v["version"], &v["protocol"]),
        (&json!("1.2"), &json!("v12.stomp")),
        "{}: STOMP 1.2, the subprotocol stompjs prefers",
        t.name
    );

    // SUBSCRIBE /topic/KEY; an AMQP publish to amq.topic with KEY arrives as a MESSAGE.
    let key = format!("browser.{id}.news");
    let topic = format!("/topic/{key}");
    call(page, t, &format!("stompSubscribe({})", js(&topic))).await;
    let props = BasicProperties::default().with_content_type("text/plain".into());
    publish(ch, t, &key, b"hello, browser", props).await;
    let m = received(page, t, &format!("m => m.destination === {}", js(&topic))).await;
    assert_eq!(m["body"], "hello, browser", "{}: {m}", t.name);
    assert_eq!(
        m["headers"]["content-type"], "text/plain",
        "{}: {m}",
        t.name
    );
    assert!(
        m["headers"]["subscription"].is_string() && m["headers"]["message-id"].is_string(),
        "{}: {m}",
        t.name
    );

    // SEND /amq/queue/Q reaches the AMQP queue Q, with its content type and its own header.
    let queue = format!("browser-{id}-stomp");
    ch.queue_declare(
        queue.as_str().into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap_or_else(|e| panic!("{}: declare {queue}: {e}", t.name));
    let headers = json!({"content-type": "text/plain", "x-origin": "chromium"});
    call(
        page,
        t,
        &format!(
            "stompSend({}, 'from the browser', {headers})",
            js(&format!("/amq/queue/{queue}"))
        ),
    )
    .await;
    let got = get_one(ch, t, &queue).await;
    let _ = ch
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await;
    assert_eq!(got.delivery.data, b"from the browser", "{}", t.name);
    let props = &got.delivery.properties;
    assert_eq!(
        props.content_type().as_ref().map(|c| c.as_str()),
        Some("text/plain"),
        "{}",
        t.name
    );
    let amqp_headers = props.headers().clone().unwrap_or_default();
    assert_eq!(
        table_str(&amqp_headers, "x-origin").as_deref(),
        Some("chromium"),
        "{}: {amqp_headers:?}",
        t.name
    );

    // An RPC call: SEND to the service queue with the wire protocol's headers; the reply comes
    // back on the page's /temp-queue/.
    let service = format!("browser-{id}-calc");
    let server = warren_rpc::Server::builder()
        .queue_name(service.clone())
        .serve(&t.amqp_url, CalculatorServer::new(Calc::new()))
        .await
        .unwrap_or_else(|e| panic!("{}: calculator server: {e}", t.name));
    let call_id = uuid::Uuid::new_v4().to_string();
    let headers = json!({
        "content-type": "application/json", "type": "add", "correlation-id": call_id,
        "amqp-message-id": call_id, "reply-to": "/temp-queue/calc",
        "x-warren-protocol": "1", "x-warren-timeout-ms": "10000",
    });
    call(
        page,
        t,
        &format!(
            "stompSend({}, '{{\"a\": 2, \"b\": 40}}', {headers})",
            js(&format!("/amq/queue/{service}"))
        ),
    )
    .await;
    let reply = received(
        page,
        t,
        &format!(
            "m => m.headers && m.headers['correlation-id'] === {}",
            js(&call_id)
        ),
    )
    .await;
    server.shutdown().await;
    assert_eq!(
        reply["headers"]["subscription"], "/temp-queue/calc",
        "{}: {reply}",
        t.name
    );
    assert_eq!(
        reply["headers"]["content-type"], "application/json",
        "{}: {reply}",
        t.name
    );
    let body: Value = serde_json::from_str(reply["body"].as_str().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{}: reply body: {e}: {reply}", t.name));
    assert_eq!(body, json!({"ok": 42}), "{}", t.name);

    call(page, t, "stompDisconnect()").await;
}

/// MQTT with MQTT.js: a subscription, a publish to an AMQP queue, a retained message.
async fn mqtt(page: &mut Page<'_>, t: &Target, ch: &Channel, id: &str) {
    let url = js(&format!("ws://{}/ws", t.web_mqtt));
    let client_id = js(&format!("browser-{id}-a"));
    call(page, t, &format!("mqttConnect('a', {url}, {client_id})")).await;

    // SUBSCRIBE browser/ID/+ at QoS 1; an AMQP publish to amq.topic arrives, its routing key
    // as the topic, at the subscription's QoS.
    let filter = js(&format!("browser/{id}/+"));
    let granted = call(page, t, &format!("mqttSubscribe('a', {filter}, 1)")).await;
    assert_eq!(granted, json!([1]), "{}: granted QoS", t.name);
    publish(
        ch,
        t,
        &format!("browser.{id}.temperature"),
        b"21.5",
        BasicProperties::default(),
    )
    .await;
    let topic = js(&format!("browser/{id}/temperature"));
    let m = received(page, t, &format!("m => m.topic === {topic}")).await;
    assert_eq!(
        (&m["body"], &m["qos"], &m["retain"]),
        (&json!("21.5"), &json!(1), &json!(false)),
        "{}: {m}",
        t.name
    );

    // A QoS 1 PUBLISH reaches an AMQP queue bound to amq.topic, as a persistent message.
    let q = ch
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("{}: declare: {e}", t.name));
    let key = format!("browser.{id}.command");
    ch.queue_bind(
        q.name().as_str().into(),
        "amq.topic".into(),
        key.as_str().into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap_or_else(|e| panic!("{}: bind: {e}", t.name));
    let topic = js(&format!("browser/{id}/command"));
    call(
        page,
        t,
        &format!("mqttPublish('a', {topic}, 'on', 1, false)"),
    )
    .await;
    let got = get_one(ch, t, q.name().as_str()).await;
    assert_eq!(got.delivery.data, b"on", "{}", t.name);
    assert_eq!(got.delivery.routing_key.as_str(), key, "{}", t.name);
    assert_eq!(got.delivery.exchange.as_str(), "amq.topic", "{}", t.name);
    let props = &got.delivery.properties;
    assert_eq!(*props.delivery_mode(), Some(2), "{}: persistent", t.name);
    let headers = props.headers().clone().unwrap_or_default();
    assert_eq!(
        warren_tests::table_int(&headers, "x-mqtt-publish-qos"),
        Some(1),
        "{}: {headers:?}",
        t.name
    );
    assert_eq!(
        headers.inner().get("x-mqtt-dup"),
        Some(&AMQPValue::Boolean(false)),
        "{}: {headers:?}",
        t.name
    );

    // A retained message reaches a client subscribing later, flagged retained; an empty
    // retained publish clears it.
    let state = js(&format!("browser/{id}/state"));
    call(
        page,
        t,
        &format!("mqttPublish('a', {state}, 'ready', 1, true)"),
    )
    .await;
    let late_id = js(&format!("browser-{id}-b"));
    call(page, t, &format!("mqttConnect('b', {url}, {late_id})")).await;
    call(page, t, &format!("mqttSubscribe('b', {state}, 1)")).await;
    let m = received(
        page,
        t,
        &format!("m => m.client === 'mqtt b' && m.topic === {state}"),
    )
    .await;
    assert_eq!(
        (&m["body"], &m["retain"]),
        (&json!("ready"), &json!(true)),
        "{}: {m}",
        t.name
    );
    call(page, t, &format!("mqttPublish('a', {state}, '', 1, true)")).await;
    call(page, t, "mqttEnd('b')").await;
    call(page, t, "mqttEnd('a')").await;
}

/// Every scenario on one broker, in a fresh tab.
async fn run(page: &mut Page<'_>, t: &Target, libs: &Path) {
    let conn = Connection::connect(&t.amqp_url, ConnectionProperties::default())
        .await
        .unwrap_or_else(|e| panic!("{}: AMQP connection: {e}", t.name));
    let ch = conn.create_channel().await.expect("channel");
    let html: PathBuf = [env!("CARGO_MANIFEST_DIR"), "browser", "ws_clients.html"]
        .iter()
        .collect();
    let url = format!("file://{}?libs={}", html.display(), libs.display());
    page.goto(&url).await.expect("the page loads");
    call(page, t, "ready").await;
    let id = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
    stomp(page, t, &ch, &id).await;
    mqtt(page, t, &ch, &id).await;
    let _ = conn.close(200, "bye".into()).await;
}

fn screenshot_path(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target
        .join("browser-clients-screenshots")
        .join(format!("{name}.png"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stompjs_and_mqttjs_in_headless_chromium() {
    let Some(libs) = libs_dir() else {
        println!(
            "browser clients test skipped: WARREN_TEST_BROWSER_LIBS is not set (the directory \
             `npm install --prefix DIR @stomp/stompjs@7 mqtt@5` installed into; .ci/run sets it)"
        );
        return;
    };
    let Some(chromium) = find_or_install_chromium() else {
        println!("browser clients test skipped: chromium is not installed and cannot be installed");
        return;
    };
    let any: SocketAddr = "127.0.0.1:0".parse().expect("address");
    let broker = Broker::builder()
        .listen(any)
        .web_stomp_listen(any)
        .web_mqtt_listen(any)
        .start()
        .await
        .expect("the bundled broker starts");
    let mut targets = Vec::new();
    if left_out("bundled") {
        println!("skipped bundled variant: WARREN_TEST_ONLY");
    } else {
        targets.push(Target {
            name: "bundled",
            web_stomp: broker.web_stomp_addr().expect("Web-STOMP listener"),
            web_mqtt: broker.web_mqtt_local_addr().expect("Web-MQTT listener"),
            amqp_url: broker.amqp_url(),
        });
    }
    match reference() {
        _ if left_out("rabbitmq") => println!("skipped rabbitmq variant: WARREN_TEST_ONLY"),
        Ok(t) => targets.push(t),
        Err(why) => println!("skipped rabbitmq variant: {why}"),
    }

    let mut browser = Browser::launch(&chromium).await.expect("chromium");
    let mut failed = Vec::new();
    for t in &targets {
        let mut page = browser.new_page(1100, 800).await.expect("tab");
        let outcome = AssertUnwindSafe(run(&mut page, t, &libs))
            .catch_unwind()
            .await;
        let shot = screenshot_path(t.name);
        match page.screenshot(&shot).await {
            Ok(()) => println!("screenshot: {}", shot.display()),
            Err(e) => println!("no screenshot of {}: {e}", t.name),
        }
        match outcome {
            Ok(()) => println!("{}: every scenario passed", t.name),
            Err(_) => failed.push(t.name), // the panic message is printed above
        }
    }
    browser.close().await;
    broker.shutdown().await;
    assert!(failed.is_empty(), "failed on: {}", failed.join(", "));
}
