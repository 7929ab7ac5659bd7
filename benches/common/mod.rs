//! Shared by the benchmarks.
#![allow(dead_code)]

use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use std::hint::black_box;

/// A span exporter that drops what it gets: the benchmarks measure slicetrace, not a sink.
#[derive(Debug)]
pub struct Discard;

impl SpanExporter for Discard {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        black_box(batch);
        Ok(())
    }
}
