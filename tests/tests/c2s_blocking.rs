//! Issue 10, acceptance 4, with real slixmpp clients: alice blocks bob (XEP-0191). His messages,
//! presence and IQs stop reaching her, hers stop reaching him, her other device is told, and
//! after she unblocks him everything flows again.

use hearth_e2e::agent::Agent;
use hearth_e2e::server::{TestServer, DOMAIN};
use serde_json::{json, Value};
use std::time::Duration;

const T: Duration = Duration::from_secs(15);
const QUIET: Duration = Duration::from_millis(1500);

fn device(server: &TestServer, user: &str, resource: &str) -> (Agent, String) {
    let mut a = Agent::spawn(
        &format!("{user}@{DOMAIN}/{resource}"),
        &format!("{user}-password"),
        server.c2s_port,
        &server.cert_path,
        &[],
    );
    let full = a.connect()["jid"].as_str().unwrap().to_string();
    a.cmd(json!({"cmd": "roster"}));
    (a, full)
}

fn from(p: &Value, prefix: &str) -> bool {
    p["from"].as_str().is_some_and(|f| f.starts_with(prefix))
}

#[test]
fn a_blocked_contact_is_cut_off_both_ways_until_unblocked() {
    let server = TestServer::start("");
    server.add_user("alice", "alice-password");
    server.add_user("bob", "bob-password");
    let (alice_jid, bob_jid) = (format!("alice@{DOMAIN}"), format!("bob@{DOMAIN}"));
    let (mut alice, alice_full) = device(&server, "alice", "phone");
    let (mut laptop, _) = device(&server, "alice", "laptop");
    let (mut bob, bob_full) = device(&server, "bob", "pc");
    for d in [&mut alice, &mut laptop, &mut bob] {
        d.presence();
    }
    let disco = alice.cmd(json!({"cmd": "disco"}));
    assert!(
        disco["features"]
            .as_array()
            .unwrap()
            .contains(&json!("urn:xmpp:blocking")),
        "{disco}"
    );

    // Friends first, so presence flows.
    alice.cmd(json!({"cmd": "subscribe", "to": bob_jid}));
    bob.expect_event("presence", T, |p| p["type"] == "subscribe");
    bob.cmd(json!({"cmd": "authorize", "to": alice_jid}));
    bob.cmd(json!({"cmd": "subscribe", "to": alice_jid}));
    alice.expect_event("presence", T, |p| p["type"] == "subscribe");
    alice.cmd(json!({"cmd": "authorize", "to": bob_jid}));
    alice.expect_event("presence", T, |p| {
        p["type"] == "available" && from(p, &bob_jid)
    });
    bob.expect_event("presence", T, |p| {
        p["type"] == "available" && from(p, &alice_jid)
    });

    let r = alice.cmd(json!({"cmd": "block", "jids": [bob_jid]}));
    assert_eq!(r["ok"], json!(true), "{r}");
    let push = laptop.expect_event("block_push", T, |p| p["kind"] == "block");
    assert_eq!(push["jids"], json!([bob_jid]), "{push}");
    let list = laptop.cmd(json!({"cmd": "blocklist"}));
    assert_eq!(list["jids"], json!([bob_jid]), "{list}");
    bob.expect_event("presence", T, |p| {
        p["type"] == "unavailable" && from(p, &alice_full)
    });
    alice.expect_event("presence", T, |p| {
        p["type"] == "unavailable" && from(p, &bob_full)
    });

    // Messages, both ways.
    bob.message(&alice_jid, "let me in");
    let e = bob.expect_event("message", T, |m| m["type"] == "error");
    assert_eq!(e["error"], json!("service-unavailable"), "{e}");
    alice.message(&bob_jid, "oops");
    let e = alice.expect_event("message", T, |m| m["type"] == "error");
    assert_eq!(e["error"], json!("not-acceptable"), "{e}");
    // IQs, both ways.
    let r = bob.cmd(json!({"cmd": "ping", "to": alice_full}));
    assert_eq!(r["condition"], json!("service-unavailable"), "{r}");
    let r = alice.cmd(json!({"cmd": "ping", "to": bob_full}));
    assert_eq!(r["condition"], json!("not-acceptable"), "{r}");
    // Presence, both ways.
    bob.cmd(json!({"cmd": "presence", "status": "bob while blocked"}));
    alice.cmd(json!({"cmd": "presence", "status": "alice while blocking"}));
    assert!(alice
        .wait_event("presence", QUIET, |p| p["status"] == "bob while blocked")
        .is_none());
    assert!(bob
        .wait_event("presence", QUIET, |p| p["status"] == "alice while blocking")
        .is_none());
    assert!(
        !alice
            .seen("message")
            .iter()
            .any(|m| m["body"] == "let me in"),
        "a blocked message arrived"
    );

    // Unblock: all of it again.
    let r = alice.cmd(json!({"cmd": "unblock", "jids": [bob_jid]}));
    assert_eq!(r["ok"], json!(true), "{r}");
    laptop.expect_event("block_push", T, |p| p["kind"] == "unblock");
    bob.expect_event("presence", T, |p| {
        p["type"] == "available" && from(p, &alice_full)
    });
    alice.expect_event("presence", T, |p| {
        p["type"] == "available" && from(p, &bob_full)
    });
    bob.message(&alice_jid, "hello again");
    alice.expect_event("message", T, |m| m["body"] == "hello again");
    alice.message(&bob_jid, "welcome back");
    bob.expect_event("message", T, |m| m["body"] == "welcome back");
    let r = bob.cmd(json!({"cmd": "ping", "to": alice_full}));
    assert_eq!(r["ok"], json!(true), "{r}");
    let r = alice.cmd(json!({"cmd": "ping", "to": bob_full}));
    assert_eq!(r["ok"], json!(true), "{r}");
}
