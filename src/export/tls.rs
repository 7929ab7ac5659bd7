//! TLS for `https://` OTLP endpoints: certificates that verify the collector, besides the
//! system's roots, and the client's own certificate and key for mutual TLS. PEM text here; the
//! environment names files (`OTEL_EXPORTER_OTLP_*CERTIFICATE`, `*CLIENT_KEY`, see `env`).

use std::fmt;

/// TLS material for an `https://` OTLP endpoint. The system's root certificates are trusted
/// whatever this holds.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TlsConfig {
    /// PEM certificates of the authorities that sign the collector's certificate.
    pub ca_pem: Option<Vec<u8>>,
    /// PEM certificate chain this client presents (mutual TLS); needs `client_key_pem`.
    pub client_cert_pem: Option<Vec<u8>>,
    /// PEM private key of `client_cert_pem`.
    pub client_key_pem: Option<Vec<u8>>,
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let size = |v: &Option<Vec<u8>>| v.as_ref().map(|b| format!("{} bytes", b.len()));
        // The key's bytes stay out of logs.
        f.debug_struct("TlsConfig")
            .field("ca_pem", &size(&self.ca_pem))
            .field("client_cert_pem", &size(&self.client_cert_pem))
            .field("client_key_pem", &size(&self.client_key_pem))
            .finish()
    }
}

/// A client certificate chain and its private key, PEM.
pub type Identity<'a> = (&'a [u8], &'a [u8]);

impl TlsConfig {
    pub fn is_empty(&self) -> bool {
        self.ca_pem.is_none() && self.client_cert_pem.is_none() && self.client_key_pem.is_none()
    }

    /// The client certificate and key, when both are given; an error when only one is.
    pub(crate) fn identity(&self) -> Result<Option<Identity<'_>>, String> {
        match (&self.client_cert_pem, &self.client_key_pem) {
            (Some(c), Some(k)) => Ok(Some((c, k))),
            (None, None) => Ok(None),
            (Some(_), None) => Err("a client certificate was given without its key".into()),
            (None, Some(_)) => Err("a client key was given without its certificate".into()),
        }
    }

    /// Checks that each PEM text holds what it should, so a wrong file is named at set-up
    /// rather than found at the first handshake.
    pub(crate) fn check(&self) -> Result<(), String> {
        if let Some(ca) = &self.ca_pem {
            if !has_section(ca, is_certificate) {
                return Err("the CA certificates hold no PEM CERTIFICATE section".into());
            }
        }
        if let Some((cert, key)) = self.identity()? {
            if !has_section(cert, is_certificate) {
                return Err("the client certificate holds no PEM CERTIFICATE section".into());
            }
            if !has_section(key, is_private_key) {
                return Err("the client key holds no PEM PRIVATE KEY section".into());
            }
        }
        Ok(())
    }
}

pub(crate) fn is_certificate(label: &str) -> bool {
    label == "CERTIFICATE"
}

pub(crate) fn is_private_key(label: &str) -> bool {
    label.ends_with("PRIVATE KEY")
}

/// Whether `pem` has a `-----BEGIN <label>-----` line whose label passes `wanted`.
pub(crate) fn has_section(pem: &[u8], wanted: fn(&str) -> bool) -> bool {
    let Ok(text) = std::str::from_utf8(pem) else {
        return false;
    };
    text.lines().any(|l| {
        l.trim()
            .strip_prefix("-----BEGIN ")
            .and_then(|rest| rest.strip_suffix("-----"))
            .is_some_and(wanted)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CERT: &[u8] = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    const KEY: &[u8] = b"-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n";

    #[test]
    fn sections_are_recognised_by_label() {
        assert!(has_section(CERT, is_certificate));
        assert!(!has_section(CERT, is_private_key));
        assert!(has_section(KEY, is_private_key));
        assert!(has_section(
            b"-----BEGIN EC PRIVATE KEY-----\n",
            is_private_key
        ));
        assert!(!has_section(b"not pem at all", is_certificate));
        assert!(!has_section(&[0xff, 0xfe], is_certificate));
    }

    #[test]
    fn an_identity_needs_both_halves() {
        let mut t = TlsConfig {
            client_cert_pem: Some(CERT.to_vec()),
            ..TlsConfig::default()
        };
        assert!(t.identity().is_err());
        assert!(t.check().is_err());
        t.client_key_pem = Some(KEY.to_vec());
        assert_eq!(t.identity().unwrap(), Some((CERT, KEY)));
        assert!(t.check().is_ok());
        t.client_key_pem = Some(CERT.to_vec());
        assert!(t.check().unwrap_err().contains("PRIVATE KEY"));
    }

    #[test]
    fn debug_output_leaves_the_key_out() {
        let t = TlsConfig {
            client_cert_pem: Some(CERT.to_vec()),
            client_key_pem: Some(KEY.to_vec()),
            ..TlsConfig::default()
        };
        let s = format!("{t:?}");
        assert!(!s.contains("MIIE"), "{s}");
        assert!(s.contains(&format!("{} bytes", KEY.len())), "{s}");
    }
}
