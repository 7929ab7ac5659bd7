//! OTLP export over gRPC or HTTP/protobuf, with the `opentelemetry-otlp` exporters driven from
//! slicetrace's export thread. The gRPC client needs a Tokio runtime: slicetrace owns a small
//! current-thread one, so the traced program needs none. Retries with backoff on transient
//! errors are the exporter's own (the OTLP recommended policy). `https://` endpoints use
//! rustls with the system's roots plus any [`TlsConfig`] certificates (the `tls` feature).

use crate::collector::sink::{block_on, Sink};
use crate::env::Protocol;
use crate::export::tls::TlsConfig;
use opentelemetry_otlp::tonic_types::metadata::MetadataMap;
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use opentelemetry_sdk::Resource;
use std::collections::HashMap;
use std::time::Duration;

/// A [`Sink`] sending spans to an OTLP collector.
pub struct OtlpSink {
    exporter: opentelemetry_otlp::SpanExporter,
    /// Drives the gRPC client; `None` over HTTP (its blocking client runs its own).
    runtime: Option<tokio::runtime::Runtime>,
}

impl OtlpSink {
    /// An exporter for `endpoint` (already resolved: scheme, and for HTTP the `/v1/traces` path).
    /// `headers` are sent with every request, besides those of `OTEL_EXPORTER_OTLP_*HEADERS`.
    pub fn new(
        endpoint: &str,
        protocol: Protocol,
        headers: &[(String, String)],
        timeout: Duration,
    ) -> Result<OtlpSink, String> {
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
    ) -> Result<OtlpSink, String> {
        let https = endpoint
            .get(..8)
            .is_some_and(|s| s.eq_ignore_ascii_case("https://"));
        if https && !cfg!(feature = "tls") {
            return Err(format!(
                "{endpoint}: an https:// endpoint needs slicetrace's `tls` feature"
            ));
        }
        tls.check()
            .map_err(|e| format!("TLS for {endpoint}: {e}"))?;
        match protocol {
            Protocol::Grpc => {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .thread_name("slicetrace-otlp")
                    .build()
                    .map_err(|e| format!("cannot start the OTLP runtime: {e}"))?;
                let mut map = http::HeaderMap::new();
                for (k, v) in headers {
                    let key = http::HeaderName::from_bytes(k.as_bytes())
                        .map_err(|_| format!("header name {k:?} is not valid gRPC metadata"))?;
                    let value = http::HeaderValue::from_str(v)
                        .map_err(|_| format!("header {k:?} has a value gRPC cannot carry"))?;
                    map.append(key, value);
                }
                let metadata = MetadataMap::from_headers(map);
                let exporter = {
                    let _in_runtime = runtime.enter();
                    let builder = opentelemetry_otlp::SpanExporter::builder()
                        .with_tonic()
                        .with_endpoint(endpoint)
                        .with_timeout(timeout)
                        .with_metadata(metadata);
                    #[cfg(feature = "tls")]
                    let builder = if https {
                        builder.with_tls_config(grpc_tls(tls)?)
                    } else {
                        builder
                    };
                    builder
                        .build()
                        .map_err(|e| format!("OTLP/gRPC exporter for {endpoint}: {e}"))?
                };
                Ok(OtlpSink {
                    exporter,
                    runtime: Some(runtime),
                })
            }
            Protocol::HttpProtobuf | Protocol::HttpJson => {
                let wire = match protocol {
                    Protocol::HttpJson => opentelemetry_otlp::Protocol::HttpJson,
                    _ => opentelemetry_otlp::Protocol::HttpBinary,
                };
                let endpoint = endpoint.to_owned();
                let headers: HashMap<String, String> = headers.iter().cloned().collect();
                let tls = tls.clone();
                // The blocking HTTP client may not be made inside an async runtime, and the
                // program calling init may be running one: make it on a thread of our own.
                let exporter = std::thread::spawn(move || {
                    let client = http_client(timeout, https, &tls)
                        .map_err(|e| format!("OTLP/HTTP client for {endpoint}: {e}"))?;
                    opentelemetry_otlp::SpanExporter::builder()
                        .with_http()
                        .with_http_client(client)
                        .with_protocol(wire)
                        .with_endpoint(&endpoint)
                        .with_timeout(timeout)
                        .with_headers(headers)
                        .build()
                        .map_err(|e| format!("OTLP/HTTP exporter for {endpoint}: {e}"))
                })
                .join()
                .map_err(|_| "the OTLP/HTTP exporter could not be built".to_owned())??;
                Ok(OtlpSink {
                    exporter,
                    runtime: None,
                })
            }
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

/// The blocking client OTLP/HTTP sends with; over `https://`, rustls with the system's roots,
/// the given authorities and the client identity.
fn http_client(
    timeout: Duration,
    https: bool,
    tls: &TlsConfig,
) -> Result<reqwest::blocking::Client, String> {
    let builder = reqwest::blocking::Client::builder().timeout(timeout);
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

impl Sink for OtlpSink {
    fn export(&mut self, batch: Vec<SpanData>) -> Result<(), String> {
        let fut = self.exporter.export(batch);
        match &self.runtime {
            Some(rt) => rt.block_on(fut),
            None => block_on(fut),
        }
        .map_err(|e| e.to_string())
    }

    fn set_resource(&mut self, resource: &Resource) {
        SpanExporter::set_resource(&mut self.exporter, resource);
    }

    fn shutdown(&mut self, timeout: Duration) -> Result<(), String> {
        let r = match &self.runtime {
            Some(rt) => {
                let _in_runtime = rt.enter();
                self.exporter.shutdown_with_timeout(timeout)
            }
            None => self.exporter.shutdown_with_timeout(timeout),
        };
        r.map_err(|e| e.to_string())
    }
}
