//! The client's correlation map: pending calls by call id, waiting for their reply.
//!
//! One small type with one lock, held briefly: [`InFlight::register`] adds a call and returns
//! a [`PendingReply`] (dropping it removes the entry, so a call abandoned at its deadline or
//! cancelled by its caller leaves nothing behind), [`InFlight::complete`] hands a reply to its
//! caller, and [`InFlight::fail_all`] ends every pending call at once with the same error when
//! the connection dies, so nothing hangs.
//!
//! Two kinds of entries: a call waits for one final reply and notes a server's `started`
//! notice on the way ([`InFlight::register`]); a streamed call receives every message of its
//! stream through a bounded queue ([`InFlight::register_stream`]) sized by the credit it
//! granted, so a server that ignores flow control breaks its stream instead of growing the
//! caller's memory.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use tokio::sync::{mpsc, oneshot, Notify};

use crate::context::CallId;
use crate::error::Error;

/// What a message on the reply queue is, from its `type` property.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReplyKind {
    /// A reply (no `type`): the call's one answer, or a fault ending a stream.
    Final,
    /// A server took the call.
    Started,
    /// One item of a stream.
    Item,
    /// The end of a stream.
    End,
}

/// A raw reply as it came off the reply queue.
#[derive(Debug)]
pub(crate) struct ReplyMessage {
    pub(crate) kind: ReplyKind,
    pub(crate) content_type: Option<String>,
    pub(crate) body: Vec<u8>,
    /// The server's control queue (`x-warren-server`), on notices and stream messages.
    pub(crate) server: Option<String>,
}

enum Slot {
    Call {
        tx: oneshot::Sender<Result<ReplyMessage, Error>>,
        /// Set when a server reported that it took the call.
        started: Arc<AtomicBool>,
    },
    Stream {
        tx: mpsc::Sender<ReplyMessage>,
        /// Why the stream was cut off by the map (not by its end marker).
        broken: Arc<OnceLock<Error>>,
    },
}

impl Slot {
    /// Ends the entry with `err`.
    fn fail(self, err: Error) {
        match self {
            Slot::Call { tx, .. } => {
                let _ = tx.send(Err(err));
            }
            Slot::Stream { broken, .. } => {
                let _ = broken.set(err);
            }
        }
    }
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

    /// Registers a call; its reply arrives through the returned [`PendingReply`], and a
    /// server's `started` notice sets `started`.
    pub(crate) fn register(
        self: &Arc<Self>,
        id: CallId,
        started: Arc<AtomicBool>,
    ) -> Result<PendingReply, Error> {
        let (tx, rx) = oneshot::channel();
        self.insert(id.clone(), Slot::Call { tx, started })?;
        Ok(PendingReply {
            map: Arc::clone(self),
            id,
            rx,
            answered: false,
        })
    }

    /// Registers a streamed call that granted `credit` items; every message of its stream
    /// arrives through the returned [`PendingStream`].
    pub(crate) fn register_stream(
        self: &Arc<Self>,
        id: CallId,
        credit: usize,
    ) -> Result<PendingStream, Error> {
        // Room for the granted items, the `started` notice and the end marker.
        let (tx, rx) = mpsc::channel(credit.saturating_add(2).max(1));
        let broken = Arc::new(OnceLock::new());
        self.insert(
            id.clone(),
            Slot::Stream {
                tx,
                broken: Arc::clone(&broken),
            },
        )?;
        Ok(PendingStream {
            map: Arc::clone(self),
            id,
            rx,
            broken,
        })
    }

    fn insert(&self, id: CallId, slot: Slot) -> Result<(), Error> {
        let mut state = self.lock();
        if let Some(err) = &state.closed {
            return Err(err.clone());
        }
        let was_idle = state.pending.is_empty();
        state.pending.insert(id, slot);
        drop(state);
        // `wait_busy` only waits while the map is empty, so only this transition can wake it.
        if was_idle {
            self.registered.notify_waiters();
        }
        Ok(())
    }

    /// Hands a message from the reply queue to its call. Returns false for an id nobody waits
    /// for (a late reply to a call that already timed out, or a stray message) and for a
    /// message the call has no use for.
    pub(crate) fn complete(&self, id: &CallId, reply: ReplyMessage) -> bool {
        let mut state = self.lock();
        let slot = match state.pending.get(id) {
            None => return false,
            Some(Slot::Call { started, .. }) => match reply.kind {
                ReplyKind::Started => {
                    started.store(true, Ordering::SeqCst);
                    return true;
                }
                ReplyKind::Item | ReplyKind::End => return false,
                ReplyKind::Final => state.pending.remove(id),
            },
            Some(Slot::Stream { tx, broken }) => {
                let last = matches!(reply.kind, ReplyKind::End | ReplyKind::Final);
                let delivered = match tx.try_send(reply) {
                    Ok(()) => true,
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        let _ = broken.set(Error::Decode {
                            reason: "the server sent more items than the caller granted".into(),
                        });
                        false
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => false,
                };
                if last || !delivered {
                    state.pending.remove(id);
                }
                return delivered;
            }
        };
        drop(state);
        match slot {
            Some(Slot::Call { tx, .. }) => tx.send(Ok(reply)).is_ok(),
            _ => false,
        }
    }

