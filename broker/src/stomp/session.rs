//! One STOMP session: the state machine of rabbit_stomp_processor.erl on Warren's core.
//!
//! Frames in, frames out: [`Session::handle`] takes a decoded frame, calls the core under the
//! state lock, and queues what the client must receive on the connection's [`Outbox`]; it
//! never touches a socket, so its sequences are tested in memory (`tests.rs`). Like RabbitMQ,
//! a session is one core connection with one channel: subscriptions are its consumers, ACKs
//! settle its deliveries, and closing it requeues what it did not acknowledge.
//!
//! Errors follow RabbitMQ's three kinds: a STOMP-level mistake (a missing header, an unknown
//! command) gets an ERROR frame and the session goes on; an error the core reports (a missing
//! queue, an unknown delivery tag: a channel error in RabbitMQ) gets an ERROR frame named after
//! the AMQP error (`not_found`, `precondition_failed`, ...) and closes the connection; a frame
//! RabbitMQ cannot process at all (a second CONNECT) closes it without a word.
//!
//! Since RabbitMQ's plugin works through an AMQP channel of a direct connection, the core's
//! errors reach the client in the order that channel reports them: an operation the plugin
//! waits for (SUBSCRIBE's and UNSUBSCRIBE's declare, consume, bind, delete) fails before the
//! frame's RECEIPT, which follows the ERROR; one it only sends (a publish, an ack, anything
//! COMMIT does) fails after it, so the RECEIPT comes first. SEND never has one then.
//!
//! Permissions are checked as that channel checks them (`core::access::permits`): a
//! `/queue/` destination is declared (configure), a subscription consumes (read) and binds
//! (write on its queue, read on the exchange, topic read on the key), SEND publishes (write on
//! the exchange, topic write), a temp queue is declared server-named (configure on its
//! `amq.gen-` name) and consumed; a `/topic/` SUBSCRIBE first passes the plugin's own topic
//! read check. A refusal is an `access_refused` ERROR, and the connection closes.
//!
//! Over a WebSocket, RabbitMQ's Web-STOMP handler queues the frames a step sends as messages
//! to itself and, when the step closes the session, closes the WebSocket (1000, `STOMP
//! died`) before it gets to them: the last frames of a closing step (an ERROR, a receipt
//! after it, a DISCONNECT's receipt) never reach a Web-STOMP client, and Warren drops them too
//! ([`Session::last_words`]).
//!
//! The connection is counted against the vhost's and the user's connection limits from
//! CONNECT on, and listed by the management API as RabbitMQ lists it (`STOMP 1.2`, or
//! `Web STOMP 1.2` over a WebSocket, with the negotiated version).

use super::frame::Frame;
use super::outbox::{error_frame, Outbox};
use crate::core::access::permits::{Permits, Who};
use crate::core::error::{AmqpError, AmqpResult};
use crate::core::message::{ChannelKey, ConnId, Message};
use crate::core::stats::ConnInfo;
use crate::shared::Shared;
use amq_protocol::types::{AMQPValue, FieldTable, LongString};
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

/// The versions RabbitMQ speaks, oldest first.
const SUPPORTED: [&str; 3] = ["1.0", "1.1", "1.2"];

/// The one channel of a STOMP session's core connection.
pub(super) const CHANNEL: u16 = 1;

/// Why a frame failed, and what the client is told.
#[derive(Debug)]
pub(super) enum Failure {
    /// An ERROR frame; the session goes on.
    Error(String, String),
    /// An AMQP error from the core: an ERROR frame named after it, then close.
    Fatal(AmqpError),
    /// Close without a frame.
    Silent,
}

impl Failure {
    /// A STOMP-level error with RabbitMQ's message and detail.
    pub(super) fn error(message: &str, detail: impl Into<String>) -> Self {
        Failure::Error(message.to_string(), detail.into())
    }

    /// RabbitMQ's answer to a frame it crashed on (a malformed number, an unknown ack mode).
    pub(super) fn processing() -> Self {
        Failure::error("Processing error", "Processing error")
    }
}

