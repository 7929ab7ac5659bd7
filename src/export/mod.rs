//! Exporters slicetrace ships: OTLP to a collector, JSON lines to a local file, and the
//! Perfetto-ready trace-event file.

pub mod jsonl;
pub mod otlp;
pub mod perfetto;
pub mod tls;
