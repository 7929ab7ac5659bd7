//! `slicetrace summary`: durations per slice name, and per request the time spent in each phase
//! (tokenizer, queueing, prefill, decode).
//!
//! A top-level slice (one whose parent is its thread span) belongs to a phase by its name —
//! containing "queue" or "wait": queueing; "prefill"; "decode" — or else, on a thread labelled
//! "tokenizer…" or named "tokeniz…", to the tokenizer. A request's time in a phase is the sum
//! over one thread's slices, the largest over threads (tensor-parallel ranks work at once).

use crate::stats::Dist;
use serde::Serialize;
use slicetrace_spans::model::{AttrValue, ProcessKey, Role, Span};
use slicetrace_spans::schema;
use std::collections::HashMap;
use std::io::{self, Write};

pub const PHASES: [&str; 4] = ["tokenizer", "queueing", "prefill", "decode"];

fn phase_of(name: &str, thread_label: Option<&str>) -> Option<usize> {
    let n = name.to_ascii_lowercase();
    if n.contains("queue") || n.contains("wait") {
        Some(1)
    } else if n.contains("prefill") {
        Some(2)
    } else if n.contains("decode") {
        Some(3)
    } else if n.starts_with("tokeniz")
        || thread_label.is_some_and(|l| l.to_ascii_lowercase().starts_with("tokenizer"))
    {
        Some(0)
    } else {
        None
    }
}

struct SliceRec {
    name: u32,
    dur: u64,
    trace: u128,
    parent: u64,
    process: u32,
    tid: Option<u64>,
}

#[derive(Default)]
pub struct Summary {
    names: Vec<String>,
    name_ids: HashMap<String, u32>,
    processes: HashMap<ProcessKey, u32>,
    slices: Vec<SliceRec>,
    /// Slice span id → its index, to find a nested slice's thread through its parents.
    slice_ids: HashMap<u64, usize>,
    /// Thread span id → (process, tid).
    thread_spans: HashMap<u64, (u32, u64)>,
    labels: HashMap<(u32, u64), String>,
    /// Trace → (rid, earliest start, latest end) of its request spans.
    requests: HashMap<u128, (String, u64, u64)>,
}

#[derive(Serialize)]
pub struct SliceRow {
    pub name: String,
    #[serde(flatten)]
    pub dist: Dist,
}

#[derive(Serialize)]
pub struct RequestRow {
    pub rid: String,
    pub trace_id: String,
    pub total_ns: u64,
    /// Nanoseconds per phase, in the order of `PHASES`.
    pub phases_ns: [u64; 4],
}

#[derive(Serialize)]
pub struct Report {
    pub slices: Vec<SliceRow>,
    pub requests: u64,
    pub request_total: Dist,
    pub phases: Vec<(String, Dist)>,
    pub per_request: Vec<RequestRow>,
}

impl Summary {
    pub fn add(&mut self, p: &ProcessKey, s: Span) {
        let next = self.processes.len() as u32;
        let process = *self.processes.entry(p.clone()).or_insert(next);
        match s.role {
            Role::Request => {
                // A bootstrap room span names no rid: it widens the request's time only.
                let rid = match s.attr(schema::RID) {
                    Some(AttrValue::Str(r)) => r.clone(),
                    Some(other) => format!("{other:?}"),
                    None => String::new(),
                };
                let e = self.requests.entry(s.trace_id).or_insert((
                    String::new(),
                    s.start_ns,
                    s.end_ns,
                ));
                if e.0.is_empty() {
                    e.0 = rid;
                }
                e.1 = e.1.min(s.start_ns);
                e.2 = e.2.max(s.end_ns);
            }
            Role::Thread => {
                let tid = s.thread_id().unwrap_or(s.span_id);
                self.thread_spans.insert(s.span_id, (process, tid));
                if let Some(AttrValue::Str(l)) = s.attr(schema::THREAD_LABEL) {
                    self.labels
                        .entry((process, tid))
                        .or_insert_with(|| l.clone());
                }
            }
            Role::Slice => {
                let name = match self.name_ids.get(&s.name) {
                    Some(&i) => i,
                    None => {
                        let i = self.names.len() as u32;
                        self.names.push(s.name.clone());
                        self.name_ids.insert(s.name.clone(), i);
                        i
                    }
                };
                self.slice_ids.insert(s.span_id, self.slices.len());
                self.slices.push(SliceRec {
                    name,
                    dur: s.end_ns.saturating_sub(s.start_ns),
                    trace: s.trace_id,
                    parent: s.parent,
                    process,
                    tid: s.thread_id(),
                });
            }
        }
    }

    /// The thread of slice `i`, from its own attribute or its ancestors'.
    fn thread_of(&self, i: usize) -> Option<(u32, u64)> {
        let mut at = i;
        for _ in 0..schema::MAX_DEPTH + 1 {
            let s = &self.slices[at];
            if let Some(t) = s.tid {
                return Some((s.process, t));
            }
            if let Some(t) = self.thread_spans.get(&s.parent) {
                return Some(*t);
            }
            at = *self.slice_ids.get(&s.parent)?;
        }
        None
    }

