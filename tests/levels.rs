//! Trace levels: names above the process level record nothing, the level changes at run time
//! from any thread, and a slice open across a change is recorded whole or not at all, in both
//! directions.

mod common;

use common::*;
use slicetrace::{name, End, Name, Rid};
use std::time::Duration;

static DECODE_LOOP: Name = Name::with_level("decode_loop", 3);
static FORWARD: Name = Name::with_level("forward", 2);
static DETAIL: Name = Name::with_level("detail", 4);

/// A session at `level`, put back to the default when the test is over.
fn at_level(level: u8) -> (Session, Reset) {
    let s = session_with(|c| c.level(level));
    assert_eq!(slicetrace::level(), level);
    (s, Reset)
}

struct Reset;

impl Drop for Reset {
    fn drop(&mut self) {
        slicetrace::set_level(slicetrace::limits::DEFAULT_PROCESS_LEVEL);
    }
}

fn pause() {
    std::thread::sleep(Duration::from_millis(3));
}

#[test]
fn names_above_the_level_record_nothing_and_a_change_on_any_thread_applies_at_once() {
    let (mut s, _reset) = at_level(2);
    let rid = slicetrace::req_start("r-levels", None);
    slicetrace::slice_start(&FORWARD, rid);
    slicetrace::slice_start(&DECODE_LOOP, rid);
    slicetrace::event(name!("kv_cache", level = 3), rid);
    slicetrace::slice_end(&DECODE_LOOP, rid, End::PLAIN);
    slicetrace::event(name!("scheduled"), rid);
    slicetrace::slice_end(&FORWARD, rid, End::PLAIN);
    // Skipped, and with nothing of its level open, skipped without a count: the calls after the
    // rise must not go on skipping it so.
    slicetrace::slice_start(&DETAIL, rid);
    slicetrace::slice_end(&DETAIL, rid, End::PLAIN);
    // Another thread raises it: this thread's next call records.
    std::thread::spawn(|| slicetrace::set_level(4))
        .join()
        .unwrap();
    slicetrace::slice_start(&DETAIL, rid);
    slicetrace::slice_end(&DETAIL, rid, End::PLAIN);
    std::thread::spawn(|| slicetrace::set_level(0))
        .join()
        .unwrap();
    // Level 0: even default-level names are left out, the request still traced.
    slicetrace::slice_start(name!("prefill"), rid);
    slicetrace::slice_end(name!("prefill"), rid, End::PLAIN);
    slicetrace::req_finish(rid);
    let (t, stats) = s.finish();
    t.assert_well_formed();
    assert!(t.named("decode_loop").is_empty(), "{}", t.names());
    assert!(t.named("prefill").is_empty(), "{}", t.names());
    let forward = t.one("forward");
    assert_eq!(t.child_names(forward), Vec::<String>::new());
    let events: Vec<_> = forward.events.iter().map(|e| e.name.as_ref()).collect();
    assert_eq!(events, ["scheduled"]);
    assert_eq!(
        t.one("detail").span_context.trace_id(),
        forward.span_context.trace_id()
    );
    assert_eq!(stats.level_ends_discarded, 0);
    assert_eq!(stats.end_without_start, 0);
}

#[test]
fn a_level_set_before_the_session_holds_in_it() {
    let mut s = session_with(|c| {
        slicetrace::set_level(2);
        c
    });
    let _reset = Reset;
    let rid = slicetrace::req_start("r-set-before", None);
    for _ in 0..3 {
        slicetrace::slice_start(&DECODE_LOOP, rid);
        slicetrace::slice_end(&DECODE_LOOP, rid, End::PLAIN);
        slicetrace::slice_start(&FORWARD, rid);
        slicetrace::slice_end(&FORWARD, rid, End::PLAIN);
    }
    slicetrace::set_level(3);
    slicetrace::slice_start(&DECODE_LOOP, rid);
    slicetrace::slice_end(&DECODE_LOOP, rid, End::PLAIN);
    slicetrace::req_finish(rid);
    let (t, stats) = s.finish();
    t.assert_well_formed();
    assert_eq!(t.named("forward").len(), 3, "{}", t.names());
    assert_eq!(t.named("decode_loop").len(), 1, "{}", t.names());
    assert_eq!(stats.level_ends_discarded, 0);
}

#[test]
fn slices_left_open_in_one_session_do_not_count_in_the_next() {
    {
        let (mut s, _reset) = at_level(3);
        let rid = slicetrace::req_start("r-left-open", None);
        // Never ended: closed with the session, unfinished.
        slicetrace::slice_start(&DECODE_LOOP, rid);
        slicetrace::slice_start_anon(rid);
        let (_, stats) = s.finish();
        assert_eq!(stats.slices_unfinished, 2, "{stats:?}");
    }
    // On the same thread, a session whose level is below `decode_loop`'s: its slices are
    // skipped whole, as on a thread that never ran, not taken for ends of the old ones.
    let (mut s, _reset) = at_level(2);
    let rid = slicetrace::req_start("r-next", None);
    for _ in 0..3 {
        slicetrace::slice_start(&DECODE_LOOP, rid);
        slicetrace::slice_end(&DECODE_LOOP, rid, End::PLAIN);
    }
    slicetrace::slice_start(&FORWARD, rid);
    slicetrace::slice_end(&FORWARD, rid, End::PLAIN);
    slicetrace::req_finish(rid);
    let (t, stats) = s.finish();
    assert!(t.named("decode_loop").is_empty(), "{}", t.names());
    assert_eq!(t.named("forward").len(), 1, "{}", t.names());
    assert_eq!(stats.level_ends_discarded, 0, "{stats:?}");
    assert_eq!(stats.end_without_start, 0, "{stats:?}");
}

