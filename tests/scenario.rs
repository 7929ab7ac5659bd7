//! A tokenizer thread and two scheduler threads (TP 0 and 1) serve two requests: nested and
//! anonymous slices, auto_next_anon, a batched decode loop and thread_finish. The whole tree is
//! asserted.

mod common;

use common::*;
use slicetrace::{name, End, PropagateContext, Rid};
use std::sync::mpsc;

const REQS: [(&str, usize); 2] = [("req-alpha", 2), ("req-beta", 3)];

fn scheduler(tp: u32, rx: mpsc::Receiver<(Rid, [u8; slicetrace::limits::CONTEXT_LEN])>) {
    slicetrace::set_thread_info("scheduler", Some(tp), Some(0));
    let mut live = Vec::new();
    for _ in 0..REQS.len() {
        let (rid, bytes) = rx.recv().unwrap();
        let ctx = PropagateContext::from_bytes(&bytes).unwrap();
        slicetrace::set_propagate_context(rid, &ctx);
        slicetrace::slice_start_anon(rid);
        slicetrace::slice_end(name!("queue wait"), rid, End::AUTO_NEXT_ANON);
        live.push(rid);
    }
    for &rid in &live {
        slicetrace::slice_end(name!("prefill"), rid, End::AUTO_NEXT_ANON);
    }
    // The decode loop: every step ends each live request's slice as "decode".
    for step in 1..=3 {
        let batch: Vec<(Rid, bool)> = REQS
            .iter()
            .filter(|(_, steps)| step <= *steps)
            .map(|(rid, steps)| (Rid::from(*rid), step == *steps))
            .collect();
        slicetrace::slice_batch(name!("decode"), &batch);
    }
}

#[test]
fn tokenizer_and_two_tp_schedulers_serve_two_requests() {
    let mut s = session();
    let (txs, workers): (Vec<_>, Vec<_>) = (0..2u32)
        .map(|tp| {
            let (tx, rx) = mpsc::channel();
            (tx, std::thread::spawn(move || scheduler(tp, rx)))
        })
        .unzip();

    slicetrace::set_thread_info("tokenizer", None, None);
    for (rid_text, _) in REQS {
        let rid = slicetrace::req_start(rid_text, Some(7));
        slicetrace::slice_start(name!("tokenize"), rid);
        slicetrace::slice_start(name!("encode"), rid);
        slicetrace::slice_end(name!("encode"), rid, End::PLAIN);
        let ctx = slicetrace::propagate_context(rid).unwrap();
        slicetrace::slice_end(name!("tokenize"), rid, End::PLAIN);
        for tx in &txs {
            tx.send((rid, ctx.to_bytes())).unwrap();
        }
    }
    for w in workers {
        w.join().unwrap();
    }
    for (rid_text, _) in REQS {
        slicetrace::req_finish(Rid::from(rid_text));
    }
    let (t, stats) = s.finish();

    // Per request: its room span, request span, 3 thread spans, tokenize, encode, and per TP
    // queue wait, prefill, decode × steps.
    let expected: usize = REQS.iter().map(|(_, steps)| 7 + 2 * (2 + steps)).sum();
    assert_eq!(t.spans.len(), expected, "{}", t.names());
    assert_eq!(stats.slices_unfinished, 0);
    assert_eq!(stats.end_without_start + stats.name_mismatches, 0);
    assert_eq!(stats.records_written, stats.records_read);
    assert_eq!(stats.records_dropped_ring_full, 0);

    let mut traces = std::collections::HashSet::new();
    for (rid_text, steps) in REQS {
        let req = t.one(&format!(" Req {}", &rid_text[..8]));
        let room = t.find(parent(req)).expect("the request's room span");
        assert_eq!(room.name, "Bootstrap Room 0x7");
        assert_eq!(parent(room), 0);
        assert!(traces.insert(tid(req)), "each request is its own trace");
        let threads = t.children(req);
        let names: Vec<_> = threads.iter().map(|s| s.name.to_string()).collect();
        assert_eq!(threads.len(), 3, "{names:?}");
        assert!(names[0].starts_with("tokenizer(host:"), "{names:?}");

        let tok = threads[0];
        assert_eq!(t.child_names(tok), ["tokenize"]);
        let tokenize = t.children(tok)[0];
        assert_eq!(t.child_names(tokenize), ["encode"]);
        assert!(
            links(t.children(tokenize)[0]).is_empty(),
            "nested slices get no link"
        );

        for tp in 0..2 {
            let th = threads
                .iter()
                .find(|s| s.name.starts_with(&format!("scheduler [TP {tp}] (host:")))
                .unwrap_or_else(|| panic!("TP {tp} in {names:?}"));
            let mut want = vec!["queue wait", "prefill"];
            want.extend(std::iter::repeat_n("decode", steps));
            let slices = t.children(th);
            assert_eq!(t.child_names(th), want, "TP {tp} of {rid_text}");
            assert_eq!(
                links(slices[0]),
                [sid(tokenize)],
                "first slice links to the sender"
            );
            for w in slices.windows(2) {
                assert_eq!(links(w[1]), [sid(w[0])]);
                assert_eq!(w[0].end_time, w[1].start_time);
            }
            assert_eq!(
                th.end_time,
                slices.last().unwrap().end_time,
                "the finishing batch ended the thread span"
            );
            assert!(th.end_time <= req.end_time);
        }
    }
}
