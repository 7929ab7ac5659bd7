//! A real OpenTelemetry collector for the tests: `rotel`, started on loopback ports of its own,
//! printing every span it decoded; and a reader of what it printed.
#![allow(dead_code)]

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// True when the `rotel` Python package is installed.
pub fn installed() -> bool {
    std::env::var_os("ROTEL_AGENT").is_some()
        || Command::new("python3")
            .args(["-c", "import rotel"])
            .output()
            .is_ok_and(|o| o.status.success())
}

/// Where `.ci/run` / `scripts/test` put it: `rotel-agent` inside the `rotel` Python package.
pub fn agent_path() -> PathBuf {
    if let Some(p) = std::env::var_os("ROTEL_AGENT") {
        return p.into();
    }
    let out = Command::new("python3")
        .args([
            "-c",
            "import rotel, os; print(os.path.dirname(rotel.__file__))",
        ])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "rotel is not installed: run `pip install rotel==0.0.1a15` (scripts/test does)"
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim()).join("rotel-agent")
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Rotel {
    child: Child,
    pub grpc: String,
    pub http: String,
    log: PathBuf,
}

impl Rotel {
    pub fn start() -> Rotel {
        Rotel::start_on(free_port(), free_port())
    }

    /// Without printing spans: for measuring, where only the collector's speed matters.
    pub fn start_quiet() -> Rotel {
        Rotel::launch(free_port(), free_port(), false)
    }

    /// On given ports (say, where an exporter already points).
    pub fn start_on(g: u16, h: u16) -> Rotel {
        Rotel::launch(g, h, true)
    }

