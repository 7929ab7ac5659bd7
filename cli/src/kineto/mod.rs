//! A PyTorch profiler trace (Kineto's Chrome trace JSON, `torch.profiler`'s
//! `export_chrome_trace`) merged into the converted file: its CPU ops, CUDA runtime calls, GPU
//! kernels, memcpys, counters and flows on one timeline with the requests' slices.
//!
//! # What a Kineto timestamp means
//!
//! Kineto keeps every activity's time as Unix-epoch nanoseconds. CPU-side times are read from
//! a cheap counter (the TSC where there is one) and turned into system-clock time by a fitted
//! line (`ApproximateClockToUnixTimeConverter` in Kineto's `ApproximateClock.cpp`, and
//! PyTorch's copy in `c10/util/ApproximateClock`); CUPTI is handed the same counter as its
//! clock and its records go through the same line (`CuptiTimestamp.cpp`), or, where that is
//! switched off, keep CUPTI's own timestamps, which Kineto takes as Unix time on Linux (and
//! moved onto it on Windows, `CuptiActivityPlatform.cpp` in older versions). The JSON writer
//! (`ChromeTraceLogger` in `output_json.cpp`)
//! then subtracts a base time from each (`transToRelativeTime`) and writes microseconds with
//! three decimals. The base (`ChromeTraceBaseTime` in `output_json.h`) is the system clock at
//! its first use, rounded down to a multiple of about three months since the epoch: recent
//! enough that a double still holds a nanosecond, and the same for every process profiled in
//! that quarter. The file records it as the top-level `"baseTimeNanoseconds"`: after
//! `"traceEvents"` in the versions that first wrote it (May 2024), before it since March 2025.
//! Kineto before late April 2024 wrote `ts` as absolute Unix microseconds and recorded no base;
//! for the two weeks in between it wrote relative times with no base recorded, which nothing in
//! the file can place.
//!
//! So a profiler event at `ts` T µs happened at Unix time `base + T·1000` ns, on the same clock
//! (the system clock, `CLOCK_REALTIME`) that slicetrace's span times are converted to. That
//! is the whole alignment: the merged file counts from one origin, and each side's times are
//! written relative to it. Where a trace gives no base and its times are not Unix times, the
//! merge stops with an error instead of guessing; `--torch-base-ns` supplies the base.
//!
//! # How the file is read
//!
//! Twice, streaming, in bounded memory: a first pass finds the clock (which may come after the
//! events), every process and thread the events use, and the earliest time; the second copies
//! each event through the writer with its pid, tid and `ts` rewritten where they must be, on
//! one line. Each event is checked by serde_json before anything of it is written. Memory is
//! the largest event and the table of tracks, whatever the file's size; a `.gz` file is
//! decompressed as it is read, twice.

mod json;

use json::Member;
use slicetrace_spans::util::json_str;
use slicetrace_spans::writer::TraceEventWriter;
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};

/// Pids made up for profiler processes whose own cannot be kept (a string, a negative or
/// larger-than-32-bit number, or one another profiler file took) count up from here: above
/// real pids and the ones the span writer makes up.
const FIRST_OTHER_PID: u32 = 1 << 31;
/// Tids made up for threads named by strings (Kineto's `"Spans"` and iteration tracks, older
/// versions' `"stream 7"`) count up from here within their process.
const FIRST_OTHER_TID: u64 = 1 << 48;
/// A trace with no base whose earliest time is at least this (µs; 2001-09-09) writes absolute
/// Unix times: no relative clock of Kineto's comes near it.
const UNIX_US_FROM: i128 = 1_000_000_000_000_000;
const DAY_NS: i128 = 86_400_000_000_000;
/// `process_name` events moved ahead of the events (so that any reader knows a profiler
/// process before its first event); past this many, the rest stay where they are.
const MOVED_NAMES: usize = 1 << 16;

/// How a profiler trace's `ts` values are placed on the Unix clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Clock {
    /// `ts` counts from the `"baseTimeNanoseconds"` the file records.
    Recorded(u64),
    /// `ts` counts from the base given on the command line.
    Given(u64),
    /// `ts` is Unix time already (Kineto before 2024).
    Unix,
}

impl Clock {
    fn base_ns(self) -> i128 {
        match self {
            Clock::Recorded(b) | Clock::Given(b) => i128::from(b),
            Clock::Unix => 0,
        }
    }
}