impl From<AmqpError> for Failure {
    fn from(e: AmqpError) -> Self {
        Failure::Fatal(e)
    }
}

/// What the connection does after a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Read the next frame.
    Continue,
    /// Write what is queued, then close.
    Close,
}

/// A subscription: a consumer of the session's channel.
#[derive(Debug, Clone)]
pub(super) struct Subscription {
    /// The destination header it was made with.
    pub(super) dest: String,
    /// `client` mode: an ACK settles every delivery up to the one it names.
    pub(super) multiple: bool,
}

/// Something a transaction does at COMMIT.
#[derive(Debug)]
pub(super) enum TxAction {
    /// Publish, then send the SEND's receipt.
    Publish(Arc<Message>, Option<String>),
    /// ACK (None) or NACK (Some(requeue)) of a delivery tag.
    Settle(u64, bool, Option<bool>),
}

/// What a logged-in session knows.
#[derive(Debug, Clone)]
pub(super) struct Login {
    pub(super) version: &'static str,
    pub(super) vhost: String,
    pub(super) user: String,
}

/// Closes a connection (from the access layer or the management API), with the reason.
pub(crate) type CloseFn = Arc<dyn Fn(&str) + Send + Sync>;

/// Where a session's connection comes from, and how the broker closes it.
#[derive(Clone)]
pub(crate) struct Link {
    /// The client's address.
    pub(crate) peer: SocketAddr,
    /// The broker's address the client connected to.
    pub(crate) local: SocketAddr,
    /// Whether the connection is Web-STOMP (a WebSocket).
    pub(crate) web: bool,
    /// Closes the connection, saying why.
    pub(crate) close: CloseFn,
}

/// One STOMP session's protocol state.
pub(crate) struct Session {
    pub(super) shared: Arc<Shared>,
    pub(super) conn: ConnId,
    link: Link,
    pub(super) outbox: Outbox,
    session_id: String,
    pub(super) login: Option<Login>,
    pub(super) subs: HashMap<String, Subscription>,
    /// Queues this session declared already (`/queue/` destinations are declared once).
    pub(super) declared: HashSet<String>,
    /// Temp-queue ids and the queues behind them.
    pub(super) reply_queues: HashMap<String, String>,
    pub(super) txs: HashMap<String, Vec<TxAction>>,
    /// Negotiated heart-beats: (server sends every, client must send within).
    heartbeat: (Duration, Duration),
    /// The permission cache of the session's channel.
    perms: Permits,
}

impl Session {
    /// A session not logged in yet; `session_id` is the one its MESSAGE ids will carry.
    pub(crate) fn new(
        shared: Arc<Shared>,
        conn: ConnId,
        link: Link,
        outbox: Outbox,
        session_id: String,
    ) -> Self {
        Session {
            shared,
            conn,
            link,
            outbox,
            session_id,
            login: None,
            subs: HashMap::new(),
            declared: HashSet::new(),
            reply_queues: HashMap::new(),
            txs: HashMap::new(),
            heartbeat: (Duration::ZERO, Duration::ZERO),
            perms: Permits::default(),
        }
    }

