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
//! Layers (see docs/architecture.md): `core` is the protocol-neutral broker (vhosts,
//! exchanges, queues, delivery, storage) behind one lock; `amqp` is the AMQP 0-9-1 front-end
//! that calls it, `mqtt` the MQTT 3.1.1 one (over TCP, and over WebSocket through `ws`);
//! `http` is the management HTTP API (RabbitMQ's `/api`) and Prometheus endpoint; `broker`
//! starts listeners and owns the lifecycle. Only [`Broker`], its
//! builder and handle, [`Limits`], [`BrokerError`] and the TLS settings ([`TlsConfig`]) are
//! public.
#![deny(missing_docs)]

mod amqp;
mod broker;
mod config;
mod core;
#[doc(hidden)]
pub mod fuzz;
mod http;
mod mqtt;
mod shared;
mod stomp;
mod tls;
mod transport;
mod ws;

pub use broker::{Broker, BrokerBuilder, BrokerError, BrokerHandle};
pub use config::Limits;
pub use tls::{CertLoginFrom, TlsConfig, TlsError};

/// Internals for the crate's own benchmarks (`benches/`); not part of the API.
#[doc(hidden)]
pub mod bench {
    pub use crate::amqp::frame::{
        next_frame, write_body, write_header, write_method, FramingError, FRAME_BODY, FRAME_HEADER,
        FRAME_METHOD,
    };
    pub use crate::core::exchange::{
        split_words, topic_match, Binding, Destination, Exchange, ExchangeKind,
    };
    pub use crate::core::hold::LockHold;
    pub use crate::core::props::encode_header_payload;
}
