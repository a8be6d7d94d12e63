//! A small TCP proxy for fault injection: forwards loopback connections to a target and, on
//! command, cuts every connection through it, freezes them (a silent network partition: open
//! sockets, nothing delivered), delays what it forwards, or refuses new connections.
//!
//! Tests put it between a Warren client or server and the broker (`proxy.url_for(target.url())`)
//! and break the network on purpose. Everything is bounded: at most [`MAX_CONNECTIONS`] at
//! once, fixed-size buffers, a bounded queue per direction, and both ends on 127.0.0.1 only.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// The most connections the proxy carries at once; more are closed as soon as accepted.
pub const MAX_CONNECTIONS: usize = 64;

/// Chunks in flight per direction of one connection while a delay is set.
const QUEUE: usize = 256;

struct State {
    target: Mutex<SocketAddr>,
    accepting: AtomicBool,
    delay: Mutex<Duration>,
    /// Bumped by [`Proxy::cut_all`]; every connection ends when it changes.
    cuts: watch::Sender<u64>,
    /// Bumped by [`Proxy::freeze_all`]; connections opened before stop forwarding.
    freezes: watch::Sender<u64>,
    active: AtomicUsize,
    accepted: AtomicUsize,
}

/// A running proxy. Dropping it stops accepting and cuts every connection.
pub struct Proxy {
    addr: SocketAddr,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("addr", &self.addr)
            .field("target", &self.target())
            .field("connections", &self.connections())
            .finish()
    }
}

impl Proxy {
    /// Starts a proxy on an ephemeral loopback port, forwarding to `target` (a loopback
    /// address).
    pub async fn start(target: SocketAddr) -> Proxy {
        Proxy::start_on("127.0.0.1:0".parse().expect("literal address"), target).await
    }

    /// Starts a proxy listening on `listen`, forwarding to `target`; both must be loopback.
    pub async fn start_on(listen: SocketAddr, target: SocketAddr) -> Proxy {
        assert!(
            listen.ip().is_loopback(),
            "the proxy listens on loopback only"
        );
        assert!(
            target.ip().is_loopback(),
            "the proxy forwards to loopback only"
        );
        let listener = TcpListener::bind(listen)
            .await
            .unwrap_or_else(|e| panic!("proxy: bind {listen}: {e}"));
        let addr = listener.local_addr().expect("bound address");
        let state = Arc::new(State {
            target: Mutex::new(target),
            accepting: AtomicBool::new(true),
            delay: Mutex::new(Duration::ZERO),
            cuts: watch::channel(0).0,
            freezes: watch::channel(0).0,
            active: AtomicUsize::new(0),
            accepted: AtomicUsize::new(0),
        });
        let task = tokio::spawn(accept_loop(listener, Arc::clone(&state)));
        Proxy { addr, state, task }
    }

