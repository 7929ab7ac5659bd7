//! A TLS front for the collector: rotel's receivers speak plain TCP only, so the TLS tests put
//! this in front of them. It terminates TLS (rustls) with a certificate from a test CA,
//! optionally demands a client certificate, and relays the bytes to the collector's port.
//! Certificates are made per test run (rcgen).

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A test certificate authority, a server certificate for `localhost` and `127.0.0.1`, and a
/// client certificate, all as PEM files in a directory of their own.
pub struct Pki {
    pub dir: PathBuf,
    ca_der: CertificateDer<'static>,
    server_der: CertificateDer<'static>,
    server_key: Vec<u8>,
}

impl Pki {
    pub fn new(tag: &str) -> Pki {
        // Tests of one binary run at once: each gets a directory of its own.
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("slicetrace-pki-{tag}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (ca_pem, ca_der, issuer) = authority("slicetrace test CA");
        // Another authority's certificate: what a client that trusts the wrong CA holds.
        let (other_pem, _, _) = authority("some other CA");

        let server_key = KeyPair::generate().unwrap();
        let mut server =
            CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
        server
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        let server_cert = server.signed_by(&server_key, &issuer).unwrap();

        let client_key = KeyPair::generate().unwrap();
        let mut client = CertificateParams::new(Vec::<String>::new()).unwrap();
        client
            .distinguished_name
            .push(DnType::CommonName, "traced server");
        let client_cert = client.signed_by(&client_key, &issuer).unwrap();

        for (name, pem) in [
            ("ca.pem", ca_pem),
            ("other-ca.pem", other_pem),
            ("client.pem", client_cert.pem()),
            ("client.key", client_key.serialize_pem()),
        ] {
            std::fs::write(dir.join(name), pem).unwrap();
        }
        Pki {
            dir,
            ca_der,
            server_der: server_cert.der().clone(),
            server_key: server_key.serialize_der(),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.path(name)).unwrap()
    }

    fn server_config(&self, client_auth: bool, alpn: &[&[u8]]) -> Arc<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = if client_auth {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(self.ca_der.clone()).unwrap();
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .unwrap();
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.server_key.clone()));
        let mut config = builder
            .with_single_cert(vec![self.server_der.clone()], key)
            .unwrap();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn authority(name: &str) -> (String, CertificateDer<'static>, Issuer<'static, KeyPair>) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), cert.der().clone(), Issuer::new(params, key))
}

/// What the front saw.
#[derive(Default)]
pub struct Counts {
    pub handshakes: AtomicU64,
    pub handshakes_failed: AtomicU64,
}

/// A listening TLS front; it runs until the test process ends.
pub struct TlsFront {
    pub port: u16,
    pub counts: Arc<Counts>,
}

/// Which application protocol the front offers: gRPC needs HTTP/2 by ALPN; rotel's HTTP
/// receiver is reached over HTTP/1.1.
pub enum Alpn {
    H2,
    Http1,
}

impl TlsFront {
    pub fn start(pki: &Pki, upstream: &str, alpn: Alpn, client_auth: bool) -> TlsFront {
        let protocols: &[&[u8]] = match alpn {
            Alpn::H2 => &[b"h2"],
            Alpn::Http1 => &[b"http/1.1"],
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(pki.server_config(client_auth, protocols));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let counts = Arc::new(Counts::default());
        let seen = counts.clone();
        let upstream = upstream.to_owned();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                loop {
                    let Ok((tcp, _)) = listener.accept().await else {
                        continue;
                    };
                    let (acceptor, upstream, seen) =
                        (acceptor.clone(), upstream.clone(), seen.clone());
                    tokio::spawn(async move {
                        let mut tls = match acceptor.accept(tcp).await {
                            Ok(t) => t,
                            Err(_) => {
                                seen.handshakes_failed.fetch_add(1, Ordering::Relaxed);
                                return;
                            }
                        };
                        seen.handshakes.fetch_add(1, Ordering::Relaxed);
                        if let Ok(mut up) = tokio::net::TcpStream::connect(&upstream).await {
                            let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
                        }
                    });
                }
            });
        });
        TlsFront { port, counts }
    }

    pub fn handshakes(&self) -> u64 {
        self.counts.handshakes.load(Ordering::Relaxed)
    }

    pub fn handshakes_failed(&self) -> u64 {
        self.counts.handshakes_failed.load(Ordering::Relaxed)
    }
}
