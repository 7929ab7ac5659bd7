//! Model checks of the ring protocol under every interleaving loom explores.

use crate::ring::{test_record as rec, Ring};
use loom::sync::Arc;
use loom::thread;

#[test]
fn loom_every_record_arrives_once_in_order_or_is_counted() {
    loom::model(|| {
        let ring = Arc::new(Ring::new(2));
        let r2 = ring.clone();
        let producer = thread::spawn(move || {
            let mut p = r2.producer();
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
            ring.drain_into(&mut out, usize::MAX);
            got.extend(out.iter().map(|r| r.value));
        }
        let pushed = producer.join().unwrap();
        out.clear();
        ring.drain_into(&mut out, usize::MAX);
        got.extend(out.iter().map(|r| r.value));
        assert_eq!(got.len() as u64, pushed);
        assert_eq!(pushed + ring.dropped(), 3);
        assert!(got.windows(2).all(|w| w[0] < w[1]));
    });
}

#[test]
fn loom_multi_record_push_is_seen_whole() {
    loom::model(|| {
        let ring = Arc::new(Ring::new(4));
        let r2 = ring.clone();
        let producer = thread::spawn(move || {
            let mut p = r2.producer();
            p.push_all(&[rec(1), rec(2), rec(3)]);
        });
        let mut out = Vec::new();
        ring.drain_into(&mut out, usize::MAX);
        assert!(out.is_empty() || out.len() == 3);
        producer.join().unwrap();
        ring.drain_into(&mut out, usize::MAX);
        assert_eq!(out.iter().map(|r| r.value).collect::<Vec<_>>(), [1, 2, 3]);
    });
}

/// The hand-over of a ring from a thread that exits to the next one, as `registry` and the
/// drainer do it: the exiting owner stores `DETACHED` (Release) after its last push; the drainer
/// loads the state (Acquire) before draining, and frees the ring (`FREE`, Release) only after a
/// drain that began having seen `DETACHED`; a new thread claims it by compare-and-swap `FREE` →
/// `OWNED` (Acquire). Checked: the drainer has every record of the first owner before the ring
/// is freed, the second owner's records follow them, none is lost or seen twice.
#[test]
fn loom_ring_hand_over_never_mixes_owners() {
    use loom::sync::atomic::{AtomicU32, Ordering};
    const FREE: u32 = 0;
    const OWNED: u32 = 1;
    const DETACHED: u32 = 2;
    loom::model(|| {
        let ring = Arc::new(Ring::new(4));
        let state = Arc::new(AtomicU32::new(OWNED));
        let (r1, s1) = (ring.clone(), state.clone());
        let first = thread::spawn(move || {
            let mut p = r1.producer();
            assert!(p.push(rec(11)));
            assert!(p.push(rec(12)));
            s1.store(DETACHED, Ordering::Release);
        });
        let (r2, s2) = (ring.clone(), state.clone());
        let second = thread::spawn(move || {
            if s2
                .compare_exchange(FREE, OWNED, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                let mut p = r2.producer();
                assert!(p.push(rec(21)));
                true
            } else {
                false
            }
        });
        let mut seen = Vec::new();
        let mut out = Vec::new();
        for _ in 0..2 {
            let st = state.load(Ordering::Acquire);
            out.clear();
            ring.drain_into(&mut out, usize::MAX);
            seen.extend(out.iter().map(|r| r.value));
            if st == DETACHED {
                assert_eq!(
                    seen,
                    [11, 12],
                    "the first owner's records, whole, before freeing"
                );
                state.store(FREE, Ordering::Release);
            }
        }
        first.join().unwrap();
        let claimed = second.join().unwrap();
        out.clear();
        ring.drain_into(&mut out, usize::MAX);
        seen.extend(out.iter().map(|r| r.value));
        let want: &[u64] = if claimed { &[11, 12, 21] } else { &[11, 12] };
        assert_eq!(seen, want);
        assert_eq!(ring.dropped(), 0);
    });
}
