//! The core's state: every vhost (exchanges, queues, bindings), every session's delivery state
//! and the storage, owned by one [`State`] behind one lock ([`StateLock`]).
//!
//! The lock is held only for the few microseconds one operation takes and never across an
//! `.await`. One owner for all routing state keeps the semantics easy to follow (a publish, a
//! consume or an ack is atomic) and avoids lock ordering problems; what clients must be told
//! leaves through each connection's [`Sink`](super::sink::Sink), never written under the lock.
//! The operations live beside the data they serve: `topology.rs`, `session.rs`,
//! `delivery.rs`, `settle.rs`.

use super::deadletter::DeathReason;
use super::message::{ChannelKey, ConnId};
use super::pager::Pager;
use super::queue::{Payload, QueuedMessage};
use super::rpcwatch::{RpcWatch, ServiceStats};
use super::session::{ChannelSlot, ConnSlot};
use super::store::{Recovered, Store};
use super::vhost::Vhost;
use super::FastMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

/// The one lock around [`State`], and the one place that decides what a poisoned lock means.
///
/// A panic while the lock is held (a bug in serving one connection) poisons the mutex. Every
/// operation on the state either completes or leaves it consistent enough to keep serving
/// (queues and sessions stay well-formed: a message at worst stays unacknowledged until its
/// channel closes), so the other connections go on: the guard is recovered and the poisoning
/// logged, rather than every later `lock()` panicking in turn. The connection whose handler
/// panicked is closed with 541 INTERNAL_ERROR by its front-end (see `amqp/connection.rs`).
pub(crate) struct StateLock {
    state: Mutex<State>,
}

impl StateLock {
    /// Wraps a state.
    pub(crate) fn new(state: State) -> Self {
        StateLock {
            state: Mutex::new(state),
        }
    }

    /// Locks the state for one operation.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(guard) => guard,
            Err(poisoned) => {
                tracing::error!("a connection panicked while holding the state lock; continuing");
                self.state.clear_poison();
                poisoned.into_inner()
            }
        }
    }
}

/// A message leaving a queue for its dead-letter exchange.
#[derive(Debug)]
pub(super) struct Dead {
    pub(super) vhost: String,
    pub(super) queue: Arc<str>,
    pub(super) message: QueuedMessage,
    pub(super) reason: DeathReason,
}

/// Everything the broker knows, behind one lock.
pub(crate) struct State {
    pub(super) vhosts: FastMap<String, Vhost>,
    pub(super) store: Option<Arc<Store>>,
    pub(super) pager: Pager,
    /// Bytes of ready messages in memory across all queues.
    pub(super) resident: Arc<AtomicUsize>,
    /// Above this many resident bytes, newly queued messages are paged out.
    pub(super) page_budget: usize,
    pub(super) dead: Vec<Dead>,
    pub(super) channels: FastMap<ChannelKey, ChannelSlot>,
    pub(super) conns: FastMap<ConnId, ConnSlot>,
    pub(super) reply_names: FastMap<String, ChannelKey>,
    pub(super) next_queue_id: u64,
    /// Reused by every publish for the queues a message reaches.
    pub(super) route_buf: Vec<Arc<str>>,
    /// What the broker sees of Warren RPC traffic.
    pub(super) rpc: RpcWatch,
    /// Log a warning when a durable queue is created without a store (`--memory-only`).
    pub(super) warn_durable_without_storage: bool,
    /// message_stats counters and rates (see `stats.rs`).
    pub(super) stats: super::stats::Stats,
}

pub(super) fn gen_name(prefix: &str) -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut rng = rand::thread_rng();
    let suffix: String = (0..22)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect();
    format!("{prefix}{suffix}")
}

impl Default for State {
    fn default() -> Self {
        Self::new()
    }
}

