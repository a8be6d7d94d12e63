//! RPC scenarios: a server and a caller written by hand with lapin (direct reply-to), and the
//! same calls through warren-rpc; latency at one caller, calls per second at many.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection};
use serde::{Deserialize, Serialize};

use crate::cli::Which;
use crate::frame_client::RawAmqp;
use crate::lapin_client::{channel, close, connect, delete_queue, no_ack};
use crate::report::{rpc_label, Results, Unit};
use crate::BoxResult;

/// Arguments of `add` as the client encodes them (a map, like warren-rpc's wire format).
#[derive(Serialize)]
struct AddArgsRef<'a> {
    a: i64,
    b: i64,
    pad: &'a str,
}

/// Arguments of `add` as a server decodes them.
#[derive(Deserialize)]
struct AddArgs {
    a: i64,
    b: i64,
    #[allow(dead_code)]
    pad: String,
}

/// The reply envelope `{"ok": value}` of the wire protocol.
#[derive(Serialize, Deserialize)]
struct OkReply {
    ok: i64,
}

/// The calculator's `add`, with a padding argument that sets the request size under test.
#[warren_rpc::service(name = "warren_bench")]
trait BenchCalc {
    /// `a + b`; `pad` only makes the request the size under test.
    #[warren(idempotent)]
    async fn add(&self, a: i64, b: i64, pad: String) -> i64;
}

struct Adder;

impl BenchCalc for Adder {
    async fn add(&self, a: i64, b: i64, _pad: String) -> i64 {
        a.wrapping_add(b)
    }
}

/// The padding that makes the MessagePack request body exactly `size` bytes (or the smallest
/// size above it).
fn pad_for(size: usize) -> String {
    let mut pad = String::new();
    loop {
        let len = rmp_serde::to_vec_named(&AddArgsRef {
            a: 1,
            b: 2,
            pad: &pad,
        })
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
        if len >= size {
            return pad;
        }
        pad.push('x');
    }
}

const RAW_QUEUE: &str = "warren-bench.raw-rpc";
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// A server written by hand: consumes the request queue with manual acks and a prefetch,
/// decodes the arguments, replies to `reply_to` with the same correlation id, then acks.
struct RawServer {
    conn: Connection,
    task: tokio::task::JoinHandle<()>,
}

