//! Process set-up: `init` starts a tracing session, the `Guard` it returns ends it. A forked
//! child starts its own from the parent's configuration (see `slicetrace::process`).

use crate::collector::clock::{self, ClockSource, TickClock};
use crate::collector::control::Control;
use crate::collector::drainer::{self, DrainerParts};
use crate::collector::shipper::Shipper;
use crate::collector::sink::Sink;
use crate::collector::stats::Stats;
use crate::collector::tree::{ProcessInfo, SystemClock, Tree, TreeLimits};
use crate::env::{Destination, EnvSettings};
use crate::error::{ConfigError, ExporterError, ForkError, InitError};
use crate::export::jsonl::JsonLinesExporter;
use crate::export::otlp::OtlpSink;
use crate::export::perfetto::PerfettoExporter;
use crate::fork;
use crate::local::handle::{self, GATE, LOST_NO_HANDLE, ORPHANED, RING_CAPACITY};
use crate::wire::ownership;
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::trace::SpanExporter;
use opentelemetry_sdk::Resource;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, TryLockError};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::local::handle::DEFAULT_RING_CAPACITY;

/// The instrumentation scope's name unless [`Config::scope_name`] says otherwise.
const DEFAULT_SCOPE: &str = "slicetrace";

/// How a session runs. `Config::new(service).exporter(e)` is enough; the rest has defaults.
///
/// A clone carries the way to make its exporter, not the exporter: a configuration from the
/// environment, or with [`Config::exporter_factory`], makes a new one when the clone starts a
/// session (so does a forked child re-initialising); one given an exporter as a value
/// ([`Config::exporter`], [`Config::sink`]) clones without it, and `init` with that clone is
/// `InitError::NoExporter`.
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
    /// The instrumentation scope every span carries: `slicetrace` (with this crate's version)
    /// unless changed; SGLang's module names its own `sglang server`, which a drop-in
    /// replacement keeps so that queries on the scope still match.
    pub scope_name: String,
    /// Which requests are traced (`OTEL_TRACES_SAMPLER`); by default those an upstream sampled,
    /// and every one that came with no upstream decision.
    pub sampler: crate::sampling::Sampler,
    /// The process trace level the session starts with (`SLICETRACE_LEVEL`); `None` leaves it
    /// as it is ([`DEFAULT_PROCESS_LEVEL`](crate::limits::DEFAULT_PROCESS_LEVEL) unless
    /// [`set_level`](crate::set_level) changed it).
    pub level: Option<u8>,
    sink: Option<Box<dyn Sink>>,
    /// Makes the exporter again, for a clone (a forked child's session among them).
    recipe: Option<Recipe>,
    /// Where the environment sent spans, when the configuration came from it.
    destination: Option<String>,
}

/// Makes an exporter, and says where it sends spans when that is known.
type Recipe = Arc<dyn Fn() -> Result<(Box<dyn Sink>, Option<String>), InitError> + Send + Sync>;

impl Clone for Config {
    fn clone(&self) -> Config {
        Config {
            service_name: self.service_name.clone(),
            resource_attributes: self.resource_attributes.clone(),
            ring_capacity: self.ring_capacity,
            sweep_interval: self.sweep_interval,
            idle_timeout: self.idle_timeout,
            finish_grace: self.finish_grace,
            joined_linger: self.joined_linger,
            park_timeout: self.park_timeout,
            max_open_requests: self.max_open_requests,
            max_parked: self.max_parked,
            max_export_batch: self.max_export_batch,
            export_interval: self.export_interval,
            report_losses_every: self.report_losses_every,
            export_queue_batches: self.export_queue_batches,
            shutdown_timeout: self.shutdown_timeout,
            announce: self.announce,
            scope_name: self.scope_name.clone(),
            sampler: self.sampler,
            level: self.level,
            sink: None,
            recipe: self.recipe.clone(),
            destination: self.destination.clone(),
        }
    }
}

