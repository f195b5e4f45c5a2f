//! Acceptance 2 of issue 4: with a short-lived certificate the timer's plain `renew` (no --force)
//! renews by itself once a third of the lifetime is left, tells hearthd over its control socket,
//! new connections get the new certificate (another serial), and XMPP sessions opened before the
//! renewal keep chatting.

use hearth_e2e::agent::Agent;
use hearth_e2e::pebble::{hearth_acme_bin, Pebble, PebbleOptions, RunOutput};
use hearth_e2e::raw::{peer_serial, tls_connect};
use hearth_e2e::server::{TestServer, DOMAIN};
use std::process::Command;
use std::time::{Duration, Instant};

/// Pebble issues certificates for this long: renewal is due about 40 s after issuance.
const LIFETIME_SECS: u64 = 60;

fn acme(server: &TestServer, args: &[&str]) -> RunOutput {
    let out = Command::new(hearth_acme_bin())
        .arg("--config")
        .arg(&server.config_path)
        .args(args)
        .env_remove("JOURNAL_STREAM")
        .output()
        .expect("run hearth-acme");
    RunOutput {
        success: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn a_short_lived_certificate_is_renewed_and_served_while_sessions_stay_up() {
    let pebble = Pebble::start(PebbleOptions {
        cert_validity_secs: Some(LIFETIME_SECS),
        ..Default::default()
    })
    .unwrap();
    let server = TestServer::start(&format!(
        "{}\n[acme.dns]\nprovider = \"challtestsrv\"\nurl = \"{}\"\n",
        pebble.acme_toml("dns-01"),
        pebble.challtestsrv_url
    ));
    let root = server.dir.path().join("pebble-root.pem");
    std::fs::write(&root, pebble.root_pem().unwrap()).unwrap();

    // The box starts with the self-signed pair; the first run replaces it with a CA certificate.
    let out = acme(&server, &["renew"]);
    assert!(
        out.success,
        "first issuance failed: {out:?}\n{}",
        pebble.logs()
    );
    assert!(
        out.stdout.contains("hearthd now serves it"),
        "{out:?}\n{}",
        server.log()
    );
    let first = peer_serial(&mut tls_connect(server.direct_port, DOMAIN, &root));

    server.add_user("alice", "alice-password");
    server.add_user("bob", "bob-password");
    let mut alice = Agent::spawn(
        &format!("alice@{DOMAIN}"),
        "alice-password",
        server.c2s_port,
        &root,
        &[],
    );
    alice.connect();
    alice.presence();
    let mut bob = Agent::spawn(
        &format!("bob@{DOMAIN}"),
        "bob-password",
        server.direct_port,
        &root,
        &["--direct-tls"],
    );
    bob.connect();
    bob.presence();

    // What the timer does: run `renew` until the policy finds it due (a third of 60 s left).
    let deadline = Instant::now() + Duration::from_secs(3 * LIFETIME_SECS);
    let renewed = loop {
        let out = acme(&server, &["renew"]);
        assert!(out.success, "renew failed: {out:?}\n{}", pebble.logs());
        if out.stdout.starts_with("Installed a new certificate") {
            break out;
        }
        assert!(out.stdout.starts_with("Nothing to do"), "{out:?}");
        assert!(Instant::now() < deadline, "never became due: {out:?}");
        std::thread::sleep(Duration::from_secs(2));
    };
    assert!(
        renewed.stdout.contains("hearthd now serves it"),
        "{renewed:?}\n{}",
        server.log()
    );

    let second = peer_serial(&mut tls_connect(server.direct_port, DOMAIN, &root));
    assert_ne!(
        first, second,
        "new connections still get the old certificate"
    );

    // Both sessions, one STARTTLS and one direct TLS, were opened before the renewal.
    alice.message(
        &format!("bob@{DOMAIN}"),
        "same session, renewed certificate",
    );
    bob.expect_event("message", Duration::from_secs(10), |m| {
        m["body"] == "same session, renewed certificate"
    });
    bob.message(&format!("alice@{DOMAIN}"), "still here");
    alice.expect_event("message", Duration::from_secs(10), |m| {
        m["body"] == "still here"
    });
}
