//! Federation with Prosody (Debian's), each test in a network namespace of its own where
//! `hearth.test` (127.0.0.1), `prosody.test` (127.0.0.2) resolve through a Knot DNS server
//! with SRV records, and a test CA issued every certificate.
//!
//! hana is on Hearth, paul on Prosody; both are real slixmpp clients.

use hearth_e2e::federation::{self, ProsodyRig as Rig};
use serde_json::json;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

/// The shared exchange (messages, IQs, presence subscriptions both ways), then an address
/// Prosody does not serve, which comes back as an error from it.
fn exchange(rig: &Rig) {
    let mut hana = rig.hana();
    let mut paul = rig.paul();
    let logs = || rig.logs();
    federation::exchange(&mut hana, &mut paul, &logs);
    hana.cmd(json!({"cmd": "watch_errors"}));
    hana.message("nobody@prosody.test", "anyone?");
    let bounced = hana.wait_event("message_error", T, |m| m["from"] == "nobody@prosody.test");
    assert!(bounced.is_some(), "no error came back\n{}", rig.logs());
}

#[test]
fn prosody_federates_with_certificates_both_ways() {
    if !federation::run_in_netns("prosody_federates_with_certificates_both_ways") {
        return;
    }
    let rig = Rig::start(true, "");
    exchange(&rig);
    let log = rig.hearth.log();
    assert!(
        log.contains("hearth.test → prosody.test authenticated with our certificate"),
        "{}",
        rig.logs()
    );
    assert!(
        log.contains("prosody.test authenticated by certificate (SASL EXTERNAL)"),
        "{}",
        rig.logs()
    );
    assert!(!log.contains("by dialback"), "{}", rig.logs());

    // A domain DNS does not know bounces quickly (SRV and A lookups answered NXDOMAIN).
    let mut hana = rig.hana();
    let mut paul = rig.paul();
    let t0 = std::time::Instant::now();
    hana.message("someone@unreachable.test", "hello?");
    let e = hana.expect_event("message", T, |m| {
        m["type"] == "error" && m["from"] == "someone@unreachable.test"
    });
    assert_eq!(e["error"], json!("remote-server-not-found"), "{e}");
    assert!(t0.elapsed() < T, "{:?}", t0.elapsed());

    // Made "local only", hana cannot write to Prosody (and is told why), but hears from it.
    let out = rig
        .hearth
        .hearthctl(&["user", "local-only", "hana", "on"], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    hana.message("paul@prosody.test", "are you there?");
    let e = hana.expect_event("message", T, |m| {
        m["type"] == "error" && m["from"] == "paul@prosody.test"
    });
    assert_eq!(e["error"], json!("not-allowed"), "{e}");
    paul.message("hana@hearth.test", "still here for you");
    hana.expect_event("message", T, |m| m["body"] == "still here for you");
    assert!(paul
        .bodies(std::time::Duration::from_secs(1))
        .iter()
        .all(|b| b != "are you there?"));
}

#[test]
fn prosody_without_our_ca_accepts_us_by_dialback() {
    if !federation::run_in_netns("prosody_without_our_ca_accepts_us_by_dialback") {
        return;
    }
    let rig = Rig::start(false, "");
    exchange(&rig);
    let log = rig.hearth.log();
    assert!(
        log.contains("hearth.test → prosody.test authenticated by dialback"),
        "{}",
        rig.logs()
    );
}

#[test]
fn prosody_by_static_route_over_direct_tls() {
    if !federation::run_in_netns("prosody_by_static_route_over_direct_tls") {
        return;
    }
    // No DNS for this one: the route names Prosody's direct TLS port (XEP-0368).
    let rig = Rig::start(
        true,
        "[s2s.routes]\n\"prosody.test\" = \"tls:127.0.0.2:5270\"\n",
    );
    let mut hana = rig.hana();
    let mut paul = rig.paul();
    hana.message("paul@prosody.test", "straight to TLS");
    let m = paul.wait_event("message", T, |m| m["body"] == "straight to TLS");
    assert!(m.is_some(), "{}", rig.logs());
    let log = rig.hearth.log();
    assert!(
        !log.contains("_xmpp-server._tcp.prosody.test"),
        "{}",
        rig.logs()
    );
    assert!(
        log.contains("hearth.test → prosody.test: secured with 127.0.0.2:5270 (direct TLS)"),
        "{}",
        rig.logs()
    );
}
