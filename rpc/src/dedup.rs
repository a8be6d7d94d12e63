//! Server-side de-duplication: replies of recently executed calls, by call id.
//!
//! A request whose `message_id` the server has already executed is answered from the cache
//! instead of running again; a duplicate that arrives while the first copy still runs waits for
//! that copy's reply. This makes resending a non-idempotent call (after a timeout, a lost
//! connection, a broker redelivery) safe.
//!
//! The limit, stated honestly: [`MemoryReplyCache`] lives in one server process. Two replicas of
//! a service consuming the same queue do not share it, so a duplicate delivered to the other
//! replica runs again. Across replicas, make the handler idempotent or plug in a shared store by
//! implementing [`ReplyCache`].

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::FutureExt;
use tokio::sync::watch;

use crate::context::CallId;

/// A reply as the server published it, kept to answer duplicates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedReply {
    /// The reply's `content_type`.
    pub content_type: String,
    /// The encoded reply body.
    pub body: Vec<u8>,
}

/// What the cache says about a call id the server just received.
pub enum CacheLookup {
    /// First time seen: execute it, then call [`ReplyCache::finish`] or [`ReplyCache::abandon`].
    Execute,
    /// Already executed: send this reply again.
    Replay(CachedReply),
    /// Executing right now: this future yields its reply when done, or `None` if that
    /// execution was abandoned.
    Wait(BoxFuture<'static, Option<CachedReply>>),
}

impl std::fmt::Debug for CacheLookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CacheLookup::Execute => f.write_str("Execute"),
            CacheLookup::Replay(r) => f.debug_tuple("Replay").field(r).finish(),
            CacheLookup::Wait(_) => f.write_str("Wait(..)"),
        }
    }
}

/// Where a server keeps the replies of executed calls. Implement it to share de-duplication
/// between replicas (a database, a key-value store).
pub trait ReplyCache: Send + Sync + 'static {
    /// Looks `call_id` up, reserving it for execution when it is new. `keep_for` is how long
    /// the caller may still resend the call (its remaining budget); keep the reply at least
    /// that long.
    fn begin(&self, call_id: &CallId, keep_for: Duration) -> CacheLookup;

    /// Records the reply of an execution reserved by [`ReplyCache::begin`] and wakes waiters.
    fn finish(&self, call_id: &CallId, reply: CachedReply);

    /// Gives up a reservation without a reply (the handler was cancelled at its deadline);
    /// waiters get `None` and a later copy of the call executes.
    fn abandon(&self, call_id: &CallId);
}

/// A shared cache: servers built with clones of one `Arc` de-duplicate together. Replicas in
/// one process (or tests) can share a [`MemoryReplyCache`] this way; replicas in several
/// processes need a [`ReplyCache`] over a store they all reach.
///
/// ```
/// use std::sync::Arc;
/// use warren_rpc::{MemoryReplyCache, Server};
///
/// let cache = Arc::new(MemoryReplyCache::default());
/// let first = Server::builder().reply_cache(Arc::clone(&cache));
/// let second = Server::builder().reply_cache(cache);
/// # let _ = (first, second);
/// ```
impl<C: ReplyCache + ?Sized> ReplyCache for std::sync::Arc<C> {
    fn begin(&self, call_id: &CallId, keep_for: Duration) -> CacheLookup {
        (**self).begin(call_id, keep_for)
    }

    fn finish(&self, call_id: &CallId, reply: CachedReply) {
        (**self).finish(call_id, reply);
    }

    fn abandon(&self, call_id: &CallId) {
        (**self).abandon(call_id);
    }
}

/// How long "forever" is for a time to live too large to add to an instant.
const FOREVER: Duration = Duration::from_secs(365 * 24 * 3600);

enum Slot {
    Running(watch::Sender<Option<CachedReply>>),
    Done(CachedReply),
}

struct Entry {
    slot: Slot,
    expires: Instant,
    generation: u64,
}

#[derive(Default)]
struct State {
    entries: HashMap<CallId, Entry>,
    /// Insertion order, for eviction; stale rows (replaced entries) are skipped by generation.
    order: VecDeque<(CallId, u64)>,
    next_generation: u64,
}

/// An in-process [`ReplyCache`] bounded in size and time: at most `capacity` replies, each
/// kept for the larger of `min_ttl` and the caller's remaining budget. When full, the oldest
/// entries go first.
pub struct MemoryReplyCache {
    capacity: usize,
    min_ttl: Duration,
    state: Mutex<State>,
}

impl MemoryReplyCache {
    /// A cache of at most `capacity` replies, each kept at least `min_ttl`.
    pub fn new(capacity: usize, min_ttl: Duration) -> Self {
        MemoryReplyCache {
            capacity: capacity.max(1),
            min_ttl,
            state: Mutex::new(State::default()),
        }
    }

    /// How many call ids the cache holds (running or done).
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether the cache holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn evict(state: &mut State, capacity: usize, now: Instant) {
        while let Some((id, generation)) = state.order.front().cloned() {
            let live = state
                .entries
                .get(&id)
                .filter(|e| e.generation == generation);
            let Some(entry) = live else {
                state.order.pop_front();
                continue;
            };
            if state.entries.len() > capacity || entry.expires <= now {
                state.entries.remove(&id);
                state.order.pop_front();
            } else {
                break;
            }
        }
    }
}

