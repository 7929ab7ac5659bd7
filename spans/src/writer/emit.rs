//! The only part of the writer that writes bytes: one trace-event per line, the separator
//! before it, so a file cut short after any whole line is a valid array but for its closing
//! bracket. Lines are gathered and handed to the output a chunk at a time, each event
//! formatted in place, not copied again per line into a buffer of the output's.

use super::decimal::{push_u64, push_us};
use super::held::{HeldSlice, Names};
use super::hex::{push_hex128, push_hex64};
use super::tracks::ThreadFields;
use crate::model::{AttrValue, SpanEvent};
use crate::schema::{member, text_member};
use crate::util::{json_str, MixHash};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{self, Write};

/// Bytes of whole lines gathered before they are written: a fraction of the L2 cache.
const OUT_CHUNK: usize = 64 << 10;
/// Tracks whose `pid` and `tid` text is kept; past this many, the text is made anew.
const TRACK_TEXTS: usize = 1 << 12;

/// What the emitter wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Written {
    pub slices: u64,
    pub instants: u64,
    /// Arrows (counted by their starts).
    pub flows: u64,
    pub bytes: u64,
}

pub(super) struct Emitter<W: Write> {
    out: W,
    /// Whole lines not yet handed to `out`.
    buf: String,
    /// Where the line being formatted starts in `buf`.
    line_start: usize,
    wrote_any: bool,
    /// `,"pid":…,"tid":…` of the tracks written to lately.
    track_text: HashMap<(u32, u64), Box<str>, MixHash>,
    /// Timestamps are written relative to this Unix time, so that a double (what viewers parse
    /// `ts` into) keeps nanoseconds; every process_name event carries it.
    epoch_ns: u64,
    written: Written,
}

/// A span's ids, links and error: the first of its args.
pub(super) struct Ids<'a> {
    pub trace: u128,
    pub span: u64,
    pub parent: u64,
    pub links: &'a [(u128, u64)],
    pub error: Option<&'a str>,
}

impl<W: Write> Emitter<W> {
    /// Opens the array.
    pub fn new(mut out: W) -> io::Result<Emitter<W>> {
        out.write_all(b"[\n")?;
        Ok(Emitter {
            out,
            buf: String::with_capacity(OUT_CHUNK + 4096),
            line_start: 0,
            wrote_any: false,
            track_text: HashMap::default(),
            // Until it is set, times are written as if from the end of time: as 0.
            epoch_ns: u64::MAX,
            written: Written {
                bytes: 2,
                ..Written::default()
            },
        })
    }

    /// Sets the Unix time that timestamps count from.
    pub fn set_epoch(&mut self, epoch_ns: u64) {
        self.epoch_ns = epoch_ns;
    }

    pub fn written(&self) -> Written {
        self.written
    }

    /// Names process `pid`, with the time origin.
    pub fn process_name(&mut self, pid: u32, name: &str) -> io::Result<()> {
        self.start_line();
        let _ = write!(
            self.buf,
            "{{\"ph\":\"M\",\"pid\":{pid},\"name\":\"process_name\",\"args\":{{\"name\":"
        );
        json_str(&mut self.buf, name);
        self.buf.push_str(member::EPOCH_ARG);
        let _ = write!(self.buf, "{}}}}}", self.epoch_ns);
        self.emit_line()
    }

    /// Names track `tid`, lane `lane` of thread `base` (0: the thread's own track), with the
    /// fields of the thread span that named it when given.
    pub fn thread_name(
        &mut self,
        pid: u32,
        tid: u64,
        base: u64,
        name: &str,
        lane: u64,
        thread: Option<&ThreadFields>,
    ) -> io::Result<()> {
        self.start_line();
        let _ = write!(
            self.buf,
            "{{\"ph\":\"M\",\"pid\":{pid},\"tid\":{tid},\"name\":\"thread_name\",\"args\":{{\"name\":"
        );
        json_str(&mut self.buf, name);
        if let Some(t) = thread {
            self.buf.push_str(member::THREAD_LABEL);
            json_str(&mut self.buf, &t.label);
            if let Some(tp) = t.tp_rank {
                let _ = write!(self.buf, "{}{tp}", member::TP_RANK);
            }
            if let Some(dp) = t.dp_rank {
                let _ = write!(self.buf, "{}{dp}", member::DP_RANK);
            }
        }
        self.buf.push_str("}}");
        self.emit_line()?;
        // Keeps a thread's overlap lanes right under it: sorted by the thread id, then lane.
        let index = base.min(1 << 32) * 64 + lane.min(63);
        self.start_line();
        let _ = write!(
            self.buf,
            "{{\"ph\":\"M\",\"pid\":{pid},\"tid\":{tid},\"name\":\"thread_sort_index\",\"args\":{{\"sort_index\":{index}}}}}"
        );
        self.emit_line()
    }

