//! A span exporter that appends one JSON object per span to a local file: a trace to look at
//! with no collector running.

use opentelemetry::trace::{SpanKind, Status};
use opentelemetry::{Array, KeyValue, Value};
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use opentelemetry_sdk::Resource;
use slicetrace_spans::util::json_str;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Writes spans as JSON lines:
///
/// ```text
/// {"trace_id":"…32 hex…","span_id":"…16 hex…","parent_span_id":"…","name":"prefill",
///  "start_unix_nano":…,"end_unix_nano":…,"status":"unset"|"error","status_message":"…",
///  "attributes":{"rid":"…"},"events":[{"name":"…","time_unix_nano":…,"attributes":{}}],
///  "links":[{"trace_id":"…","span_id":"…"}],"kind":"internal","scope":"…","service":"…"}
/// ```
///
/// Each batch is written and flushed as it comes, so memory does not grow with the file and the
/// file holds every exported span even if the process is killed later.
#[derive(Debug)]
pub struct JsonLinesExporter {
    out: Mutex<BufWriter<File>>,
    service: Mutex<String>,
}

impl JsonLinesExporter {
    /// Creates (or truncates) the file at `path`.
    pub fn create(path: impl AsRef<Path>) -> std::io::Result<JsonLinesExporter> {
        Ok(JsonLinesExporter {
            out: Mutex::new(BufWriter::new(File::create(path)?)),
            service: Mutex::new(String::new()),
        })
    }
}

fn unix_nanos(t: SystemTime) -> u128 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// An attribute value as JSON; an array as a JSON array. A float that JSON cannot hold
/// (infinite, NaN) is written as its text.
pub(crate) fn json_value(out: &mut String, v: &Value) {
    match v {
        Value::Bool(b) => json_bool(out, *b),
        Value::I64(i) => json_i64(out, *i),
        Value::F64(f) => json_f64(out, *f),
        Value::Array(list) => match list {
            Array::Bool(xs) => json_list(out, xs, |o, x| json_bool(o, *x)),
            Array::I64(xs) => json_list(out, xs, |o, x| json_i64(o, *x)),
            Array::F64(xs) => json_list(out, xs, |o, x| json_f64(o, *x)),
            Array::String(xs) => json_list(out, xs, |o, x| json_str(o, x.as_str())),
            _ => json_str(out, &list.to_string()),
        },
        other => json_str(out, other.as_str().as_ref()),
    }
}

fn json_bool(out: &mut String, b: bool) {
    out.push_str(if b { "true" } else { "false" })
}

fn json_i64(out: &mut String, i: i64) {
    let _ = write!(out, "{i}");
}

fn json_f64(out: &mut String, f: f64) {
    if f.is_finite() {
        let _ = write!(out, "{f:?}");
    } else {
        json_str(out, &f.to_string())
    }
}

fn json_list<T>(out: &mut String, xs: &[T], mut one: impl FnMut(&mut String, &T)) {
    out.push('[');
    for (i, x) in xs.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        one(out, x);
    }
    out.push(']');
}

fn json_attrs(out: &mut String, attrs: &[KeyValue]) {
    out.push('{');
    for (i, kv) in attrs.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        json_str(out, kv.key.as_str());
        out.push(':');
        json_value(out, &kv.value);
    }
    out.push('}');
}

/// One span as one JSON object (no trailing newline).
pub fn span_json(out: &mut String, s: &SpanData, service: &str) {
    let _ = write!(
        out,
        "{{\"trace_id\":\"{}\",\"span_id\":\"{}\",\"parent_span_id\":\"{}\",\"name\":",
        s.span_context.trace_id(),
        s.span_context.span_id(),
        s.parent_span_id
    );
    json_str(out, &s.name);
    let _ = write!(
        out,
        ",\"start_unix_nano\":{},\"end_unix_nano\":{},\"status\":",
        unix_nanos(s.start_time),
        unix_nanos(s.end_time)
    );
    match &s.status {
        Status::Error { description } => {
            out.push_str("\"error\",\"status_message\":");
            json_str(out, description);
        }
        Status::Ok => out.push_str("\"ok\""),
        Status::Unset => out.push_str("\"unset\""),
    }
    out.push_str(",\"attributes\":");
    json_attrs(out, &s.attributes);
    out.push_str(",\"events\":[");
    for (i, e) in s.events.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"name\":");
        json_str(out, &e.name);
        let _ = write!(
            out,
            ",\"time_unix_nano\":{},\"attributes\":",
            unix_nanos(e.timestamp)
        );
        json_attrs(out, &e.attributes);
        out.push('}');
    }
    out.push_str("],\"links\":[");
    for (i, l) in s.links.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(
            out,
            "{{\"trace_id\":\"{}\",\"span_id\":\"{}\"}}",
            l.span_context.trace_id(),
            l.span_context.span_id()
        );
    }
    out.push_str("],\"kind\":");
    out.push_str(match s.span_kind {
        SpanKind::Internal => "\"internal\"",
        SpanKind::Server => "\"server\"",
        SpanKind::Client => "\"client\"",
        SpanKind::Producer => "\"producer\"",
        SpanKind::Consumer => "\"consumer\"",
    });
    out.push_str(",\"scope\":");
    json_str(out, s.instrumentation_scope.name());
    out.push_str(",\"service\":");
    json_str(out, service);
    out.push('}');
}

impl SpanExporter for JsonLinesExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let service = self.service.lock().map(|s| s.clone()).unwrap_or_default();
        let mut text = String::with_capacity(batch.len() * 400);
        for s in &batch {
            span_json(&mut text, s, &service);
            text.push('\n');
        }
        let mut out = self
            .out
            .lock()
            .map_err(|_| OTelSdkError::InternalFailure("writer poisoned".into()))?;
        out.write_all(text.as_bytes())
            .and_then(|_| out.flush())
            .map_err(|e| OTelSdkError::InternalFailure(e.to_string()))
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        let mut out = self
            .out
            .lock()
            .map_err(|_| OTelSdkError::InternalFailure("writer poisoned".into()))?;
        out.flush()
            .map_err(|e| OTelSdkError::InternalFailure(e.to_string()))
    }

    fn set_resource(&mut self, resource: &Resource) {
        let name = resource
            .get(&opentelemetry::Key::from_static_str("service.name"))
            .map(|v| v.as_str().into_owned())
            .unwrap_or_default();
        if let Ok(mut s) = self.service.lock() {
            *s = name;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nan_is_written_as_a_string() {
        let mut v = String::new();
        json_value(&mut v, &Value::F64(f64::NAN));
        assert_eq!(v, "\"NaN\"");
    }

    #[test]
    fn an_array_is_written_as_a_json_array() {
        let cases = [
            (Array::Bool(vec![true, false]), "[true,false]"),
            (Array::I64(vec![-1, 2]), "[-1,2]"),
            (Array::F64(vec![0.5, f64::INFINITY]), "[0.5,\"inf\"]"),
            (
                Array::String(vec!["a\"b".into(), "".into()]),
                "[\"a\\\"b\",\"\"]",
            ),
            (Array::I64(vec![]), "[]"),
        ];
        for (list, want) in cases {
            let mut v = String::new();
            json_value(&mut v, &Value::Array(list));
            assert_eq!(v, want);
            serde_json::from_str::<serde_json::Value>(&v).expect("valid JSON");
        }
    }
}
