//! One request traced across two threads, and the check of what a collector decoded of it:
//! names, parents, links, attributes and resource.

use super::rotel::Span;
use slicetrace::{name, End, Rid};

/// A tokenizer thread hands a request to a scheduler thread (TP 1) with its context.
pub fn trace_one_request() {
    slicetrace::set_thread_info("tokenizer", None, None);
    let rid = slicetrace::req_start("0fa1c9e2d3b4-otlp", Some(42));
    slicetrace::slice_start(name!("tokenize"), rid);
    let ctx = slicetrace::propagate_context(rid).unwrap();
    slicetrace::slice_end(name!("tokenize"), rid, End::PLAIN);
    std::thread::spawn(move || {
        slicetrace::set_thread_info("scheduler", Some(1), Some(0));
        slicetrace::set_propagate_context(rid, &ctx);
        slicetrace::slice_start_anon(rid);
        slicetrace::slice_end(name!("prefill"), rid, End::AUTO_NEXT_ANON);
        slicetrace::slice_batch(name!("decode"), &[(rid, false)]);
        slicetrace::slice_batch(name!("decode"), &[(rid, true)]);
    })
    .join()
    .unwrap();
    slicetrace::req_finish(Rid::from("0fa1c9e2d3b4-otlp"));
}

pub fn check(spans: &[Span]) {
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(spans.len(), 8, "{names:?}");
    let one = |prefix: &str| {
        let v: Vec<&Span> = spans
            .iter()
            .filter(|s| s.name.starts_with(prefix))
            .collect();
        assert_eq!(v.len(), 1, "{prefix} in {names:?}");
        v[0]
    };
    let req = one(" Req 0fa1c9e2");
    let room = one("Bootstrap Room 0x2a");
    let tok_thread = one("tokenizer(host:");
    let sched_thread = one("scheduler [TP 1] (host:");
    let exact = |name: &str| {
        let v: Vec<&Span> = spans.iter().filter(|s| s.name == name).collect();
        assert_eq!(v.len(), 1, "{name} in {names:?}");
        v[0]
    };
    let tokenize = exact("tokenize");
    let prefill = exact("prefill");
    let decodes: Vec<&Span> = spans.iter().filter(|s| s.name == "decode").collect();
    assert_eq!(decodes.len(), 2);

    assert!(
        spans.iter().all(|s| s.trace_id == req.trace_id),
        "one trace"
    );
    assert_eq!(req.trace_id.len(), 32);
    assert_eq!(room.parent_id, "", "the room span is the root");
    assert_eq!(room.kind, "SPAN_KIND_INTERNAL");
    assert_eq!(room.attr("bootstrap_room"), Some("Str(0x2a)"));
    assert_eq!(req.parent_id, room.id);
    assert_eq!(req.kind, "SPAN_KIND_INTERNAL");
    assert_eq!(req.attr("rid"), Some("Str(0fa1c9e2d3b4-otlp)"));
    assert_eq!(req.attr("bootstrap_room"), None);
    assert_eq!(req.resource_attr("service.name"), Some("Str(otlp-test)"));
    assert!(req.resource_attr("process.pid").is_some());
    assert!(req.resource_attr("host.name").is_some());
    assert_eq!(
        req.resource_attr("telemetry.sdk.language"),
        Some("Str(rust)")
    );

    assert_eq!(tok_thread.parent_id, req.id);
    assert_eq!(sched_thread.parent_id, req.id);
    assert_eq!(sched_thread.attr("thread_label"), Some("Str(scheduler)"));
    assert_eq!(sched_thread.attr("tp_rank"), Some("Int(1)"));
    assert_eq!(sched_thread.attr("dp_rank"), Some("Int(0)"));
    assert!(sched_thread.attr("thread.id").is_some());

    assert_eq!(tokenize.parent_id, tok_thread.id);
    assert!(tokenize.links.is_empty());
    assert_eq!(prefill.parent_id, sched_thread.id);
    assert_eq!(
        prefill.links,
        [tokenize.id.as_str()],
        "linked to the sender's slice"
    );
    assert_eq!(decodes[0].links, [prefill.id.as_str()]);
    assert_eq!(decodes[1].links, [decodes[0].id.as_str()]);
    let mut ids: Vec<&str> = spans.iter().map(|s| s.id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), spans.len(), "span ids are unique");
}