impl RawServer {
    pub(crate) async fn start(url: &str, prefetch: u16) -> BoxResult<RawServer> {
        let conn = connect(url).await?;
        delete_queue(&conn, RAW_QUEUE).await;
        let ch = channel(&conn).await?;
        ch.queue_declare(
            RAW_QUEUE.into(),
            QueueDeclareOptions {
                auto_delete: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(|e| format!("queue.declare: {e}"))?;
        ch.basic_qos(prefetch, BasicQosOptions::default())
            .await
            .map_err(|e| format!("basic.qos: {e}"))?;
        let mut consumer = ch
            .basic_consume(
                RAW_QUEUE.into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| format!("basic.consume: {e}"))?;
        let task = tokio::spawn(async move {
            while let Some(Ok(delivery)) = consumer.next().await {
                let ch = ch.clone();
                tokio::spawn(async move {
                    let sum = match rmp_serde::from_slice::<AddArgs>(&delivery.data) {
                        Ok(args) => args.a.wrapping_add(args.b),
                        Err(_) => i64::MIN,
                    };
                    let body = rmp_serde::to_vec_named(&OkReply { ok: sum }).unwrap_or_default();
                    let props = &delivery.properties;
                    if let (Some(reply_to), Some(cid)) = (props.reply_to(), props.correlation_id())
                    {
                        let reply = BasicProperties::default()
                            .with_correlation_id(cid.clone())
                            .with_content_type("application/msgpack".into());
                        let _ = ch
                            .basic_publish(
                                "".into(),
                                reply_to.clone(),
                                BasicPublishOptions::default(),
                                &body,
                                reply,
                            )
                            .await;
                    }
                    let _ = delivery.acker.ack(BasicAckOptions::default()).await;
                });
            }
        });
        Ok(RawServer { conn, task })
    }

    pub(crate) async fn stop(self) {
        self.task.abort();
        delete_queue(&self.conn, RAW_QUEUE).await;
        close(self.conn).await;
    }
}

type Pending = Arc<Mutex<HashMap<u64, tokio::sync::oneshot::Sender<Vec<u8>>>>>;

/// A caller written by hand: one connection and channel, replies on direct reply-to, matched
/// to calls by correlation id.
struct RawClient {
    conn: Connection,
    ch: Channel,
    pending: Pending,
    next_id: AtomicU64,
    reader: tokio::task::JoinHandle<()>,
    /// Publish with `mandatory` and wait for the broker's confirm before waiting for the reply.
    confirms: bool,
}

impl RawClient {
    pub(crate) async fn connect(url: &str, confirms: bool) -> BoxResult<RawClient> {
        let conn = connect(url).await?;
        let ch = channel(&conn).await?;
        if confirms {
            ch.confirm_select(ConfirmSelectOptions::default())
                .await
                .map_err(|e| format!("confirm.select: {e}"))?;
        }
        let mut replies = ch
            .basic_consume(
                "amq.rabbitmq.reply-to".into(),
                "".into(),
                no_ack(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| format!("consume amq.rabbitmq.reply-to: {e}"))?;
        let pending: Pending = Arc::default();
        let reader = {
            let pending = Arc::clone(&pending);
            tokio::spawn(async move {
                while let Some(Ok(d)) = replies.next().await {
                    let id = d
                        .properties
                        .correlation_id()
                        .as_ref()
                        .and_then(|c| c.as_str().parse::<u64>().ok());
                    let waiter = id.and_then(|id| pending.lock().expect("pending").remove(&id));
                    if let Some(tx) = waiter {
                        let _ = tx.send(d.data);
                    }
                }
            })
        };
        Ok(RawClient {
            conn,
            ch,
            pending,
            next_id: AtomicU64::new(1),
            reader,
            confirms,
        })
    }

    async fn call(&self, body: &[u8]) -> BoxResult<Vec<u8>> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.pending.lock().expect("pending").insert(id, tx);
        let props = BasicProperties::default()
            .with_reply_to("amq.rabbitmq.reply-to".into())
            .with_correlation_id(id.to_string().into())
            .with_content_type("application/msgpack".into());
        let confirm = self
            .ch
            .basic_publish(
                "".into(),
                RAW_QUEUE.into(),
                BasicPublishOptions {
                    mandatory: self.confirms,
                    ..BasicPublishOptions::default()
                },
                body,
                props,
            )
            .await
            .map_err(|e| format!("basic.publish: {e}"))?;
        if self.confirms {
            confirm.await.map_err(|e| format!("confirm: {e}"))?;
        }
        match tokio::time::timeout(CALL_TIMEOUT, rx).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(_)) => Err("reply reader ended".into()),
            Err(_) => {
                self.pending.lock().expect("pending").remove(&id);
                Err("no reply in 10 s".into())
            }
        }
    }

    pub(crate) async fn close(self) {
        self.reader.abort();
        close(self.conn).await;
    }
}

type CallFuture = Pin<Box<dyn Future<Output = BoxResult<()>> + Send>>;
type CallFn = Arc<dyn Fn() -> CallFuture + Send + Sync>;

/// p50 and p99 of sequential calls, in microseconds: 200 warm-up calls, then calls for
/// `seconds` (at most 20,000).
pub(crate) async fn latency(call: &CallFn, seconds: f64) -> BoxResult<(f64, f64)> {
    for _ in 0..200 {
        call().await?;
    }
    let until = Instant::now() + Duration::from_secs_f64(seconds);
    let mut samples = Vec::with_capacity(20_000);
    while Instant::now() < until && samples.len() < 20_000 {
        let t = Instant::now();
        call().await?;
        samples.push(t.elapsed().as_secs_f64() * 1e6);
    }
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    Ok((at(0.50), at(0.99)))
}

