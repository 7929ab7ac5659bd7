//! Process set-up: `init` starts a tracing session, the `Guard` it returns ends it.

use crate::collector::clock::{self, ClockSource, TickClock};
use crate::collector::drainer::{self, Control, DrainerParts};
use crate::collector::shipper::Shipper;
use crate::collector::sink::Sink;
use crate::collector::stats::Stats;
use crate::collector::tree::{ProcessInfo, Tree, TreeLimits};
use crate::env::{Destination, EnvError, EnvSettings};
use crate::export::jsonl::JsonLinesExporter;
use crate::export::otlp::OtlpSink;
use crate::export::perfetto::PerfettoExporter;
use crate::local::handle::{self, ENABLED, LOST_NO_HANDLE, RING_CAPACITY};
use crate::registry::{self, DRAINER_LIVE};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::trace::SpanExporter;
use opentelemetry_sdk::Resource;
use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Records per thread ring unless configured: 512 KiB of 32-byte records.
pub const DEFAULT_RING_CAPACITY: usize = 16 * 1024;

/// How a session runs. `Config::new(service).exporter(e)` is enough; the rest has defaults.
pub struct Config {
    /// `service.name` of the resource.
    pub service_name: String,
    /// More resource attributes.
    pub resource_attributes: Vec<KeyValue>,
    /// Records per thread ring (rounded up to a power of two) for rings made from now on.
    pub ring_capacity: usize,
    /// How often the drainer sweeps the rings.
    pub sweep_interval: Duration,
    /// A request with no record for this long is closed and exported as unfinished.
    pub idle_timeout: Duration,
    /// After `req_finish`, how long other threads' records of the request may still arrive.
    pub finish_grace: Duration,
    /// A request joined from elsewhere ends when its last thread span ends and this passes.
    pub joined_linger: Duration,
    /// How long a record of a request not (yet) known may wait for it before it is dropped.
    pub park_timeout: Duration,
    /// Open requests kept at most; more are refused and counted.
    pub max_open_requests: usize,
    /// Records waiting for their request, at most; more are dropped and counted.
    pub max_parked: usize,
    /// Spans per export call, at most; a full batch is exported at once.
    pub max_export_batch: usize,
    /// A batch that is not full waits at most this long before it is exported.
    pub export_interval: Duration,
    /// Print one line on stderr per interval in which spans or records were lost (`None`: never).
    pub report_losses_every: Option<Duration>,
    /// Batches waiting for the exporter, at most; more are dropped and counted.
    pub export_queue_batches: usize,
    /// How long shutdown waits for the exporter.
    pub shutdown_timeout: Duration,
    /// Print the one start-up line (clock source) on stderr.
    pub announce: bool,
    sink: Option<Box<dyn Sink>>,
}

impl Config {
    pub fn new(service_name: impl Into<String>) -> Config {
        Config {
            service_name: service_name.into(),
            resource_attributes: Vec::new(),
            ring_capacity: DEFAULT_RING_CAPACITY,
            sweep_interval: Duration::from_millis(2),
            idle_timeout: Duration::from_secs(600),
            finish_grace: Duration::from_millis(20),
            joined_linger: Duration::from_millis(500),
            park_timeout: Duration::from_millis(500),
            max_open_requests: 1 << 20,
            max_parked: 1 << 16,
            max_export_batch: 64,
            export_interval: Duration::from_millis(500),
            report_losses_every: Some(Duration::from_secs(10)),
            export_queue_batches: 2048,
            shutdown_timeout: Duration::from_secs(5),
            announce: true,
            sink: None,
        }
    }

    /// Export to an `opentelemetry_sdk` span exporter (OTLP, in-memory, stdout, …).
    pub fn exporter(mut self, exporter: impl SpanExporter + 'static) -> Config {
        self.sink = Some(Box::new(exporter));
        self
    }

    /// Export to any [`Sink`].
    pub fn sink(mut self, sink: Box<dyn Sink>) -> Config {
        self.sink = Some(sink);
        self
    }
}

impl Config {
    /// The configuration the environment asks for (see [`EnvSettings`]): OTLP when an endpoint
    /// variable is set, else a local trace file. `service_name` applies unless
    /// `OTEL_SERVICE_NAME` is set. Does not look at the `SLICETRACE` switch.
    pub fn from_env(service_name: &str) -> Result<Config, InitError> {
        let env = EnvSettings::from_process().map_err(InitError::Env)?;
        Config::from_settings(&env, service_name)
    }

