//! warren-broker: an AMQP 0-9-1 broker that RabbitMQ clients use unchanged.
//!
//! Embed it in a test or an application:
//!
//! ```no_run
//! # async fn run() -> Result<(), warren_broker::BrokerError> {
//! let broker = warren_broker::Broker::builder()
//!     .listen("127.0.0.1:0".parse().unwrap())
//!     .start()
//!     .await?;
//! println!("broker ready at {}", broker.amqp_url());
//! broker.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! Layers, each its own module: [`frame`] (wire units) -> `connection` (handshake, heartbeats,
//! channel multiplexing, the writer) -> `channel` (method state machine) -> `state`
//! (exchanges, queues, bindings, consumers, under one briefly held lock) -> `exchange`
//! (routing) -> `queue` (messages, consumers, credit).
#![deny(missing_docs)]

mod args;
mod broker;
mod channel;
mod connection;
mod deadletter;
mod definitions;
pub mod error;
pub mod exchange;
pub mod frame;
pub mod pager;
pub mod props;
pub mod queue;
pub mod state;
pub mod store;

pub use broker::{Broker, BrokerBuilder, BrokerError, BrokerHandle, Limits};
