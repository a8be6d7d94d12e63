//! A Warren RPC call made from inside the broker, for the dashboard's RPC page and
//! `POST /api/warren/services/{vhost}/{queue}/call`: a request in Warren's wire format
//! (docs/protocol.md, sections 3 and 4: JSON body, `x-warren-*` headers, `expiration` = the
//! budget) published through the core like any client's, with a direct reply-to consumer on a
//! private session of its own, and the reply awaited until the deadline.
//!
//! The session is a pseudo-connection registered with the core with its own [`Sink`]; it is
//! removed when the call ends, whichever way (the guard's `Drop`), so an HTTP client that
//! disconnects mid-call leaves nothing behind.

use crate::core::delivery::{ConsumeOptions, REPLY_TO};
use crate::core::message::{ChannelKey, ConnId, Message};
use crate::core::props::PropsView;
use crate::core::sink::{Event, Sink};
use crate::shared::Shared;
use amq_protocol::protocol::basic::AMQPProperties;
use amq_protocol::types::{AMQPValue, FieldTable};
use bytes::Bytes;
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;

/// Ids of the broker's own calling sessions: far above the AMQP listener's counter (which
/// starts at 1), so the two never meet.
static NEXT_SESSION: AtomicU64 = AtomicU64::new(1 << 62);

/// The longest deadline a caller may ask for.
pub(crate) const MAX_TIMEOUT: Duration = Duration::from_secs(300);

/// One call to make.
#[derive(Debug)]
pub(crate) struct CallSpec<'a> {
    /// The vhost of the service queue.
    pub(crate) vhost: &'a str,
    /// The service queue (the routing key on the default exchange).
    pub(crate) queue: &'a str,
    /// The method (`type`), e.g. `add` or `$describe`.
    pub(crate) method: &'a str,
    /// The arguments: a JSON object of parameter name to value.
    pub(crate) args: serde_json::Value,
    /// The call's budget.
    pub(crate) timeout: Duration,
}

/// What the service answered.
#[derive(Debug, Serialize)]
pub(crate) struct CallReply {
    /// The call id (`correlation_id` and `message_id` of the request).
    pub(crate) call_id: String,
    /// Milliseconds from publishing the request to receiving the reply.
    pub(crate) elapsed_ms: f64,
    /// The reply envelope as sent: `{"ok": ...}`, `{"err": ...}` or `{"fault": {...}}`.
    pub(crate) reply: serde_json::Value,
}

/// Why a call got no reply.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CallError {
    /// The vhost does not exist.
    #[error("no vhost '{0}'")]
    NoVhost(String),
    /// The request was unroutable: no queue of that name.
    #[error("NO_ROUTE: no queue '{queue}' in vhost '{vhost}' (no server of this service ever declared it)")]
    Unroutable {
        /// The vhost.
        vhost: String,
        /// The queue.
        queue: String,
    },
    /// No reply came before the deadline.
    #[error("no reply within {0} ms")]
    Timeout(u128),
    /// The reply was not a JSON envelope.
    #[error("the reply could not be read: {0}")]
    BadReply(String),
}

/// The session's sink: every delivery (the reply consumer's only) goes to the waiting call.
#[derive(Debug)]
struct ReplySink(mpsc::UnboundedSender<Arc<Message>>);

impl Sink for ReplySink {
    fn send(&self, event: Event) {
        if let Event::Deliver { msg, .. } = event {
            let _ = self.0.send(msg);
        }
    }

    fn congested(&self) -> bool {
        false
    }
}

/// Removes the calling session from the core when the call ends.
struct Session {
    shared: Arc<Shared>,
    conn: ConnId,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.shared.state.lock().remove_connection(self.conn);
    }
}

