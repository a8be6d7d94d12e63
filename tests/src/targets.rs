//! Which brokers a compatibility case runs against, and how it reaches them.
//!
//! A case is written once, as an `async fn` taking a [`Target`], and [`compat_test!`](crate::compat_test) turns it
//! into one test per broker: `NAME::bundled` and `NAME::rabbitmq`. Each reports on its own, so
//! a failure on RabbitMQ never hides the bundled broker's result, and `cargo test NAME::bundled`
//! runs one.
//!
//! - The bundled broker is shared: every test of one test binary talks to one `warren-broker`,
//!   started on `127.0.0.1:0` the first time a test asks for it, on a runtime of its own (so it
//!   outlives each test's runtime). Cases use unique names ([`crate::unique`]) exactly as they
//!   must on the one RabbitMQ that every test shares. A case that stops or reconfigures its
//!   broker takes one of its own from [`bundled`].
//! - RabbitMQ is the one at `WARREN_TEST_AMQP_URL` (`amqp://guest:guest@127.0.0.1:5672/%2f`).
//!   Without it the `rabbitmq` test prints that it was skipped and passes.
//! - `WARREN_TEST_ONLY=bundled` or `=rabbitmq` skips the other broker's tests the same way
//!   (`=rabbitmq` without `WARREN_TEST_AMQP_URL` is an error).

use std::{fmt, future::Future, net::SocketAddr, sync::OnceLock};

use lapin::{
    options::{ConfirmSelectOptions, ExchangeDeleteOptions, QueueDeleteOptions},
    BasicProperties, Channel, Connection, ConnectionProperties,
};
use tokio::net::TcpStream;
use warren_broker::{Broker, BrokerHandle};

use crate::helpers::{close, declare_exclusive, get_body, publish_confirmed};
use crate::raw::RawConn;
use crate::WAIT;

/// Which broker a test case is talking to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The bundled `warren-broker`.
    Bundled,
    /// A real RabbitMQ from `WARREN_TEST_AMQP_URL`.
    RabbitMq,
}

impl Kind {
    /// `"bundled"` or `"rabbitmq"`, as in test names and assertion messages.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Bundled => "bundled",
            Kind::RabbitMq => "rabbitmq",
        }
    }
}

