//! The protocol-neutral broker: vhosts and their topology, exchanges and routing, queues, the
//! delivery engine, dead-lettering, storage and paging, definitions.
//!
//! Front-ends (AMQP 0-9-1 in `amqp/`) call it with typed ids (a connection id, a
//! [`ChannelKey`](message::ChannelKey) for a session, queue names, consumer and delivery tags)
//! under the one lock ([`state::StateLock`]), and get back results plus the events their
//! clients must be told, through the [`Sink`](sink::Sink) each connection registered.
//!
//! Modules, leaves first (each imports only modules above it in this list):
//! - `error`, `fieldtable`, `props`: error codes and texts (RabbitMQ's), field-table values,
//!   encoded message properties.
//! - `message`: a published message and the ids of who holds it; `sink`: what front-ends are
//!   told.
//! - `args` (queue argument validation), `topic` (the topic exchange's trie), `exchange`
//!   (routing within one exchange), `store`
//!   (durable definitions and persistent messages), `pager` (messages beyond the memory
//!   budget), `deadletter` (x-death), `queue` (one queue's messages and consumers).
//! - `access` (users, vhosts, permissions, limits and their checks; uses only `error`,
//!   `message`, `store` and, for vhost creation and deletion, `state`).
//! - `rpcwatch`: what the broker sees of Warren RPC traffic (requests, replies, latency).
//! - `vhost`, `session` (a session's delivery state), `definitions`, then `state` (the lock
//!   and the data) with its operations: `topology`, `lifecycle`, `delivery`, `settle`, and
//!   `stats` (message_stats counters and rates, read-only snapshots for the management API).

pub(crate) mod access;
pub(crate) mod args;
pub(crate) mod deadletter;
pub(crate) mod definitions;
pub(crate) mod delivery;
pub(crate) mod error;
pub(crate) mod exchange;
pub(crate) mod fieldtable;
pub(crate) mod hold;
pub(crate) mod lifecycle;
pub(crate) mod message;
pub(crate) mod pager;
pub(crate) mod props;
pub(crate) mod queue;
pub(crate) mod rpcwatch;
pub(crate) mod session;
pub(crate) mod settle;
pub(crate) mod sink;
pub(crate) mod state;
pub(crate) mod stats;
pub(crate) mod store;
pub(crate) mod topic;
pub(crate) mod topology;
pub(crate) mod vhost;

/// The hash map of the per-message paths (vhosts, queues, exchanges, channels, statistics):
/// foldhash, seeded per process, instead of SipHash, which was 4% of the broker's time at
/// 1M msg/s. Keys are names that logged-in users choose; the random seed keeps collisions
/// unpredictable.
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
