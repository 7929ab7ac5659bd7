//! A direct reader for the common shape of OTLP/JSON lines: no escapes in strings, attribute
//! values that are strings, integers, booleans or bytes. It declines (returns `None`) anything
//! else — a line it would read differently, or one with an error to report — and the serde
//! reader in `otlp_json` takes that line instead, so both give the same spans and the same
//! messages, without serde's field matching and intermediate structs.

use super::scan::{decimal_u64, string_end};
use super::{hex_link, hex_u128, hex_u64};
use slicetrace_spans::model::{AttrValue, ProcessKey, Role, Span, SpanEvent};
use slicetrace_spans::schema;

/// Spans of one line, grouped by the process (resource) that recorded them.
pub(crate) type Groups = Vec<(ProcessKey, Vec<Span>)>;

/// The spans of `line`, or `None` where the serde reader must decide.
#[cfg(test)]
pub(crate) fn read_line(line: &str) -> Option<Groups> {
    read_line_reusing(line, &mut Vec::new())
}

/// The spans of `line`, or `None` where the serde reader must decide; the span vectors come
/// from `spare` (emptied ones of earlier lines) before new ones: a line holds hundreds of
/// spans, and a vector grown to that afresh for each line copied every span several times.
pub(crate) fn read_line_reusing(line: &str, spare: &mut Vec<Vec<Span>>) -> Option<Groups> {
    let mut p = Parser {
        s: line,
        i: 0,
        spare,
    };
    let mut groups = None;
    p.fields(&["resourceSpans"], |p, _| {
        groups = Some(p.list(Parser::resource_spans)?);
        Some(())
    })?;
    p.ws();
    (p.i == p.b().len()).then_some(())?;
    groups
}

struct Parser<'a, 'v> {
    s: &'a str,
    i: usize,
    spare: &'v mut Vec<Vec<Span>>,
}

/// An attribute value as read: which of the fields were there.
#[derive(Default)]
struct Any<'a> {
    string: Option<&'a str>,
    int: Option<i64>,
    boolean: Option<bool>,
    bytes: Option<&'a str>,
}

impl Any<'_> {
    fn attr(&self) -> AttrValue {
        if let Some(s) = self.string {
            AttrValue::Str(s.to_owned())
        } else if let Some(i) = self.int {
            AttrValue::Int(i)
        } else if let Some(b) = self.boolean {
            AttrValue::Bool(b)
        } else {
            AttrValue::Str(self.bytes.unwrap_or_default().to_owned())
        }
    }
}

