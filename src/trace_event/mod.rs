//! Local trace files that Perfetto UI and `chrome://tracing` open: the span model, the
//! streaming trace-event writer, and the exporter that writes a file from the drainer.

mod decimal;
pub mod exporter;
mod held;
mod hex;
pub mod model;
mod prefetch;
mod reorder;
pub mod repair;
mod rids;
mod two_gen;
mod waiting;
pub mod writer;
