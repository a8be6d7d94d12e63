//! The AMQP 0-9-1 front-end: framing, the handshake, the reader (connection), the writer and
//! its outbox, each channel's state machine, and one handler per class.
//!
//! Data flows one way: socket -> `frame` -> `connection` (channel multiplexing, heartbeats,
//! close) -> `channel` (method ordering, content assembly, confirms, transactions) -> the
//! class handlers (permission checks in `access`) -> the core, whose events come back through `outbox` -> `writer` -> socket.
//! Handlers take the core's state and an outbox, never a socket, so their sequences are unit
//! tested in memory (`tests.rs`).

pub(crate) mod access;
pub(crate) mod basic;
pub(crate) mod channel;
pub(crate) mod connection;
pub(crate) mod exchange;
pub(crate) mod frame;
pub(crate) mod handshake;
pub(crate) mod outbox;
pub(crate) mod publish;
pub(crate) mod queue;
pub(crate) mod tx;
pub(crate) mod writer;

#[cfg(test)]
mod tests;
