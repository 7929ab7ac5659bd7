//! Export over TLS: `https://` endpoints over gRPC and HTTP, with the collector's authority
//! given as a PEM file, and mutual TLS. The collector is rotel, behind a TLS front (rotel's
//! receivers are plain TCP); the checks read what rotel decoded.

mod common;

use common::otlp_request::{check, trace_one_request};
use common::rotel::Rotel;
use common::tls_front::{Alpn, Pki, TlsFront};
use common::{config, session_using};
use slicetrace::export::{OtlpSink, Protocol, TlsConfig};
use slicetrace::Stats;
use std::time::Duration;

fn export(sink: OtlpSink) -> Stats {
    let mut cfg = config();
    cfg.service_name = "otlp-test".into();
    let mut s = session_using(cfg.sink(Box::new(sink)));
    trace_one_request();
    s.guard.take().unwrap().shutdown()
}

fn trusting(pki: &Pki, ca: &str) -> TlsConfig {
    TlsConfig {
        ca_pem: Some(pki.read(ca)),
        ..TlsConfig::default()
    }
}

fn with_client_cert(mut tls: TlsConfig, pki: &Pki) -> TlsConfig {
    tls.client_cert_pem = Some(pki.read("client.pem"));
    tls.client_key_pem = Some(pki.read("client.key"));
    tls
}

/// Exports the request through a TLS front to rotel and checks what rotel decoded.
fn arrives_through_tls(protocol: Protocol, client_auth: bool, tls: impl Fn(&Pki) -> TlsConfig) {
    let pki = Pki::new(if client_auth { "mtls" } else { "tls" });
    let rotel = Rotel::start();
    let (upstream, alpn, endpoint) = match protocol {
        Protocol::Grpc => (&rotel.grpc, Alpn::H2, "https://localhost:{port}"),
        _ => (
            &rotel.http,
            Alpn::Http1,
            "https://127.0.0.1:{port}/v1/traces",
        ),
    };
    let front = TlsFront::start(&pki, upstream, alpn, client_auth);
    let endpoint = endpoint.replace("{port}", &front.port.to_string());
    let sink =
        OtlpSink::with_tls(&endpoint, protocol, &[], Duration::from_secs(5), &tls(&pki)).unwrap();
    let stats = export(sink);
    assert_eq!(stats.spans_exported, 8);
    assert_eq!(stats.spans_export_failed + stats.spans_dropped_export, 0);
    assert!(front.handshakes() >= 1);
    check(&rotel.spans(8));
}

#[test]
fn grpc_over_tls_with_the_collector_authority_from_a_file() {
    arrives_through_tls(Protocol::Grpc, false, |pki| trusting(pki, "ca.pem"));
}

#[test]
fn http_protobuf_over_mutual_tls() {
    arrives_through_tls(Protocol::HttpProtobuf, true, |pki| {
        with_client_cert(trusting(pki, "ca.pem"), pki)
    });
}

#[test]
fn grpc_over_mutual_tls() {
    arrives_through_tls(Protocol::Grpc, true, |pki| {
        with_client_cert(trusting(pki, "ca.pem"), pki)
    });
}

/// A handshake that fails is an export error: the spans are counted as lost, nothing reaches
/// the collector, and shutdown returns within its bound.
#[test]
fn failed_handshakes_are_counted_losses() {
    let pki = Pki::new("refused");
    let rotel = Rotel::start();
    let grpc_front = TlsFront::start(&pki, &rotel.grpc, Alpn::H2, false);
    let mtls_front = TlsFront::start(&pki, &rotel.http, Alpn::Http1, true);
    let cases = [
        // The collector's certificate is signed by an authority the client does not trust.
        (
            format!("https://localhost:{}", grpc_front.port),
            Protocol::Grpc,
            trusting(&pki, "other-ca.pem"),
        ),
        // The front demands a client certificate and the client has none.
        (
            format!("https://127.0.0.1:{}/v1/traces", mtls_front.port),
            Protocol::HttpProtobuf,
            trusting(&pki, "ca.pem"),
        ),
    ];
    for (endpoint, protocol, tls) in cases {
        let sink =
            OtlpSink::with_tls(&endpoint, protocol, &[], Duration::from_secs(2), &tls).unwrap();
        let stats = export(sink);
        assert_eq!(stats.spans_exported, 0, "{endpoint}");
        assert_eq!(
            stats.spans_export_failed + stats.spans_dropped_export,
            8,
            "{endpoint}: every span counted as lost"
        );
        assert!(stats.export_errors >= 1, "{endpoint}");
    }
    assert!(grpc_front.handshakes_failed() >= 1);
    assert!(mtls_front.handshakes_failed() >= 1);
    assert_eq!(grpc_front.handshakes() + mtls_front.handshakes(), 0);
    std::thread::sleep(Duration::from_millis(300));
    assert!(rotel.spans(0).is_empty(), "nothing reached the collector");
}

#[test]
fn bad_tls_material_is_refused_at_set_up() {
    let pki = Pki::new("bad");
    let endpoint = "https://localhost:4317";
    let t = Duration::from_secs(1);
    let key_only = TlsConfig {
        client_key_pem: Some(pki.read("client.key")),
        ..TlsConfig::default()
    };
    let refusal =
        |protocol, tls: &TlsConfig| match OtlpSink::with_tls(endpoint, protocol, &[], t, tls) {
            Ok(_) => panic!("{tls:?} accepted"),
            // What was refused, then why (the error's source).
            Err(e) => format!("{e}: {}", std::error::Error::source(&e).expect("a cause")),
        };
    let e = refusal(Protocol::Grpc, &key_only);
    assert!(e.contains("without its certificate"), "{e}");
    let garbage = TlsConfig {
        ca_pem: Some(b"not a certificate".to_vec()),
        ..TlsConfig::default()
    };
    for protocol in [Protocol::Grpc, Protocol::HttpProtobuf] {
        let e = refusal(protocol, &garbage);
        assert!(e.contains("CERTIFICATE"), "{e}");
    }
}