impl Config {
    #[must_use]
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
            scope_name: DEFAULT_SCOPE.to_owned(),
            sampler: crate::sampling::Sampler::default(),
            level: None,
            sink: None,
            recipe: None,
            destination: None,
        }
    }

    /// Export to an `opentelemetry_sdk` span exporter (OTLP, in-memory, stdout, …).
    #[must_use]
    pub fn exporter(mut self, exporter: impl SpanExporter + 'static) -> Config {
        self.sink = Some(Box::new(exporter));
        self.recipe = None;
        self
    }

    /// Which requests are traced (see [`crate::sampling`]).
    #[must_use]
    pub fn sampler(mut self, sampler: crate::sampling::Sampler) -> Config {
        self.sampler = sampler;
        self
    }

    /// The process trace level the session starts with (see [`crate::set_level`]).
    #[must_use]
    pub fn level(mut self, level: u8) -> Config {
        self.level = Some(level);
        self
    }

    /// Export to any [`Sink`].
    #[must_use]
    pub fn sink(mut self, sink: Box<dyn Sink>) -> Config {
        self.sink = Some(sink);
        self.recipe = None;
        self
    }

    /// Export to an exporter that `make` makes when the session starts, and makes again for a
    /// clone of this configuration and in a process forked from one running it
    /// ([`crate::process::reinit_after_fork`]): each process then exports through its own.
    /// An error is `InitError::Exporter` with it as the source.
    #[must_use]
    pub fn exporter_factory<E, F>(mut self, make: F) -> Config
    where
        E: SpanExporter + 'static,
        F: Fn() -> Result<E, Box<dyn std::error::Error + Send + Sync>> + Send + Sync + 'static,
    {
        self.sink = None;
        self.recipe = Some(Arc::new(move || match make() {
            Ok(e) => Ok((Box::new(e) as Box<dyn Sink>, None)),
            Err(e) => Err(InitError::Exporter(ExporterError::caused(
                "the exporter factory failed",
                e,
            ))),
        }));
        self
    }
}

impl Config {
    /// The configuration the environment asks for (see [`crate::env`]): OTLP when an endpoint
    /// variable is set, else a local trace file. `service_name` applies unless
    /// `OTEL_SERVICE_NAME` is set. Does not look at the `SLICETRACE` switch.
    pub fn from_env(service_name: &str) -> Result<Config, InitError> {
        let env = EnvSettings::from_process().map_err(InitError::Env)?;
        Config::from_settings(&env, service_name)
    }

    /// [`Config::from_env`] with each variable read through `get` instead of the process
    /// environment: for a program that takes a setting from elsewhere, such as a command-line
    /// endpoint standing for `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`.
    pub fn from_vars(
        service_name: &str,
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, InitError> {
        let env = EnvSettings::parse(get).map_err(InitError::Env)?;
        Config::from_settings(&env, service_name)
    }

    /// [`Config::from_env`], with `file` as the local trace file when the environment names
    /// neither an OTLP endpoint nor `SLICETRACE_FILE`.
    pub fn from_env_or_file(service_name: &str, file: &str) -> Result<Config, InitError> {
        let mut env = EnvSettings::from_process().map_err(InitError::Env)?;
        if let Destination::File(path) = &mut env.destination {
            if std::env::var_os("SLICETRACE_FILE").is_none() {
                *path = file.to_owned();
            }
        }
        Config::from_settings(&env, service_name)
    }

    /// Where spans go, for a configuration made from the environment: the file's path, or the
    /// endpoint and protocol.
    pub fn destination(&self) -> Option<&str> {
        self.destination.as_deref()
    }

    pub(crate) fn from_settings(
        env: &EnvSettings,
        service_name: &str,
    ) -> Result<Config, InitError> {
        let mut cfg = Config::new(env.service_name.as_deref().unwrap_or(service_name));
        cfg.sampler = env.sampler;
        cfg.level = env.level;
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
        let made_in = std::process::id();
        let settings = env.clone();
        let recipe: Recipe = Arc::new(move || sink_for(&settings, made_in));
        let (sink, destination) = recipe()?;
        cfg.sink = Some(sink);
        cfg.recipe = Some(recipe);
        cfg.destination = destination;
        Ok(cfg)
    }
}

/// The exporter the environment names, and where it sends spans.
fn sink_for(env: &EnvSettings, made_in: u32) -> Result<(Box<dyn Sink>, Option<String>), InitError> {
    Ok(match &env.destination {
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
            let sink = OtlpSink::with_tls(endpoint, *protocol, &[], *timeout, &tls)
                .and_then(|s| s.with_connections(*connections))
                .map_err(InitError::Exporter)?;
            (
                Box::new(sink) as Box<dyn Sink>,
                Some(format!("{endpoint} over OTLP {protocol:?}")),
            )
        }
        Destination::File(pattern) => {
            let path = file_path(pattern, made_in, std::process::id());
            let cannot =
                |e| InitError::Exporter(ExporterError::caused(format!("cannot create {path}"), e));
            let sink: Box<dyn Sink> = if path.ends_with(".jsonl") {
                Box::new(JsonLinesExporter::create(&path).map_err(cannot)?)
            } else {
                let mut e = PerfettoExporter::create(&path).map_err(cannot)?;
                if let Some(r) = env.file_rotation {
                    e = e.with_rotation(r);
                }
                Box::new(e)
            };
            (sink, Some(path))
        }
    })
}

