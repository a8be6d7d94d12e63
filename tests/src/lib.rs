//! Test support for Warren's end-to-end tests.
//!
//! Every broker-semantics case runs the same assertions against each [`Target`]: the bundled
//! broker and, when `WARREN_TEST_AMQP_URL` is set, a real RabbitMQ. A case that passes on
//! RabbitMQ encodes real behaviour; the bundled broker must match. [`compat_test!`] makes one
//! test per broker of each case:
//!
//! ```no_run
//! use warren_tests::compat_test;
//!
//! compat_test! {
//!     #[tokio::test]
//!     async fn a_case(t: Target) {
//!         let (conn, channel) = t.open().await;
//!         // ... assertions whose messages name `t` ...
//!         # let _ = channel;
//!         warren_tests::close(conn).await;
//!     }
//! }
//! # fn main() {}
//! ```
//!
//! `cargo test a_case` runs both, `cargo test a_case::bundled` one. Environment:
//! - `WARREN_TEST_AMQP_URL`: RabbitMQ to compare with (`amqp://guest:guest@127.0.0.1:5672/%2f`);
//!   without it the `rabbitmq` tests print that they were skipped.
//! - `WARREN_TEST_ONLY=rabbitmq` or `=bundled`: skip the other broker's tests.
//!
//! One module per job:
//! - [`targets`](mod@targets): which brokers, the environment, the bundled broker shared by a test binary.
//! - [`helpers`]: what cases do with lapin (publish, fill, consume, drain, expect an error).
//! - [`raw`]: the frame-level client, for handshake details, exact close codes and malformed
//!   input; warren-bench generates load with the same code.
//! - [`fields`]: field tables and strings.
//! - [`browser`]: headless Chromium over the DevTools protocol, for the dashboard test.
//! - [`proxy`]: a TCP proxy that breaks connections on purpose.
//! - [`pki`]: certificates made at test time, for the TLS tests.
//! - [`rpc_support`]: services, servers and clients for the warren-rpc tests.
//!
//! Their items are re-exported here, so a test imports `warren_tests::{close, Target, ...}`.
//! Names of queues and exchanges come from [`unique`], because one broker serves every test
//! running in parallel.

use std::time::Duration;

pub mod browser;
pub mod fields;
pub mod helpers;
pub mod pki;
pub mod proxy;
pub mod raw;
pub mod rpc_support;
pub mod targets;

pub use fields::{long_str, short, table, table_int, table_str};
pub use helpers::{
    amqp_error, close, close_watch, consume, declare_exclusive, drain, expect_error,
    expect_error_prefix, expect_no_delivery, expect_queue_gone, fill, get, get_body, next_delivery,
    publish, publish_confirmed, publish_with, python_scenario, reply_text, round_trip, take_n,
    unique, CloseWatch,
};
pub use raw::{
    client_properties, close_of, encode, frame_bytes, frame_bytes_with_end, method_payload, plain,
    CloseInfo, RawConn, RawEvent,
};
pub use targets::{bundled, refnode, targets, Kind, Target};

/// How long a test waits for something that should happen (a delivery, a reply, a close).
pub const WAIT: Duration = Duration::from_secs(5);

/// How long a test waits to be confident that something does not happen.
pub const QUIET: Duration = Duration::from_millis(250);
