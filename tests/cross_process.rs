//! Two processes, one trace: the parent sends `PropagateContext` bytes over a pipe to a child
//! process (this test binary, run again), and the spans of both join up.

mod common;

use common::*;
use slicetrace::{name, End, PropagateContext};
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Stdio};

const RID: &str = "b7e1c0d2f3a4-cross";

/// The child's side, started by `spans_of_two_processes_form_one_trace`.
#[test]
#[ignore = "a child process of spans_of_two_processes_form_one_trace"]
fn child_process_side() {
    common::child::expect_started_as("child_process_side");
    let mut bytes = [0u8; slicetrace::limits::CONTEXT_LEN];
    std::io::stdin().read_exact(&mut bytes).unwrap();
    let ctx = PropagateContext::from_bytes(&bytes).unwrap();
    let mut s = session();
    slicetrace::set_thread_info("scheduler", Some(0), None);
    let rid = slicetrace::Rid::from(RID);
    slicetrace::set_propagate_context(RID, &ctx);
    slicetrace::slice_start(name!("prefill"), rid);
    slicetrace::slice_end(name!("prefill"), rid, End::THREAD_FINISH);
    let (t, _) = s.finish();
    let mut out = std::io::stdout().lock();
    for sp in &t.spans {
        let l: Vec<String> = links(sp).iter().map(|l| format!("{l:016x}")).collect();
        writeln!(
            out,
            "SPAN {:032x} {:016x} {:016x} {} {}|{}",
            tid(sp),
            sid(sp),
            parent(sp),
            sp.parent_span_is_remote,
            l.join(","),
            sp.name
        )
        .unwrap();
    }
}

/// The child's whole standard output, once it has exited having passed its one test.
fn read_all(child: &mut Child) -> String {
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(child.wait().unwrap().success(), "child failed: {out}");
    common::child::assert_ran_one(&out);
    out
}

struct Remote {
    trace: u128,
    span: u64,
    parent: u64,
    parent_remote: bool,
    links: Vec<u64>,
    name: String,
}

fn parse(line: &str) -> Option<Remote> {
    // libtest's own "test … " may share the line: look for the marker anywhere.
    let rest = &line[line.find("SPAN ")? + 5..];
    let (head, name) = rest.split_once('|')?;
    let f: Vec<&str> = head.split(' ').collect();
    Some(Remote {
        trace: u128::from_str_radix(f[0], 16).ok()?,
        span: u64::from_str_radix(f[1], 16).ok()?,
        parent: u64::from_str_radix(f[2], 16).ok()?,
        parent_remote: f[3] == "true",
        links: f[4]
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|s| u64::from_str_radix(s, 16).unwrap())
            .collect(),
        name: name.to_owned(),
    })
}

#[test]
fn spans_of_two_processes_form_one_trace() {
    let mut s = session();
    slicetrace::set_thread_info("tokenizer", None, None);
    let rid = slicetrace::req_start(RID, None);
    slicetrace::slice_start(name!("tokenize"), rid);
    let ctx = slicetrace::propagate_context(rid).unwrap();
    slicetrace::slice_end(name!("tokenize"), rid, End::PLAIN);

    let mut child = common::child::command("child_process_side")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&ctx.to_bytes())
        .unwrap();
    let out = read_all(&mut child);
    let remote: Vec<Remote> = out.lines().filter_map(parse).collect();
    slicetrace::req_finish(rid);
    let (t, _) = s.finish();

    let req = t.one(" Req b7e1c0d2");
    let tokenize = t.one("tokenize");
    // The child joined the request: its thread span hangs under this process's request span,
    // and it exports no request span of its own.
    assert_eq!(remote.len(), 2, "child's thread and slice spans");
    let by = |n: &str| remote.iter().find(|r| r.name.starts_with(n)).unwrap();
    let child_thread = by("scheduler [TP 0]");
    let prefill = by("prefill");
    for r in &remote {
        assert_eq!(r.trace, tid(req), "{} is in the parent's trace", r.name);
    }
    assert_eq!(
        child_thread.parent,
        sid(req),
        "the child's thread span hangs under the parent's request span"
    );
    assert!(child_thread.parent_remote);
    assert_eq!(prefill.parent, child_thread.span);
    assert_eq!(
        prefill.links,
        [sid(tokenize)],
        "linked to the sender's slice"
    );
    let all: std::collections::HashSet<u64> = t
        .spans
        .iter()
        .map(sid)
        .chain(remote.iter().map(|r| r.span))
        .collect();
    assert_eq!(
        all.len(),
        t.spans.len() + remote.len(),
        "no span id repeats"
    );
}

