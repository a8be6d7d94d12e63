//! Introspection and broadcast on both brokers: `$ping`, `$describe` and `$stats` addressed to
//! one replica (the service queue) or to every replica (the `warren.all.<service>` exchange),
//! broadcasts of ordinary methods, and the same reserved methods from a peer that speaks only
//! the v1 wire protocol.

use std::collections::BTreeSet;
use std::time::Duration;

use warren_examples::{Calc, CalcError, CalculatorClient, CalculatorServer};
use warren_rpc::introspect;
use warren_rpc::{BroadcastOptions, Codec, Error, Server};
use warren_tests::rpc_support::{calculator, client, raw_call, serve_calculator, RawRequest};
use warren_tests::{compat_test, unique, Target};

/// How long a broadcast collects replies when the test does not stop it at N replies.
const COLLECT: Duration = Duration::from_millis(1500);

/// `n` calculator servers sharing one fresh queue.
async fn replicas(target: &Target, n: usize) -> (Vec<Server>, String) {
    let queue = unique("calculator");
    let mut servers = Vec::new();
    for _ in 0..n {
        let server = Server::builder()
            .queue_name(queue.clone())
            .version("test-1.2.3")
            .serve(target.url(), CalculatorServer::new(Calc::new()))
            .await
            .unwrap_or_else(|e| panic!("{target}: server failed to start: {e}"));
        servers.push(server);
    }
    (servers, queue)
}

async fn stop(target: &Target, servers: Vec<Server>, queue: &str) {
    for server in servers {
        server.shutdown().await;
    }
    target.delete_queues(&[queue]).await;
}

compat_test! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_replica_answers_ping_describe_and_stats(target: Target) {
        let (server, queue) = serve_calculator(&target, Server::builder()).await;
        let client = client(&target).await;

        let ping = client.ping(&queue).await.unwrap();
        assert_eq!(ping.service, queue, "{target}: ping names the queue");
        assert_eq!(ping.pid, std::process::id(), "{target}: pid");
        assert!(!ping.instance.is_empty(), "{target}: instance id");
        assert!(
            ping.in_flight >= 1,
            "{target}: the ping itself is in flight"
        );
        assert_eq!(
            ping.warren_version, ping.version,
            "{target}: default version"
        );

        let description = client.describe(&queue).await.unwrap();
        assert_eq!(description.service, "calculator", "{target}");
        assert_eq!(description.queue, queue, "{target}");
        assert_eq!(description.protocol, 1, "{target}");
        let names: Vec<&str> = description
            .methods
            .iter()
            .map(|m| m.name.as_str())
            .collect();
        assert_eq!(
            names,
            [
                "add",
                "sub",
                "mul",
                "div",
                "memory_add",
                "memory_recall",
                "fibonacci"
            ],
            "{target}: every method, in declaration order"
        );
        let div = &description.methods[3];
        let params: Vec<(&str, &str)> = div
            .params
            .iter()
            .map(|p| (p.name.as_str(), p.ty.as_str()))
            .collect();
        assert_eq!(params, [("a", "i64"), ("b", "i64")], "{target}: div params");
        assert_eq!(div.returns, "i64", "{target}");
        assert_eq!(div.error.as_deref(), Some("CalcError"), "{target}");
        assert!(div.idempotent && !div.oneway, "{target}");
        assert!(
            div.doc.contains("rounded toward zero"),
            "{target}: {}",
            div.doc
        );
        assert!(!description.methods[4].idempotent, "{target}: memory_add");
        assert_eq!(
            description.methods[6].returns, "Stream<u64>",
            "{target}: a streaming method"
        );
        assert!(
            description.schemas.is_none(),
            "{target}: no schemars feature"
        );

        let calc = calculator(&client, &queue);
        for i in 0..10 {
            assert_eq!(calc.add(i, 1).await.unwrap(), i + 1, "{target}");
        }
        assert_eq!(
            calc.div(1, 0).await.unwrap(),
            Err(CalcError::DivisionByZero)
        );
        let stats = client.stats(&queue).await.unwrap();
        assert_eq!(stats.instance, ping.instance, "{target}: same server");
        assert_eq!(stats.methods["add"].calls, 10, "{target}: add calls");
        assert!(stats.methods["add"].errors.is_empty(), "{target}");
        assert!(stats.methods["add"].p50_ms.is_some(), "{target}: p50");
        assert!(
            stats.methods["add"].p99_ms >= stats.methods["add"].p50_ms,
            "{target}: p99 >= p50"
        );
        assert_eq!(stats.methods["div"].calls, 1, "{target}");
        assert_eq!(
            stats.methods["div"].errors.get("err"),
            Some(&1),
            "{target}: an application error counted by kind"
        );
        assert_eq!(stats.methods["sub"].calls, 0, "{target}: uncalled listed");
        assert!(
            !stats.methods.contains_key("$ping"),
            "{target}: reserved methods are not counted"
        );

        server.shutdown().await;
        target.delete_queues(&[&queue]).await;
    }
}

