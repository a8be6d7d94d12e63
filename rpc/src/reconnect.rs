//! Staying connected: noticing a dead connection and building a new one, with backoff.
//!
//! A connection is dead when lapin reports an error on it (a socket error, an EOF, missed
//! heartbeats, a close from the broker), when it stops reporting itself connected, or when its
//! user trips the session's [`Tripwire`] (a consumer ended, a publish failed). Nothing here
//! retries calls: that is [`RetryPolicy`](crate::RetryPolicy)'s job, in the client.
//!
//! - [`Endpoint`] is where to connect: the broker URLs (one, or several nodes of a cluster, with
//!   the heartbeat interval we ask for) and the connection name. [`Endpoint::connect_until`]
//!   replaces a dead session, starting with the next node, with exponential backoff and jitter
//!   until it succeeds or is told to stop.
//! - [`Link`] is the client's view of "the current session": calls take the live session, or
//!   wait for the next one until their deadline. A supervisor task ([`supervise`]) watches each
//!   session, fails what depended on it, and sets up the next one.
//! - The server runs its own loop (consume until the session dies, reconnect, re-declare,
//!   consume again) with the same pieces.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use lapin::uri::AMQPUri;
use lapin::{Connection, ConnectionProperties};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::Error;
use crate::retry::RetryPolicy;
use crate::tls::Tls;

/// How long one connection attempt may take before it counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How often a watcher double-checks a connection's status, in case an error event was missed.
const STATUS_POLL: Duration = Duration::from_millis(500);

/// The backoff between reconnection attempts: from 50 ms, doubling, up to 2 s, half jitter.
pub(crate) fn reconnect_backoff() -> RetryPolicy {
    RetryPolicy::new()
        .backoff(Duration::from_millis(50), Duration::from_secs(2))
        .jitter(0.5)
}

/// One broker node an [`Endpoint`] may connect to.
#[derive(Debug, Clone)]
struct Node {
    uri: AMQPUri,
    /// `host:port`, for the connection name and for messages.
    address: String,
}

/// Where and how to connect: the broker nodes to try (one URL, or several nodes of one
/// cluster), the heartbeat interval asked for, and the connection name.
///
/// Connecting tries the nodes in turn, starting with the preferred one: the node of the last
/// connection that worked, or the one after a node whose session died or could not be set up.
/// Each connection is named `{name}@{host}:{port}`, so the broker's tools show which node a
/// client or server is on.
#[derive(Debug)]
pub(crate) struct Endpoint {
    nodes: Vec<Node>,
    name: String,
    /// Index into `nodes` of the node to try first.
    preferred: AtomicUsize,
    /// For `amqps://` nodes.
    tls: Tls,
}