    /// A slice as a complete event on `pid`/`tid`, with the thread id and the rid (a JSON
    /// string) added to its args when given.
    #[inline]
    pub fn slice(
        &mut self,
        pid: u32,
        tid: u64,
        span: &HeldSlice,
        names: &Names,
        thread_id: Option<u64>,
        rid: Option<&str>,
    ) -> io::Result<()> {
        self.written.slices += 1;
        let end = span.end_ns.max(span.start_ns);
        self.start_line();
        self.buf.push_str("{\"ph\":\"X\"");
        self.push_track(pid, tid);
        self.buf.push_str(",\"ts\":");
        push_us(&mut self.buf, span.start_ns.saturating_sub(self.epoch_ns));
        self.buf.push_str(",\"dur\":");
        push_us(&mut self.buf, end - span.start_ns);
        self.buf.push_str(",\"name\":");
        span.push_name(&mut self.buf, names);
        self.buf.push_str(",\"cat\":\"slice\",\"args\":{");
        let ids = Ids {
            trace: span.trace_id,
            span: span.span_id,
            parent: span.parent,
            links: span.links(),
            error: span.error(),
        };
        ids.push(&mut self.buf);
        if let Some(tid) = thread_id {
            self.buf.push_str(member::THREAD_ID);
            push_u64(&mut self.buf, tid);
        }
        if let Some(rid) = rid {
            self.buf.push_str(member::RID);
            self.buf.push_str(rid);
        }
        attrs_args(&mut self.buf, span.attrs(), false);
        self.buf.push_str("}}");
        self.emit_line()
    }

    /// One end of flow arrow `id`, bound to the slice open on `pid`/`tid` at `ts`.
    #[inline]
    pub fn flow(&mut self, id: u64, start: bool, pid: u32, tid: u64, ts: u64) -> io::Result<()> {
        if start {
            self.written.flows += 1;
        }
        self.start_line();
        self.buf.push_str(if start {
            "{\"ph\":\"s\",\"id\":"
        } else {
            "{\"ph\":\"f\",\"bp\":\"e\",\"id\":"
        });
        push_u64(&mut self.buf, id);
        self.push_track(pid, tid);
        self.buf.push_str(",\"ts\":");
        push_us(&mut self.buf, ts.saturating_sub(self.epoch_ns));
        self.buf
            .push_str(",\"name\":\"link\",\"cat\":\"slicetrace.link\"}");
        self.emit_line()
    }

    /// A span event as a thread-scoped instant.
    #[inline]
    pub fn instant(&mut self, pid: u32, tid: u64, ev: &SpanEvent) -> io::Result<()> {
        self.written.instants += 1;
        self.start_line();
        self.buf.push_str("{\"ph\":\"i\",\"s\":\"t\",\"pid\":");
        push_u64(&mut self.buf, u64::from(pid));
        self.buf.push_str(",\"tid\":");
        push_u64(&mut self.buf, tid);
        self.buf.push_str(",\"ts\":");
        push_us(&mut self.buf, ev.time_ns.saturating_sub(self.epoch_ns));
        self.buf.push_str(",\"name\":");
        json_str(&mut self.buf, &ev.name);
        self.buf.push_str(",\"args\":{");
        attrs_args(&mut self.buf, &ev.attrs, true);
        self.buf.push_str("}}");
        self.emit_line()
    }

    /// An event `ph` of request `id`'s async slice on process `pid`; `args` is a JSON object.
    #[inline]
    pub fn request(
        &mut self,
        ph: char,
        pid: u32,
        id: u64,
        ts: u64,
        name: &str,
        args: &str,
    ) -> io::Result<()> {
        self.start_line();
        self.buf.push_str("{\"ph\":\"");
        self.buf.push(ph);
        self.buf.push_str("\",\"cat\":\"request\",\"id\":\"0x");
        push_hex64(&mut self.buf, id);
        self.buf.push_str("\",\"pid\":");
        push_u64(&mut self.buf, u64::from(pid));
        self.buf.push_str(",\"ts\":");
        push_us(&mut self.buf, ts.saturating_sub(self.epoch_ns));
        self.buf.push_str(",\"name\":");
        json_str(&mut self.buf, name);
        self.buf.push_str(",\"args\":");
        self.buf.push_str(args);
        self.buf.push('}');
        self.emit_line()
    }

