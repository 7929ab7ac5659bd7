//! OTLP export over gRPC or HTTP/protobuf, with the `opentelemetry-otlp` exporters driven from
//! slicetrace's export threads. Both clients need a Tokio runtime: each exporter has a small
//! current-thread one of its own, run by the thread that exports, so the traced program needs
//! none. Retries with backoff on transient errors are the exporter's own (the OTLP recommended
//! policy). `https://` endpoints use rustls with the system's roots plus any [`TlsConfig`]
//! certificates (the `tls` feature).

use crate::collector::sink::{Outcome, Sink};
use crate::error::ExporterError;
use crate::export::tls::TlsConfig;
use opentelemetry_otlp::tonic_types::metadata::MetadataMap;
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use opentelemetry_sdk::Resource;
use std::collections::HashMap;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

/// A [`Sink`] sending spans to an OTLP collector, over one connection or several
/// ([`OtlpSink::with_connections`]): with several, each connection has an exporter and a thread
/// of its own, and a batch goes to whichever connection is free.
pub struct OtlpSink {
    /// With one connection: exports on the export thread that calls the sink.
    first: Lane,
    /// With several: one thread per connection.
    lanes: Vec<LaneThread>,
    /// The spans each lane has in flight.
    in_flight: Vec<Option<u64>>,
    /// Lanes answer here, with their index, when a batch's export has ended.
    done_tx: mpsc::Sender<(usize, Result<(), String>)>,
    done: mpsc::Receiver<(usize, Result<(), String>)>,
    params: Params,
}

const LANE_GONE: &str = "an OTLP export thread stopped";

/// How often a wait for a lane's answer checks that the lane is still there.
const LANE_CHECK: Duration = Duration::from_millis(20);

/// What an exporter is built from, kept to build one per connection.
#[derive(Clone)]
struct Params {
    endpoint: String,
    protocol: Protocol,
    headers: Vec<(String, String)>,
    timeout: Duration,
    https: bool,
    tls: TlsConfig,
}

/// One exporter and the runtime that drives it.
struct Lane {
    exporter: opentelemetry_otlp::SpanExporter,
    /// Drives the client, on the thread that exports. Declared after the exporter: dropped
    /// after it.
    runtime: LaneRuntime,
}

/// A runtime that may be dropped anywhere: a sink that never reached a session is dropped on
/// the program's thread, which may be inside the program's own runtime, where dropping one
/// that waits for its tasks panics.
struct LaneRuntime(Option<tokio::runtime::Runtime>);

impl std::ops::Deref for LaneRuntime {
    type Target = tokio::runtime::Runtime;
    fn deref(&self) -> &tokio::runtime::Runtime {
        // Only `drop` takes it out.
        self.0
            .as_ref()
            .expect("a lane's runtime lives as long as the lane")
    }
}

impl Drop for LaneRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

enum Job {
    Export(Vec<SpanData>),
    Resource(Resource),
    Shutdown(Duration),
}

struct LaneThread {
    jobs: mpsc::Sender<Job>,
    /// Answers to building the exporter and to shutting it down.
    results: mpsc::Receiver<Result<(), String>>,
    join: Option<JoinHandle<()>>,
}

/// OTLP transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    HttpProtobuf,
    /// OTLP/HTTP with JSON bodies: what a collector's file exporter writes, byte for byte.
    HttpJson,
}

/// Most connections one sink opens.
pub const MAX_CONNECTIONS: usize = 16;

impl OtlpSink {
    /// An exporter for `endpoint` (already resolved: scheme, and for HTTP the `/v1/traces` path).
    /// `headers` are sent with every request, besides those of `OTEL_EXPORTER_OTLP_*HEADERS`.
    pub fn new(
        endpoint: &str,
        protocol: Protocol,
        headers: &[(String, String)],
        timeout: Duration,
    ) -> Result<OtlpSink, ExporterError> {
        OtlpSink::with_tls(endpoint, protocol, headers, timeout, &TlsConfig::default())
    }

