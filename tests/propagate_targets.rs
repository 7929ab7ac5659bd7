//! `propagate_context` names the sender's request span and the slice a receiver links to,
//! computed on the calling thread; these tests check each answer against the spans the drainer
//! exports for the same records.

mod common;

use common::*;
use slicetrace::{name, End, Rid};

#[test]
fn link_targets_the_outermost_open_slice() {
    let mut s = session();
    let rid = slicetrace::req_start("p-open", None);
    slicetrace::slice_start(name!("outer"), rid);
    slicetrace::slice_start(name!("inner"), rid);
    let ctx = slicetrace::propagate_context(rid).unwrap();
    slicetrace::slice_end(name!("inner"), rid, End::PLAIN);
    slicetrace::slice_end(name!("outer"), rid, End::PLAIN);
    slicetrace::req_finish(rid);
    let (t, stats) = s.finish();
    assert_eq!(ctx.link_span_id(), Some(sid(t.one("outer"))));
    assert_eq!(ctx.parent_span_id(), sid(t.one(" Req p-open")));
    assert_eq!(ctx.trace_id(), tid(t.one(" Req p-open")));
    assert_eq!(stats.propagations, 1);
}

#[test]
fn link_targets_the_last_top_level_slice_when_none_is_open() {
    let mut s = session();
    let rid = slicetrace::req_start("p-closed", None);
    assert_eq!(
        slicetrace::propagate_context(rid).unwrap().link_span_id(),
        None
    );
    for _ in 0..3 {
        slicetrace::slice_start(name!("step"), rid);
        slicetrace::slice_end(name!("step"), rid, End::PLAIN);
    }
    let ctx = slicetrace::propagate_context(rid).unwrap();
    slicetrace::slice_start(name!("last"), rid);
    slicetrace::slice_end(name!("last"), rid, End::THREAD_FINISH);
    let after_finish = slicetrace::propagate_context(rid).unwrap();
    slicetrace::req_finish(rid);
    assert_eq!(slicetrace::propagate_context(rid), None, "finished here");
    let (t, _) = s.finish();
    let steps = t.named("step");
    assert_eq!(ctx.link_span_id(), Some(sid(steps[2])));
    assert_eq!(after_finish.link_span_id(), Some(sid(t.one("last"))));
}

#[test]
fn link_targets_the_anonymous_slice_a_batch_opened() {
    let mut s = session();
    let rids: Vec<Rid> = (0..7u64)
        .map(|i| {
            let r = slicetrace::req_start(500 + i, None);
            slicetrace::slice_start_anon(r);
            r
        })
        .collect();
    let batch: Vec<(Rid, bool)> = rids.iter().map(|r| (*r, false)).collect();
    slicetrace::slice_batch(name!("decode"), &batch);
    slicetrace::slice_batch(name!("decode"), &batch);
    let ctxs: Vec<_> = rids
        .iter()
        .map(|r| slicetrace::propagate_context(*r).unwrap())
        .collect();
    for r in &rids {
        slicetrace::slice_end(name!("detokenize"), *r, End::PLAIN);
        slicetrace::req_finish(*r);
    }
    let (t, _) = s.finish();
    for (ctx, r) in ctxs.iter().zip(&rids) {
        let target = t
            .find(ctx.link_span_id().unwrap())
            .expect("link target exported");
        assert_eq!(target.name, "detokenize", "request {}", r.0);
        assert_eq!(tid(target), ctx.trace_id());
        let decodes: Vec<_> = t
            .named("decode")
            .into_iter()
            .filter(|d| tid(d) == ctx.trace_id())
            .collect();
        assert_eq!(decodes.len(), 2);
        assert_eq!(links(target), [sid(decodes[1])]);
    }
}

#[test]
fn a_thread_that_joined_propagates_onward_under_the_same_request_span() {
    let mut s = session();
    let rid = slicetrace::req_start("p-chain", None);
    let first = slicetrace::propagate_context(rid).unwrap();
    let second = std::thread::spawn(move || {
        slicetrace::set_propagate_context(rid, &first);
        slicetrace::slice_start(name!("schedule"), rid);
        let ctx = slicetrace::propagate_context(rid).unwrap();
        slicetrace::slice_end(name!("schedule"), rid, End::THREAD_FINISH);
        ctx
    })
    .join()
    .unwrap();
    std::thread::spawn(move || {
        slicetrace::set_propagate_context(rid, &second);
        slicetrace::slice_start(name!("detokenize"), rid);
        slicetrace::slice_end(name!("detokenize"), rid, End::THREAD_FINISH);
    })
    .join()
    .unwrap();
    slicetrace::req_finish(rid);
    let (t, _) = s.finish();
    let req = t.one(" Req p-chain");
    assert_eq!(second.parent_span_id(), sid(req));
    assert_eq!(second.link_span_id(), Some(sid(t.one("schedule"))));
    assert_eq!(links(t.one("detokenize")), [sid(t.one("schedule"))]);
    assert_eq!(t.children(req).len(), 3, "{}", t.names());
}

