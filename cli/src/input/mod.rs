//! Reading spans from trace files, one line at a time: the OpenTelemetry Collector file
//! exporter's OTLP/JSON, slicetrace's JSON-lines span dump, and slicetrace's own trace-event
//! files. Memory does not grow with the file; bad lines are skipped and reported by number.

mod hex;
mod lines;
mod otlp_fast;
mod otlp_json;
mod scan;
mod span_lines;
mod trace_events;

use lines::Lines;
use slicetrace_spans::model::{ProcessKey, Span};
use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

/// The formats this tool reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// OTLP/JSON, one `{"resourceSpans": …}` object per line (the Collector's file exporter).
    OtlpJson,
    /// slicetrace's `JsonLinesExporter` output: one span object per line.
    SpanLines,
    /// A Chrome trace-event JSON array as slicetrace writes it (one event per line).
    TraceEvents,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::OtlpJson => "OTLP/JSON lines",
            Format::SpanLines => "slicetrace span lines",
            Format::TraceEvents => "trace-event JSON",
        })
    }
}

/// A line that could not be read, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    pub line: u64,
    pub why: String,
}

/// Lines skipped are kept by number up to this many; the rest are only counted.
pub const SKIPPED_KEPT: usize = 20;

#[derive(Debug)]
pub struct ReadReport {
    pub format: Format,
    pub lines: u64,
    pub spans: u64,
    pub skipped: Vec<Skipped>,
    pub skipped_count: u64,
}

impl ReadReport {
    fn skip(&mut self, line: u64, why: String) {
        self.skipped_count += 1;
        if self.skipped.len() < SKIPPED_KEPT {
            self.skipped.push(Skipped { line, why });
        }
    }
}

/// Why a file could not be read at all.
#[derive(Debug)]
pub enum InputError {
    Io(io::Error),
    /// The first line is none of the formats.
    Unrecognised(String),
    /// The consumer of the spans failed (e.g. writing the output).
    Output(io::Error),
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InputError::Io(e) => write!(f, "{e}"),
            InputError::Unrecognised(why) => f.write_str(why),
            InputError::Output(e) => write!(f, "writing the output: {e}"),
        }
    }
}

impl std::error::Error for InputError {}

/// What a line reader yields: spans with the process that recorded them.
pub type SpanFn<'a> = dyn FnMut(&ProcessKey, Span) -> io::Result<()> + 'a;

/// Where the readers put the spans they read.
pub trait SpanSink {
    /// One span of `process`.
    fn span(&mut self, process: &ProcessKey, span: Span) -> io::Result<()>;

    /// The spans of `process` that one line held, in order; leaves `spans` empty, with room
    /// for the next line (its own, or another vector's put in its place).
    fn spans(&mut self, process: &ProcessKey, spans: &mut Vec<Span>) -> io::Result<()> {
        for s in spans.drain(..) {
            self.span(process, s)?;
        }
        Ok(())
    }
}

impl SpanSink for &mut SpanFn<'_> {
    fn span(&mut self, process: &ProcessKey, span: Span) -> io::Result<()> {
        self(process, span)
    }
}

/// Reads every span of the file at `path` into `sink`, a line's spans as soon as it is read.
pub fn read_spans_into(path: &Path, sink: &mut dyn SpanSink) -> Result<ReadReport, InputError> {
    let file = File::open(path).map_err(|e| {
        InputError::Io(io::Error::new(e.kind(), format!("{}: {e}", path.display())))
    })?;
    read_from_into(file, &path.display().to_string(), sink)
}

/// Reads every span from `r` (named `name` in messages), handing each to `each`.
pub fn read_from(
    r: impl Read,
    name: &str,
    mut each: &mut SpanFn<'_>,
) -> Result<ReadReport, InputError> {
    read_from_into(r, name, &mut each)
}

fn read_from_into(
    r: impl Read,
    name: &str,
    each: &mut dyn SpanSink,
) -> Result<ReadReport, InputError> {
    let mut lines = Lines::new(r);
    let mut n = 0u64;
    // Decided by the first non-blank line.
    let mut reading: Option<(ReadReport, Box<dyn LineReader>)> = None;
    while let Some(line) = lines.next_line().map_err(InputError::Io)? {
        n += 1;
        let line = line.trim_ascii();
        if line.is_empty() {
            continue;
        }
        let (report, line_reader) = match &mut reading {
            Some(r) => r,
            None => {
                let format = detect(line)
                    .map_err(|why| InputError::Unrecognised(format!("{name} line {n}: {why}")))?;
                let line_reader: Box<dyn LineReader> = match format {
                    Format::OtlpJson => Box::<otlp_json::Reader>::default(),
                    Format::SpanLines => Box::new(span_lines::Reader::default()),
                    Format::TraceEvents => Box::new(trace_events::Reader::default()),
                };
                let report = ReadReport {
                    format,
                    lines: 0,
                    spans: 0,
                    skipped: Vec::new(),
                    skipped_count: 0,
                };
                reading.insert((report, line_reader))
            }
        };
        report.lines += 1;
        match line_reader.line(line, each) {
            Ok(spans) => report.spans += spans,
            Err(LineError::Bad(why)) => report.skip(n, why),
            Err(LineError::Output(e)) => return Err(InputError::Output(e)),
        }
    }
    let Some((mut report, mut line_reader)) = reading else {
        return Err(InputError::Unrecognised(format!(
            "{name}: empty: no spans to read"
        )));
    };
    match line_reader.finish(each) {
        Ok(spans) => report.spans += spans,
        Err(LineError::Bad(why)) => report.skip(n, why),
        Err(LineError::Output(e)) => return Err(InputError::Output(e)),
    }
    Ok(report)
}