    /// The proxy's own address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where connections are forwarded.
    pub fn target(&self) -> SocketAddr {
        *self.state.target.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forwards new connections to `target` from now on (existing ones are not moved).
    pub fn set_target(&self, target: SocketAddr) {
        assert!(
            target.ip().is_loopback(),
            "the proxy forwards to loopback only"
        );
        *self.state.target.lock().unwrap_or_else(|p| p.into_inner()) = target;
    }

    /// `url` (an `amqp://` URL of the target) with its `host:port` replaced by the proxy's.
    pub fn url_for(&self, url: &str) -> String {
        let target = self.target().to_string();
        assert!(
            url.contains(&target),
            "proxy: {url} does not name the target {target}"
        );
        url.replacen(&target, &self.addr.to_string(), 1)
    }

    /// Closes every connection through the proxy, both sides, at once.
    pub fn cut_all(&self) {
        self.state.cuts.send_modify(|n| *n += 1);
    }

    /// Stops forwarding anything on every open connection, in both directions, without closing
    /// it: the peers see a silent network, as in a partition, and only heartbeats can tell them.
    /// Connections opened later are not frozen. [`Proxy::cut_all`] ends frozen connections.
    pub fn freeze_all(&self) {
        self.state.freezes.send_modify(|n| *n += 1);
    }

    /// Refuses new connections (they are closed as soon as accepted) until
    /// [`Proxy::start_accepting`].
    pub fn stop_accepting(&self) {
        self.state.accepting.store(false, Ordering::SeqCst);
    }

    /// Accepts new connections again.
    pub fn start_accepting(&self) {
        self.state.accepting.store(true, Ordering::SeqCst);
    }

    /// Holds every chunk of data, in both directions, this long before forwarding it (zero: no
    /// delay). Applies to data read from now on.
    pub fn set_delay(&self, delay: Duration) {
        *self.state.delay.lock().unwrap_or_else(|p| p.into_inner()) = delay;
    }

    /// How many connections are open through the proxy.
    pub fn connections(&self) -> usize {
        self.state.active.load(Ordering::SeqCst)
    }

    /// How many connections the proxy accepted and forwarded since it started.
    pub fn accepted(&self) -> usize {
        self.state.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        self.cut_all();
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<State>) {
    loop {
        let Ok((inbound, _)) = listener.accept().await else {
            // Out of file descriptors or similar: pause instead of spinning.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        if !state.accepting.load(Ordering::SeqCst)
            || state.active.load(Ordering::SeqCst) >= MAX_CONNECTIONS
        {
            drop(inbound);
            continue;
        }
        state.active.fetch_add(1, Ordering::SeqCst);
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            forward(inbound, &state).await;
            state.active.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

/// Carries one connection until either side closes it or the proxy cuts it.
async fn forward(inbound: TcpStream, state: &State) {
    let mut cuts = state.cuts.subscribe();
    cuts.mark_unchanged();
    let freezes = state.freezes.subscribe();
    let born = *freezes.borrow();
    let target = *state.target.lock().unwrap_or_else(|p| p.into_inner());
    let outbound = tokio::select! {
        _ = cuts.changed() => return,
        connected = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(target)) => {
            match connected {
                Ok(Ok(stream)) => stream,
                _ => return,
            }
        }
    };
    state.accepted.fetch_add(1, Ordering::SeqCst);
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let (in_read, in_write) = inbound.into_split();
    let (out_read, out_write) = outbound.into_split();
    // Either direction ending ends both: a half-open AMQP connection is of no use.
    tokio::select! {
        _ = cuts.changed() => {}
        _ = pipe(in_read, out_write, state, freezes.clone(), born) => {}
        _ = pipe(out_read, in_write, state, freezes, born) => {}
    }
}

/// Copies one direction, holding each chunk for the current delay; once the proxy freezes
/// connections born in generation `born`, forwards nothing more (the bounded queue then stops
/// the reader too).
async fn pipe(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    state: &State,
    mut freezes: watch::Receiver<u64>,
    born: u64,
) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(QUEUE);
    let reader = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let delay = *state.delay.lock().unwrap_or_else(|p| p.into_inner());
            if tx
                .send((Instant::now() + delay, buf[..n].to_vec()))
                .await
                .is_err()
            {
                return;
            }
        }
    };
    let writer = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if *freezes.borrow_and_update() != born {
                // Frozen for good: hold the socket open, send nothing, until cut.
                std::future::pending::<()>().await;
            }
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = socket.read(&mut buf).await {
                        if n == 0 || socket.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    async fn round_trip(stream: &mut TcpStream, data: &[u8]) -> std::io::Result<Vec<u8>> {
        stream.write_all(data).await?;
        let mut buf = vec![0u8; data.len()];
        tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut buf))
            .await
            .map_err(|_| std::io::Error::other("timed out"))??;
        Ok(buf)
    }

    #[tokio::test]
    async fn forwards_cuts_and_refuses() {
        let proxy = Proxy::start(echo_server().await).await;
        let mut a = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(round_trip(&mut a, b"hello").await.unwrap(), b"hello");
        assert_eq!(proxy.connections(), 1);

        proxy.cut_all();
        let mut buf = [0u8; 8];
        let read = tokio::time::timeout(Duration::from_secs(5), a.read(&mut buf))
            .await
            .expect("a cut connection ends");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");

        proxy.stop_accepting();
        let mut refused = TcpStream::connect(proxy.addr()).await.unwrap();
        assert!(round_trip(&mut refused, b"x").await.is_err());
        proxy.start_accepting();
        let mut b = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(round_trip(&mut b, b"again").await.unwrap(), b"again");
        assert_eq!(proxy.accepted(), 2);
    }

    #[tokio::test]
    async fn delays_what_it_forwards() {
        let proxy = Proxy::start(echo_server().await).await;
        let mut a = TcpStream::connect(proxy.addr()).await.unwrap();
        proxy.set_delay(Duration::from_millis(100));
        let started = std::time::Instant::now();
        assert_eq!(round_trip(&mut a, b"slow").await.unwrap(), b"slow");
        // Held once on the way there and once on the way back.
        assert!(started.elapsed() >= Duration::from_millis(200));
    }

    #[tokio::test]
    async fn freezing_silences_open_connections_only() {
        let proxy = Proxy::start(echo_server().await).await;
        let mut old = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(round_trip(&mut old, b"before").await.unwrap(), b"before");
        proxy.freeze_all();
        assert!(round_trip(&mut old, b"frozen").await.is_err());
        let mut new = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(round_trip(&mut new, b"fresh").await.unwrap(), b"fresh");
    }

    #[test]
    fn urls_point_at_the_proxy() {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let target: SocketAddr = "127.0.0.1:5672".parse().unwrap();
            let proxy = Proxy::start(target).await;
            let url = proxy.url_for("amqp://guest:guest@127.0.0.1:5672/%2f");
            assert_eq!(url, format!("amqp://guest:guest@{}/%2f", proxy.addr()));
        });
    }
}