#[test]
fn a_thread_that_only_sliced_the_request_finds_it_in_the_process_directory() {
    let mut s = session();
    let rid = slicetrace::req_start("p-else", None);
    // Handed to another thread of this process without a context, as a rid alone.
    let (ctx, bare) = std::thread::spawn(move || {
        let bare = slicetrace::propagate_context(rid).unwrap();
        slicetrace::slice_start(name!("sliced here"), rid);
        let ctx = slicetrace::propagate_context(rid).unwrap();
        slicetrace::slice_end(name!("sliced here"), rid, End::THREAD_FINISH);
        (ctx, bare)
    })
    .join()
    .unwrap();
    std::thread::spawn(move || {
        slicetrace::set_propagate_context(rid, &ctx);
        slicetrace::slice_start(name!("received"), rid);
        slicetrace::slice_end(name!("received"), rid, End::THREAD_FINISH);
    })
    .join()
    .unwrap();
    slicetrace::req_finish(rid);
    let after = std::thread::spawn(move || slicetrace::propagate_context(rid))
        .join()
        .unwrap();
    assert_eq!(after, None, "finished requests leave the directory");
    let (t, stats) = s.finish();
    let req = t.one(" Req p-else");
    assert_eq!(bare.parent_span_id(), sid(req));
    assert_eq!(bare.trace_id(), tid(req));
    assert_eq!(
        bare.link_span_id(),
        None,
        "nothing sliced on that thread yet"
    );
    assert_eq!(ctx.link_span_id(), Some(sid(t.one("sliced here"))));
    assert_eq!(links(t.one("received")), [sid(t.one("sliced here"))]);
    assert_eq!(stats.propagate_unknown, 1);
}

/// A request arriving from an HTTP gateway with a W3C `traceparent` joins the gateway's trace,
/// and calls made on its behalf carry a `traceparent` naming its request span.
#[test]
fn a_request_joins_the_trace_of_an_upstream_traceparent() {
    let mut s = session();
    let gateway = slicetrace::PropagateContext::from_traceparent(
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    )
    .unwrap();
    let rid = slicetrace::options::req_start_with(
        "p-gateway",
        slicetrace::options::ReqStart {
            parent: Some(&gateway),
            ..Default::default()
        },
    );
    slicetrace::slice_start(name!("tokenize"), rid);
    slicetrace::slice_end(name!("tokenize"), rid, End::PLAIN);
    let onward = slicetrace::propagate_context(rid).unwrap().to_traceparent();
    slicetrace::req_finish(rid);
    let (t, _) = s.finish();
    // The gateway's span is the room span's parent; the request span hangs under the room.
    let req = t.one(" Req p-gatewa");
    let room = t.one("Bootstrap Room 0x0");
    assert_eq!(tid(req), 0x0af7651916cd43dd8448eb211c80319c);
    assert_eq!(parent(room), 0xb7ad6b7169203331);
    assert!(room.parent_span_is_remote);
    assert_eq!(parent(req), sid(room));
    assert!(!req.parent_span_is_remote);
    assert_eq!(
        onward,
        format!("00-0af7651916cd43dd8448eb211c80319c-{:016x}-01", sid(req))
    );
    assert!(t.spans.iter().all(|sp| tid(sp) == tid(req)));
}

/// The gateway's `tracestate` stays on every span of the request; a malformed one is refused
/// and counted, and the request is traced all the same.
#[test]
fn an_upstream_tracestate_is_kept_on_the_requests_spans() {
    let mut s = session();
    let gateway = slicetrace::PropagateContext::from_traceparent(
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    )
    .unwrap();
    let good_state = "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE";
    for (rid, state) in [("good-state", good_state), ("bad-state", "no spaces=x y")] {
        let r = slicetrace::options::req_start_with(
            rid,
            slicetrace::options::ReqStart {
                parent: Some(&gateway),
                tracestate: Some(state),
                ..Default::default()
            },
        );
        slicetrace::slice_start(name!("work"), r);
        slicetrace::slice_end(name!("work"), r, End::PLAIN);
        slicetrace::req_finish(r);
    }
    let (t, stats) = s.finish();
    assert_eq!(stats.tracestate_refused, 1);
    assert_eq!(t.spans.len(), 8);
    for sp in &t.spans {
        // The request span the span belongs to: up from a slice or thread span, down from the
        // room span above it (whose parent is the gateway's, not exported).
        let mut req = sp;
        while !req.name.starts_with(" Req ") {
            req = match t.find(parent(req)) {
                Some(p) => p,
                None => t.children(req)[0],
            };
        }
        let header = sp.span_context.trace_state().header();
        match req.name.as_ref() {
            " Req good-sta" => assert_eq!(header, good_state, "{}", sp.name),
            " Req bad-stat" => assert_eq!(header, "", "{}", sp.name),
            other => panic!("{other}"),
        }
    }
}

