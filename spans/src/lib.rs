//! What a slicetrace span is, and the trace-event file it is written to.
//!
//! [`model`] is a finished span as any source gives it (this process's drainer, a collector's
//! OTLP/JSON file, a trace-event file read back); [`schema`] names the attributes and span
//! names of the Request → Thread → Slice tree and decides a span's [`model::Role`] once, where
//! it enters the model; [`writer`] streams spans into Chrome trace-event JSON (what Perfetto UI
//! and `chrome://tracing` open) in bounded memory; [`repair`] closes a file cut short.
//! The library's exporter and the `slicetrace` command share all of it.

pub mod model;
pub mod repair;
pub mod schema;
pub mod util;
pub mod writer;
