//! Shared by the integration tests: a session exporting to memory, and ways to walk the trees.
#![allow(dead_code)]

pub mod child;
pub mod otlp_request;
pub mod rotel;
pub mod tls_front;
pub mod trace_events;

use opentelemetry::trace::Status;
use opentelemetry::Value;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use slicetrace::{Config, Guard};
use std::sync::Arc;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

/// Keeps every exported span, also after shutdown (the SDK's in-memory exporter clears itself
/// on shutdown).
#[derive(Clone, Debug, Default)]
pub struct Collect(pub Arc<Mutex<Vec<SpanData>>>);

impl SpanExporter for Collect {
    async fn export(&self, mut batch: Vec<SpanData>) -> OTelSdkResult {
        self.0.lock().unwrap().append(&mut batch);
        Ok(())
    }
}

impl Collect {
    pub fn spans(&self) -> Vec<SpanData> {
        self.0.lock().unwrap().clone()
    }
}

/// One session per process at a time: tests in a binary take turns.
static TURN: Mutex<()> = Mutex::new(());

pub struct Session {
    pub guard: Option<Guard>,
    pub exporter: Collect,
    _turn: MutexGuard<'static, ()>,
}

/// Holds the process's one session slot for a test that starts its own session.
pub fn turn() -> MutexGuard<'static, ()> {
    TURN.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn config() -> Config {
    let mut c = Config::new("slicetrace-test");
    c.announce = false;
    c.finish_grace = Duration::from_millis(5);
    c.joined_linger = Duration::from_millis(30);
    c.park_timeout = Duration::from_millis(100);
    c.sweep_interval = Duration::from_millis(1);
    c.report_losses_every = None;
    c
}

pub fn session() -> Session {
    session_with(|c| c)
}

/// A session exporting where `cfg` says (its spans are not collected here).
pub fn session_using(cfg: Config) -> Session {
    let turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let guard = slicetrace::init(cfg).expect("init");
    Session {
        guard: Some(guard),
        exporter: Collect::default(),
        _turn: turn,
    }
}

pub fn session_with(f: impl FnOnce(Config) -> Config) -> Session {
    let turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let exporter = Collect::default();
    let guard = slicetrace::init(f(config()).exporter(exporter.clone())).expect("init");
    Session {
        guard: Some(guard),
        exporter,
        _turn: turn,
    }
}

impl Session {
    /// Flushes and returns everything exported so far.
    pub fn trace(&self) -> Trace {
        assert!(self.guard.as_ref().unwrap().flush(Duration::from_secs(10)));
        Trace::new(self.exporter.spans())
    }

    /// Ends the session and returns everything exported, with the final counters.
    pub fn finish(&mut self) -> (Trace, slicetrace::Stats) {
        let stats = self.guard.take().unwrap().shutdown();
        (Trace::new(self.exporter.spans()), stats)
    }
}

pub struct Trace {
    pub spans: Vec<SpanData>,
    by_id: std::collections::HashMap<u64, usize>,
}

pub fn sid(s: &SpanData) -> u64 {
    u64::from_be_bytes(s.span_context.span_id().to_bytes())
}

pub fn tid(s: &SpanData) -> u128 {
    u128::from_be_bytes(s.span_context.trace_id().to_bytes())
}

pub fn parent(s: &SpanData) -> u64 {
    u64::from_be_bytes(s.parent_span_id.to_bytes())
}

pub fn links(s: &SpanData) -> Vec<u64> {
    s.links
        .iter()
        .map(|l| u64::from_be_bytes(l.span_context.span_id().to_bytes()))
        .collect()
}

pub fn attr(s: &SpanData, key: &str) -> Option<Value> {
    s.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.clone())
}

pub fn is_error(s: &SpanData) -> bool {
    matches!(s.status, Status::Error { .. })
}

pub fn unfinished(s: &SpanData) -> bool {
    attr(s, "slicetrace.unfinished") == Some(Value::Bool(true))
}

pub fn nanos(t: SystemTime) -> u128 {
    t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_nanos()
}

impl Trace {
    pub fn new(spans: Vec<SpanData>) -> Trace {
        let by_id = spans.iter().enumerate().map(|(i, s)| (sid(s), i)).collect();
        let t = Trace { spans, by_id };
        t.assert_well_formed();
        t
    }

