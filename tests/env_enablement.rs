//! Switching tracing on by environment: each case runs this binary again as a child process with
//! its own environment, and the child calls `init_from_env` as a server would at start-up.

mod common;

use common::rotel::Rotel;
use common::tls_front::{Alpn, Pki, TlsFront};

/// The child's side, started by the cases below with the environment each sets.
#[test]
#[ignore = "a child process of the other tests here"]
fn child_side() {
    common::child::expect_started_as("child_side");
    match slicetrace::init_from_env("env-default-name") {
        Ok(None) => println!("RESULT off"),
        Err(e) => {
            // The whole chain, as a program would print it: what failed, then why.
            let mut text = e.to_string();
            let mut cause = std::error::Error::source(&e);
            while let Some(c) = cause {
                text = format!("{text}: {c}");
                cause = c.source();
            }
            println!("RESULT error {text}")
        }
        Ok(Some(guard)) => {
            let rid = slicetrace::req_start("env-request", None);
            slicetrace::slice_start(slicetrace::name!("work"), rid);
            slicetrace::slice_end(slicetrace::name!("work"), rid, slicetrace::End::PLAIN);
            slicetrace::req_finish(rid);
            let stats = guard.shutdown();
            println!(
                "RESULT on exported={} failed={}",
                stats.spans_exported, stats.spans_export_failed
            );
        }
    }
}

fn run_child(vars: &[(&str, &str)]) -> String {
    let mut cmd = common::child::command("child_side");
    for key in [
        "SLICETRACE",
        "SLICETRACE_FILE",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_HEADERS",
        "OTEL_EXPORTER_OTLP_INSECURE",
        "OTEL_EXPORTER_OTLP_CERTIFICATE",
        "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
        "OTEL_EXPORTER_OTLP_CLIENT_KEY",
        "OTEL_SERVICE_NAME",
        "OTEL_RESOURCE_ATTRIBUTES",
    ] {
        cmd.env_remove(key);
    }
    cmd.envs(vars.iter().copied());
    let out = common::child::passed(cmd.output().unwrap());
    let results: Vec<&str> = out
        .lines()
        .filter_map(|l| l.find("RESULT ").map(|i| &l[i + 7..]))
        .collect();
    assert_eq!(results.len(), 1, "one RESULT line: {out}");
    results[0].to_owned()
}

#[test]
fn unset_means_off() {
    assert_eq!(run_child(&[]), "off");
    assert_eq!(run_child(&[("SLICETRACE", "0")]), "off");
    assert_eq!(
        run_child(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "127.0.0.1:1")]),
        "off",
        "an endpoint alone does not switch tracing on"
    );
}

#[test]
fn a_bad_value_is_an_error_naming_the_variable() {
    let r = run_child(&[
        ("SLICETRACE", "1"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "localhost:43x7"),
    ]);
    assert!(
        r.starts_with("error slicetrace cannot use the tracing environment variables: OTEL_EXPORTER_OTLP_ENDPOINT=\"localhost:43x7\": expected"),
        "{r}"
    );
    let r = run_child(&[("SLICETRACE", "yes please")]);
    assert!(
        r.starts_with("error slicetrace cannot use the tracing environment variables: SLICETRACE="),
        "{r}"
    );
}

#[test]
fn with_no_endpoint_spans_go_to_a_local_file() {
    let path = std::env::temp_dir().join(format!("slicetrace-env-{}.jsonl", std::process::id()));
    let r = run_child(&[
        ("SLICETRACE", "1"),
        ("SLICETRACE_FILE", path.to_str().unwrap()),
    ]);
    assert_eq!(r, "on exported=4 failed=0");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(text.lines().count(), 4);
    assert!(text.contains("\"name\":\"work\""));
    assert!(text.contains("\"service\":\"env-default-name\""));
}

/// A bare `host:port` endpoint over HTTP (the reference crashes on it), with the service name
/// and resource attributes from the standard variables.
#[test]
fn bare_host_port_over_http_reaches_the_collector() {
    let rotel = Rotel::start();
    let r = run_child(&[
        ("SLICETRACE", "1"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &rotel.http),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ("OTEL_SERVICE_NAME", "from-env"),
        (
            "OTEL_RESOURCE_ATTRIBUTES",
            "deployment.environment=ci,team=inference",
        ),
    ]);
    assert_eq!(r, "on exported=4 failed=0");
    let spans = rotel.spans(4);
    assert_eq!(spans.len(), 4);
    for s in &spans {
        assert_eq!(s.resource_attr("service.name"), Some("Str(from-env)"));
        assert_eq!(s.resource_attr("deployment.environment"), Some("Str(ci)"));
        assert_eq!(s.resource_attr("team"), Some("Str(inference)"));
    }
    assert!(spans.iter().any(|s| s.name == "work"));
}

#[test]
fn grpc_is_the_default_protocol() {
    let rotel = Rotel::start();
    let r = run_child(&[
        ("SLICETRACE", "1"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &rotel.grpc),
    ]);
    assert_eq!(r, "on exported=4 failed=0");
    assert_eq!(rotel.spans(4).len(), 4);
}

/// A bare `host:port` with `OTEL_EXPORTER_OTLP_INSECURE=false` goes over TLS (gRPC), verified
/// with the authority `OTEL_EXPORTER_OTLP_CERTIFICATE` names and presenting the client
/// certificate the front demands.
#[test]
fn tls_from_the_standard_variables() {
    let pki = Pki::new("env");
    let rotel = Rotel::start();
    let front = TlsFront::start(&pki, &rotel.grpc, Alpn::H2, true);
    let endpoint = format!("localhost:{}", front.port);
    let file = |name| pki.path(name).to_str().unwrap().to_owned();
    let (ca, cert, key) = (file("ca.pem"), file("client.pem"), file("client.key"));
    let r = run_child(&[
        ("SLICETRACE", "1"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ("OTEL_EXPORTER_OTLP_INSECURE", "false"),
        ("OTEL_EXPORTER_OTLP_CERTIFICATE", &ca),
        ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", &cert),
        ("OTEL_EXPORTER_OTLP_CLIENT_KEY", &key),
    ]);
    assert_eq!(r, "on exported=4 failed=0");
    assert!(rotel.spans(4).iter().any(|s| s.name == "work"));
    assert!(front.handshakes() >= 1);

    // A file that is missing, or holds the wrong thing, is an error naming its variable.
    let missing = file("missing.pem");
    let r = run_child(&[
        ("SLICETRACE", "1"),
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            &format!("https://{endpoint}"),
        ),
        ("OTEL_EXPORTER_OTLP_CERTIFICATE", &missing),
    ]);
    assert!(
        r.starts_with(&format!(
            "error slicetrace cannot use the tracing environment variables: OTEL_EXPORTER_OTLP_CERTIFICATE={missing:?}: expected"
        )),
        "{r}"
    );
    let r = run_child(&[
        ("SLICETRACE", "1"),
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            &format!("https://{endpoint}"),
        ),
        ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", &cert),
        ("OTEL_EXPORTER_OTLP_CLIENT_KEY", &cert),
    ]);
    assert!(
        r.starts_with("error slicetrace cannot use the tracing environment variables: OTEL_EXPORTER_OTLP_CLIENT_KEY="),
        "{r}"
    );
}
