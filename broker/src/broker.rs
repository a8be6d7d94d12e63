//! The embeddable broker: configuration, the accept loop, and graceful shutdown.

use crate::amqp::handshake::Peer;
use crate::config::{Config, Limits};
use crate::core::access::seed::{self, Seed};
use crate::core::access::{Access, Registry};
use crate::core::state::{State, StateLock};
use crate::shared::Shared;
use crate::tls::{TlsConfig, TlsError};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
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
    /// The definitions file could not be read or imported (nothing of it was applied).
    #[error("cannot load definitions from {path}: {reason}")]
    Definitions {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The data directory could not be used.
    #[error("cannot use data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TLS listener's certificate, key or CA cannot be used.
    #[error(transparent)]
    Tls(#[from] TlsError),
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
            seed: Seed::default(),
            definitions: None,
            limits: Limits::default(),
            management: None,
            prometheus: None,
            management_tls: None,
            prometheus_tls: None,
            mqtt_listen: None,
            web_mqtt_listen: None,
            stomp_listen: None,
            web_stomp_listen: None,
            tls: None,
        }
    }
}

/// Configures and starts a broker.
#[derive(Debug)]
pub struct BrokerBuilder {
    listen: SocketAddr,
    data_dir: Option<PathBuf>,
    warn_durable_without_storage: bool,
    seed: Seed,
    definitions: Option<PathBuf>,
    limits: Limits,
    management: Option<SocketAddr>,
    prometheus: Option<SocketAddr>,
    management_tls: Option<TlsConfig>,
    prometheus_tls: Option<TlsConfig>,
    mqtt_listen: Option<SocketAddr>,
    web_mqtt_listen: Option<SocketAddr>,
    stomp_listen: Option<SocketAddr>,
    web_stomp_listen: Option<SocketAddr>,
    tls: Option<(SocketAddr, TlsConfig)>,
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

    /// Serves the management API over HTTPS only, with these certificates (RabbitMQ's
    /// `management.ssl.*`); takes effect with [`BrokerBuilder::management`]. Client
    /// certificates are asked for only when the configuration says
    /// [`TlsConfig::verify_peer`].
    pub fn management_tls(mut self, config: TlsConfig) -> Self {
        self.management_tls = Some(config);
        self
    }

