//! The call context a handler can see: call id, method, attempt, deadline, trace and
//! cancellation.
//!
//! The server runs each handler inside a task-local scope holding its [`Context`], so a handler
//! reads it with [`Context::current`] without an extra parameter in the service trait. A
//! [`Client`](crate::Client) call made from inside a handler inherits the handler's deadline
//! when it is sooner than the call's own, so a chain of calls never outlives its caller.

use std::fmt;
use std::future::Future;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::cancel::CancelToken;
use crate::trace::{SpanId, TraceContext};

/// The id of one call: a UUID string, the same on every attempt of that call. It is the
/// request's `correlation_id` and `message_id`, and what servers de-duplicate on.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallId(String);

impl CallId {
    /// A fresh random (v4 UUID) call id.
    pub fn random() -> Self {
        CallId(uuid::Uuid::new_v4().to_string())
    }

    /// Wraps a call id received from the wire.
    pub fn from_wire(id: impl Into<String>) -> Self {
        CallId(id.into())
    }

    /// The id as sent on the wire.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a handler knows about the call it is serving.
///
/// ```
/// # use warren_rpc::Context;
/// async fn handler() -> u32 {
///     // Outside a Warren server there is no context.
///     Context::current().map(|cx| cx.attempt()).unwrap_or(0)
/// }
/// ```
#[derive(Debug, Clone)]
pub struct Context {
    pub(crate) call_id: CallId,
    pub(crate) service: String,
    pub(crate) method: String,
    pub(crate) attempt: u32,
    pub(crate) deadline: Option<Instant>,
    pub(crate) deadline_unix_ms: Option<i64>,
    pub(crate) redelivered: bool,
    /// The handler's span: the caller's trace, a span id of its own.
    pub(crate) trace: TraceContext,
    /// The caller's span (from `traceparent`), `None` when the request carried none.
    pub(crate) parent_span: Option<SpanId>,
    pub(crate) cancel: CancelToken,
}

tokio::task_local! {
    static CURRENT: Context;
}

impl Context {
    /// The context of the call the current task is serving, or `None` outside a handler.
    pub fn current() -> Option<Context> {
        CURRENT.try_with(Clone::clone).ok()
    }

    /// The deadline of the call the current task is serving, without copying its context.
    pub(crate) fn current_deadline() -> Option<Instant> {
        CURRENT.try_with(|cx| cx.deadline).ok().flatten()
    }

    /// The call id (`message_id` / `correlation_id`).
    pub fn call_id(&self) -> &CallId {
        &self.call_id
    }

    /// The service (queue) the request was consumed from.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// The method name (the request's `type`).
    pub fn method(&self) -> &str {
        &self.method
    }

    /// The attempt number from `x-warren-attempt` (1 when absent).
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// When the caller stops waiting: the receive time plus `x-warren-timeout-ms`. `None` for
    /// a request that carried no budget.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// The caller's deadline as absolute Unix milliseconds (`x-warren-deadline`), for logs.
    pub fn deadline_unix_ms(&self) -> Option<i64> {
        self.deadline_unix_ms
    }

    /// The time left before the deadline (zero once it passed), or `None` without a deadline.
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// Whether the broker delivered this request before (to this or another server).
    pub fn redelivered(&self) -> bool {
        self.redelivered
    }

    /// The trace context of the handler's span: the caller's trace id (from the request's
    /// `traceparent`, or a new trace when it had none) and a span id of its own. Calls the
    /// handler makes continue this trace.
    pub fn trace(&self) -> &TraceContext {
        &self.trace
    }

    /// The caller's span id from the request's `traceparent`: the parent of the handler's
    /// span. `None` when the request carried no (valid) `traceparent`.
    pub fn parent_span_id(&self) -> Option<SpanId> {
        self.parent_span
    }

    /// Whether the call was cancelled: its caller cancelled it (dropped the call or cancelled
    /// its token) or its deadline passed. After a cancel the server drops the handler's future
    /// within [`ServerBuilder::cancel_grace`](crate::ServerBuilder::cancel_grace); at the
    /// deadline, at once. Work the handler spawned (with a clone of this context) can check
    /// this to stop.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Waits until the call is cancelled (see [`Context::is_cancelled`]). Select on it to stop
    /// cleanly within the grace period, or hand a clone of the context to spawned work.
    pub async fn cancelled(&self) {
        self.cancel.cancelled().await
    }

    /// The trace context of the call the current task is serving.
    pub(crate) fn current_trace() -> Option<TraceContext> {
        CURRENT.try_with(|cx| cx.trace.clone()).ok()
    }

    /// Runs `fut` with this context as [`Context::current`].
    pub(crate) fn scope<F: Future>(self, fut: F) -> impl Future<Output = F::Output> {
        CURRENT.scope(self, fut)
    }
}

/// Milliseconds since the Unix epoch, for the `x-warren-deadline` header.
pub(crate) fn unix_millis(at: SystemTime) -> i64 {
    at.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn current_is_scoped_to_the_handler() {
        assert!(Context::current().is_none());
        let cx = Context {
            call_id: CallId::from_wire("id-1"),
            service: "svc".into(),
            method: "m".into(),
            attempt: 2,
            deadline: Some(Instant::now() + Duration::from_secs(5)),
            deadline_unix_ms: None,
            redelivered: false,
            trace: TraceContext::new_root(),
            parent_span: None,
            cancel: CancelToken::new(),
        };
        let seen = cx
            .scope(async { Context::current().map(|c| (c.call_id().clone(), c.attempt())) })
            .await;
        assert_eq!(seen, Some((CallId::from_wire("id-1"), 2)));
        assert!(Context::current().is_none());
    }
}
