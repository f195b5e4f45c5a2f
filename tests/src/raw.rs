//! A raw XMPP connection for tests that must misbehave on purpose (hostile XML, trickling,
//! floods): plain TCP, or TLS with the test certificate trusted, and nothing polite on top.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub type TlsConn = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

pub fn header(domain: &str) -> String {
    format!("<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='{domain}' version='1.0'>")
}

/// Opens a direct-TLS connection trusting `cert` (the server's self-signed certificate).
pub fn tls_connect(port: u16, domain: &str, cert: &Path) -> TlsConn {
    tls_connect_trusting(
        port,
        domain,
        &std::fs::read_to_string(cert).expect("cert file"),
    )
}

/// Opens a direct-TLS connection trusting every certificate in `pem` (one or several).
pub fn tls_connect_trusting(port: u16, domain: &str, pem: &str) -> TlsConn {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        roots.add(c.expect("pem")).expect("root");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"xmpp-client".to_vec()];
    let conn = rustls::ClientConnection::new(
        Arc::new(config),
        ServerName::try_from(domain.to_string()).expect("name"),
    )
    .expect("tls");
    let tcp = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    rustls::StreamOwned::new(conn, tcp)
}

/// The peer certificate's serial number, as the server presented it.
pub fn peer_serial(conn: &mut TlsConn) -> Vec<u8> {
    // Drive the handshake.
    let _ = conn.flush();
    while conn.conn.is_handshaking() {
        conn.conn.complete_io(&mut conn.sock).expect("handshake");
    }
    let der = conn.conn.peer_certificates().expect("certs")[0].to_vec();
    serial_of(&der)
}

/// Extracts the serial number from a DER certificate (TBSCertificate's second field).
fn serial_of(der: &[u8]) -> Vec<u8> {
    fn read_len(d: &[u8], i: &mut usize) -> usize {
        let b = d[*i] as usize;
        *i += 1;
        if b < 0x80 {
            return b;
        }
        let n = b & 0x7f;
        let mut len = 0;
        for _ in 0..n {
            len = (len << 8) | d[*i] as usize;
            *i += 1;
        }
        len
    }
    let mut i = 1; // Certificate SEQUENCE
    read_len(der, &mut i);
    i += 1; // TBSCertificate SEQUENCE
    read_len(der, &mut i);
    if der[i] == 0xa0 {
        // [0] version
        i += 1;
        let l = read_len(der, &mut i);
        i += l;
    }
    i += 1; // INTEGER serial
    let l = read_len(der, &mut i);
    der[i..i + l].to_vec()
}

/// Reads whatever arrives until `needle` is seen, the peer closes, or `timeout` passes.
pub fn read_until<S: Read>(s: &mut S, needle: &str, timeout: Duration) -> (String, bool) {
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        if String::from_utf8_lossy(&out).contains(needle) {
            return (String::from_utf8_lossy(&out).into_owned(), false);
        }
        if Instant::now() > deadline {
            return (String::from_utf8_lossy(&out).into_owned(), false);
        }
        match s.read(&mut buf) {
            Ok(0) => return (String::from_utf8_lossy(&out).into_owned(), true),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return (String::from_utf8_lossy(&out).into_owned(), true),
        }
    }
}

/// Logs in with PLAIN (the test server must allow it) and binds; returns the full JID.
pub fn login_plain(conn: &mut TlsConn, domain: &str, user: &str, password: &str) -> String {
    use base64::Engine;
    conn.write_all(header(domain).as_bytes()).expect("write");
    let (f, _) = read_until(conn, "</stream:features>", Duration::from_secs(10));
    assert!(f.contains("PLAIN"), "PLAIN not offered: {f}");
    let creds = base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"));
    write!(
        conn,
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{creds}</auth>"
    )
    .expect("write");
    let (s, _) = read_until(conn, "success", Duration::from_secs(10));
    assert!(s.contains("<success"), "login failed: {s}");
    conn.write_all(header(domain).as_bytes()).expect("write");
    read_until(conn, "</stream:features>", Duration::from_secs(10));
    conn.write_all(b"<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>raw</resource></bind></iq>").expect("write");
    let (b, _) = read_until(conn, "</iq>", Duration::from_secs(10));
    assert!(b.contains("<jid>"), "bind failed: {b}");
    format!("{user}@{domain}/raw")
}
