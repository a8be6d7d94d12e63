//! The one error type of the framework, and the fault codes a server can reply with.
//!
//! An application error (the `E` of a method returning `Result<T, E>`) is never an [`Error`]:
//! the generated client hands it to the caller as a value of `E`, inside `Ok`.

use std::fmt;
use std::time::Duration;

/// Why a call failed, as far as the framework is concerned.
///
/// Match on it to act: [`Error::ServiceUnavailable`] means no server could take the call,
/// [`Error::Expired`] that no server started it before its deadline,
/// [`Error::DeadlineExceeded`] that a server started it and its budget ran out, [`Error::Fault`] that a server
/// took the call and reported a failure with a [`FaultCode`]. [`Error::is_retryable`] tells
/// whether sending the same call again can help.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No queue exists for the service (the broker returned the request), so no server can
    /// take it. Servers declare their queue when they start: one may be on its way.
    #[error("service `{service}` is unavailable: no queue is bound to its name")]
    ServiceUnavailable {
        /// The service (queue) name the request was addressed to.
        service: String,
    },

    /// A server started the call and it ran past its deadline: the server told the caller it
    /// took the call (a `started` notice or a streamed item), and no reply came in time. The
    /// server cancels the handler at the deadline; its side effects so far remain.
    #[error("deadline of {}ms exceeded (a server had started the call)", timeout.as_millis())]
    DeadlineExceeded {
        /// The budget the call was given.
        timeout: Duration,
    },

    /// No server reported starting the call before its deadline: it waited in the queue (or
    /// for a free slot of a busy server) until the broker dropped it (its `expiration`) or a
    /// server skipped it as expired. It never ran, so sending it again is safe.
    ///
    /// Warren servers report a call they take whose handler runs longer than a few
    /// milliseconds; a server that knows none of the protocol's additions never does, so a
    /// call such a server ran past its deadline is reported as `Expired` too.
    #[error("expired after {}ms: no server started the call before its deadline", timeout.as_millis())]
    Expired {
        /// The budget the call was given.
        timeout: Duration,
    },

    /// The caller cancelled the call (through its [`CancelToken`](crate::CancelToken)); the
    /// servers were told.
    #[error("the call was cancelled by its caller")]
    Cancelled,

    /// A streamed reply broke off before its end marker: the connection to the broker was
    /// lost, or the reply was malformed. The items received so far were delivered; calling
    /// again starts a new stream from the beginning.
    #[error("the stream broke off after {received} items: {reason}")]
    StreamInterrupted {
        /// How many items arrived before the break.
        received: u64,
        /// What happened.
        reason: String,
    },

    /// The connection or channel to the broker failed, could not be opened, or was closed.
    #[error("connection to the broker failed: {reason}")]
    Connection {
        /// What went wrong, as the AMQP client reported it.
        reason: String,
    },

    /// The broker refused to take the request (a publisher-confirm `nack`).
    #[error("the broker rejected the request (publisher confirm nack)")]
    PublishRejected,

    /// The request arguments (client side) or the reply value (server side) could not be
    /// serialized.
    #[error("could not encode the message: {reason}")]
    Encode {
        /// The serializer's message.
        reason: String,
    },

    /// A reply could not be decoded into the method's return type, or was malformed.
    #[error("could not decode the reply: {reason}")]
    Decode {
        /// The deserializer's message.
        reason: String,
    },

    /// The server took the call and the framework failed it (unknown method, bad arguments,
    /// a panicking handler, ...).
    #[error("the server failed the call ({code}): {message}")]
    Fault {
        /// What kind of failure.
        code: FaultCode,
        /// A human-readable description from the server.
        message: String,
    },

    /// The client was shut down while the call was pending, or before it was made.
    #[error("the client is shut down")]
    Shutdown,

    /// A configuration value is invalid (for example a service name longer than 255 bytes).
    #[error("invalid configuration: {reason}")]
    Config {
        /// What is wrong.
        reason: String,
    },
}

