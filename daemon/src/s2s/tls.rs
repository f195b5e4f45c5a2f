//! TLS for server-to-server streams: both directions are always encrypted, and a peer's
//! certificate is checked for the domain it claims (RFC 6120 §13.7.2, RFC 6125).
//!
//! Incoming: rustls asks the peer for a certificate but lets the handshake finish without one;
//! the chain is judged after the stream header names the peer's domain, as a *server*
//! certificate (serverAuth usage). rustls' own client-certificate verifier demands the
//! clientAuth usage, which public CAs are dropping from server certificates, so a small
//! verifier here checks only that the peer holds the key (the handshake signature).
//!
//! Outgoing: the remote server's certificate must be valid for the remote domain (not for the
//! SRV target), from the system's trust store plus `[s2s] ca_file`. We present our own
//! certificate as the client certificate, for SASL EXTERNAL.

use rustls::client::danger::ServerCertVerifier;
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig};
use std::path::Path;
use std::sync::Arc;

/// ALPN for server-to-server direct TLS (XEP-0368).
pub const ALPN_XMPP_SERVER: &[u8] = b"xmpp-server";

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The trust anchors for peers' certificates and the verifier built on them.
pub struct PeerTrust {
    verifier: Arc<WebPkiServerVerifier>,
}

impl PeerTrust {
    /// The system trust store plus the certificates in `ca_file`, if given.
    pub fn load(ca_file: Option<&Path>) -> Result<PeerTrust, String> {
        let mut roots = RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        for e in &native.errors {
            log::warn!("s2s: a system CA certificate could not be read: {e}");
        }
        roots.add_parsable_certificates(native.certs);
        if let Some(path) = ca_file {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("cannot read [s2s] ca_file {}: {e}", path.display()))?
                .collect::<Result<_, _>>()
                .map_err(|e| format!("[s2s] ca_file {} is not valid PEM: {e}", path.display()))?;
            if certs.is_empty() {
                return Err(format!(
                    "[s2s] ca_file {} holds no certificate",
                    path.display()
                ));
            }
            for c in certs {
                roots.add(c).map_err(|e| {
                    format!(
                        "[s2s] ca_file {}: not a CA certificate: {e}",
                        path.display()
                    )
                })?;
            }
        }
        if roots.is_empty() {
            log::warn!("s2s: no trusted CA certificates: no remote server can be authenticated by its certificate");
        }
        let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| format!("s2s: cannot build the certificate verifier: {e}"))?;
        Ok(PeerTrust { verifier })
    }

    /// Whether `chain` (leaf first) is a valid server certificate for `domain` now.
    pub fn valid_for(&self, chain: &[CertificateDer<'_>], domain: &str) -> Result<(), String> {
        let (leaf, rest) = chain.split_first().ok_or("no certificate")?;
        let name = ServerName::try_from(domain.to_string()).map_err(|e| e.to_string())?;
        self.verifier
            .verify_server_cert(leaf, rest, &name, &[], UnixTime::now())
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// The client config for outgoing streams: the remote must prove its domain, and we show
    /// our certificate (for SASL EXTERNAL).
    pub fn client_config(
        &self,
        cert: &Path,
        key: &Path,
        direct_tls: bool,
    ) -> Result<Arc<ClientConfig>, String> {
        let (certs, key) = read_pair(cert, key)?;
        let mut config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_webpki_verifier(self.verifier.clone())
            .with_client_auth_cert(certs, key)
            .map_err(|e| format!("certificate and key do not fit together: {e}"))?;
        if direct_tls {
            config.alpn_protocols = vec![ALPN_XMPP_SERVER.to_vec()];
        }
        config.resumption = rustls::client::Resumption::disabled();
        Ok(Arc::new(config))
    }
}

/// The server config for incoming streams: our certificate, and a request for the peer's.
pub fn server_config(
    cert: &Path,
    key: &Path,
    direct_tls: bool,
) -> Result<Arc<ServerConfig>, String> {
    let (certs, key) = read_pair(cert, key)?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(Arc::new(AnyPeerCertificate {
            algorithms: provider().signature_verification_algorithms,
        }))
        .with_single_cert(certs, key)
        .map_err(|e| format!("certificate and key do not fit together: {e}"))?;
    if direct_tls {
        config.alpn_protocols = vec![ALPN_XMPP_SERVER.to_vec()];
    }
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

fn read_pair(
    cert: &Path,
    key: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("cannot read certificate {}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("certificate file {} is not valid PEM: {e}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("cannot read a private key from {}: {e}", key.display()))?;
    Ok((certs, key))
}

/// Requests the peer's certificate, checks that the peer holds its key, and leaves the
/// judgement of the chain to the stream (which knows the domain to check it for).
#[derive(Debug)]
struct AnyPeerCertificate {
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for AnyPeerCertificate {
    fn offer_client_auth(&self) -> bool {
        true
    }
    fn client_auth_mandatory(&self) -> bool {
        false
    }
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }
    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CA, and a leaf it signs for `name` with only the serverAuth usage (as public CAs now
    /// issue them).
    fn ca_and_leaf(name: &str) -> (String, Vec<CertificateDer<'static>>) {
        use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let leaf_key = KeyPair::generate().unwrap();
        let mut leaf = CertificateParams::new(vec![name.to_string()]).unwrap();
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let leaf_cert = leaf.signed_by(&leaf_key, &ca_cert, &ca_key).unwrap();
        (ca_cert.pem(), vec![leaf_cert.der().clone()])
    }

    #[test]
    fn a_server_certificate_without_client_usage_proves_its_domain_only() {
        let (ca_pem, chain) = ca_and_leaf("remote.test");
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, ca_pem).unwrap();
        let trust = PeerTrust::load(Some(&ca)).unwrap();
        trust.valid_for(&chain, "remote.test").unwrap();
        assert!(trust.valid_for(&chain, "other.test").is_err());
        // Not from our CA: refused.
        let (_, stranger) = ca_and_leaf("remote.test");
        assert!(trust.valid_for(&stranger, "remote.test").is_err());
        assert!(trust.valid_for(&[], "remote.test").is_err());
    }

    #[test]
    fn a_ca_file_that_is_not_pem_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "hello").unwrap();
        let e = PeerTrust::load(Some(&ca)).err().unwrap();
        assert!(e.contains("ca.pem") && e.contains("no certificate"), "{e}");
    }
}
