//! The server's control plane: the calls it is running, the call ids it was told to cancel,
//! and the messages of its control queue.
//!
//! Every server session declares an exclusive, server-named control queue and binds it to
//! [`CONTROL_EXCHANGE`](crate::wire::CONTROL_EXCHANGE) with its service (queue) name. Callers
//! publish a `cancel` there when they drop or cancel a call, so every server of the service
//! hears it: the one running the call cancels its handler, the others remember the id until the
//! call's deadline and skip the request if it reaches them later. Callers of a streamed reply
//! send `credit` to the control queue of the server that streams it (named in the stream's
//! messages). [`Controls`] is that state, one lock held briefly, and the parser of control
//! messages.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use lapin::message::Delivery;
use tokio::sync::Semaphore;

use crate::cancel::CancelToken;
use crate::context::CallId;
use crate::wire;

/// How long a cancelled id is remembered when the cancel carries no budget.
const REMEMBER_DEFAULT: Duration = Duration::from_secs(60);
/// The longest a cancelled id is remembered, whatever the cancel says.
const REMEMBER_MAX: Duration = Duration::from_secs(600);
/// How many cancelled ids are remembered at most; the oldest are forgotten first.
const REMEMBER_IDS: usize = 10_000;
/// The most credit one message can grant (a peer cannot overflow the semaphore).
pub(crate) const MAX_CREDIT: usize = 1 << 20;

/// One call a server is running: how to cancel it, and the credit of its stream.
pub(crate) struct Running {
    pub(crate) cancel: CancelToken,
    /// Items the caller still accepts (streamed calls only).
    pub(crate) credit: Semaphore,
}

#[derive(Default)]
struct State {
    running: HashMap<CallId, Arc<Running>>,
    /// Cancelled ids and until when they are remembered.
    cancelled: HashMap<CallId, Instant>,
    /// The same ids in the order they were cancelled, to forget the oldest first.
    order: VecDeque<CallId>,
}

/// The running and cancelled calls of one server.
#[derive(Default)]
pub(crate) struct Controls {
    state: Mutex<State>,
}

/// A running call's registration; dropping it unregisters the call.
pub(crate) struct RunGuard {
    controls: Arc<Controls>,
    id: CallId,
    pub(crate) running: Arc<Running>,
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        let mut state = self.controls.lock();
        // A duplicate of the call may have registered since; only remove our own entry.
        if state
            .running
            .get(&self.id)
            .is_some_and(|r| Arc::ptr_eq(r, &self.running))
        {
            state.running.remove(&self.id);
        }
    }
}

impl Controls {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Every operation is a few inserts and removes: a poisoned lock is still consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the caller cancelled `id` (and it is still remembered).
    pub(crate) fn was_cancelled(&self, id: &CallId) -> bool {
        let state = self.lock();
        state
            .cancelled
            .get(id)
            .is_some_and(|until| *until > Instant::now())
    }

    /// Registers `id` as running with `credit` items granted; `None` if it was cancelled.
    pub(crate) fn start(self: &Arc<Self>, id: &CallId, credit: usize) -> Option<RunGuard> {
        let mut state = self.lock();
        if state
            .cancelled
            .get(id)
            .is_some_and(|until| *until > Instant::now())
        {
            return None;
        }
        let running = Arc::new(Running {
            cancel: CancelToken::new(),
            credit: Semaphore::new(credit.min(MAX_CREDIT)),
        });
        state.running.insert(id.clone(), Arc::clone(&running));
        Some(RunGuard {
            controls: Arc::clone(self),
            id: id.clone(),
            running,
        })
    }

    /// Cancels `id` if it runs here, and remembers it for `remember` (capped) either way.
    pub(crate) fn cancel(&self, id: CallId, remember: Duration) {
        let now = Instant::now();
        let until = now + remember.min(REMEMBER_MAX);
        let mut state = self.lock();
        if let Some(running) = state.running.get(&id) {
            running.cancel.cancel();
        }
        while let Some(oldest) = state.order.front() {
            let expired = state.cancelled.get(oldest).is_none_or(|u| *u <= now);
            if !expired && state.order.len() < REMEMBER_IDS {
                break;
            }
            if let Some(oldest) = state.order.pop_front() {
                state.cancelled.remove(&oldest);
            }
        }
        if state.cancelled.insert(id.clone(), until).is_none() {
            state.order.push_back(id);
        }
    }

    /// Grants `items` more credit to the stream of `id`, if it runs here.
    pub(crate) fn credit(&self, id: &CallId, items: usize) {
        let state = self.lock();
        if let Some(running) = state.running.get(id) {
            let room = MAX_CREDIT.saturating_sub(running.credit.available_permits());
            running.credit.add_permits(items.min(room));
        }
    }

    /// Acts on one message of the control queue; unknown kinds are ignored, for peers that
    /// know more message kinds than this server.
    pub(crate) fn handle(&self, delivery: &Delivery) {
        let props = &delivery.properties;
        let Some(id) = props.correlation_id().as_ref() else {
            return;
        };
        let id = CallId::from_wire(id.as_str());
        let headers = props.headers().as_ref();
        match props.kind().as_ref().map(|k| k.as_str()) {
            Some(wire::KIND_CANCEL) => {
                let remember = wire::header_i64(headers, wire::HEADER_TIMEOUT_MS)
                    .and_then(|ms| u64::try_from(ms).ok())
                    .map(Duration::from_millis)
                    .unwrap_or(REMEMBER_DEFAULT);
                tracing::debug!(call_id = %id, "cancel received");
                self.cancel(id, remember);
            }
            Some(wire::KIND_CREDIT) => {
                let items = wire::header_i64(headers, wire::HEADER_CREDIT)
                    .and_then(|n| usize::try_from(n).ok())
                    .unwrap_or(0);
                self.credit(&id, items);
            }
            other => tracing::debug!(kind = ?other, "unknown control message ignored"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cancelled_call_does_not_start() {
        let controls = Arc::new(Controls::default());
        let id = CallId::random();
        controls.cancel(id.clone(), Duration::from_secs(5));
        assert!(controls.was_cancelled(&id));
        assert!(controls.start(&id, 0).is_none());
        assert!(controls.start(&CallId::random(), 0).is_some());
    }

    #[test]
    fn cancel_reaches_a_running_call_and_credit_its_stream() {
        let controls = Arc::new(Controls::default());
        let id = CallId::random();
        let guard = controls.start(&id, 2).expect("starts");
        controls.credit(&id, 3);
        assert_eq!(guard.running.credit.available_permits(), 5);
        controls.credit(&id, usize::MAX);
        assert_eq!(guard.running.credit.available_permits(), MAX_CREDIT);
        controls.cancel(id.clone(), Duration::from_secs(5));
        assert!(guard.running.cancel.is_cancelled());
        drop(guard);
        assert!(controls.lock().running.is_empty());
    }

    #[test]
    fn cancelled_ids_are_forgotten_in_time_and_by_number() {
        let controls = Controls::default();
        let old = CallId::random();
        controls.cancel(old.clone(), Duration::ZERO);
        assert!(!controls.was_cancelled(&old));
        for _ in 0..REMEMBER_IDS + 10 {
            controls.cancel(CallId::random(), Duration::from_secs(60));
        }
        let state = controls.lock();
        assert!(state.cancelled.len() <= REMEMBER_IDS);
        assert_eq!(state.cancelled.len(), state.order.len());
    }
}
