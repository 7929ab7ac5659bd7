//! Names made at run time past the process's bound (docs/api.md, "Defined outcomes"). A test
//! binary of its own: it fills the process's name table, which other tests must not share.

mod common;

use common::*;
use slicetrace::limits::{MAX_INTERNED_NAMES, OVERFLOW_NAME};
use slicetrace::{name, Attr, End, Name};

#[test]
fn past_the_bound_new_names_are_recorded_as_the_overflow_name_and_counted() {
    let mut s = session();
    let kept = Name::intern("stage-kept-before-the-bound");
    let before = slicetrace::stats().names_interned as usize;
    for i in before..MAX_INTERNED_NAMES {
        Name::intern(&format!("filler-{i}"));
    }
    assert_eq!(
        slicetrace::stats().names_interned as usize,
        MAX_INTERNED_NAMES
    );
    assert_eq!(slicetrace::stats().names_refused, 0);

    let rid = slicetrace::req_start("r-names", None);
    let over = Name::intern("stage-per-request-0001");
    assert_eq!(over.as_str(), OVERFLOW_NAME);
    slicetrace::slice_start(over, rid);
    slicetrace::slice_add_attr(
        rid,
        &[Attr::new(Name::intern("key-per-request-0001"), 7i64)],
    );
    slicetrace::slice_end(Name::intern("stage-per-request-0001"), rid, End::PLAIN);
    // A name interned before the bound, and a static declared in the code, keep their text.
    slicetrace::slice_start(Name::intern("stage-kept-before-the-bound"), rid);
    slicetrace::slice_end(kept, rid, End::PLAIN);
    slicetrace::slice_start(name!("stage-static-after-the-bound"), rid);
    slicetrace::slice_end(name!("stage-static-after-the-bound"), rid, End::PLAIN);
    slicetrace::req_finish(rid);
    let (t, stats) = s.finish();

    assert_eq!(stats.names_refused, 3);
    assert_eq!(stats.names_interned as usize, MAX_INTERNED_NAMES);
    let over = t.one(OVERFLOW_NAME);
    assert!(
        !is_error(over),
        "start and end both named the overflow name: they match"
    );
    assert_eq!(attr(over, OVERFLOW_NAME), Some(7i64.into()));
    t.one("stage-kept-before-the-bound");
    t.one("stage-static-after-the-bound");
}