impl std::fmt::Display for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Clock::Recorded(b) => write!(f, "ts from its baseTimeNanoseconds {b}"),
            Clock::Given(b) => write!(f, "ts from the given base {b} ns"),
            Clock::Unix => f.write_str("ts in Unix microseconds"),
        }
    }
}

/// A pid as the file writes it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Key {
    /// A plain integer of 32 bits.
    Num(u64),
    /// Anything else, by its JSON text (a string with its quotes, `-1`, …).
    Raw(Box<str>),
}

/// A thread written as anything but a plain integer: it gets a made-up tid.
struct OtherThread {
    text: Box<str>,
    out: u64,
    named: bool,
}

struct Process {
    key: Key,
    out: u32,
    /// A `process_name` event names it.
    named: bool,
    /// Tids written as plain integers: kept, and skipped when tids are made up.
    num_tids: HashSet<u64>,
    others: Vec<OtherThread>,
    other_index: HashMap<Box<str>, usize>,
}

impl Process {
    fn new(key: Key) -> Process {
        Process {
            key,
            out: 0,
            named: false,
            num_tids: HashSet::new(),
            others: Vec::new(),
            other_index: HashMap::new(),
        }
    }

    fn intern_tid(&mut self, text: &str) -> Option<usize> {
        if let Some(t) = json::plain_uint(text) {
            self.num_tids.insert(t);
            return None;
        }
        if let Some(&i) = self.other_index.get(text) {
            return Some(i);
        }
        let i = self.others.len();
        self.others.push(OtherThread {
            text: text.into(),
            out: 0,
            named: false,
        });
        self.other_index.insert(text.into(), i);
        Some(i)
    }

    /// The tid written for `text`, when it is not written as it is.
    fn tid_out(&self, text: &str) -> Option<u64> {
        if json::plain_uint(text).is_some() {
            return None;
        }
        self.other_index.get(text).map(|&i| self.others[i].out)
    }

    /// Whether its events' pid is written as something else than the file's.
    fn renamed(&self) -> bool {
        self.key != Key::Num(u64::from(self.out))
    }
}

/// The fields of an event that the merge reads, as their JSON text.
#[derive(Default)]
struct Fields<'a> {
    ph: Option<Cow<'a, str>>,
    name: Option<Cow<'a, str>>,
    pid: Option<&'a str>,
    tid: Option<&'a str>,
    ts: Option<&'a str>,
}

fn text<'a>(ev: &'a str, r: &std::ops::Range<usize>) -> Result<&'a str, String> {
    ev.get(r.clone())
        .ok_or_else(|| "an event's text is not split at characters".to_owned())
}

/// Which of the fields the merge reads a member name (with its quotes) is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Field {
    Ph,
    Name,
    Pid,
    Tid,
    Ts,
    Other,
}

fn field(key: &str) -> Field {
    match key {
        "\"ph\"" => Field::Ph,
        "\"name\"" => Field::Name,
        "\"pid\"" => Field::Pid,
        "\"tid\"" => Field::Tid,
        "\"ts\"" => Field::Ts,
        k if k.contains('\\') => match json::string_value(k).as_deref() {
            Some("ph") => Field::Ph,
            Some("name") => Field::Name,
            Some("pid") => Field::Pid,
            Some("tid") => Field::Tid,
            Some("ts") => Field::Ts,
            _ => Field::Other,
        },
        _ => Field::Other,
    }
}

fn fields<'a>(ev: &'a str, members: &[Member]) -> Result<Fields<'a>, String> {
    let mut f = Fields::default();
    for m in members {
        let key = text(ev, &m.key)?;
        let which = field(key);
        if which == Field::Other {
            continue;
        }
        let value = text(ev, &m.value)?;
        match which {
            Field::Ph => f.ph = json::string_value(value),
            Field::Name => f.name = json::string_value(value),
            Field::Pid => f.pid = Some(value),
            Field::Tid => f.tid = Some(value),
            Field::Ts => f.ts = Some(value),
            Field::Other => {}
        }
    }
    Ok(f)
}

fn ts_ns(ts: &str) -> Result<i128, String> {
    json::us_to_ns(ts).ok_or_else(|| format!("\"ts\" is {ts}, not a number of microseconds"))
}

