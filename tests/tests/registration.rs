//! Acceptance 3: in-band registration per policy — `closed` refuses, `invite` accepts only a
//! valid token and uses it up, `open` accepts.

use hearth_e2e::agent::Agent;
use hearth_e2e::server::{TestServer, DOMAIN};
use serde_json::{json, Value};
use std::time::Duration;

fn register(server: &TestServer, user: &str, token: Option<&str>) -> (Value, Agent) {
    // `--token=VALUE`: a token may start with '-' (base64url), which argparse would take for an option.
    let token_arg = token.map(|t| format!("--token={t}"));
    let mut args = vec!["--register"];
    args.extend(token_arg.as_deref());
    let mut agent = Agent::spawn(
        &format!("{user}@{DOMAIN}"),
        "a-new-password",
        server.c2s_port,
        &server.cert_path,
        &args,
    );
    let r = agent.try_connect();
    (r, agent)
}

fn invite(server: &TestServer, uses: &str) -> String {
    let out = server.hearthctl(
        &[
            "--json",
            "invite",
            "create",
            "--uses",
            uses,
            "--expires",
            "1h",
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        v["uri"]
            .as_str()
            .unwrap()
            .starts_with(&format!("xmpp:{DOMAIN}?register;preauth=")),
        "{v}"
    );
    v["token"].as_str().unwrap().to_string()
}

#[test]
fn closed_policy_refuses() {
    let server = TestServer::start("[registration]\npolicy = \"closed\"\n");
    let (r, _a) = register(&server, "carol", None);
    assert_eq!(r["ok"], json!(false), "{r}");
    let users = server.hearthctl(&["user", "list"], None);
    assert!(!String::from_utf8_lossy(&users.stdout).contains("carol"));
}

#[test]
fn invite_policy_needs_a_valid_token_and_uses_it_up() {
    let server = TestServer::start("[registration]\npolicy = \"invite\"\n");
    let (r, _a) = register(&server, "nobody", None);
    assert_eq!(r["condition"], json!("forbidden"), "no token: {r}");
    let (r, _a) = register(&server, "nobody", Some("not-a-real-token"));
    assert_eq!(r["ok"], json!(false), "bad token: {r}");

    let token = invite(&server, "1");
    let (r, mut dave) = register(&server, "dave", Some(&token));
    assert_eq!(r["ok"], json!(true), "valid token: {r}");
    dave.expect_event("registered", Duration::from_secs(5), |_| true);
    // The token is used up.
    let (r, _a) = register(&server, "erin", Some(&token));
    assert_eq!(r["ok"], json!(false), "second use: {r}");
    // dave's account works on its own.
    drop(dave);
    let mut dave = server.agent("dave", "a-new-password");
    dave.connect();
    let list = server.hearthctl(&["invite", "list"], None);
    assert!(
        String::from_utf8_lossy(&list.stdout).contains("0 of 1 uses left"),
        "{}",
        String::from_utf8_lossy(&list.stdout)
    );
}

#[test]
fn revoked_invite_is_refused_and_multi_use_invite_counts_down() {
    let server = TestServer::start("");
    let token = invite(&server, "2");
    let (r, _a) = register(&server, "frank", Some(&token));
    assert_eq!(r["ok"], json!(true), "{r}");
    let (r, _a) = register(&server, "frank", Some(&token));
    assert_eq!(r["condition"], json!("conflict"), "taken name: {r}");
    let (r, _a) = register(&server, "grace", Some(&token));
    assert_eq!(r["ok"], json!(true), "{r}");
    let (r, _a) = register(&server, "heidi", Some(&token));
    assert_eq!(r["ok"], json!(false), "{r}");

    let token = invite(&server, "1");
    let out = server.hearthctl(&["--json", "invite", "list"], None);
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = list.as_array().unwrap().last().unwrap()["id"]
        .as_i64()
        .unwrap();
    assert!(server
        .hearthctl(&["invite", "revoke", &id.to_string()], None)
        .status
        .success());
    let (r, _a) = register(&server, "ivan", Some(&token));
    assert_eq!(r["ok"], json!(false), "revoked: {r}");
}

#[test]
fn open_policy_accepts() {
    let server = TestServer::start("[registration]\npolicy = \"open\"\n");
    let (r, _a) = register(&server, "judy", None);
    assert_eq!(r["ok"], json!(true), "{r}");
}
