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

#[test]
fn same_resource_replaces_the_old_session_and_disco_lists_the_features() {
    use hearth_e2e::raw::{login_plain, read_until, tls_connect};
    let server = TestServer::start("[auth]\nallow_plain = true\n");
    server.add_user("alice", "correct horse battery");
    let mut first = tls_connect(server.direct_port, DOMAIN, &server.cert_path);
    login_plain(&mut first, DOMAIN, "alice", "correct horse battery");
    let mut second = tls_connect(server.direct_port, DOMAIN, &server.cert_path);
    login_plain(&mut second, DOMAIN, "alice", "correct horse battery");
    let (old, _) = read_until(&mut first, "</stream:stream>", Duration::from_secs(10));
    assert!(
        old.contains("<conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"),
        "{old}"
    );
    second
        .write_all(b"<iq type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>")
        .unwrap();
    let (pong, _) = read_until(&mut second, "</iq>", Duration::from_secs(10));
    assert!(
        pong.contains("type='result'"),
        "the new session works: {pong}"
    );

    let mut agent = server.agent("alice", "correct horse battery");
    agent.connect();
    let disco = agent.cmd(json!({"cmd": "disco"}));
    let features: Vec<&str> = disco["features"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f.as_str())
        .collect();
    for f in [
        "msgoffline",
        "urn:xmpp:ping",
        "vcard-temp",
        "jabber:iq:register",
        "http://jabber.org/protocol/disco#info",
    ] {
        assert!(features.contains(&f), "{f} missing from {features:?}");
    }
    assert!(
        !features.contains(&"jabber:iq:version"),
        "XEP-0092 is off by default"
    );
    let account = agent.cmd(json!({"cmd": "disco", "to": format!("alice@{DOMAIN}")}));
    assert_eq!(account["ok"], json!(true), "{account}");
}