/// One profiler trace, read once: its clock, its tracks and how they map, what it holds.
pub struct Profile {
    path: PathBuf,
    recorded_base: Option<u64>,
    clock: Clock,
    /// The earliest and latest `ts` of its events other than metadata, in ns from its base.
    first_ns: Option<i128>,
    last_ns: Option<i128>,
    events: u64,
    phases: BTreeMap<String, u64>,
    processes: Vec<Process>,
    num_pids: HashMap<u32, usize>,
    raw_pids: HashMap<Box<str>, usize>,
    /// (position among the events, text) of the `process_name` events written first.
    moved: Vec<(u64, String)>,
    /// The file's length and modification time when first read.
    stamp: (u64, Option<std::time::SystemTime>),
}

fn stamp(path: &Path) -> Result<(u64, Option<std::time::SystemTime>), String> {
    let m = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((m.len(), m.modified().ok()))
}

/// Where a walk over a trace stopped.
enum Stop {
    /// The trace is not what it should be (message without the file's name and line).
    Input(String),
    /// Writing the output failed.
    Output(io::Error),
}

impl From<String> for Stop {
    fn from(s: String) -> Stop {
        Stop::Input(s)
    }
}

trait Visit {
    /// A top-level member other than the events, its value checked to be JSON.
    fn top(&mut self, key: &str, value: &str) -> Result<(), Stop>;
    /// Event `n` (from 0), a JSON object, with its members.
    fn event(&mut self, n: u64, ev: &str, members: &[Member]) -> Result<(), Stop>;
}

fn open(path: &Path) -> Result<Box<dyn Read>, String> {
    let named = |e: io::Error| format!("{}: {e}", path.display());
    let mut f = File::open(path).map_err(named)?;
    let mut magic = [0u8; 2];
    let n = f.read(&mut magic).map_err(named)?;
    drop(f);
    // Reopened rather than sought back: the file need not be seekable.
    let f = File::open(path).map_err(named)?;
    Ok(if n == 2 && magic == [0x1f, 0x8b] {
        Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(f)))
    } else {
        Box::new(f)
    })
}

/// Reads the trace at `path` from its top: each member other than the events to `v.top`,
/// each event to `v.event`, in order. Accepts Kineto's object form and the bare array form.
/// Each event is checked to be JSON when `check` is set; a second reading of a file that was
/// checked and has not changed since need not.
fn walk(path: &Path, v: &mut dyn Visit, check: bool) -> Result<(), Stop> {
    let mut src = json::Source::new(open(path)?);
    let here = |src: &json::Source<_>, why: String| {
        Stop::Input(format!("{}: line {}: {why}", path.display(), src.line()))
    };
    let io = |src: &json::Source<_>, e: io::Error| here(src, e.to_string());
    match src.peek().map_err(|e| io(&src, e))? {
        None => Err(Stop::Input(format!(
            "{}: empty: not a profiler trace",
            path.display()
        ))),
        Some(b'[') => {
            src.bump();
            events(path, &mut src, v, true, check)
        }
        Some(b'{') => {
            src.bump();
            let mut found = false;
            loop {
                match src.peek().map_err(|e| io(&src, e))? {
                    Some(b'}') => {
                        src.bump();
                        break;
                    }
                    Some(b'"') => {}
                    Some(_) => return Err(here(&src, "expected a member's name".into())),
                    None => return Err(here(&src, "the file is cut short".into())),
                }
                let key = match src.value() {
                    Ok(k) => std::str::from_utf8(k)
                        .ok()
                        .and_then(json::string_value)
                        .map(Cow::into_owned),
                    Err(e) => return Err(here(&src, e)),
                };
                let Some(key) = key else {
                    return Err(here(&src, "a member's name is not a JSON string".into()));
                };
                if src.peek().map_err(|e| io(&src, e))? != Some(b':') {
                    return Err(here(&src, format!("expected ':' after \"{key}\"")));
                }
                src.bump();
                if key == "traceEvents" {
                    if src.peek().map_err(|e| io(&src, e))? != Some(b'[') {
                        return Err(here(&src, "\"traceEvents\" is not an array".into()));
                    }
                    src.bump();
                    found = true;
                    events(path, &mut src, v, false, check)?;
                } else {
                    let checked = match src.value() {
                        Err(e) => Err(Stop::Input(e)),
                        Ok(value) => match std::str::from_utf8(value) {
                            Err(_) => Err(Stop::Input("not UTF-8".into())),
                            Ok(t) => match serde_json::from_str::<serde::de::IgnoredAny>(t) {
                                Err(e) => Err(Stop::Input(format!("not JSON ({e})"))),
                                Ok(_) => v.top(&key, t),
                            },
                        },
                    };
                    match checked {
                        Err(Stop::Input(why)) => {
                            return Err(here(&src, format!("the value of \"{key}\": {why}")))
                        }
                        other => other?,
                    }
                }
                match src.peek().map_err(|e| io(&src, e))? {
                    Some(b',') => src.bump(),
                    Some(b'}') => {
                        src.bump();
                        break;
                    }
                    Some(_) => return Err(here(&src, "expected ',' or '}' after a member".into())),
                    None => return Err(here(&src, "the file is cut short".into())),
                }
            }
            if !found {
                return Err(Stop::Input(format!(
                    "{}: no \"traceEvents\" array: not a Chrome trace-event file",
                    path.display()
                )));
            }
            if src.peek().map_err(|e| io(&src, e))?.is_some() {
                return Err(here(&src, "text after the trace's closing '}'".into()));
            }
            Ok(())
        }
        Some(c) => Err(Stop::Input(format!(
            "{}: not a trace-event file: it starts with {:?}, where a profiler trace starts \
             with '{{' (or '[')",
            path.display(),
            char::from(c)
        ))),
    }
}

