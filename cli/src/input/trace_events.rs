//! slicetrace's own trace-event files, read back into spans (to merge several processes' files,
//! or to summarise one). Slices carry their ids, links and attributes in `args`; instants are
//! put back into the slice around them; flow events are redrawn from the links. A process
//! named without the time-origin argument is another tool's (a profiler trace merged in): its
//! events are passed over.

use super::span_lines::json_attrs;
use super::{hex_link, hex_u128, hex_u64, LineError, LineReader, SpanSink};
use serde_json::{Map, Value};
use slicetrace_spans::model::{AttrValue, ProcessKey, Role, Span, SpanEvent};
use slicetrace_spans::schema::{self, EPOCH_ARG};
use std::collections::{HashMap, HashSet};

#[derive(Default)]
pub(crate) struct Reader {
    processes: HashMap<u64, (ProcessKey, u64)>,
    /// Pids whose `process_name` has no time origin: not slicetrace's.
    foreign: HashSet<u64>,
    requests: HashMap<String, Span>,
    /// Per track, slices that may still get instants: those not yet ended at the track's
    /// latest event.
    open: HashMap<(u64, u64), Vec<Span>>,
    last_ns: u64,
}

fn bad(what: impl Into<String>) -> LineError {
    LineError::Bad(what.into())
}

fn field_u64(e: &Map<String, Value>, k: &str) -> Result<u64, LineError> {
    e.get(k)
        .and_then(Value::as_u64)
        .ok_or_else(|| bad(format!("event without an integer \"{k}\"")))
}

fn field_f64(e: &Map<String, Value>, k: &str) -> Result<f64, LineError> {
    e.get(k)
        .and_then(Value::as_f64)
        .ok_or_else(|| bad(format!("event without a numeric \"{k}\"")))
}

fn text(v: Option<&Value>) -> String {
    v.and_then(Value::as_str).unwrap_or_default().to_owned()
}

/// The process a `process_name` event names.
fn parse_process(name: &str) -> ProcessKey {
    let (service, pid, host) = schema::parse_process_title(name);
    ProcessKey { service, host, pid }
}

/// The label and ranks a thread's own track carries in its `thread_name` args; none for a
/// track that carries no label (an overlap lane, the unplaced track, an unlabelled thread, or
/// an older file).
fn thread_fields(args: &Value) -> Option<(String, Option<i64>, Option<i64>)> {
    let label = args.get(schema::THREAD_LABEL)?.as_str()?.to_owned();
    let rank = |k| args.get(k).and_then(Value::as_i64);
    Some((label, rank(schema::TP_RANK), rank(schema::DP_RANK)))
}

/// A span of `role` from an event: its name, and from its `args` the ids, links and error; the
/// other args are its attributes.
fn span_from_args(
    e: &Map<String, Value>,
    role: Role,
    start: u64,
    end: u64,
) -> Result<Span, LineError> {
    let mut args = match e.get("args") {
        Some(Value::Object(m)) => m.clone(),
        _ => Map::new(),
    };
    let trace_id = hex_u128(&text(args.get(schema::ARG_TRACE_ID)), "args.trace_id")?;
    let span_id = hex_u64(&text(args.get(schema::ARG_SPAN_ID)), "args.span_id")?;
    let parent = hex_u64(
        &text(args.get(schema::ARG_PARENT_SPAN_ID)),
        "args.parent_span_id",
    )?;
    let mut links = Vec::new();
    if let Some(Value::Array(ls)) = args.get(schema::ARG_LINKS) {
        for l in ls {
            let l = l.as_str().unwrap_or_default();
            let (t, s) = l.split_once('-').unwrap_or((l, ""));
            links.push(hex_link(t, s)?);
        }
    }
    let error = args
        .get(schema::ARG_ERROR)
        .and_then(Value::as_str)
        .map(str::to_owned);
    for k in [
        schema::ARG_TRACE_ID,
        schema::ARG_SPAN_ID,
        schema::ARG_PARENT_SPAN_ID,
        schema::ARG_LINKS,
        schema::ARG_ERROR,
    ] {
        args.remove(k);
    }
    Ok(Span {
        trace_id,
        span_id,
        parent,
        name: text(e.get("name")),
        start_ns: start,
        end_ns: end,
        attrs: json_attrs(args),
        events: Vec::new(),
        links,
        error,
        role,
    })
}

impl Reader {
    fn ns(&self, pid: u64, us: f64) -> u64 {
        let epoch = self.processes.get(&pid).map_or(0, |p| p.1);
        epoch.saturating_add((us * 1000.0).round().max(0.0) as u64)
    }

