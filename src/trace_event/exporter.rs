//! A span exporter that writes a Perfetto-ready trace-event file: the local destination when
//! tracing is on and no OTLP endpoint is set.

use super::model::{ProcessKey, Span};
use super::writer::{Limits, TraceEventWriter, WriterStats};
use opentelemetry::Key;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use opentelemetry_sdk::Resource;
use std::fmt;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

type FileWriter = TraceEventWriter<BufWriter<File>>;

/// Writes spans as Chrome trace-event JSON (see [`TraceEventWriter`]), flushing after every
/// batch so the file holds every span written out of the reorder window even if the process
/// is killed. Shutdown writes the rest and closes the JSON array.
pub struct PerfettoExporter {
    path: PathBuf,
    writer: Mutex<Option<FileWriter>>,
    process: ProcessKey,
    last_stats: Mutex<WriterStats>,
}

impl fmt::Debug for PerfettoExporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PerfettoExporter")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl PerfettoExporter {
    /// Creates (or truncates) the file at `path`. Events are held for a reorder window of one
    /// second of trace time: a killed process's file lacks at most its last second.
    pub fn create(path: impl AsRef<Path>) -> std::io::Result<PerfettoExporter> {
        let limits = Limits {
            reorder_window_ns: 1_000_000_000,
            ..Limits::default()
        };
        PerfettoExporter::with_limits(path, limits)
    }

    pub fn with_limits(
        path: impl AsRef<Path>,
        limits: Limits,
    ) -> std::io::Result<PerfettoExporter> {
        let path = path.as_ref().to_path_buf();
        let file = BufWriter::with_capacity(256 * 1024, File::create(&path)?);
        Ok(PerfettoExporter {
            writer: Mutex::new(Some(TraceEventWriter::new(file, limits)?)),
            process: ProcessKey {
                pid: std::process::id() as u64,
                ..ProcessKey::default()
            },
            path,
            last_stats: Mutex::new(WriterStats::default()),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What the writer has done so far (final after shutdown).
    pub fn writer_stats(&self) -> WriterStats {
        if let Ok(w) = self.writer.lock() {
            if let Some(w) = w.as_ref() {
                return w.stats().clone();
            }
        }
        self.last_stats
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }
}

fn failure(e: impl fmt::Display) -> OTelSdkError {
    OTelSdkError::InternalFailure(e.to_string())
}

impl SpanExporter for PerfettoExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let mut guard = self.writer.lock().map_err(|_| failure("writer poisoned"))?;
        let w = guard.as_mut().ok_or(OTelSdkError::AlreadyShutdown)?;
        for s in &batch {
            w.push(&self.process, Span::from_span_data(s))
                .map_err(failure)?;
        }
        w.flush().map_err(failure)
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        let mut guard = self.writer.lock().map_err(|_| failure("writer poisoned"))?;
        let Some(w) = guard.take() else {
            return Ok(());
        };
        let (_, stats) = w.finish().map_err(failure)?;
        if let Ok(mut s) = self.last_stats.lock() {
            *s = stats;
        }
        Ok(())
    }

    fn set_resource(&mut self, resource: &Resource) {
        let text = |k: &'static str| {
            resource
                .get(&Key::from_static_str(k))
                .map(|v| v.as_str().into_owned())
                .unwrap_or_default()
        };
        self.process.service = text("service.name");
        self.process.host = text("host.name");
        if let Ok(pid) = text("process.pid").parse() {
            self.process.pid = pid;
        }
    }
}