/// The local trace file of process `pid`, for a name configured in process `made_in`. `{pid}`
/// stands for the pid. A name without it is the configuring process's own: a process forked
/// from it writes beside it, its pid before the extension (`spans.jsonl` → `spans.4242.jsonl`),
/// since a second writer would truncate the parent's file and then interleave with it.
pub(crate) fn file_path(pattern: &str, made_in: u32, pid: u32) -> String {
    if pattern.contains("{pid}") {
        return pattern.replace("{pid}", &pid.to_string());
    }
    if pid == made_in {
        return pattern.to_owned();
    }
    let (dir, name) = match pattern.rfind('/') {
        Some(i) => pattern.split_at(i + 1),
        None => ("", pattern),
    };
    let (stem, ext) = match name.strip_suffix(".trace.json") {
        Some(stem) if !stem.is_empty() => (stem, ".trace.json"),
        _ => match name.rfind('.') {
            Some(i) if i > 0 => name.split_at(i),
            _ => (name, ""),
        },
    };
    format!("{dir}{stem}.{pid}{ext}")
}

/// Starts tracing if the environment switches it on (`SLICETRACE=1`), configured by the
/// standard `OTEL_*` variables (see [`crate::env`]); `Ok(None)` when it is off. A variable
/// with a value that cannot be used is an error naming it.
pub fn init_from_env(service_name: &str) -> Result<Option<Guard>, InitError> {
    let env = EnvSettings::from_process().map_err(InitError::Env)?;
    if !env.enabled {
        return Ok(None);
    }
    init(Config::from_settings(&env, service_name)?).map(Some)
}

struct Live {
    ctl: Arc<Control>,
    drainer: std::thread::Thread,
    written_base: u64,
    dropped_base: u64,
    lost_base: u64,
    unknown_base: u64,
    left_out_base: u64,
    names_refused_base: u64,
    /// What the session started with (without its exporter, which it owns): a process forked
    /// from this one starts its own session from it.
    config: Config,
}

static SESSION: Mutex<Option<Live>> = Mutex::new(None);

/// Ends the session when dropped (or by [`Guard::shutdown`]): every span recorded before is
/// exported, open requests as unfinished.
///
/// Only in the process that started the session: a forked child holds a copy of the parent's
/// guard, whose drainer does not exist there, and dropping that copy does nothing.
#[must_use = "dropping the guard ends tracing at once"]
pub struct Guard {
    join: Option<JoinHandle<()>>,
    clock: ClockSource,
    /// The process the session runs in.
    pid: u32,
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
    ownership::global().snapshot(&mut slots);
    slots.iter().fold((0, 0), |(w, d), s| {
        (w + s.gauge().written(), d + s.gauge().dropped())
    })
}

/// Starts tracing in this process: the hot calls record from now on, and a drainer thread turns
/// records into spans for the configured exporter.
///
/// In a process forked from a traced one, before it traces again, this starts the child's own
/// session with `cfg` as [`crate::process::reinit_after_fork`] does with the parent's
/// configuration, and is refused the same way (`InitError::Forked`).
pub fn init(cfg: Config) -> Result<Guard, InitError> {
    prepare();
    if fork::forked() {
        return start_in_child(Some(cfg));
    }
    let mut session = SESSION.lock().unwrap_or_else(|e| e.into_inner());
    start(&mut session, cfg, false)
}

/// Makes what is otherwise made lazily behind a `OnceLock` (a child must never inherit one of
/// those half-made: it would wait on it forever), then installs the fork handlers.
fn prepare() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = handle::clock();
        let _ = crate::ids::process_seed();
        crate::name::prepare_table();
        let _ = crate::local::directory::directory();
        let _ = ownership::global();
        handle::install_fork_handler();
    });
}

