//! The client's correlation map: pending calls by call id, waiting for their reply.
//!
//! One small type with one lock, held briefly: [`InFlight::register`] adds a call and returns
//! a [`PendingReply`] (dropping it removes the entry, so a call abandoned at its deadline or
//! cancelled by its caller leaves nothing behind), [`InFlight::complete`] hands a reply to its
//! caller, and [`InFlight::fail_all`] ends every pending call at once with the same error when
//! the connection dies, so nothing hangs. A broadcast registers with [`InFlight::register_many`]
//! and takes every reply with its id until it drops its [`PendingReplies`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{mpsc, oneshot, Notify};

use crate::context::CallId;
use crate::error::Error;

/// A raw reply as it came off the reply queue.
pub(crate) use crate::middleware::RawReply as ReplyMessage;

/// Where the replies of one call go: one reply, or any number for a broadcast.
enum Slot {
    One(oneshot::Sender<Result<ReplyMessage, Error>>),
    Many(mpsc::UnboundedSender<Result<ReplyMessage, Error>>),
}

#[derive(Default)]
struct State {
    pending: HashMap<CallId, Slot>,
    /// Set once the map has failed everything; later registrations fail at once.
    closed: Option<Error>,
}

/// Pending calls by id.
#[derive(Default)]
pub(crate) struct InFlight {
    state: Mutex<State>,
    /// Signalled when a registration makes the map non-empty, for [`InFlight::wait_busy`].
    registered: Notify,
}

impl InFlight {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the map inconsistent (each operation is
        // a single insert or remove), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a call; its reply arrives through the returned [`PendingReply`].
    pub(crate) fn register(self: &Arc<Self>, id: CallId) -> Result<PendingReply, Error> {
        let (tx, rx) = oneshot::channel();
        let mut state = self.lock();
        if let Some(err) = &state.closed {
            return Err(err.clone());
        }
        let was_idle = state.pending.is_empty();
        state.pending.insert(id.clone(), Slot::One(tx));
        drop(state);
        // `wait_busy` only waits while the map is empty, so only this transition can wake it.
        if was_idle {
            self.registered.notify_waiters();
        }
        Ok(PendingReply {
            map: Arc::clone(self),
            id,
            rx,
            answered: false,
        })
    }

    /// Registers a broadcast: every reply with its id arrives through the returned
    /// [`PendingReplies`] until it is dropped or a failure ends it.
    pub(crate) fn register_many(self: &Arc<Self>, id: CallId) -> Result<PendingReplies, Error> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut state = self.lock();
        if let Some(err) = &state.closed {
            return Err(err.clone());
        }
        let was_idle = state.pending.is_empty();
        state.pending.insert(id.clone(), Slot::Many(tx));
        drop(state);
        if was_idle {
            self.registered.notify_waiters();
        }
        Ok(PendingReplies {
            map: Arc::clone(self),
            id,
            rx,
        })
    }

    /// Hands a reply to its caller. Returns false for an id nobody waits for (a late reply to a
    /// call that already timed out, or a stray message).
    pub(crate) fn complete(&self, id: &CallId, reply: ReplyMessage) -> bool {
        self.resolve(id, Ok(reply))
    }

    /// Fails one call with `err`. Returns false for an id nobody waits for.
    pub(crate) fn fail(&self, id: &CallId, err: Error) -> bool {
        self.resolve(id, Err(err))
    }

    fn resolve(&self, id: &CallId, result: Result<ReplyMessage, Error>) -> bool {
        let mut state = self.lock();
        // A broadcast stays registered for more replies; a failure ends it.
        if let (Some(Slot::Many(tx)), true) = (state.pending.get(id), result.is_ok()) {
            return tx.send(result).is_ok();
        }
        let slot = state.pending.remove(id);
        drop(state);
        match slot {
            Some(Slot::One(tx)) => tx.send(result).is_ok(),
            Some(Slot::Many(tx)) => tx.send(result).is_ok(),
            None => false,
        }
    }

    /// Waits until at least one call is pending.
    pub(crate) async fn wait_busy(&self) {
        loop {
            // Created before the check, so a registration in between is not missed.
            let registered = self.registered.notified();
            if self.len() > 0 {
                return;
            }
            registered.await;
        }
    }

    /// Removes a call without completing it.
    fn cancel(&self, id: &CallId) {
        self.lock().pending.remove(id);
    }

    /// Fails every pending call with `err`, and every later registration too.
    pub(crate) fn fail_all(&self, err: Error) {
        let pending = {
            let mut state = self.lock();
            if state.closed.is_none() {
                state.closed = Some(err.clone());
            }
            std::mem::take(&mut state.pending)
        };
        for (_, slot) in pending {
            let _ = match slot {
                Slot::One(tx) => tx.send(Err(err.clone())).is_ok(),
                Slot::Many(tx) => tx.send(Err(err.clone())).is_ok(),
            };
        }
    }

