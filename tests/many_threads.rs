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
        // Room for every record a thread writes, and for every span in the export queue, so no
        // drop is possible whatever the schedule.
        c.ring_capacity = 1 << 16;
        c.export_queue_batches = 4 * (THREADS * REQUESTS) as usize;
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
    assert_eq!(stats.spans_exported, 4 * total as u64);

    let mut per_request: HashMap<u128, [u32; 4]> = HashMap::new();
    for sp in &t.spans {
        let slot = if sp.name == "work" {
            0
        } else if sp.name.starts_with(" Req ") {
            1
        } else if sp.name == "Bootstrap Room 0x0" {
            2
        } else {
            3
        };
        per_request.entry(tid(sp)).or_default()[slot] += 1;
    }
    assert_eq!(per_request.len(), total, "one trace per request");
    assert!(per_request.values().all(|c| *c == [1, 1, 1, 1]));
    // Each request span is named and attributed by its integer rid, every rid once.
    let requests = t.starting_with(" Req ");
    assert_eq!(requests.len(), total);
    let mut rids: Vec<u64> = requests
        .iter()
        .map(|s| {
            let Some(Value::String(v)) = attr(s, "rid") else {
                panic!("{} has no rid attribute", s.name)
            };
            let short: String = v.as_str().chars().take(8).collect();
            assert_eq!(s.name, format!(" Req {short}"));
            v.as_str().parse().unwrap()
        })
        .collect();
    rids.sort_unstable();
    let mut sent: Vec<u64> = (0..THREADS)
        .flat_map(|t| (0..REQUESTS).map(move |i| (t << 32) | i))
        .collect();
    sent.sort_unstable();
    let first_difference = rids.iter().zip(&sent).position(|(a, b)| a != b);
    assert_eq!(
        first_difference, None,
        "the request spans' rids are those sent"
    );
}

#[test]
fn short_lived_threads_reuse_rings_without_mixing_records() {
    let mut s = session();
    let rid = slicetrace::req_start("churn", None);
    let ctx = slicetrace::propagate_context(rid).unwrap();
    let mut tids = Vec::new();
    for i in 0..300u32 {
        let h = std::thread::spawn(move || {
            slicetrace::set_thread_info("worker", Some(i), None);
            slicetrace::set_propagate_context(rid, &ctx);
            slicetrace::slice_start(name!("short"), rid);
            slicetrace::slice_end(name!("short"), rid, End::THREAD_FINISH);
        });
        tids.push(h.join().map(|_| i).unwrap());
        if i % 50 == 49 {
            // Let the drainer free the exited threads' rings, as it does every sweep once it
            // has read them: a burst may outrun it (and make rings of its own), the next one
            // finds them free. On a loaded machine a fixed pause was not always enough.
            let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
            loop {
                let st = slicetrace::stats();
                if st.records_read >= st.records_written || std::time::Instant::now() > until {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
    slicetrace::req_finish(rid);
    let (t, stats) = s.finish();
    let req = t.one(" Req churn");
    let threads = t.children(req);
    assert_eq!(
        threads.len(),
        301,
        "one span per thread, plus the starting thread's"
    );
    for i in tids {
        let th: Vec<_> = threads
            .iter()
            .filter(|s| s.name.starts_with(&format!("worker [TP {i}] ")))
            .collect();
        assert_eq!(th.len(), 1, "TP {i}");
        assert_eq!(
            t.child_names(th[0]),
            ["short"],
            "TP {i} holds only its own slice"
        );
        assert_eq!(attr(th[0], "tp_rank"), Some(Value::I64(i as i64)));
    }
    assert!(
        stats.rings < 60,
        "rings are reused after their threads exit: {} rings for 300 threads",
        stats.rings
    );
    assert_eq!(stats.records_read, stats.records_written);
}
