//! What the drainer counts: every record that did not become part of an exported span is in one
//! of these, so losses are never silent.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($($(#[$doc:meta])* $field:ident),* $(,)?) => {
        /// Live counters, written by the drainer.
        #[derive(Default, Debug)]
        pub struct Counters {
            $(pub $field: AtomicU64,)*
        }

        /// A snapshot of the counters of the current (or last) session.
        #[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
        pub struct Stats {
            /// Records the traced threads pushed into their rings.
            pub records_written: u64,
            /// Records dropped because a ring was full (the call was not blocked).
            pub records_dropped_ring_full: u64,
            /// Calls made during thread teardown, after the thread's handle was gone.
            pub calls_lost_in_teardown: u64,
            /// `propagate_context` calls that found no request on the calling thread.
            pub propagate_unknown: u64,
            /// Rings in the process (one per thread alive at once, reused after threads exit).
            pub rings: u64,
            /// Strings `Name::intern` refused, past `limits::MAX_INTERNED_NAMES` or
            /// `limits::MAX_INTERNED_BYTES`: each was recorded as `limits::OVERFLOW_NAME`.
            pub names_refused: u64,
            /// Gauge: strings `Name::intern` holds in the process (names made at run time).
            pub names_interned: u64,
            /// Calls made in this process after it was forked from a traced one and before it
            /// started tracing again (dropped: see `slicetrace::process`).
            pub calls_dropped_after_fork: u64,
            /// 1 when this process is a forked child that started a session of its own (by
            /// `process::reinit_after_fork` or `init`), else 0.
            pub forks_reinitialised: u64,
            $($(#[$doc])* pub $field: u64,)*
        }

        impl Stats {
            /// Every counter with its field's name, in declaration order: for a program that
            /// reports them all (as metrics, or as a Python dict) without listing them again.
            pub fn fields(&self) -> impl Iterator<Item = (&'static str, u64)> {
                [
                    ("records_written", self.records_written),
                    ("records_dropped_ring_full", self.records_dropped_ring_full),
                    ("calls_lost_in_teardown", self.calls_lost_in_teardown),
                    ("propagate_unknown", self.propagate_unknown),
                    ("rings", self.rings),
                    ("names_refused", self.names_refused),
                    ("names_interned", self.names_interned),
                    ("calls_dropped_after_fork", self.calls_dropped_after_fork),
                    ("forks_reinitialised", self.forks_reinitialised),
                    $((stringify!($field), self.$field),)*
                ]
                .into_iter()
            }
        }

        impl Counters {
            pub fn snapshot(&self) -> Stats {
                Stats {
                    $($field: self.$field.load(Ordering::Relaxed),)*
                    ..Stats::default()
                }
            }
        }
    };
}

counters! {
    /// Records the drainer read from the rings.
    records_read,
    /// Records that could not be decoded (corrupt ring contents, unknown names); skipped.
    records_undecodable,
    /// Records of requests this process never started or joined (or whose request had already
    /// been closed), dropped after waiting `park_timeout` for their request.
    unknown_rid_records,
    /// Records left in rings from before this session, skipped at start.
    records_stale,
    /// Spans handed to the exporter and accepted.
    spans_exported,
    /// Spans in batches the exporter failed (after its own retries).
    spans_export_failed,
    /// Spans dropped because the export queue was full (the destination could not keep up).
    spans_dropped_export,
    /// Failed export calls.
    export_errors,
    requests_started,
    requests_joined,
    requests_finished,
    /// Requests closed after `idle_timeout` without activity, exported as unfinished.
    requests_evicted,
    /// `req_start` for a request still open: the old one is exported as unfinished.
    requests_restarted,
    /// Requests refused because `max_open_requests` were open; their records count as unknown.
    requests_rejected,
    /// Requests the sampler left out (not a loss): by a ratio sampler where they entered this
    /// process (nothing recorded), or by a parent-based one in the drainer (nothing exported).
    requests_sampled_out,
    /// Slices closed because their thread span or request ended first (status error).
    slices_unfinished,
    /// Slices nested deeper than `MAX_DEPTH`, dropped.
    slices_dropped_depth,
    /// Async slices started while `limits::MAX_OPEN_TASKS` of their request were open: dropped.
    async_slices_dropped,
    /// `slice_end` with no slice open, or an async slice's end whose start never arrived.
    end_without_start,
    /// Ends recorded across a change of the trace level whose start was not recorded (it was
    /// above the level then): discarded, not a loss (see `slicetrace::set_level`).
    level_ends_discarded,
    /// `slice_end` whose name differs from its named start (the span gets status error).
    name_mismatches,
    /// `event` with no slice of its request open on the thread: kept on the thread span (or the
    /// request span, when the thread's has ended).
    events_without_slice,
    /// `slice_add_attr` with no slice of its request open on the thread: kept on the thread
    /// span (or the request span, when the thread's has ended).
    attrs_without_slice,
    /// Events and attributes of a request this process joined that had no span here to go
    /// on (no slice or thread span open, and no request span in a joined process): dropped.
    annotations_dropped,
    /// `propagate_context` calls seen by the drainer.
    propagations,
    /// `set_propagate_context` with a trace id other than the request's in this process.
    context_conflicts,
    /// `req_start` tracestates not kept: over 512 bytes or not valid W3C tracestate.
    tracestate_refused,
    /// Gauge: requests open in the drainer now.
    requests_open,
    /// Gauge: records waiting for their request now.
    records_waiting,
}

impl Counters {
    #[inline]
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_name_every_counter_once_with_its_value() {
        let c = Counters::default();
        Counters::add(&c.spans_exported, 7);
        Counters::add(&c.records_waiting, 2);
        let mut s = c.snapshot();
        s.rings = 3;
        let fields: Vec<_> = s.fields().collect();
        // Every u64 of the struct, and no name twice.
        assert_eq!(fields.len(), std::mem::size_of::<Stats>() / 8);
        let mut names: Vec<_> = fields.iter().map(|(n, _)| *n).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), fields.len());
        let get = |name| fields.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
        assert_eq!(get("spans_exported"), Some(7));
        assert_eq!(get("records_waiting"), Some(2));
        assert_eq!(get("rings"), Some(3));
        assert_eq!(fields.iter().map(|(_, v)| v).sum::<u64>(), 12);
    }
}
