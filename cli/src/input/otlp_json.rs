//! OTLP/JSON as the OpenTelemetry Collector's file exporter writes it: one
//! `ExportTraceServiceRequest` per line, ids in hex, 64-bit integers as strings or numbers.

use super::{hex_link, hex_u128, hex_u64, LineError, LineReader, SpanSink};
use serde::de::{self, Deserializer};
use serde::Deserialize;
use slicetrace_spans::model::{AttrValue, ProcessKey, Span, SpanEvent};
use slicetrace_spans::schema;
use std::borrow::Cow;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TracesData<'a> {
    #[serde(borrow)]
    resource_spans: Vec<ResourceSpans<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ResourceSpans<'a> {
    #[serde(default)]
    resource: Resource,
    #[serde(default, borrow)]
    scope_spans: Vec<ScopeSpans<'a>>,
    /// The name before OTLP 0.19.
    #[serde(default, borrow)]
    instrumentation_library_spans: Vec<ScopeSpans<'a>>,
}

#[derive(Default, Deserialize)]
struct Resource {
    #[serde(default)]
    attributes: Vec<KeyValue>,
}

#[derive(Deserialize)]
struct ScopeSpans<'a> {
    #[serde(default, borrow)]
    spans: Vec<OtlpSpan<'a>>,
}

/// Ids are borrowed from the line (no copy) unless they hold escapes.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OtlpSpan<'a> {
    #[serde(borrow)]
    trace_id: Cow<'a, str>,
    #[serde(borrow)]
    span_id: Cow<'a, str>,
    #[serde(default, borrow)]
    parent_span_id: Cow<'a, str>,
    #[serde(default)]
    name: String,
    #[serde(deserialize_with = "u64_str")]
    start_time_unix_nano: u64,
    #[serde(deserialize_with = "u64_str")]
    end_time_unix_nano: u64,
    #[serde(default)]
    attributes: Vec<KeyValue>,
    #[serde(default)]
    events: Vec<OtlpEvent>,
    #[serde(default, borrow)]
    links: Vec<OtlpLink<'a>>,
    #[serde(default)]
    status: Status,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OtlpEvent {
    #[serde(deserialize_with = "u64_str")]
    time_unix_nano: u64,
    #[serde(default)]
    name: String,
    #[serde(default)]
    attributes: Vec<KeyValue>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OtlpLink<'a> {
    #[serde(borrow)]
    trace_id: Cow<'a, str>,
    #[serde(borrow)]
    span_id: Cow<'a, str>,
}

#[derive(Default, Deserialize)]
struct Status {
    #[serde(default)]
    code: serde_json::Value,
    #[serde(default)]
    message: String,
}

#[derive(Deserialize)]
struct KeyValue {
    key: String,
    #[serde(default)]
    value: AnyValue,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AnyValue {
    string_value: Option<String>,
    #[serde(default, deserialize_with = "opt_i64_str")]
    int_value: Option<i64>,
    double_value: Option<f64>,
    bool_value: Option<bool>,
    array_value: Option<serde_json::Value>,
    kvlist_value: Option<serde_json::Value>,
    bytes_value: Option<String>,
}

/// A 64-bit integer as OTLP/JSON writes it: a string of digits, or a number.
struct U64Visitor;

impl de::Visitor<'_> for U64Visitor {
    type Value = u64;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an unsigned integer, or a string of one")
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
        Ok(v)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
        u64::try_from(v).map_err(E::custom)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
        v.parse().map_err(E::custom)
    }
}

/// The same for a signed integer.
struct I64Visitor;

