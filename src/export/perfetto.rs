//! A span exporter that writes a Perfetto-ready trace-event file: the local destination when
//! tracing is on and no OTLP endpoint is set.

use opentelemetry::trace::Status;
use opentelemetry::{Key, KeyValue, Value};
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use opentelemetry_sdk::Resource;
use slicetrace_spans::model::{AttrValue, ProcessKey, Span, SpanEvent};
pub use slicetrace_spans::repair::{repair, Repaired};
use slicetrace_spans::schema;
use slicetrace_spans::writer::TraceEventWriter;
pub use slicetrace_spans::writer::{Limits, WriterStats};
use std::fmt;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

type FileWriter = TraceEventWriter<BufWriter<File>>;

/// Size-based rotation of the local file: past `max_bytes`, the file is closed (a whole,
/// valid trace), renamed to `NAME.1.trace.json` (older ones shift to `.2`, … up to `keep`, the
/// oldest deleted), and a new file goes on where it stopped, with the same track names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rotation {
    pub max_bytes: u64,
    pub keep: usize,
}

/// Writes spans as Chrome trace-event JSON (see [`TraceEventWriter`]), flushing after every
/// batch so the file holds every span written out of the reorder window even if the process
/// is killed. Shutdown writes the rest and closes the JSON array.
pub struct PerfettoExporter {
    path: PathBuf,
    writer: Mutex<Option<FileWriter>>,
    process: ProcessKey,
    /// Counts of the files already finished (rotated, or at shutdown).
    done_stats: Mutex<WriterStats>,
    rotation: Option<Rotation>,
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
            done_stats: Mutex::new(WriterStats::default()),
            rotation: None,
        })
    }

    /// Rotates the file by size (see [`Rotation`]).
    #[must_use]
    pub fn with_rotation(mut self, rotation: Rotation) -> PerfettoExporter {
        self.rotation = Some(Rotation {
            max_bytes: rotation.max_bytes.max(1),
            keep: rotation.keep.max(1),
        });
        self
    }

    /// Where the `n`th most recent rotated file goes: `dir/name.n.trace.json` for
    /// `dir/name.trace.json` (the number goes before the extension).
    pub fn rotated_path(&self, n: usize) -> PathBuf {
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let (stem, ext) = match name.strip_suffix(".trace.json") {
            Some(stem) => (stem.to_owned(), ".trace.json".to_owned()),
            None => match name.rsplit_once('.') {
                Some((stem, ext)) if !stem.is_empty() => (stem.to_owned(), format!(".{ext}")),
                _ => (name.clone(), String::new()),
            },
        };
        self.path.with_file_name(format!("{stem}.{n}{ext}"))
    }

    /// Closes the current file, shifts the rotated ones, and goes on in a new file.
    fn rotate(&self, slot: &mut Option<FileWriter>, keep: usize) -> std::io::Result<()> {
        let Some(old) = slot.take() else {
            return Ok(());
        };
        let carry = old.carry();
        let (_, stats) = old.finish()?;
        if let Ok(mut done) = self.done_stats.lock() {
            done.absorb(&stats);
            done.files_rotated += 1;
        }
        let _ = std::fs::remove_file(self.rotated_path(keep));
        for n in (1..keep).rev() {
            let from = self.rotated_path(n);
            if from.exists() {
                std::fs::rename(&from, self.rotated_path(n + 1))?;
            }
        }
        std::fs::rename(&self.path, self.rotated_path(1))?;
        let file = BufWriter::with_capacity(256 * 1024, File::create(&self.path)?);
        *slot = Some(TraceEventWriter::resume(file, carry)?);
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What the writer has done so far, over every file (final after shutdown).
    pub fn writer_stats(&self) -> WriterStats {
        let mut total = self
            .done_stats
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default();
        if let Ok(w) = self.writer.lock() {
            if let Some(w) = w.as_ref() {
                total.absorb(&w.stats());
            }
        }
        total
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
            w.push(&self.process, span_of(s)).map_err(failure)?;
        }
        w.flush().map_err(failure)?;
        if let Some(r) = self.rotation {
            if w.stats().bytes >= r.max_bytes {
                self.rotate(&mut guard, r.keep).map_err(failure)?;
            }
        }
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        let mut guard = self.writer.lock().map_err(|_| failure("writer poisoned"))?;
        let Some(w) = guard.take() else {
            return Ok(());
        };
        let (_, stats) = w.finish().map_err(failure)?;
        if let Ok(mut s) = self.done_stats.lock() {
            s.absorb(&stats);
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

/// The model's view of an exported `SpanData`.
fn span_of(s: &SpanData) -> Span {
    let attrs = |kvs: &[KeyValue]| {
        kvs.iter()
            .map(|kv| (kv.key.as_str().to_owned(), attr_value(&kv.value)))
            .collect::<Vec<_>>()
    };
    let own_attrs = attrs(&s.attributes);
    Span {
        role: schema::role_of(&own_attrs),
        trace_id: u128::from_be_bytes(s.span_context.trace_id().to_bytes()),
        span_id: u64::from_be_bytes(s.span_context.span_id().to_bytes()),
        parent: u64::from_be_bytes(s.parent_span_id.to_bytes()),
        name: s.name.to_string(),
        start_ns: unix_nanos(s.start_time),
        end_ns: unix_nanos(s.end_time),
        attrs: own_attrs,
        events: s
            .events
            .iter()
            .map(|e| SpanEvent {
                name: e.name.to_string(),
                time_ns: unix_nanos(e.timestamp),
                attrs: attrs(&e.attributes),
            })
            .collect(),
        links: s
            .links
            .iter()
            .map(|l| {
                (
                    u128::from_be_bytes(l.span_context.trace_id().to_bytes()),
                    u64::from_be_bytes(l.span_context.span_id().to_bytes()),
                )
            })
            .collect(),
        error: match &s.status {
            Status::Error { description } => Some(description.to_string()),
            _ => None,
        },
    }
}

fn attr_value(v: &Value) -> AttrValue {
    match v {
        Value::Bool(b) => AttrValue::Bool(*b),
        Value::I64(i) => AttrValue::Int(*i),
        Value::F64(f) => AttrValue::F64(*f),
        // A trace event's args are shown as text: an array as its JSON text.
        Value::Array(_) => {
            let mut text = String::new();
            super::jsonl::json_value(&mut text, v);
            AttrValue::Str(text)
        }
        other => AttrValue::Str(other.as_str().into_owned()),
    }
}

fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos().min(u64::MAX as u128) as u64)
        .unwrap_or(0)
}
