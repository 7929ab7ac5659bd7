//! The span model the trace-event writer reads: what an exported span says, independent of where
//! it came from (this process's drainer, a collector's OTLP/JSON file, a trace-event file).

/// An attribute value.
#[derive(Clone, Debug, PartialEq)]
pub enum AttrValue {
    Str(String),
    Int(i64),
    F64(f64),
    Bool(bool),
}

impl AttrValue {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            AttrValue::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<i64> {
        match self {
            AttrValue::Int(i) => Some(*i),
            AttrValue::Str(s) => s.parse().ok(),
            _ => None,
        }
    }
}

/// A span event (an instant inside a span).
#[derive(Clone, Debug, PartialEq)]
pub struct SpanEvent {
    pub name: String,
    pub time_ns: u64,
    pub attrs: Vec<(String, AttrValue)>,
}

/// The process that recorded a span, from its resource.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct ProcessKey {
    pub service: String,
    pub host: String,
    /// `process.pid` of the resource; 0 when the resource does not say.
    pub pid: u64,
}

/// One finished span.
#[derive(Clone, Debug, PartialEq)]
pub struct Span {
    pub trace_id: u128,
    pub span_id: u64,
    /// 0 for a root span.
    pub parent: u64,
    pub name: String,
    pub start_ns: u64,
    pub end_ns: u64,
    pub attrs: Vec<(String, AttrValue)>,
    pub events: Vec<SpanEvent>,
    /// (trace id, span id) of each linked span.
    pub links: Vec<(u128, u64)>,
    /// The status message when the span ended in error.
    pub error: Option<String>,
    /// Where the span stands in the tree: decided once, where the span enters the model
    /// (from its attributes by [`crate::schema::role_of`], or by what the input says it is).
    pub role: Role,
}

/// What a span stands for in the Request → Thread → Slice tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// A request's span in one process.
    Request,
    /// A request's presence on one thread.
    Thread,
    /// Work on a thread.
    Slice,
}

impl Span {
    pub fn attr(&self, key: &str) -> Option<&AttrValue> {
        self.attrs.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
}