/// The events of the array just opened, to its `]` (or, for a bare array, the file's end,
/// which the format allows to be missing).
fn events(
    path: &Path,
    src: &mut json::Source<Box<dyn Read>>,
    v: &mut dyn Visit,
    bare: bool,
    check: bool,
) -> Result<(), Stop> {
    let at_line =
        |line: u64, why: String| Stop::Input(format!("{}: line {line}: {why}", path.display()));
    let io = |src: &json::Source<_>, e: io::Error| at_line(src.line(), e.to_string());
    let mut n = 0u64;
    let mut members = Vec::new();
    loop {
        match src.peek().map_err(|e| io(src, e))? {
            Some(b']') => {
                src.bump();
                return Ok(());
            }
            Some(b'{') => {}
            None if bare => return Ok(()),
            None => return Err(at_line(src.line(), "the file is cut short".into())),
            Some(_) => {
                return Err(at_line(
                    src.line(),
                    format!("event {n} of \"traceEvents\" is not an object"),
                ))
            }
        }
        let (len, done) = {
            let raw = match src.object(&mut members) {
                Ok(raw) => raw,
                Err(e) => {
                    let (line, why) = not_json(src, e);
                    return Err(at_line(line, why));
                }
            };
            let len = raw.len();
            let done = match std::str::from_utf8(raw) {
                Err(_) => Err((0, Stop::Input("the event is not UTF-8".into()))),
                Ok(ev) => match check
                    .then(|| serde_json::from_str::<serde::de::IgnoredAny>(ev))
                    .transpose()
                {
                    Err(e) => Err((
                        e.line().saturating_sub(1) as u64,
                        Stop::Input(format!("the event is not JSON ({e})")),
                    )),
                    Ok(_) => v.event(n, ev, &members).map_err(|s| (0, s)),
                },
            };
            (len, done)
        };
        match done {
            Ok(()) => {}
            Err((lines_in, Stop::Input(why))) => {
                return Err(at_line(src.line_of_last(len) + lines_in, why))
            }
            Err((_, out)) => return Err(out),
        }
        n += 1;
        match src.peek().map_err(|e| io(src, e))? {
            Some(b',') => src.bump(),
            Some(b']') => {}
            None if bare => {}
            None => return Err(at_line(src.line(), "the file is cut short".into())),
            Some(_) => {
                return Err(at_line(
                    src.line(),
                    "expected ',' or ']' after an event".into(),
                ))
            }
        }
    }
}

/// Why the event at the next byte is not an object: serde_json's words, with its line, where
/// the event's extent can still be found; else the scanner's.
fn not_json(src: &mut json::Source<Box<dyn Read>>, scanned: String) -> (u64, String) {
    let start = src.line();
    let why = match src.value() {
        Ok(raw) => match serde_json::from_slice::<serde::de::IgnoredAny>(raw) {
            Err(e) => Some((e.line().saturating_sub(1) as u64, e.to_string())),
            Ok(_) => None,
        },
        Err(_) => None,
    };
    match why {
        Some((lines_in, e)) => (start + lines_in, format!("the event is not JSON ({e})")),
        None => (start, format!("the event is not JSON: {scanned}")),
    }
}