impl Error {
    /// Whether sending the same call again (same call id) may succeed.
    ///
    /// True for failures that happen before a server ran the call or that are transient:
    /// [`Error::ServiceUnavailable`], [`Error::Connection`], [`Error::PublishRejected`], and a
    /// [`Error::Fault`] with [`FaultCode::Unavailable`], an [`Error::Expired`] call (it never
    /// ran) and an [`Error::StreamInterrupted`] stream (call again to restart it). A
    /// [`Error::DeadlineExceeded`] is not retryable: a server ran the call and the budget is
    /// spent (a caller may start a new call with a new deadline if the method is idempotent;
    /// servers de-duplicate by call id in any case).
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::ServiceUnavailable { .. }
            | Error::Connection { .. }
            | Error::PublishRejected
            | Error::Expired { .. }
            | Error::StreamInterrupted { .. } => true,
            Error::Fault { code, .. } => code.is_retryable(),
            Error::DeadlineExceeded { .. }
            | Error::Cancelled
            | Error::Encode { .. }
            | Error::Decode { .. }
            | Error::Shutdown
            | Error::Config { .. } => false,
        }
    }

    /// The fault code, if this is a [`Error::Fault`].
    pub fn fault_code(&self) -> Option<&FaultCode> {
        match self {
            Error::Fault { code, .. } => Some(code),
            _ => None,
        }
    }

    /// A short, stable name for the kind of error (`"deadline_exceeded"`, `"fault"`, ...), for
    /// metrics and summaries.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::ServiceUnavailable { .. } => "service_unavailable",
            Error::DeadlineExceeded { .. } => "deadline_exceeded",
            Error::Expired { .. } => "expired",
            Error::Cancelled => "cancelled",
            Error::StreamInterrupted { .. } => "stream_interrupted",
            Error::Connection { .. } => "connection",
            Error::PublishRejected => "publish_rejected",
            Error::Encode { .. } => "encode",
            Error::Decode { .. } => "decode",
            Error::Fault { .. } => "fault",
            Error::Shutdown => "shutdown",
            Error::Config { .. } => "config",
        }
    }

    pub(crate) fn connection(err: impl fmt::Display) -> Self {
        Error::Connection {
            reason: err.to_string(),
        }
    }
}

/// The code of a fault reply: `{"fault": {"code": ..., "message": ...}}` on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FaultCode {
    /// The service has no method with the requested name (`unknown_method`).
    UnknownMethod,
    /// The request could not be decoded: malformed body, missing or mistyped arguments,
    /// unsupported content type or protocol version (`bad_request`).
    BadRequest,
    /// The handler panicked; the server kept serving (`handler_panicked`).
    HandlerPanicked,
    /// The handler did not finish before the call's deadline (`deadline_exceeded`).
    DeadlineExceeded,
    /// The server cannot take the call now, for example while shutting down (`unavailable`).
    Unavailable,
    /// Any other server-side failure, such as a reply that could not be encoded (`internal`).
    Internal,
    /// The request reached the delivery limit of its quorum queue without ever being answered
    /// (each time, the server that took it died or lost its connection before it acked): it
    /// may crash whatever runs it, so it is answered with this fault instead of run again
    /// (`delivery_limit`). See
    /// [`ServerBuilder::delivery_limit`](crate::ServerBuilder::delivery_limit).
    DeliveryLimit,
    /// A code this version of Warren does not know, kept verbatim.
    Other(String),
}

impl FaultCode {
    /// The code as it appears on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            FaultCode::UnknownMethod => "unknown_method",
            FaultCode::BadRequest => "bad_request",
            FaultCode::HandlerPanicked => "handler_panicked",
            FaultCode::DeadlineExceeded => "deadline_exceeded",
            FaultCode::Unavailable => "unavailable",
            FaultCode::Internal => "internal",
            FaultCode::DeliveryLimit => "delivery_limit",
            FaultCode::Other(code) => code,
        }
    }

    /// Parses a wire code; unknown codes become [`FaultCode::Other`].
    pub fn parse(code: &str) -> Self {
        match code {
            "unknown_method" => FaultCode::UnknownMethod,
            "bad_request" => FaultCode::BadRequest,
            "handler_panicked" => FaultCode::HandlerPanicked,
            "deadline_exceeded" => FaultCode::DeadlineExceeded,
            "unavailable" => FaultCode::Unavailable,
            "internal" => FaultCode::Internal,
            "delivery_limit" => FaultCode::DeliveryLimit,
            other => FaultCode::Other(other.to_owned()),
        }
    }

    /// Whether a call failed with this code may succeed when sent again.
    pub fn is_retryable(&self) -> bool {
        matches!(self, FaultCode::Unavailable)
    }
}

impl fmt::Display for FaultCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_codes_round_trip() {
        for code in [
            FaultCode::UnknownMethod,
            FaultCode::BadRequest,
            FaultCode::HandlerPanicked,
            FaultCode::DeadlineExceeded,
            FaultCode::Unavailable,
            FaultCode::Internal,
            FaultCode::DeliveryLimit,
            FaultCode::Other("teapot".into()),
        ] {
            assert_eq!(FaultCode::parse(code.as_str()), code);
        }
    }

    #[test]
    fn retryable_cases() {
        assert!(Error::ServiceUnavailable {
            service: "s".into()
        }
        .is_retryable());
        assert!(Error::PublishRejected.is_retryable());
        assert!(!Error::DeadlineExceeded {
            timeout: Duration::from_secs(1)
        }
        .is_retryable());
        assert!(!Error::Fault {
            code: FaultCode::HandlerPanicked,
            message: String::new()
        }
        .is_retryable());
    }
}