#[test]
fn a_slice_started_before_the_level_went_down_still_ends_at_its_end() {
    let (mut s, _reset) = at_level(3);
    let rid = slicetrace::req_start("r-down", None);
    slicetrace::slice_start(&FORWARD, rid);
    slicetrace::slice_start(&DECODE_LOOP, rid);
    slicetrace::set_level(1);
    // Started and ended below the new level: neither recorded.
    slicetrace::slice_start(&DETAIL, rid);
    slicetrace::slice_end(&DETAIL, rid, End::PLAIN);
    pause();
    slicetrace::slice_end(&DECODE_LOOP, rid, End::PLAIN);
    pause();
    slicetrace::slice_end(&FORWARD, rid, End::PLAIN);
    slicetrace::req_finish(rid);
    let (t, stats) = s.finish();
    t.assert_well_formed();
    let (forward, decode) = (t.one("forward"), t.one("decode_loop"));
    assert!(!unfinished(forward) && !unfinished(decode), "{}", t.names());
    assert!(!is_error(forward) && !is_error(decode));
    assert_eq!(parent(decode), sid(forward));
    // Each ended at its own end, the inner one first.
    assert!(nanos(decode.end_time) < nanos(forward.end_time));
    assert!(t.named("detail").is_empty());
    assert_eq!(stats.slices_unfinished, 0);
    assert_eq!(stats.end_without_start, 0);
}

#[test]
fn a_slice_skipped_before_the_level_went_up_does_not_end_another() {
    let (mut s, _reset) = at_level(1);
    let rid = slicetrace::req_start("r-up", None);
    slicetrace::slice_start(name!("request_stage"), rid);
    slicetrace::slice_start(&DECODE_LOOP, rid);
    slicetrace::set_level(3);
    // Its end is recorded now, but names no slice open: discarded, and `request_stage` ends at
    // its own end, not at this one.
    slicetrace::slice_end(&DECODE_LOOP, rid, End::PLAIN);
    let inner_end = std::time::SystemTime::now();
    pause();
    slicetrace::slice_start(&DECODE_LOOP, rid);
    slicetrace::slice_end(&DECODE_LOOP, rid, End::PLAIN);
    slicetrace::slice_end(name!("request_stage"), rid, End::PLAIN);
    slicetrace::req_finish(rid);
    let (t, stats) = s.finish();
    t.assert_well_formed();
    let stage = t.one("request_stage");
    assert!(!unfinished(stage) && !is_error(stage), "{}", t.names());
    assert!(nanos(stage.end_time) > nanos(inner_end));
    // The one recorded whole is there, under it.
    let decode = t.one("decode_loop");
    assert_eq!(parent(decode), sid(stage));
    assert_eq!(stats.level_ends_discarded, 1);
    assert_eq!(stats.end_without_start, 0);
    assert_eq!(stats.name_mismatches, 0);
}

/// A decode loop of batches: the level goes down while each request has the anonymous slice
/// the last batch opened, and back up again.
#[test]
fn batches_close_their_slices_when_the_level_goes_down_and_resume_when_it_rises() {
    let (mut s, _reset) = at_level(3);
    let rids: Vec<Rid> = (0..3)
        .map(|i| slicetrace::req_start(format!("r-batch-{i}").as_str(), None))
        .collect();
    for &r in &rids {
        slicetrace::slice_start_anon(r);
    }
    let step = |finished: bool| {
        let batch: Vec<(Rid, bool)> = rids.iter().map(|&r| (r, finished)).collect();
        slicetrace::slice_batch(&DECODE_LOOP, &batch);
    };
    step(false);
    step(false);
    slicetrace::set_level(2);
    // Closes the three slices the last batch opened, then records nothing.
    step(false);
    step(false);
    step(false);
    slicetrace::set_level(3);
    // Ends slices no batch opened (discarded), and opens the next ones.
    step(false);
    step(true);
    for &r in &rids {
        slicetrace::req_finish(r);
    }
    let (t, stats) = s.finish();
    t.assert_well_formed();
    let decode = t.named("decode_loop");
    // Per request: the first slice, the two after it, and the one after the level rose.
    assert_eq!(decode.len(), 3 * 4, "{}", t.names());
    assert!(decode.iter().all(|s| !unfinished(s) && !is_error(s)));
    assert_eq!(stats.level_ends_discarded, 3);
    assert_eq!(stats.end_without_start, 0);
    assert_eq!(stats.slices_unfinished, 0);
}