const GATEWAY_TRACESTATE: &str = "gw=7f3a,vendor=c2";

/// The child's side of the tracestate test: reads the context bytes, then the tracestate line.
#[test]
#[ignore = "a child process of the_gateways_tracestate_crosses_to_the_next_process"]
fn tracestate_child_side() {
    common::child::expect_started_as("tracestate_child_side");
    let mut stdin = BufReader::new(std::io::stdin());
    let mut bytes = [0u8; slicetrace::limits::CONTEXT_LEN];
    stdin.read_exact(&mut bytes).unwrap();
    let mut state = String::new();
    stdin.read_line(&mut state).unwrap();
    let ctx = PropagateContext::from_bytes(&bytes).unwrap();
    let mut s = session();
    let rid = slicetrace::Rid::from("state-rid");
    slicetrace::options::set_propagate_context_with("state-rid", &ctx, Some(state.trim_end()));
    slicetrace::slice_start(name!("prefill"), rid);
    // What this process would pass on to the next one.
    println!(
        "ONWARD {}",
        slicetrace::options::propagate_tracestate(rid).unwrap_or_default()
    );
    slicetrace::slice_end(name!("prefill"), rid, End::THREAD_FINISH);
    let (t, _) = s.finish();
    for sp in &t.spans {
        println!(
            "STATE {}|{}",
            sp.span_context.trace_state().header(),
            sp.name
        );
    }
}

/// A gateway's tracestate reaches every span of the request in a second slicetrace process,
/// sent alongside the fixed-size context.
#[test]
fn the_gateways_tracestate_crosses_to_the_next_process() {
    let mut s = session();
    let gateway = PropagateContext::from_traceparent(
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    )
    .unwrap();
    let rid = slicetrace::options::req_start_with(
        "state-rid",
        slicetrace::options::ReqStart {
            parent: Some(&gateway),
            tracestate: Some(GATEWAY_TRACESTATE),
            ..Default::default()
        },
    );
    slicetrace::slice_start(name!("tokenize"), rid);
    let ctx = slicetrace::propagate_context(rid).unwrap();
    let state = slicetrace::options::propagate_tracestate(rid);
    assert_eq!(state.as_deref(), Some(GATEWAY_TRACESTATE));
    slicetrace::slice_end(name!("tokenize"), rid, End::PLAIN);

    let mut child = common::child::command("tracestate_child_side")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&ctx.to_bytes()).unwrap();
    writeln!(stdin, "{}", state.unwrap()).unwrap();
    drop(stdin);
    let out = read_all(&mut child);
    let lines: Vec<&str> = out.lines().collect();
    slicetrace::req_finish(rid);
    let (t, stats) = s.finish();
    assert_eq!(stats.tracestate_refused, 0);
    for sp in &t.spans {
        assert_eq!(sp.span_context.trace_state().header(), GATEWAY_TRACESTATE);
    }
    let find = |tag: &str| -> Vec<String> {
        lines
            .iter()
            .filter_map(|l| l.find(tag).map(|i| l[i + tag.len()..].to_owned()))
            .collect()
    };
    assert_eq!(find("ONWARD "), [GATEWAY_TRACESTATE]);
    let child_spans = find("STATE ");
    // The joined child's thread span and its slice.
    assert_eq!(child_spans.len(), 2, "{lines:?}");
    for l in &child_spans {
        assert!(l.starts_with(&format!("{GATEWAY_TRACESTATE}|")), "{l}");
    }
}
