//! The background thread: sweeps every ring, rebuilds span trees, hands spans to the sink.

use super::clock::TickClock;
use super::control::Control;
use super::shipper::Shipper;
use super::span_out::SpanOut;
use super::stats::Counters;
use super::tree::{Tenure, Tree};
use crate::ids::owner_seed;
use crate::wire::decode::{decode, Decoded};
use crate::wire::ownership::{self, Lease, RingSlot};
use crate::wire::record::{flag, Kind, Record};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Spans a sweep piles up before it hands them to the export thread mid-sweep.
const HAND_OVER_SPANS: usize = 1024;

/// Records read from a ring at a time: 32 KiB, so they are decoded from the first-level cache.
const DRAIN_PIECE: usize = 1024;

pub struct DrainerParts {
    pub tree: Tree,
    pub shipper: Shipper,
    pub clock: TickClock,
    pub interval: Duration,
    pub max_batch: usize,
    /// A batch smaller than `max_batch` waits at most this long.
    pub export_interval: Duration,
    /// How often to report losses on stderr (only when there were any).
    pub report_every: Option<Duration>,
}

struct RingState {
    slot: Arc<RingSlot>,
    /// The ring's consumer, held while this drainer runs; `None` until it is given back by a
    /// drainer of an earlier session still stopping.
    lease: Option<Lease>,
    tenure: Option<Arc<Tenure>>,
    last_ns: u64,
}

struct Drainer {
    ctl: Arc<Control>,
    parts: DrainerParts,
    rings: Vec<RingState>,
    known: usize,
    scratch: Vec<Record>,
    snapshot: Vec<Arc<RingSlot>>,
    last_export: Instant,
    last_report: Instant,
    reported: Losses,
}

/// What was lost so far, for the periodic report.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
struct Losses {
    ring_full: u64,
    unknown_rid: u64,
    export_failed: u64,
    export_dropped: u64,
}

pub fn run(ctl: Arc<Control>, parts: DrainerParts) {
    let mut d = Drainer {
        ctl,
        parts,
        rings: Vec::new(),
        known: 0,
        scratch: Vec::new(),
        snapshot: Vec::new(),
        last_export: Instant::now(),
        last_report: Instant::now(),
        reported: Losses::default(),
    };
    d.reported = d.losses();
    let mut flushed = 0;
    loop {
        let want = d.ctl.flush_requested.load(Ordering::Acquire);
        let stopping = d.ctl.stop.load(Ordering::Acquire);
        d.sweep();
        let forcing = stopping || want > flushed;
        if forcing {
            // A second pass picks up what threads published while the first ran.
            d.sweep();
        }
        let ctl = d.ctl.clone();
        let c = &ctl.counters;
        d.parts.tree.housekeeping(c, forcing);
        if stopping {
            d.parts
                .tree
                .close_all(c, "unfinished: tracing shut down first");
        }
        d.export(forcing);
        d.report();
        c.requests_open
            .store(d.parts.tree.open_requests() as u64, Ordering::Relaxed);
        c.records_waiting
            .store(d.parts.tree.parked() as u64, Ordering::Relaxed);
        if stopping {
            d.parts.shipper.stop();
            d.ctl.mark_flushed(u64::MAX);
            return;
        }
        if want > flushed {
            flushed = want;
            d.parts.shipper.flush(want);
        }
        d.parts.clock.maybe_reanchor();
        std::thread::park_timeout(d.parts.interval);
    }
}

impl Drainer {
    fn sweep(&mut self) {
        self.parts.tree.read_clock();
        let registry = ownership::global();
        if registry.ring_count() != self.known {
            registry.snapshot(&mut self.snapshot);
            for s in &self.snapshot[self.rings.len()..] {
                self.rings.push(RingState {
                    slot: s.clone(),
                    lease: s.lend_consumer(),
                    tenure: None,
                    last_ns: 0,
                });
            }
            self.known = self.rings.len();
        }
        for i in 0..self.rings.len() {
            self.drain_ring(i);
        }
    }