    pub fn from_settings(env: &EnvSettings, service_name: &str) -> Result<Config, InitError> {
        let mut cfg = Config::new(env.service_name.as_deref().unwrap_or(service_name));
        // The queue's bound is kept in whole batches; in spans it stays as set (or as default)
        // whatever the batch size.
        let queue_spans = env
            .max_queue_spans
            .unwrap_or(cfg.export_queue_batches * cfg.max_export_batch);
        if let Some(n) = env.max_export_batch {
            cfg.max_export_batch = n;
        }
        if let Some(d) = env.export_interval {
            cfg.export_interval = d;
        }
        cfg.export_queue_batches = queue_spans.div_ceil(cfg.max_export_batch).max(1);
        cfg.resource_attributes = env
            .resource_attributes
            .iter()
            .map(|(k, v)| KeyValue::new(k.clone(), v.clone()))
            .collect();
        let sink: Box<dyn Sink> = match &env.destination {
            Destination::Otlp {
                endpoint,
                protocol,
                timeout,
                tls,
                connections,
                ..
            } => {
                let tls = tls.load().map_err(InitError::Env)?;
                // Headers from the environment are read by the OTLP exporter itself.
                Box::new(
                    OtlpSink::with_tls(endpoint, *protocol, &[], *timeout, &tls)
                        .and_then(|s| s.with_connections(*connections))
                        .map_err(InitError::Exporter)?,
                )
            }
            Destination::File(path) => {
                let cannot = |e| InitError::Exporter(format!("cannot create {path}: {e}"));
                if path.ends_with(".jsonl") {
                    Box::new(JsonLinesExporter::create(path).map_err(cannot)?)
                } else {
                    let mut e = PerfettoExporter::create(path).map_err(cannot)?;
                    if let Some(r) = env.file_rotation {
                        e = e.with_rotation(r);
                    }
                    Box::new(e)
                }
            }
        };
        Ok(cfg.sink(sink))
    }
}

/// Starts tracing if the environment switches it on (`SLICETRACE=1`), configured by the
/// standard `OTEL_*` variables (see [`EnvSettings`]); `Ok(None)` when it is off. A variable
/// with a value that cannot be used is an error naming it.
pub fn init_from_env(service_name: &str) -> Result<Option<Guard>, InitError> {
    let env = EnvSettings::from_process().map_err(InitError::Env)?;
    if !env.enabled {
        return Ok(None);
    }
    init(Config::from_settings(&env, service_name)?).map(Some)
}

/// Why `init` failed.
#[derive(Debug)]
pub enum InitError {
    /// A session is running in this process already.
    AlreadyRunning,
    /// `Config` names no exporter.
    NoExporter,
    /// A setting is out of range; the text says which.
    BadConfig(String),
    /// The drainer thread could not start.
    Spawn(std::io::Error),
    /// An environment variable has a value that cannot be used.
    Env(EnvError),
    /// The exporter could not be made; the text says why.
    Exporter(String),
}

impl fmt::Display for InitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InitError::AlreadyRunning => {
                f.write_str("slicetrace is already running in this process")
            }
            InitError::NoExporter => f.write_str("slicetrace Config has no exporter"),
            InitError::BadConfig(s) => write!(f, "slicetrace Config: {s}"),
            InitError::Spawn(e) => write!(f, "slicetrace could not start its drainer thread: {e}"),
            InitError::Env(e) => write!(f, "slicetrace: {e}"),
            InitError::Exporter(e) => write!(f, "slicetrace: {e}"),
        }
    }
}

impl std::error::Error for InitError {}

struct Live {
    ctl: Arc<Control>,
    drainer: std::thread::Thread,
    written_base: u64,
    dropped_base: u64,
    lost_base: u64,
    unknown_base: u64,
}

static SESSION: Mutex<Option<Live>> = Mutex::new(None);

/// Ends the session when dropped (or by [`Guard::shutdown`]): every span recorded before is
/// exported, open requests as unfinished.
pub struct Guard {
    join: Option<JoinHandle<()>>,
    clock: ClockSource,
}

fn host_id() -> String {
    if let Ok(s) = std::fs::read_to_string("/etc/machine-id") {
        let s = s.trim();
        if !s.is_empty() {
            return s.to_owned();
        }
    }
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is writable for its whole length, which is what we pass.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc == 0 {
        let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
        if end > 0 {
            return String::from_utf8_lossy(&buf[..end]).into_owned();
        }
    }
    "unknown".to_owned()
}

