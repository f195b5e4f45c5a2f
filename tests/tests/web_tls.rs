//! HTTPS follows the certificate files: when hearth-acme replaces them (atomic renames), the next
//! connection gets the new certificate without restarting hearth-web; a key that does not match
//! its certificate keeps the old pair serving.

mod web_common;

use hearth_e2e::server::binary;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::io::Write;
use std::net::TcpStream;
use std::sync::Arc;
use web_common::*;

/// Accepts any certificate: the test compares what was served with the files instead.
#[derive(Debug)]
struct AnyCert(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The leaf certificate the server presents on a fresh connection (the handshake proves the
/// server holds its key).
fn served_cert(port: u16) -> Vec<u8> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
        .with_no_client_auth();
    let mut conn =
        rustls::ClientConnection::new(Arc::new(config), ServerName::try_from(DOMAIN).unwrap())
            .unwrap();
    let mut sock = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut tls = rustls::Stream::new(&mut conn, &mut sock);
    tls.write_all(b"GET / HTTP/1.0\r\n\r\n")
        .expect("TLS handshake");
    conn.peer_certificates().expect("a certificate")[0].to_vec()
}

/// A plain-HTTP GET; the status line and the body.
fn http_get(port: u16, path: &str) -> (String, String) {
    use std::io::Read;
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {DOMAIN}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    (head.to_string(), body.to_string())
}

fn der_of(pem: &str) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

#[test]
fn port_80_answers_acme_and_a_renewed_certificate_is_served_without_a_restart() {
    let mut web = WebServer::new(&[]);
    let file = web.boot_dir.join("hearth-setup.toml");
    let setup = format!(
        "[server]\ndomain = \"{DOMAIN}\"\n[admin]\nusername = \"{ADMIN}\"\npassword = \"{ADMIN_PASSWORD}\"\n"
    );
    std::fs::write(&file, setup).unwrap();
    let out = std::process::Command::new(binary("hearth-web"))
        .args(["preseed", "--file"])
        .arg(&file)
        .arg("--config")
        .arg(&web.config)
        .arg("--data-dir")
        .arg(&web.data_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    web.spawn();
    let config = hearthd::config::Config::load(&web.config).unwrap();
    let first = std::fs::read_to_string(&config.tls.cert).unwrap();
    assert_eq!(served_cert(web.https_port), der_of(&first));

    // Port 80 on a set-up box: ACME challenges are answered over plain HTTP (Let's Encrypt
    // does not follow us to HTTPS for them), everything else is sent to HTTPS.
    let challenges = config
        .data_dir
        .join("acme-webroot/.well-known/acme-challenge");
    std::fs::create_dir_all(&challenges).unwrap();
    std::fs::write(challenges.join("tok-EN_123"), "tok-EN_123.thumbprint").unwrap();
    let (head, body) = http_get(web.http_port, "/.well-known/acme-challenge/tok-EN_123");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, "tok-EN_123.thumbprint");
    let (head, _) = http_get(
        web.http_port,
        "/.well-known/acme-challenge/..%2F..%2Fcerts%2Fprivkey.pem",
    );
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    let (head, _) = http_get(web.http_port, "/admin/users");
    assert!(head.starts_with("HTTP/1.1 308"), "{head}");
    let location = format!("location: https://{DOMAIN}:{}/admin/users", web.https_port);
    assert!(head.to_lowercase().contains(&location), "{head}");

    // hearth-acme's way of installing: key, then certificate, each by atomic rename.
    let renewed =
        hearthd::certs::self_signed(&[DOMAIN.to_string(), format!("groups.{DOMAIN}")]).unwrap();
    hearthd::fsutil::write_atomically(&config.tls.key, renewed.key_pem.as_bytes(), 0o600).unwrap();
    hearthd::fsutil::write_atomically(&config.tls.cert, renewed.cert_pem.as_bytes(), 0o644)
        .unwrap();
    assert_eq!(
        served_cert(web.https_port),
        der_of(&renewed.cert_pem),
        "the renewed certificate is served"
    );

    // A certificate whose key did not arrive keeps the working pair.
    let stray = hearthd::certs::self_signed(&[DOMAIN.to_string()]).unwrap();
    hearthd::fsutil::write_atomically(&config.tls.cert, stray.cert_pem.as_bytes(), 0o644).unwrap();
    assert_eq!(served_cert(web.https_port), der_of(&renewed.cert_pem));
    assert!(
        web.log().contains("keeping the previous certificate"),
        "{}",
        web.log()
    );
}