    /// Runs a check of the session's channel (with its cache); after CONNECT only.
    pub(super) fn permit<T>(
        &mut self,
        check: impl FnOnce(&mut Permits, &Who<'_>) -> AmqpResult<T>,
    ) -> AmqpResult<T> {
        let mut perms = std::mem::take(&mut self.perms);
        let login = self.login.as_ref().expect("handlers run after CONNECT");
        let who = Who {
            access: &self.shared.access,
            state: &self.shared.state,
            user: &login.user,
            vhost: &login.vhost,
            client_id: None,
        };
        let out = check(&mut perms, &who);
        self.perms = perms;
        out
    }

    /// Whether CONNECT succeeded.
    pub(crate) fn is_connected(&self) -> bool {
        self.login.is_some()
    }

    /// (server sends every, client must send within), zero for none: known after CONNECT.
    pub(crate) fn heartbeat(&self) -> (Duration, Duration) {
        self.heartbeat
    }

    pub(super) fn key(&self) -> ChannelKey {
        ChannelKey {
            conn: self.conn,
            channel: CHANNEL,
        }
    }

    pub(super) fn login(&self) -> &Login {
        self.login.as_ref().expect("handlers run after CONNECT")
    }

    /// Handles one frame from the client.
    pub(crate) fn handle(&mut self, frame: Frame) -> Step {
        let command = frame.command.clone();
        let receipt = frame.header("receipt").map(str::to_string);
        let result = match (&self.login, command.as_str()) {
            (None, "CONNECT" | "STOMP") => self.connect(&frame),
            (None, _) => Err(Failure::error(
                "Illegal command",
                "You must log in using CONNECT first",
            )),
            (Some(_), "CONNECT" | "STOMP") => Err(Failure::Silent),
            (Some(login), _) => {
                let frame = if login.version == "1.0" {
                    trim_values(frame)
                } else {
                    frame
                };
                validate(&frame).and_then(|()| self.dispatch(&frame))
            }
        };
        let step = match result {
            Ok(step) => step,
            Err(Failure::Error(message, detail)) => {
                tracing::debug!(conn = self.conn, %message, %detail, "STOMP error frame sent");
                self.outbox.frame(error_frame(&message, &detail));
                return Step::Continue;
            }
            Err(Failure::Fatal(e)) => {
                tracing::info!(conn = self.conn, text = %e.text, "closing STOMP connection");
                let name = e.code.name().to_ascii_lowercase();
                // What RabbitMQ's plugin waits for fails before the receipt; what it only
                // sends, after (see the module's documentation). SEND has none.
                let waited = matches!(command.as_str(), "SUBSCRIBE" | "UNSUBSCRIBE");
                let receipt = receipt.filter(|_| command != "SEND");
                if let (false, Some(id)) = (waited, &receipt) {
                    self.outbox.frame(receipt_frame(id));
                }
                self.last_words(error_frame(&name, &e.text));
                if let (true, Some(id)) = (waited, &receipt) {
                    self.last_words(receipt_frame(id));
                }
                return Step::Close;
            }
            Err(Failure::Silent) => return Step::Close,
        };
        // SEND receipts wait until the message is safe (see send.rs); CONNECT has none.
        if let Some(id) =
            receipt.filter(|_| !matches!(command.as_str(), "SEND" | "CONNECT" | "STOMP"))
        {
            match step {
                Step::Close => self.last_words(receipt_frame(&id)),
                Step::Continue => self.outbox.frame(receipt_frame(&id)),
            }
        }
        step
    }

    /// Sends a frame of a step that closes the session: not over a WebSocket, where
    /// RabbitMQ's Web-STOMP closes before it sends them (see the module's documentation).
    pub(crate) fn last_words(&self, frame: Frame) {
        if !self.link.web {
            self.outbox.frame(frame);
        }
    }

    fn dispatch(&mut self, frame: &Frame) -> Result<Step, Failure> {
        match frame.command.as_str() {
            "DISCONNECT" => return Ok(Step::Close),
            "SEND" => self.send(frame)?,
            "SUBSCRIBE" => self.subscribe(frame)?,
            "UNSUBSCRIBE" => self.unsubscribe(frame)?,
            "ACK" => self.ack(frame, None)?,
            "NACK" => {
                let requeue = frame.bool_header("requeue").unwrap_or(true);
                self.ack(frame, Some(requeue))?
            }
            "BEGIN" => {
                let tx = tx_header(frame, "BEGIN")?;
                self.txs.insert(tx.to_string(), Vec::new());
            }
            "COMMIT" => self.commit(tx_header(frame, "COMMIT")?)?,
            "ABORT" => {
                let tx = tx_header(frame, "ABORT")?;
                self.txs.remove(tx).ok_or_else(|| bad_transaction(tx))?;
            }
            other => {
                return Err(Failure::error(
                    "Bad command",
                    format!("Could not interpret command \"{other}\"\n"),
                ))
            }
        }
        Ok(Step::Continue)
    }

    /// CONNECT / STOMP: version, credentials (`login`/`passcode`, guest/guest when absent, as
    /// RabbitMQ's default user), `host` as the vhost, heart-beats; then CONNECTED. The checks
    /// are those of the direct connection RabbitMQ's plugin opens, in its order: the vhost's
    /// connection limit (and existence), the password, the user's connection limit and access
    /// to the vhost, then the loopback-users rule.
    fn connect(&mut self, frame: &Frame) -> Result<Step, Failure> {
        let version = negotiate(frame.header("accept-version").unwrap_or("1.0"))?;
        let frame = if version == "1.0" {
            trim_values(frame.clone())
        } else {
            frame.clone()
        };
        let user = frame.header("login").unwrap_or("guest");
        let password = frame.header("passcode").unwrap_or("guest");
        let vhost = frame.header("host").unwrap_or("/");
        let access = &self.shared.access;
        let vhost_denied = || {
            Failure::error(
                "Bad CONNECT",
                format!("Virtual host '{vhost}' access denied"),
            )
        };
        if let Err(e) = access.check_vhost_connections(user, vhost) {
            tracing::warn!(user, "STOMP login failed: {}", e.text);
            return Err(vhost_denied());
        }
        let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
        if let Err(why) = access.authenticate(user, password, loopback) {
            tracing::warn!(user, "STOMP login failed: {why}");
            return Err(Failure::error(
                "Bad CONNECT",
                format!("Access refused for user '{user}'\n"),
            ));
        }
        let close = self.link.close.clone();
        let channels = Arc::new(AtomicUsize::new(1));
        let counted = access.open_connection(
            self.conn,
            user,
            vhost,
            channels,
            Box::new(move |why: &str| close(why)),
        );
        if let Err(e) = counted {
            tracing::warn!(user, "STOMP login failed: {}", e.text);
            return Err(vhost_denied());
        }
        if !access.loopback_allowed(user, self.link.peer.ip()) {
            access.close_connection(self.conn);
            tracing::warn!(
                user,
                "STOMP login failed: this user's access is restricted to localhost"
            );
            return Err(Failure::error("Bad CONNECT", "non-loopback access denied"));
        }
        let (send, receive) = match heart_beats(frame.header("heart-beat").unwrap_or("0,0")) {
            Ok(beats) => beats,
            Err(e) => {
                access.close_connection(self.conn);
                return Err(e);
            }
        };
        let mut state = self.shared.state.lock();
        state.add_connection(self.conn, Arc::new(self.outbox.clone()));
        state.open_channel(self.key(), vhost);
        state.describe_connection(self.conn, self.describe(version, user, vhost));
        drop(state);
        self.heartbeat = (send, receive);
        self.login = Some(Login {
            version,
            vhost: vhost.to_string(),
            user: user.to_string(),
        });
        let h = |k: &str, v: String| (k.to_string(), v);
        self.outbox.frame(Frame::new(
            "CONNECTED",
            vec![
                h("server", format!("Warren/{}", env!("CARGO_PKG_VERSION"))),
                h("session", self.session_id.clone()),
                h(
                    "heart-beat",
                    format!("{},{}", send.as_millis(), receive.as_millis()),
                ),
                h("version", version.to_string()),
            ],
        ));
        Ok(Step::Continue)
    }

    /// The connection as the management API lists it (RabbitMQ's adapter info for STOMP).
    fn describe(&self, version: &str, user: &str, vhost: &str) -> ConnInfo {
        let name = if self.link.web { "Web STOMP" } else { "STOMP" };
        let mut props = FieldTable::default();
        props.insert(
            "product".into(),
            AMQPValue::LongString(LongString::from("STOMP client")),
        );
        ConnInfo {
            protocol: format!("{name} {version}"),
            peer: self.link.peer,
            local: self.link.local,
            user: user.to_string(),
            vhost: vhost.to_string(),
            client_properties: props,
            tune: (0, 1, 0),
            direct: true,
            connected_at: std::time::SystemTime::now(),
            close: self.link.close.clone(),
        }
    }

    /// Forgets the session in the core (consumers cancelled, unacknowledged deliveries
    /// requeued, its exclusive queues (temp queues) deleted) and in the connection count.
    pub(crate) fn close(&mut self) {
        if self.login.take().is_some() {
            self.shared.state.lock().remove_connection(self.conn);
            self.shared.access.close_connection(self.conn);
        }
    }
}

/// A RECEIPT frame.
pub(super) fn receipt_frame(id: &str) -> Frame {
    Frame::new("RECEIPT", vec![("receipt-id".to_string(), id.to_string())])
}

/// STOMP 1.0 frames have the leading blanks of their values trimmed, as RabbitMQ does.
fn trim_values(mut frame: Frame) -> Frame {
    for (_, v) in &mut frame.headers {
        *v = v.trim_start_matches(' ').to_string();
    }
    frame
}

/// SUBSCRIBE and UNSUBSCRIBE of a durable subscription need an `id`.
fn validate(frame: &Frame) -> Result<(), Failure> {
    let durable =
        frame.header("durable") == Some("true") || frame.header("persistent") == Some("true");
    if matches!(frame.command.as_str(), "SUBSCRIBE" | "UNSUBSCRIBE")
        && durable
        && frame.header("id").is_none()
    {
        return Err(Failure::error(
            "Missing Header",
            "Header 'id' is required for durable subscriptions",
        ));
    }
    Ok(())
}

/// The highest version both sides speak.
fn negotiate(accept: &str) -> Result<&'static str, Failure> {
    accept
        .split(',')
        .filter_map(|v| SUPPORTED.iter().find(|s| **s == v))
        .max()
        .copied()
        .ok_or_else(|| {
            Failure::error(
                "Version mismatch",
                format!("Supported versions are {}\n", SUPPORTED.join(",")),
            )
        })
}

