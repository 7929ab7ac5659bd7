//! Configuration from the environment: the one switch, and the standard `OTEL_*` variables.
//!
//! | variable | meaning |
//! |---|---|
//! | `SLICETRACE` | `1`/`true`/`on` switches tracing on; unset, `0`/`false`/`off` leaves it off |
//! | `SLICETRACE_FILE_MAX_MB`, `SLICETRACE_FILE_KEEP` | rotate the local trace file past this many MiB, keeping this many earlier files (default 4) |
//! | `SLICETRACE_FILE` | with no OTLP endpoint set: the local trace file (default `slicetrace-{pid}.trace.json`, a Perfetto / `chrome://tracing` file; a name ending `.jsonl` gets one JSON object per span instead); `{pid}` stands for the process id, and a process forked from the one that set it up writes its own file (without `{pid}`: its pid before the extension) |
//! | `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` | OTLP endpoint for traces, used as given (`host:port` gets `http://`) |
//! | `OTEL_EXPORTER_OTLP_ENDPOINT` | OTLP base endpoint; over HTTP `/v1/traces` is appended |
//! | `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`, `OTEL_EXPORTER_OTLP_PROTOCOL` | `grpc` (default, as the reference), `http/protobuf` or `http/json` |
//! | `OTEL_EXPORTER_OTLP_TRACES_HEADERS`, `OTEL_EXPORTER_OTLP_HEADERS` | `key=value,…` sent with every export |
//! | `OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE`, `OTEL_EXPORTER_OTLP_CERTIFICATE` | PEM file of the authorities that sign an `https://` collector's certificate (the system's roots are trusted too) |
//! | `OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE`, `OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE` | PEM client certificate for mutual TLS |
//! | `OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY`, `OTEL_EXPORTER_OTLP_CLIENT_KEY` | PEM private key of that certificate |
//! | `OTEL_EXPORTER_OTLP_TRACES_INSECURE`, `OTEL_EXPORTER_OTLP_INSECURE` | `false`: a gRPC endpoint given as `host:port` uses TLS (`https://`); `true` or unset: plain `http://`, as the reference |
//! | `OTEL_EXPORTER_OTLP_TRACES_TIMEOUT`, `OTEL_EXPORTER_OTLP_TIMEOUT` | export timeout in milliseconds (default 10000) |
//! | `SLICETRACE_OTLP_CONNECTIONS` | batches sent to the collector at once, each on a connection and thread of its own (1 to 16, default 2) |
//! | `OTEL_BSP_MAX_EXPORT_BATCH_SIZE` | most spans per export (default 64) |
//! | `OTEL_BSP_SCHEDULE_DELAY` | milliseconds a batch short of full waits before it is sent anyway (default 500) |
//! | `OTEL_BSP_MAX_QUEUE_SIZE` | most spans waiting for export; more are dropped and counted (default 131072) |
//! | `OTEL_SERVICE_NAME` | `service.name` (else the name the program passes) |
//! | `OTEL_RESOURCE_ATTRIBUTES` | `key=value,…` resource attributes |
//! | `SLICETRACE_LEVEL` | the trace level, 0 to 7 (default 3): slices and events of names above it are not recorded (see `slicetrace::set_level`) |
//! | `OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG` | which requests are traced: `parentbased_always_on` (default), `parentbased_always_off`, `parentbased_traceidratio`, `always_on`, `always_off`, `traceidratio`; the ratio from 0 to 1 (default 1) |
//!
//! A value that cannot be used is an error at `init`, naming the variable and what it expected.

use crate::export::otlp::{Protocol, MAX_CONNECTIONS};
use crate::export::tls::{self, TlsConfig};
use std::fmt;
use std::time::Duration;

/// Where spans go, as the environment says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Destination {
    Otlp {
        endpoint: String,
        protocol: Protocol,
        headers: Vec<(String, String)>,
        timeout: Duration,
        /// Certificate files for an `https://` endpoint.
        tls: TlsFiles,
        /// Batches in flight at once, each on a connection of its own
        /// (`SLICETRACE_OTLP_CONNECTIONS`).
        connections: usize,
    },
    File(String),
}