/// Calls per second with `callers` concurrent callers, each calling in a loop: half a second
/// of warm-up, then `seconds` measured.
async fn calls_per_sec(call: &CallFn, callers: usize, seconds: f64) -> BoxResult<f64> {
    let start = Instant::now();
    let measure_from = start + Duration::from_millis(500);
    let until = measure_from + Duration::from_secs_f64(seconds);
    let mut tasks = Vec::new();
    for _ in 0..callers {
        let call = Arc::clone(call);
        tasks.push(tokio::spawn(async move {
            let mut done = 0u64;
            loop {
                let now = Instant::now();
                if now >= until {
                    return Ok::<u64, String>(done);
                }
                call().await?;
                if now >= measure_from && Instant::now() <= until {
                    done += 1;
                }
            }
        }));
    }
    let mut total = 0;
    let mut first_error = None;
    for t in tasks {
        match t.await {
            Ok(Ok(n)) => total += n,
            Ok(Err(e)) => {
                first_error.get_or_insert(e);
            }
            Err(e) => {
                first_error.get_or_insert(format!("caller task: {e}"));
            }
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    Ok(total as f64 / seconds)
}

const RPC_SIZES: [(usize, &str); 2] = [(64, "64 B"), (16 * 1024, "16 KiB")];
const RPC_CALLERS: [usize; 2] = [32, 256];
/// The servers' prefetch (and warren-rpc's concurrency): enough that 256 callers never wait
/// for a server slot, the same for both implementations.
const SERVER_CONCURRENCY: u16 = 256;

/// Runs the RPC measurements for one implementation against one broker.
async fn rpc_suite(
    results: &mut Results,
    which: Which,
    how: &str,
    make: &dyn Fn(usize) -> CallFn,
    seconds: f64,
) {
    for (size, size_name) in RPC_SIZES {
        let call = make(size);
        let (p50, p99) = (
            rpc_label(how, size_name, "p50 @1 caller"),
            rpc_label(how, size_name, "p99 @1 caller"),
        );
        match latency(&call, seconds.min(3.0)).await {
            Ok((a, b)) => {
                results.record(which, &p50, Unit::Micros, a);
                results.record(which, &p99, Unit::Micros, b);
            }
            Err(e) => {
                results.note(which, &p50, Unit::Micros, format!("failed: {e}"));
                results.note(which, &p99, Unit::Micros, format!("failed: {e}"));
            }
        }
        for callers in RPC_CALLERS {
            let label = rpc_label(how, size_name, &format!("calls/s @{callers} callers"));
            match calls_per_sec(&call, callers, seconds.min(3.0)).await {
                Ok(v) => results.record(which, &label, Unit::CallsPerSec, v),
                Err(e) => results.note(which, &label, Unit::CallsPerSec, format!("failed: {e}")),
            }
        }
    }
}

/// RPC round trips with the frame-level client at both ends: a request published to the
/// server's queue with `reply-to`, answered by a pre-encoded reply to the caller's queue. No
/// client library sits between the calls and the sockets (lapin hands every frame to and from
/// an I/O thread of its own), so this is the broker's own share of an RPC's latency: the floor
/// a client could reach on each broker.
pub(crate) async fn frame_rpc(
    results: &mut Results,
    which: Which,
    url: &str,
    seconds: f64,
) -> BoxResult<()> {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let (requests, replies) = (
        format!("warren_bench_frame_rpc.{id}"),
        format!("warren_bench_frame_reply.{id}"),
    );
    let mut server = RawAmqp::connect(url).await?;
    server.declare_exclusive(&requests).await?;
    server.consume(&requests).await?;
    let mut client = RawAmqp::connect(url).await?;
    client.declare_exclusive(&replies).await?;
    client.consume(&replies).await?;
    let body = [7u8; 64];
    let reply = server.encode_publish("", &replies, &body, BasicProperties::default())?;
    let request = client.encode_publish(
        "",
        &requests,
        &body,
        BasicProperties::default()
            .with_reply_to(replies.as_str().into())
            .with_correlation_id(id.as_str().into()),
    )?;
    // The server answers each request it counts; it runs until aborted.
    let answering = tokio::spawn(async move {
        while let Ok(n) = server.count_deliveries().await {
            for _ in 0..n {
                if server.write(&reply).await.is_err() {
                    return;
                }
            }
        }
    });
    let until = Instant::now() + Duration::from_secs_f64(0.2 + seconds.min(3.0));
    let mut samples = Vec::with_capacity(20_000);
    let mut calls = 0u32;
    let measured = async {
        while Instant::now() < until && samples.len() < 20_000 {
            let t = Instant::now();
            client.write(&request).await?;
            let mut got = 0;
            while got == 0 {
                got = client.count_deliveries().await?;
            }
            calls += 1;
            // The first 200 calls warm up.
            if calls > 200 {
                samples.push(t.elapsed().as_secs_f64() * 1e6);
            }
        }
        Ok::<(), String>(())
    };
    let outcome = tokio::time::timeout(Duration::from_secs(30), measured).await;
    answering.abort();
    client.close().await;
    outcome.map_err(|_| "a frame-level call got no reply within 30 s".to_owned())??;
    if samples.is_empty() {
        return Err("no frame-level call measured".into());
    }
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    let how = "frame-level client";
    results.record(
        which,
        &rpc_label(how, "64 B", "p50 @1 caller"),
        Unit::Micros,
        at(0.5),
    );
    results.record(
        which,
        &rpc_label(how, "64 B", "p99 @1 caller"),
        Unit::Micros,
        at(0.99),
    );
    Ok(())
}

pub(crate) async fn raw_rpc(
    results: &mut Results,
    which: Which,
    url: &str,
    seconds: f64,
    confirms: bool,
) -> BoxResult<()> {
    let server = RawServer::start(url, SERVER_CONCURRENCY).await?;
    let client = Arc::new(RawClient::connect(url, confirms).await?);
    let make = |size: usize| -> CallFn {
        let body = Arc::new(
            rmp_serde::to_vec_named(&AddArgsRef {
                a: 1,
                b: 2,
                pad: &pad_for(size),
            })
            .expect("encodes"),
        );
        let client = Arc::clone(&client);
        Arc::new(move || {
            let (client, body) = (Arc::clone(&client), Arc::clone(&body));
            Box::pin(async move {
                let reply = client.call(&body).await?;
                match rmp_serde::from_slice::<OkReply>(&reply) {
                    Ok(OkReply { ok: 3 }) => Ok(()),
                    _ => Err(format!("unexpected reply {reply:?}")),
                }
            })
        })
    };
    let how = if confirms {
        "raw lapin (mandatory + confirm)"
    } else {
        "raw lapin"
    };
    rpc_suite(results, which, how, &make, seconds).await;
    if let Ok(client) = Arc::try_unwrap(client) {
        client.close().await;
    }
    server.stop().await;
    Ok(())
}

pub(crate) async fn warren_rpc(
    results: &mut Results,
    which: Which,
    url: &str,
    seconds: f64,
) -> BoxResult<()> {
    // The service queue is declared by the server and outlives it: clear a leftover first.
    let admin = connect(url).await?;
    delete_queue(&admin, "warren_bench").await;
    let server = warren_rpc::Server::builder()
        .concurrency(SERVER_CONCURRENCY)
        .connection_name("warren-bench-server")
        .serve(url, BenchCalcServer::new(Adder))
        .await
        .map_err(|e| format!("warren-rpc server: {e}"))?;
    let client = warren_rpc::Client::builder()
        .timeout(CALL_TIMEOUT)
        .connection_name("warren-bench-client")
        .connect(url)
        .await
        .map_err(|e| format!("warren-rpc client: {e}"));
    let client = match client {
        Ok(c) => BenchCalcClient::new(c),
        Err(e) => {
            server.shutdown().await;
            delete_queue(&admin, "warren_bench").await;
            close(admin).await;
            return Err(e);
        }
    };
    let make = |size: usize| -> CallFn {
        let pad = pad_for(size);
        let client = client.clone();
        Arc::new(move || {
            let (client, pad) = (client.clone(), pad.clone());
            Box::pin(async move {
                match client.add(1, 2, pad).await {
                    Ok(3) => Ok(()),
                    Ok(other) => Err(format!("add(1, 2) returned {other}")),
                    Err(e) => Err(format!("warren-rpc: {e}")),
                }
            })
        })
    };
    rpc_suite(results, which, "warren-rpc", &make, seconds).await;
    drop(client);
    let _ = tokio::time::timeout(Duration::from_secs(15), server.shutdown()).await;
    delete_queue(&admin, "warren_bench").await;
    close(admin).await;
    Ok(())
}