/// One test per broker for each named scenario of a test file that defines
/// `async fn bundled(name: &str)` and `async fn rabbitmq(name: &str)`: `NAME::bundled` and
/// `NAME::rabbitmq` (the MQTT, STOMP and cross-protocol suites, which drive Python clients).
#[macro_export]
macro_rules! scenarios {
    ($($(#[$doc:meta])* $name:ident,)*) => {$(
        $(#[$doc])*
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn bundled() {
                super::bundled(stringify!($name)).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn rabbitmq() {
                super::rabbitmq(stringify!($name)).await;
            }
        }
    )*};
}

/// Declares compatibility cases that run once per broker, each broker as its own test.
///
/// Each `async fn NAME(t: Target) { ... }` becomes a module `NAME` holding the case and two
/// tests, `bundled` and `rabbitmq`, that run it through [`run`]. The attributes written above
/// the function (the test attribute itself, `#[ignore]`, docs) go on both tests. The module
/// imports everything its parent sees, so the body reads as it would at the top level.
///
/// ```no_run
/// use warren_tests::compat_test;
///
/// compat_test! {
///     #[tokio::test]
///     async fn server_named_queue(t: Target) {
///         let (conn, ch) = t.open().await;
///         let q = warren_tests::declare_exclusive(&t, &ch).await;
///         assert!(q.starts_with("amq.gen-"), "{t}: {q}");
///         warren_tests::close(conn).await;
///     }
/// }
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! compat_test {
    ($(
        $(#[$attr:meta])*
        async fn $name:ident($target:ident: Target) $body:block
    )*) => {$(
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            async fn case($target: $crate::Target) $body

            $(#[$attr])*
            async fn bundled() {
                $crate::targets::run($crate::Kind::Bundled, case).await;
            }

            $(#[$attr])*
            async fn rabbitmq() {
                $crate::targets::run($crate::Kind::RabbitMq, case).await;
            }
        }
    )*};
}

/// Runs one case on the broker of `kind`, or prints why it is skipped there.
///
/// The tests that [`compat_test!`](crate::compat_test) emits call this; call it directly only for a case the macro
/// cannot express.
pub async fn run<F, Fut>(kind: Kind, case: F)
where
    F: FnOnce(Target) -> Fut,
    Fut: Future<Output = ()>,
{
    match Selection::from_env().target(kind) {
        Ok(target) => case(target).await,
        Err(why) => println!("skipped {} variant: {why}", kind.name()),
    }
}

/// Every target at once, bundled first, for a case that needs them side by side. A case that
/// runs the same assertions on each should be a [`compat_test!`](crate::compat_test) instead, one test per target.
pub async fn targets() -> Vec<Target> {
    let selection = Selection::from_env();
    let mut out = Vec::new();
    for kind in [Kind::Bundled, Kind::RabbitMq] {
        match selection.target(kind) {
            Ok(target) => out.push(target),
            Err(why) => println!("skipped {} variant: {why}", kind.name()),
        }
    }
    out
}

/// What the environment asks for: `WARREN_TEST_ONLY` and `WARREN_TEST_AMQP_URL`.
struct Selection {
    only: Option<String>,
    rabbitmq_url: Option<String>,
}

impl Selection {
    fn from_env() -> Self {
        let non_empty = |name| std::env::var(name).ok().filter(|v| !v.is_empty());
        Selection {
            only: non_empty("WARREN_TEST_ONLY"),
            rabbitmq_url: non_empty("WARREN_TEST_AMQP_URL"),
        }
    }

    /// The target of `kind`, or why it is skipped. Panics on an environment that makes no sense
    /// (`WARREN_TEST_ONLY=rabbitmq` without a RabbitMQ URL, or another value than the two).
    fn target(&self, kind: Kind) -> Result<Target, String> {
        if let Some(only) = self.only.as_deref() {
            if only != Kind::Bundled.name() && only != Kind::RabbitMq.name() {
                panic!("WARREN_TEST_ONLY={only}: expected bundled or rabbitmq");
            }
            if only != kind.name() {
                return Err(format!("WARREN_TEST_ONLY={only}"));
            }
        }
        match kind {
            Kind::Bundled => Ok(shared_bundled()),
            Kind::RabbitMq => match &self.rabbitmq_url {
                Some(url) => Ok(Target::from_url(Kind::RabbitMq, url.clone(), None)),
                None if self.only.is_some() => {
                    panic!("WARREN_TEST_ONLY=rabbitmq needs WARREN_TEST_AMQP_URL")
                }
                None => Err("WARREN_TEST_AMQP_URL not set".to_owned()),
            },
        }
    }
}

/// The bundled broker every test of this binary shares, started on first use.
///
/// It runs on a runtime of its own, on a thread that lives as long as the test process, so it
/// survives the runtime of the test that started it.
fn shared_bundled() -> Target {
    static URL: OnceLock<String> = OnceLock::new();
    let url = URL.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("shared-bundled-broker".to_owned())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name("shared-bundled-broker")
                    .enable_all()
                    .build()
                    .unwrap_or_else(|e| panic!("bundled: broker runtime: {e}"));
                runtime.block_on(async move {
                    let broker = start_broker().await;
                    // A send error means the test that asked is gone; the broker still serves
                    // the others, so it keeps running either way.
                    let _ = tx.send(broker.amqp_url());
                    std::future::pending::<()>().await;
                });
            })
            .unwrap_or_else(|e| panic!("bundled: broker thread: {e}"));
        rx.recv()
            .unwrap_or_else(|_| panic!("bundled: shared broker failed to start"))
    });
    Target::from_url(Kind::Bundled, url.clone(), None)
}

async fn start_broker() -> BrokerHandle {
    Broker::builder()
        .listen("127.0.0.1:0".parse().expect("literal address"))
        .start()
        .await
        .unwrap_or_else(|e| panic!("bundled: broker failed to start: {e}"))
}

/// A bundled broker of the caller's own on an ephemeral port, on the caller's runtime, for a
/// case that stops it or must not share it; it stops when the [`Target`] is dropped or
/// [`Target::shutdown_bundled`] is called.
pub async fn bundled() -> Target {
    let broker = start_broker().await;
    let url = broker.amqp_url();
    Target::from_url(Kind::Bundled, url, Some(broker))
}

/// The reference RabbitMQ node (`../shared/refnode.sh`: AMQP on 5673, management on 15673),
/// or why it cannot be used. `WARREN_TEST_REFNODE_AMQP_URL` overrides its AMQP URL.
pub fn refnode() -> Result<Target, String> {
    let url = std::env::var("WARREN_TEST_REFNODE_AMQP_URL")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "amqp://guest:guest@127.0.0.1:5673/%2f".to_owned());
    if let Some(only) = Selection::from_env().only {
        if only != Kind::RabbitMq.name() {
            return Err(format!("WARREN_TEST_ONLY={only}"));
        }
    }
    let target = Target::from_url(Kind::RabbitMq, url, None);
    match std::net::TcpStream::connect_timeout(&target.addr, std::time::Duration::from_secs(2)) {
        Ok(_) => Ok(target),
        Err(e) => Err(format!(
            "reference node unreachable at {} ({e}); start it with ../shared/refnode.sh start",
            target.addr
        )),
    }
}

