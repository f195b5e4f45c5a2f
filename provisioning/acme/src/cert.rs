//! Reading the certificate the box serves now: names, validity, serial, issuer. Everything the
//! renewal policy and `status`/`check` need, from the PEM files alone.

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use std::path::Path;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// What we know about a certificate chain's leaf.
#[derive(Debug, Clone)]
pub struct CertInfo {
    /// DNS names in the subjectAltName extension.
    pub names: Vec<String>,
    /// Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
    /// Lower-case hex, as `openssl x509 -serial` prints it.
    pub serial: String,
    pub issuer: String,
    pub self_signed: bool,
    /// The leaf's DER, for the ARI certificate identifier.
    pub leaf_der: Vec<u8>,
    /// The leaf's SubjectPublicKeyInfo, to check the key file belongs to it.
    pub spki_der: Vec<u8>,
}

impl CertInfo {
    pub fn lifetime_secs(&self) -> i64 {
        (self.not_after - self.not_before).max(1)
    }

    /// Whether the certificate covers exactly these names (order does not matter).
    pub fn covers_exactly(&self, names: &[String]) -> bool {
        let mut a: Vec<String> = self.names.iter().map(|n| n.to_ascii_lowercase()).collect();
        let mut b: Vec<String> = names.iter().map(|n| n.to_ascii_lowercase()).collect();
        a.sort();
        a.dedup();
        b.sort();
        b.dedup();
        a == b
    }
}

/// Parses the first certificate (the leaf) of a PEM chain.
pub fn parse_chain_pem(pem: &[u8]) -> Result<CertInfo, String> {
    let leaf = CertificateDer::pem_slice_iter(pem)
        .next()
        .ok_or_else(|| "no PEM certificate found".to_string())?
        .map_err(|e| format!("unreadable PEM: {e:?}"))?;
    parse_der(leaf.as_ref())
}

pub fn parse_der(der: &[u8]) -> Result<CertInfo, String> {
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            if let GeneralName::DNSName(d) = n {
                names.push(d.to_string());
            }
        }
    }
    Ok(CertInfo {
        names,
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        serial: cert.tbs_certificate.raw_serial_as_string().replace(':', ""),
        issuer: cert.issuer().to_string(),
        self_signed: cert.issuer().as_raw() == cert.subject().as_raw(),
        leaf_der: der.to_vec(),
        spki_der: cert.public_key().raw.to_vec(),
    })
}

/// Reads and parses a chain file. `Ok(None)` when the file does not exist yet.
pub fn read_chain(path: &Path) -> Result<Option<CertInfo>, String> {
    match std::fs::read(path) {
        Ok(bytes) => parse_chain_pem(&bytes)
            .map(Some)
            .map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// Whether a PEM private key belongs to the certificate (same public key).
pub fn key_matches(key_pem: &str, cert: &CertInfo) -> bool {
    match rcgen::KeyPair::from_pem(key_pem) {
        Ok(k) => rcgen::PublicKeyData::subject_public_key_info(&k) == cert.spki_der,
        Err(_) => false,
    }
}

/// A Unix time as `2025-03-01 14:00 UTC`.
pub fn fmt_time(unix: i64) -> String {
    use time::macros::format_description;
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(format_description!(
                "[year]-[month]-[day] [hour]:[minute] UTC"
            ))
            .ok()
        })
        .unwrap_or_else(|| format!("@{unix}"))
}

/// A duration in words: `3 days`, `5 hours`, `12 minutes`.
pub fn fmt_span(secs: i64) -> String {
    let s = secs.abs();
    let (n, unit) = if s >= 2 * 86_400 {
        (s / 86_400, "days")
    } else if s >= 2 * 3600 {
        (s / 3600, "hours")
    } else if s >= 120 {
        (s / 60, "minutes")
    } else {
        (s, "seconds")
    };
    format!("{n} {unit}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_self_signed_pair() {
        let names = vec![
            "example.test".to_string(),
            "groups.example.test".to_string(),
        ];
        let pair = hearthd::certs::self_signed(&names).unwrap();
        let info = parse_chain_pem(pair.cert_pem.as_bytes()).unwrap();
        assert!(info.covers_exactly(&["GROUPS.example.test".into(), "example.test".into()]));
        assert!(!info.covers_exactly(&names[..1]));
        assert!(info.self_signed);
        assert!(info.lifetime_secs() > 9 * 365 * 86_400);
        assert!(key_matches(&pair.key_pem, &info));
        let other = hearthd::certs::self_signed(&names).unwrap();
        assert!(!key_matches(&other.key_pem, &info));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(parse_chain_pem(b"hello").is_err());
        assert!(
            parse_chain_pem(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
                .is_err()
        );
    }

    #[test]
    fn spans_read_well() {
        assert_eq!(fmt_span(3 * 86_400 + 5), "3 days");
        assert_eq!(fmt_span(-7200), "2 hours");
        assert_eq!(fmt_time(0), "1970-01-01 00:00 UTC");
    }
}
