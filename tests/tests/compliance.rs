//! XEP-0479 compliance: `tests/peers/compliance.py` (our own probe, a real client on the wire) checks every
//! Advanced Server requirement of the Core, IM and Mobile suites (and the A/V suite's XEP-0215) against a running hearthd and prints one
//! line per requirement. The table goes to `target/compliance-hearthd.txt` (scripts/test.sh prints it); this
//! test fails when a requirement that hearthd implements stops passing.

use hearth_e2e::agent::{peer_script, venv_python};
use hearth_e2e::server::{free_port, TestServer, DOMAIN};
use serde_json::Value;
use std::path::Path;
use std::process::Command;

/// The rows hearthd passes today. Add a row here in the commit that makes it pass.
const MUST_PASS: &[&str] = &[
    "rfc6120",
    "rfc7590",
    "xep0368",
    "xep0030",
    "xep0115",
    "rfc6121",
    "xep0054",
    "xep0280",
    "xep0191",
    "xep0198",
    "xep0313",
    "xep0352",
    "xep0163",
    "xep0223",
    "xep0049",
    "xep0402",
    "xep0114",
    "xep0357",
    "xep0398",
    "xep0045",
    "xep0410",
    "xep0313muc",
    "xep0363",
    "xep0215",
];

#[test]
fn xep0479_advanced_server_im_mobile() {
    let component_port = free_port();
    // Calls: a TURN secret as the image makes one (no TURN server needs to run for the probe).
    let turn = tempfile::tempdir().expect("tempdir");
    let secret = turn.path().join("turn-secret");
    std::fs::write(&secret, "compliance-turn-secret\n").expect("write secret");
    let server = TestServer::start(&format!(
        "[modules.component]\nlisten = [\"127.0.0.1:{component_port}\"]\n\
         [modules.external_services]\nsecret_file = {secret:?}\n"
    ));
    server.add_user("alice", "alice-compliance-pw");
    server.add_user("bob", "bob-compliance-pw");
    let out = Command::new(venv_python())
        .arg(peer_script("compliance.py"))
        .args(["--json", "--host=127.0.0.1", &format!("--domain={DOMAIN}")])
        .arg(format!("--port={}", server.c2s_port))
        .arg(format!("--direct-tls-port={}", server.direct_port))
        .arg(format!("--component-port={component_port}"))
        .args(["--user=alice", "--password=alice-compliance-pw"])
        .args(["--user2=bob"])
        .arg("--ca-file")
        .arg(&server.cert_path)
        .output()
        .expect("run compliance.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "compliance.py failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad row {l:?}: {e}")))
        .collect();
    assert!(rows.len() >= 20, "too few rows: {stdout}");
    let mut table = String::new();
    let mut met = 0;
    for r in &rows {
        let ok = r["pass"].as_bool().unwrap_or(false);
        met += ok as usize;
        table.push_str(&format!(
            "{}  {:<9} {:<20} {} — {}\n",
            if ok { "PASS" } else { "FAIL" },
            r["suite"].as_str().unwrap_or(""),
            r["provider"].as_str().unwrap_or(""),
            r["title"].as_str().unwrap_or(""),
            r["detail"].as_str().unwrap_or("")
        ));
    }
    table.push_str(&format!(
        "hearthd meets {met} of {} XEP-0479 Advanced Server (Core, IM, Mobile) requirements\n",
        rows.len()
    ));
    println!("{table}");
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/compliance-hearthd.txt");
    std::fs::write(&target, &table).expect("write the compliance table");
    for id in MUST_PASS {
        let row = rows
            .iter()
            .find(|r| r["id"] == *id)
            .unwrap_or_else(|| panic!("no row {id} in:\n{table}"));
        assert_eq!(
            row["pass"],
            true,
            "{id} used to pass and now fails:\n{table}\nserver log:\n{}",
            server.log()
        );
    }
}