fn fork_counts(s: &mut Stats) {
    (s.calls_dropped_after_fork, s.forks_reinitialised) = fork::counts();
}

/// A session for a forked child: from `cfg`, or from the configuration of the parent's session
/// (`None`). Every lock the new session takes is tried first, never waited for: one held at the
/// fork is held forever here (see `slicetrace::process`).
pub(crate) fn start_in_child(cfg: Option<Config>) -> Result<Guard, InitError> {
    let held = |what| Err(InitError::Forked(ForkError::LockHeld(what)));
    let mut session = match SESSION.try_lock() {
        Ok(s) => s,
        Err(TryLockError::Poisoned(e)) => e.into_inner(),
        Err(TryLockError::WouldBlock) => return held("the session"),
    };
    if !crate::name::table_lock_free() {
        return held("the name table");
    }
    let inherited = session.take();
    let cfg = match (cfg, &inherited) {
        (Some(cfg), _) => cfg,
        (None, Some(live)) if live.config.recipe.is_some() => live.config.clone(),
        (None, Some(_)) => {
            *session = inherited;
            return Err(InitError::Forked(ForkError::NoRecipe));
        }
        (None, None) => return Err(InitError::Forked(ForkError::NoParentSession)),
    };
    match start(&mut session, cfg, true) {
        Ok(guard) => {
            // The parent's session is let go of, never dropped: its parts belong to threads
            // that do not exist here (see `slicetrace::process`).
            std::mem::forget(inherited);
            ORPHANED.store(false, Ordering::Release);
            fork::started_in_child();
            Ok(guard)
        }
        Err(e) => {
            // Kept for another attempt (its configuration is what re-initialising uses).
            *session = inherited;
            Err(e)
        }
    }
}