    /// [`OtlpSink::new`] with TLS material for an `https://` endpoint: certificates that
    /// verify the collector, and a client certificate for mutual TLS. Unused over `http://`.
    pub fn with_tls(
        endpoint: &str,
        protocol: Protocol,
        headers: &[(String, String)],
        timeout: Duration,
        tls: &TlsConfig,
    ) -> Result<OtlpSink, ExporterError> {
        let https = endpoint
            .get(..8)
            .is_some_and(|s| s.eq_ignore_ascii_case("https://"));
        if https && !cfg!(feature = "tls") {
            return Err(ExporterError::new(format!(
                "{endpoint}: an https:// endpoint needs slicetrace's `tls` feature"
            )));
        }
        tls.check()
            .map_err(|e| ExporterError::caused(format!("TLS for {endpoint}"), e))?;
        let params = Params {
            endpoint: endpoint.to_owned(),
            protocol,
            headers: headers.to_vec(),
            timeout,
            https,
            tls: tls.clone(),
        };
        // A runtime may not be dropped inside another's context, and the program calling init
        // may be running one: the exporter and its runtime are made on a thread of our own.
        let p = params.clone();
        let first = std::thread::spawn(move || Lane::build(&p))
            .join()
            .map_err(|_| ExporterError::new("the OTLP exporter could not be built"))??;
        let (done_tx, done) = mpsc::channel();
        Ok(OtlpSink {
            first,
            lanes: Vec::new(),
            in_flight: Vec::new(),
            done_tx,
            done,
            params,
        })
    }

    /// Sends over `n` connections (1 to [`MAX_CONNECTIONS`]): up to `n` batches in flight at
    /// once, each on a connection and thread of its own. One connection sends one batch at a
    /// time and waits for the collector's answer before the next; more keep the collector
    /// busy while an answer is on its way, and spread the encoding over cores.
    pub fn with_connections(mut self, n: usize) -> Result<OtlpSink, ExporterError> {
        if n == 0 || n > MAX_CONNECTIONS {
            return Err(ExporterError::new(format!(
                "{n} connections: expected 1 to {MAX_CONNECTIONS}"
            )));
        }
        while n > 1 && self.lanes.len() < n {
            let index = self.lanes.len();
            let lane = LaneThread::start(self.params.clone(), index, self.done_tx.clone())?;
            self.lanes.push(lane);
            self.in_flight.push(None);
        }
        Ok(self)
    }
}

impl Lane {
    fn build(p: &Params) -> Result<Lane, ExporterError> {
        let endpoint = &p.endpoint;
        match p.protocol {
            Protocol::Grpc => {
                let runtime = lane_runtime()?;
                let mut map = http::HeaderMap::new();
                for (k, v) in &p.headers {
                    let key = http::HeaderName::from_bytes(k.as_bytes()).map_err(|e| {
                        ExporterError::caused(format!("header name {k:?} for gRPC"), e)
                    })?;
                    let value = http::HeaderValue::from_str(v).map_err(|e| {
                        ExporterError::caused(format!("header {k:?}'s value for gRPC"), e)
                    })?;
                    map.append(key, value);
                }
                let metadata = MetadataMap::from_headers(map);
                let exporter = {
                    let _in_runtime = runtime.enter();
                    let builder = opentelemetry_otlp::SpanExporter::builder()
                        .with_tonic()
                        .with_endpoint(endpoint)
                        .with_timeout(p.timeout)
                        .with_metadata(metadata);
                    #[cfg(feature = "tls")]
                    let builder =
                        if p.https {
                            builder.with_tls_config(grpc_tls(&p.tls).map_err(|e| {
                                ExporterError::caused(format!("TLS for {endpoint}"), e)
                            })?)
                        } else {
                            builder
                        };
                    builder.build().map_err(|e| {
                        ExporterError::caused(format!("OTLP/gRPC exporter for {endpoint}"), e)
                    })?
                };
                Ok(Lane { exporter, runtime })
            }
            Protocol::HttpProtobuf | Protocol::HttpJson => {
                let wire = match p.protocol {
                    Protocol::HttpJson => opentelemetry_otlp::Protocol::HttpJson,
                    _ => opentelemetry_otlp::Protocol::HttpBinary,
                };
                let headers: HashMap<String, String> = p.headers.iter().cloned().collect();
                let runtime = lane_runtime()?;
                let client = {
                    let _in_runtime = runtime.enter();
                    http_client(p.timeout, p.https, &p.tls).map_err(|e| {
                        ExporterError::caused(format!("OTLP/HTTP client for {endpoint}"), e)
                    })?
                };
                let exporter = opentelemetry_otlp::SpanExporter::builder()
                    .with_http()
                    .with_http_client(client)
                    .with_protocol(wire)
                    .with_endpoint(endpoint)
                    .with_timeout(p.timeout)
                    .with_headers(headers)
                    .build()
                    .map_err(|e| {
                        ExporterError::caused(format!("OTLP/HTTP exporter for {endpoint}"), e)
                    })?;
                Ok(Lane { exporter, runtime })
            }
        }
    }