/// RabbitMQ's heart-beats from the client's `cx,cy`: the server sends every `cy` and expects
/// something every `cx`, both in whole seconds (under a second is one, zero or less is none).
fn heart_beats(value: &str) -> Result<(Duration, Duration), Failure> {
    let mut parts = value.split(',').map(|p| p.parse::<i64>());
    let (Some(Ok(cx)), Some(Ok(cy)), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(Failure::processing());
    };
    let secs = |ms: i64| match ms {
        ..=0 => Duration::ZERO,
        1..=999 => Duration::from_secs(1),
        _ => Duration::from_secs((ms / 1000) as u64),
    };
    Ok((secs(cy), secs(cx)))
}

/// The `transaction` header of BEGIN, COMMIT or ABORT.
fn tx_header<'a>(frame: &'a Frame, command: &str) -> Result<&'a str, Failure> {
    frame.header("transaction").ok_or_else(|| {
        Failure::error(
            "Missing transaction",
            format!("\"{command}\" must include a 'transaction' header\n"),
        )
    })
}

/// The error for a transaction that was never begun.
pub(super) fn bad_transaction(tx: &str) -> Failure {
    Failure::error(
        "Bad transaction",
        format!("Invalid transaction identifier: \"{tx}\"\n"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_and_heart_beats_as_rabbitmq() {
        assert_eq!(negotiate("1.0,1.1,1.2").unwrap(), "1.2");
        assert_eq!(negotiate("1.1,2.0").unwrap(), "1.1");
        assert!(negotiate("2.0").is_err());
        assert_eq!(
            heart_beats("1500,500").unwrap(),
            (Duration::from_secs(1), Duration::from_secs(1))
        );
        assert_eq!(
            heart_beats("0,10000").unwrap(),
            (Duration::from_secs(10), Duration::ZERO)
        );
        assert!(heart_beats("abc").is_err());
    }
}
