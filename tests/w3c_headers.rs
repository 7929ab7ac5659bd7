//! W3C trace context on `http::HeaderMap`, and through OpenTelemetry's propagator interface:
//! round trips, invalid headers, and interoperation with OpenTelemetry's own propagator.
#![cfg(feature = "http")]

mod common;

use common::*;
use http::{HeaderMap, HeaderValue};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TraceContextExt;
use slicetrace::error::TraceparentError;
use slicetrace::options::{req_start_with, ReqStart};
use slicetrace::w3c::{http_headers, W3cPropagator};
use slicetrace::PropagateContext;
use std::collections::HashMap;

const TP: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

fn headers(pairs: &[(&'static str, &[u8])]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(*k, HeaderValue::from_bytes(v).unwrap());
    }
    h
}

#[test]
fn headers_round_trip_with_their_tracestate() {
    let h = headers(&[
        ("traceparent", TP.as_bytes()),
        ("tracestate", b"vendor=a1,other=b"),
    ]);
    let up = http_headers::extract(&h).unwrap().unwrap();
    assert_eq!(up.context.trace_id(), 0x0af7651916cd43dd8448eb211c80319c);
    assert_eq!(up.context.parent_span_id(), 0xb7ad6b7169203331);
    assert!(up.context.is_sampled());
    assert_eq!(up.tracestate.as_deref(), Some("vendor=a1,other=b"));
    let mut out = headers(&[("traceparent", b"stale"), ("tracestate", b"stale=1")]);
    http_headers::inject(&up.context, up.tracestate.as_deref(), &mut out);
    assert_eq!(out.get_all("traceparent").iter().count(), 1);
    assert_eq!(out["traceparent"], TP);
    assert_eq!(out["tracestate"], "vendor=a1,other=b");
    // No tracestate given: the old one goes.
    http_headers::inject(&up.context, None, &mut out);
    assert!(out.get("tracestate").is_none());
    // One that cannot be a header value is left out.
    http_headers::inject(&up.context, Some("bad\nvalue"), &mut out);
    assert!(out.get("tracestate").is_none());
}

#[test]
fn invalid_headers_are_errors_and_missing_ones_none() {
    assert_eq!(http_headers::extract(&HeaderMap::new()), Ok(None));
    let cases: [(&[u8], TraceparentError); 4] = [
        (
            b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
            TraceparentError::Format,
        ),
        (
            b"ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            TraceparentError::Version,
        ),
        (
            b"00-00000000000000000000000000000000-b7ad6b7169203331-01",
            TraceparentError::ZeroId,
        ),
        (
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-0\u{e9}".as_bytes(),
            TraceparentError::Format,
        ),
    ];
    for (value, want) in cases {
        let got = http_headers::extract(&headers(&[("traceparent", value)]));
        assert_eq!(got, Err(want), "{}", String::from_utf8_lossy(value));
    }
}

#[test]
fn a_request_with_an_invalid_header_is_traced_as_a_new_root() {
    let mut s = session();
    for (rid, value) in [("good-1", TP.as_bytes()), ("bad-1", b"00-zz".as_slice())] {
        let h = headers(&[("traceparent", value)]);
        let parent = http_headers::extract(&h).ok().flatten().map(|u| u.context);
        let r = req_start_with(
            rid,
            ReqStart {
                parent: parent.as_ref(),
                no_room_span: true,
                ..ReqStart::default()
            },
        );
        slicetrace::req_finish(r);
    }
    let (trace, _) = s.finish();
    let good = trace.starting_with(" Req good-1")[0];
    assert_eq!(tid(good), 0x0af7651916cd43dd8448eb211c80319c);
    assert_eq!(parent(good), 0xb7ad6b7169203331);
    let bad = trace.starting_with(" Req bad-1")[0];
    assert_eq!(parent(bad), 0);
    assert_ne!(tid(bad), tid(good));
}

#[test]
fn the_propagator_interoperates_with_opentelemetrys_own() {
    let ctx = PropagateContext::from_traceparent(TP).unwrap();
    let theirs = opentelemetry_sdk::propagation::TraceContextPropagator::new();
    // Ours injects what theirs extracts, and the reverse.
    let mut carrier: HashMap<String, String> = HashMap::new();
    W3cPropagator.inject_context(&ctx.to_otel_context(), &mut carrier);
    assert_eq!(carrier["traceparent"], TP);
    let cx = theirs.extract(&carrier);
    let sc = cx.span().span_context().clone();
    assert_eq!(PropagateContext::from_span_context(&sc), Some(ctx));
    let mut back: HashMap<String, String> = HashMap::new();
    back.insert("traceparent".into(), TP.into());
    back.insert("tracestate".into(), "vendor=a1".into());
    let cx = W3cPropagator.extract(&back);
    let sc = cx.span().span_context().clone();
    assert!(sc.is_remote() && sc.is_sampled());
    assert_eq!(sc.trace_state().header(), "vendor=a1");
    let mut again: HashMap<String, String> = HashMap::new();
    theirs.inject_context(&cx, &mut again);
    assert_eq!(again, back);
    // An invalid traceparent leaves the context as it was.
    let mut bad: HashMap<String, String> = HashMap::new();
    bad.insert("traceparent".into(), "00-zz".into());
    let cx = W3cPropagator.extract(&bad);
    assert!(!cx.span().span_context().is_valid());
    let fields: Vec<&str> = W3cPropagator.fields().collect();
    assert_eq!(fields, ["traceparent", "tracestate"]);
}
