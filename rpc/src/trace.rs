//! W3C Trace Context (`traceparent` / `tracestate`) for calls, without any tracing backend.
//!
//! Every request carries a `traceparent` naming the caller's span; the server continues that
//! trace: the handler's span has the caller's trace id and the caller's span as its parent
//! ([`Context::trace`](crate::Context::trace),
//! [`Context::parent_span_id`](crate::Context::parent_span_id)). Which span is "the caller's":
//!
//! 1. with the `opentelemetry` feature and an OpenTelemetry layer on the `tracing` subscriber,
//!    the client's `warren.call` span, a child of the caller's current span, so one trace spans
//!    client and server in any OpenTelemetry backend;
//! 2. otherwise the trace given with [`CallOptions::trace`](crate::CallOptions::trace), else a
//!    fresh span of the trace of the handler making the call (calls made by a handler continue
//!    its trace), else a new trace.
//!
//! Ids are kept as numbers and written as the lowercase hex of the W3C format:
//! `00-<32 hex trace id>-<16 hex span id>-<2 hex flags>`.

use std::fmt;

/// A 16-byte W3C trace id (never all zeros).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TraceId(u128);

/// An 8-byte W3C span id (never all zeros).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpanId(u64);

impl TraceId {
    /// A random trace id.
    pub fn random() -> Self {
        loop {
            let id: u128 = rand::random();
            if id != 0 {
                return TraceId(id);
            }
        }
    }

    /// The id from its 16 bytes (big-endian, as in the W3C text form); `None` for all zeros,
    /// which W3C calls invalid.
    pub fn from_bytes(bytes: [u8; 16]) -> Option<Self> {
        let id = u128::from_be_bytes(bytes);
        (id != 0).then_some(TraceId(id))
    }

    /// The id's 16 bytes, big-endian.
    pub fn to_bytes(self) -> [u8; 16] {
        self.0.to_be_bytes()
    }
}

impl SpanId {
    /// A random span id.
    pub fn random() -> Self {
        loop {
            let id: u64 = rand::random();
            if id != 0 {
                return SpanId(id);
            }
        }
    }

    /// The id from its 8 bytes (big-endian); `None` for all zeros.
    pub fn from_bytes(bytes: [u8; 8]) -> Option<Self> {
        let id = u64::from_be_bytes(bytes);
        (id != 0).then_some(SpanId(id))
    }

