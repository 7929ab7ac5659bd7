//! The `tracing` layer: spans and events of a request recorded as its async slices, with their
//! fields; targets chosen; requests started under OpenTelemetry's current context.
#![cfg(feature = "tracing")]

mod common;

use common::*;
use opentelemetry::Value;
use slicetrace::layer::SliceLayer;
use slicetrace::{name, InSlice, PropagateContext};
use std::time::Duration;
use tracing::instrument::WithSubscriber;
use tracing_subscriber::layer::SubscriberExt;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap()
}

#[tracing::instrument(target = "gateway", skip_all, fields(rid = rid, model = "m1"))]
async fn route(rid: u64, attempt: i64) {
    tracing::info!(target: "gateway", worker = 3i64, "picked a worker");
    tracing::Span::current().record("model", "m2");
    tokio::time::sleep(Duration::from_millis(1)).await;
    pick(attempt).await;
}

#[tracing::instrument(target = "gateway::pick", skip_all, fields(attempt = attempt))]
async fn pick(attempt: i64) {
    tokio::task::yield_now().await;
    // An async slice started while the span is entered nests under it.
    async {
        // Inside the async slice, not just the span around it.
        tracing::info!(target: "gateway", "connecting");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    .in_slice(name!("connect"), slicetrace::Rid(41))
    .await;
    noise().await;
}

/// A target the layer is not given: not recorded, but its children still find the request.
#[tracing::instrument(target = "hyper", skip_all)]
async fn noise() {
    tracing::info_span!(target: "gateway", "write_body")
        .in_scope(|| tracing::info!(target: "gateway", bytes = 10i64, "flushed"));
}

#[test]
fn spans_of_a_request_are_its_async_slices_with_their_fields() {
    let mut s = session();
    let subscriber =
        tracing_subscriber::registry().with(SliceLayer::new().with_targets(["gateway"]));
    let dispatch = tracing::Dispatch::new(subscriber);
    let rid = slicetrace::req_start(41u64, None);
    let rt = runtime();
    rt.block_on(WithSubscriber::with_subscriber(
        async {
            tokio::spawn(route(41, 2).with_current_subscriber())
                .await
                .unwrap()
        },
        dispatch,
    ));
    drop(rt);
    slicetrace::req_finish(rid);
    let (trace, stats) = s.finish();
    assert_eq!(stats.end_without_start, 0, "{stats:?}");
    assert_eq!(stats.slices_unfinished, 0, "{stats:?}");
    let req = trace.starting_with(" Req 41")[0];
    let route = trace.one("route");
    assert_eq!(parent(route), sid(req));
    // The request's `rid`, as every slice carries it; the field is not repeated.
    let rids: Vec<_> = route
        .attributes
        .iter()
        .filter(|kv| kv.key.as_str() == "rid")
        .collect();
    assert_eq!(rids.len(), 1);
    assert_eq!(
        attr(route, "rid").map(|v| v.to_string()),
        Some("41".to_owned())
    );
    // The field as made, and as recorded later.
    let models: Vec<String> = route
        .attributes
        .iter()
        .filter(|kv| kv.key.as_str() == "model")
        .map(|kv| kv.value.to_string())
        .collect();
    assert_eq!(models, ["m1", "m2"]);
    let ev = &route.events.events;
    assert_eq!(ev.len(), 1, "{ev:?}");
    let ev_attr = |k: &str| {
        ev[0]
            .attributes
            .iter()
            .find(|kv| kv.key.as_str() == k)
            .map(|kv| kv.value.clone())
    };
    assert_eq!(ev_attr("worker"), Some(Value::I64(3)));
    assert_eq!(
        ev_attr("message").map(|v| v.to_string()),
        Some("picked a worker".to_owned())
    );
    let pick = trace.one("pick");
    assert_eq!(parent(pick), sid(route));
    assert_eq!(attr(pick, "attempt"), Some(Value::I64(2)));
    let connect = trace.one("connect");
    assert_eq!(parent(connect), sid(pick));
    assert_eq!(
        connect.events.events.len(),
        1,
        "{:?}",
        connect.events.events
    );
    assert!(pick.events.events.is_empty(), "{:?}", pick.events.events);
    // `noise` (target hyper) is not recorded; the span inside it hangs under `pick`.
    assert!(trace.named("noise").is_empty(), "{}", trace.names());
    let body = trace.one("write_body");
    assert_eq!(parent(body), sid(pick));
    assert_eq!(body.events.events.len(), 1);
}

#[test]
fn spans_outside_any_request_record_nothing() {
    let mut s = session();
    let subscriber = tracing_subscriber::registry().with(SliceLayer::new());
    tracing::subscriber::with_default(subscriber, || {
        tracing::info_span!("startup").in_scope(|| tracing::info!("ready"));
    });
    let (trace, stats) = s.finish();
    assert!(trace.spans.is_empty(), "{}", trace.names());
    assert_eq!(stats.records_written, 0, "{stats:?}");
}

#[test]
fn a_span_carrying_the_rid_starts_the_request_under_opentelemetrys_current_context() {
    let mut s = session();
    let upstream = PropagateContext::from_traceparent(
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    )
    .unwrap();
    let subscriber = tracing_subscriber::registry().with(
        SliceLayer::new()
            .rid_field("request_id")
            .starting_requests(),
    );
    tracing::subscriber::with_default(subscriber, || {
        let _cx = upstream.to_otel_context().attach();
        let handle = tracing::info_span!("handle", request_id = "gw-7");
        handle.in_scope(|| {
            tracing::info_span!("parse").in_scope(|| ());
        });
        drop(handle);
    });
    let (trace, stats) = s.finish();
    assert_eq!(stats.requests_started, 1, "{stats:?}");
    assert_eq!(stats.requests_finished, 1, "{stats:?}");
    let req = trace.starting_with(" Req gw-7")[0];
    assert_eq!(tid(req), 0x0af7651916cd43dd8448eb211c80319c);
    assert_eq!(parent(req), 0xb7ad6b7169203331);
    let handle = trace.one("handle");
    assert_eq!(parent(handle), sid(req));
    assert_eq!(parent(trace.one("parse")), sid(handle));
    assert!(trace.spans.iter().all(|s| tid(s) == tid(req)));
}

#[test]
fn guards_dropped_out_of_order_leave_no_request_behind() {
    let mut s = session();
    let subscriber = tracing_subscriber::registry().with(SliceLayer::new());
    let rid = slicetrace::req_start(77u64, None);
    tracing::subscriber::with_default(subscriber, || {
        let a = tracing::info_span!("outer", rid = 77u64).entered();
        let b = tracing::info_span!("inner").entered();
        // Dropped in the order they were made, as two fields of a struct are.
        drop(a);
        drop(b);
        // Outside both: of no request.
        tracing::info_span!("after").in_scope(|| tracing::info!("x"));
        // And a second layer in the same subscriber takes nothing twice.
        let twice = tracing_subscriber::registry()
            .with(SliceLayer::new())
            .with(SliceLayer::new());
        tracing::subscriber::with_default(twice, || {
            tracing::info_span!("once", rid = 77u64).in_scope(|| ());
        });
    });
    slicetrace::req_finish(rid);
    let (trace, stats) = s.finish();
    assert_eq!(stats.end_without_start, 0, "{stats:?}");
    assert!(trace.named("after").is_empty(), "{}", trace.names());
    assert_eq!(parent(trace.one("inner")), sid(trace.one("outer")));
    assert_eq!(trace.named("once").len(), 1, "{}", trace.names());
}