    pub fn finish(self) -> Report {
        let mut by_name: Vec<Vec<u64>> = vec![Vec::new(); self.names.len()];
        for s in &self.slices {
            by_name[s.name as usize].push(s.dur);
        }
        let mut slices: Vec<SliceRow> = by_name
            .into_iter()
            .enumerate()
            .map(|(i, d)| SliceRow {
                name: self.names[i].clone(),
                dist: Dist::of(d),
            })
            .collect();
        slices.sort_by(|a, b| a.name.cmp(&b.name));

        // (trace, phase, thread) → time.
        let mut per_thread: HashMap<(u128, usize, (u32, u64)), u64> = HashMap::new();
        for (i, s) in self.slices.iter().enumerate() {
            if self.slice_ids.contains_key(&s.parent) {
                continue; // nested: its time is inside its parent's
            }
            let thread = self.thread_of(i);
            let label = thread.and_then(|t| self.labels.get(&t)).map(String::as_str);
            if let Some(phase) = phase_of(&self.names[s.name as usize], label) {
                *per_thread
                    .entry((s.trace, phase, thread.unwrap_or((s.process, 0))))
                    .or_default() += s.dur;
            }
        }
        let mut phase_of_trace: HashMap<u128, [u64; 4]> = HashMap::new();
        for ((trace, phase, _), t) in per_thread {
            let p = &mut phase_of_trace.entry(trace).or_default()[phase];
            *p = (*p).max(t);
        }
        let mut per_request: Vec<RequestRow> = self
            .requests
            .iter()
            .map(|(trace, (rid, start, end))| RequestRow {
                rid: rid.clone(),
                trace_id: format!("{trace:032x}"),
                total_ns: end.saturating_sub(*start),
                phases_ns: phase_of_trace.get(trace).copied().unwrap_or_default(),
            })
            .collect();
        per_request.sort_by(|a, b| a.rid.cmp(&b.rid).then(a.trace_id.cmp(&b.trace_id)));
        let phases = PHASES
            .iter()
            .enumerate()
            .map(|(i, name)| {
                (
                    name.to_string(),
                    Dist::of(per_request.iter().map(|r| r.phases_ns[i]).collect()),
                )
            })
            .collect();
        Report {
            slices,
            requests: per_request.len() as u64,
            request_total: Dist::of(per_request.iter().map(|r| r.total_ns).collect()),
            phases,
            per_request,
        }
    }
}

fn ms(ns: u64) -> String {
    format!("{:.3}", ns as f64 / 1e6)
}

fn dist_cells(d: &Dist) -> [String; 6] {
    [
        d.count.to_string(),
        format!("{:.3}", d.mean_ns / 1e6),
        ms(d.p50_ns),
        ms(d.p90_ns),
        ms(d.p99_ns),
        ms(d.max_ns),
    ]
}

fn table(out: &mut dyn Write, head: &[&str], rows: &[Vec<String>]) -> io::Result<()> {
    let mut w: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let line = |out: &mut dyn Write, cells: &[String]| -> io::Result<()> {
        for (i, c) in cells.iter().enumerate() {
            if i == 0 {
                write!(out, "{c:<width$}", width = w[0])?;
            } else {
                write!(out, "  {c:>width$}", width = w[i])?;
            }
        }
        writeln!(out)
    };
    line(out, &head.iter().map(|h| h.to_string()).collect::<Vec<_>>())?;
    for r in rows {
        line(out, r)?;
    }
    Ok(())
}

impl Report {
    pub fn write_tables(&self, out: &mut dyn Write) -> io::Result<()> {
        let head = [
            "slice", "count", "mean ms", "p50 ms", "p90 ms", "p99 ms", "max ms",
        ];
        let rows: Vec<Vec<String>> = self
            .slices
            .iter()
            .map(|r| {
                let mut row = vec![r.name.clone()];
                row.extend(dist_cells(&r.dist));
                row
            })
            .collect();
        table(out, &head, &rows)?;
        writeln!(out)?;
        writeln!(out, "requests: {}", self.requests)?;
        let mut rows = vec![{
            let mut row = vec!["total (request span)".to_owned()];
            row.extend(dist_cells(&self.request_total));
            row
        }];
        for (name, d) in &self.phases {
            let mut row = vec![name.clone()];
            row.extend(dist_cells(d));
            rows.push(row);
        }
        let head = [
            "phase per request",
            "count",
            "mean ms",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "max ms",
        ];
        table(out, &head, &rows)
    }

    pub fn write_json(&self, out: &mut dyn Write) -> io::Result<()> {
        serde_json::to_writer_pretty(&mut *out, self)?;
        writeln!(out)
    }
}