impl Default for MemoryReplyCache {
    /// 10 000 replies, kept at least 5 minutes.
    fn default() -> Self {
        MemoryReplyCache::new(10_000, Duration::from_secs(300))
    }
}

impl ReplyCache for MemoryReplyCache {
    fn begin(&self, call_id: &CallId, keep_for: Duration) -> CacheLookup {
        let now = Instant::now();
        let mut state = self.lock();
        Self::evict(&mut state, self.capacity, now);
        if let Some(entry) = state.entries.get(call_id) {
            if entry.expires > now {
                return match &entry.slot {
                    Slot::Done(reply) => CacheLookup::Replay(reply.clone()),
                    Slot::Running(tx) => {
                        let mut rx = tx.subscribe();
                        CacheLookup::Wait(
                            async move {
                                match rx.wait_for(Option::is_some).await {
                                    Ok(reply) => reply.clone(),
                                    Err(_) => None,
                                }
                            }
                            .boxed(),
                        )
                    }
                };
            }
        }
        let generation = state.next_generation;
        state.next_generation += 1;
        let (tx, _) = watch::channel(None);
        state.entries.insert(
            call_id.clone(),
            Entry {
                slot: Slot::Running(tx),
                expires: now
                    .checked_add(keep_for.max(self.min_ttl))
                    .unwrap_or(now + FOREVER),
                generation,
            },
        );
        state.order.push_back((call_id.clone(), generation));
        Self::evict(&mut state, self.capacity, now);
        CacheLookup::Execute
    }

    fn finish(&self, call_id: &CallId, reply: CachedReply) {
        let mut state = self.lock();
        if let Some(entry) = state.entries.get_mut(call_id) {
            // Only duplicates that arrived while the call ran wait here (they subscribe under
            // this lock, before the slot turns Done): usually nobody, and no copy is needed.
            if let Slot::Running(tx) = &entry.slot {
                if tx.receiver_count() > 0 {
                    tx.send_replace(Some(reply.clone()));
                }
            }
            entry.slot = Slot::Done(reply);
        }
    }

    fn abandon(&self, call_id: &CallId) {
        let mut state = self.lock();
        if matches!(
            state.entries.get(call_id).map(|e| &e.slot),
            Some(Slot::Running(_))
        ) {
            // Dropping the sender wakes waiters with `None`.
            state.entries.remove(call_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(body: &[u8]) -> CachedReply {
        CachedReply {
            content_type: "application/json".into(),
            body: body.to_vec(),
        }
    }

    #[tokio::test]
    async fn executes_once_then_replays() {
        let cache = MemoryReplyCache::new(10, Duration::from_secs(60));
        let id = CallId::random();
        assert!(matches!(
            cache.begin(&id, Duration::ZERO),
            CacheLookup::Execute
        ));
        let CacheLookup::Wait(waiter) = cache.begin(&id, Duration::ZERO) else {
            panic!("a running call makes duplicates wait");
        };
        cache.finish(&id, reply(b"1"));
        assert_eq!(waiter.await, Some(reply(b"1")));
        let CacheLookup::Replay(r) = cache.begin(&id, Duration::ZERO) else {
            panic!("a finished call replays");
        };
        assert_eq!(r, reply(b"1"));
    }

    #[tokio::test]
    async fn abandoned_calls_wake_waiters_and_run_again() {
        let cache = MemoryReplyCache::new(10, Duration::from_secs(60));
        let id = CallId::random();
        assert!(matches!(
            cache.begin(&id, Duration::ZERO),
            CacheLookup::Execute
        ));
        let CacheLookup::Wait(waiter) = cache.begin(&id, Duration::ZERO) else {
            panic!("expected Wait");
        };
        cache.abandon(&id);
        assert_eq!(waiter.await, None);
        assert!(matches!(
            cache.begin(&id, Duration::ZERO),
            CacheLookup::Execute
        ));
    }

    #[test]
    fn bounded_in_size_and_time() {
        let cache = MemoryReplyCache::new(2, Duration::ZERO);
        let ids: Vec<CallId> = (0..3).map(|_| CallId::random()).collect();
        for id in &ids {
            assert!(matches!(
                cache.begin(id, Duration::from_secs(60)),
                CacheLookup::Execute
            ));
            cache.finish(id, reply(b"x"));
        }
        assert_eq!(cache.len(), 2);
        // The oldest went first.
        assert!(matches!(
            cache.begin(&ids[0], Duration::from_secs(60)),
            CacheLookup::Execute
        ));

        let short = MemoryReplyCache::new(10, Duration::ZERO);
        let id = CallId::random();
        assert!(matches!(
            short.begin(&id, Duration::ZERO),
            CacheLookup::Execute
        ));
        short.finish(&id, reply(b"x"));
        // Zero time to live: expired at once, so the call id is new again.
        assert!(matches!(
            short.begin(&id, Duration::ZERO),
            CacheLookup::Execute
        ));
    }
}
