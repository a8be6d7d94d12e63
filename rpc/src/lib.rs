//! Typed RPC over AMQP 0-9-1 message queues.
//!
//! Annotate a trait with [`#[service]`](macro@service) and get a typed async client and a server
//! dispatcher. Calls travel as messages with reply-to queues and correlation ids, on Warren's
//! bundled broker or on RabbitMQ with the same code.
//!
//! ```no_run
//! use std::time::Duration;
//!
//! #[derive(Debug, serde::Serialize, serde::Deserialize)]
//! pub enum CalcError {
//!     DivisionByZero,
//! }
//!
//! /// The service: the trait is the schema.
//! #[warren_rpc::service]
//! pub trait Calculator {
//!     /// Adds two numbers.
//!     #[warren(idempotent)]
//!     async fn add(&self, a: i64, b: i64) -> i64;
//!     /// Divides; dividing by zero is an application error.
//!     async fn div(&self, a: i64, b: i64) -> Result<i64, CalcError>;
//! }
//!
//! struct Calc;
//!
//! impl Calculator for Calc {
//!     async fn add(&self, a: i64, b: i64) -> i64 {
//!         a + b
//!     }
//!     async fn div(&self, a: i64, b: i64) -> Result<i64, CalcError> {
//!         a.checked_div(b).ok_or(CalcError::DivisionByZero)
//!     }
//! }
//!
//! # async fn run() -> Result<(), warren_rpc::Error> {
//! let url = "amqp://guest:guest@127.0.0.1:5672/%2f";
//! let server = warren_rpc::Server::builder()
//!     .concurrency(16)
//!     .serve(url, CalculatorServer::new(Calc))
//!     .await?;
//!
//! let client = warren_rpc::Client::builder()
//!     .timeout(Duration::from_secs(5))
//!     .connect(url)
//!     .await?;
//! let calc = CalculatorClient::new(client);
//! assert_eq!(calc.add(2, 3).await?, 5);
//! // The outer Result is the framework's, the inner one the method's.
//! assert!(matches!(calc.div(1, 0).await?, Err(CalcError::DivisionByZero)));
//! // A per-call budget.
//! let quick = calc.with_timeout(Duration::from_millis(100));
//! let _ = quick.add(1, 1).await;
//!
//! server.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! # The model
//!
//! - A **service** is a trait; its name (the trait name in snake case, or
//!   `#[service(name = "...")]`) is the name of the queue its servers consume.
//! - The [`Client`] publishes each call to that queue with a fresh [`CallId`] and a deadline, and
//!   waits for the reply on direct reply-to (or its own reply queue). The budget travels as the
//!   message `expiration` and the `x-warren-timeout-ms` header, so neither the broker nor the
//!   server works on a call nobody waits for. See [`wire`] for the exact protocol.
//! - The [`Server`] consumes the queue with a prefetch equal to its concurrency, runs handlers
//!   concurrently, replies, then acks. Handlers see their call through [`Context::current`].
//! - Errors: a method's own error type `E` reaches the caller as a value; everything the
//!   framework can fail with is an [`Error`], which says whether it [is
//!   retryable](Error::is_retryable). A call out of time is [`Error::DeadlineExceeded`] if a
//!   server reported starting it, [`Error::Expired`] if none did.
//! - A method returning [`Stream<T>`](Stream) streams its reply under credit-based flow control;
//!   its caller gets a [`ReplyStream`] (see [`stream`]).
//! - Dropping a call (or cancelling its [`CancelToken`]) cancels it on the server; handlers see
//!   it through [`Context::cancelled`].
//! - Every request carries the W3C `traceparent` of the caller's span, continued by the server
//!   ([`Context::trace`]; see [`trace`]). The `opentelemetry` feature joins both sides in one
//!   OpenTelemetry trace.
//!
//! # Attributes of `#[service]`
//!
//! On the trait: `#[service(name = "...")]` sets the service name.
//! On a method, `#[warren(...)]` with any of:
//! - `idempotent`: running it twice is harmless ([`MethodSpec::idempotent`]);
//! - `oneway`: the caller gets no reply, only the broker's confirmation (the method must return
//!   `()`);
//! - `timeout_ms = N`: the method's default budget, overriding the client's.
//!
//! # De-duplication
//!
//! Servers remember the replies of executed call ids in a [`ReplyCache`] (by default an
//! in-process [`MemoryReplyCache`]) and answer a repeated id from it, so a call resent after a
//! timeout or a redelivery runs once. That memory is per server process: across replicas, make
//! handlers idempotent or implement [`ReplyCache`] over a shared store (replicas in one process
//! can share one cache through an `Arc`).
//!
//! # Unreliable networks: retries and reconnection
//!
//! Clients and servers notice a dead connection (socket errors, missed heartbeats, a close by
//! the broker) and reconnect with backoff by themselves; servers declare their queue again and
//! resume consuming. Given the nodes of a RabbitMQ cluster ([`ClientBuilder::urls`],
//! [`ServerBuilder::urls`]), they reconnect to the next node that answers, and servers can use
//! quorum queues ([`ServerBuilder::queue_type`], [`ServerBuilder::delivery_limit`]). A call runs under a [`RetryPolicy`] (per client, per method, or per call):
//! a failed attempt is sent again with the same call id and the next `x-warren-attempt`, with
//! exponential backoff and jitter, never past the call's one deadline. Retried: service
//! unavailable, connection lost before the reply, publish nacked, and for `idempotent` methods
//! an attempt that got no reply within the policy's attempt timeout. A call that cannot finish
//! ends with a typed [`Error`] by its deadline.
#![deny(missing_docs)]

