//! The frame-level AMQP 0-9-1 client: bytes and frames on a plain TCP stream, with nothing a
//! client library does between them.
//!
//! Two users, one core:
//! - [`FrameStream`] (with the handshake steps in [`handshake`]) reads and writes frames and
//!   reports failures as [`RawError`]; warren-bench drives load with it, writing pre-encoded
//!   publishes in batches and counting deliveries without parsing them.
//! - [`RawConn`] is the same stream for the compatibility suites: every read is bounded by
//!   [`crate::WAIT`], every surprise is a panic naming the target, and it can send what no
//!   client would (malformed frames, wrong frame-ends, methods out of order).
//!
//! [`codec`] builds and inspects frames as bytes for both.

pub mod codec;
mod conn;
pub mod handshake;
mod stream;

pub use codec::{
    client_properties, close_of, encode, frame_bytes, frame_bytes_with_end, frame_len,
    method_payload, plain, try_encode, CloseInfo,
};
pub use conn::{RawConn, RawEvent};
pub use stream::{FrameStream, RawError};