impl de::Visitor<'_> for I64Visitor {
    type Value = Option<i64>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an integer, or a string of one")
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Option<i64>, E> {
        i64::try_from(v).map(Some).map_err(E::custom)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Option<i64>, E> {
        Ok(Some(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Option<i64>, E> {
        v.parse().map(Some).map_err(E::custom)
    }
}

fn u64_str<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    d.deserialize_any(U64Visitor)
}

fn opt_i64_str<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    d.deserialize_any(I64Visitor)
}

impl AnyValue {
    fn into_attr(self) -> AttrValue {
        if let Some(s) = self.string_value {
            AttrValue::Str(s)
        } else if let Some(i) = self.int_value {
            AttrValue::Int(i)
        } else if let Some(f) = self.double_value {
            AttrValue::F64(f)
        } else if let Some(b) = self.bool_value {
            AttrValue::Bool(b)
        } else if let Some(v) = self.array_value.or(self.kvlist_value) {
            AttrValue::Str(v.to_string())
        } else {
            AttrValue::Str(self.bytes_value.unwrap_or_default())
        }
    }
}

fn attrs(kvs: Vec<KeyValue>) -> Vec<(String, AttrValue)> {
    kvs.into_iter()
        .map(|kv| (kv.key, kv.value.into_attr()))
        .collect()
}

fn process_of(resource: &Resource) -> ProcessKey {
    super::process_key(resource.attributes.iter().map(|kv| {
        let v = &kv.value;
        (kv.key.as_str(), v.string_value.as_deref(), v.int_value)
    }))
}

fn is_error(code: &serde_json::Value) -> bool {
    code.as_u64() == Some(2) || code.as_str() == Some("STATUS_CODE_ERROR")
}

fn span_of(s: OtlpSpan<'_>) -> Result<Span, LineError> {
    let links = s
        .links
        .into_iter()
        .map(|l| hex_link(&l.trace_id, &l.span_id))
        .collect::<Result<Vec<_>, LineError>>()?;
    let own_attrs = attrs(s.attributes);
    Ok(Span {
        trace_id: hex_u128(&s.trace_id, "traceId")?,
        span_id: hex_u64(&s.span_id, "spanId")?,
        parent: hex_u64(&s.parent_span_id, "parentSpanId")?,
        name: s.name,
        start_ns: s.start_time_unix_nano,
        end_ns: s.end_time_unix_nano,
        role: schema::role_of(&own_attrs),
        attrs: own_attrs,
        events: s
            .events
            .into_iter()
            .map(|e| SpanEvent {
                name: e.name,
                time_ns: e.time_unix_nano,
                attrs: attrs(e.attributes),
            })
            .collect(),
        links,
        error: is_error(&s.status.code).then_some(s.status.message),
    })
}

#[derive(Default)]
pub(crate) struct Reader {
    /// Emptied span vectors, for the direct reader to fill again.
    spare: Vec<Vec<Span>>,
}

/// Emptied span vectors kept: one per process of a line, for the few processes a line has.
const SPARE_VECS: usize = 8;
/// Spans a kept vector may have room for: past that (a rare, huge line) it is freed, so that
/// the spare ones never hold more than a few megabytes.
const SPARE_SPANS: usize = 1 << 14;

impl LineReader for Reader {
    fn line(&mut self, line: &[u8], each: &mut dyn SpanSink) -> Result<u64, LineError> {
        // One UTF-8 check for the whole line; the parser then skips it per string.
        let line = if line.is_ascii() {
            // SAFETY: ASCII is UTF-8. Lines are almost always ASCII, and that check runs a
            // word at a time where the full one goes byte by byte.
            unsafe { std::str::from_utf8_unchecked(line) }
        } else {
            std::str::from_utf8(line)
                .map_err(|e| LineError::Bad(format!("not UTF-8 text ({e})")))?
        };
        let groups = match super::otlp_fast::read_line_reusing(line, &mut self.spare) {
            Some(groups) => groups,
            None => serde_line(line)?,
        };
        let n = groups.iter().map(|(_, s)| s.len() as u64).sum();
        for (p, mut spans) in groups {
            each.spans(&p, &mut spans)?;
            // Emptied, or another vector with room in its place: filled by a later line.
            if self.spare.len() < SPARE_VECS && (1..=SPARE_SPANS).contains(&spans.capacity()) {
                self.spare.push(spans);
            }
        }
        Ok(n)
    }
}

/// The spans of a line read through serde: any line the direct reader declines.
pub(crate) fn serde_line(line: &str) -> Result<super::otlp_fast::Groups, LineError> {
    let data: TracesData = serde_json::from_str(line).map_err(|e| {
        LineError::Bad(if e.is_eof() {
            format!("truncated: the line ends inside a JSON value ({e})")
        } else if e.is_syntax() {
            format!("not JSON ({e})")
        } else {
            format!("not an OTLP/JSON traces object ({e})")
        })
    })?;
    // A line is taken whole or not at all.
    let mut groups = Vec::with_capacity(data.resource_spans.len());
    for rs in data.resource_spans {
        let mut spans = Vec::new();
        for ss in rs
            .scope_spans
            .into_iter()
            .chain(rs.instrumentation_library_spans)
        {
            for s in ss.spans {
                spans.push(span_of(s)?);
            }
        }
        groups.push((process_of(&rs.resource), spans));
    }
    Ok(groups)
}
