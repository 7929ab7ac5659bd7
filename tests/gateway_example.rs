//! `examples/gateway.rs` end to end against the collector: a client's trace through the async
//! gateway (its async slices and `tracing` spans) into the worker process's scheduler slices.
#![cfg(all(feature = "tracing", feature = "http"))]

mod common;

use common::rotel::{Rotel, Span};
use std::collections::HashMap;
use std::process::Command;

const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

/// The example's binary, which `cargo test` builds beside this test's.
fn example() -> std::path::PathBuf {
    let me = std::env::current_exe().unwrap();
    let dir = me.parent().and_then(|d| d.parent()).unwrap();
    dir.join("examples").join("gateway")
}

#[test]
fn one_trace_from_the_clients_span_to_the_workers_decode_slices() {
    if !common::rotel::installed() {
        panic!("rotel is not installed: `bash scripts/test` installs it");
    }
    let rotel = Rotel::start();
    let requests = 4;
    let out = Command::new(example())
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &rotel.grpc)
        .env("GATEWAY_REQUESTS", requests.to_string())
        .output()
        .expect("the gateway example runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("200 OK")).count(),
        requests
    );
    // Per request: the gateway's request, thread, handle, route_and_forward, pick_worker and
    // forward spans; the worker's thread span, prefill and four decode slices.
    let spans = rotel.spans(12 * requests);
    assert_eq!(
        spans.len(),
        12 * requests,
        "{:#?}",
        spans.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
    assert!(
        spans.iter().all(|s| s.trace_id == CLIENT_TRACE),
        "a span outside the client's trace"
    );
    let by_id: HashMap<&str, &Span> = spans.iter().map(|s| (s.id.as_str(), s)).collect();
    let parent_of = |s: &Span| by_id.get(s.parent_id.as_str()).copied();
    for i in 0..requests {
        let rid = format!("Str(req-{i:04})");
        let mine: Vec<&Span> = spans
            .iter()
            .filter(|s| s.attr("rid") == Some(rid.as_str()))
            .collect();
        let one = |name: &str| {
            let found: Vec<_> = mine.iter().filter(|s| s.name == name).collect();
            assert_eq!(found.len(), 1, "{rid} {name}: {found:?}");
            *found[0]
        };
        let req = one(&format!("gateway Req req-{i:04}"));
        assert_eq!(
            req.parent_id, CLIENT_SPAN,
            "the request hangs under the client's span"
        );
        let handle = one("handle");
        assert_eq!(handle.parent_id, req.id);
        let route = one("route_and_forward");
        assert_eq!(route.parent_id, handle.id);
        assert_eq!(route.attr("prompt_bytes"), Some("Int(8)"));
        let pick = one("pick_worker");
        assert_eq!(pick.parent_id, route.id);
        let forward = one("forward");
        assert_eq!(forward.parent_id, route.id);
        // The worker's scheduler thread span hangs under the gateway's forwarding slice.
        let decodes: Vec<&&Span> = mine.iter().filter(|s| s.name == "decode").collect();
        assert_eq!(decodes.len(), 4, "{rid}");
        let prefill = one("prefill");
        let thread = parent_of(prefill).expect("prefill's thread span exported");
        assert!(
            thread.name.starts_with("scheduler [TP 0]"),
            "{}",
            thread.name
        );
        assert_eq!(
            thread.parent_id, forward.id,
            "{rid}: the worker under the forward slice"
        );
        assert_ne!(
            thread.resource_attr("process.pid"),
            forward.resource_attr("process.pid"),
            "the worker is another process"
        );
        // Each decode step links to the slice before it on the thread.
        let mut prev = prefill;
        let decodes: Vec<&Span> = decodes.into_iter().copied().collect();
        for _ in 0..4 {
            let next = decodes
                .iter()
                .find(|d| d.links.iter().any(|l| l.contains(&prev.id)))
                .unwrap_or_else(|| panic!("{rid}: no decode links to {}", prev.name));
            assert_eq!(next.parent_id, thread.id);
            prev = next;
        }
    }
}