/// One broker a compatibility case runs against.
pub struct Target {
    kind: Kind,
    url: String,
    addr: SocketAddr,
    vhost_path: String,
    /// The broker, when this target owns it ([`bundled`]); `None` for the shared ones.
    own_broker: Option<BrokerHandle>,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at {}", self.name(), self.url)
    }
}

impl Target {
    fn from_url(kind: Kind, url: String, own_broker: Option<BrokerHandle>) -> Self {
        let (addr, vhost_path) = split_url(&url);
        Target {
            kind,
            url,
            addr,
            vhost_path,
            own_broker,
        }
    }

    /// The bundled broker this target owns ([`bundled`]), to configure it at run time.
    pub fn own_broker(&self) -> Option<&BrokerHandle> {
        self.own_broker.as_ref()
    }

    /// `"bundled"` or `"rabbitmq"`: put it in every assertion message.
    pub fn name(&self) -> &'static str {
        self.kind.name()
    }

    /// Which broker this is.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// True for the real RabbitMQ.
    pub fn is_rabbitmq(&self) -> bool {
        self.kind == Kind::RabbitMq
    }

    /// The `amqp://` URL (guest/guest, vhost `/`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The broker's TCP address, for raw-frame tests.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URL with other credentials and vhost (the vhost is URL-encoded here).
    pub fn url_with(&self, user: &str, password: &str, vhost: &str) -> String {
        let vhost = vhost.replace('%', "%25").replace('/', "%2f");
        format!("amqp://{user}:{password}@{}/{vhost}", self.addr)
    }

    /// A new lapin connection, panicking with the target name if it fails.
    pub async fn connect(&self) -> Connection {
        tokio::time::timeout(
            WAIT,
            Connection::connect(&self.url, ConnectionProperties::default()),
        )
        .await
        .unwrap_or_else(|_| panic!("{self}: connect timed out"))
        .unwrap_or_else(|e| panic!("{self}: connect failed: {e}"))
    }

    /// A new connection and a channel on it.
    pub async fn open(&self) -> (Connection, Channel) {
        let conn = self.connect().await;
        let ch = conn
            .create_channel()
            .await
            .unwrap_or_else(|e| panic!("{self}: channel.open failed: {e}"));
        (conn, ch)
    }

    /// A new connection and a channel in confirm mode.
    pub async fn open_confirm(&self) -> (Connection, Channel) {
        let (conn, ch) = self.open().await;
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap_or_else(|e| panic!("{self}: confirm.select failed: {e}"));
        (conn, ch)
    }

    /// Proves the broker still serves new connections: declares, publishes to and reads back
    /// from a fresh exclusive queue.
    pub async fn assert_healthy(&self) {
        let (conn, ch) = self.open_confirm().await;
        let q = declare_exclusive(self, &ch).await;
        publish_confirmed(self, &ch, "", &q, b"alive", BasicProperties::default()).await;
        let got = get_body(self, &ch, &q).await;
        assert_eq!(
            got.as_deref(),
            Some(&b"alive"[..]),
            "{self}: healthy broker echoes"
        );
        close(conn).await;
    }

    /// Shuts down a bundled broker this target owns ([`bundled`]) gracefully (as
    /// `BrokerHandle::shutdown`); returns false, doing nothing, for a shared broker (RabbitMQ,
    /// or the bundled broker of the test binary), which other tests are using.
    pub async fn shutdown_bundled(&mut self) -> bool {
        match self.own_broker.take() {
            Some(broker) => {
                broker.shutdown().await;
                true
            }
            None => false,
        }
    }

    /// Deletes queues left by a test (ignoring ones already gone), on a fresh connection.
    pub async fn delete_queues(&self, queues: &[&str]) {
        let (conn, _) = self.open().await;
        for q in queues {
            let ch = conn.create_channel().await.expect("cleanup channel");
            let _ = ch
                .queue_delete((*q).into(), QueueDeleteOptions::default())
                .await;
        }
        close(conn).await;
    }

    /// Deletes exchanges left by a test (ignoring ones already gone), on a fresh connection.
    pub async fn delete_exchanges(&self, exchanges: &[&str]) {
        let (conn, _) = self.open().await;
        for x in exchanges {
            let ch = conn.create_channel().await.expect("cleanup channel");
            let _ = ch
                .exchange_delete((*x).into(), ExchangeDeleteOptions::default())
                .await;
        }
        close(conn).await;
    }

    /// A raw TCP connection to the broker, no bytes sent yet.
    pub async fn raw(&self) -> RawConn {
        let stream = tokio::time::timeout(WAIT, TcpStream::connect(self.addr))
            .await
            .unwrap_or_else(|_| panic!("{self}: tcp connect timed out"))
            .unwrap_or_else(|e| panic!("{self}: tcp connect failed: {e}"));
        RawConn::new(
            self.name(),
            url_decode(self.vhost_path.trim_start_matches('/')),
            stream,
        )
    }

    /// A raw connection after the whole handshake, with channel 1 open.
    pub async fn raw_open(&self) -> RawConn {
        let mut raw = self.raw().await;
        raw.handshake().await;
        raw.open_channel(1).await;
        raw
    }
}

