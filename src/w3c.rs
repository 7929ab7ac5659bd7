//! W3C trace context where other code carries it: OpenTelemetry's `SpanContext` and `Context`,
//! an OpenTelemetry [`TextMapPropagator`], and (feature `http`) an [`http::HeaderMap`].
//!
//! Headers are read by the W3C rules [`PropagateContext::from_traceparent`] applies; a
//! `tracestate` is passed on as text, and `req_start_with` keeps it when it is valid.

use crate::error::TraceparentError;
use crate::PropagateContext;
use opentelemetry::propagation::text_map_propagator::FieldIter;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use opentelemetry::Context;

/// The W3C header names.
pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";

impl PropagateContext {
    /// The context of a valid OpenTelemetry span context: its trace, its span as the parent,
    /// its sampled flag. `None` for an invalid (empty) one.
    pub fn from_span_context(sc: &SpanContext) -> Option<PropagateContext> {
        if !sc.is_valid() {
            return None;
        }
        let trace = u128::from_be_bytes(sc.trace_id().to_bytes());
        let span = u64::from_be_bytes(sc.span_id().to_bytes());
        Some(PropagateContext::new(trace, span, 0, 0, sc.is_sampled()))
    }

    /// This context as a remote OpenTelemetry span context (its parent span as the span),
    /// carrying `state`.
    pub fn to_span_context(&self, state: TraceState) -> SpanContext {
        let flags = if self.is_sampled() {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        };
        SpanContext::new(
            TraceId::from_bytes(self.trace_id().to_be_bytes()),
            SpanId::from_bytes(self.parent_span_id().to_be_bytes()),
            flags,
            true,
            state,
        )
    }

    /// An OpenTelemetry context whose span is this one (remote): what any OpenTelemetry
    /// propagator injects from, for calls made on the request's behalf.
    pub fn to_otel_context(&self) -> Context {
        Context::new().with_remote_span_context(self.to_span_context(TraceState::NONE))
    }
}

/// What a request's headers said of its upstream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upstream {
    pub context: PropagateContext,
    /// The `tracestate` header, as sent (checked when `req_start_with` keeps it).
    pub tracestate: Option<String>,
}

/// Reads `traceparent` and `tracestate` through `get`: `Ok(None)` without a `traceparent`, an
/// error for one that breaks the W3C rules (the request is then best traced as a new root).
fn extract_with<'a>(
    get: impl Fn(&str) -> Option<&'a str>,
) -> Result<Option<Upstream>, TraceparentError> {
    let Some(tp) = get(TRACEPARENT) else {
        return Ok(None);
    };
    let context = PropagateContext::from_traceparent(tp)?;
    let tracestate = get(TRACESTATE).map(str::to_owned);
    Ok(Some(Upstream {
        context,
        tracestate,
    }))
}

/// The W3C propagator over slicetrace's reading of the headers: extracts a remote span
/// context (an invalid or missing `traceparent` leaves the context as it was, as OpenTelemetry's
/// own does), and injects the span context of the context given, so that code using
/// OpenTelemetry's global propagator sends what slicetrace reads. Give it a request's
/// [`PropagateContext::to_otel_context`] to inject slicetrace's span.
#[derive(Clone, Copy, Debug, Default)]
pub struct W3cPropagator;

impl TextMapPropagator for W3cPropagator {
    fn inject_context(&self, cx: &Context, injector: &mut dyn Injector) {
        let span = cx.span();
        let sc = span.span_context();
        let Some(ctx) = PropagateContext::from_span_context(sc) else {
            return;
        };
        injector.set(TRACEPARENT, ctx.to_traceparent());
        let state = sc.trace_state().header();
        if !state.is_empty() {
            injector.set(TRACESTATE, state);
        }
    }

    fn extract_with_context(&self, cx: &Context, extractor: &dyn Extractor) -> Context {
        let Ok(Some(up)) = extract_with(|k| extractor.get(k)) else {
            return cx.clone();
        };
        let state = up
            .tracestate
            .as_deref()
            .and_then(|s| s.parse::<TraceState>().ok())
            .unwrap_or(TraceState::NONE);
        cx.with_remote_span_context(up.context.to_span_context(state))
    }

    fn fields(&self) -> FieldIter<'_> {
        static FIELDS: std::sync::LazyLock<[String; 2]> =
            std::sync::LazyLock::new(|| [TRACEPARENT.to_owned(), TRACESTATE.to_owned()]);
        FieldIter::new(&*FIELDS)
    }
}

/// W3C trace context on an [`http::HeaderMap`] (feature `http`).
#[cfg(feature = "http")]
pub mod http_headers {
    use super::{extract_with, Upstream, TRACEPARENT, TRACESTATE};
    use crate::error::TraceparentError;
    use crate::PropagateContext;
    use http::header::{HeaderMap, HeaderValue};

    /// The upstream a request's headers name: `Ok(None)` without a `traceparent`; an error for
    /// one that is not valid W3C (not text, bad format or version, zero ids), with which the
    /// request is best traced as a new root. A `tracestate` that is not text is left out.
    pub fn extract(headers: &HeaderMap) -> Result<Option<Upstream>, TraceparentError> {
        if headers
            .get(TRACEPARENT)
            .is_some_and(|v| v.to_str().is_err())
        {
            return Err(TraceparentError::Format);
        }
        extract_with(|k| headers.get(k).and_then(|v| v.to_str().ok()))
    }

    /// Sets `traceparent` (from `ctx`) and, when given and a valid header value, `tracestate`
    /// on `headers`, replacing what they held.
    pub fn inject(ctx: &PropagateContext, tracestate: Option<&str>, headers: &mut HeaderMap) {
        // A traceparent is ASCII hex and dashes: always a valid header value.
        if let Ok(v) = HeaderValue::from_str(&ctx.to_traceparent()) {
            headers.insert(TRACEPARENT, v);
        }
        headers.remove(TRACESTATE);
        if let Some(v) = tracestate.and_then(|s| HeaderValue::from_str(s).ok()) {
            headers.insert(TRACESTATE, v);
        }
    }
}