    /// Fails one call with `err`. Returns false for an id nobody waits for.
    pub(crate) fn fail(&self, id: &CallId, err: Error) -> bool {
        let slot = self.lock().pending.remove(id);
        match slot {
            Some(slot) => {
                slot.fail(err);
                true
            }
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
            slot.fail(err.clone());
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

/// The receiving end of one streamed call. Dropping it unregisters the call.
pub(crate) struct PendingStream {
    map: Arc<InFlight>,
    id: CallId,
    rx: mpsc::Receiver<ReplyMessage>,
    broken: Arc<OnceLock<Error>>,
}

impl PendingStream {
    /// The next message of the stream, or the error that cut it off.
    pub(crate) async fn next(&mut self) -> Result<ReplyMessage, Error> {
        match self.rx.recv().await {
            Some(message) => Ok(message),
            None => Err(self.broken.get().cloned().unwrap_or(Error::Shutdown)),
        }
    }
}

impl Drop for PendingStream {
    fn drop(&mut self) {
        self.map.cancel(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(body: &[u8]) -> ReplyMessage {
        message(ReplyKind::Final, body)
    }

    fn message(kind: ReplyKind, body: &[u8]) -> ReplyMessage {
        ReplyMessage {
            kind,
            content_type: None,
            body: body.to_vec(),
            server: None,
        }
    }

    fn register(map: &Arc<InFlight>, id: CallId) -> Result<PendingReply, Error> {
        map.register(id, Arc::default())
    }

    #[tokio::test]
    async fn started_notices_mark_the_call_and_keep_it_pending() {
        let map = Arc::new(InFlight::default());
        let id = CallId::random();
        let started = Arc::new(AtomicBool::new(false));
        let mut pending = map.register(id.clone(), Arc::clone(&started)).unwrap();
        assert!(map.complete(&id, message(ReplyKind::Started, b"")));
        assert!(started.load(Ordering::SeqCst));
        assert!(!map.complete(&id, message(ReplyKind::Item, b"")));
        assert_eq!(map.len(), 1);
        assert!(map.complete(&id, reply(b"done")));
        assert_eq!(pending.wait().await.unwrap().body, b"done");
    }

    #[tokio::test]
    async fn streams_get_every_message_until_the_end() {
        let map = Arc::new(InFlight::default());
        let id = CallId::random();
        let mut stream = map.register_stream(id.clone(), 2).unwrap();
        assert!(map.complete(&id, message(ReplyKind::Started, b"")));
        assert!(map.complete(&id, message(ReplyKind::Item, b"1")));
        assert!(map.complete(&id, message(ReplyKind::Item, b"2")));
        assert!(map.complete(&id, message(ReplyKind::End, b"")));
        assert_eq!(map.len(), 0, "the end marker unregisters the stream");
        for kind in [
            ReplyKind::Started,
            ReplyKind::Item,
            ReplyKind::Item,
            ReplyKind::End,
        ] {
            assert_eq!(stream.next().await.unwrap().kind, kind);
        }
    }

    #[tokio::test]
    async fn a_stream_past_its_credit_breaks() {
        let map = Arc::new(InFlight::default());
        let id = CallId::random();
        let mut stream = map.register_stream(id.clone(), 1).unwrap();
        for _ in 0..3 {
            assert!(map.complete(&id, message(ReplyKind::Item, b"")));
        }
        assert!(!map.complete(&id, message(ReplyKind::Item, b"")));
        assert_eq!(map.len(), 0);
        for _ in 0..3 {
            assert!(stream.next().await.is_ok());
        }
        assert!(matches!(stream.next().await, Err(Error::Decode { .. })));
    }

    #[tokio::test]
    async fn fail_all_breaks_streams() {
        let map = Arc::new(InFlight::default());
        let mut stream = map.register_stream(CallId::random(), 4).unwrap();
        map.fail_all(Error::Shutdown);
        assert!(matches!(stream.next().await, Err(Error::Shutdown)));
    }

    #[tokio::test]
    async fn complete_reaches_the_caller_and_unknown_ids_are_ignored() {
        let map = Arc::new(InFlight::default());
        let id = CallId::random();
        let mut pending = register(&map, id.clone()).unwrap();
        assert!(!map.complete(&CallId::random(), reply(b"stray")));
        assert!(map.complete(&id, reply(b"x")));
        assert_eq!(pending.wait().await.unwrap().body, b"x");
        assert!(!map.complete(&id, reply(b"again")));
    }

    #[tokio::test]
    async fn fail_ends_one_call_only() {
        let map = Arc::new(InFlight::default());
        let id = CallId::random();
        let mut failed = register(&map, id.clone()).unwrap();
        let other = register(&map, CallId::random()).unwrap();
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
        let _pending = register(&map, CallId::random()).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("wait_busy noticed the registration")
            .unwrap();
    }

    #[tokio::test]
    async fn dropping_a_pending_call_unregisters_it() {
        let map = Arc::new(InFlight::default());
        let pending = register(&map, CallId::random()).unwrap();
        assert_eq!(map.len(), 1);
        drop(pending);
        assert_eq!(map.len(), 0);
    }

    #[tokio::test]
    async fn fail_all_ends_every_call_and_later_ones() {
        let map = Arc::new(InFlight::default());
        let mut a = register(&map, CallId::random()).unwrap();
        let mut b = register(&map, CallId::random()).unwrap();
        map.fail_all(Error::Shutdown);
        assert!(matches!(a.wait().await, Err(Error::Shutdown)));
        assert!(matches!(b.wait().await, Err(Error::Shutdown)));
        assert!(matches!(
            register(&map, CallId::random()),
            Err(Error::Shutdown)
        ));
        assert_eq!(map.len(), 0);
    }
}