fn ring_totals() -> (u64, u64) {
    let mut slots = Vec::new();
    registry::snapshot(&mut slots);
    slots.iter().fold((0, 0), |(w, d), s| {
        (w + s.ring.written(), d + s.ring.dropped())
    })
}

/// Starts tracing in this process: the hot calls record from now on, and a drainer thread turns
/// records into spans for the configured exporter.
pub fn init(mut cfg: Config) -> Result<Guard, InitError> {
    let mut session = SESSION.lock().unwrap_or_else(|e| e.into_inner());
    if session.is_some() {
        return Err(InitError::AlreadyRunning);
    }
    let Some(mut sink) = cfg.sink.take() else {
        return Err(InitError::NoExporter);
    };
    if cfg.ring_capacity < 64 || cfg.ring_capacity > (1 << 26) {
        return Err(InitError::BadConfig(format!(
            "ring_capacity must be within 64..=67108864 records, got {}",
            cfg.ring_capacity
        )));
    }
    if cfg.max_export_batch == 0 {
        return Err(InitError::BadConfig(
            "max_export_batch must be at least 1".into(),
        ));
    }
    RING_CAPACITY.store(cfg.ring_capacity, Ordering::Relaxed);
    let quanta_clock = handle::clock().clone();
    let source = clock::source(&quanta_clock);
    if cfg.announce {
        eprintln!(
            "slicetrace: tracing on for {:?}; clock: {source}",
            cfg.service_name
        );
    }

    // What earlier sessions left unread is not this session's: skip it, and free rings whose
    // threads exited while no drainer ran.
    let ctl = Arc::new(Control::default());
    let mut slots = Vec::new();
    registry::snapshot(&mut slots);
    let mut stale = 0;
    for s in &slots {
        let written = s.ring.written();
        stale += written - s.ring.read_pos();
        s.ring.skip_to(written);
        s.release_if_detached();
    }
    ctl.counters.records_stale.store(stale, Ordering::Relaxed);

    let host = host_id();
    let mut attrs = vec![
        KeyValue::new("host.name", hostname_or(&host)),
        KeyValue::new("process.pid", std::process::id() as i64),
    ];
    attrs.extend(cfg.resource_attributes.iter().cloned());
    let resource = Resource::builder()
        .with_service_name(cfg.service_name.clone())
        .with_attributes(attrs)
        .build();
    sink.set_resource(&resource);

    let scope = InstrumentationScope::builder("slicetrace")
        .with_version(env!("CARGO_PKG_VERSION"))
        .build();
    let tree = Tree::new(
        TreeLimits {
            max_open_requests: cfg.max_open_requests,
            idle_timeout: cfg.idle_timeout,
            finish_grace: cfg.finish_grace,
            joined_linger: cfg.joined_linger,
            park_timeout: cfg.park_timeout,
            max_parked: cfg.max_parked,
        },
        ProcessInfo {
            host_id: host,
            process_tag: crate::ids::process_tag(),
            scope: scope.clone(),
        },
    );
    let shipper = Shipper::start(
        sink,
        ctl.clone(),
        cfg.export_queue_batches,
        cfg.max_export_batch,
        cfg.shutdown_timeout,
        scope,
    )
    .map_err(InitError::Spawn)?;
    let parts = DrainerParts {
        tree,
        shipper,
        clock: TickClock::new(quanta_clock, Duration::from_secs(1)),
        interval: cfg.sweep_interval,
        max_batch: cfg.max_export_batch,
        export_interval: cfg.export_interval,
        report_every: cfg.report_losses_every,
    };
    let (written_base, dropped_base) = ring_totals();
    DRAINER_LIVE.store(true, Ordering::Release);
    let ctl2 = ctl.clone();
    let join = std::thread::Builder::new()
        .name("slicetrace-drainer".into())
        .spawn(move || drainer::run(ctl2, parts))
        .map_err(|e| {
            DRAINER_LIVE.store(false, Ordering::Release);
            InitError::Spawn(e)
        })?;
    *registry::DRAINER_THREAD
        .lock()
        .unwrap_or_else(|e| e.into_inner()) = Some(join.thread().clone());
    *session = Some(Live {
        ctl,
        drainer: join.thread().clone(),
        written_base,
        dropped_base,
        lost_base: LOST_NO_HANDLE.load(Ordering::Relaxed),
        unknown_base: crate::local::api::PROPAGATE_UNKNOWN.load(Ordering::Relaxed),
    });
    ENABLED.store(true, Ordering::Release);
    Ok(Guard {
        join: Some(join),
        clock: source,
    })
}

