//! Exporters slicetrace ships, for destinations the OpenTelemetry SDK does not cover.

pub mod jsonl;
