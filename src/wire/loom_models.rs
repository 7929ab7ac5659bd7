//! Model checks of the ring and of its hand-over between owners, under every interleaving loom
//! explores. The hand-over models drive the registry's own claim, detach, visit and end.

use super::ownership::{Lease, Registry};
use super::ring::{ring, test_record as rec};
use loom::sync::Arc;
use loom::thread;

#[test]
fn loom_every_record_arrives_once_in_order_or_is_counted() {
    loom::model(|| {
        let (mut p, mut c) = ring(2);
        let gauge = c.gauge();
        let producer = thread::spawn(move || {
            let mut pushed = 0;
            for v in 0..3 {
                if p.push(rec(v)) {
                    pushed += 1;
                }
            }
            pushed
        });
        let mut got = Vec::new();
        let mut out = Vec::new();
        for _ in 0..2 {
            out.clear();
            c.drain_into(&mut out, usize::MAX);
            got.extend(out.iter().map(|r| r.value));
        }
        let pushed = producer.join().unwrap();
        out.clear();
        c.drain_into(&mut out, usize::MAX);
        got.extend(out.iter().map(|r| r.value));
        assert_eq!(got.len() as u64, pushed);
        assert_eq!(pushed + gauge.dropped(), 3);
        assert!(got.windows(2).all(|w| w[0] < w[1]));
    });
}

#[test]
fn loom_multi_record_push_is_seen_whole() {
    loom::model(|| {
        let (mut p, mut c) = ring(4);
        let producer = thread::spawn(move || {
            p.push_all(&[rec(1), rec(2), rec(3)]);
        });
        let mut out = Vec::new();
        c.drain_into(&mut out, usize::MAX);
        assert!(out.is_empty() || out.len() == 3);
        producer.join().unwrap();
        c.drain_into(&mut out, usize::MAX);
        assert_eq!(out.iter().map(|r| r.value).collect::<Vec<_>>(), [1, 2, 3]);
    });
}

/// What one visit drained: `(ring, owner at the visit, values)`, and whether it freed the ring.
fn visit(reg: &Registry, lease: &mut Lease, seen: &mut Vec<(u32, u32, u64)>) -> bool {
    let mut v = reg.visit(lease);
    if v.pending() > 0 {
        let (index, owner) = (v.slot().index, v.slot().owner());
        let mut out = Vec::new();
        v.drain_into(&mut out, v.pending() as usize);
        seen.extend(out.iter().map(|r| (index, owner, r.value)));
    }
    v.end()
}

/// Every ring the registry has, each lent once.
fn lend_all(reg: &Registry, leases: &mut Vec<Lease>) {
    let mut slots = Vec::new();
    reg.snapshot(&mut slots);
    for s in &slots[leases.len()..] {
        leases.push(s.lend_consumer().expect("not lent yet"));
    }
}

/// Three threads, each through the registry's locks and atomics, make too many interleavings
/// to visit all; those with at most this many preemptions are where an ordering bug shows.
const HAND_OVER_PREEMPTIONS: usize = 3;

/// A thread exits while the next one starts and the drainer sweeps: the exiting owner's
/// records are all drained, under its tenure, before its ring is freed; the next owner of that
/// ring (or of a new one) writes after them; nothing is lost or seen twice.
#[test]
fn loom_ring_hand_over_never_mixes_owners() {
    let mut model = loom::model::Builder::new();
    model.preemption_bound = Some(HAND_OVER_PREEMPTIONS);
    model.check(|| {
        let reg = Arc::new(Registry::new());
        reg.set_drainer_live(true);
        let mut claim = reg.claim(4);
        let mut leases = Vec::new();
        lend_all(&reg, &mut leases);
        let r1 = reg.clone();
        let first = thread::spawn(move || {
            assert!(claim.producer.push(rec(11)));
            assert!(claim.producer.push(rec(12)));
            r1.detach(&claim.slot, claim.producer);
        });
        let r2 = reg.clone();
        let second = thread::spawn(move || {
            let mut c = r2.claim(4);
            assert!(c.producer.push(rec(21)));
            (c.slot.index, c.owner)
        });
        let mut seen = Vec::new();
        for _ in 0..2 {
            if visit(&reg, &mut leases[0], &mut seen) {
                assert_eq!(
                    seen,
                    [(0, 1, 11), (0, 1, 12)],
                    "the first owner's records, whole, before freeing"
                );
            }
        }
        first.join().unwrap();
        let (ring, owner) = second.join().unwrap();
        lend_all(&reg, &mut leases);
        for l in &mut leases {
            visit(&reg, l, &mut seen);
        }
        seen.sort_by_key(|s| s.0);
        let want: &[(u32, u32, u64)] = if ring == 0 {
            assert_eq!(owner, 2);
            &[(0, 1, 11), (0, 1, 12), (0, 2, 21)]
        } else {
            &[(0, 1, 11), (0, 1, 12), (1, 1, 21)]
        };
        assert_eq!(seen, want);
    });
}

/// With no drainer, a starting thread takes the detached ring straight from the exiting one.
#[test]
fn loom_ring_hand_over_without_a_drainer() {
    loom::model(|| {
        let reg = Arc::new(Registry::new());
        let mut claim = reg.claim(4);
        let mut lease = claim.slot.lend_consumer().unwrap();
        let r1 = reg.clone();
        let first = thread::spawn(move || {
            assert!(claim.producer.push(rec(11)));
            r1.detach(&claim.slot, claim.producer);
        });
        let r2 = reg.clone();
        let second = thread::spawn(move || {
            let mut c = r2.claim(4);
            assert!(c.producer.push(rec(21)));
            c.slot.index
        });
        first.join().unwrap();
        let ring = second.join().unwrap();
        let mut seen = Vec::new();
        visit(&reg, &mut lease, &mut seen);
        let values: Vec<u64> = seen.iter().map(|s| s.2).collect();
        assert_eq!(values, if ring == 0 { vec![11, 21] } else { vec![11] });
    });
}
