#![allow(dead_code)]
//! Reads a trace-event JSON file and checks it against the format's rules, independently of
//! the writer: every event well typed, tracks named, slices nested and in order per track,
//! flows paired and bound inside slices, async begin/end balanced.

use serde_json::Value;
use std::collections::{HashMap, HashSet};

#[derive(Clone, Debug)]
pub struct Slice {
    pub pid: u64,
    pub tid: u64,
    pub ts: f64,
    pub dur: f64,
    /// `ts` and `ts + dur` in whole nanoseconds: comparisons are exact on these.
    pub start_ns: i64,
    pub end_ns: i64,
    pub name: String,
    pub args: Value,
}

/// Microseconds as written (three decimals) to whole nanoseconds.
pub fn ns(us: f64) -> i64 {
    (us * 1000.0).round() as i64
}

impl Slice {
    pub fn end(&self) -> f64 {
        self.ts + self.dur
    }
    pub fn arg(&self, k: &str) -> Option<&Value> {
        self.args.get(k)
    }
    pub fn arg_str(&self, k: &str) -> Option<&str> {
        self.args.get(k).and_then(Value::as_str)
    }
    pub fn contains(&self, ts: f64) -> bool {
        self.start_ns <= ns(ts) && ns(ts) <= self.end_ns
    }
}

/// A point on a track: (pid, tid, ts in µs).
pub type At = (u64, u64, f64);

#[derive(Debug, Default)]
pub struct TraceFile {
    pub events: Vec<Value>,
    pub process_names: HashMap<u64, String>,
    pub thread_names: HashMap<(u64, u64), String>,
    pub slices: Vec<Slice>,
    /// flow id → (start, finish)
    pub flows: HashMap<u64, (At, At)>,
    /// async id → (name, begin args)
    pub requests: HashMap<String, (String, Value)>,
    pub instants: Vec<(u64, u64, f64, String)>,
}

fn num(e: &Value, k: &str) -> f64 {
    e.get(k)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("event without numeric {k}: {e}"))
}

fn int(e: &Value, k: &str) -> u64 {
    e.get(k)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("event without integer {k}: {e}"))
}

impl TraceFile {
    /// Parses `text` (a JSON array) and asserts every rule; panics naming the first broken one.
    pub fn check(text: &str) -> TraceFile {
        TraceFile::check_with(text, false)
    }

    /// As `check`, for a file cut short and repaired: a request may lack its end and a flow its
    /// other half, still held by the writer when the process died.
    pub fn check_cut(text: &str) -> TraceFile {
        TraceFile::check_with(text, true)
    }