impl State {
    /// A state with the default vhost "/".
    pub(crate) fn new() -> Self {
        let mut vhosts = FastMap::default();
        vhosts.insert("/".to_string(), Vhost::new("/"));
        State {
            vhosts,
            store: None,
            pager: Pager::new(std::env::temp_dir().join(format!(
                "warren-pages-{}-{}",
                std::process::id(),
                gen_name("")
            ))),
            resident: Arc::new(AtomicUsize::new(0)),
            page_budget: 128 * 1024 * 1024,
            dead: Vec::new(),
            channels: FastMap::default(),
            conns: FastMap::default(),
            reply_names: FastMap::default(),
            next_queue_id: 1,
            route_buf: Vec::new(),
            rpc: RpcWatch::default(),
            warn_durable_without_storage: false,
            stats: Default::default(),
        }
    }

    /// Attaches a message store, restoring the definitions and messages it recovered.
    pub(crate) fn attach_store(
        &mut self,
        store: Arc<Store>,
        defs: Option<serde_json::Value>,
        recovered: Vec<Recovered>,
    ) {
        if let Some(defs) = defs {
            self.restore_definitions(&defs);
        }
        let now = Instant::now();
        let mut orphans = 0usize;
        for r in recovered {
            match self
                .vhosts
                .get_mut(&r.vhost)
                .and_then(|v| v.queues.get_mut(&r.queue))
            {
                Some(q) => q.push(Arc::new(r.message), now, Some(r.at), None),
                None => {
                    orphans += 1;
                    store.remove(r.at);
                }
            }
        }
        if orphans > 0 {
            tracing::warn!(
                orphans,
                "dropped recovered messages whose queue no longer exists"
            );
        }
        self.store = Some(store);
    }

    /// Whether creating a durable queue without a store logs a warning (it will not survive
    /// a restart).
    pub(crate) fn warn_on_durable_without_storage(&mut self, warn: bool) {
        self.warn_durable_without_storage = warn;
    }

    /// Sets the in-memory budget for ready messages and where paged-out messages go.
    pub(crate) fn set_paging(&mut self, budget: usize, dir: Option<std::path::PathBuf>) {
        self.page_budget = budget;
        if let Some(dir) = dir {
            self.pager = Pager::new(dir);
        }
    }

    /// Bytes of ready messages currently held in memory.
    pub(crate) fn resident_bytes(&self) -> usize {
        self.resident.load(Ordering::Relaxed)
    }

    /// The counter new queues share (for queues restored from definitions).
    pub(crate) fn resident_counter(&self) -> Arc<AtomicUsize> {
        self.resident.clone()
    }

    /// The message store, when the broker has a data directory.
    pub(crate) fn store(&self) -> Option<&Arc<Store>> {
        self.store.as_ref()
    }

    /// Records that a message copy is gone for good.
    pub(super) fn forget(&mut self, m: &QueuedMessage) {
        self.unstore(m);
        if let Payload::Paged(r) = m.payload {
            self.pager.release(r);
        }
    }

    /// Drops the durable copy of a message, if it has one (its page, if any, is released by
    /// whoever reads it: [`materialize`]).
    pub(super) fn unstore(&self, m: &QueuedMessage) {
        if let (Some(store), Some(at)) = (&self.store, m.stored) {
            store.remove(at);
        }
    }

    /// Writes the durable definitions, if a store is attached.
    pub(super) fn save_definitions(&self) {
        if let Some(store) = &self.store {
            store.save_definitions(&crate::core::definitions::snapshot(&self.vhosts));
        }
    }

    /// All vhosts.
    pub(crate) fn vhosts_mut(&mut self) -> &mut FastMap<String, Vhost> {
        &mut self.vhosts
    }

    /// Allocates a queue id (for queues restored from definitions).
    pub(crate) fn next_queue_id(&mut self) -> u64 {
        let id = self.next_queue_id;
        self.next_queue_id += 1;
        id
    }

    /// Adds a vhost if missing.
    pub(crate) fn add_vhost(&mut self, name: &str) {
        self.vhosts
            .entry(name.to_string())
            .or_insert_with(|| Vhost::new(name));
    }

    /// The Warren RPC services the broker has seen traffic for, with their counts, rates and
    /// reply latency (for the management API and Prometheus).
    pub(crate) fn rpc_services(&self) -> Vec<ServiceStats> {
        self.rpc.snapshot(Instant::now(), |vhost, queue| {
            let q = self.vhosts.get(vhost)?.queues.get(queue)?;
            Some((q.consumers().len(), q.message_count()))
        })
    }
}