    /// How many calls wait for a reply.
    pub(crate) fn len(&self) -> usize {
        self.lock().pending.len()
    }
}

/// The receiving end of one registered call. Dropping it unregisters the call.
pub(crate) struct PendingReply {
    map: Arc<InFlight>,
    id: CallId,
    rx: oneshot::Receiver<Result<ReplyMessage, Error>>,
    /// The map sent an answer, so it removed the entry already.
    answered: bool,
}

impl PendingReply {
    /// Waits for the reply, or the error that failed every call.
    pub(crate) async fn wait(&mut self) -> Result<ReplyMessage, Error> {
        match (&mut self.rx).await {
            Ok(result) => {
                self.answered = true;
                result
            }
            // The map dropped the slot without an answer: it only does so when it is dropped
            // itself, i.e. the client is gone.
            Err(_) => Err(Error::Shutdown),
        }
    }
}

impl Drop for PendingReply {
    fn drop(&mut self) {
        if !self.answered {
            self.map.cancel(&self.id);
        }
    }
}

/// The receiving end of one broadcast. Dropping it unregisters the broadcast.
pub(crate) struct PendingReplies {
    map: Arc<InFlight>,
    id: CallId,
    rx: mpsc::UnboundedReceiver<Result<ReplyMessage, Error>>,
}

impl PendingReplies {
    /// Waits for the next reply; an error ends the broadcast.
    pub(crate) async fn next(&mut self) -> Result<ReplyMessage, Error> {
        match self.rx.recv().await {
            Some(result) => result,
            None => Err(Error::Shutdown),
        }
    }
}

impl Drop for PendingReplies {
    fn drop(&mut self) {
        self.map.cancel(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(body: &[u8]) -> ReplyMessage {
        ReplyMessage {
            content_type: None,
            body: body.to_vec(),
            instance: None,
        }
    }

    #[tokio::test]
    async fn complete_reaches_the_caller_and_unknown_ids_are_ignored() {
        let map = Arc::new(InFlight::default());
        let id = CallId::random();
        let mut pending = map.register(id.clone()).unwrap();
        assert!(!map.complete(&CallId::random(), reply(b"stray")));
        assert!(map.complete(&id, reply(b"x")));
        assert_eq!(pending.wait().await.unwrap().body, b"x");
        assert!(!map.complete(&id, reply(b"again")));
    }

    #[tokio::test]
    async fn fail_ends_one_call_only() {
        let map = Arc::new(InFlight::default());
        let id = CallId::random();
        let mut failed = map.register(id.clone()).unwrap();
        let other = map.register(CallId::random()).unwrap();
        assert!(map.fail(&id, Error::Shutdown));
        assert!(matches!(failed.wait().await, Err(Error::Shutdown)));
        assert!(!map.fail(&id, Error::Shutdown));
        assert_eq!(map.len(), 1);
        drop(other);
    }

    #[tokio::test]
    async fn wait_busy_returns_once_a_call_is_registered() {
        let map = Arc::new(InFlight::default());
        let waiter = tokio::spawn({
            let map = Arc::clone(&map);
            async move { map.wait_busy().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        let _pending = map.register(CallId::random()).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("wait_busy noticed the registration")
            .unwrap();
    }

    #[tokio::test]
    async fn a_broadcast_takes_many_replies_until_dropped_or_failed() {
        let map = Arc::new(InFlight::default());
        let id = CallId::random();
        let mut replies = map.register_many(id.clone()).unwrap();
        assert!(map.complete(&id, reply(b"a")));
        assert!(map.complete(&id, reply(b"b")));
        assert_eq!(replies.next().await.unwrap().body, b"a");
        assert_eq!(replies.next().await.unwrap().body, b"b");
        assert!(map.fail(&id, Error::Shutdown));
        assert!(matches!(replies.next().await, Err(Error::Shutdown)));
        assert_eq!(map.len(), 0);
        let other = CallId::random();
        let replies = map.register_many(other.clone()).unwrap();
        drop(replies);
        assert!(!map.complete(&other, reply(b"late")));
        assert_eq!(map.len(), 0);
    }

    #[tokio::test]
    async fn dropping_a_pending_call_unregisters_it() {
        let map = Arc::new(InFlight::default());
        let pending = map.register(CallId::random()).unwrap();
        assert_eq!(map.len(), 1);
        drop(pending);
        assert_eq!(map.len(), 0);
    }

    #[tokio::test]
    async fn fail_all_ends_every_call_and_later_ones() {
        let map = Arc::new(InFlight::default());
        let mut a = map.register(CallId::random()).unwrap();
        let mut b = map.register(CallId::random()).unwrap();
        map.fail_all(Error::Shutdown);
        assert!(matches!(a.wait().await, Err(Error::Shutdown)));
        assert!(matches!(b.wait().await, Err(Error::Shutdown)));
        assert!(matches!(
            map.register(CallId::random()),
            Err(Error::Shutdown)
        ));
        assert_eq!(map.len(), 0);
    }
}
