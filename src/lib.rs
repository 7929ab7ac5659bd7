//! Request tracing for LLM inference servers, cheap enough to leave on in production.
//!
//! Mark where a request's work begins and ends on each thread; slicetrace turns the marks into
//! OpenTelemetry span trees (Request → Thread → Slice, each slice linked to the one before it)
//! and hands them to any `opentelemetry_sdk` span exporter.
//!
//! ```
//! use slicetrace::{name, End, Rid};
//! # let exporter = opentelemetry_sdk::trace::InMemorySpanExporter::default();
//! let guard = slicetrace::init(slicetrace::Config::new("my-server").exporter(exporter))?;
//! slicetrace::set_thread_info("scheduler", Some(0), None);
//! let rid: Rid = slicetrace::req_start("3f2a9c0e-request", None);
//! slicetrace::slice_start(name!("prefill"), rid);
//! slicetrace::slice_end(name!("prefill"), rid, End::PLAIN);
//! slicetrace::req_finish(rid);
//! guard.shutdown();
//! # Ok::<(), slicetrace::InitError>(())
//! ```
//!
//! Each call writes one 32-byte record into the calling thread's own ring (no lock, no
//! allocation, no system call); a background thread does the rest. See `docs/design.md`.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

mod args;
mod collector;
mod env;
pub mod error;
pub mod export;
mod fork;
mod ids;
#[cfg(feature = "tracing")]
pub mod layer;
mod level;
mod local;
mod name;
pub mod process;
mod propagate;
pub mod sampling;
mod session;
mod shutdown;
mod slice_chain;
mod sync;
pub mod w3c;
mod wire;

pub use args::{Attr, End, Value};
pub use collector::clock::ClockSource;
pub use collector::stats::Stats;
pub use error::InitError;
pub use ids::Rid;
pub use level::{level, set_level};
pub use local::api::{
    event, propagate_context, req_finish, req_start, set_propagate_context, set_thread_info,
    slice_add_attr, slice_batch, slice_end, slice_start, slice_start_anon, RequestKey,
};
pub use local::task::{slice, AsyncSlice, Entered, InSlice, SliceGuard, Traced};
pub use name::Name;
pub use propagate::PropagateContext;
pub use session::{init, init_from_env, is_enabled, stats, Config, Guard};
pub use shutdown::Shutdown;

/// The calls' forms that take more: a caller's timestamp, attributes, an upstream context or a
/// W3C tracestate (each the root call of the same name without `_with`), and their options.
pub mod options {
    pub use crate::args::{Opts, UnixNanos};
    pub use crate::local::api::{
        event_for_slice_with, event_with, propagate_context_for_room, propagate_tracestate,
        req_add_attr, req_finish_with, req_start_with, set_propagate_context_with,
        set_thread_info_with, slice_end_with, slice_start_at, thread_add_attr, thread_end_with,
        thread_event_with, ReqStart, ThreadEnd, ThreadInfo,
    };
}

/// The bounds slicetrace keeps: past each, input is cut or refused and counted.
pub mod limits {
    pub use crate::collector::tree::{MAX_ATTRS_PER_SPAN, MAX_EVENTS_PER_SPAN, MAX_OPEN_TASKS};
    pub use crate::level::{DEFAULT_NAME_LEVEL, DEFAULT_PROCESS_LEVEL, MAX_LEVEL};
    pub use crate::local::handle::DEFAULT_RING_CAPACITY;
    pub use crate::name::{MAX_INTERNED_BYTES, MAX_INTERNED_NAMES, OVERFLOW_NAME};
    pub use crate::propagate::CONTEXT_LEN;
    pub use crate::slice_chain::MAX_DEPTH;
    pub use crate::wire::array::MAX_ARRAY_BYTES;
    pub use crate::wire::origin::{MAX_ROLE_BYTES, MAX_TRACESTATE_BYTES};
    pub use crate::wire::record::MAX_STR_BYTES;
}

/// For benchmarks and tests of the record path only; not a stable interface.
#[doc(hidden)]
pub mod __private {
    pub use crate::wire::decode::{decode, DecodeError, Decoded};
    pub use crate::wire::record::Record;

    /// A thread takes the named lock (`"names"`: the name table, `"session"`: the session
    /// slot) and holds it for `hold`; returns once it is held. For tests of a fork while
    /// another thread holds a lock that starting a session needs.
    pub fn hold_lock(which: &str, hold: std::time::Duration) -> bool {
        crate::process::hold_lock(which, hold)
    }

    /// A tracestate as it travels: written into a start record's payload by the calling
    /// thread, read back and parsed by the drainer. `None` where the drainer refuses it.
    pub fn tracestate_through_records(state: &str) -> Option<String> {
        use crate::wire::origin::{decode_origin, encode_origin, MAX_ORIGIN_PAYLOAD};
        use crate::wire::record::Kind;
        let mut payload = [0u8; MAX_ORIGIN_PAYLOAD];
        let mut head = Record {
            kind: Kind::ReqStart as u8,
            ..Record::default()
        };
        let n = encode_origin(&mut head, None, Some(state), None, "", &mut payload);
        let parts = decode_origin(&head, &payload[..n]).ok()?;
        let c = crate::collector::stats::Counters::default();
        let st = crate::collector::tree::parse_trace_state(&c, parts.tracestate);
        (c.tracestate_refused
            .load(std::sync::atomic::Ordering::Relaxed)
            == 0)
            .then(|| st.header())
    }
}