    fn process(&self, pid: u64) -> ProcessKey {
        self.processes
            .get(&pid)
            .map(|p| p.0.clone())
            .unwrap_or_else(|| ProcessKey {
                service: format!("process {pid}"),
                ..ProcessKey::default()
            })
    }

    /// Yields the slices of track `key` that ended before `ts`.
    fn settle(
        &mut self,
        key: (u64, u64),
        ts: u64,
        each: &mut dyn SpanSink,
    ) -> Result<u64, LineError> {
        let Some(open) = self.open.get_mut(&key) else {
            return Ok(0);
        };
        let done: Vec<Span> = {
            let (done, keep): (Vec<Span>, Vec<Span>) = open.drain(..).partition(|s| s.end_ns < ts);
            *open = keep;
            done
        };
        let n = done.len() as u64;
        let p = self.process(key.0);
        for s in done {
            each.span(&p, s)?;
        }
        Ok(n)
    }

    fn slice(&mut self, e: Map<String, Value>, each: &mut dyn SpanSink) -> Result<u64, LineError> {
        let pid = field_u64(&e, "pid")?;
        let tid = field_u64(&e, "tid")?;
        let start = self.ns(pid, field_f64(&e, "ts")?);
        let end = start.saturating_add((field_f64(&e, "dur")? * 1000.0).round().max(0.0) as u64);
        let mut span = span_from_args(&e, Role::Slice, start, end)?;
        // The thread is the slice's `thread.id` (its track may be an overlap lane's).
        if span.attr(schema::THREAD_ID).is_none() {
            span.attrs
                .push((schema::THREAD_ID.into(), AttrValue::Int(tid as i64)));
        }
        let n = self.settle((pid, tid), start, each)?;
        self.open.entry((pid, tid)).or_default().push(span);
        self.last_ns = self.last_ns.max(end);
        Ok(n)
    }

    fn instant(
        &mut self,
        e: Map<String, Value>,
        each: &mut dyn SpanSink,
    ) -> Result<u64, LineError> {
        let pid = field_u64(&e, "pid")?;
        let tid = field_u64(&e, "tid")?;
        let ts = self.ns(pid, field_f64(&e, "ts")?);
        // Checked before anything is yielded, so a refused line yields nothing.
        let inside = self
            .open
            .get(&(pid, tid))
            .is_some_and(|open| open.iter().any(|s| s.start_ns <= ts && ts <= s.end_ns));
        if !inside {
            return Err(bad("instant outside any slice of its track"));
        }
        let n = self.settle((pid, tid), ts, each)?;
        let attrs = match e.get("args") {
            Some(Value::Object(m)) => json_attrs(m.clone()),
            _ => Vec::new(),
        };
        let inner = self.open.get_mut(&(pid, tid)).and_then(|open| {
            open.iter_mut()
                .filter(|s| s.start_ns <= ts && ts <= s.end_ns)
                .min_by_key(|s| s.end_ns - s.start_ns)
        });
        match inner {
            Some(s) => s.events.push(SpanEvent {
                name: text(e.get("name")),
                time_ns: ts,
                attrs,
            }),
            None => return Err(bad("instant outside any slice of its track")),
        }
        Ok(n)
    }

    fn request(
        &mut self,
        ph: &str,
        e: Map<String, Value>,
        each: &mut dyn SpanSink,
    ) -> Result<u64, LineError> {
        let pid = field_u64(&e, "pid")?;
        let ts = self.ns(pid, field_f64(&e, "ts")?);
        let id = text(e.get("id"));
        let args = match e.get("args") {
            Some(Value::Object(m)) => m.clone(),
            _ => Map::new(),
        };
        match ph {
            "b" => {
                let span = span_from_args(&e, Role::Request, ts, ts)?;
                self.requests.insert(format!("{pid}/{id}"), span);
                Ok(0)
            }
            "n" => {
                let req = self
                    .requests
                    .get_mut(&format!("{pid}/{id}"))
                    .ok_or_else(|| bad(format!("request event for {id}, which has not begun")))?;
                req.events.push(SpanEvent {
                    name: text(e.get("name")),
                    time_ns: ts,
                    attrs: json_attrs(args),
                });
                Ok(0)
            }
            _ => {
                let mut req = self
                    .requests
                    .remove(&format!("{pid}/{id}"))
                    .ok_or_else(|| bad(format!("end of request {id}, which has not begun")))?;
                req.end_ns = ts.max(req.start_ns);
                each.span(&self.process(pid), req)?;
                Ok(1)
            }
        }
    }