fn hostname_or(machine_id: &str) -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is writable for its whole length, which is what we pass.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let end = buf.iter().position(|b| *b == 0).unwrap_or(0);
    if rc == 0 && end > 0 {
        String::from_utf8_lossy(&buf[..end]).into_owned()
    } else {
        machine_id.to_owned()
    }
}

fn stats_of(live: &Live) -> Stats {
    let mut s = live.ctl.counters.snapshot();
    let (w, d) = ring_totals();
    s.records_written = w - live.written_base;
    s.records_dropped_ring_full = d - live.dropped_base;
    s.calls_lost_in_teardown = LOST_NO_HANDLE.load(Ordering::Relaxed) - live.lost_base;
    s.propagate_unknown =
        crate::local::api::PROPAGATE_UNKNOWN.load(Ordering::Relaxed) - live.unknown_base;
    s.rings = registry::ring_count() as u64;
    s
}

/// The counters of the running session (all zero when none runs).
pub fn stats() -> Stats {
    let session = SESSION.lock().unwrap_or_else(|e| e.into_inner());
    session.as_ref().map(stats_of).unwrap_or_default()
}

/// True while a session records.
pub fn is_enabled() -> bool {
    handle::enabled()
}

impl Guard {
    /// Waits until every record written before this call is exported as far as its spans have
    /// ended (open spans stay open). False if that took longer than `timeout`.
    pub fn flush(&self, timeout: Duration) -> bool {
        let session = SESSION.lock().unwrap_or_else(|e| e.into_inner());
        let Some(live) = session.as_ref() else {
            return false;
        };
        let (ctl, drainer) = (live.ctl.clone(), live.drainer.clone());
        drop(session);
        ctl.flush(&drainer, timeout)
    }

    pub fn stats(&self) -> Stats {
        stats()
    }

    /// The clock the hot path reads.
    pub fn clock_source(&self) -> ClockSource {
        self.clock
    }

    /// Ends the session: stops recording, exports everything, and returns the final counters.
    pub fn shutdown(mut self) -> Stats {
        self.end()
    }

    fn end(&mut self) -> Stats {
        let Some(join) = self.join.take() else {
            return Stats::default();
        };
        ENABLED.store(false, Ordering::Release);
        let live = SESSION.lock().unwrap_or_else(|e| e.into_inner()).take();
        let Some(live) = live else {
            return Stats::default();
        };
        live.ctl.stop.store(true, Ordering::Release);
        live.drainer.unpark();
        let _ = join.join();
        *registry::DRAINER_THREAD
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = None;
        DRAINER_LIVE.store(false, Ordering::Release);
        stats_of(&live)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.end();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_for(vars: &[(&str, &str)]) -> Config {
        let file =
            std::env::temp_dir().join(format!("slicetrace-cfg-{}.jsonl", std::process::id()));
        let file = file.display().to_string();
        let mut all = vec![("SLICETRACE_FILE", file.as_str())];
        all.extend_from_slice(vars);
        let env = EnvSettings::parse(|k| {
            all.iter()
                .find(|(name, _)| *name == k)
                .map(|(_, v)| v.to_string())
        })
        .unwrap();
        let cfg = Config::from_settings(&env, "svc").unwrap();
        let _ = std::fs::remove_file(&file);
        cfg
    }

    #[test]
    fn batch_processor_variables_shape_the_export_queue() {
        let c = config_for(&[]);
        assert_eq!(
            (c.max_export_batch, c.export_interval),
            (64, Duration::from_millis(500))
        );
        assert_eq!(c.export_queue_batches * c.max_export_batch, 131_072);
        // A larger batch keeps the queue's bound in spans.
        let c = config_for(&[("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "1024")]);
        assert_eq!((c.max_export_batch, c.export_queue_batches), (1024, 128));
        let c = config_for(&[
            ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "100"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "1050"),
            ("OTEL_BSP_SCHEDULE_DELAY", "20"),
        ]);
        assert_eq!((c.max_export_batch, c.export_queue_batches), (100, 11));
        assert_eq!(c.export_interval, Duration::from_millis(20));
    }
}