fn split_url(url: &str) -> (SocketAddr, String) {
    let rest = url
        .strip_prefix("amqp://")
        .unwrap_or_else(|| panic!("not an amqp:// url: {url}"));
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].to_string()),
        None => (rest, String::from("/")),
    };
    let host_port = authority.rsplit('@').next().unwrap_or(authority);
    let host_port = if host_port.contains(':') {
        host_port.to_string()
    } else {
        format!("{host_port}:5672")
    };
    let host_port = host_port.replace("localhost", "127.0.0.1");
    let addr = host_port
        .parse()
        .unwrap_or_else(|e| panic!("cannot parse address {host_port} of {url}: {e}"));
    (addr, path)
}

fn url_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).expect("utf-8 vhost")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn selection(only: Option<&str>, url: Option<&str>) -> Selection {
        Selection {
            only: only.map(str::to_owned),
            rabbitmq_url: url.map(str::to_owned),
        }
    }

    const URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

    #[test]
    fn rabbitmq_is_skipped_without_its_url() {
        let why = selection(None, None).target(Kind::RabbitMq).unwrap_err();
        assert_eq!(why, "WARREN_TEST_AMQP_URL not set");
    }

    #[test]
    fn rabbitmq_comes_from_its_url() {
        let t = selection(None, Some(URL)).target(Kind::RabbitMq).unwrap();
        assert_eq!((t.kind(), t.url()), (Kind::RabbitMq, URL));
        assert_eq!(t.addr(), "127.0.0.1:5672".parse().unwrap());
        assert!(t.own_broker.is_none());
    }

    #[test]
    fn only_skips_the_other_broker() {
        let why = selection(Some("bundled"), Some(URL))
            .target(Kind::RabbitMq)
            .unwrap_err();
        assert_eq!(why, "WARREN_TEST_ONLY=bundled");
        let why = selection(Some("rabbitmq"), Some(URL))
            .target(Kind::Bundled)
            .unwrap_err();
        assert_eq!(why, "WARREN_TEST_ONLY=rabbitmq");
    }

    #[test]
    #[should_panic(expected = "WARREN_TEST_ONLY=rabbitmq needs WARREN_TEST_AMQP_URL")]
    fn only_rabbitmq_without_its_url_is_an_error() {
        let _ = selection(Some("rabbitmq"), None).target(Kind::RabbitMq);
    }

    #[test]
    #[should_panic(expected = "expected bundled or rabbitmq")]
    fn only_takes_one_of_the_two_names() {
        let _ = selection(Some("rabbit"), Some(URL)).target(Kind::RabbitMq);
    }

    #[tokio::test]
    async fn the_bundled_broker_is_shared_and_outlives_the_runtime_that_started_it() {
        let first = std::thread::spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async { shared_bundled().url().to_owned() })
        })
        .join()
        .unwrap();
        let again = selection(None, None).target(Kind::Bundled).unwrap();
        assert_eq!(again.url(), first, "one broker per test binary");
        again.assert_healthy().await;
        let mut again = again;
        assert!(
            !again.shutdown_bundled().await,
            "a shared broker is not stopped"
        );
        again.assert_healthy().await;
    }

    #[test]
    fn urls_split_into_address_and_vhost() {
        let (addr, vhost) = split_url("amqp://u:p@localhost/%2fv");
        assert_eq!(addr, "127.0.0.1:5672".parse().unwrap());
        assert_eq!(url_decode(vhost.trim_start_matches('/')), "/v");
    }
}
