//! Warren's own management endpoints (`/api/warren/...`) and `warren_rpc_*` metrics, from what
//! real traffic makes the broker see: a warren-rpc calculator served and called, a call to a
//! service nobody serves (returned), a request that expires in an idle service queue; then
//! calls made from inside the broker through `POST .../call` (a reply, an application error, a
//! fault, no route, bad input), `$describe`, and the Prometheus series.
//!
//! Warren's own API: RabbitMQ has no counterpart, so this runs against the bundled broker only.

use lapin::options::{BasicPublishOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde_json::{json, Value};
use std::time::Duration;
use warren_broker::{Broker, BrokerHandle};
use warren_examples::CalculatorClient;
use warren_rpc::{CallOptions, Error};
use warren_tests::rpc_support::calculator_at;
use warren_tests::unique;

/// An HTTP request to the management API as guest (None: no credentials): status and body.
async fn http(method: &str, url: String, body: Option<Value>, auth: bool) -> (u16, Value) {
    let method = method.to_string();
    tokio::task::spawn_blocking(move || {
        let mut req = ureq::request(&method, &url);
        if auth {
            req = req.set("Authorization", "Basic Z3Vlc3Q6Z3Vlc3Q="); // guest:guest
        }
        let result = match body {
            Some(b) => req.send_json(b),
            None => req.call(),
        };
        let resp = match result {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{method} {url}: {e}"),
        };
        let status = resp.status();
        let text = resp.into_string().unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    })
    .await
    .expect("request task")
}

struct Api {
    base: String,
}

impl Api {
    fn new(broker: &BrokerHandle) -> Api {
        Api {
            base: format!(
                "http://{}/api/warren",
                broker.management_addr().expect("management")
            ),
        }
    }

    async fn service(&self, vhost_queue: &str) -> (u16, Value) {
        http(
            "GET",
            format!("{}/services/{vhost_queue}", self.base),
            None,
            true,
        )
        .await
    }

    async fn call(&self, queue: &str, body: Value) -> (u16, Value) {
        http(
            "POST",
            format!("{}/services/%2F/{queue}/call", self.base),
            Some(body),
            true,
        )
        .await
    }

    /// Polls a service until `done` holds for it (the observer counts as traffic happens;
    /// expiry is found by the broker's 250 ms ticker).
    async fn wait_service(&self, queue: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let until = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let (status, s) = self.service(&format!("%2F/{queue}")).await;
            if status == 200 && done(&s) {
                return s;
            }
            assert!(
                tokio::time::Instant::now() < until,
                "{queue}: {what}; last: {status} {s}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A Warren request (protocol.md section 3) published by hand into a queue no server reads,
/// with a 1 ms expiration: the broker drops it unserved.
async fn publish_expiring_request(url: &str, queue: &str) {
    let conn = Connection::connect(url, ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.queue_declare(
        queue.into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let mut headers = FieldTable::default();
    headers.insert("x-warren-protocol".into(), AMQPValue::LongLongInt(1));
    headers.insert("x-warren-timeout-ms".into(), AMQPValue::LongLongInt(1));
    let props = BasicProperties::default()
        .with_type("add".into())
        .with_correlation_id("call-1".into())
        .with_reply_to("nobody-listens".into())
        .with_expiration("1".into())
        .with_headers(headers);
    ch.basic_publish(
        "".into(),
        queue.into(),
        BasicPublishOptions::default(),
        b"{}",
        props,
    )
    .await
    .unwrap();
    conn.close(200, "bye".into()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_reports_rpc_traffic_and_calls_services() {
    let broker = Broker::builder()
        .listen("127.0.0.1:0".parse().unwrap())
        .management("127.0.0.1:0".parse().unwrap())
        .prometheus("127.0.0.1:0".parse().unwrap())
        .start()
        .await
        .expect("broker");
    let url = broker.amqp_url();
    let api = Api::new(&broker);
    let (server, client, calc, service) = calculator_at(&url).await;
    for i in 0..3 {
        assert_eq!(calc.add(i, 1).await.unwrap(), i + 1);
    }
    let missing = unique("nobody");
    let nobody = CalculatorClient::new(client.clone()).with_options(
        CallOptions::new()
            .service(&missing)
            .timeout(Duration::from_millis(300)),
    );
    let err = nobody.add(1, 1).await.expect_err("no server");
    assert!(
        matches!(
            err,
            Error::ServiceUnavailable { .. } | Error::Expired { .. }
        ),
        "{err:?}"
    );
    let idle = unique("idle");
    publish_expiring_request(&url, &idle).await;

    // What the broker saw.
    let s = api
        .wait_service(&service, "3 requests and their replies", |s| {
            s["replies"] == 3
        })
        .await;
    assert_eq!(
        (
            s["requests"].clone(),
            s["consumers"].clone(),
            s["in_flight"].clone()
        ),
        (json!(3), json!(1), json!(0))
    );
    assert!(s["latency"]["p50_ms"].as_f64().unwrap() > 0.0, "{s}");
    assert!(s["latency"]["p99_ms"].as_f64().unwrap() >= s["latency"]["p50_ms"].as_f64().unwrap());
    let m = api
        .wait_service(&missing, "the returned requests", |s| {
            s["returned"].as_u64() >= Some(1)
        })
        .await;
    assert_eq!(m["consumers"], Value::Null, "no queue: {m}");
    let e = api
        .wait_service(&idle, "the expired request", |s| s["expired"] == 1)
        .await;
    assert_eq!(e["requests"], 1);
    api.wait_service(&idle, "no reply by the deadline", |s| s["unanswered"] == 1)
        .await;
    let (status, list) = http("GET", format!("{}/services", api.base), None, true).await;
    assert_eq!(status, 200);
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == service.as_str()),
        "{list}"
    );

    // Calls from inside the broker.
    let (status, r) = api
        .call(
            &service,
            json!({"method": "add", "args": {"a": 2, "b": 40}}),
        )
        .await;
    assert_eq!(
        (status, r["reply"].clone()),
        (200, json!({"ok": 42})),
        "{r}"
    );
    assert!(r["call_id"].as_str().is_some_and(|c| !c.is_empty()));
    let (_, r) = api
        .call(&service, json!({"method": "div", "args": {"a": 1, "b": 0}}))
        .await;
    assert_eq!(r["reply"], json!({"err": "DivisionByZero"}));
    let (_, r) = api.call(&service, json!({"method": "nope"})).await;
    assert_eq!(r["reply"]["fault"]["code"], "unknown_method", "{r}");
    let (status, r) = api
        .call(&missing, json!({"method": "add", "args": {}}))
        .await;
    assert_eq!(
        (status, r["error"].clone()),
        (503, json!("unroutable")),
        "{r}"
    );
    let (status, r) = api
        .call(&service, json!({"method": "add", "args": [1, 2]}))
        .await;
    assert_eq!(
        (status, r["error"].clone()),
        (400, json!("bad_request")),
        "{r}"
    );
    let (status, _) = api
        .call(&service, json!({"method": "add", "bogus": 1}))
        .await;
    assert_eq!(status, 400);
    let (status, _) = http(
        "POST",
        format!("{}/services/nope/{service}/call", api.base),
        Some(json!({"method": "add"})),
        true,
    )
    .await;
    assert_eq!(status, 404, "unknown vhost");
    let (status, _) = http("GET", format!("{}/services", api.base), None, false).await;
    assert_eq!(status, 401);
    let (status, d) = http(
        "GET",
        format!("{}/services/%2F/{service}/describe", api.base),
        None,
        true,
    )
    .await;
    assert_eq!(status, 200, "{d}");
    let names: Vec<&str> = d["methods"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["name"].as_str())
        .collect();
    assert!(
        names.contains(&"add") && names.contains(&"div"),
        "{names:?}"
    );

    // The same counts as Prometheus series, in a text format a parser reads.
    let metrics_url = format!(
        "http://{}/metrics",
        broker.prometheus_addr().expect("prometheus")
    );
    let (status, text) = http("GET", metrics_url, None, false).await;
    assert_eq!(status, 200);
    let text = text.as_str().expect("text").to_string();
    let scrape =
        prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("parses");
    let sample = |name: &str, queue: &str| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name && s.labels.get("queue") == Some(queue))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            })
    };
    assert!(
        sample("warren_rpc_requests_total", &service) >= Some(6.0),
        "{text}"
    );
    let returned = m["returned"].as_f64().unwrap() + 1.0; // the client's attempts, then the API's call
    assert_eq!(
        sample("warren_rpc_returned_requests_total", &missing),
        Some(returned)
    );
    assert_eq!(
        sample("warren_rpc_expired_requests_total", &idle),
        Some(1.0)
    );
    assert!(
        text.contains(&format!(
            "warren_rpc_reply_latency_seconds_count{{vhost=\"/\",queue=\"{service}\"}}"
        )),
        "{text}"
    );

    server.shutdown().await;
    client.close().await;
    broker.shutdown().await;
}

/// The dashboard's files: their content types, and a revalidation answered 304 by `ETag`.
#[tokio::test]
async fn dashboard_assets_are_served_with_validators() {
    let broker = Broker::builder()
        .listen("127.0.0.1:0".parse().unwrap())
        .management("127.0.0.1:0".parse().unwrap())
        .start()
        .await
        .expect("broker");
    let base = format!("http://{}", broker.management_addr().unwrap());
    for (path, content_type) in [
        ("/", "text/html; charset=utf-8"),
        ("/static/warren.js", "text/javascript; charset=utf-8"),
        ("/static/warren.css", "text/css; charset=utf-8"),
    ] {
        let url = format!("{base}{path}");
        let (ct, etag, cache, len) = tokio::task::spawn_blocking(move || {
            let r = ureq::get(&url).call().expect("asset");
            let h = |n: &str| r.header(n).unwrap_or_default().to_string();
            let (ct, etag, cache) = (h("content-type"), h("etag"), h("cache-control"));
            (ct, etag, cache, r.into_string().unwrap().len())
        })
        .await
        .unwrap();
        assert_eq!(
            (ct.as_str(), cache.as_str()),
            (content_type, "no-cache"),
            "{path}"
        );
        assert!(
            len > 500 && etag.starts_with('"'),
            "{path}: {len} bytes, etag {etag}"
        );
        let url = format!("{base}{path}");
        let status = tokio::task::spawn_blocking(move || {
            match ureq::get(&url).set("If-None-Match", &etag).call() {
                Ok(r) => r.status(),
                Err(ureq::Error::Status(s, _)) => s,
                Err(e) => panic!("{e}"),
            }
        })
        .await
        .unwrap();
        assert_eq!(status, 304, "{path} revalidated");
    }
    broker.shutdown().await;
}