impl<'a> Parser<'a, '_> {
    fn b(&self) -> &'a [u8] {
        self.s.as_bytes()
    }

    fn ws(&mut self) {
        while self
            .b()
            .get(self.i)
            .is_some_and(|c| matches!(c, b' ' | b'\t' | b'\n' | b'\r'))
        {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        self.ws();
        (self.b().get(self.i) == Some(&c)).then_some(())?;
        self.i += 1;
        Some(())
    }

    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.b().get(self.i).copied()
    }

    /// A string without escapes or control characters, borrowed from the line.
    fn str(&mut self) -> Option<&'a str> {
        self.eat(b'"')?;
        let start = self.i;
        let end = string_end(self.b(), start)?;
        self.i = end + 1;
        // Cut at two ASCII quotes of a `str`: on character boundaries.
        self.s.get(start..end)
    }

    /// The text of a JSON number, checked against the grammar.
    fn number(&mut self) -> Option<&'a str> {
        self.ws();
        let start = self.i;
        let digits = |p: &mut Parser| {
            let from = p.i;
            while p.b().get(p.i).is_some_and(u8::is_ascii_digit) {
                p.i += 1;
            }
            p.i > from
        };
        if self.b().get(self.i) == Some(&b'-') {
            self.i += 1;
        }
        let int_from = self.i;
        digits(self).then_some(())?;
        // No leading zeros.
        (self.b()[int_from] != b'0' || self.i - int_from == 1).then_some(())?;
        if self.b().get(self.i) == Some(&b'.') {
            self.i += 1;
            digits(self).then_some(())?;
        }
        if matches!(self.b().get(self.i), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.b().get(self.i), Some(b'+' | b'-')) {
                self.i += 1;
            }
            digits(self).then_some(())?;
        }
        self.s.get(start..self.i)
    }

    /// `{ "key": value, … }`, each value read by `field`.
    fn object(&mut self, mut field: impl FnMut(&mut Self, &'a str) -> Option<()>) -> Option<()> {
        self.eat(b'{')?;
        if self.peek()? == b'}' {
            self.i += 1;
            return Some(());
        }
        loop {
            let key = self.str()?;
            self.eat(b':')?;
            field(self, key)?;
            match self.peek()? {
                b',' => self.i += 1,
                b'}' => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// `[ item, … ]` folded into `acc` by `item`.
    fn array<T>(
        &mut self,
        mut acc: T,
        mut item: impl FnMut(&mut Self, &mut T) -> Option<()>,
    ) -> Option<T> {
        self.eat(b'[')?;
        if self.peek()? == b']' {
            self.i += 1;
            return Some(acc);
        }
        loop {
            item(self, &mut acc)?;
            match self.peek()? {
                b',' => self.i += 1,
                b']' => {
                    self.i += 1;
                    return Some(acc);
                }
                _ => return None,
            }
        }
    }

    /// Skips any value (checked as JSON), up to a depth well inside the serde reader's limit.
    fn skip(&mut self, depth: u32) -> Option<()> {
        (depth < 64).then_some(())?;
        match self.peek()? {
            b'{' => self.object(|p, _| p.skip(depth + 1)),
            b'[' => self.array((), |p, _| p.skip(depth + 1)),
            b'"' => self.str().map(drop),
            b't' => self.literal("true"),
            b'f' => self.literal("false"),
            // A null where the serde reader expects a value is its error to report.
            _ => self.number().map(drop),
        }
    }

    fn literal(&mut self, word: &str) -> Option<()> {
        self.b()[self.i..]
            .starts_with(word.as_bytes())
            .then_some(())?;
        self.i += word.len();
        Some(())
    }

    fn boolean(&mut self) -> Option<bool> {
        match self.peek()? {
            b't' => self.literal("true").map(|_| true),
            b'f' => self.literal("false").map(|_| false),
            _ => None,
        }
    }

    /// The text of a 64-bit integer as OTLP/JSON writes it: a string of one, or a number.
    fn int_text(&mut self) -> Option<&'a str> {
        if self.peek()? == b'"' {
            self.str()
        } else {
            self.number()
        }
    }

    fn int<T: std::str::FromStr>(&mut self) -> Option<T> {
        self.int_text()?.parse().ok()
    }

    /// A timestamp.
    fn uint(&mut self) -> Option<u64> {
        decimal_u64(self.int_text()?)
    }

    /// An object whose fields named in `known` are read by `field`, given the field's place
    /// in `known` (the key compared once, not again by name), each at most once (a repeated
    /// one is the serde reader's error to report); other fields are skipped.
    fn fields(
        &mut self,
        known: &[&str],
        mut field: impl FnMut(&mut Self, usize) -> Option<()>,
    ) -> Option<()> {
        let mut seen = 0u32;
        self.object(|p, key| match known.iter().position(|k| *k == key) {
            Some(i) => {
                (seen & 1 << i == 0).then_some(())?;
                seen |= 1 << i;
                field(p, i)
            }
            None => p.skip(0),
        })
    }

    /// `[ item, … ]`, each read by `item`.
    fn list<T>(&mut self, mut item: impl FnMut(&mut Self) -> Option<T>) -> Option<Vec<T>> {
        self.array(Vec::new(), |p, out| {
            out.push(item(p)?);
            Some(())
        })
    }

    fn resource_spans(&mut self) -> Option<(ProcessKey, Vec<Span>)> {
        let mut process = ProcessKey::default();
        let (mut spans, mut older) = (self.spare.pop().unwrap_or_default(), Vec::new());
        // `instrumentationLibrarySpans`: the name before OTLP 0.19.
        let known = ["resource", "scopeSpans", "instrumentationLibrarySpans"];
        self.fields(&known, |p, field| match field {
            0 => {
                process = p.resource()?;
                Some(())
            }
            1 => p.array((), |p, _| p.scope_spans(&mut spans)),
            _ => p.array((), |p, _| p.scope_spans(&mut older)),
        })?;
        spans.append(&mut older);
        Some((process, spans))
    }

    fn resource(&mut self) -> Option<ProcessKey> {
        let mut process = ProcessKey::default();
        self.fields(&["attributes"], |p, _| {
            let kvs = p.list(Self::key_value)?;
            process = super::process_key(kvs.iter().map(|(k, v)| (*k, v.string, v.int)));
            Some(())
        })?;
        Some(process)
    }

    fn scope_spans(&mut self, out: &mut Vec<Span>) -> Option<()> {
        self.fields(&["spans"], |p, _| {
            p.array((), |p, _| {
                out.push(p.span()?);
                Some(())
            })
        })
    }

    fn key_value(&mut self) -> Option<(&'a str, Any<'a>)> {
        let (mut key, mut value) = (None, Any::default());
        self.fields(&["key", "value"], |p, field| {
            match field {
                0 => key = Some(p.str()?),
                _ => value = p.any()?,
            }
            Some(())
        })?;
        Some((key?, value))
    }

    /// An `AnyValue` with exactly one of the fields read here; arrays, maps and doubles are
    /// left to the serde reader.
    fn any(&mut self) -> Option<Any<'a>> {
        let mut v = Any::default();
        let mut n = 0;
        self.object(|p, k| {
            n += 1;
            match k {
                "stringValue" => v.string = Some(p.str()?),
                "intValue" => v.int = Some(p.int()?),
                "boolValue" => v.boolean = Some(p.boolean()?),
                "bytesValue" => v.bytes = Some(p.str()?),
                _ => return None,
            }
            Some(())
        })?;
        (n <= 1).then_some(v)
    }

    fn attributes(&mut self) -> Option<Vec<(String, AttrValue)>> {
        self.list(|p| {
            let (k, v) = p.key_value()?;
            Some((k.to_owned(), v.attr()))
        })
    }

    fn span(&mut self) -> Option<Span> {
        let (mut trace, mut id, mut parent) = (None, None, "");
        let (mut start, mut end) = (None, None);
        let mut s = Span {
            trace_id: 0,
            span_id: 0,
            parent: 0,
            name: String::new(),
            start_ns: 0,
            end_ns: 0,
            attrs: Vec::new(),
            events: Vec::new(),
            links: Vec::new(),
            error: None,
            role: Role::Slice,
        };
        let (mut error, mut message) = (false, "");
        let known = [
            "traceId",
            "spanId",
            "parentSpanId",
            "name",
            "startTimeUnixNano",
            "endTimeUnixNano",
            "attributes",
            "events",
            "links",
            "status",
        ];
        self.fields(&known, |p, field| {
            match field {
                0 => trace = Some(p.str()?),
                1 => id = Some(p.str()?),
                2 => parent = p.str()?,
                3 => s.name = p.str()?.to_owned(),
                4 => start = Some(p.uint()?),
                5 => end = Some(p.uint()?),
                6 => s.attrs = p.attributes()?,
                7 => s.events = p.list(Self::event)?,
                8 => s.links = p.list(Self::link)?,
                _ => (error, message) = p.status()?,
            }
            Some(())
        })?;
        s.trace_id = hex_u128(trace?, "traceId").ok()?;
        s.span_id = hex_u64(id?, "spanId").ok()?;
        s.parent = hex_u64(parent, "parentSpanId").ok()?;
        s.start_ns = start?;
        s.end_ns = end?;
        s.error = error.then(|| message.to_owned());
        s.role = schema::role_of(&s.attrs);
        Some(s)
    }

    fn event(&mut self) -> Option<SpanEvent> {
        let mut ev = SpanEvent {
            name: String::new(),
            time_ns: 0,
            attrs: Vec::new(),
        };
        let mut time = None;
        self.fields(&["timeUnixNano", "name", "attributes"], |p, field| {
            match field {
                0 => time = Some(p.uint()?),
                1 => ev.name = p.str()?.to_owned(),
                _ => ev.attrs = p.attributes()?,
            }
            Some(())
        })?;
        ev.time_ns = time?;
        Some(ev)
    }

    fn link(&mut self) -> Option<(u128, u64)> {
        let (mut trace, mut span) = (None, None);
        self.fields(&["traceId", "spanId"], |p, field| {
            match field {
                0 => trace = Some(p.str()?),
                _ => span = Some(p.str()?),
            }
            Some(())
        })?;
        hex_link(trace?, span?).ok()
    }

    /// Whether the status is an error, and its message.
    fn status(&mut self) -> Option<(bool, &'a str)> {
        let (mut error, mut message) = (false, "");
        self.fields(&["code", "message"], |p, field| {
            match field {
                0 => {
                    error = match p.peek()? {
                        b'"' => p.str()? == "STATUS_CODE_ERROR",
                        b't' | b'f' => p.boolean().map(|_| false)?,
                        _ => p.number()?.parse::<u64>().ok() == Some(2),
                    }
                }
                _ => message = p.str()?,
            }
            Some(())
        })?;
        Some((error, message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::otlp_json::serde_line;

    /// The direct reader either declines a line or reads exactly what the serde reader does.
    fn same_as_serde(line: &str) -> bool {
        match read_line(line) {
            None => false,
            Some(groups) => {
                let Ok(want) = serde_line(line) else {
                    panic!("taken directly, refused by serde: {line}");
                };
                assert!(groups == want, "{line}\n{groups:?}\n{want:?}");
                true
            }
        }
    }

    const SPAN: &str = r#"{"traceId":"0af7651916cd43dd8448eb211c80319c","spanId":"b7ad6b7169203331","parentSpanId":"00f067aa0ba902b7","name":"decode","kind":1,"startTimeUnixNano":"1764300000000000000","endTimeUnixNano":1764300000000150000,"attributes":[{"key":"rid","value":{"stringValue":"req-1"}},{"key":"n","value":{"intValue":"7"}},{"key":"ok","value":{"boolValue":true}},{"key":"b","value":{"bytesValue":"AAE="}},{"key":"e","value":{}},{"key":"m"}],"events":[{"timeUnixNano":"1764300000000100000","name":"ev","attributes":[{"key":"k","value":{"intValue":-3}}],"droppedAttributesCount":0}],"links":[{"traceId":"0af7651916cd43dd8448eb211c80319c","spanId":"00f067aa0ba902b7","flags":256}],"status":{"code":2,"message":"bad"},"flags":257}"#;

    fn line(resource: &str, spans: &str) -> String {
        format!(
            r#"{{"resourceSpans":[{{"resource":{{"attributes":[{resource}]}},"scopeSpans":[{{"scope":{{"name":"s","version":"1","attributes":[]}},"spans":[{spans}]}}],"schemaUrl":""}}]}}"#
        )
    }

    const PROC: &str = r#"{"key":"service.name","value":{"stringValue":"svc"}},{"key":"host.name","value":{"stringValue":"h"}},{"key":"process.pid","value":{"intValue":"4242"}}"#;

    #[test]
    fn the_common_shape_is_read_directly_and_as_serde_reads_it() {
        for l in [
            line(PROC, SPAN),
            line(PROC, &format!("{SPAN},{SPAN}")),
            line("", SPAN),
            line(r#"{"key":"process.pid","value":{"stringValue":"17"}}"#, SPAN),
            line(PROC, ""),
            // Whitespace anywhere, fields in any order, a status as text, numbers as numbers.
            " { \"resourceSpans\" : [ { \"scopeSpans\" : [ { \"spans\" : [ { \"endTimeUnixNano\" : 5 , \"startTimeUnixNano\" : 4, \"spanId\" : \"0000000000000001\" , \"traceId\" : \"0000000000000000000000000000000a\", \"status\" : { \"code\" : \"STATUS_CODE_ERROR\" } } ] } ] , \"resource\" : { } } ] } ".to_owned(),
            // The name before OTLP 0.19, after the current one.
            r#"{"resourceSpans":[{"instrumentationLibrarySpans":[{"spans":[SPAN]}],"scopeSpans":[{"spans":[SPAN]}]}]}"#.replace("SPAN", SPAN),
            // Unknown fields of every kind are skipped.
            r#"{"x":[1,-2.5e-3,true,false,{"y":[[]]},"z"],"resourceSpans":[]}"#.to_owned(),
            r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"0000000000000000000000000000000a","spanId":"0000000000000001","startTimeUnixNano":"1","endTimeUnixNano":"2","status":{"code":0},"extra":{"a":[1.0]}}]}]}]}"#.to_owned(),
        ] {
            assert!(same_as_serde(&l), "declined: {l}");
        }
    }

    #[test]
    fn what_it_does_not_read_exactly_it_declines() {
        let declined = [
            // Escapes, nulls, doubles, arrays and maps as values: the serde reader's.
            line(PROC, &SPAN.replace("req-1", r"req\u002d1")),
            line(
                PROC,
                &SPAN.replace(r#"{"intValue":"7"}"#, r#"{"doubleValue":1.5}"#),
            ),
            line(
                PROC,
                &SPAN.replace(r#"{"intValue":"7"}"#, r#"{"arrayValue":{"values":[]}}"#),
            ),
            line(
                PROC,
                &SPAN.replace(
                    r#"{"intValue":"7"}"#,
                    r#"{"intValue":"7","stringValue":"x"}"#,
                ),
            ),
            line(PROC, &SPAN.replace(r#""kind":1"#, r#""kind":null"#)),
            // Errors to report: bad ids, missing or repeated fields, bad numbers, bad JSON.
            line(PROC, &SPAN.replace("b7ad6b7169203331", "b7ad6b71692033")),
            line(
                PROC,
                &SPAN.replace(r#""name":"decode","#, r#""name":"decode","name":"again","#),
            ),
            line(
                PROC,
                &SPAN.replace(r#""startTimeUnixNano":"1764300000000000000","#, ""),
            ),
            line(PROC, &SPAN.replace("1764300000000150000", "-1")),
            line(PROC, &SPAN.replace("1764300000000150000", "1.5e3")),
            line(PROC, &SPAN.replace("1764300000000150000", "017")),
            line(PROC, &SPAN.replace(r#""kind":1"#, r#""kind":1,"#)),
            line(PROC, SPAN) + "x",
            line(PROC, SPAN)[..200].to_owned(),
            r#"{"resourceSpans":[],"resourceSpans":[]}"#.to_owned(),
            r#"{"resourcespans":[]}"#.to_owned(),
            "[]".to_owned(),
        ];
        for l in declined {
            assert!(!same_as_serde(&l), "read directly: {l}");
        }
    }

    #[test]
    fn synthetic_input_is_read_directly() {
        let mut out = Vec::new();
        crate::synthetic::write_otlp_json(&mut out, 30, 7).unwrap();
        let text = String::from_utf8(out).unwrap();
        for l in text.lines() {
            assert!(same_as_serde(l), "declined: {l}");
        }
    }
}