/// A file a variable names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnvFile {
    pub variable: &'static str,
    pub path: String,
}

/// The TLS files the environment names (`OTEL_EXPORTER_OTLP_*CERTIFICATE`, `*CLIENT_KEY`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca_certificate: Option<EnvFile>,
    pub client_certificate: Option<EnvFile>,
    pub client_key: Option<EnvFile>,
}

impl TlsFiles {
    /// Reads the files; an unreadable file, or one without the PEM sections it should hold, is
    /// an error naming its variable.
    pub fn load(&self) -> Result<TlsConfig, EnvError> {
        fn read(
            f: &Option<EnvFile>,
            wanted: fn(&str) -> bool,
            expected: &'static str,
        ) -> Result<Option<Vec<u8>>, EnvError> {
            let Some(f) = f else { return Ok(None) };
            match std::fs::read(&f.path) {
                Ok(pem) if tls::has_section(&pem, wanted) => Ok(Some(pem)),
                _ => Err(err(f.variable, &f.path, expected)),
            }
        }
        const CERTS: &str = "a readable PEM file of certificates";
        Ok(TlsConfig {
            ca_pem: read(&self.ca_certificate, tls::is_certificate, CERTS)?,
            client_cert_pem: read(&self.client_certificate, tls::is_certificate, CERTS)?,
            client_key_pem: read(
                &self.client_key,
                tls::is_private_key,
                "a readable PEM file with a PRIVATE KEY",
            )?,
        })
    }
}

/// Tracing settings read from the environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnvSettings {
    pub enabled: bool,
    pub service_name: Option<String>,
    pub resource_attributes: Vec<(String, String)>,
    pub destination: Destination,
    /// Size-based rotation of the local trace file (`SLICETRACE_FILE_MAX_MB`,
    /// `SLICETRACE_FILE_KEEP`); `None`: one file that grows as long as the process traces.
    pub file_rotation: Option<crate::export::perfetto::Rotation>,
    /// `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`: most spans per export.
    pub max_export_batch: Option<usize>,
    /// `OTEL_BSP_SCHEDULE_DELAY` (ms): how long a batch short of full waits.
    pub export_interval: Option<Duration>,
    /// `OTEL_BSP_MAX_QUEUE_SIZE`: most spans waiting for export.
    pub max_queue_spans: Option<usize>,
    /// `OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG`.
    pub sampler: crate::sampling::Sampler,
    /// `SLICETRACE_LEVEL`: the process trace level.
    pub level: Option<u8>,
}

/// A variable with a value that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnvError {
    pub variable: &'static str,
    pub value: String,
    pub expected: &'static str,
}

impl fmt::Display for EnvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}={:?}: expected {}",
            self.variable, self.value, self.expected
        )
    }
}

impl std::error::Error for EnvError {}

fn err(variable: &'static str, value: &str, expected: &'static str) -> EnvError {
    EnvError {
        variable,
        value: value.to_owned(),
        expected,
    }
}

/// The first of `names` that is set and not empty, with its name.
fn first<'a>(
    get: &impl Fn(&str) -> Option<String>,
    names: &[&'a str],
) -> Option<(&'a str, String)> {
    names
        .iter()
        .find_map(|n| get(n).filter(|v| !v.trim().is_empty()).map(|v| (*n, v)))
}

/// `key=value,key=value` (values may be percent-encoded, as the OTel spec allows).
fn key_values(variable: &'static str, value: &str) -> Result<Vec<(String, String)>, EnvError> {
    let mut out = Vec::new();
    for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((k, v)) = part.split_once('=') else {
            return Err(err(variable, value, "comma-separated key=value pairs"));
        };
        let k = k.trim();
        if k.is_empty() {
            return Err(err(variable, value, "comma-separated key=value pairs"));
        }
        let v = percent_decode(v.trim())
            .ok_or_else(|| err(variable, value, "valid percent-encoding in values"))?;
        out.push((k.to_owned(), v));
    }
    Ok(out)
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Each TLS-related setting: its traces-only variable, then the general one.
const INSECURE: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_INSECURE",
    "OTEL_EXPORTER_OTLP_INSECURE",
];
const CONNECTIONS: &str = "SLICETRACE_OTLP_CONNECTIONS";
/// Two: a batch is encoded and sent while the collector answers the one before.
const DEFAULT_CONNECTIONS: usize = 2;
const CERTIFICATE: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
    "OTEL_EXPORTER_OTLP_CERTIFICATE",
];
const CLIENT_CERTIFICATE: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE",
    "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
];
const CLIENT_KEY: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY",
    "OTEL_EXPORTER_OTLP_CLIENT_KEY",
];

