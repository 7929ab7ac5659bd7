//! One test per code example of the reference's documentation (`sglang-request-tracing.md`),
//! each asserting the whole tree it produces.

mod common;

use common::*;
use opentelemetry::Value;
use slicetrace::{name, End, Rid};

const RID: &str = "5d8f3a2be1c94f0aa7e3";

/// "Every thread involved in tracing … should execute trace_set_thread_info(label, tp, dp)",
/// and trace_req_start / trace_req_finish mark the request (examples 1 and 2).
#[test]
fn init_thread_info_and_request_span() {
    let mut s = session();
    slicetrace::set_thread_info("tokenizer", Some(1), Some(2));
    let rid = slicetrace::req_start(RID, Some(0xabc));
    // FNV-1a 64 of the text, then the splitmix64 finaliser (`Rid::from_str_id`).
    assert_eq!(rid, Rid(0x3233_cd87_d37d_906d));
    slicetrace::req_finish(rid);
    let (t, stats) = s.finish();
    assert_eq!(t.spans.len(), 3, "{}", t.names());
    // The room span is the root, with the room in hex; the request span hangs under it.
    let room = t.one("Bootstrap Room 0xabc");
    assert_eq!(parent(room), 0, "the room span is a root");
    assert_eq!(attr(room, "bootstrap_room"), Some(Value::from("0xabc")));
    let req = t.one(" Req 5d8f3a2b");
    assert_eq!(parent(req), sid(room));
    assert_eq!(
        (req.start_time, req.end_time),
        (room.start_time, room.end_time)
    );
    assert_eq!(attr(req, "rid"), Some(Value::from(RID)));
    assert_eq!(attr(req, "bootstrap_room"), None);
    assert!(!is_error(req));

    let threads = t.starting_with("tokenizer [TP 1] (host:");
    assert_eq!(threads.len(), 1, "{}", t.names());
    let th = threads[0];
    assert_eq!(parent(th), sid(req));
    assert_eq!(tid(th), tid(req));
    let os_tid = match attr(th, "pid") {
        Some(Value::I64(v)) => v,
        other => panic!("pid attribute: {other:?}"),
    };
    assert!(
        th.name.ends_with(&format!(" | pid:{os_tid})")),
        "{}",
        th.name
    );
    assert_eq!(attr(th, "thread_label"), Some(Value::from("tokenizer")));
    assert_eq!(attr(th, "tp_rank"), Some(Value::I64(1)));
    assert_eq!(attr(th, "dp_rank"), Some(Value::I64(2)));
    assert_eq!(attr(th, "thread.id"), Some(Value::I64(os_tid)));
    assert!(attr(th, "host_id").is_some());
    assert!(attr(th, "thread.name").is_some());
    assert_eq!(
        th.end_time, req.end_time,
        "req_finish ends the thread span too"
    );
    assert_eq!(stats.requests_started, 1);
    assert_eq!(stats.requests_finished, 1);
    assert_eq!(stats.records_written, stats.records_read);
}

/// trace_slice_start("slice A", rid); trace_slice_end("slice A", rid)
#[test]
fn named_slice() {
    let mut s = session();
    slicetrace::set_thread_info("scheduler", Some(0), None);
    let rid = slicetrace::req_start(RID, None);
    slicetrace::slice_start(name!("slice A"), rid);
    slicetrace::slice_end(name!("slice A"), rid, End::PLAIN);
    slicetrace::req_finish(rid);
    let (t, _) = s.finish();

    let req = t.one(" Req 5d8f3a2b");
    let th = t.children(req);
    assert_eq!(th.len(), 1);
    assert_eq!(t.child_names(th[0]), ["slice A"]);
    let a = t.one("slice A");
    assert!(links(a).is_empty(), "the first slice has nothing before it");
    assert!(!is_error(a));
    assert!(th[0].start_time <= a.start_time && a.end_time <= th[0].end_time);
}

/// trace_slice_start("", rid, anonymous=True); trace_slice_end("slice A", rid)
#[test]
fn anonymous_slice_is_named_at_its_end() {
    let mut s = session();
    let rid = slicetrace::req_start(RID, None);
    slicetrace::slice_start_anon(rid);
    slicetrace::slice_end(name!("slice A"), rid, End::PLAIN);
    slicetrace::req_finish(rid);
    let (t, _) = s.finish();

    let a = t.one("slice A");
    assert!(!is_error(a));
    let th = t.find(parent(a)).unwrap();
    assert_eq!(parent(th), sid(t.one(" Req 5d8f3a2b")));
}