compat_test! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_replica_answers_a_broadcast(target: Target) {
        let (servers, queue) = replicas(&target, 2).await;
        let client = client(&target).await;

        let options = BroadcastOptions::new().timeout(COLLECT);
        let pings = client.ping_all(&queue, &options).await.unwrap();
        let instances: BTreeSet<String> = pings
            .iter()
            .map(|r| r.result.as_ref().unwrap().instance.clone())
            .collect();
        assert_eq!(instances.len(), 2, "{target}: one reply per replica");
        for replica in &pings {
            let ping = replica.result.as_ref().unwrap();
            assert_eq!(replica.instance.as_ref(), Some(&ping.instance), "{target}");
            assert_eq!(ping.version, "test-1.2.3", "{target}: app version");
        }

        // An ordinary method, to every replica; each has its own memory.
        let memory_add = &CalculatorClient::METHODS[4];
        let added = client
            .broadcast_call::<_, i64>(
                memory_add,
                &serde_json::json!({"x": 7}),
                &options.clone().service(queue.as_str()),
            )
            .await
            .unwrap();
        let totals: Vec<i64> = added.into_iter().map(|r| r.result.unwrap()).collect();
        assert_eq!(totals, [7, 7], "{target}: each replica ran it once");

        // A method with an application error, in JSON.
        let div = &CalculatorClient::METHODS[3];
        let divided = client
            .broadcast_fallible::<_, i64, CalcError>(
                div,
                &serde_json::json!({"a": 1, "b": 0}),
                &options.clone().service(queue.as_str()).codec(Codec::Json),
            )
            .await
            .unwrap();
        assert_eq!(divided.len(), 2, "{target}");
        for replica in divided {
            assert_eq!(replica.result.unwrap(), Err(CalcError::DivisionByZero));
        }

        // The typed broadcast of the generated client, with its call options' service name.
        let calc = calculator(&client, &queue);
        let sums = calc.broadcast().timeout(COLLECT).add(2, 3).await.unwrap();
        assert_eq!(sums.len(), 2, "{target}: typed broadcast");
        assert!(sums.iter().all(|r| matches!(r.result, Ok(5))), "{target}");
        let divided = calc.broadcast().max_replies(2).div(7, 0).await.unwrap();
        assert_eq!(divided.len(), 2, "{target}");
        assert!(
            divided
                .iter()
                .all(|r| matches!(r.result, Ok(Err(CalcError::DivisionByZero)))),
            "{target}: application errors per replica"
        );

        // Stop at the first reply: well before the collection window.
        let first = client
            .ping_all(
                &queue,
                &BroadcastOptions::new()
                    .timeout(Duration::from_secs(30))
                    .max_replies(1),
            )
            .await
            .unwrap();
        assert_eq!(first.len(), 1, "{target}: max_replies");

        // The service queue still has exactly one consumer per server: a plain call works.
        assert_eq!(calculator(&client, &queue).add(2, 3).await.unwrap(), 5);

        // $stats from every replica.
        let stats = client
            .broadcast_call::<_, introspect::StatsReply>(
                &introspect::reserved_method("", introspect::STATS),
                &serde_json::json!({}),
                &options.clone().service(queue.as_str()),
            )
            .await
            .unwrap();
        assert_eq!(stats.len(), 2, "{target}");
        let mut adds = 0;
        for s in stats {
            let s = s.result.unwrap();
            assert_eq!(s.methods["memory_add"].calls, 1, "{target}");
            assert!(s.methods["add"].calls >= 1, "{target}: the typed broadcast");
            adds += s.methods["add"].calls;
        }
        assert_eq!(adds, 3, "{target}: a broadcast add on each, one plain add");

        stop(&target, servers, &queue).await;
    }
}