    fn metadata(
        &mut self,
        e: Map<String, Value>,
        each: &mut dyn SpanSink,
    ) -> Result<u64, LineError> {
        let pid = field_u64(&e, "pid")?;
        let args = e.get("args");
        let name = text(args.and_then(|a| a.get("name")));
        match e.get("name").and_then(Value::as_str) {
            Some("process_name") => {
                let Some(epoch) = args.and_then(|a| a.get(EPOCH_ARG)).and_then(Value::as_u64)
                else {
                    self.foreign.insert(pid);
                    return Ok(0);
                };
                self.processes.insert(pid, (parse_process(&name), epoch));
                Ok(0)
            }
            Some("thread_name") => {
                let tid = field_u64(&e, "tid")?;
                let (label, tp, dp) = match args.and_then(thread_fields) {
                    Some(fields) => fields,
                    // A lane, the unplaced track, a thread with no label, or a file from
                    // before tracks carried their fields: the title is all there is, and it
                    // reads back only for a label without " [".
                    None if schema::is_derived_track_title(&name) => return Ok(0),
                    None => schema::parse_thread_title(&name),
                };
                // A thread span standing for the track, so the output names it the same way.
                let mut attrs = vec![
                    (schema::THREAD_LABEL.to_owned(), AttrValue::Str(label)),
                    (schema::THREAD_ID.to_owned(), AttrValue::Int(tid as i64)),
                ];
                if let Some(tp) = tp {
                    attrs.push((schema::TP_RANK.into(), AttrValue::Int(tp)));
                }
                if let Some(dp) = dp {
                    attrs.push((schema::DP_RANK.into(), AttrValue::Int(dp)));
                }
                let span = Span {
                    trace_id: 0,
                    span_id: (pid << 32 | tid).max(1),
                    parent: 0,
                    name: name.clone(),
                    start_ns: 0,
                    end_ns: 0,
                    attrs,
                    events: Vec::new(),
                    links: Vec::new(),
                    error: None,
                    role: Role::Thread,
                };
                each.span(&self.process(pid), span)?;
                Ok(1)
            }
            _ => Ok(0),
        }
    }
}

impl LineReader for Reader {
    fn line(&mut self, line: &[u8], each: &mut dyn SpanSink) -> Result<u64, LineError> {
        let line = line.strip_prefix(b"[").unwrap_or(line).trim_ascii();
        let line = line.strip_suffix(b"]").unwrap_or(line).trim_ascii();
        let line = line.strip_suffix(b",").unwrap_or(line);
        if line.is_empty() {
            return Ok(0);
        }
        let e: Map<String, Value> = serde_json::from_slice(line).map_err(|e| {
            bad(if e.is_eof() {
                format!("truncated: the line ends inside a JSON value ({e})")
            } else {
                format!("not a trace event ({e})")
            })
        })?;
        if let Some(pid) = e.get("pid").and_then(Value::as_u64) {
            if self.foreign.contains(&pid) {
                return Ok(0);
            }
        }
        let ph = text(e.get("ph"));
        match ph.as_str() {
            "X" => self.slice(e, each),
            "i" | "I" => self.instant(e, each),
            "b" | "e" | "n" => self.request(&ph, e, each),
            "M" => self.metadata(e, each),
            // Flows are redrawn from the links in the slices' args.
            "s" | "f" | "t" => Ok(0),
            other => Err(bad(format!("unsupported event phase {other:?}"))),
        }
    }

