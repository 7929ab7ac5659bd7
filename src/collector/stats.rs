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
            $($(#[$doc])* pub $field: u64,)*
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
    /// Slices closed because their thread span or request ended first (status error).
    slices_unfinished,
    /// Slices nested deeper than `MAX_DEPTH`, dropped.
    slices_dropped_depth,
    /// `slice_end` with no slice open.
    end_without_start,
    /// `slice_end` whose name differs from its named start (the span gets status error).
    name_mismatches,
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
