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
            ring.drain_into(&mut out);
            got.extend(out.iter().map(|r| r.value));
        }
        let pushed = producer.join().unwrap();
        out.clear();
        ring.drain_into(&mut out);
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
        ring.drain_into(&mut out);
        assert!(out.is_empty() || out.len() == 3);
        producer.join().unwrap();
        ring.drain_into(&mut out);
        assert_eq!(out.iter().map(|r| r.value).collect::<Vec<_>>(), [1, 2, 3]);
    });
}
