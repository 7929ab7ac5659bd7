//! Exporters slicetrace ships: OTLP to a collector, and JSON lines to a local file.

pub mod jsonl;
pub mod otlp;
pub mod tls;
