//! Acceptance 1: a real client (slixmpp) logs in with SCRAM-SHA-256 over STARTTLS and over
//! direct TLS; a wrong password is refused; nothing but STARTTLS is possible before TLS.

use hearth_e2e::agent::Agent;
use hearth_e2e::server::{TestServer, DOMAIN};
use serde_json::json;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

#[test]
fn scram_sha256_login_over_starttls_and_direct_tls() {
    let server = TestServer::start("");
    server.add_user("alice", "correct horse battery");
    let jid = format!("alice@{DOMAIN}");
    let mut starttls = Agent::spawn(
        &jid,
        "correct horse battery",
        server.c2s_port,
        &server.cert_path,
        &["--mechanism", "SCRAM-SHA-256"],
    );
    let r = starttls.connect();
    assert!(
        r["jid"].as_str().unwrap().starts_with(&format!("{jid}/")),
        "{r}"
    );
    assert_eq!(starttls.cmd(json!({"cmd": "ping"}))["ok"], json!(true));

    let mut direct = Agent::spawn(
        &jid,
        "correct horse battery",
        server.direct_port,
        &server.cert_path,
        &["--direct-tls", "--mechanism", "SCRAM-SHA-256"],
    );
    direct.connect();
    let mut sha1 = Agent::spawn(
        &jid,
        "correct horse battery",
        server.c2s_port,
        &server.cert_path,
        &["--mechanism", "SCRAM-SHA-1"],
    );
    sha1.connect();
}

#[test]
fn wrong_password_and_unknown_user_are_refused() {
    let server = TestServer::start("");
    server.add_user("alice", "correct horse battery");
    let mut wrong = server.agent("alice", "incorrect horse");
    let r = wrong.try_connect();
    assert_eq!(r["ok"], json!(false), "{r}");
    assert_eq!(r["error"], json!("auth-failed"), "{r}");
    let mut nobody = server.agent("mallory", "whatever-password");
    assert_eq!(nobody.try_connect()["ok"], json!(false));
}

#[test]
fn plain_is_refused_unless_enabled_and_never_before_tls() {
    let server = TestServer::start("");
    server.add_user("alice", "correct horse battery");
    let mut plain = Agent::spawn(
        &format!("alice@{DOMAIN}"),
        "correct horse battery",
        server.c2s_port,
        &server.cert_path,
        &["--mechanism", "PLAIN"],
    );
    assert_eq!(
        plain.try_connect()["ok"],
        json!(false),
        "PLAIN must not be offered by default"
    );

    // Before TLS the only feature is a required STARTTLS, and SASL is refused with a stream error.
    let mut tcp = TcpStream::connect(("127.0.0.1", server.c2s_port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(tcp, "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='{DOMAIN}' version='1.0'>").unwrap();
    let features = read_until(&mut tcp, "</stream:features>");
    assert!(
        features
            .contains("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls>"),
        "{features}"
    );
    assert!(
        !features.contains("mechanism"),
        "no SASL before TLS: {features}"
    );
    write!(tcp, "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGFsaWNlAGNvcnJlY3QgaG9yc2UgYmF0dGVyeQ==</auth>").unwrap();
    let answer = read_until(&mut tcp, "</stream:stream>");
    assert!(answer.contains("<policy-violation"), "{answer}");
    assert!(!answer.contains("success"), "{answer}");

    let server = TestServer::start("[auth]\nallow_plain = true\n");
    server.add_user("alice", "correct horse battery");
    let mut plain = Agent::spawn(
        &format!("alice@{DOMAIN}"),
        "correct horse battery",
        server.c2s_port,
        &server.cert_path,
        &["--mechanism", "PLAIN"],
    );
    plain.connect();
}

#[test]
fn wrong_host_gets_host_unknown() {
    let server = TestServer::start("");
    let mut tcp = TcpStream::connect(("127.0.0.1", server.c2s_port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(tcp, "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='elsewhere.test' version='1.0'>").unwrap();
    let answer = read_until(&mut tcp, "</stream:stream>");
    assert!(answer.contains("<host-unknown"), "{answer}");
}

/// Reads until `end` appears or the peer closes.
pub fn read_until(tcp: &mut TcpStream, end: &str) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&out).contains(end) {
        match tcp.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
