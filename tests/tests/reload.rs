//! Acceptance 6: SIGHUP with a new certificate. New connections see the new certificate; a
//! session that was already open keeps chatting.

use hearth_e2e::raw::{peer_serial, tls_connect, tls_connect_trusting};
use hearth_e2e::server::{write_cert, TestServer, DOMAIN};
use std::time::{Duration, Instant};

#[test]
fn sighup_swaps_the_certificate_without_dropping_sessions() {
    let server = TestServer::start("");
    server.add_user("alice", "alice-password");
    server.add_user("bob", "bob-password");
    let mut alice = server.agent("alice", "alice-password");
    alice.connect();
    alice.presence();
    let mut bob = server.agent("bob", "bob-password");
    bob.connect();
    bob.presence();

    let before = peer_serial(&mut tls_connect(
        server.direct_port,
        DOMAIN,
        &server.cert_path,
    ));
    let old_pem = std::fs::read_to_string(&server.cert_path).unwrap();
    write_cert(&server.cert_path, &server.key_path);
    // Until the signal is handled the server still shows the old certificate: trust both.
    let both = old_pem + &std::fs::read_to_string(&server.cert_path).unwrap();
    server.sighup();
    let deadline = Instant::now() + Duration::from_secs(10);
    let after = loop {
        let serial = peer_serial(&mut tls_connect_trusting(server.direct_port, DOMAIN, &both));
        if serial != before || Instant::now() > deadline {
            break serial;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_ne!(
        before, after,
        "new connections still get the old certificate"
    );

    // The sessions opened before the reload are still there.
    alice.message(&format!("bob@{DOMAIN}"), "same session, new certificate");
    bob.expect_event("message", Duration::from_secs(10), |m| {
        m["body"] == "same session, new certificate"
    });
    assert!(server.log().contains("certificate reloaded"));

    // A broken certificate file is refused and the old one stays in use.
    std::fs::write(&server.cert_path, "not a certificate").unwrap();
    server.sighup();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        server.log().contains("keeping the old certificate"),
        "{}",
        server.log()
    );
    write_cert(&server.cert_path, &server.key_path);
    bob.message(&format!("alice@{DOMAIN}"), "still fine");
    alice.expect_event("message", Duration::from_secs(10), |m| {
        m["body"] == "still fine"
    });
}
