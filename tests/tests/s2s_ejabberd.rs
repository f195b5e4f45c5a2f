//! Federation with ejabberd (Debian's), in a network namespace of its own as for Prosody
//! (`s2s_prosody.rs`): `ejabberd.test` on 127.0.0.3, names from Knot DNS with SRV records, every
//! certificate from a test CA. hana is on Hearth, erin on ejabberd; both real slixmpp clients.

use hearth_e2e::agent::Agent;
use hearth_e2e::federation::{self, TestCa, EJABBERD_IP};
use hearth_e2e::server::TestServer;

fn run(ejabberd_trusts_ca: bool) -> String {
    let dir = tempfile::tempdir().unwrap();
    let _dns = federation::start_dns(dir.path());
    let ca = TestCa::new();
    let ej_dir = dir.path().join("ejabberd");
    std::fs::create_dir_all(&ej_dir).unwrap();
    let ejabberd = federation::start_ejabberd(
        &ej_dir,
        &ca,
        ejabberd_trusts_ca,
        &[("erin", "erin-password")],
    );
    let (cert, key) = ca.issue("hearth.test", true);
    let config = format!(
        "[s2s]\nlisten = [\"127.0.0.1:5269\"]\nlisten_direct_tls = [\"127.0.0.1:5270\"]\n\
         ca_file = {:?}\nconnect_timeout_secs = 15\n",
        ca.ca_path()
    );
    let hearth = TestServer::start_with_cert(&config, Some((&cert, &key)));
    hearth.add_user("hana", "hana-password");
    let mut hana = Agent::spawn(
        "hana@hearth.test",
        "hana-password",
        hearth.c2s_port,
        &ca.ca_path(),
        &[],
    );
    hana.connect();
    hana.presence();
    let host = format!("--host={EJABBERD_IP}");
    let mut erin = Agent::spawn(
        "erin@ejabberd.test",
        "erin-password",
        5222,
        &ca.ca_path(),
        &[&host],
    );
    let r = erin.try_connect();
    assert_eq!(
        r["ok"],
        serde_json::json!(true),
        "erin cannot log in: {r}\n{}",
        ejabberd.log()
    );
    erin.presence();
    let logs = || {
        format!(
            "--- hearthd ---\n{}\n--- ejabberd ---\n{}",
            hearth.log(),
            ejabberd.log()
        )
    };
    federation::exchange(&mut hana, &mut erin, &logs);
    hearth.log()
}

#[test]
fn ejabberd_federates_with_certificates_both_ways() {
    if !federation::run_in_netns("ejabberd_federates_with_certificates_both_ways") {
        return;
    }
    let log = run(true);
    assert!(
        log.contains("hearth.test → ejabberd.test authenticated with our certificate"),
        "{log}"
    );
    assert!(
        log.contains("ejabberd.test authenticated by certificate (SASL EXTERNAL)"),
        "{log}"
    );
}

#[test]
fn ejabberd_without_our_ca_accepts_us_by_dialback() {
    if !federation::run_in_netns("ejabberd_without_our_ca_accepts_us_by_dialback") {
        return;
    }
    let log = run(false);
    assert!(
        log.contains("hearth.test → ejabberd.test authenticated by dialback"),
        "{log}"
    );
}