    fn check_with(text: &str, cut: bool) -> TraceFile {
        let all: Value = serde_json::from_str(text).expect("the file is one JSON array");
        let events = all.as_array().expect("a JSON array").clone();
        let mut f = TraceFile::default();
        let mut last_ts: HashMap<(u64, u64), i64> = HashMap::new();
        let mut open: HashMap<(u64, u64), Vec<i64>> = HashMap::new();
        let mut flow_s: HashMap<u64, (u64, u64, f64)> = HashMap::new();
        let mut flow_f: HashMap<u64, (u64, u64, f64)> = HashMap::new();
        let mut async_open: HashMap<String, u32> = HashMap::new();
        let mut used_tracks: HashSet<(u64, u64)> = HashSet::new();
        let mut used_pids: HashSet<u64> = HashSet::new();
        for e in &events {
            let ph = e.get("ph").and_then(Value::as_str).expect("event with ph");
            let pid = int(e, "pid");
            match ph {
                "M" => {
                    let name = e["name"].as_str().expect("metadata name");
                    let arg_name = || e["args"]["name"].as_str().expect("name arg").to_owned();
                    match name {
                        "process_name" => {
                            f.process_names.insert(pid, arg_name());
                        }
                        "thread_name" => {
                            f.thread_names.insert((pid, int(e, "tid")), arg_name());
                        }
                        "thread_sort_index" => {
                            int(&e["args"], "sort_index");
                        }
                        other => panic!("unexpected metadata {other}"),
                    }
                }
                "X" | "i" | "s" | "f" => {
                    let tid = int(e, "tid");
                    let ts = num(e, "ts");
                    assert!(ts >= 0.0, "negative ts: {e}");
                    used_tracks.insert((pid, tid));
                    used_pids.insert(pid);
                    if ph == "X" {
                        let dur = num(e, "dur");
                        assert!(dur >= 0.0, "negative dur: {e}");
                        let (start_ns, end_ns) = (ns(ts), ns(ts) + ns(dur));
                        let prev = last_ts.entry((pid, tid)).or_insert(0);
                        assert!(
                            start_ns >= *prev,
                            "slices out of order on track {pid}/{tid}: {e}"
                        );
                        *prev = start_ns;
                        let stack = open.entry((pid, tid)).or_default();
                        while stack.last().is_some_and(|&end| end <= start_ns) {
                            stack.pop();
                        }
                        if let Some(&outer_end) = stack.last() {
                            assert!(
                                end_ns <= outer_end,
                                "slice overlaps its enclosing slice without nesting: {e}"
                            );
                        }
                        stack.push(end_ns);
                        f.slices.push(Slice {
                            pid,
                            tid,
                            ts,
                            dur,
                            start_ns,
                            end_ns,
                            name: e["name"].as_str().expect("slice name").to_owned(),
                            args: e["args"].clone(),
                        });
                    } else if ph == "i" {
                        assert_eq!(e["s"], "t", "instants are thread-scoped: {e}");
                        f.instants
                            .push((pid, tid, ts, e["name"].as_str().unwrap().to_owned()));
                    } else {
                        let id = int(e, "id");
                        let map = if ph == "s" { &mut flow_s } else { &mut flow_f };
                        if ph == "f" {
                            assert_eq!(e["bp"], "e", "flow ends bind to the enclosing slice");
                        }
                        assert!(
                            map.insert(id, (pid, tid, ts)).is_none(),
                            "flow id {id} used twice for {ph}"
                        );
                        assert_eq!(e["cat"].as_str().map(|c| !c.is_empty()), Some(true));
                    }
                }
                "b" | "e" | "n" => {
                    used_pids.insert(pid);
                    num(e, "ts");
                    let id = e["id"].as_str().expect("async id").to_owned();
                    assert_eq!(e["cat"], "request");
                    match ph {
                        "b" => {
                            *async_open.entry(id.clone()).or_default() += 1;
                            f.requests.insert(
                                id,
                                (e["name"].as_str().unwrap().to_owned(), e["args"].clone()),
                            );
                        }
                        "e" => {
                            let n = async_open.get_mut(&id).expect("async end after its begin");
                            assert!(*n > 0, "async end without begin: {e}");
                            *n -= 1;
                        }
                        _ => assert!(async_open.contains_key(&id), "async instant outside: {e}"),
                    }
                }
                other => panic!("unexpected phase {other}: {e}"),
            }
        }
        for t in &used_tracks {
            assert!(
                f.thread_names.contains_key(t),
                "track {t:?} has no thread_name"
            );
        }
        for p in &used_pids {
            assert!(
                f.process_names.contains_key(p),
                "pid {p} has no process_name"
            );
        }
        if !cut {
            assert!(
                async_open.values().all(|n| *n == 0),
                "async slice left open"
            );
            assert_eq!(
                flow_s.keys().collect::<HashSet<_>>(),
                flow_f.keys().collect::<HashSet<_>>(),
                "every flow start has its finish"
            );
        }
        let inside = |(pid, tid, ts): (u64, u64, f64)| {
            f.slices
                .iter()
                .any(|s| s.pid == pid && s.tid == tid && s.contains(ts))
        };
        for (id, s) in &flow_s {
            let Some(&fin) = flow_f.get(id) else {
                continue;
            };
            assert!(inside(*s), "flow {id} starts outside any slice");
            assert!(inside(fin), "flow {id} ends outside any slice");
            f.flows.insert(*id, (*s, fin));
        }
        for &(pid, tid, ts, ref name) in &f.instants {
            assert!(inside((pid, tid, ts)), "instant {name} outside any slice");
        }
        f.events = events;
        f
    }

    pub fn named(&self, name: &str) -> Vec<&Slice> {
        self.slices.iter().filter(|s| s.name == name).collect()
    }

    pub fn by_span_id(&self, id: &str) -> Option<&Slice> {
        self.slices
            .iter()
            .find(|s| s.arg_str("span_id") == Some(id))
    }

    /// The slice a flow starting or ending at (pid, tid, ts) binds to: the innermost enclosing.
    pub fn enclosing(&self, (pid, tid, ts): (u64, u64, f64)) -> Option<&Slice> {
        self.slices
            .iter()
            .filter(|s| s.pid == pid && s.tid == tid && s.contains(ts))
            .min_by(|a, b| a.dur.total_cmp(&b.dur))
    }
}
