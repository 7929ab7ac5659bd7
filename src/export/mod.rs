//! Where spans go: the exporters slicetrace ships (OTLP to a collector, JSON lines and the
//! Perfetto trace file locally), and the [`Sink`] trait any other destination implements.
//! `Config::exporter` also takes any `opentelemetry_sdk` span exporter.

pub(crate) mod jsonl;
pub(crate) mod otlp;
pub mod perfetto;
pub(crate) mod tls;

pub use crate::collector::sink::{Outcome, Sink};
pub use jsonl::JsonLinesExporter;
#[cfg(feature = "testing")]
pub use opentelemetry_sdk::trace::InMemorySpanExporter;
pub use otlp::{OtlpSink, Protocol, MAX_CONNECTIONS};
pub use perfetto::{PerfettoExporter, Rotation};
pub use tls::TlsConfig;