/// The auto_next_anon chain: start anonymous, then end A, B, C with auto_next_anon, then D.
#[test]
fn auto_next_anon_chains_slices_back_to_back() {
    let mut s = session();
    let rid = slicetrace::req_start(RID, None);
    slicetrace::slice_start_anon(rid);
    slicetrace::slice_end(name!("slice A"), rid, End::AUTO_NEXT_ANON);
    slicetrace::slice_end(name!("slice B"), rid, End::AUTO_NEXT_ANON);
    slicetrace::slice_end(name!("slice C"), rid, End::AUTO_NEXT_ANON);
    slicetrace::slice_end(name!("slice D"), rid, End::PLAIN);
    slicetrace::req_finish(rid);
    let (t, stats) = s.finish();

    let th = t.find(parent(t.one("slice A"))).unwrap();
    assert_eq!(
        t.child_names(th),
        ["slice A", "slice B", "slice C", "slice D"]
    );
    let chain: Vec<_> = ["slice A", "slice B", "slice C", "slice D"]
        .iter()
        .map(|n| t.one(n))
        .collect();
    assert!(links(chain[0]).is_empty());
    for w in chain.windows(2) {
        assert_eq!(
            links(w[1]),
            [sid(w[0])],
            "{} links to {}",
            w[1].name,
            w[0].name
        );
        assert_eq!(
            w[0].end_time, w[1].start_time,
            "one instant ends one and opens the next"
        );
    }
    assert_eq!(stats.slices_unfinished, 0);
}

/// trace_slice_end("slice D", rid, thread_finish_flag=True) ends the thread span there.
#[test]
fn thread_finish_ends_the_thread_span_at_the_slice_end() {
    let mut s = session();
    let rid = slicetrace::req_start(RID, None);
    slicetrace::slice_start(name!("slice D"), rid);
    slicetrace::slice_end(name!("slice D"), rid, End::THREAD_FINISH);
    std::thread::sleep(std::time::Duration::from_millis(2));
    slicetrace::req_finish(rid);
    let (t, _) = s.finish();

    let d = t.one("slice D");
    let th = t.find(parent(d)).unwrap();
    assert_eq!(th.end_time, d.end_time);
    let req = t.one(" Req 5d8f3a2b");
    assert!(
        req.end_time > th.end_time,
        "the request lives on after the thread finished"
    );
    assert_eq!(t.spans.len(), 4);
}

/// Sender: ctx = trace_get_proc_propagate_context(rid); receiver (another thread here):
/// trace_set_proc_propagate_context(rid, ctx). The receiver's thread span hangs under the
/// request, and its first slice links to the sender's slice.
#[test]
fn propagation_to_another_thread() {
    let mut s = session();
    slicetrace::set_thread_info("tokenizer", None, None);
    let rid = slicetrace::req_start(RID, None);
    slicetrace::slice_start(name!("tokenize"), rid);
    let ctx = slicetrace::propagate_context(rid).expect("context of a started request");
    slicetrace::slice_end(name!("tokenize"), rid, End::PLAIN);
    let bytes = ctx.to_bytes();

    std::thread::spawn(move || {
        slicetrace::set_thread_info("scheduler", Some(0), None);
        let ctx = slicetrace::PropagateContext::from_bytes(&bytes).unwrap();
        slicetrace::set_propagate_context(RID, &ctx);
        slicetrace::slice_start(name!("prefill"), rid);
        slicetrace::slice_end(name!("prefill"), rid, End::THREAD_FINISH);
    })
    .join()
    .unwrap();
    slicetrace::req_finish(rid);
    let (t, _) = s.finish();

    let req = t.one(" Req 5d8f3a2b");
    let tok = t.one("tokenize");
    let prefill = t.one("prefill");
    assert_eq!(ctx.trace_id(), tid(req));
    assert_eq!(ctx.parent_span_id(), sid(req));
    assert_eq!(ctx.link_span_id(), Some(sid(tok)));
    assert_eq!(links(prefill), [sid(tok)]);
    let sched = t.find(parent(prefill)).unwrap();
    assert!(sched.name.starts_with("scheduler [TP 0]"), "{}", sched.name);
    assert_eq!(parent(sched), sid(req));
    let threads = t.children(req);
    assert_eq!(threads.len(), 2, "{}", t.names());
    assert_eq!(
        t.spans.iter().filter(|s| tid(s) == tid(req)).count(),
        t.spans.len()
    );
}

/// The three-level design: one request, scheduler threads tp 0 and tp 1, each a "prefill".
#[test]
fn three_level_context_tree() {
    let mut s = session();
    let rid = slicetrace::req_start("req-123", None);
    let ctx = slicetrace::propagate_context(rid).unwrap();
    let workers: Vec<_> = (0..2u32)
        .map(|tp| {
            std::thread::spawn(move || {
                slicetrace::set_thread_info("scheduler", Some(tp), None);
                slicetrace::set_propagate_context(rid, &ctx);
                slicetrace::slice_start(name!("prefill"), rid);
                slicetrace::slice_end(name!("prefill"), rid, End::PLAIN);
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    slicetrace::req_finish(rid);
    let (t, _) = s.finish();

    let req = t.one(" Req req-123");
    let names = t.child_names(req);
    assert_eq!(names.len(), 3, "{names:?}");
    for tp in 0..2 {
        let th = t.starting_with(&format!("scheduler [TP {tp}]"));
        assert_eq!(th.len(), 1);
        assert_eq!(parent(th[0]), sid(req));
        assert_eq!(t.child_names(th[0]), ["prefill"]);
    }
    assert_eq!(t.named("prefill").len(), 2);
}