    fn drain_ring(&mut self, i: usize) {
        let c = &self.ctl.counters;
        let rs = &mut self.rings[i];
        if rs.lease.is_none() {
            rs.lease = rs.slot.lend_consumer();
        }
        let Some(lease) = rs.lease.as_mut() else {
            return;
        };
        let mut visit = ownership::global().visit(lease);
        let slot = visit.slot();
        // Only what is published now: a thread writing faster than this loop reads must not
        // keep the drainer on its ring.
        let mut left = visit.pending();
        if left > 0 {
            let owner = slot.owner();
            let tenure = match &rs.tenure {
                Some(t) if t.owner == owner => t.clone(),
                _ => {
                    rs.last_ns = 0;
                    let t = Arc::new(Tenure {
                        ring: slot.index,
                        owner,
                        seed: owner_seed(slot.index, owner),
                        meta: slot.meta(),
                    });
                    rs.tenure = Some(t.clone());
                    t
                }
            };
            let (tree, clock, shipper) = (
                &mut self.parts.tree,
                &mut self.parts.clock,
                &self.parts.shipper,
            );
            // A long drain hands its spans over as they pile up, so the export thread turns
            // them into `SpanData` while the rest are rebuilt.
            let pile = HAND_OVER_SPANS.max(self.parts.max_batch);
            let mut tenure = tenure;
            let (last_ns, rs_tenure) = (&mut rs.last_ns, &mut rs.tenure);
            let mut on_record = |d: &Decoded| {
                let ns = if d.head.flags & flag::TS_UNIX != 0 {
                    d.head.ts
                } else {
                    let ns = clock.to_unix(d.head.ts).max(*last_ns);
                    *last_ns = ns;
                    ns
                };
                if d.kind == Kind::ThreadInfo {
                    // Spans opened from here on carry the new label; open ones keep theirs.
                    tenure = Arc::new(Tenure {
                        ring: tenure.ring,
                        owner: tenure.owner,
                        seed: tenure.seed,
                        meta: slot.meta(),
                    });
                    *rs_tenure = Some(tenure.clone());
                }
                tree.apply(c, &tenure, d, ns);
                if tree.out.spans.len() >= pile {
                    hand_over(&mut tree.out, shipper, c, true);
                }
            };
            // A piece at a time, so the records are decoded while they are still in cache, and
            // their slots return to the writer sooner. A record whose chunks a piece cut off
            // waits in `scratch` for the next piece.
            let scratch = &mut self.scratch;
            scratch.clear();
            while left > 0 {
                let take = left.min(DRAIN_PIECE as u64);
                // Records carried over sit just before the ones drained now.
                let carried = scratch.len() as u64;
                let pos = visit.drain_into(scratch, take as usize) - carried;
                left -= take;
                Counters::add(&c.records_read, take);
                let used = decode(scratch, pos, left > 0, &mut on_record, |_, _| {
                    Counters::add(&c.records_undecodable, 1)
                });
                scratch.drain(..used);
            }
        }
        if visit.end() {
            rs.tenure = None;
        }
    }

    /// Ships full batches; the remainder too when it has waited `export_interval`, or `force`.
    fn export(&mut self, force: bool) {
        let max = self.parts.max_batch;
        let due = force || self.last_export.elapsed() >= self.parts.export_interval;
        let out = &mut self.parts.tree.out;
        let ready = !out.spans.is_empty() && (out.spans.len() >= max || due);
        hand_over(out, &self.parts.shipper, &self.ctl.counters, ready);
        if ready {
            self.last_export = Instant::now();
        }
    }

    fn losses(&self) -> Losses {
        let c = &self.ctl.counters;
        Losses {
            ring_full: self.rings.iter().map(|r| r.slot.gauge().dropped()).sum(),
            unknown_rid: c.unknown_rid_records.load(Ordering::Relaxed),
            export_failed: c.spans_export_failed.load(Ordering::Relaxed),
            export_dropped: c.spans_dropped_export.load(Ordering::Relaxed),
        }
    }

    /// One line on stderr per interval in which something was lost.
    fn report(&mut self) {
        let Some(every) = self.parts.report_every else {
            return;
        };
        if self.last_report.elapsed() < every {
            return;
        }
        self.last_report = Instant::now();
        let now = self.losses();
        let was = std::mem::replace(&mut self.reported, now);
        if now != was {
            crate::fork::stderr_line(&format!(
                "slicetrace: lost in the last {every:?}: {} records (ring full), {} records (unknown request), {} spans (export failed), {} spans (export queue full)",
                now.ring_full - was.ring_full,
                now.unknown_rid - was.unknown_rid,
                now.export_failed - was.export_failed,
                now.export_dropped - was.export_dropped,
            ));
        }
    }
}

/// Sends the finished spans to the export thread when `send` (the export thread cuts the
/// batches), counts those shed for want of room, and tells the tree how much room is left:
/// spans finished beyond it before the next hand-over are counted, not built.
fn hand_over(out: &mut SpanOut, shipper: &Shipper, c: &Counters, send: bool) {
    let shed = out.take_shed();
    if shed > 0 {
        Counters::add(&c.spans_dropped_export, shed);
    }
    if send {
        shipper.send(out.take());
    }
    out.set_room(shipper.room());
}