/// The first pass: records the clock, the tracks, the phases and the time range.
struct Scan<'a> {
    p: &'a mut Profile,
}

impl Visit for Scan<'_> {
    fn top(&mut self, key: &str, value: &str) -> Result<(), Stop> {
        if key == "baseTimeNanoseconds" {
            let base = serde_json::from_str::<u64>(value).map_err(|_| {
                format!("\"baseTimeNanoseconds\" is {value}, not a whole number of nanoseconds")
            })?;
            self.p.recorded_base = Some(base);
        }
        Ok(())
    }

    fn event(&mut self, n: u64, ev: &str, members: &[Member]) -> Result<(), Stop> {
        let f = fields(ev, members)?;
        let p = &mut *self.p;
        p.events += 1;
        let ph = f.ph.as_deref().unwrap_or("");
        match p.phases.get_mut(ph) {
            Some(c) => *c += 1,
            None => {
                p.phases.insert(ph.to_owned(), 1);
            }
        }
        let pid = f.pid.map(|t| p.intern_pid(t));
        let tid = match (pid, f.tid) {
            (Some(i), Some(t)) => p.processes[i].intern_tid(t),
            _ => None,
        };
        let metadata = ph == "M";
        if metadata {
            match (f.name.as_deref(), pid) {
                (Some("process_name"), Some(i)) => {
                    p.processes[i].named = true;
                    if p.moved.len() < MOVED_NAMES {
                        p.moved.push((n, ev.to_owned()));
                    }
                }
                (Some("thread_name"), Some(i)) => {
                    if let Some(t) = tid {
                        p.processes[i].others[t].named = true;
                    }
                }
                _ => {}
            }
        }
        if let Some(ts) = f.ts {
            let ns = ts_ns(ts)?;
            // Metadata's times say nothing of when things ran (other tools write 0).
            if !metadata {
                p.first_ns = Some(p.first_ns.map_or(ns, |f| f.min(ns)));
                p.last_ns = Some(p.last_ns.map_or(ns, |l| l.max(ns)));
            }
        }
        Ok(())
    }
}

/// The second pass: writes each event, rewritten, through the span writer.
struct Copy<'a, W: Write> {
    p: &'a Profile,
    w: &'a mut TraceEventWriter<W>,
    shift_ns: i128,
    members: Vec<Member>,
    line: String,
    clamped: u64,
    /// The next moved `process_name` event, already written.
    moved: usize,
}

impl<W: Write> Visit for Copy<'_, W> {
    fn top(&mut self, _: &str, _: &str) -> Result<(), Stop> {
        Ok(())
    }

    fn event(&mut self, n: u64, ev: &str, members: &[Member]) -> Result<(), Stop> {
        if self.p.moved.get(self.moved).is_some_and(|(at, _)| *at == n) {
            self.moved += 1;
            return Ok(());
        }
        self.write(ev, members)
    }
}

impl<W: Write> Copy<'_, W> {
    fn write(&mut self, ev: &str, members: &[Member]) -> Result<(), Stop> {
        self.p.rewrite(
            ev,
            members,
            self.shift_ns,
            &mut self.line,
            &mut self.clamped,
        )?;
        self.w.raw_event(&self.line).map_err(Stop::Output)
    }

    /// Writes an event kept from the first reading.
    fn write_kept(&mut self, ev: &str) -> Result<(), Stop> {
        let mut members = std::mem::take(&mut self.members);
        let done = match json::members(ev.as_bytes(), &mut members) {
            Ok(_) => self.write(ev, &members),
            Err(_) => Err(Stop::Input("a kept event is not an object".into())),
        };
        self.members = members;
        done
    }
}

impl Profile {
    fn new(path: &Path) -> Profile {
        Profile {
            path: path.to_owned(),
            recorded_base: None,
            clock: Clock::Unix,
            first_ns: None,
            last_ns: None,
            events: 0,
            phases: BTreeMap::new(),
            processes: Vec::new(),
            num_pids: HashMap::new(),
            raw_pids: HashMap::new(),
            moved: Vec::new(),
            stamp: (0, None),
        }
    }

