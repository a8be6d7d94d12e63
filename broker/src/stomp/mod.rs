//! The STOMP front-end (STOMP 1.0, 1.1 and 1.2, over TCP and over WebSockets), as RabbitMQ's
//! STOMP and Web-STOMP plugins: the same destinations, header mappings, errors and limits, on
//! Warren's core.
//!
//! Data flows one way: transport -> `connection` (reader loop, limits, heart-beats) -> `frame`
//! (decoder) -> `session` (the protocol state machine; `subscribe` and `send` hold its
//! handlers, `destination` and `mapping` RabbitMQ's translations) -> the core, whose
//! deliveries come back through `outbox` (the connection's [`Sink`](crate::core::sink::Sink))
//! -> the writer -> transport. `listener` accepts TCP and WebSocket connections.

pub(crate) mod connection;
pub(crate) mod destination;
pub(crate) mod frame;
pub(crate) mod listener;
pub(crate) mod mapping;
pub(crate) mod outbox;
pub(crate) mod send;
pub(crate) mod session;
pub(crate) mod subscribe;

#[cfg(test)]
mod tests;