    /// Serves the Prometheus endpoint over HTTPS only, with these certificates (RabbitMQ's
    /// `prometheus.ssl.*`); takes effect with [`BrokerBuilder::prometheus`].
    pub fn prometheus_tls(mut self, config: TlsConfig) -> Self {
        self.prometheus_tls = Some(config);
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

    /// Adds a user that may log in from anywhere, tagged `administrator`, with full
    /// permissions on "/" and on every [`BrokerBuilder::vhost`]. Without any user, guest/guest
    /// may log in from loopback only, as in RabbitMQ. With a data directory, users are created
    /// only if missing: a password or permission changed at run time survives a restart.
    pub fn user(mut self, name: impl Into<String>, password: impl Into<String>) -> Self {
        self.seed.users.push((name.into(), password.into()));
        self
    }

    /// Adds a virtual host besides "/" (created if missing; the configured users get full
    /// permissions on it when it is created).
    pub fn vhost(mut self, name: impl Into<String>) -> Self {
        self.seed.vhosts.push(name.into());
        self
    }

    /// The users who may log in only from a loopback address (RabbitMQ's `loopback_users`).
    /// Default: `["guest"]` when no [`BrokerBuilder::user`] is given, else none. An empty list
    /// lets guest log in from anywhere.
    pub fn loopback_users<I, S>(mut self, users: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.seed.loopback_users = Some(users.into_iter().map(Into::into).collect());
        self
    }

    /// A RabbitMQ definitions file (as `GET /api/definitions` or `rabbitmqctl
    /// export_definitions` write it) imported at every start, after the data directory was
    /// recovered, like RabbitMQ's `load_definitions`: users (with their password hashes),
    /// vhosts, permissions, topic permissions, vhost limits, exchanges, queues and bindings.
    /// Entities that exist already are left as they are. A file that cannot be read or
    /// imported stops the start with [`BrokerError::Definitions`], having applied nothing.
    pub fn definitions(mut self, file: impl Into<PathBuf>) -> Self {
        self.definitions = Some(file.into());
        self
    }

    /// Also serves MQTT 3.1.1 on this address (RabbitMQ's port is 1883; port 0 picks a free
    /// one, see [`BrokerHandle::mqtt_local_addr`]). Off unless set.
    pub fn mqtt_listen(mut self, addr: SocketAddr) -> Self {
        self.mqtt_listen = Some(addr);
        self
    }

    /// Also serves MQTT over WebSocket on this address, path `/ws`, subprotocol `mqtt`
    /// (RabbitMQ's port is 15675; see [`BrokerHandle::web_mqtt_local_addr`]). Off unless set.
    pub fn web_mqtt_listen(mut self, addr: SocketAddr) -> Self {
        self.web_mqtt_listen = Some(addr);
        self
    }

    /// Also accepts STOMP 1.0-1.2 connections on this address (RabbitMQ's port is 61613; off
    /// unless set). See docs/operations.md for the mapping onto exchanges and queues.
    pub fn stomp_listen(mut self, addr: SocketAddr) -> Self {
        self.stomp_listen = Some(addr);
        self
    }

    /// Also accepts STOMP over WebSockets on this address, path `/ws` (RabbitMQ's Web-STOMP
    /// port is 15674; off unless set).
    pub fn web_stomp_listen(mut self, addr: SocketAddr) -> Self {
        self.web_stomp_listen = Some(addr);
        self
    }

    /// Also accepts AMQP over TLS (AMQPS, RabbitMQ's port 5671) on `addr`, with these
    /// certificates; port 0 picks a free port ([`BrokerHandle::tls_local_addr`]).
    pub fn tls_listen(mut self, addr: SocketAddr, config: TlsConfig) -> Self {
        self.tls = Some((addr, config));
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
        let (listener, local_addr) = bind(self.listen).await?;
        let stomp = match self.stomp_listen {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        let web_stomp = match self.web_stomp_listen {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        let tls = match self.tls {
            Some((addr, config)) => Some(TlsListener::bind(addr, config).await?),
            None => None,
        };
        let tls_local_addr = tls.as_ref().map(|t| t.local_addr);
        let mut state = State::new();
        state.warn_on_durable_without_storage(self.warn_durable_without_storage);
        state.set_paging(
            self.limits.queue_memory_budget,
            self.data_dir.as_ref().map(|d| d.join("pages")),
        );
        let data_dir_error = |path: &PathBuf, e: String| BrokerError::DataDir {
            path: path.clone(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        };
        let mut registry = None;
        let mut mqtt = crate::mqtt::MqttShared::default();
        if let Some(dir) = &self.data_dir {
            let (store, defs, recovered) =
                crate::core::store::Store::open(dir).map_err(|source| BrokerError::DataDir {
                    path: dir.clone(),
                    source,
                })?;
            let n = recovered.len();
            state.attach_store(Arc::new(store), defs, recovered);
            tracing::info!(dir = %dir.display(), messages = n, "recovered from data directory");
            registry = Access::load(dir).map_err(|e| data_dir_error(dir, e))?;
            mqtt = crate::mqtt::MqttShared::open(dir).map_err(|e| data_dir_error(dir, e))?;
        }
        let access = boot_access(&mut state, registry, &self.seed, self.data_dir.as_deref());
        let watermark = self.limits.memory_high_watermark;
        let shared = Arc::new(Shared {
            state: StateLock::new(state),
            config: Config {
                limits: self.limits,
            },
            access,
            alarm: watch::Sender::new(false),
            memory_high_watermark: AtomicU64::new(watermark),
            data_dir: self.data_dir.clone(),
        });
        shared.check_alarms();
        if let Some(path) = &self.definitions {
            load_definitions(&shared, path)?;
        }
        let (stop_tx, stop_rx) = watch::channel(false);
        let http = HttpListeners {
            management: self.management.map(|a| (a, self.management_tls)),
            prometheus: self.prometheus.map(|a| (a, self.prometheus_tls)),
        };
        let (management_addr, prometheus_addr) =
            start_http(http, local_addr, &shared, &stop_rx).await?;
        let mqtt = Arc::new(mqtt);
        let mut listeners = JoinSet::new();
        let mut mqtt_addrs = [None, None];
        for (i, addr, kind) in [
            (0, self.mqtt_listen, crate::mqtt::Listener::Tcp),
            (1, self.web_mqtt_listen, crate::mqtt::Listener::WebSocket),
        ] {
            let Some(addr) = addr else { continue };
            let (l, bound) = bind(addr).await?;
            mqtt_addrs[i] = Some(bound);
            let listen =
                crate::mqtt::listen(l, kind, shared.clone(), mqtt.clone(), stop_rx.clone());
            listeners.spawn(listen);
        }
        listeners.spawn(accept_loop(listener, tls, shared.clone(), stop_rx.clone()));
        let stomp_addr = stomp.as_ref().map(|(_, a)| *a);
        if let Some((l, addr)) = stomp {
            tracing::info!(%addr, "STOMP listener ready");
            listeners.spawn(crate::stomp::listener::accept_tcp(
                l,
                shared.clone(),
                stop_rx.clone(),
            ));
        }
        let web_stomp_addr = web_stomp.as_ref().map(|(_, a)| *a);
        if let Some((l, addr)) = web_stomp {
            tracing::info!(%addr, "Web-STOMP listener ready");
            listeners.spawn(crate::stomp::listener::accept_web(
                l,
                shared.clone(),
                stop_rx,
            ));
        }
        let task = tokio::spawn(async move { while listeners.join_next().await.is_some() {} });
        tracing::info!(%local_addr, ?tls_local_addr, "warren-broker ready");
        Ok(BrokerHandle {
            shared: shared.clone(),
            local_addr,
            management_addr,
            prometheus_addr,
            mqtt_addr: mqtt_addrs[0],
            web_mqtt_addr: mqtt_addrs[1],
            stomp_addr,
            web_stomp_addr,
            tls_local_addr,
            stop: stop_tx,
            task: Arc::new(Mutex::new(Some(task))),
            mqtt,
        })
    }
}

async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), BrokerError> {
    let bind_err = |source| BrokerError::Bind { addr, source };
    let listener = TcpListener::bind(addr).await.map_err(bind_err)?;
    let bound = listener.local_addr().map_err(bind_err)?;
    Ok((listener, bound))
}

/// The HTTP listeners asked for: each address, with its TLS settings when it is HTTPS.
struct HttpListeners {
    management: Option<(SocketAddr, Option<TlsConfig>)>,
    prometheus: Option<(SocketAddr, Option<TlsConfig>)>,
}

/// A bound HTTP listener and how it serves.
type BoundHttp = (TcpListener, SocketAddr, crate::http::Serving);

/// Binds one HTTP listener; its TLS settings are checked first.
async fn bind_http(
    addr: SocketAddr,
    tls: Option<TlsConfig>,
    timeouts: crate::http::listener::HttpTimeouts,
) -> Result<BoundHttp, BrokerError> {
    let tls = tls.map(|t| t.http_acceptor()).transpose()?;
    let (listener, bound) = bind(addr).await?;
    Ok((listener, bound, crate::http::Serving { tls, timeouts }))
}

/// Binds the management and Prometheus listeners that were asked for and serves them until
/// the broker stops; returns their bound addresses.
async fn start_http(
    http: HttpListeners,
    amqp: SocketAddr,
    shared: &Arc<Shared>,
    stop: &watch::Receiver<bool>,
) -> Result<(Option<SocketAddr>, Option<SocketAddr>), BrokerError> {
    let timeouts = crate::http::listener::HttpTimeouts::from_limits(&shared.config.limits);
    let mgmt = match http.management {
        Some((a, tls)) => Some(bind_http(a, tls, timeouts).await?),
        None => None,
    };
    let prom = match http.prometheus {
        Some((a, tls)) => Some(bind_http(a, tls, timeouts).await?),
        None => None,
    };
    let is_tls = |l: &Option<BoundHttp>| l.as_ref().is_some_and(|l| l.2.tls.is_some());
    let state = crate::http::AppState {
        shared: shared.clone(),
        node: Arc::new(crate::http::NodeInfo {
            name: crate::http::node_name(),
            amqp,
            management: mgmt.as_ref().map(|m| m.1),
            prometheus: prom.as_ref().map(|p| p.1),
            management_tls: is_tls(&mgmt),
            prometheus_tls: is_tls(&prom),
            started: std::time::Instant::now(),
        }),
    };
    let addrs = (state.node.management, state.node.prometheus);
    if let Some((listener, bound, serving)) = mgmt {
        let https = serving.tls.is_some();
        let serve = crate::http::serve(listener, state.clone(), serving, stop.clone());
        tokio::spawn(serve);
        tracing::info!(%bound, https, "management API ready");
    }
    if let Some((listener, bound, serving)) = prom {
        let https = serving.tls.is_some();
        tokio::spawn(crate::http::serve_prometheus(
            listener,
            state,
            serving,
            stop.clone(),
        ));
        tracing::info!(%bound, https, "prometheus endpoint ready");
    }
    Ok(addrs)
}

/// Imports a definitions file at boot (`--definitions`).
fn load_definitions(shared: &Shared, path: &std::path::Path) -> Result<(), BrokerError> {
    let fail = |reason: String| BrokerError::Definitions {
        path: path.to_path_buf(),
        reason,
    };
    let text = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
    let defs: serde_json::Value =
        serde_json::from_slice(&text).map_err(|e| fail(format!("invalid JSON: {e}")))?;
    crate::core::definitions::import(&shared.state, &shared.access, &defs).map_err(fail)?;
    tracing::info!(file = %path.display(), "imported definitions");
    Ok(())
}

/// The access data at boot: what the data directory kept (None: first boot) plus what the
/// builder configured; every vhost it names exists in the state and every vhost the state
/// recovered (a data directory from before access data was kept) is known to it.
fn boot_access(
    state: &mut State,
    kept: Option<Registry>,
    seed: &Seed,
    dir: Option<&std::path::Path>,
) -> Access {
    let fresh = kept.is_none();
    let mut registry = kept.unwrap_or_default();
    seed::apply(&mut registry, seed, fresh);
    for name in state.vhost_names() {
        if registry.has_vhost(&name) {
            continue;
        }
        if fresh {
            let info = crate::core::access::VhostInfo {
                name: name.clone(),
                ..Default::default()
            };
            registry.vhosts.insert(name, info);
        } else {
            // Deleted at run time ("/" is in every new state).
            state.delete_vhost(&name);
        }
    }
    for name in registry.vhosts.keys() {
        state.add_vhost(name);
    }
    let access = Access::new(registry, dir.map(|d| d.join("access.json")));
    access.save();
    access
}

/// The AMQPS listener: its socket, and the TLS settings every accepted socket goes through.
struct TlsListener {
    listener: TcpListener,
    local_addr: SocketAddr,
    acceptor: tokio_rustls::TlsAcceptor,
    config: Arc<TlsConfig>,
}

impl TlsListener {
    async fn bind(addr: SocketAddr, config: TlsConfig) -> Result<Self, BrokerError> {
        let acceptor = config.acceptor()?;
        let bind_err = |source| BrokerError::Bind { addr, source };
        let listener = TcpListener::bind(addr).await.map_err(bind_err)?;
        let local_addr = listener.local_addr().map_err(bind_err)?;
        Ok(TlsListener {
            listener,
            local_addr,
            acceptor,
            config: Arc::new(config),
        })
    }
}

/// Accepts on the TLS listener, or never when there is none.
async fn accept_tls(tls: Option<&TlsListener>) -> std::io::Result<(TcpStream, SocketAddr)> {
    match tls {
        Some(tls) => tls.listener.accept().await,
        None => std::future::pending().await,
    }
}

/// The socket of a successful accept; a failed one (e.g. out of file descriptors) is logged and
/// paced, so the loop does not spin.
async fn accepted(
    result: std::io::Result<(TcpStream, SocketAddr)>,
) -> Option<(TcpStream, SocketAddr)> {
    match result {
        Ok((stream, addr)) => {
            let _ = stream.set_nodelay(true);
            Some((stream, addr))
        }
        Err(e) => {
            crate::transport::accept_failed("amqp", &e).await;
            None
        }
    }
}

/// Accepts on both listeners while a connection slot is free (`max_connections`; sockets beyond
/// it wait in the listen backlog), and ticks expiry and the resource alarms meanwhile.
async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsListener>,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let limit = Arc::new(tokio::sync::Semaphore::new(
        shared.config.limits.max_connections,
    ));
    // A slot taken ahead of the next accept: waiting for one never stops the ticker or shutdown.
    let mut slot = None;
    let mut conns = JoinSet::new();
    let mut ticker = tokio::time::interval(Duration::from_millis(250));
    loop {
        let open = slot.is_some();
        tokio::select! {
            _ = stop.changed() => break,
            _ = ticker.tick() => {
                shared.state.lock().expire_tick();
                shared.check_alarms();
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            permit = limit.clone().acquire_owned(), if !open => match permit {
                Ok(permit) => slot = Some(permit),
                Err(_) => break,
            },
            result = listener.accept(), if open => {
                let Some((stream, addr)) = accepted(result).await else { continue };
                let permit = slot.take();
                let id = shared.next_conn_id();
                let (shared, stop) = (shared.clone(), stop.clone());
                conns.spawn(async move {
                    let peer = Peer { addr, tls: None };
                    crate::amqp::connection::serve(shared, stream, peer, id, stop).await;
                    drop(permit);
                });
            }
            result = accept_tls(tls.as_ref()), if open => {
                let Some((stream, addr)) = accepted(result).await else { continue };
                let Some(tls) = tls.as_ref() else { continue };
                let permit = slot.take();
                let id = shared.next_conn_id();
                let (shared, stop) = (shared.clone(), stop.clone());
                let (acceptor, config) = (tls.acceptor.clone(), tls.config.clone());
                conns.spawn(async move {
                    if let Some((stream, tls)) =
                        crate::tls::accept(&acceptor, &config, stream, addr).await
                    {
                        let peer = Peer { addr, tls: Some(tls) };
                        crate::amqp::connection::serve(shared, stream, peer, id, stop).await;
                    }
                    drop(permit);
                });
            }
        }
    }
    drop(listener);
    drop(tls);
    // Connections were told to close (connection.close 320); give them a bounded time.
    let drain = async { while conns.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(5), drain)
        .await
        .is_err()
    {
        conns.abort_all();
    }
}

fn url(scheme: &str, addr: SocketAddr) -> String {
    let ip = addr.ip();
    let host = match (scheme, ip.is_unspecified() || ip.is_loopback()) {
        ("amqps", true) => "localhost".to_string(),
        (_, true) if ip.is_unspecified() => "127.0.0.1".to_string(),
        _ if ip.is_ipv6() => format!("[{ip}]"),
        _ => ip.to_string(),
    };
    format!("{scheme}://guest:guest@{host}:{}/%2f", addr.port())
}

/// A running broker.
#[derive(Clone)]
pub struct BrokerHandle {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    management_addr: Option<SocketAddr>,
    prometheus_addr: Option<SocketAddr>,
    mqtt_addr: Option<SocketAddr>,
    web_mqtt_addr: Option<SocketAddr>,
    stomp_addr: Option<SocketAddr>,
    web_stomp_addr: Option<SocketAddr>,
    tls_local_addr: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    task: Arc<Mutex<Option<tokio::task::JoinHandle<()>>>>,
    /// What the MQTT connections share (its retained messages are flushed at shutdown).
    mqtt: Arc<crate::mqtt::MqttShared>,
}

impl std::fmt::Debug for BrokerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerHandle")
            .field("local_addr", &self.local_addr)
            .field("tls_local_addr", &self.tls_local_addr)
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

    /// The MQTT listener's address, when [`BrokerBuilder::mqtt_listen`] was given.
    pub fn mqtt_local_addr(&self) -> Option<SocketAddr> {
        self.mqtt_addr
    }

    /// The Web-MQTT listener's address, when [`BrokerBuilder::web_mqtt_listen`] was given.
    pub fn web_mqtt_local_addr(&self) -> Option<SocketAddr> {
        self.web_mqtt_addr
    }

    /// The STOMP listener's address, when [`BrokerBuilder::stomp_listen`] was given.
    pub fn stomp_addr(&self) -> Option<SocketAddr> {
        self.stomp_addr
    }

    /// The Web-STOMP listener's address (path `/ws`), when
    /// [`BrokerBuilder::web_stomp_listen`] was given.
    pub fn web_stomp_addr(&self) -> Option<SocketAddr> {
        self.web_stomp_addr
    }

    /// The AMQPS listener's address, when [`BrokerBuilder::tls_listen`] was given.
    pub fn tls_local_addr(&self) -> Option<SocketAddr> {
        self.tls_local_addr
    }

    /// An `amqp://` URL for the default user and vhost, e.g.
    /// `amqp://guest:guest@127.0.0.1:40123/%2f`.
    pub fn amqp_url(&self) -> String {
        url("amqp", self.local_addr)
    }

    /// An `amqps://` URL of the TLS listener for the default user and vhost, e.g.
    /// `amqps://guest:guest@localhost:40124/%2f` (the host named `localhost` for certificate
    /// checks when the listener is on a loopback or unspecified address).
    pub fn amqps_url(&self) -> Option<String> {
        self.tls_local_addr.map(|addr| url("amqps", addr))
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

    /// Everything the broker defines, as RabbitMQ's definitions JSON (`GET /api/definitions`):
    /// users with their password hashes, vhosts, permissions, topic permissions, vhost limits,
    /// exchanges, queues and bindings.
    pub fn export_definitions(&self) -> String {
        let access = &self.shared.access;
        let defs = crate::core::definitions::export(&self.shared.state.lock(), access);
        serde_json::to_string_pretty(&defs).unwrap_or_default()
    }

    /// Imports RabbitMQ definitions JSON (`POST /api/definitions`): all of it, or nothing
    /// when any part is invalid (the error says which).
    pub fn import_definitions(&self, json: &str) -> Result<(), String> {
        let defs: serde_json::Value =
            serde_json::from_str(json).map_err(|e| format!("invalid JSON: {e}"))?;
        crate::core::definitions::import(&self.shared.state, &self.shared.access, &defs)
    }

    /// Deletes a vhost at run time, as `rabbitmqctl delete_vhost`: its connections are closed
    /// with 320 CONNECTION_FORCED ("vhost 'v' is down", as RabbitMQ 3.10 says), then everything in it goes.
    /// Returns false when there is no such vhost.
    pub async fn delete_vhost(&self, name: &str) -> bool {
        self.shared
            .access
            .delete_vhost(&self.shared.state, name)
            .await
            .is_ok()
    }

    /// Stops accepting, closes every connection with 320 CONNECTION_FORCED, waits for them,
    /// and then until everything written to the data directory so far is on disk.
    pub async fn shutdown(&self) {
        let _ = self.stop.send(true);
        let task = self.task.lock().expect("handle lock").take();
        if let Some(task) = task {
            let _ = task.await;
        }
        let mqtt = self.mqtt.clone();
        let _ = tokio::task::spawn_blocking(move || mqtt.flush()).await;
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