mod cancel;
mod client;
mod context;
mod control;
mod dedup;
mod error;
mod in_flight;
pub mod introspect;
pub mod middleware;
#[cfg(feature = "opentelemetry")]
mod otel;
mod reconnect;
mod retry;
mod server;
mod service;
pub mod stream;
mod tls;
pub mod trace;
pub mod wire;

pub use cancel::CancelToken;
pub use client::{BroadcastOptions, CallOptions, Client, ClientBuilder, Replica, ReplyQueue};
pub use context::{CallId, Context};
pub use dedup::{CacheLookup, CachedReply, MemoryReplyCache, ReplyCache};
pub use error::{Error, FaultCode};
pub use retry::RetryPolicy;
pub use server::{Server, ServerBuilder, DEFAULT_QUORUM_DELIVERY_LIMIT};
pub use service::{
    Dispatch, Fault, MethodSpec, Outcome, Param, Request, Service, MAX_COLLECTED_ITEMS,
};
pub use stream::{ReplyStream, Stream};
pub use tls::Tls;
pub use trace::{SpanId, TraceContext, TraceId};
pub use wire::Codec;

/// Turns a trait into a Warren service: generates `{Trait}Client` and `{Trait}Server`.
///
/// See the [crate documentation](crate) for the attributes it accepts.
pub use warren_rpc_macros::service;

/// The README's example, compiled as a doc test.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

/// Items the generated code uses. Not a public API.
#[doc(hidden)]
pub mod __private {
    pub use serde;
    pub use serde_json;
    pub use std::sync::Arc;
    pub use std::time::Duration;

    /// A function producing the JSON Schema of one type.
    #[cfg(feature = "schemars")]
    pub type SchemaFn = fn() -> serde_json::Value;

    /// The JSON Schema of `T`.
    #[cfg(feature = "schemars")]
    pub fn schema_of<T: schemars::JsonSchema>() -> serde_json::Value {
        serde_json::to_value(schemars::schema_for!(T)).unwrap_or_default()
    }

    /// One method's entry of `Service::schemas`.
    #[cfg(feature = "schemars")]
    pub fn method_schema(
        params: &[(&str, SchemaFn)],
        result: SchemaFn,
        error: &[SchemaFn],
    ) -> serde_json::Value {
        let params: serde_json::Map<String, serde_json::Value> = params
            .iter()
            .map(|(name, schema)| ((*name).to_owned(), schema()))
            .collect();
        let mut method = serde_json::Map::new();
        method.insert("params".to_owned(), serde_json::Value::Object(params));
        method.insert("result".to_owned(), result());
        if let Some(error) = error.first() {
            method.insert("error".to_owned(), error());
        }
        serde_json::Value::Object(method)
    }
}

/// The body of a generated `Service::schemas`: the JSON Schemas of every method's types with
/// the `schemars` feature, `None` without it. Not a public API.
#[doc(hidden)]
#[cfg(feature = "schemars")]
#[macro_export]
macro_rules! __schemas {
    ($($method:literal { params: [$($param:literal : $pty:ty),*], result: $rty:ty, error: [$($ety:ty)?] })*) => {{
        let mut methods = $crate::__private::serde_json::Map::new();
        $(
            methods.insert(
                ::std::string::ToString::to_string($method),
                $crate::__private::method_schema(
                    &[$(($param, $crate::__private::schema_of::<$pty> as $crate::__private::SchemaFn)),*],
                    $crate::__private::schema_of::<$rty>,
                    &[$($crate::__private::schema_of::<$ety> as $crate::__private::SchemaFn)?],
                ),
            );
        )*
        ::core::option::Option::Some($crate::__private::serde_json::Value::Object(methods))
    }};
}

/// The body of a generated `Service::schemas`: the JSON Schemas of every method's types with
/// the `schemars` feature, `None` without it. Not a public API.
#[doc(hidden)]
#[cfg(not(feature = "schemars"))]
#[macro_export]
macro_rules! __schemas {
    ($($tokens:tt)*) => {
        ::core::option::Option::None
    };
}