    /// An event formatted elsewhere, written as one line.
    pub fn raw(&mut self, event: &str) -> io::Result<()> {
        self.start_line();
        self.buf.push_str(event);
        self.emit_line()
    }

    /// Hands every line gathered to the output and flushes it.
    pub fn flush(&mut self) -> io::Result<()> {
        self.write_buf()?;
        self.out.flush()
    }

    /// Closes the array.
    pub fn finish(mut self) -> io::Result<(W, Written)> {
        self.write_buf()?;
        self.out.write_all(b"\n]\n")?;
        self.written.bytes += 3;
        self.out.flush()?;
        Ok((self.out, self.written))
    }

    /// Appends `,"pid":…,"tid":…` for a track: made once per track, and copied after that.
    fn push_track(&mut self, pid: u32, tid: u64) {
        if let Some(text) = self.track_text.get(&(pid, tid)) {
            self.buf.push_str(text);
            return;
        }
        if self.track_text.len() >= TRACK_TEXTS {
            // Tracks of threads with no id are made one per thread span: forgotten in a
            // while, so that they cannot pile up.
            self.track_text.clear();
        }
        let mut text = String::from(",\"pid\":");
        push_u64(&mut text, u64::from(pid));
        text.push_str(",\"tid\":");
        push_u64(&mut text, tid);
        self.buf.push_str(&text);
        self.track_text.insert((pid, tid), text.into_boxed_str());
    }

    /// Begins a line with the separator from the one before.
    #[inline]
    fn start_line(&mut self) {
        self.line_start = self.buf.len();
        if self.wrote_any {
            self.buf.push_str(",\n");
        }
    }

    #[inline]
    fn emit_line(&mut self) -> io::Result<()> {
        self.wrote_any = true;
        self.written.bytes += (self.buf.len() - self.line_start) as u64;
        if self.buf.len() >= OUT_CHUNK {
            self.write_buf()?;
        }
        Ok(())
    }

    /// Hands the gathered lines to `out`.
    fn write_buf(&mut self) -> io::Result<()> {
        let r = self.out.write_all(self.buf.as_bytes());
        self.buf.clear();
        r
    }
}

impl Ids<'_> {
    /// Appends the ids as the first members of an object.
    pub fn push(&self, out: &mut String) {
        out.push_str(&text_member::ARG_TRACE_ID[1..]);
        push_hex128(out, self.trace);
        out.push('"');
        out.push_str(text_member::ARG_SPAN_ID);
        push_hex64(out, self.span);
        out.push('"');
        if self.parent != 0 {
            out.push_str(text_member::ARG_PARENT_SPAN_ID);
            push_hex64(out, self.parent);
            out.push('"');
        }
        if !self.links.is_empty() {
            out.push_str(member::ARG_LINKS);
            out.push('[');
            for (i, (t, s)) in self.links.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push('"');
                push_hex128(out, *t);
                out.push('-');
                push_hex64(out, *s);
                out.push('"');
            }
            out.push(']');
        }
        if let Some(e) = self.error {
            out.push_str(member::ARG_ERROR);
            json_str(out, e);
        }
    }
}

/// A decimal integer of another type than `u64` (attribute values).
fn push_int(out: &mut String, v: impl itoa::Integer) {
    out.push_str(itoa::Buffer::new().format(v));
}

