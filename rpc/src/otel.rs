//! OpenTelemetry glue (feature `opentelemetry`): the trace context of a `tracing` span as
//! OpenTelemetry sees it, and a server span made the child of a remote caller's span.
//!
//! Works when the application's `tracing` subscriber has a `tracing_opentelemetry` layer; without
//! one, spans have no OpenTelemetry context and Warren falls back to its own W3C trace context
//! ([`crate::trace`]).

use std::str::FromStr;

use opentelemetry::trace::{
    SpanContext, SpanId as OtelSpanId, TraceContextExt, TraceFlags, TraceId as OtelTraceId,
    TraceState,
};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::trace::{SpanId, TraceContext, TraceId};

/// The OpenTelemetry context of `span`, if an OpenTelemetry layer gave it a valid one.
pub(crate) fn span_trace(span: &tracing::Span) -> Option<TraceContext> {
    let context = span.context();
    let otel_span = context.span();
    let span_context = otel_span.span_context();
    if !span_context.is_valid() {
        return None;
    }
    let trace_id = TraceId::from_bytes(span_context.trace_id().to_bytes())?;
    let span_id = SpanId::from_bytes(span_context.span_id().to_bytes())?;
    let state = span_context.trace_state().header();
    Some(
        TraceContext::from_parts(trace_id, span_id, span_context.is_sampled())
            .with_tracestate(Some(&state)),
    )
}

/// Makes `span` the child of the caller's span `parent` (a remote span) and returns the
/// span's own context, or `None` when no OpenTelemetry layer tracks it.
pub(crate) fn continue_trace(span: &tracing::Span, parent: &TraceContext) -> Option<TraceContext> {
    let state = parent
        .tracestate()
        .and_then(|s| TraceState::from_str(s).ok())
        .unwrap_or_default();
    let remote = SpanContext::new(
        OtelTraceId::from_bytes(parent.trace_id().to_bytes()),
        OtelSpanId::from_bytes(parent.span_id().to_bytes()),
        TraceFlags::new(parent.flags()),
        true,
        state,
    );
    let context = opentelemetry::Context::new().with_remote_span_context(remote);
    span.set_parent(context).ok()?;
    span_trace(span)
}