    /// The id's 8 bytes, big-endian.
    pub fn to_bytes(self) -> [u8; 8] {
        self.0.to_be_bytes()
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// The trace context of one span: W3C `traceparent` (trace id, span id, flags) and the opaque
/// vendor `tracestate`.
///
/// ```
/// use warren_rpc::TraceContext;
///
/// let parent = TraceContext::parse(
///     "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
///     Some("vendor=value"),
/// )
/// .unwrap();
/// assert_eq!(parent.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
/// assert!(parent.sampled());
/// let child = parent.child();
/// assert_eq!(child.trace_id(), parent.trace_id());
/// assert_ne!(child.span_id(), parent.span_id());
/// assert_eq!(child.tracestate(), Some("vendor=value"));
/// assert_eq!(TraceContext::parse(&parent.traceparent(), None).unwrap().span_id(), parent.span_id());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    trace_id: TraceId,
    span_id: SpanId,
    flags: u8,
    state: Option<String>,
}

/// Why a `traceparent` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid traceparent: {0}")]
pub struct TraceParseError(&'static str);

/// The `sampled` bit of the W3C trace flags.
const SAMPLED: u8 = 0x01;

/// The longest `tracestate` kept (W3C allows 32 members of up to 256 bytes each).
const MAX_TRACESTATE: usize = 8192;

impl TraceContext {
    /// A new trace: random trace and span ids, sampled.
    pub fn new_root() -> Self {
        TraceContext {
            trace_id: TraceId::random(),
            span_id: SpanId::random(),
            flags: SAMPLED,
            state: None,
        }
    }

    /// A context from its parts.
    pub fn from_parts(trace_id: TraceId, span_id: SpanId, sampled: bool) -> Self {
        TraceContext {
            trace_id,
            span_id,
            flags: if sampled { SAMPLED } else { 0 },
            state: None,
        }
    }

    /// The same context with this `tracestate` (dropped when longer than 8 KiB).
    pub fn with_tracestate(mut self, state: Option<&str>) -> Self {
        self.state = state
            .map(str::trim)
            .filter(|s| !s.is_empty() && s.len() <= MAX_TRACESTATE)
            .map(str::to_owned);
        self
    }

    /// A span of the same trace: a new span id, the same flags and `tracestate`.
    pub fn child(&self) -> Self {
        TraceContext {
            span_id: SpanId::random(),
            ..self.clone()
        }
    }

    /// Parses a `traceparent` header value and an optional `tracestate`.
    ///
    /// Accepts version `00` exactly, and later versions by their first four fields, as W3C
    /// asks; refuses all-zero ids and version `ff`.
    pub fn parse(traceparent: &str, tracestate: Option<&str>) -> Result<Self, TraceParseError> {
        let value = traceparent.trim();
        let mut fields = value.split('-');
        let version = fields.next().ok_or(TraceParseError("empty"))?;
        let trace = fields.next().ok_or(TraceParseError("no trace id"))?;
        let span = fields.next().ok_or(TraceParseError("no parent id"))?;
        let flags = fields.next().ok_or(TraceParseError("no trace flags"))?;
        let version = hex_field(version, 2, "version")?;
        if version == 0xff {
            return Err(TraceParseError("version ff is invalid"));
        }
        if version == 0 && fields.next().is_some() {
            return Err(TraceParseError("version 00 has exactly four fields"));
        }
        let trace_id = u128::from_str_radix(check_hex(trace, 32, "trace id")?, 16)
            .map_err(|_| TraceParseError("trace id is not hex"))?;
        let span_id = u64::from_str_radix(check_hex(span, 16, "parent id")?, 16)
            .map_err(|_| TraceParseError("parent id is not hex"))?;
        let flags = u8::try_from(hex_field(flags, 2, "trace flags")?)
            .map_err(|_| TraceParseError("trace flags are one byte"))?;
        if trace_id == 0 {
            return Err(TraceParseError("all-zero trace id"));
        }
        if span_id == 0 {
            return Err(TraceParseError("all-zero parent id"));
        }
        Ok(TraceContext {
            trace_id: TraceId(trace_id),
            span_id: SpanId(span_id),
            flags,
            state: None,
        }
        .with_tracestate(tracestate))
    }

    /// The `traceparent` header value (version `00`).
    pub fn traceparent(&self) -> String {
        format!("00-{}-{}-{:02x}", self.trace_id, self.span_id, self.flags)
    }

    /// The `tracestate` header value, if any.
    pub fn tracestate(&self) -> Option<&str> {
        self.state.as_deref()
    }

    /// The trace this span belongs to.
    pub fn trace_id(&self) -> TraceId {
        self.trace_id
    }

    /// This span's id.
    pub fn span_id(&self) -> SpanId {
        self.span_id
    }

    /// Whether the caller records this trace (the `sampled` flag).
    pub fn sampled(&self) -> bool {
        self.flags & SAMPLED != 0
    }

    /// The raw W3C trace flags.
    pub fn flags(&self) -> u8 {
        self.flags
    }
}

impl fmt::Display for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.traceparent())
    }
}

fn check_hex<'a>(
    field: &'a str,
    len: usize,
    what: &'static str,
) -> Result<&'a str, TraceParseError> {
    let ok = field.len() == len
        && field
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if ok {
        Ok(field)
    } else {
        Err(TraceParseError(match what {
            "trace id" => "the trace id is not 32 lowercase hex digits",
            "parent id" => "the parent id is not 16 lowercase hex digits",
            "version" => "the version is not 2 lowercase hex digits",
            _ => "the trace flags are not 2 lowercase hex digits",
        }))
    }
}

fn hex_field(field: &str, len: usize, what: &'static str) -> Result<u32, TraceParseError> {
    let field = check_hex(field, len, what)?;
    u32::from_str_radix(field, 16).map_err(|_| TraceParseError("not hex"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_formats_the_w3c_example() {
        let text = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let cx = TraceContext::parse(text, None).unwrap();
        assert_eq!(cx.traceparent(), text);
        assert_eq!(cx.span_id().to_string(), "00f067aa0ba902b7");
        assert!(cx.sampled());
        let unsampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        assert!(!TraceContext::parse(unsampled, None).unwrap().sampled());
    }

    #[test]
    fn refuses_malformed_values() {
        for bad in [
            "",
            "00",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
        ] {
            assert!(TraceContext::parse(bad, None).is_err(), "{bad:?}");
        }
        // A later version may add fields.
        let future = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-ever";
        assert!(TraceContext::parse(future, None).is_ok());
    }

    #[test]
    fn roots_and_children() {
        let root = TraceContext::new_root().with_tracestate(Some(" a=1 "));
        let child = root.child();
        assert_eq!(child.trace_id(), root.trace_id());
        assert_ne!(child.span_id(), root.span_id());
        assert_eq!(child.tracestate(), Some("a=1"));
        let again = TraceContext::parse(&child.traceparent(), child.tracestate()).unwrap();
        assert_eq!(again, child);
        assert_eq!(
            TraceId::from_bytes(root.trace_id().to_bytes()),
            Some(root.trace_id())
        );
        assert_eq!(TraceId::from_bytes([0; 16]), None);
        assert_eq!(SpanId::from_bytes([0; 8]), None);
    }
}