/// `"key":value` for each attribute, comma-separated, with a comma before the first unless
/// `first`.
pub(super) fn attrs_args(out: &mut String, attrs: &[(String, AttrValue)], first: bool) {
    for (i, (k, v)) in attrs.iter().enumerate() {
        if i > 0 || !first {
            out.push(',');
        }
        json_str(out, k);
        out.push(':');
        match v {
            AttrValue::Str(s) => json_str(out, s),
            AttrValue::Int(i) => push_int(out, *i),
            AttrValue::F64(f) if f.is_finite() => {
                let _ = write!(out, "{f:?}");
            }
            AttrValue::F64(f) => json_str(out, &f.to_string()),
            AttrValue::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(e: Emitter<Vec<u8>>) -> (String, Written) {
        let (out, written) = e.finish().unwrap();
        (String::from_utf8(out).unwrap(), written)
    }

    /// Lines are separated as they come, timestamps count from the epoch in microseconds with
    /// every nanosecond, and the byte count is exactly what was written.
    #[test]
    fn lines_are_one_event_each_and_counted() {
        let mut e = Emitter::new(Vec::new()).unwrap();
        e.set_epoch(1_000_000);
        e.process_name(7, "svc (pid 7)").unwrap();
        e.flow(3, true, 7, 5, 1_002_345).unwrap();
        e.flow(3, false, 7, 5, 1_003_000).unwrap();
        let ev = SpanEvent {
            name: "ev\"1".into(),
            time_ns: 1_000_001,
            attrs: vec![("k".into(), AttrValue::Int(-3))],
        };
        e.instant(7, 5, &ev).unwrap();
        e.request('b', 7, 0xab, 1_000_000, "Req 1", "{}").unwrap();
        let (text, written) = text(e);
        assert_eq!(
            text,
            "[\n\
             {\"ph\":\"M\",\"pid\":7,\"name\":\"process_name\",\"args\":{\"name\":\"svc (pid 7)\",\"slicetrace_epoch_unix_ns\":1000000}},\n\
             {\"ph\":\"s\",\"id\":3,\"pid\":7,\"tid\":5,\"ts\":2.345,\"name\":\"link\",\"cat\":\"slicetrace.link\"},\n\
             {\"ph\":\"f\",\"bp\":\"e\",\"id\":3,\"pid\":7,\"tid\":5,\"ts\":3.000,\"name\":\"link\",\"cat\":\"slicetrace.link\"},\n\
             {\"ph\":\"i\",\"s\":\"t\",\"pid\":7,\"tid\":5,\"ts\":0.001,\"name\":\"ev\\\"1\",\"args\":{\"k\":-3}},\n\
             {\"ph\":\"b\",\"cat\":\"request\",\"id\":\"0x00000000000000ab\",\"pid\":7,\"ts\":0.000,\"name\":\"Req 1\",\"args\":{}}\n\
             ]\n"
        );
        assert_eq!(written.bytes as usize, text.len());
        assert_eq!((written.flows, written.instants, written.slices), (1, 1, 0));
    }

    /// A thread's name comes with the sort index that keeps its lanes under it.
    #[test]
    fn a_lane_sorts_under_its_thread() {
        let mut e = Emitter::new(Vec::new()).unwrap();
        e.thread_name(1, 9, 5, "w · overlap 2", 2, None).unwrap();
        let (text, _) = text(e);
        assert!(text
            .contains("\"tid\":9,\"name\":\"thread_name\",\"args\":{\"name\":\"w · overlap 2\"}"));
        assert!(text.contains("\"sort_index\":322}"));
    }

    /// A thread's own track carries its label and ranks beside the title, the label escaped,
    /// each rank only when known.
    #[test]
    fn a_thread_track_carries_its_label_and_ranks() {
        let mut e = Emitter::new(Vec::new()).unwrap();
        let both = ThreadFields {
            label: "a \"b\" [TP 9]".into(),
            tp_rank: Some(1),
            dp_rank: Some(0),
        };
        let dp_only = ThreadFields {
            label: "w".into(),
            tp_rank: None,
            dp_rank: Some(3),
        };
        e.thread_name(1, 5, 5, "a \"b\" [TP 9] [TP 1] [DP 0]", 0, Some(&both))
            .unwrap();
        e.thread_name(1, 6, 6, "w [DP 3]", 0, Some(&dp_only))
            .unwrap();
        let (text, _) = text(e);
        assert!(text.contains(
            "\"args\":{\"name\":\"a \\\"b\\\" [TP 9] [TP 1] [DP 0]\",\"thread_label\":\"a \\\"b\\\" [TP 9]\",\"tp_rank\":1,\"dp_rank\":0}}"
        ));
        assert!(
            text.contains("\"args\":{\"name\":\"w [DP 3]\",\"thread_label\":\"w\",\"dp_rank\":3}}")
        );
    }

    #[test]
    fn ids_and_attributes_are_written_as_args() {
        let mut out = String::from("{");
        Ids {
            trace: 1,
            span: 2,
            parent: 0,
            links: &[(3, 4)],
            error: Some("bad"),
        }
        .push(&mut out);
        attrs_args(
            &mut out,
            &[
                ("n".into(), AttrValue::F64(1.5)),
                ("x".into(), AttrValue::F64(f64::INFINITY)),
                ("b".into(), AttrValue::Bool(true)),
            ],
            false,
        );
        out.push('}');
        assert_eq!(
            out,
            "{\"trace_id\":\"00000000000000000000000000000001\",\"span_id\":\"0000000000000002\",\
             \"links\":[\"00000000000000000000000000000003-0000000000000004\"],\"error\":\"bad\",\
             \"n\":1.5,\"x\":\"inf\",\"b\":true}"
        );
    }
}
