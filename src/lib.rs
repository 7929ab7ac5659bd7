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

mod args;
mod collector;
mod env;
mod export;
mod ids;
mod local;
mod name;
mod propagate;
mod record;
mod registry;
mod ring;
mod session;
mod slice_chain;
mod sync;

/// The id hasher, under the path the drainer's code names it by.
mod mix_hash {
    pub(crate) use slicetrace_spans::util::MixHash;
}

#[cfg(all(test, slicetrace_loom))]
mod ring_loom;

pub use args::{Attr, End, Opts, UnixNanos, Value};
pub use collector::clock::ClockSource;
pub use collector::sink::{Outcome, Sink};
pub use collector::stats::Stats;
pub use env::{Destination, EnvError, EnvFile, EnvSettings, Protocol, TlsFiles};
pub use export::jsonl::JsonLinesExporter;
pub use export::otlp::OtlpSink;
pub use export::tls::TlsConfig;
pub use ids::Rid;
pub use local::api::{
    event, event_with, propagate_context, propagate_tracestate, req_finish, req_finish_with,
    req_start, req_start_with, set_propagate_context, set_propagate_context_with, set_thread_info,
    slice_add_attr, slice_batch, slice_end, slice_end_with, slice_start, slice_start_anon,
    slice_start_at, ReqStart, RequestKey,
};
pub use name::Name;
pub use perfetto::PerfettoExporter;
pub use propagate::{ContextError, PropagateContext, TraceparentError, CONTEXT_LEN};
pub use record::MAX_STR_BYTES;
pub use session::{
    init, init_from_env, is_enabled, stats, Config, Guard, InitError, DEFAULT_RING_CAPACITY,
};
pub use slice_chain::MAX_DEPTH;

/// The local trace-event file: its exporter and rotation, the writer's limits and counts, and
/// the repair of a file cut short.
pub mod perfetto {
    pub use crate::export::perfetto::{PerfettoExporter, Rotation};
    pub use slicetrace_spans::repair::{repair, Repaired};
    pub use slicetrace_spans::writer::{Limits, WriterStats};
}

#[cfg(feature = "testing")]
pub use opentelemetry_sdk::trace::InMemorySpanExporter;

/// For benchmarks and tests of the record path only; not a stable interface.
#[doc(hidden)]
pub mod __private {
    pub use crate::record::{decode, DecodeError, Decoded, Record};

    /// A tracestate as it travels: written into a start record's payload by the calling
    /// thread, read back and parsed by the drainer. `None` where the drainer refuses it.
    pub fn tracestate_through_records(state: &str) -> Option<String> {
        use crate::record::{flag, Kind, MAX_PAYLOAD};
        let mut payload = [0u8; MAX_PAYLOAD];
        let n = crate::local::api::put_tracestate(&mut payload, state);
        let head = Record {
            kind: Kind::ReqStart as u8,
            flags: flag::TRACESTATE,
            ..Record::default()
        };
        let parts = crate::local::history::split_origin_payload(&head, &payload[..n]);
        let c = crate::collector::stats::Counters::default();
        let st = crate::collector::tree::parse_trace_state(&c, parts.tracestate);
        (c.tracestate_refused
            .load(std::sync::atomic::Ordering::Relaxed)
            == 0)
            .then(|| st.header())
    }
}