    fn export(&mut self, batch: Vec<SpanData>) -> Result<(), String> {
        self.runtime
            .block_on(self.exporter.export(batch))
            .map_err(|e| e.to_string())
    }

    fn shutdown(&mut self, timeout: Duration) -> Result<(), String> {
        let _in_runtime = self.runtime.enter();
        self.exporter
            .shutdown_with_timeout(timeout)
            .map_err(|e| e.to_string())
    }
}

impl LaneThread {
    /// Builds the lane's exporter on its own thread; fails as building the first one would.
    fn start(
        params: Params,
        index: usize,
        done: mpsc::Sender<(usize, Result<(), String>)>,
    ) -> Result<LaneThread, ExporterError> {
        let (jobs, job_rx) = mpsc::channel::<Job>();
        let (result_tx, results) = mpsc::channel();
        let join = std::thread::Builder::new()
            .name(format!("slicetrace-otlp-{}", index + 1))
            .spawn(move || {
                let mut lane = match Lane::build(&params) {
                    Ok(l) => {
                        let _ = result_tx.send(Ok(()));
                        l
                    }
                    Err(e) => {
                        let _ = result_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                for job in job_rx {
                    match job {
                        Job::Export(batch) => {
                            let _ = done.send((index, lane.export(batch)));
                        }
                        Job::Resource(r) => SpanExporter::set_resource(&mut lane.exporter, &r),
                        Job::Shutdown(t) => {
                            let _ = result_tx.send(lane.shutdown(t));
                            return;
                        }
                    }
                }
            })
            .map_err(|e| ExporterError::caused("an OTLP export thread", e))?;
        let lane = LaneThread {
            jobs,
            results,
            join: Some(join),
        };
        match lane.results.recv() {
            Ok(Ok(())) => Ok(lane),
            Ok(Err(e)) => Err(ExporterError::new(e)),
            Err(_) => Err(ExporterError::new("the OTLP exporter could not be built")),
        }
    }

    /// The answer to the job sent last; a lane that is gone answers with an error.
    fn answer(&self) -> Result<(), String> {
        self.results
            .recv()
            .unwrap_or_else(|_| Err(LANE_GONE.to_owned()))
    }

    fn gone(&self) -> bool {
        self.join.as_ref().is_none_or(|j| j.is_finished())
    }
}

impl Drop for LaneThread {
    fn drop(&mut self) {
        // Closing the job channel ends the thread once its current export is done.
        let (closed, _) = mpsc::channel();
        self.jobs = closed;
        if let Some(j) = self.join.take() {
            let _ = j.join();
        }
    }
}

/// The gRPC channel's TLS: the system's roots, the given authorities, the client identity.
#[cfg(feature = "tls")]
fn grpc_tls(
    tls: &TlsConfig,
) -> Result<opentelemetry_otlp::tonic_types::transport::ClientTlsConfig, String> {
    use opentelemetry_otlp::tonic_types::transport::{Certificate, ClientTlsConfig, Identity};
    let mut config = ClientTlsConfig::new().with_enabled_roots();
    if let Some(ca) = &tls.ca_pem {
        config = config.ca_certificate(Certificate::from_pem(ca));
    }
    if let Some((cert, key)) = tls.identity()? {
        config = config.identity(Identity::from_pem(cert, key));
    }
    Ok(config)
}

/// A current-thread runtime for one lane's client: it runs only while that lane exports, on
/// the lane's thread, so a request costs no hand-over to another thread.
fn lane_runtime() -> Result<LaneRuntime, ExporterError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map(|rt| LaneRuntime(Some(rt)))
        .map_err(|e| ExporterError::caused("the OTLP runtime", e))
}

/// The client OTLP/HTTP sends with; over `https://`, rustls with the system's roots,
/// the given authorities and the client identity.
fn http_client(timeout: Duration, https: bool, tls: &TlsConfig) -> Result<reqwest::Client, String> {
    let builder = reqwest::Client::builder().timeout(timeout);
    #[cfg(feature = "tls")]
    let builder = if https {
        let mut b = builder.tls_backend_rustls();
        if let Some(ca) = &tls.ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(ca)
                .map_err(|e| format!("CA certificates: {e}"))?;
            b = b.tls_certs_merge(certs);
        }
        if let Some((cert, key)) = tls.identity()? {
            let mut pem = cert.to_vec();
            pem.push(b'\n');
            pem.extend_from_slice(key);
            let id = reqwest::Identity::from_pem(&pem)
                .map_err(|e| format!("client certificate and key: {e}"))?;
            b = b.identity(id);
        }
        b
    } else {
        builder
    };
    #[cfg(not(feature = "tls"))]
    let _ = (https, tls);
    builder.build().map_err(|e| e.to_string())
}

