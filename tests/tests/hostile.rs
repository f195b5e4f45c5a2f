//! Acceptance 4: hostile input. Each attack ends only its own stream, with the right stream
//! error or a timeout, while a real client logs in and chats meanwhile.

use hearth_e2e::raw::{header, login_plain, read_until, tls_connect};
use hearth_e2e::server::{TestServer, DOMAIN};
use std::io::Write;
use std::time::{Duration, Instant};

const CONFIG: &str =
    "[auth]\nallow_plain = true\n[limits]\nnegotiation_timeout_secs = 6\nstanza_timeout_secs = 5\n";

/// Sends `payload` after the stream header on a fresh TLS connection; returns what came back
/// and whether the server closed the connection.
fn attack(server: &TestServer, before_header: &str, payload: &[u8]) -> (String, bool) {
    let mut c = tls_connect(server.direct_port, DOMAIN, &server.cert_path);
    c.write_all(before_header.as_bytes()).unwrap();
    c.write_all(header(DOMAIN).as_bytes()).unwrap();
    // Big payloads are cut off by the server midway: a write error then is expected.
    for chunk in payload.chunks(64 * 1024) {
        if c.write_all(chunk).is_err() {
            break;
        }
    }
    read_until(&mut c, "</stream:stream>", Duration::from_secs(15))
}

fn assert_stream_error(answer: &(String, bool), condition: &str) {
    assert!(
        answer.0.contains(&format!(
            "<{condition} xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"
        )),
        "expected {condition}, got {:?}",
        answer.0
    );
}

#[test]
fn hostile_streams_are_cut_off_while_others_chat() {
    let server = TestServer::start(CONFIG);
    server.add_user("alice", "alice-password");
    server.add_user("bob", "bob-password");
    let mut alice = server.agent("alice", "alice-password");
    alice.connect();
    alice.presence();
    let mut bob = server.agent("bob", "bob-password");
    bob.connect();
    bob.presence();

    // A DTD with an entity declaration (billion laughs starts like this).
    let doctype =
        "<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol 'lol'><!ENTITY lol2 '&lol;&lol;'>]>";
    let mut c = tls_connect(server.direct_port, DOMAIN, &server.cert_path);
    c.write_all(doctype.as_bytes()).unwrap();
    c.write_all(header(DOMAIN).as_bytes()).unwrap();
    assert_stream_error(
        &read_until(&mut c, "</stream:stream>", Duration::from_secs(10)),
        "restricted-xml",
    );

    // An undeclared entity reference inside a stanza.
    assert_stream_error(
        &attack(
            &server,
            "",
            b"<message to='bob@hearth.test'><body>&lol;</body></message>",
        ),
        "not-well-formed",
    );
    // Malformed XML.
    assert_stream_error(
        &attack(&server, "", b"<message><body></message>"),
        "not-well-formed",
    );
    // A comment (restricted in XMPP).
    assert_stream_error(&attack(&server, "", b"<!-- hello -->"), "restricted-xml");

    alice.message(&format!("bob@{DOMAIN}"), "still here 1");
    bob.expect_event("message", Duration::from_secs(10), |m| {
        m["body"] == "still here 1"
    });

    // A 12 MiB stanza: cut off at the 256 KiB limit, never buffered whole.
    let mut big = b"<message to='bob@hearth.test'><body>".to_vec();
    big.resize(12 * 1024 * 1024, b'a');
    assert_stream_error(&attack(&server, "", &big), "policy-violation");
    // 10,000-deep nesting.
    let deep = "<a>".repeat(10_000);
    assert_stream_error(&attack(&server, "", deep.as_bytes()), "policy-violation");
    // Thousands of attributes.
    let attrs: String = (0..5000).map(|i| format!(" a{i}='x'")).collect();
    assert_stream_error(
        &attack(&server, "", format!("<message{attrs}/>").as_bytes()),
        "policy-violation",
    );

    alice.message(&format!("bob@{DOMAIN}"), "still here 2");
    bob.expect_event("message", Duration::from_secs(10), |m| {
        m["body"] == "still here 2"
    });

    // A client that trickles one byte a second during negotiation is dropped at the deadline.
    let started = Instant::now();
    let mut slow = tls_connect(server.direct_port, DOMAIN, &server.cert_path);
    let mut closed = false;
    for b in header(DOMAIN).bytes() {
        if slow.write_all(&[b]).is_err() {
            closed = true;
            break;
        }
        let (_, eof) = read_until(&mut slow, "\u{0}", Duration::from_millis(1000));
        if eof {
            closed = true;
            break;
        }
    }
    assert!(
        closed,
        "a trickling client was still connected after {:?}",
        started.elapsed()
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );

    // After login, a stanza that trickles in is cut off too (the stanza deadline).
    let mut slow = tls_connect(server.direct_port, DOMAIN, &server.cert_path);
    login_plain(&mut slow, DOMAIN, "alice", "alice-password");
    let started = Instant::now();
    let mut got = String::new();
    for b in b"<message to='bob@hearth.test'><body>slow"
        .iter()
        .cycle()
        .take(60)
    {
        if slow.write_all(&[*b]).is_err() {
            break;
        }
        let (s, eof) = read_until(&mut slow, "</stream:stream>", Duration::from_millis(1000));
        got.push_str(&s);
        if eof || got.contains("</stream:stream>") {
            break;
        }
    }
    assert!(
        got.contains("policy-violation"),
        "trickled stanza: {got:?} after {:?}",
        started.elapsed()
    );

    alice.message(&format!("bob@{DOMAIN}"), "still here 3");
    bob.expect_event("message", Duration::from_secs(10), |m| {
        m["body"] == "still here 3"
    });
    assert!(
        server.log().contains("restricted XML"),
        "the log explains what happened"
    );
}