/// Makes one call and waits for its reply.
pub(crate) async fn call(shared: &Arc<Shared>, spec: CallSpec<'_>) -> Result<CallReply, CallError> {
    let call_id = uuid::Uuid::new_v4().to_string();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let conn = NEXT_SESSION.fetch_add(1, Ordering::Relaxed);
    let key = ChannelKey { conn, channel: 1 };
    let budget_ms = spec.timeout.as_millis().max(1);
    let started = Instant::now();
    let _session = {
        let mut state = shared.state.lock();
        if !state.vhost_names().iter().any(|v| v == spec.vhost) {
            return Err(CallError::NoVhost(spec.vhost.to_string()));
        }
        state.add_connection(conn, Arc::new(ReplySink(tx)));
        let session = Session {
            shared: shared.clone(),
            conn,
        };
        state.open_channel(key, spec.vhost);
        let opts = ConsumeOptions {
            tag: String::new(),
            no_ack: true,
            exclusive: false,
            args: FieldTable::default(),
        };
        if let Err(e) = state.consume(key, REPLY_TO, opts) {
            drop(state); // before the session's guard, which takes the lock again
            return Err(CallError::BadReply(e.to_string()));
        }
        let reply_to = state.reply_name(key).unwrap_or_default().to_string();
        let msg = Arc::new(request(&spec, &call_id, &reply_to, budget_ms));
        let routed = state.publish(spec.vhost, msg.clone());
        if routed.is_unroutable() {
            state.note_returned(spec.vhost, &msg);
            drop(state);
            return Err(CallError::Unroutable {
                vhost: spec.vhost.to_string(),
                queue: spec.queue.to_string(),
            });
        }
        drop(state);
        session
    };
    let wait = async {
        while let Some(msg) = rx.recv().await {
            if let Some(reply) = read_reply(&msg, &call_id)? {
                return Ok(reply);
            }
        }
        Err(CallError::BadReply("the session closed".into()))
    };
    let reply = tokio::time::timeout(spec.timeout, wait)
        .await
        .map_err(|_| CallError::Timeout(budget_ms))??;
    Ok(CallReply {
        call_id,
        elapsed_ms: started.elapsed().as_secs_f64() * 1000.0,
        reply,
    })
}

/// The request message (protocol.md, section 3), JSON-encoded.
fn request(spec: &CallSpec<'_>, call_id: &str, reply_to: &str, budget_ms: u128) -> Message {
    let budget = i64::try_from(budget_ms).unwrap_or(i64::MAX);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let mut headers = FieldTable::default();
    headers.insert("x-warren-protocol".into(), AMQPValue::LongLongInt(1));
    headers.insert("x-warren-timeout-ms".into(), AMQPValue::LongLongInt(budget));
    headers.insert(
        "x-warren-deadline".into(),
        AMQPValue::LongLongInt(i64::try_from(now.as_millis()).unwrap_or(0) + budget),
    );
    headers.insert("x-warren-attempt".into(), AMQPValue::LongLongInt(1));
    let props = AMQPProperties::default()
        .with_content_type("application/json".into())
        .with_type(spec.method.into())
        .with_correlation_id(call_id.into())
        .with_message_id(call_id.into())
        .with_reply_to(reply_to.into())
        .with_expiration(budget.to_string().into())
        .with_timestamp(now.as_secs())
        .with_headers(headers);
    let body = serde_json::to_vec(&spec.args).unwrap_or_else(|_| b"{}".to_vec());
    Message::with_properties(
        String::new(),
        spec.queue.to_string(),
        &props,
        Bytes::from(body),
    )
}

/// The reply in `msg` if it answers `call_id` (None for another message, or a `started`
/// notice or stream item that precedes the reply).
fn read_reply(msg: &Message, call_id: &str) -> Result<Option<serde_json::Value>, CallError> {
    let h = &msg.header[..];
    let Some(view) = PropsView::parse(h) else {
        return Ok(None);
    };
    if PropsView::text(h, &view.correlation_id) != Some(call_id)
        || matches!(PropsView::text(h, &view.kind), Some("started" | "item"))
    {
        return Ok(None);
    }
    serde_json::from_slice(&msg.body).map(Some).map_err(|e| {
        let content_type = msg
            .properties()
            .content_type()
            .as_ref()
            .map(|c| c.to_string());
        CallError::BadReply(format!(
            "not JSON (content type {}): {e}",
            content_type.as_deref().unwrap_or("none")
        ))
    })
}