compat_test! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_broadcast_to_nobody_is_unavailable_and_discovery_finds_servers(target: Target) {
        let client = client(&target).await;
        let nobody = unique("nobody");
        let err = client
            .ping_all(&nobody, &BroadcastOptions::new().timeout(COLLECT))
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::ServiceUnavailable { ref service } if *service == nobody),
            "{target}: {err:?}"
        );
        // The failed probe did not hurt the client.
        let (servers, queue) = replicas(&target, 1).await;
        assert_eq!(calculator(&client, &queue).add(1, 1).await.unwrap(), 2);

        // Discovery: a $ping to the discovery exchange reaches every server of every service.
        let found = client
            .broadcast_call::<_, introspect::PingReply>(
                &introspect::reserved_method("", introspect::PING),
                &serde_json::json!({}),
                &BroadcastOptions::new()
                    .timeout(COLLECT)
                    .service("discovery")
                    .exchange(introspect::DISCOVERY_EXCHANGE),
            )
            .await
            .unwrap();
        assert!(
            found
                .iter()
                .any(|r| r.result.as_ref().is_ok_and(|p| p.service == queue)),
            "{target}: discovery lists {queue}"
        );

        // After the last replica stops, its broadcast exchange is gone with it.
        stop(&target, servers, &queue).await;
        let gone = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match client
                    .ping_all(&queue, &BroadcastOptions::new().timeout(COLLECT))
                    .await
                {
                    Err(Error::ServiceUnavailable { .. }) => return,
                    _ => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        })
        .await;
        assert!(gone.is_ok(), "{target}: no replica left to answer");
    }
}

compat_test! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reserved_methods_over_the_bare_wire_protocol(target: Target) {
        let (server, queue) = serve_calculator(&target, Server::builder()).await;
        let reply = raw_call(&target, &queue, RawRequest::json("$ping", "{}")).await;
        assert_eq!(reply.content_type.as_deref(), Some("application/json"));
        let body = reply.json();
        assert_eq!(body["ok"]["service"], queue.as_str(), "{target}: {body}");
        assert!(body["ok"]["uptime_ms"].is_u64(), "{target}: {body}");

        let reply = raw_call(&target, &queue, RawRequest::json("$describe", "{}")).await;
        let body = reply.json();
        assert_eq!(
            body["ok"]["methods"][0]["params"][1],
            serde_json::json!({"name": "b", "type": "i64"}),
            "{target}: {body}"
        );

        let reply = raw_call(&target, &queue, RawRequest::msgpack("$stats", &())).await;
        let body = reply.json();
        assert_eq!(body["ok"]["methods"]["add"]["calls"], 0, "{target}: {body}");

        let reply = raw_call(&target, &queue, RawRequest::json("$nothing", "{}")).await;
        assert_eq!(
            reply.json()["fault"]["code"],
            "unknown_method",
            "{target}: other $-names are unknown methods"
        );
        server.shutdown().await;
        target.delete_queues(&[&queue]).await;
    }
}