    /// Checks that hold for every export: unique span ids, start <= end, children inside their
    /// local parents in time and in the same trace; every link in the span's trace, and a link
    /// within this process (not remote) to another exported span that started no later, and
    /// on the same thread ended no later than the linking span started.
    pub fn assert_well_formed(&self) {
        let mut ids = std::collections::HashSet::new();
        for s in &self.spans {
            assert!(ids.insert(sid(s)), "duplicate span id in {}", s.name);
            assert!(
                s.start_time <= s.end_time,
                "{} ends before it starts",
                s.name
            );
        }
        for s in &self.spans {
            if let Some(p) = self.find(parent(s)) {
                assert_eq!(tid(p), tid(s), "{} and its parent differ in trace", s.name);
                assert!(
                    p.start_time <= s.start_time && s.end_time <= p.end_time,
                    "{} [{:?}..{:?}] lies outside its parent {} [{:?}..{:?}]",
                    s.name,
                    s.start_time,
                    s.end_time,
                    p.name,
                    p.start_time,
                    p.end_time
                );
            }
            for l in s.links.iter() {
                let to = &l.span_context;
                let id = u64::from_be_bytes(to.span_id().to_bytes());
                assert_eq!(
                    u128::from_be_bytes(to.trace_id().to_bytes()),
                    tid(s),
                    "{} links to another trace",
                    s.name
                );
                if to.is_remote() {
                    continue;
                }
                let target = self
                    .find(id)
                    .unwrap_or_else(|| panic!("{} links to {id:016x}, not exported", s.name));
                assert_ne!(sid(target), sid(s), "{} links to itself", s.name);
                assert!(
                    target.start_time <= s.start_time,
                    "{} links to {}, which started after it",
                    s.name,
                    target.name
                );
                if parent(target) == parent(s) {
                    assert!(
                        target.end_time <= s.start_time,
                        "{} links to {} on its thread, which ended after it started",
                        s.name,
                        target.name
                    );
                }
            }
        }
    }

    pub fn find(&self, id: u64) -> Option<&SpanData> {
        self.by_id.get(&id).map(|&i| &self.spans[i])
    }

    /// The only span with this name.
    pub fn one(&self, name: &str) -> &SpanData {
        let all = self.named(name);
        assert_eq!(all.len(), 1, "spans named {name:?}: {}", self.names());
        all[0]
    }

    pub fn named(&self, name: &str) -> Vec<&SpanData> {
        let mut v: Vec<_> = self.spans.iter().filter(|s| s.name == name).collect();
        v.sort_by_key(|s| s.start_time);
        v
    }

    pub fn starting_with(&self, prefix: &str) -> Vec<&SpanData> {
        let mut v: Vec<_> = self
            .spans
            .iter()
            .filter(|s| s.name.starts_with(prefix))
            .collect();
        v.sort_by_key(|s| s.start_time);
        v
    }

    /// Children of `s`, by start time (ties by name).
    pub fn children(&self, s: &SpanData) -> Vec<&SpanData> {
        let mut v: Vec<_> = self
            .spans
            .iter()
            .filter(|c| parent(c) == sid(s) && tid(c) == tid(s))
            .collect();
        v.sort_by(|a, b| a.start_time.cmp(&b.start_time).then(a.name.cmp(&b.name)));
        v
    }

    pub fn child_names(&self, s: &SpanData) -> Vec<String> {
        self.children(s)
            .iter()
            .map(|c| c.name.to_string())
            .collect()
    }

    pub fn names(&self) -> String {
        let mut n: Vec<_> = self.spans.iter().map(|s| s.name.to_string()).collect();
        n.sort();
        n.join(", ")
    }
}

/// Asserts that every slice record a session kept is accounted for, where each of `threads`
/// threads traced one request of its own whose start was kept: a kept start became one of the
/// `spans` slices or was dropped for depth; a kept end closed a slice (all but the `unfinished`
/// ones), found nothing open, or matched a start dropped for depth.
pub fn assert_slice_records_accounted(
    stats: &slicetrace::Stats,
    threads: u64,
    spans: u64,
    unfinished: u64,
) {
    assert_eq!(stats.requests_started, threads, "{stats:?}");
    assert_eq!(stats.unknown_rid_records, 0, "{stats:?}");
    assert_eq!(unfinished, stats.slices_unfinished, "{stats:?}");
    let slice_records = stats.records_written - threads - stats.requests_finished;
    let depth = stats.slices_dropped_depth;
    let least = spans + depth + (spans - unfinished) + stats.end_without_start;
    assert!(
        (least..=least + depth).contains(&slice_records),
        "{slice_records} slice records kept, {spans} slices ({unfinished} unfinished): {stats:?}"
    );
}