fn start(session: &mut Option<Live>, mut cfg: Config, in_child: bool) -> Result<Guard, InitError> {
    if session.is_some() {
        return Err(InitError::AlreadyRunning);
    }
    if cfg.sink.is_none() && cfg.recipe.is_none() {
        return Err(InitError::NoExporter);
    }
    if cfg.ring_capacity < 64 || cfg.ring_capacity > (1 << 26) {
        return Err(InitError::BadConfig(ConfigError {
            setting: "ring_capacity",
            value: cfg.ring_capacity as u64,
            expected: "64 to 67108864 records",
        }));
    }
    if cfg.max_export_batch == 0 {
        return Err(InitError::BadConfig(ConfigError {
            setting: "max_export_batch",
            value: 0,
            expected: "at least 1",
        }));
    }
    let mut sink = match (cfg.sink.take(), cfg.recipe.clone()) {
        (Some(sink), _) => sink,
        (None, Some(recipe)) => {
            let (sink, destination) = recipe()?;
            if destination.is_some() {
                cfg.destination = destination;
            }
            sink
        }
        (None, None) => return Err(InitError::NoExporter),
    };
    RING_CAPACITY.store(cfg.ring_capacity, Ordering::Relaxed);
    let quanta_clock = handle::clock().clone();
    let source = clock::source(&quanta_clock);
    let pid = std::process::id();
    if cfg.announce {
        let child = if in_child {
            format!(" in process {pid}, forked from a traced one")
        } else {
            String::new()
        };
        fork::stderr_line(&format!(
            "slicetrace: tracing on for {:?}{child}; clock: {source}",
            cfg.service_name
        ));
    }

    // What earlier sessions left unread is not this session's: skip it, and free rings whose
    // threads exited while no drainer ran.
    let ctl = Arc::new(Control::default());
    let registry = ownership::global();
    let mut slots = Vec::new();
    registry.snapshot(&mut slots);
    let mut stale = 0;
    for s in &slots {
        // A ring whose consumer a stopping drainer still holds is left to that drainer.
        if let Some(mut lease) = s.lend_consumer() {
            stale += lease.skip_published();
        }
        registry.free_if_detached(s);
    }
    ctl.counters.records_stale.store(stale, Ordering::Relaxed);

    let host = host_id();
    let mut attrs = vec![
        KeyValue::new("host.name", hostname_or(&host)),
        KeyValue::new("process.pid", pid as i64),
    ];
    attrs.extend(cfg.resource_attributes.iter().cloned());
    let resource = Resource::builder()
        .with_service_name(cfg.service_name.clone())
        .with_attributes(attrs)
        .build();
    sink.set_resource(&resource);

    // A scope named otherwise names someone else's instrumentation, whose version is not ours.
    let scope = if cfg.scope_name == DEFAULT_SCOPE {
        InstrumentationScope::builder(DEFAULT_SCOPE)
            .with_version(env!("CARGO_PKG_VERSION"))
            .build()
    } else {
        InstrumentationScope::builder(cfg.scope_name.clone()).build()
    };
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
        Box::new(SystemClock),
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
    registry.set_drainer_live(true);
    let ctl2 = ctl.clone();
    let join = std::thread::Builder::new()
        .name("slicetrace-drainer".into())
        .spawn(move || drainer::run(ctl2, parts))
        .map_err(|e| {
            registry.set_drainer_live(false);
            InitError::Spawn(e)
        })?;
    registry.set_drainer_thread(Some(join.thread().clone()));
    *session = Some(Live {
        ctl,
        drainer: join.thread().clone(),
        written_base,
        dropped_base,
        lost_base: LOST_NO_HANDLE.load(Ordering::Relaxed),
        unknown_base: crate::local::api::PROPAGATE_UNKNOWN.load(Ordering::Relaxed),
        left_out_base: crate::sampling::LEFT_OUT_AT_ORIGIN.load(Ordering::Relaxed),
        names_refused_base: crate::name::refused(),
        config: cfg.clone(),
    });
    if let Some(level) = cfg.level {
        crate::level::set_level(level);
    }
    let bound = crate::sampling::install(cfg.sampler);
    crate::level::with_levels_above(|above| {
        GATE.store(handle::gate(bound, above), Ordering::Release)
    });
    Ok(Guard {
        join: Some(join),
        clock: source,
        pid,
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
    s.requests_sampled_out +=
        crate::sampling::LEFT_OUT_AT_ORIGIN.load(Ordering::Relaxed) - live.left_out_base;
    s.rings = ownership::global().ring_count() as u64;
    s.names_refused = crate::name::refused() - live.names_refused_base;
    s.names_interned = crate::name::interned() as u64;
    fork_counts(&mut s);
    s
}

/// The counters of the running session (all zero when none runs). In a forked child that has
/// not started tracing again, only its dropped calls: the session it holds is the parent's, and
/// its lock is never waited for there.
pub fn stats() -> Stats {
    if fork::forked() {
        let mut s = Stats::default();
        fork_counts(&mut s);
        return s;
    }
    let session = SESSION.lock().unwrap_or_else(|e| e.into_inner());
    session.as_ref().map(stats_of).unwrap_or_default()
}

/// Runs `f` with the session slot's lock held (a test of a fork while another thread holds it).
pub(crate) fn while_session_locked(f: impl FnOnce()) {
    let _s = SESSION.lock().unwrap_or_else(|e| e.into_inner());
    f()
}

/// True while a session records (not in a forked child until it starts its own).
pub fn is_enabled() -> bool {
    handle::enabled() && !ORPHANED.load(Ordering::Relaxed)
}

impl Guard {
    /// Waits until every record written before this call is exported as far as its spans have
    /// ended (open spans stay open). False if that took longer than `timeout`, and in a forked
    /// child for the parent's guard.
    pub fn flush(&self, timeout: Duration) -> bool {
        if self.pid != std::process::id() {
            return false;
        }
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
    /// In a forked child, for the parent's guard: returns at once, all zero, and leaves
    /// whatever the child traces alone.
    pub fn shutdown(mut self) -> Stats {
        self.end()
    }

    fn end(&mut self) -> Stats {
        let Some(join) = self.join.take() else {
            return Stats::default();
        };
        if self.pid != std::process::id() {
            // The parent's drainer: never joined (it does not exist here), and its session
            // never flushed from here (its spans are the parent's to export).
            std::mem::forget(join);
            return Stats::default();
        }
        GATE.store(handle::OFF, Ordering::Release);
        let live = SESSION.lock().unwrap_or_else(|e| e.into_inner()).take();
        let Some(live) = live else {
            return Stats::default();
        };
        live.ctl.stop.store(true, Ordering::Release);
        live.drainer.unpark();
        let _ = join.join();
        let registry = ownership::global();
        registry.set_drainer_thread(None);
        registry.set_drainer_live(false);
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
