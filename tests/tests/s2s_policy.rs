//! Federation's refusals, against a real `hearthd` on loopback: a raw server-to-server peer
//! (direct TLS, with a certificate from a test CA) that forges a `from` or comes from a
//! deny-listed domain, and remote servers that cannot be reached or never answer, whose
//! stanzas must bounce well within 30 seconds.

use hearth_e2e::federation::TestCa;
use hearth_e2e::raw::read_until;
use hearth_e2e::server::{free_port, TestServer};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::json;
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

type Conn = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

const W: Duration = Duration::from_secs(10);

struct Rig {
    ca: TestCa,
    server: TestServer,
    s2s_port: u16,
}

fn start(extra: &str) -> Rig {
    let ca = TestCa::new();
    let (cert, key) = ca.issue("hearth.test", true);
    let s2s_port = free_port();
    let config = format!(
        "[s2s]\nlisten = []\nlisten_direct_tls = [\"127.0.0.1:{s2s_port}\"]\nca_file = {:?}\n{extra}\n",
        ca.ca_path()
    );
    let server = TestServer::start_with_cert(&config, Some((&cert, &key)));
    server.add_user("hana", "hana-password");
    Rig {
        ca,
        server,
        s2s_port,
    }
}

/// A direct-TLS server-to-server connection presenting a certificate for `domain`.
fn peer(b: &Rig, domain: &str) -> Conn {
    let (cert, key) = b.ca.issue(domain, false);
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(b.ca.ca_path()).unwrap())
        .unwrap();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_file(&key).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)
        .unwrap();
    config.alpn_protocols = vec![b"xmpp-server".to_vec()];
    let conn = rustls::ClientConnection::new(
        Arc::new(config),
        ServerName::try_from("hearth.test".to_string()).unwrap(),
    )
    .unwrap();
    let tcp = TcpStream::connect(("127.0.0.1", b.s2s_port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    rustls::StreamOwned::new(conn, tcp)
}

fn header(from: &str) -> String {
    format!(
        "<?xml version='1.0'?><stream:stream xmlns='jabber:server' \
         xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' \
         from='{from}' to='hearth.test' version='1.0'>"
    )
}

/// Opens the stream as `domain` and authenticates with SASL EXTERNAL.
fn authenticate(c: &mut Conn, domain: &str) {
    c.write_all(header(domain).as_bytes()).unwrap();
    let (f, _) = read_until(c, "</stream:features>", W);
    assert!(f.contains("EXTERNAL"), "EXTERNAL not offered: {f}");
    c.write_all(b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>=</auth>")
        .unwrap();
    let (s, _) = read_until(c, "success", W);
    assert!(s.contains("<success"), "EXTERNAL refused: {s}");
    c.write_all(header(domain).as_bytes()).unwrap();
    read_until(c, "</stream:features>", W);
}

#[test]
fn a_forged_from_closes_the_stream_and_a_proven_one_is_delivered() {
    let b = start("");
    let mut hana = b
        .server
        .agent_with_ca("hana", "hana-password", &b.ca.ca_path());
    hana.connect();
    hana.presence();

    let mut c = peer(&b, "friend.test");
    authenticate(&mut c, "friend.test");
    c.write_all(
        b"<message from='fred@friend.test/x' to='hana@hearth.test' type='chat'><body>real</body></message>",
    )
    .unwrap();
    hana.expect_event("message", W, |m| {
        m["body"] == "real" && m["from"] == "fred@friend.test/x"
    });
    c.write_all(
        b"<message from='mallory@elsewhere.test/x' to='hana@hearth.test' type='chat'><body>forged</body></message>",
    )
    .unwrap();
    let (out, _) = read_until(&mut c, "</stream:stream>", W);
    assert!(out.contains("invalid-from"), "{out}");
    assert!(hana
        .bodies(Duration::from_secs(1))
        .iter()
        .all(|b| b != "forged"));
}

#[test]
fn a_denied_domain_cannot_connect_and_cannot_be_written_to() {
    let b = start("deny = [\"denied.test\"]\n");
    let mut c = peer(&b, "denied.test");
    c.write_all(header("denied.test").as_bytes()).unwrap();
    let (f, _) = read_until(&mut c, "</stream:features>", W);
    assert!(!f.contains("EXTERNAL"), "{f}");
    c.write_all(b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>=</auth>")
        .unwrap();
    let (out, _) = read_until(&mut c, "</stream:stream>", W);
    assert!(out.contains("policy-violation"), "{out}");

    let mut hana = b
        .server
        .agent_with_ca("hana", "hana-password", &b.ca.ca_path());
    hana.connect();
    hana.cmd(json!({"cmd": "watch_errors"}));
    hana.message("someone@denied.test", "hello?");
    let e = hana.expect_event("message", W, |m| m["type"] == "error");
    assert_eq!(e["error"], json!("not-allowed"), "{e}");
}

#[test]
fn unreachable_and_silent_servers_bounce_within_30_seconds() {
    // Nothing listens on `closed`; `silent` accepts and never says a word.
    let closed = free_port();
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let b = start(&format!(
        "connect_timeout_secs = 5\n[s2s.routes]\n\"closed.test\" = \"127.0.0.1:{closed}\"\n\
         \"silent.test\" = \"127.0.0.1:{silent_port}\"\n"
    ));
    let mut hana = b
        .server
        .agent_with_ca("hana", "hana-password", &b.ca.ca_path());
    hana.connect();
    for (to, condition) in [
        ("a@closed.test", "remote-server-not-found"),
        ("b@silent.test", "remote-server-timeout"),
    ] {
        let t0 = Instant::now();
        hana.message(to, "anyone there?");
        let e = hana.expect_event("message", Duration::from_secs(30), |m| {
            m["type"] == "error" && m["from"] == to
        });
        assert_eq!(e["error"], json!(condition), "{e}");
        assert!(t0.elapsed() < Duration::from_secs(30), "{:?}", t0.elapsed());
    }
    drop(silent);
}