/// Whether a field is there, whatever its value.
#[derive(Default)]
struct Present(bool);

impl<'de> serde::Deserialize<'de> for Present {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Present, D::Error> {
        serde::de::IgnoredAny::deserialize(d).map(|_| Present(true))
    }
}

/// The fields of a first line that tell its format.
#[derive(serde::Deserialize)]
struct TopFields {
    #[serde(default, rename = "resourceSpans")]
    resource_spans: Present,
    #[serde(default)]
    trace_id: Present,
    #[serde(default)]
    span_id: Present,
}

fn detect(first: &[u8]) -> Result<Format, String> {
    let t = first.trim_ascii();
    if t.starts_with(b"[") {
        return Ok(Format::TraceEvents);
    }
    // Only which fields are there: building the whole first line as values took as long as
    // reading a few thousand spans. What this cannot read (not an object, a repeated field)
    // goes through values, for the same answer or message.
    let fields = match serde_json::from_slice::<TopFields>(t) {
        Ok(f) => f,
        Err(_) => {
            let v: serde_json::Value =
                serde_json::from_slice(t).map_err(|e| format!("not JSON ({e})"))?;
            TopFields {
                resource_spans: Present(v.get("resourceSpans").is_some()),
                trace_id: Present(v.get("trace_id").is_some()),
                span_id: Present(v.get("span_id").is_some()),
            }
        }
    };
    if fields.resource_spans.0 {
        Ok(Format::OtlpJson)
    } else if fields.trace_id.0 && fields.span_id.0 {
        Ok(Format::SpanLines)
    } else {
        Err(
            "expected an OTLP/JSON object with \"resourceSpans\" (the OpenTelemetry Collector \
             file exporter's output), a slicetrace span line with \"trace_id\", or a trace-event \
             array starting with '['"
                .to_owned(),
        )
    }
}

/// Whether the direct OTLP/JSON reader, where it takes `line`, reads what the serde reader
/// does (for the fuzz target).
#[doc(hidden)]
pub fn direct_reader_agrees(line: &str) -> bool {
    match otlp_fast::read_line_reusing(line, &mut Vec::new()) {
        None => true,
        Some(groups) => otlp_json::serde_line(line).is_ok_and(|want| want == groups),
    }
}

pub(crate) enum LineError {
    /// The line is skipped, for this reason.
    Bad(String),
    Output(io::Error),
}

impl From<io::Error> for LineError {
    fn from(e: io::Error) -> LineError {
        LineError::Output(e)
    }
}

/// One format's reader: takes lines, yields spans; returns how many.
pub(crate) trait LineReader {
    fn line(&mut self, line: &[u8], each: &mut dyn SpanSink) -> Result<u64, LineError>;
    /// At the end of input: yields what was held.
    fn finish(&mut self, _each: &mut dyn SpanSink) -> Result<u64, LineError> {
        Ok(0)
    }
}

/// The process a resource names, from its attributes as (key, string value, integer value).
pub(crate) fn process_key<'a>(
    attrs: impl Iterator<Item = (&'a str, Option<&'a str>, Option<i64>)>,
) -> ProcessKey {
    let mut p = ProcessKey::default();
    for (key, string, int) in attrs {
        match key {
            "service.name" => p.service = string.unwrap_or_default().to_owned(),
            "host.name" => p.host = string.unwrap_or_default().to_owned(),
            "process.pid" => {
                p.pid = int
                    .map(|i| i as u64)
                    .or_else(|| string.and_then(|s| s.parse().ok()))
                    .unwrap_or(0)
            }
            _ => {}
        }
    }
    p
}

/// An id of exactly `digits` hex digits.
fn hex_id(s: &str, digits: usize, what: &str) -> Result<u128, LineError> {
    let v = (s.len() == digits)
        .then(|| hex::parse_hex(s).or_else(|| u128::from_str_radix(s, 16).ok()))
        .flatten();
    v.ok_or_else(|| LineError::Bad(format!("{what}: expected {digits} hex digits, found {s:?}")))
}

pub(crate) fn hex_u128(s: &str, what: &str) -> Result<u128, LineError> {
    hex_id(s, 32, what)
}

/// A span id; empty is none (0).
pub(crate) fn hex_u64(s: &str, what: &str) -> Result<u64, LineError> {
    if s.is_empty() {
        return Ok(0);
    }
    hex_id(s, 16, what).map(|v| v as u64)
}

/// A link's (trace id, span id) from their hex text.
pub(crate) fn hex_link(trace: &str, span: &str) -> Result<(u128, u64), LineError> {
    Ok((
        hex_u128(trace, "link trace id")?,
        hex_u64(span, "link span id")?,
    ))
}