/// The variable of `pair` in the same family (traces-only or general) as the variable `like`.
fn traces_or(like: &str, [specific, generic]: [&'static str; 2]) -> &'static str {
    if like.starts_with("OTEL_EXPORTER_OTLP_TRACES_") {
        specific
    } else {
        generic
    }
}

/// Checks an endpoint and gives it a scheme: `host:port` → `http://host:port`, or
/// `https://host:port` when `tls_if_bare` (gRPC with `OTEL_EXPORTER_OTLP_INSECURE=false`).
fn endpoint(variable: &'static str, value: &str, tls_if_bare: bool) -> Result<String, EnvError> {
    const EXPECTED: &str = "host:port, http://host:port[/path] or https://host:port[/path]";
    let v = value.trim();
    let bare = if tls_if_bare { "https" } else { "http" };
    let (scheme, rest) = match v.split_once("://") {
        Some((s, r)) => (s.to_ascii_lowercase(), r),
        None => (bare.to_owned(), v),
    };
    if scheme != "http" && scheme != "https" {
        return Err(err(variable, value, EXPECTED));
    }
    let authority = rest.split('/').next().unwrap_or("");
    let (host, port) = match authority.rsplit_once(':') {
        // An IPv6 literal without a port: "[::1]".
        Some((h, p)) if !p.contains(']') => (h, Some(p)),
        _ => (authority, None),
    };
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(err(variable, value, EXPECTED));
    }
    if let Some(p) = port {
        if p.parse::<u16>().is_err() {
            return Err(err(variable, value, EXPECTED));
        }
    }
    if scheme == "https" && !cfg!(feature = "tls") {
        return Err(err(
            variable,
            value,
            "an http:// endpoint: this build has no TLS support (slicetrace's `tls` feature)",
        ));
    }
    Ok(format!("{scheme}://{rest}"))
}

impl EnvSettings {
    /// Reads the process environment.
    pub fn from_process() -> Result<EnvSettings, EnvError> {
        EnvSettings::parse(|k| std::env::var(k).ok())
    }

    /// Reads settings through `get` (the process environment, or a map in tests).
    pub fn parse(get: impl Fn(&str) -> Option<String>) -> Result<EnvSettings, EnvError> {
        let enabled = match get("SLICETRACE").map(|v| v.trim().to_ascii_lowercase()) {
            None => false,
            Some(v) => match v.as_str() {
                "" | "0" | "false" | "off" | "no" => false,
                "1" | "true" | "on" | "yes" => true,
                _ => return Err(err("SLICETRACE", &v, "1/true/on or 0/false/off")),
            },
        };
        let protocol = match first(
            &get,
            &[
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
                "OTEL_EXPORTER_OTLP_PROTOCOL",
            ],
        ) {
            None => Protocol::Grpc,
            Some((name, v)) => match v.trim() {
                "grpc" => Protocol::Grpc,
                "http/protobuf" => Protocol::HttpProtobuf,
                "http/json" => Protocol::HttpJson,
                _ => return Err(err(name, &v, "grpc, http/protobuf or http/json")),
            },
        };
        let insecure = match first(&get, &INSECURE) {
            None => true,
            Some((name, v)) => match v.trim().to_ascii_lowercase().as_str() {
                "true" => true,
                "false" => false,
                _ => return Err(err(name, &v, "true or false")),
            },
        };
        let tls_if_bare = protocol == Protocol::Grpc && !insecure;
        let specific = get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").filter(|v| !v.trim().is_empty());
        let generic = get("OTEL_EXPORTER_OTLP_ENDPOINT").filter(|v| !v.trim().is_empty());
        let endpoint = match (specific, generic) {
            (Some(v), _) => Some(endpoint(
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                &v,
                tls_if_bare,
            )?),
            (None, Some(v)) => {
                let base = endpoint("OTEL_EXPORTER_OTLP_ENDPOINT", &v, tls_if_bare)?;
                Some(match protocol {
                    Protocol::Grpc => base,
                    Protocol::HttpProtobuf | Protocol::HttpJson => {
                        format!("{}/v1/traces", base.trim_end_matches('/'))
                    }
                })
            }
            (None, None) => None,
        };
        let headers = match first(
            &get,
            &[
                "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
                "OTEL_EXPORTER_OTLP_HEADERS",
            ],
        ) {
            None => Vec::new(),
            Some(("OTEL_EXPORTER_OTLP_TRACES_HEADERS", v)) => {
                key_values("OTEL_EXPORTER_OTLP_TRACES_HEADERS", &v)?
            }
            Some((_, v)) => key_values("OTEL_EXPORTER_OTLP_HEADERS", &v)?,
        };
        let timeout = match first(
            &get,
            &[
                "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
                "OTEL_EXPORTER_OTLP_TIMEOUT",
            ],
        ) {
            None => Duration::from_millis(10_000),
            Some((name, v)) => match v.trim().parse::<u64>() {
                Ok(ms) if ms > 0 => Duration::from_millis(ms),
                _ => return Err(err(name, &v, "a positive number of milliseconds")),
            },
        };
        let resource_attributes = match get("OTEL_RESOURCE_ATTRIBUTES") {
            None => Vec::new(),
            Some(v) => key_values("OTEL_RESOURCE_ATTRIBUTES", &v)?,
        };
        let file = |pair: [&'static str; 2]| {
            first(&get, &pair).map(|(variable, path)| EnvFile {
                variable,
                path: path.trim().to_owned(),
            })
        };
        let tls = TlsFiles {
            ca_certificate: file(CERTIFICATE),
            client_certificate: file(CLIENT_CERTIFICATE),
            client_key: file(CLIENT_KEY),
        };
        // Only an OTLP destination uses them: a local trace file ignores a half-set pair.
        match (&tls.client_certificate, &tls.client_key) {
            (Some(c), None) if endpoint.is_some() => {
                return Err(err(
                    traces_or(c.variable, CLIENT_KEY),
                    "",
                    "the client certificate's key file, as a client certificate is set",
                ))
            }
            (None, Some(k)) if endpoint.is_some() => {
                return Err(err(
                    traces_or(k.variable, CLIENT_CERTIFICATE),
                    "",
                    "a client certificate file, as a client key is set",
                ))
            }
            _ => {}
        }
        let connections = match get(CONNECTIONS).filter(|v| !v.trim().is_empty()) {
            None => DEFAULT_CONNECTIONS,
            Some(v) => match v.trim().parse::<usize>() {
                Ok(n) if (1..=MAX_CONNECTIONS).contains(&n) => n,
                _ => return Err(err(CONNECTIONS, &v, "a whole number from 1 to 16")),
            },
        };
        let destination = match endpoint {
            Some(endpoint) => Destination::Otlp {
                endpoint,
                protocol,
                headers,
                timeout,
                tls,
                connections,
            },
            None => Destination::File(
                get("SLICETRACE_FILE")
                    .filter(|v| !v.trim().is_empty())
                    .unwrap_or_else(|| "slicetrace-{pid}.trace.json".to_owned()),
            ),
        };
        let number = |name: &'static str| -> Result<Option<u64>, EnvError> {
            match get(name).filter(|v| !v.trim().is_empty()) {
                None => Ok(None),
                Some(v) => match v.trim().parse::<u64>() {
                    Ok(n) if n > 0 => Ok(Some(n)),
                    _ => Err(err(name, &v, "a whole number above 0")),
                },
            }
        };
        let keep = number("SLICETRACE_FILE_KEEP")?;
        let file_rotation =
            number("SLICETRACE_FILE_MAX_MB")?.map(|mb| crate::export::perfetto::Rotation {
                max_bytes: mb.saturating_mul(1 << 20),
                keep: keep.unwrap_or(4) as usize,
            });
        let max_export_batch = number("OTEL_BSP_MAX_EXPORT_BATCH_SIZE")?.map(|n| n as usize);
        let max_queue_spans = number("OTEL_BSP_MAX_QUEUE_SIZE")?.map(|n| n as usize);
        if let (Some(batch), Some(queue)) = (max_export_batch, max_queue_spans) {
            if batch > queue {
                return Err(err(
                    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
                    &batch.to_string(),
                    "at most OTEL_BSP_MAX_QUEUE_SIZE",
                ));
            }
        }
        let sampler_name = get("OTEL_TRACES_SAMPLER");
        let sampler_arg = get("OTEL_TRACES_SAMPLER_ARG");
        let sampler =
            crate::sampling::Sampler::from_vars(sampler_name.as_deref(), sampler_arg.as_deref())
                .map_err(|(variable, expected)| {
                    let value = if variable == "OTEL_TRACES_SAMPLER" {
                        &sampler_name
                    } else {
                        &sampler_arg
                    };
                    err(variable, value.as_deref().unwrap_or(""), expected)
                })?;
        let level = match get("SLICETRACE_LEVEL") {
            None => None,
            Some(v) => match v.trim().parse::<u8>() {
                Ok(n) if n <= crate::level::MAX_LEVEL => Some(n),
                _ => return Err(err("SLICETRACE_LEVEL", &v, "a whole number from 0 to 7")),
            },
        };
        Ok(EnvSettings {
            enabled,
            sampler,
            level,
            service_name: get("OTEL_SERVICE_NAME").filter(|v| !v.trim().is_empty()),
            resource_attributes,
            destination,
            file_rotation,
            max_export_batch,
            export_interval: number("OTEL_BSP_SCHEDULE_DELAY")?.map(Duration::from_millis),
            max_queue_spans,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn parse(vars: &[(&str, &str)]) -> Result<EnvSettings, EnvError> {
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        EnvSettings::parse(|k| m.get(k).cloned())
    }

    fn otlp(s: &EnvSettings) -> (&str, Protocol) {
        match &s.destination {
            Destination::Otlp {
                endpoint, protocol, ..
            } => (endpoint, *protocol),
            d => panic!("{d:?}"),
        }
    }

    #[test]
    fn batch_processor_variables() {
        let s = parse(&[]).unwrap();
        assert_eq!(
            (s.max_export_batch, s.export_interval, s.max_queue_spans),
            (None, None, None)
        );
        let s = parse(&[
            ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "1024"),
            ("OTEL_BSP_SCHEDULE_DELAY", "250"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "65536"),
        ])
        .unwrap();
        assert_eq!(s.max_export_batch, Some(1024));
        assert_eq!(s.export_interval, Some(Duration::from_millis(250)));
        assert_eq!(s.max_queue_spans, Some(65536));
        for (var, bad) in [
            ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "0"),
            ("OTEL_BSP_SCHEDULE_DELAY", "soon"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "-5"),
        ] {
            assert_eq!(parse(&[(var, bad)]).unwrap_err().variable, var);
        }
        let e = parse(&[
            ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "512"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "256"),
        ])
        .unwrap_err();
        assert_eq!(e.variable, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE");
    }

    #[test]
    fn connections_default_to_two_and_are_bounded() {
        let connections = |s: &EnvSettings| match &s.destination {
            Destination::Otlp { connections, .. } => *connections,
            d => panic!("{d:?}"),
        };
        let at = [("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317")];
        assert_eq!(connections(&parse(&at).unwrap()), 2);
        let four = [at[0], ("SLICETRACE_OTLP_CONNECTIONS", " 4 ")];
        assert_eq!(connections(&parse(&four).unwrap()), 4);
        for bad in ["0", "17", "two", "-1"] {
            let e = parse(&[at[0], ("SLICETRACE_OTLP_CONNECTIONS", bad)]).unwrap_err();
            assert_eq!(e.variable, "SLICETRACE_OTLP_CONNECTIONS");
            assert_eq!(e.value, bad);
        }
    }

    #[test]
    fn off_unless_switched_on() {
        assert!(!parse(&[]).unwrap().enabled);
        assert!(!parse(&[("SLICETRACE", "0")]).unwrap().enabled);
        assert!(parse(&[("SLICETRACE", "1")]).unwrap().enabled);
        assert!(parse(&[("SLICETRACE", " On ")]).unwrap().enabled);
        let e = parse(&[("SLICETRACE", "maybe")]).unwrap_err();
        assert_eq!(e.variable, "SLICETRACE");
    }

    #[test]
    fn endpoints_in_every_form() {
        let s = parse(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317")]).unwrap();
        assert_eq!(otlp(&s), ("http://collector:4317", Protocol::Grpc));
        let s = parse(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "127.0.0.1:4318"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ])
        .unwrap();
        assert_eq!(
            otlp(&s),
            ("http://127.0.0.1:4318/v1/traces", Protocol::HttpProtobuf)
        );
        let s = parse(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://a:1/"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://b:2/custom"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf"),
        ])
        .unwrap();
        assert_eq!(otlp(&s), ("http://b:2/custom", Protocol::HttpProtobuf));
        let s = parse(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ])
        .unwrap();
        assert_eq!(
            otlp(&s),
            ("http://collector:4318/v1/traces", Protocol::HttpJson)
        );
        let s = parse(&[]).unwrap();
        assert_eq!(
            s.destination,
            Destination::File("slicetrace-{pid}.trace.json".to_owned())
        );
        assert_eq!(s.file_rotation, None);
        let s = parse(&[("SLICETRACE_FILE_MAX_MB", "64")]).unwrap();
        assert_eq!(
            s.file_rotation,
            Some(crate::export::perfetto::Rotation {
                max_bytes: 64 << 20,
                keep: 4
            })
        );
        let s = parse(&[("SLICETRACE_FILE", "/tmp/x.jsonl")]).unwrap();
        assert_eq!(s.destination, Destination::File("/tmp/x.jsonl".into()));
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (vars, var) in [
            (
                vec![("OTEL_EXPORTER_OTLP_ENDPOINT", "ftp://x:1")],
                "OTEL_EXPORTER_OTLP_ENDPOINT",
            ),
            (
                vec![("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "host:notaport")],
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            ),
            (
                vec![("OTEL_EXPORTER_OTLP_PROTOCOL", "thrift")],
                "OTEL_EXPORTER_OTLP_PROTOCOL",
            ),
            (
                vec![("OTEL_EXPORTER_OTLP_HEADERS", "novalue")],
                "OTEL_EXPORTER_OTLP_HEADERS",
            ),
            (
                vec![("OTEL_EXPORTER_OTLP_TIMEOUT", "soon")],
                "OTEL_EXPORTER_OTLP_TIMEOUT",
            ),
            (
                vec![("OTEL_RESOURCE_ATTRIBUTES", "=x")],
                "OTEL_RESOURCE_ATTRIBUTES",
            ),
            (
                vec![("SLICETRACE_FILE_MAX_MB", "lots")],
                "SLICETRACE_FILE_MAX_MB",
            ),
            (vec![("SLICETRACE_FILE_KEEP", "0")], "SLICETRACE_FILE_KEEP"),
            (vec![("SLICETRACE_LEVEL", "8")], "SLICETRACE_LEVEL"),
            (vec![("SLICETRACE_LEVEL", "high")], "SLICETRACE_LEVEL"),
            (
                vec![("OTEL_EXPORTER_OTLP_INSECURE", "perhaps")],
                "OTEL_EXPORTER_OTLP_INSECURE",
            ),
            (
                vec![
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://c:4317"),
                    ("OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE", "/c.pem"),
                ],
                "OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY",
            ),
            (
                vec![
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://c:4317"),
                    ("OTEL_EXPORTER_OTLP_CLIENT_KEY", "/k.pem"),
                ],
                "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
            ),
        ] {
            let e = parse(&vars).unwrap_err();
            assert_eq!(e.variable, var, "{e}");
            assert!(e.to_string().starts_with(var));
        }
    }

    #[test]
    fn the_trace_level_is_taken_as_given_or_left_alone() {
        assert_eq!(parse(&[]).unwrap().level, None);
        assert_eq!(
            parse(&[("SLICETRACE_LEVEL", " 1 ")]).unwrap().level,
            Some(1)
        );
        assert_eq!(parse(&[("SLICETRACE_LEVEL", "0")]).unwrap().level, Some(0));
    }

    #[test]
    fn headers_resource_and_service() {
        let s = parse(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "localhost:4317"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "api-key=abc%3D, x=1"),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "deployment.environment=prod,team=infer",
            ),
            ("OTEL_SERVICE_NAME", "sglang"),
        ])
        .unwrap();
        match &s.destination {
            Destination::Otlp { headers, .. } => assert_eq!(
                headers,
                &[("api-key".into(), "abc=".into()), ("x".into(), "1".into())]
            ),
            d => panic!("{d:?}"),
        }
        assert_eq!(s.service_name.as_deref(), Some("sglang"));
        assert_eq!(s.resource_attributes.len(), 2);
    }

    #[test]
    fn https_endpoints_and_the_insecure_switch() {
        let s = parse(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector:4317")]).unwrap();
        assert_eq!(otlp(&s), ("https://collector:4317", Protocol::Grpc));
        let s = parse(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317"),
            ("OTEL_EXPORTER_OTLP_INSECURE", "false"),
        ])
        .unwrap();
        assert_eq!(otlp(&s), ("https://collector:4317", Protocol::Grpc));
        let s = parse(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317"),
            ("OTEL_EXPORTER_OTLP_TRACES_INSECURE", "TRUE"),
            ("OTEL_EXPORTER_OTLP_INSECURE", "false"),
        ])
        .unwrap();
        assert_eq!(otlp(&s), ("http://collector:4317", Protocol::Grpc));
        // The switch is gRPC's: over HTTP the scheme alone decides.
        let s = parse(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_INSECURE", "false"),
        ])
        .unwrap();
        assert_eq!(
            otlp(&s),
            ("http://collector:4318/v1/traces", Protocol::HttpProtobuf)
        );
    }

    #[test]
    fn a_local_file_ignores_tls_variables() {
        let s = parse(&[("OTEL_EXPORTER_OTLP_CLIENT_KEY", "/k.pem")]).unwrap();
        assert!(matches!(s.destination, Destination::File(_)));
    }

    #[test]
    fn tls_files_prefer_the_traces_variables() {
        let s = parse(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://c:4317"),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/generic/ca.pem"),
            ("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", " /traces/ca.pem "),
            ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", "/c.pem"),
            ("OTEL_EXPORTER_OTLP_CLIENT_KEY", "/k.pem"),
        ])
        .unwrap();
        let Destination::Otlp { tls, .. } = &s.destination else {
            panic!("{:?}", s.destination)
        };
        let file = |variable, path: &str| {
            Some(EnvFile {
                variable,
                path: path.into(),
            })
        };
        assert_eq!(
            tls,
            &TlsFiles {
                ca_certificate: file("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", "/traces/ca.pem"),
                client_certificate: file("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", "/c.pem"),
                client_key: file("OTEL_EXPORTER_OTLP_CLIENT_KEY", "/k.pem"),
            }
        );
        // Missing and wrong files are named by their variable when loaded.
        let e = tls.load().unwrap_err();
        assert_eq!(e.variable, "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE");
        let dir = std::env::temp_dir().join(format!("slicetrace-env-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = dir.join("ca.pem");
        std::fs::write(
            &ca,
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let files = TlsFiles {
            ca_certificate: file("OTEL_EXPORTER_OTLP_CERTIFICATE", ca.to_str().unwrap()),
            client_certificate: file(
                "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
                ca.to_str().unwrap(),
            ),
            // A certificate where the key should be.
            client_key: file("OTEL_EXPORTER_OTLP_CLIENT_KEY", ca.to_str().unwrap()),
        };
        let e = files.load().unwrap_err();
        assert_eq!(e.variable, "OTEL_EXPORTER_OTLP_CLIENT_KEY", "{e}");
        let loaded = TlsFiles {
            client_key: None,
            client_certificate: None,
            ..files
        }
        .load()
        .unwrap();
        assert!(loaded.ca_pem.is_some() && loaded.client_cert_pem.is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