    fn finish(&mut self, each: &mut dyn SpanSink) -> Result<u64, LineError> {
        let mut n = 0;
        let keys: Vec<(u64, u64)> = self.open.keys().copied().collect();
        for k in keys {
            n += self.settle(k, u64::MAX, each)?;
        }
        // Requests whose end the file does not have (it was cut short) end at its last time.
        let open: Vec<(String, Span)> = self.requests.drain().collect();
        for (key, mut req) in open {
            let pid: u64 = key
                .split('/')
                .next()
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            req.end_ns = self.last_ns.max(req.start_ns);
            each.span(&self.process(pid), req)?;
            n += 1;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use slicetrace_spans::writer::{Limits, TraceEventWriter};

    /// Label, TP and DP rank of each thread span read from `file`, by thread id.
    fn threads_read(file: &[u8]) -> Vec<(i64, String, Option<i64>, Option<i64>)> {
        let mut threads = Vec::new();
        super::super::read_from(file, "t", &mut |_: &ProcessKey, s: Span| {
            if s.role == Role::Thread {
                let int = |k| s.attr(k).and_then(AttrValue::as_i64);
                let label = match s.attr(schema::THREAD_LABEL) {
                    Some(AttrValue::Str(l)) => l.clone(),
                    other => panic!("thread span with label {other:?}"),
                };
                let tid = int(schema::THREAD_ID).unwrap();
                threads.push((tid, label, int(schema::TP_RANK), int(schema::DP_RANK)));
            }
            Ok(())
        })
        .unwrap();
        threads.sort();
        threads
    }

    fn thread_span(tid: i64, label: &str, tp: Option<i64>, dp: Option<i64>) -> Span {
        let mut attrs = vec![
            (schema::THREAD_LABEL.into(), AttrValue::Str(label.into())),
            (schema::THREAD_ID.into(), AttrValue::Int(tid)),
        ];
        attrs.extend(tp.map(|tp| (schema::TP_RANK.into(), AttrValue::Int(tp))));
        attrs.extend(dp.map(|dp| (schema::DP_RANK.into(), AttrValue::Int(dp))));
        Span {
            trace_id: 1,
            span_id: tid as u64,
            parent: 0,
            name: String::new(),
            start_ns: 1_700_000_000_000_000_000,
            end_ns: 1_700_000_000_000_001_000,
            attrs,
            events: Vec::new(),
            links: Vec::new(),
            error: None,
            role: Role::Thread,
        }
    }

    fn written(spans: Vec<(ProcessKey, Span)>) -> Vec<u8> {
        let mut w = TraceEventWriter::new(Vec::new(), Limits::default()).unwrap();
        for (p, s) in spans {
            w.push(&p, s).unwrap();
        }
        w.finish().unwrap().0
    }

    /// Labels that hold what a title adds (`" [TP 9]"`) come back as they were given, with
    /// their own ranks, and convert again to the same track names and fields.
    #[test]
    fn a_thread_whose_label_looks_like_a_title_reads_back_as_given() {
        let given = vec![
            (5, "scheduler [TP 9]".to_owned(), None, None),
            (6, "worker [TP 9] pool".to_owned(), Some(1), Some(2)),
            (7, "plain".to_owned(), Some(0), None),
        ];
        let p = ProcessKey {
            service: "svc".into(),
            host: "h".into(),
            pid: 42,
        };
        let spans = given
            .iter()
            .map(|(tid, l, tp, dp)| (p.clone(), thread_span(*tid, l, *tp, *dp)))
            .collect();
        let file = written(spans);
        assert_eq!(threads_read(&file), given);

        let mut again = Vec::new();
        super::super::read_from(&file[..], "t", &mut |p: &ProcessKey, s: Span| {
            again.push((p.clone(), s));
            Ok(())
        })
        .unwrap();
        let track_names = |file: &[u8]| -> Vec<String> {
            let all: Value = serde_json::from_slice(file).unwrap();
            let mut names: Vec<String> = all
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| e["name"] == "thread_name")
                .map(|e| e["args"].to_string())
                .collect();
            names.sort();
            names
        };
        assert_eq!(track_names(&written(again)), track_names(&file));
    }

    /// A file from before tracks carried their fields still reads: label and ranks from the
    /// title, overlap lanes passed over.
    #[test]
    fn a_file_without_thread_fields_reads_them_from_the_titles() {
        let file = r#"[
{"ph":"M","pid":1,"name":"process_name","args":{"name":"svc (pid 1)","slicetrace_epoch_unix_ns":0}},
{"ph":"M","pid":1,"tid":5,"name":"thread_name","args":{"name":"scheduler [TP 1] [DP 0]"}},
{"ph":"M","pid":1,"tid":5,"name":"thread_sort_index","args":{"sort_index":320}},
{"ph":"M","pid":1,"tid":6,"name":"thread_name","args":{"name":"tokenizer"}},
{"ph":"M","pid":1,"tid":2147483649,"name":"thread_name","args":{"name":"scheduler [TP 1] [DP 0] · overlap 1"}}
]
"#;
        assert_eq!(
            threads_read(file.as_bytes()),
            [
                (5, "scheduler".to_owned(), Some(1), Some(0)),
                (6, "tokenizer".to_owned(), None, None),
            ]
        );
    }

    #[test]
    fn names_parse_back() {
        let p = parse_process("sim (pid 42 on vm-1)");
        assert_eq!(
            (p.service.as_str(), p.pid, p.host.as_str()),
            ("sim", 42, "vm-1")
        );
        assert_eq!(parse_process("plain").service, "plain");
        assert_eq!(
            schema::parse_thread_title("scheduler [TP 1] [DP 0]"),
            ("scheduler".to_owned(), Some(1), Some(0))
        );
        assert_eq!(
            schema::parse_thread_title("tokenizer"),
            ("tokenizer".to_owned(), None, None)
        );
    }
}