    /// Reads the trace at `path` once; `given_base` is its base (Unix ns) if it records none.
    fn scan(path: &Path, given_base: Option<u64>) -> Result<Profile, String> {
        let mut p = Profile::new(path);
        p.stamp = stamp(path)?;
        let mut scan = Scan { p: &mut p };
        match walk(path, &mut scan, true) {
            Ok(()) => {}
            Err(Stop::Input(why)) => return Err(why),
            Err(Stop::Output(e)) => return Err(e.to_string()),
        }
        p.clock = match (p.recorded_base, given_base) {
            (Some(b), _) => Clock::Recorded(b),
            (None, Some(b)) => Clock::Given(b),
            (None, None) => match p.first_ns {
                Some(first) if first < UNIX_US_FROM * 1000 => {
                    return Err(format!(
                        "{}: the profiler trace records no clock: it has no \
                         \"baseTimeNanoseconds\", and its timestamps (the earliest at {} µs) are \
                         not Unix times, so where its events fall among the spans is unknown. \
                         Give the Unix time (ns) its ts 0 stands for with --torch-base-ns, or \
                         export the trace with a newer PyTorch, whose Kineto records it",
                        path.display(),
                        us_text(first)
                    ))
                }
                _ => Clock::Unix,
            },
        };
        Ok(p)
    }

    fn intern_pid(&mut self, text: &str) -> usize {
        let num = json::plain_uint(text).and_then(|n| u32::try_from(n).ok());
        if let Some(n) = num {
            if let Some(&i) = self.num_pids.get(&n) {
                return i;
            }
            self.num_pids.insert(n, self.processes.len());
            self.processes.push(Process::new(Key::Num(u64::from(n))));
        } else {
            if let Some(&i) = self.raw_pids.get(text) {
                return i;
            }
            self.raw_pids.insert(text.into(), self.processes.len());
            self.processes.push(Process::new(Key::Raw(text.into())));
        }
        self.processes.len() - 1
    }

    fn process_of(&self, text: &str) -> Option<&Process> {
        let i = match json::plain_uint(text).and_then(|n| u32::try_from(n).ok()) {
            Some(n) => self.num_pids.get(&n),
            None => self.raw_pids.get(text),
        }?;
        self.processes.get(*i)
    }

    /// The latest time origin (Unix ns) that leaves none of its events before it.
    fn origin_cap(&self) -> Option<u64> {
        let first = self.first_ns?;
        let at = match self.clock {
            Clock::Recorded(_) | Clock::Given(_) => {
                let base = self.clock.base_ns();
                base.min(base + first)
            }
            // Absolute times: an origin like the span writer's own (midnight UTC the day
            // before), so that the doubles viewers read keep nanoseconds.
            Clock::Unix => (first.div_euclid(DAY_NS) - 1) * DAY_NS,
        };
        Some(at.clamp(0, i128::from(u64::MAX)) as u64)
    }

