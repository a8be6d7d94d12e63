//! The embeddable broker: configuration, the accept loop, and graceful shutdown.

use crate::config::{Config, Limits, User};
use crate::core::state::{State, StateLock};
use crate::shared::Shared;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Errors starting the broker.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The listen address could not be bound (e.g. the port is taken).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The data directory could not be used.
    #[error("cannot use data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Entry point: `Broker::builder()`.
#[derive(Debug)]
pub struct Broker;

impl Broker {
    /// A builder with RabbitMQ's defaults: listen on 0.0.0.0:5672, user guest/guest (loopback
    /// only), vhost "/".
    ///
    /// Unlike RabbitMQ and the `warren-broker` binary, an embedded broker is **memory-only**
    /// unless [`BrokerBuilder::data_dir`] is given: durable entities and persistent messages
    /// are kept only for the life of the process, which is what tests and embedded uses want.
    pub fn builder() -> BrokerBuilder {
        BrokerBuilder {
            listen: SocketAddr::from(([0, 0, 0, 0], 5672)),
            data_dir: None,
            warn_durable_without_storage: false,
            users: Vec::new(),
            vhosts: Vec::new(),
            limits: Limits::default(),
            management: None,
            prometheus: None,
        }
    }
}

/// Configures and starts a broker.
#[derive(Debug)]
pub struct BrokerBuilder {
    listen: SocketAddr,
    data_dir: Option<PathBuf>,
    warn_durable_without_storage: bool,
    users: Vec<User>,
    vhosts: Vec<String>,
    limits: Limits,
    management: Option<SocketAddr>,
    prometheus: Option<SocketAddr>,
}

impl BrokerBuilder {
    /// Serves Prometheus metrics (`/metrics`, `/metrics/per-object`, rabbitmq_prometheus's
    /// names) on this address (port 0 picks one; [`BrokerHandle::prometheus_addr`]). Off unless
    /// set; the binary turns it on at 0.0.0.0:15692 as RabbitMQ.
    pub fn prometheus(mut self, addr: SocketAddr) -> Self {
        self.prometheus = Some(addr);
        self
    }

    /// Serves the RabbitMQ-compatible management HTTP API (`/api/...`) on this address (port 0
    /// picks a free one; [`BrokerHandle::management_addr`] tells which). Off unless set: an
    /// embedded broker opens no HTTP port by itself. The `warren-broker` binary turns it on at
    /// 0.0.0.0:15672, as RabbitMQ's management plugin.
    pub fn management(mut self, addr: SocketAddr) -> Self {
        self.management = Some(addr);
        self
    }

    /// The address to listen on; port 0 picks a free port.
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }

    /// Where durable entities and persistent messages are kept (created if missing). Without
    /// it the broker is memory-only: nothing survives the process.
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }

    /// Whether a memory-only broker (no [`BrokerBuilder::data_dir`]) logs a warning each time
    /// a durable queue is created, since it will not survive a restart (off unless set; the
    /// binary's `--memory-only` turns it on). Ignored when there is a data directory.
    pub fn warn_on_durable_without_storage(mut self, warn: bool) -> Self {
        self.warn_durable_without_storage = warn;
        self
    }

    /// Adds a user that may log in from anywhere. Without any user, guest/guest may log in from
    /// loopback only, as in RabbitMQ.
    pub fn user(mut self, name: impl Into<String>, password: impl Into<String>) -> Self {
        self.users.push(User {
            name: name.into(),
            password: password.into(),
            loopback_only: false,
        });
        self
    }

    /// Adds a virtual host besides "/".
    pub fn vhost(mut self, name: impl Into<String>) -> Self {
        self.vhosts.push(name.into());
        self
    }

    /// Replaces the limits.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Binds the listener and starts serving.
    pub async fn start(self) -> Result<BrokerHandle, BrokerError> {
        if let Some(dir) = &self.data_dir {
            std::fs::create_dir_all(dir).map_err(|source| BrokerError::DataDir {
                path: dir.clone(),
                source,
            })?;
        }
        let listener =
            TcpListener::bind(self.listen)
                .await
                .map_err(|source| BrokerError::Bind {
                    addr: self.listen,
                    source,
                })?;
        let local_addr = listener.local_addr().map_err(|source| BrokerError::Bind {
            addr: self.listen,
            source,
        })?;
        let mut users = self.users;
        if users.is_empty() {
            users.push(User {
                name: "guest".into(),
                password: "guest".into(),
                loopback_only: true,
            });
        }
        let mut state = State::new();
        state.warn_on_durable_without_storage(self.warn_durable_without_storage);
        for v in &self.vhosts {
            state.add_vhost(v);
        }
        state.set_paging(
            self.limits.queue_memory_budget,
            self.data_dir.as_ref().map(|d| d.join("pages")),
        );
        if let Some(dir) = &self.data_dir {
            let (store, defs, recovered) =
                crate::core::store::Store::open(dir).map_err(|source| BrokerError::DataDir {
                    path: dir.clone(),
                    source,
                })?;
            let n = recovered.len();
            state.attach_store(Arc::new(store), defs, recovered);
            tracing::info!(dir = %dir.display(), messages = n, "recovered from data directory");
        }
        let watermark = self.limits.memory_high_watermark;
        let shared = Arc::new(Shared {
            state: StateLock::new(state),
            config: Config {
                users,
                limits: self.limits,
            },
            alarm: watch::Sender::new(false),
            memory_high_watermark: AtomicU64::new(watermark),
            data_dir: self.data_dir.clone(),
        });
        shared.check_alarms();
        let (stop_tx, stop_rx) = watch::channel(false);
        let (management_addr, prometheus_addr) = start_http(
            self.management,
            self.prometheus,
            local_addr,
            &shared,
            &stop_rx,
        )
        .await?;
        let task = tokio::spawn(accept_loop(listener, shared.clone(), stop_rx));
        tracing::info!(%local_addr, "warren-broker ready");
        Ok(BrokerHandle {
            shared: shared.clone(),
            local_addr,
            management_addr,
            prometheus_addr,
            stop: stop_tx,
            task: Arc::new(Mutex::new(Some(task))),
        })
    }
}

