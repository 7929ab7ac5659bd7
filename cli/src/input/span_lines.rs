//! slicetrace's JSON-lines span dump (`JsonLinesExporter`): one span object per line.

use super::{hex_link, hex_u128, hex_u64, LineError, LineReader, SpanSink};
use serde::Deserialize;
use serde_json::{Map, Value};
use slicetrace_spans::model::{AttrValue, ProcessKey, Span, SpanEvent};
use slicetrace_spans::schema;

#[derive(Deserialize)]
struct Line {
    trace_id: String,
    span_id: String,
    #[serde(default)]
    parent_span_id: String,
    name: String,
    start_unix_nano: u64,
    end_unix_nano: u64,
    #[serde(default)]
    status: String,
    #[serde(default)]
    status_message: String,
    #[serde(default)]
    attributes: Map<String, Value>,
    #[serde(default)]
    events: Vec<Event>,
    #[serde(default)]
    links: Vec<Link>,
    #[serde(default)]
    service: String,
}

#[derive(Deserialize)]
struct Event {
    name: String,
    time_unix_nano: u64,
    #[serde(default)]
    attributes: Map<String, Value>,
}

#[derive(Deserialize)]
struct Link {
    trace_id: String,
    span_id: String,
}

pub(crate) fn json_attrs(m: Map<String, Value>) -> Vec<(String, AttrValue)> {
    m.into_iter()
        .map(|(k, v)| {
            let a = match v {
                Value::String(s) => AttrValue::Str(s),
                Value::Bool(b) => AttrValue::Bool(b),
                Value::Number(n) => match n.as_i64() {
                    Some(i) => AttrValue::Int(i),
                    None => AttrValue::F64(n.as_f64().unwrap_or(f64::NAN)),
                },
                other => AttrValue::Str(other.to_string()),
            };
            (k, a)
        })
        .collect()
}

#[derive(Default)]
pub(crate) struct Reader {
    process: ProcessKey,
}

impl LineReader for Reader {
    fn line(&mut self, line: &[u8], each: &mut dyn SpanSink) -> Result<u64, LineError> {
        let l: Line = serde_json::from_slice(line).map_err(|e| {
            LineError::Bad(if e.is_eof() {
                format!("truncated: the line ends inside a JSON value ({e})")
            } else {
                format!("not a slicetrace span line ({e})")
            })
        })?;
        let links = l
            .links
            .iter()
            .map(|k| hex_link(&k.trace_id, &k.span_id))
            .collect::<Result<Vec<_>, LineError>>()?;
        let attrs = json_attrs(l.attributes);
        let span = Span {
            role: schema::role_of(&attrs),
            trace_id: hex_u128(&l.trace_id, "trace_id")?,
            span_id: hex_u64(&l.span_id, "span_id")?,
            parent: hex_u64(&l.parent_span_id, "parent_span_id")?,
            name: l.name,
            start_ns: l.start_unix_nano,
            end_ns: l.end_unix_nano,
            attrs,
            events: l
                .events
                .into_iter()
                .map(|e| SpanEvent {
                    name: e.name,
                    time_ns: e.time_unix_nano,
                    attrs: json_attrs(e.attributes),
                })
                .collect(),
            links,
            error: (l.status == "error").then_some(l.status_message),
        };
        if self.process.service != l.service {
            self.process.service = l.service;
        }
        each.span(&self.process, span)?;
        Ok(1)
    }
}