impl Endpoint {
    /// Parses `urls` (at least one); asks for `heartbeat` (seconds) unless a URL sets its own.
    pub(crate) fn new<U: AsRef<str>>(
        urls: &[U],
        name: &str,
        heartbeat: Option<u16>,
    ) -> Result<Self, Error> {
        if urls.is_empty() {
            return Err(Error::Config {
                reason: "no broker URL given".to_owned(),
            });
        }
        let nodes = urls
            .iter()
            .map(|url| {
                let url = url.as_ref();
                let mut uri: AMQPUri = url.parse().map_err(|e| Error::Config {
                    reason: format!("invalid AMQP URL {url:?}: {e}"),
                })?;
                if uri.query.heartbeat.is_none() {
                    uri.query.heartbeat = heartbeat;
                }
                let address = format!("{}:{}", uri.authority.host, uri.authority.port);
                Ok(Node { uri, address })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        Ok(Endpoint {
            nodes,
            name: name.to_owned(),
            preferred: AtomicUsize::new(0),
            tls: Tls::default(),
        })
    }

    /// Uses these TLS settings for `amqps://` nodes.
    pub(crate) fn with_tls(mut self, tls: Tls) -> Self {
        self.tls = tls;
        self
    }

    /// Connects to the first node that answers, starting with the preferred one; each node gets
    /// one attempt bounded in time. Fails when none answered, with every node's reason.
    pub(crate) async fn connect(&self) -> Result<Connection, Error> {
        let start = self.preferred.load(Ordering::Relaxed);
        let mut failures = Vec::new();
        for offset in 0..self.nodes.len() {
            let index = (start + offset) % self.nodes.len();
            match self.connect_to(&self.nodes[index]).await {
                Ok(connection) => {
                    self.preferred.store(index, Ordering::Relaxed);
                    return Ok(connection);
                }
                Err(err) if self.nodes.len() == 1 => return Err(err),
                Err(err) => {
                    let address = &self.nodes[index].address;
                    tracing::debug!(%address, %err, "broker node unreachable; trying the next");
                    failures.push(format!("{address}: {err}"));
                }
            }
        }
        Err(Error::Connection {
            reason: format!("no broker node reachable ({})", failures.join("; ")),
        })
    }

    /// The connection name used on `node`.
    fn connection_name(&self, node: &Node) -> String {
        format!("{}@{}", self.name, node.address)
    }

    /// One connection attempt to `node`, bounded in time.
    async fn connect_to(&self, node: &Node) -> Result<Connection, Error> {
        let properties =
            ConnectionProperties::default().with_connection_name(self.connection_name(node).into());
        match tokio::time::timeout(
            CONNECT_TIMEOUT,
            Connection::connect_uri_with_config(
                node.uri.clone(),
                properties,
                self.tls.lapin(),
                lapin::runtime::default_runtime().map_err(Error::connection)?,
            ),
        )
        .await
        {
            Ok(result) => result.map_err(Error::connection),
            Err(_) => Err(Error::Connection {
                reason: format!("no connection within {CONNECT_TIMEOUT:?}"),
            }),
        }
    }

    /// Prefers the node after the current one: the current one lost its session or refused
    /// to set one up.
    fn move_on(&self) {
        let next = (self.preferred.load(Ordering::Relaxed) + 1) % self.nodes.len();
        self.preferred.store(next, Ordering::Relaxed);
    }

    /// Replaces a session that died: connects, starting with the node after the one it was on,
    /// and runs `setup` on the new connection, again and again with backoff (after each round
    /// over the nodes), until it succeeds or `stop` turns true (then `None`). A node where
    /// `setup` fails is left for the next one.
    pub(crate) async fn connect_until<S, F, Fut>(
        &self,
        stop: &mut watch::Receiver<bool>,
        mut setup: F,
    ) -> Option<S>
    where
        F: FnMut(Connection) -> Fut,
        Fut: Future<Output = Result<S, (Connection, Error)>>,
    {
        let backoff = reconnect_backoff();
        let mut attempt = 0u32;
        self.move_on();
        loop {
            if *stop.borrow() {
                return None;
            }
            attempt = attempt.saturating_add(1);
            let outcome = tokio::select! {
                _ = stop.wait_for(|stopped| *stopped) => return None,
                outcome = self.connect() => outcome,
            };
            let failed = match outcome {
                Ok(connection) => match setup(connection).await {
                    Ok(session) => return Some(session),
                    Err((connection, err)) => {
                        close_quietly(&connection, "set-up failed").await;
                        self.move_on();
                        err
                    }
                },
                Err(err) => err,
            };
            let delay = backoff.delay_after(attempt);
            tracing::debug!(%failed, attempt, ?delay, "reconnecting failed; backing off");
            tokio::select! {
                _ = stop.wait_for(|stopped| *stopped) => return None,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }
}

/// Closes a connection without waiting long for a broker that may be gone.
pub(crate) async fn close_quietly(connection: &Connection, why: &str) {
    let _ = tokio::time::timeout(
        Duration::from_secs(1),
        connection.close(200, why.to_owned().into()),
    )
    .await;
}

/// A one-way "this session is dead" flag, with the first reason given.
#[derive(Debug, Clone)]
pub(crate) struct Tripwire(Arc<watch::Sender<Option<String>>>);

impl Tripwire {
    pub(crate) fn new() -> Self {
        Tripwire(Arc::new(watch::channel(None).0))
    }

    /// Marks the session dead; later reasons are ignored.
    pub(crate) fn trip(&self, reason: impl Into<String>) {
        let reason = reason.into();
        self.0.send_if_modified(|current| {
            if current.is_none() {
                *current = Some(reason);
                true
            } else {
                false
            }
        });
    }

    /// Whether [`Tripwire::trip`] was called.
    pub(crate) fn is_tripped(&self) -> bool {
        self.0.borrow().is_some()
    }

    /// Waits until tripped; returns the reason.
    pub(crate) async fn tripped(&self) -> String {
        let mut rx = self.0.subscribe();
        let reason = match rx.wait_for(Option::is_some).await {
            Ok(reason) => reason.clone().unwrap_or_default(),
            Err(_) => "the session was dropped".to_owned(),
        };
        reason
    }
}

/// Waits until `connection` is dead (or `tripwire` is tripped), trips the wire and returns why.
pub(crate) async fn until_dead(connection: &Connection, tripwire: &Tripwire) -> String {
    // One listener per connection: lapin hands each event to one listener only.
    let events = connection.events_listener();
    let mut events = std::pin::pin!(events);
    let mut poll = tokio::time::interval(STATUS_POLL);
    let reason = loop {
        tokio::select! {
            reason = tripwire.tripped() => break reason,
            event = events.next() => match event {
                Some(lapin::Event::Error(err)) => break format!("connection lost: {err}"),
                Some(_) => {}
                None => break "connection lost: its event stream ended".to_owned(),
            },
            _ = poll.tick() => {
                if !connection.status().connected() {
                    break "connection lost: it is no longer connected".to_owned();
                }
            }
        }
    };
    tripwire.trip(reason.clone());
    reason
}

/// A session a [`Link`] hands to callers: a connection plus what was set up on it.
pub(crate) trait Session: Send + Sync + 'static {
    /// The session's connection.
    fn connection(&self) -> &Connection;
    /// The session's "dead" flag.
    fn tripwire(&self) -> &Tripwire;
    /// Called once when the session died, before a new one is set up: fail what waits on it.
    fn died(&self, reason: &str);
}

/// The state a [`Link`] publishes.
enum LinkState<S> {
    /// A live session.
    Up(Arc<S>),
    /// Reconnecting; the reason the last session died.
    Down(String),
    /// Closed for good.
    Closed,
}

impl<S> Clone for LinkState<S> {
    fn clone(&self) -> Self {
        match self {
            LinkState::Up(s) => LinkState::Up(Arc::clone(s)),
            LinkState::Down(r) => LinkState::Down(r.clone()),
            LinkState::Closed => LinkState::Closed,
        }
    }
}

/// The current session of a client, replaced by its supervisor whenever it dies.
pub(crate) struct Link<S> {
    state: watch::Sender<LinkState<S>>,
    stop: watch::Sender<bool>,
}

impl<S: Session> Link<S> {
    /// The live session, waiting for one (reconnecting) until `deadline`. Fails with
    /// [`Error::Shutdown`] once closed, or [`Error::Connection`] if no session came in time.
    pub(crate) async fn session(&self, deadline: Instant) -> Result<Arc<S>, Error> {
        let mut rx = self.state.subscribe();
        let ready = rx.wait_for(|state| match state {
            LinkState::Up(session) => !session.tripwire().is_tripped(),
            LinkState::Down(_) => false,
            LinkState::Closed => true,
        });
        let ready = match tokio::time::timeout_at(deadline.into(), ready).await {
            Ok(Ok(state)) => Ok(match &*state {
                LinkState::Up(session) => Some(Arc::clone(session)),
                _ => None,
            }),
            Ok(Err(_)) => Ok(None),
            Err(elapsed) => Err(elapsed),
        };
        match ready {
            Ok(Some(session)) => Ok(session),
            Ok(None) => Err(Error::Shutdown),
            Err(_) => Err(Error::Connection {
                reason: match &*self.state.borrow() {
                    LinkState::Down(reason) => format!("not reconnected in time ({reason})"),
                    LinkState::Up(_) => "not reconnected in time".to_owned(),
                    LinkState::Closed => "the client is shut down".to_owned(),
                },
            }),
        }
    }

    /// The live session right now, if any.
    pub(crate) fn current(&self) -> Option<Arc<S>> {
        match &*self.state.borrow() {
            LinkState::Up(session) => Some(Arc::clone(session)),
            _ => None,
        }
    }

    /// Stops reconnecting and marks the link closed; returns the session that was live.
    pub(crate) fn close(&self) -> Option<Arc<S>> {
        let _ = self.stop.send(true);
        let previous = self.state.send_replace(LinkState::Closed);
        match previous {
            LinkState::Up(session) => Some(session),
            _ => None,
        }
    }
}

/// Starts supervising `first`: when it dies, it is failed ([`Session::died`]), closed, and
/// `setup` builds the next session on a new connection from `endpoint` (with backoff), until the
/// link is closed.
pub(crate) fn supervise<S, F, Fut>(
    endpoint: Endpoint,
    first: Arc<S>,
    mut setup: F,
) -> (Arc<Link<S>>, JoinHandle<()>)
where
    S: Session,
    F: FnMut(Connection) -> Fut + Send + 'static,
    Fut: Future<Output = Result<S, (Connection, Error)>> + Send,
{
    let (stop, mut stop_rx) = watch::channel(false);
    let link = Arc::new(Link {
        state: watch::channel(LinkState::Up(Arc::clone(&first))).0,
        stop,
    });
    let task_link = Arc::clone(&link);
    let task = tokio::spawn(async move {
        let link = task_link;
        let mut session = first;
        loop {
            let reason = tokio::select! {
                reason = until_dead(session.connection(), session.tripwire()) => reason,
                _ = stop_rx.wait_for(|stopped| *stopped) => return,
            };
            tracing::warn!(%reason, "session lost; reconnecting");
            let closed = link.state.send_if_modified(|state| match state {
                LinkState::Closed => false,
                _ => {
                    *state = LinkState::Down(reason.clone());
                    true
                }
            });
            session.died(&reason);
            let dead = Arc::clone(&session);
            tokio::spawn(async move { close_quietly(dead.connection(), "session lost").await });
            if !closed {
                return;
            }
            let next = endpoint.connect_until(&mut stop_rx, &mut setup).await;
            let Some(next) = next else { return };
            let next = Arc::new(next);
            let published = link.state.send_if_modified(|state| match state {
                LinkState::Closed => false,
                _ => {
                    *state = LinkState::Up(Arc::clone(&next));
                    true
                }
            });
            if !published {
                next.died("the client is shut down");
                close_quietly(next.connection(), "client closed").await;
                return;
            }
            tracing::info!("session re-established");
            session = next;
        }
    });
    (link, task)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tripwire_keeps_the_first_reason() {
        let wire = Tripwire::new();
        assert!(!wire.is_tripped());
        let waiter = tokio::spawn({
            let wire = wire.clone();
            async move { wire.tripped().await }
        });
        wire.trip("first");
        wire.trip("second");
        assert!(wire.is_tripped());
        assert_eq!(waiter.await.unwrap(), "first");
        assert_eq!(wire.tripped().await, "first");
    }

    #[test]
    fn endpoints_ask_for_a_heartbeat_unless_the_url_sets_one() {
        let e = Endpoint::new(&["amqp://guest:guest@127.0.0.1:5672/%2f"], "n", Some(7)).unwrap();
        assert_eq!(e.nodes[0].uri.query.heartbeat, Some(7));
        let e = Endpoint::new(&["amqp://127.0.0.1:5672/%2f?heartbeat=3"], "n", Some(7)).unwrap();
        assert_eq!(e.nodes[0].uri.query.heartbeat, Some(3));
        assert!(Endpoint::new(&["not a url"], "n", None).is_err());
        assert!(Endpoint::new::<&str>(&[], "n", None).is_err());
    }

    #[test]
    fn connection_names_show_the_node() {
        let e = Endpoint::new(
            &["amqp://127.0.0.1:5691/%2f", "amqp://localhost:5692/%2f"],
            "warren-client",
            None,
        )
        .unwrap();
        assert_eq!(
            e.connection_name(&e.nodes[0]),
            "warren-client@127.0.0.1:5691"
        );
        assert_eq!(
            e.connection_name(&e.nodes[1]),
            "warren-client@localhost:5692"
        );
    }

    #[test]
    fn a_failed_node_is_left_for_the_next_one() {
        let e = Endpoint::new(&["amqp://a:1", "amqp://b:2", "amqp://c:3"], "n", None).unwrap();
        assert_eq!(e.preferred.load(Ordering::Relaxed), 0);
        e.move_on();
        e.move_on();
        assert_eq!(e.preferred.load(Ordering::Relaxed), 2);
        e.move_on();
        assert_eq!(e.preferred.load(Ordering::Relaxed), 0);
    }
}