async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), BrokerError> {
    let bind_err = |source| BrokerError::Bind { addr, source };
    let listener = TcpListener::bind(addr).await.map_err(bind_err)?;
    let bound = listener.local_addr().map_err(bind_err)?;
    Ok((listener, bound))
}

/// Binds the management and Prometheus listeners that were asked for and serves them until
/// the broker stops; returns their bound addresses.
async fn start_http(
    management: Option<SocketAddr>,
    prometheus: Option<SocketAddr>,
    amqp: SocketAddr,
    shared: &Arc<Shared>,
    stop: &watch::Receiver<bool>,
) -> Result<(Option<SocketAddr>, Option<SocketAddr>), BrokerError> {
    let mgmt = match management {
        Some(a) => Some(bind(a).await?),
        None => None,
    };
    let prom = match prometheus {
        Some(a) => Some(bind(a).await?),
        None => None,
    };
    let mgmt_addr = mgmt.as_ref().map(|m| m.1);
    let prom_addr = prom.as_ref().map(|p| p.1);
    let state = crate::http::AppState {
        shared: shared.clone(),
        node: Arc::new(crate::http::NodeInfo {
            name: crate::http::node_name(),
            amqp,
            management: mgmt_addr,
            prometheus: prom_addr,
            started: std::time::Instant::now(),
        }),
    };
    if let Some((listener, bound)) = mgmt {
        tokio::spawn(crate::http::serve(listener, state.clone(), stop.clone()));
        tracing::info!(%bound, "management API ready");
    }
    if let Some((listener, bound)) = prom {
        tokio::spawn(crate::http::serve_prometheus(listener, state, stop.clone()));
        tracing::info!(%bound, "prometheus endpoint ready");
    }
    Ok((mgmt_addr, prom_addr))
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    static NEXT_CONN: AtomicU64 = AtomicU64::new(1);
    let limit = Arc::new(tokio::sync::Semaphore::new(
        shared.config.limits.max_connections,
    ));
    let mut conns = JoinSet::new();
    let mut ticker = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            _ = ticker.tick() => {
                shared.state.lock().expire_tick();
                shared.check_alarms();
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(permit) = limit.clone().acquire_owned().await else { break };
                let id = NEXT_CONN.fetch_add(1, Ordering::Relaxed);
                let shared = shared.clone();
                let stop = stop.clone();
                conns.spawn(async move {
                    crate::amqp::connection::serve(shared, stream, peer, id, stop).await;
                    drop(permit);
                });
            }
        }
    }
    drop(listener);
    // Connections were told to close (connection.close 320); give them a bounded time.
    let drain = async { while conns.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(5), drain)
        .await
        .is_err()
    {
        conns.abort_all();
    }
}

/// A running broker.
#[derive(Clone)]
pub struct BrokerHandle {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    management_addr: Option<SocketAddr>,
    prometheus_addr: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    task: Arc<Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

impl std::fmt::Debug for BrokerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerHandle")
            .field("local_addr", &self.local_addr)
            .finish()
    }
}

impl BrokerHandle {
    /// The address the broker listens on (with the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address of the management HTTP API, when it was turned on
    /// ([`BrokerBuilder::management`]).
    pub fn management_addr(&self) -> Option<SocketAddr> {
        self.management_addr
    }

    /// The address of the Prometheus endpoint, when it was turned on
    /// ([`BrokerBuilder::prometheus`]).
    pub fn prometheus_addr(&self) -> Option<SocketAddr> {
        self.prometheus_addr
    }

    /// An `amqp://` URL for the default user and vhost, e.g.
    /// `amqp://guest:guest@127.0.0.1:40123/%2f`.
    pub fn amqp_url(&self) -> String {
        let host = if self.local_addr.ip().is_unspecified() {
            "127.0.0.1".to_string()
        } else {
            self.local_addr.ip().to_string()
        };
        format!("amqp://guest:guest@{host}:{}/%2f", self.local_addr.port())
    }

    /// Changes the memory high watermark at run time (as `rabbitmqctl
    /// set_vm_memory_high_watermark` does); the alarm is re-evaluated at once.
    pub fn set_memory_high_watermark(&self, bytes: u64) {
        self.shared
            .memory_high_watermark
            .store(bytes, Ordering::Relaxed);
        self.shared.check_alarms();
    }

    /// Bytes of ready messages held in memory (paged-out ones not counted).
    pub fn resident_bytes(&self) -> usize {
        self.shared.state.lock().resident_bytes()
    }

    /// Whether publishers are currently blocked by a memory or disk alarm.
    pub fn is_blocked(&self) -> bool {
        *self.shared.alarm.borrow()
    }

    /// Stops accepting, closes every connection with 320 CONNECTION_FORCED, waits for them,
    /// and then until everything written to the data directory so far is on disk.
    pub async fn shutdown(&self) {
        let _ = self.stop.send(true);
        let task = self.task.lock().expect("handle lock").take();
        if let Some(task) = task {
            let _ = task.await;
        }
        let store = self.shared.state.lock().store().cloned();
        if let Some(store) = store {
            let (flushed, done) = tokio::sync::oneshot::channel();
            store.after_sync(Box::new(move || {
                let _ = flushed.send(());
            }));
            let _ = done.await;
        }
    }
}