    fn launch(g: u16, h: u16, print_spans: bool) -> Rotel {
        let log =
            std::env::temp_dir().join(format!("slicetrace-rotel-{}-{g}.out", std::process::id()));
        let out = std::fs::File::create(&log).unwrap();
        let debug: &[&str] = if print_spans {
            &["--debug-log", "traces", "--debug-log-verbosity", "detailed"]
        } else {
            &[]
        };
        let child = Command::new(agent_path())
            .args([
                "start",
                "--otlp-grpc-endpoint",
                &format!("127.0.0.1:{g}"),
                "--otlp-http-endpoint",
                &format!("127.0.0.1:{h}"),
                "--exporter",
                "blackhole",
                "--pid-file",
                &format!("{}.pid", log.display()),
                "--log-file",
                &format!("{}.log", log.display()),
            ])
            .args(debug)
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .stdin(Stdio::null())
            .spawn()
            .expect("rotel-agent starts");
        let r = Rotel {
            child,
            grpc: format!("127.0.0.1:{g}"),
            http: format!("127.0.0.1:{h}"),
            log,
        };
        for addr in [&r.grpc, &r.http] {
            let deadline = Instant::now() + Duration::from_secs(20);
            while TcpStream::connect(addr).is_err() {
                assert!(Instant::now() < deadline, "rotel did not listen on {addr}");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        r
    }

    pub fn output(&self) -> String {
        let mut s = String::new();
        std::fs::File::open(&self.log)
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        s
    }

    /// Stops (`SIGSTOP`) or resumes (`SIGCONT`) the collector: a collector that hangs.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill only sends a signal to our own child process; no memory is involved.
        let rc = unsafe { libc::kill(self.child.id() as i32, sig) };
        assert_eq!(rc, 0, "kill({sig}) failed");
        if sig == libc::SIGSTOP {
            // The signal is sent, not yet taken: a thread of the collector on the other core
            // could still answer one more export. Wait until every thread has stopped.
            let deadline = Instant::now() + Duration::from_secs(5);
            while !self.all_threads_stopped() {
                assert!(Instant::now() < deadline, "the collector did not stop");
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }

    fn all_threads_stopped(&self) -> bool {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{}/task", self.child.id())) else {
            return false;
        };
        tasks.flatten().all(|t| {
            std::fs::read_to_string(t.path().join("stat")).is_ok_and(|stat| {
                // The state follows the parenthesised command name.
                stat.rsplit_once(") ")
                    .is_some_and(|(_, rest)| rest.starts_with('T'))
            })
        })
    }

    /// CPU time the collector has used so far (all its threads), from `/proc`.
    pub fn cpu_time(&self) -> Duration {
        stat_cpu_time(&format!("/proc/{}/stat", self.child.id())).unwrap_or_default()
    }

    /// Waits until the collector has printed at least `n` spans, then returns all it printed.
    pub fn spans(&self, n: usize) -> Vec<Span> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let spans = parse(&self.output());
            if spans.len() >= n || Instant::now() > deadline {
                return spans;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Rotel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// One span as the collector decoded it.
#[derive(Clone, Debug, Default)]
pub struct Span {
    pub trace_id: String,
    pub parent_id: String,
    pub id: String,
    pub name: String,
    pub kind: String,
    pub status: String,
    /// `(key, value)` with the value as printed, e.g. `Str(x)`, `Int(3)`.
    pub attrs: Vec<(String, String)>,
    pub links: Vec<String>,
    pub events: Vec<String>,
    pub resource: Vec<(String, String)>,
}

impl Span {
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn resource_attr(&self, key: &str) -> Option<&str> {
        self.resource
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(PartialEq)]
enum Mode {
    None,
    Resource,
    Attrs,
    Events,
    Links,
}

fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let rest = line.trim_start().strip_prefix(name)?;
    Some(rest.trim_start().strip_prefix(':')?.trim())
}

/// A field whose value may itself begin with a space (a span name does, with no role): only
/// the one space the format puts after the colon is taken off.
fn field_exact<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let rest = line.trim_start().strip_prefix(name)?;
    let v = rest.trim_start().strip_prefix(':')?;
    Some(
        v.strip_prefix(' ')
            .unwrap_or(v)
            .trim_end_matches(['\r', '\n']),
    )
}

/// Reads the OpenTelemetry Collector debug format ("detailed") that rotel prints.
pub fn parse(text: &str) -> Vec<Span> {
    let mut spans: Vec<Span> = Vec::new();
    let mut resource: Vec<(String, String)> = Vec::new();
    let mut mode = Mode::None;
    for line in text.lines() {
        let t = line.trim_start();
        if t.starts_with("ResourceSpans #") {
            resource.clear();
            mode = Mode::None;
        } else if t.starts_with("Resource attributes:") {
            mode = Mode::Resource;
        } else if t.starts_with("Span #") {
            spans.push(Span {
                resource: resource.clone(),
                ..Span::default()
            });
            mode = Mode::None;
        } else if t == "Attributes:" {
            mode = Mode::Attrs;
        } else if t == "Events:" {
            mode = Mode::Events;
        } else if t == "Links:" {
            mode = Mode::Links;
        } else if let Some(s) = spans.last_mut().filter(|_| mode != Mode::Resource) {
            if let Some(v) = field(line, "Trace ID").filter(|_| mode == Mode::None) {
                s.trace_id = v.to_owned();
            } else if let Some(v) = field(line, "Parent ID") {
                s.parent_id = v.to_owned();
            } else if let Some(v) = field(line, "ID").filter(|_| mode == Mode::None) {
                s.id = v.to_owned();
            } else if let Some(v) = field_exact(line, "Name").filter(|_| mode == Mode::None) {
                s.name = v.to_owned();
            } else if let Some(v) = field(line, "Kind") {
                s.kind = v.to_owned();
            } else if let Some(v) = field(line, "Status code") {
                s.status = v.to_owned();
            } else if let Some(kv) = t.strip_prefix("-> ") {
                match mode {
                    Mode::Attrs => {
                        if let Some((k, v)) = kv.split_once(": ") {
                            s.attrs.push((k.to_owned(), v.to_owned()));
                        }
                    }
                    Mode::Links => {
                        if let Some(id) = kv.strip_prefix("ID: ") {
                            s.links.push(id.to_owned());
                        }
                    }
                    Mode::Events => {
                        if let Some(n) = kv.strip_prefix("Name: ") {
                            s.events.push(n.to_owned());
                        }
                    }
                    _ => {}
                }
            }
        } else if mode == Mode::Resource {
            if let Some(kv) = t.strip_prefix("-> ") {
                if let Some((k, v)) = kv.split_once(": ") {
                    resource.push((k.to_owned(), v.to_owned()));
                }
            } else if t.starts_with("ScopeSpans") {
                mode = Mode::None;
            }
        }
    }
    spans
}

/// User + system CPU time in a `/proc/.../stat` file (a process's or a thread's), and the
/// command name it gives.
pub fn stat_cpu_time(path: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf only reads a system constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some(Duration::from_nanos(ticks * 1_000_000_000 / hz))
}