    /// Writes `ev` into `out` on one line, with its pid and tid as this file maps them and its
    /// `ts` moved by `shift_ns` (kept at 0 or later, as Kineto keeps it).
    fn rewrite(
        &self,
        ev: &str,
        members: &[Member],
        shift_ns: i128,
        out: &mut String,
        clamped: &mut u64,
    ) -> Result<(), String> {
        out.clear();
        let f = fields(ev, members)?;
        let process = f.pid.and_then(|t| self.process_of(t));
        let pid_out = process.filter(|p| p.renamed()).map(|p| p.out);
        let tid_out = match (process, f.tid) {
            (Some(p), Some(t)) => p.tid_out(t),
            _ => None,
        };
        let shift = shift_ns != 0 && f.ts.is_some();
        if pid_out.is_none() && tid_out.is_none() && !shift {
            json::push_compact(out, ev);
            return Ok(());
        }
        out.push('{');
        for (i, m) in members.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let key = text(ev, &m.key)?;
            let value = text(ev, &m.value)?;
            out.push_str(key);
            out.push(':');
            let which = field(key);
            match (pid_out, tid_out) {
                (Some(pid), _) if which == Field::Pid => {
                    let _ = write!(out, "{pid}");
                    continue;
                }
                (_, Some(tid)) if which == Field::Tid => {
                    let _ = write!(out, "{tid}");
                    continue;
                }
                _ => {}
            }
            if shift && which == Field::Ts {
                let mut ns = ts_ns(value)? + shift_ns;
                if ns < 0 {
                    *clamped += 1;
                    ns = 0;
                }
                json::push_us(out, ns);
            } else {
                json::push_compact(out, value);
            }
        }
        out.push('}');
        Ok(())
    }

    /// Names, before the events, every process and string-named thread: with the file's own
    /// `process_name` events, or from how the file writes its id.
    fn write_names<W: Write>(&self, c: &mut Copy<'_, W>) -> Result<(), Stop> {
        for (_, ev) in &self.moved {
            c.write_kept(ev)?;
        }
        let mut line = String::new();
        for p in &self.processes {
            if !p.named {
                let name = match &p.key {
                    Key::Raw(t) => json::string_value(t)
                        .map(Cow::into_owned)
                        .unwrap_or_else(|| format!("pid {t}")),
                    Key::Num(n) => format!("pid {n}"),
                };
                line.clear();
                let _ = write!(
                    line,
                    "{{\"ph\":\"M\",\"pid\":{},\"name\":\"process_name\",\"args\":{{\"name\":",
                    p.out
                );
                json_str(&mut line, &name);
                line.push_str("}}");
                c.w.raw_event(&line).map_err(Stop::Output)?;
            }
            for t in p.others.iter().filter(|t| !t.named) {
                let name = json::string_value(&t.text)
                    .map(Cow::into_owned)
                    .unwrap_or_else(|| format!("tid {}", t.text));
                line.clear();
                let _ = write!(
                    line,
                    "{{\"ph\":\"M\",\"pid\":{},\"tid\":{},\"name\":\"thread_name\",\"args\":{{\"name\":",
                    p.out, t.out
                );
                json_str(&mut line, &name);
                line.push_str("}}");
                c.w.raw_event(&line).map_err(Stop::Output)?;
            }
        }
        Ok(())
    }

    /// The second pass: writes every event, counting from the writer's origin `origin_ns`.
    fn copy<W: Write>(
        &self,
        w: &mut TraceEventWriter<W>,
        origin_ns: u64,
    ) -> Result<Merged, String> {
        let shift_ns = self.clock.base_ns() - i128::from(origin_ns);
        let mut c = Copy {
            p: self,
            w,
            shift_ns,
            members: Vec::new(),
            line: String::new(),
            clamped: 0,
            moved: 0,
        };
        // Read again unchecked only if it is the file the first reading checked.
        if stamp(&self.path)? != self.stamp {
            return Err(format!(
                "{}: the file changed while it was being merged",
                self.path.display()
            ));
        }
        let walked = self
            .write_names(&mut c)
            .and_then(|()| walk(&self.path, &mut c, false));
        match walked {
            Ok(()) => {}
            Err(Stop::Input(why)) => return Err(why),
            Err(Stop::Output(e)) => return Err(format!("writing the output: {e}")),
        }
        let base = self.clock.base_ns();
        Ok(Merged {
            path: self.path.clone(),
            events: self.events,
            phases: self.phases.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            processes: self.processes.len(),
            clock: self.clock,
            shift_ns,
            clamped: c.clamped,
            renamed: self
                .processes
                .iter()
                .filter(|p| p.renamed())
                .map(|p| {
                    let was = match &p.key {
                        Key::Num(n) => n.to_string(),
                        Key::Raw(t) => t.to_string(),
                    };
                    (was, p.out)
                })
                .collect(),
            unix_range_ns: self
                .first_ns
                .zip(self.last_ns)
                .map(|(a, b)| (a + base, b + base)),
        })
    }
}

/// Microseconds with three decimals, for messages.
fn us_text(ns: i128) -> String {
    let mut s = String::new();
    json::push_us(&mut s, ns);
    s
}

/// What merging one profiler trace did.
#[derive(Clone, Debug)]
pub struct Merged {
    pub path: PathBuf,
    /// Events copied (besides any names made up for tracks the file names by string).
    pub events: u64,
    /// Events per `ph`.
    pub phases: Vec<(String, u64)>,
    pub processes: usize,
    pub clock: Clock,
    /// What was added to its timestamps (ns) to count them from the file's origin.
    pub shift_ns: i128,
    /// Timestamps that came out before the origin and were written as 0 (metadata's only).
    pub clamped: u64,
    /// Processes written under another pid: (the file's pid as written, the pid here).
    pub renamed: Vec<(String, u32)>,
    /// Its earliest and latest event (other than metadata), Unix ns.
    pub unix_range_ns: Option<(i128, i128)>,
}

