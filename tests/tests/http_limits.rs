//! Slow HTTP clients (slowloris) on the management listener.
//!
//! - `slow_headers_*`: many connections that send their headers a byte a second and never
//!   finish them do not stop a normal `GET /api/overview`, and every one of them is closed
//!   although bytes keep coming (the request timeout, 5 s by default, counts from the
//!   connection's start, not from the last byte). Run against Warren with its default limits and
//!   against the reference RabbitMQ's management API (`WARREN_TEST_MGMT_URL`; cowboy's
//!   `request_timeout`, also 5 s), with the same assertions.
//! - `a_trickling_body_is_cut_off` (Warren only: RabbitMQ waits for a trickling body as long
//!   as a byte comes every 60 s): a body sent slower than its deadline allows is answered 408
//!   and its connection closed; nothing of it is applied.
//!
//! No assertion is on speed: the tests poll with deadlines far above the timeouts.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use warren_broker::{Broker, BrokerHandle, Limits};

/// How many slow connections a test holds open.
const SLOW: usize = 64;

/// How long a test waits for the slow connections to be closed: far above the 5 s timeout,
/// so that a loaded machine does not fail it, yet bounded.
const CLOSE_DEADLINE: Duration = Duration::from_secs(60);

/// guest:guest.
const BASIC_GUEST: &str = "Basic Z3Vlc3Q6Z3Vlc3Q=";

async fn warren(limits: Limits) -> BrokerHandle {
    let any: SocketAddr = "127.0.0.1:0".parse().expect("address");
    Broker::builder()
        .listen(any)
        .management(any)
        .limits(limits)
        .start()
        .await
        .expect("broker starts")
}

/// `GET /api/overview` as a normal client does it: its status.
async fn overview_status(base: &str) -> u16 {
    let url = format!("{base}/api/overview");
    tokio::task::spawn_blocking(move || {
        match ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(10))
            .build()
            .get(&url)
            .set("Authorization", BASIC_GUEST)
            .call()
        {
            Ok(r) => r.status(),
            Err(ureq::Error::Status(s, _)) => s,
            Err(e) => panic!("GET {url}: {e}"),
        }
    })
    .await
    .expect("join")
}

/// One slowloris connection: a request line and headers that never end, one more byte each
/// second, until the server closes the connection (`Ok`) or `deadline` passes (`Err`). What
/// the server sent before closing (e.g. a 408) is ignored.
async fn slow_headers(addr: SocketAddr, deadline: tokio::time::Instant) -> Result<(), String> {
    let mut s = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    s.write_all(b"GET /api/overview HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
        .await
        .map_err(|e| format!("first bytes: {e}"))?;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut buf = [0u8; 1024];
    loop {
        tokio::select! {
            read = s.read(&mut buf) => match read {
                Ok(0) | Err(_) => return Ok(()),
                Ok(_) => {}
            },
            _ = tick.tick() => {
                if s.write_all(b"a").await.is_err() {
                    return Ok(());
                }
            }
            _ = tokio::time::sleep_until(deadline) => {
                return Err("still open at the deadline".into());
            }
        }
    }
}

/// The scenario: `SLOW` slow connections to `addr` (the management listener at `base`), a
/// normal request answered meanwhile, every slow connection closed by the deadline.
async fn slow_headers_scenario(name: &str, addr: SocketAddr, base: &str) {
    let deadline = tokio::time::Instant::now() + CLOSE_DEADLINE;
    let slow: Vec<_> = (0..SLOW)
        .map(|_| tokio::spawn(slow_headers(addr, deadline)))
        .collect();
    // They are open (and trickling) now: others are still served.
    assert_eq!(
        overview_status(base).await,
        200,
        "{name}: GET /api/overview beside {SLOW} slow clients"
    );
    let mut still_open = 0;
    for conn in slow {
        if let Err(e) = conn.await.expect("join") {
            eprintln!("{name}: a slow connection: {e}");
            still_open += 1;
        }
    }
    assert_eq!(
        still_open, 0,
        "{name}: every slow connection is closed although it kept sending"
    );
    assert_eq!(overview_status(base).await, 200, "{name}: afterwards");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_on_warren() {
    let broker = warren(Limits::default()).await;
    let addr = broker.management_addr().expect("management");
    slow_headers_scenario("warren", addr, &format!("http://{addr}")).await;
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_on_rabbitmq() {
    let Ok(base) = std::env::var("WARREN_TEST_MGMT_URL") else {
        println!("skipped the RabbitMQ variant: WARREN_TEST_MGMT_URL not set");
        return;
    };
    let host_port = base
        .trim_end_matches('/')
        .strip_prefix("http://")
        .expect("http:// URL");
    let addr = tokio::net::lookup_host(host_port)
        .await
        .expect("resolve")
        .next()
        .expect("an address");
    slow_headers_scenario("rabbitmq", addr, base.trim_end_matches('/')).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickling_body_is_cut_off() {
    let limits = Limits {
        http_body_timeout: Duration::from_secs(1),
        http_body_min_rate: 500,
        ..Limits::default()
    };
    let broker = warren(limits).await;
    let addr = broker.management_addr().expect("management");
    let base = format!("http://{addr}");
    let body = br#"{"description": "never complete"}"#;
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "PUT /api/vhosts/trickle HTTP/1.1\r\nHost: localhost\r\nAuthorization: {BASIC_GUEST}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.expect("headers");
    let deadline = tokio::time::Instant::now() + CLOSE_DEADLINE;
    let mut sent = 0;
    let mut reply = Vec::new();
    let mut buf = [0u8; 1024];
    let mut tick = tokio::time::interval(Duration::from_millis(300));
    // One byte every 300 ms, never the last one: the server must give up first.
    loop {
        tokio::select! {
            read = s.read(&mut buf) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => reply.extend_from_slice(&buf[..n]),
            },
            _ = tick.tick(), if sent + 1 < body.len() => {
                if s.write_all(&body[sent..=sent]).await.is_err() {
                    break;
                }
                sent += 1;
            }
            _ = tokio::time::sleep_until(deadline) => panic!("the trickling body was not cut off"),
        }
    }
    let reply = String::from_utf8_lossy(&reply);
    assert!(
        reply.starts_with("HTTP/1.1 408"),
        "a body too slow for its deadline: 408, then the connection closes: {reply}"
    );
    // Meanwhile and afterwards: others are served, and nothing of the request was applied.
    assert_eq!(overview_status(&base).await, 200);
    let vhost = tokio::task::spawn_blocking(move || {
        match ureq::get(&format!("{base}/api/vhosts/trickle"))
            .set("Authorization", BASIC_GUEST)
            .call()
        {
            Ok(r) => r.status(),
            Err(ureq::Error::Status(s, _)) => s,
            Err(e) => panic!("GET the vhost: {e}"),
        }
    })
    .await
    .expect("join");
    assert_eq!(
        vhost, 404,
        "the vhost of the cut-off request must not exist"
    );
    broker.shutdown().await;
}