impl OtlpSink {
    /// Records lane `i`'s answer for the batch it had in flight.
    fn answered(&mut self, i: usize, result: Result<(), String>, out: &mut Vec<Outcome>) {
        if let Some(n) = self.in_flight.get_mut(i).and_then(Option::take) {
            out.push((n, result));
        }
    }

    /// Takes the answers already there; with `wait_for`, waits until it holds: a lane whose
    /// thread has ended without answering fails its batch instead of being waited for.
    fn reap(&mut self, out: &mut Vec<Outcome>, wait_for: impl Fn(&[Option<u64>]) -> bool) {
        loop {
            // Which lanes had ended is read before their answers are taken: an answer sent
            // just before its thread ended is then in the channel already.
            let gone: Vec<usize> = (0..self.lanes.len())
                .filter(|&i| self.in_flight[i].is_some() && self.lanes[i].gone())
                .collect();
            while let Ok((i, r)) = self.done.try_recv() {
                self.answered(i, r, out);
            }
            for i in gone {
                self.answered(i, Err(LANE_GONE.to_owned()), out);
            }
            if wait_for(&self.in_flight) {
                return;
            }
            if let Ok((i, r)) = self.done.recv_timeout(LANE_CHECK) {
                self.answered(i, r, out);
            }
        }
    }
}

impl Sink for OtlpSink {
    fn export(&mut self, batch: Vec<SpanData>) -> Result<(), String> {
        self.first.export(batch)
    }

    fn set_resource(&mut self, resource: &Resource) {
        SpanExporter::set_resource(&mut self.first.exporter, resource);
        for lane in &self.lanes {
            let _ = lane.jobs.send(Job::Resource(resource.clone()));
        }
    }

    fn shutdown(&mut self, timeout: Duration) -> Result<(), String> {
        // The caller settled first; a batch still in flight would only delay the lanes' end.
        let _ = self.settle();
        // Each lane within the same timeout, side by side.
        let mut asked = Vec::new();
        for lane in &self.lanes {
            asked.push(lane.jobs.send(Job::Shutdown(timeout)).is_ok());
        }
        let mut result = self.first.shutdown(timeout);
        for (lane, asked) in self.lanes.iter().zip(asked) {
            let r = if asked {
                lane.answer()
            } else {
                Err(LANE_GONE.to_owned())
            };
            if result.is_ok() {
                result = r;
            }
        }
        result
    }

    fn submit(&mut self, batch: Vec<SpanData>) -> Vec<Outcome> {
        let n = batch.len() as u64;
        if self.lanes.is_empty() {
            return vec![(n, self.first.export(batch))];
        }
        let mut out = Vec::new();
        self.reap(&mut out, |f| f.iter().any(Option::is_none));
        let Some(free) = self.in_flight.iter().position(Option::is_none) else {
            out.push((n, Err(LANE_GONE.to_owned())));
            return out;
        };
        match self.lanes[free].jobs.send(Job::Export(batch)) {
            Ok(()) => self.in_flight[free] = Some(n),
            Err(_) => out.push((n, Err(LANE_GONE.to_owned()))),
        }
        out
    }

    fn settle(&mut self) -> Vec<Outcome> {
        let mut out = Vec::new();
        self.reap(&mut out, |f| f.iter().all(Option::is_none));
        out
    }

    fn poll(&mut self) -> Vec<Outcome> {
        let mut out = Vec::new();
        if self.in_flight.iter().any(Option::is_some) {
            self.reap(&mut out, |_| true);
        }
        out
    }
}
