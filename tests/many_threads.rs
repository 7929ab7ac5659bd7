//! 8 threads × 10 000 requests: every slice exported exactly once, none lost or duplicated.

mod common;

use common::*;
use opentelemetry::Value;
use slicetrace::{name, End, Rid};
use std::collections::HashMap;

const THREADS: u64 = 8;
const REQUESTS: u64 = 10_000;

#[test]
fn every_slice_is_exported_exactly_once() {
    let mut s = session_with(|mut c| {
        // Room for every record a thread writes, so no drop is possible whatever the schedule.
        c.ring_capacity = 1 << 16;
        c
    });
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            std::thread::spawn(move || {
                slicetrace::set_thread_info("worker", Some(t as u32), None);
                for i in 0..REQUESTS {
                    let rid = Rid((t << 32) | i);
                    slicetrace::req_start(rid, None);
                    slicetrace::slice_start(name!("work"), rid);
                    slicetrace::slice_end(name!("work"), rid, End::PLAIN);
                    slicetrace::req_finish(rid);
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let (t, stats) = s.finish();

    let total = (THREADS * REQUESTS) as usize;
    assert_eq!(stats.records_dropped_ring_full, 0);
    // Four records a request, and one per thread for set_thread_info.
    assert_eq!(stats.records_written, 4 * total as u64 + THREADS);
    assert_eq!(stats.records_read, stats.records_written);
    assert_eq!(stats.requests_finished, total as u64);
    assert_eq!(stats.spans_exported, 3 * total as u64);

    let mut per_request: HashMap<u128, [u32; 3]> = HashMap::new();
    for sp in &t.spans {
        let slot = if sp.name == "work" {
            0
        } else if sp.name.starts_with("Req ") {
            1
        } else {
            2
        };
        per_request.entry(tid(sp)).or_default()[slot] += 1;
    }
    assert_eq!(per_request.len(), total, "one trace per request");
    assert!(per_request.values().all(|c| *c == [1, 1, 1]));
    let mut rids: Vec<i64> = t
        .named("Req")
        .iter()
        .chain(t.starting_with("Req ").iter())
        .filter_map(|s| match attr(s, "rid") {
            Some(Value::String(v)) => v.as_str().parse().ok(),
            _ => None,
        })
        .collect();
    rids.sort();
    rids.dedup();
    assert_eq!(rids.len(), total);
}