/// A sender's tracestate passed to `set_propagate_context_with` stays on the joined request's
/// spans; one too long or malformed is refused and counted, and the request is traced the same.
#[test]
fn a_tracestate_given_with_a_propagated_context_is_kept_or_counted() {
    let mut s = session();
    // A context from another process (a traceparent carries no slicetrace process tag).
    let sender = slicetrace::PropagateContext::from_traceparent(
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    )
    .unwrap();
    let long = format!("k={}", "v".repeat(600));
    for (rid, state) in [
        ("joined-good", "rojo=00f067aa0ba902b7"),
        ("joined-bad", "no spaces=x y"),
        ("joined-long", long.as_str()),
    ] {
        let r = slicetrace::Rid::from(rid);
        slicetrace::options::set_propagate_context_with(rid, &sender, Some(state));
        slicetrace::slice_start(name!("work"), r);
        if rid == "joined-good" {
            assert_eq!(
                slicetrace::options::propagate_tracestate(r).as_deref(),
                Some(state)
            );
        }
        slicetrace::slice_end(name!("work"), r, End::THREAD_FINISH);
    }
    let (t, stats) = s.finish();
    assert_eq!(stats.tracestate_refused, 2);
    // Joined: a thread span under the sender's request span, and its slice; no request span.
    assert_eq!(t.spans.len(), 6, "{}", t.names());
    for sp in &t.spans {
        let header = sp.span_context.trace_state().header();
        let mut top = sp;
        while let Some(p) = t.find(parent(top)) {
            top = p;
        }
        assert_eq!(parent(top), 0xb7ad6b7169203331, "{}", top.name);
        let slice = t.children(top)[0];
        let want = if attr(slice, "rid").map(|v| v.to_string()).as_deref() == Some("joined-good") {
            "rojo=00f067aa0ba902b7"
        } else {
            ""
        };
        assert_eq!(header, want, "{} under {}", sp.name, top.name);
    }
}

/// The context for another node names the request's bootstrap room span; a `req_start` under it
/// (the decode node's) hangs its request span there, beside the first, with no room span of its
/// own, and its first slice links to the sender's slice.
#[test]
fn a_context_for_another_node_names_the_room_span() {
    let mut s = session();
    let prefill = slicetrace::req_start("p-room-prefill", Some(0x77));
    slicetrace::slice_start(name!("route"), prefill);
    let ctx = slicetrace::options::propagate_context_for_room(prefill).unwrap();
    let in_node = slicetrace::propagate_context(prefill).unwrap();
    slicetrace::slice_end(name!("route"), prefill, End::PLAIN);
    assert!(ctx.names_room() && !in_node.names_room());
    // Through bytes, as it travels.
    let ctx = slicetrace::PropagateContext::from_bytes(&ctx.to_bytes()).unwrap();
    assert!(ctx.names_room());
    let decode = slicetrace::options::req_start_with(
        "p-room-decode",
        slicetrace::options::ReqStart {
            bootstrap_room: Some(0x77),
            parent: Some(&ctx),
            ..Default::default()
        },
    );
    slicetrace::slice_start(name!("decode"), decode);
    slicetrace::slice_end(name!("decode"), decode, End::PLAIN);
    slicetrace::req_finish(decode);
    slicetrace::req_finish(prefill);
    let (t, _) = s.finish();
    let room = t.one("Bootstrap Room 0x77");
    assert_eq!(ctx.parent_span_id(), sid(room));
    assert_eq!(in_node.parent_span_id(), sid(t.one(" Req p-room-p")));
    let decode_req = t.one(" Req p-room-d");
    assert_eq!(parent(decode_req), sid(room));
    assert!(decode_req.parent_span_is_remote);
    assert_eq!(tid(decode_req), tid(room));
    assert_eq!(links(t.one("decode")), [sid(t.one("route"))]);
    // One room span for both: the decode request opened none.
    assert_eq!(t.starting_with("Bootstrap Room").len(), 1);
}