impl Merged {
    /// One paragraph for the terminal.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "merged {}: {} profiler events (",
            self.path.display(),
            self.events
        );
        for (i, (ph, n)) in self.phases.iter().enumerate() {
            let _ = write!(s, "{}{ph} {n}", if i > 0 { ", " } else { "" });
        }
        let _ = write!(
            s,
            ") on {} processes; {}; {}",
            self.processes,
            self.clock,
            if self.shift_ns == 0 {
                "timestamps kept as written".to_owned()
            } else {
                format!("timestamps moved by {} µs", us_text(self.shift_ns))
            }
        );
        if !self.renamed.is_empty() {
            s.push_str("; pids written anew:");
            for (i, (was, now)) in self.renamed.iter().enumerate() {
                if i == 8 {
                    let _ = write!(s, " and {} more", self.renamed.len() - 8);
                    break;
                }
                let _ = write!(s, "{} {was} → {now}", if i > 0 { "," } else { "" });
            }
        }
        if self.clamped > 0 {
            let _ = write!(
                s,
                "; {} metadata timestamps before the origin written as 0",
                self.clamped
            );
        }
        s
    }

    /// A warning when its events and the spans (Unix ns) share no moment: a sign that one of
    /// the clocks is not what it claims.
    pub fn disjoint_from(&self, spans: (u64, u64)) -> Option<String> {
        let (a, b) = self.unix_range_ns?;
        let (c, d) = (i128::from(spans.0), i128::from(spans.1));
        if b >= c && d >= a {
            return None;
        }
        Some(format!(
            "warning: {}: its events ({} to {} µs, Unix time) and the spans ({} to {} µs) do \
             not overlap: check that both were recorded in the same run, on clocks that agree",
            self.path.display(),
            us_text(a),
            us_text(b),
            us_text(c),
            us_text(d)
        ))
    }
}

/// The profiler traces to merge, each read once already.
pub struct Profiles {
    files: Vec<Profile>,
}

impl Profiles {
    /// Nothing to merge.
    pub fn none() -> Profiles {
        Profiles { files: Vec::new() }
    }

    /// Reads each trace once (its clock, tracks and time range), and gives every profiler
    /// process its pid in the merged file: its own where it is a 32-bit integer no earlier
    /// file took, else one made up, in the order the files and their events name them.
    /// `given_base` (Unix ns) places the traces that record no base.
    pub fn read(paths: &[PathBuf], given_base: Option<u64>) -> Result<Profiles, String> {
        let mut files = paths
            .iter()
            .map(|p| Profile::scan(p, given_base))
            .collect::<Result<Vec<_>, _>>()?;
        let own: HashSet<u64> = files
            .iter()
            .flat_map(|f| f.processes.iter())
            .filter_map(|p| match p.key {
                Key::Num(n) => Some(n),
                Key::Raw(_) => None,
            })
            .collect();
        let mut claimed = HashSet::new();
        let mut next = FIRST_OTHER_PID - 1;
        for p in files.iter_mut().flat_map(|f| f.processes.iter_mut()) {
            p.out = match p.key {
                Key::Num(n) if claimed.insert(n) => n as u32,
                _ => loop {
                    next = next.wrapping_add(1);
                    let n = u64::from(next);
                    if next != 0 && !own.contains(&n) && claimed.insert(n) {
                        break next;
                    }
                },
            };
            let mut tid = FIRST_OTHER_TID - 1;
            for t in &mut p.others {
                t.out = loop {
                    tid += 1;
                    if !p.num_tids.contains(&tid) {
                        break tid;
                    }
                };
            }
        }
        Ok(Profiles { files })
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Before the first span: keeps the profilers' pids from the spans' processes, and the
    /// file's time origin no later than any profiler event.
    pub fn prepare<W: Write>(&self, w: &mut TraceEventWriter<W>) {
        w.reserve_pids(
            self.files
                .iter()
                .flat_map(|f| f.processes.iter().map(|p| p.out)),
        );
        for cap in self.files.iter().filter_map(Profile::origin_cap) {
            w.cap_epoch(cap);
        }
    }

    /// After the last span: writes every profiler event through `w`, counted from its origin.
    pub fn write<W: Write>(&self, w: &mut TraceEventWriter<W>) -> Result<Vec<Merged>, String> {
        if self.files.is_empty() {
            return Ok(Vec::new());
        }
        let origin = w
            .time_origin()
            .map_err(|e| format!("writing the output: {e}"))?;
        self.files.iter().map(|f| f.copy(w, origin)).collect()
    }
}

#[cfg(test)]
mod tests;
