//! Issue 14, acceptance 4 (on one server; the app server behind federation comes with s2s), with
//! real slixmpp clients: bob's phone enables XEP-0198 resumption and XEP-0357 push with an app
//! server (a slixmpp client of a local account answering the pubsub publishes); its network
//! dies, the session hibernates, and alice's message produces exactly one notification with the
//! summary form and bob's publish-options. None while bob is connected, none after he disabled
//! push, and an app server that answers with an error is not asked again.

use hearth_e2e::agent::Agent;
use hearth_e2e::flaky::FlakyLink;
use hearth_e2e::server::{TestServer, DOMAIN};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// How long the test listens for a notification that must not come.
const QUIET: Duration = Duration::from_secs(2);
const ARRIVES: Duration = Duration::from_secs(15);

fn agent(server: &TestServer, user: &str, resource: &str, port: u16) -> Agent {
    Agent::spawn(
        &format!("{user}@{DOMAIN}/{resource}"),
        &format!("{user}-password"),
        port,
        &server.cert_path,
        &[],
    )
}

/// Cuts bob's link and waits until the server has his session hibernating (the `n`th time).
fn lose_network(server: &TestServer, link: &FlakyLink, bob: &mut Agent, n: usize) {
    link.sever();
    let r = bob.cmd(json!({"cmd": "wait_disconnected"}));
    assert_eq!(r["ok"], json!(true), "{r}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let detached = || {
        server
            .log()
            .matches(&format!("bob@{DOMAIN}/phone detached"))
            .count()
    };
    while detached() < n {
        assert!(
            Instant::now() < deadline,
            "bob's session did not hibernate:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn come_back(bob: &mut Agent) {
    let r = bob.cmd(json!({"cmd": "resume"}));
    assert_eq!(r["how"], json!("resumed"), "{r}");
}

fn pushes(app: &mut Agent, wait: Duration) -> Vec<Value> {
    let mut got = Vec::new();
    while let Some(p) = app.wait_event("push", wait, |_| true) {
        got.push(p);
    }
    got
}

#[test]
fn a_hibernated_phone_gets_exactly_one_notification() {
    let started = Instant::now();
    let server = TestServer::start(
        "[modules.stream_management]\nhibernate_secs = 60\n[modules.push]\nmin_interval_secs = 0\n",
    );
    for u in ["alice", "bob", "app"] {
        server.add_user(u, &format!("{u}-password"));
    }
    let link = FlakyLink::to(server.c2s_port);
    let app_jid = format!("app@{DOMAIN}/srv");
    let bob_bare = format!("bob@{DOMAIN}");

    let mut app = agent(&server, "app", "srv", server.c2s_port);
    app.connect();
    assert_eq!(
        app.cmd(json!({"cmd": "push_app_server"}))["ok"],
        json!(true)
    );

    let mut bob = agent(&server, "bob", "phone", link.port);
    bob.cmd(json!({"cmd": "stream_management"}));
    bob.connect();
    assert_eq!(bob.cmd(json!({"cmd": "sm_state"}))["ok"], json!(true));
    bob.presence();
    let r = bob.cmd(
        json!({"cmd": "push_enable", "jid": app_jid, "node": "bob-phone",
        "options": {"secret": "s3cret", "endpoint": "https://push.example/x"}}),
    );
    assert_eq!(r["ok"], json!(true), "{r}");
    let r = bob.cmd(json!({"cmd": "push_enable", "jid": format!("{DOMAIN}"), "node": "x"}));
    assert_eq!(r["condition"], json!("not-acceptable"), "{r}");

    let mut alice = agent(&server, "alice", "laptop", server.c2s_port);
    alice.connect();
    alice.presence();

    // Connected and active: the message goes to the phone, the app server hears nothing.
    alice.message(&bob_bare, "while connected");
    bob.expect_event("message", ARRIVES, |m| m["body"] == "while connected");
    assert!(
        pushes(&mut app, QUIET).is_empty(),
        "no push while connected"
    );

    // The phone's network dies: one message, one notification.
    lose_network(&server, &link, &mut bob, 1);
    alice.message(&bob_bare, "are you there?");
    let p = app.expect_event("push", ARRIVES, |_| true);
    assert_eq!(p["from"], json!(bob_bare), "{p}");
    assert_eq!(p["node"], json!("bob-phone"), "{p}");
    let f = &p["fields"];
    assert_eq!(f["FORM_TYPE"], json!("urn:xmpp:push:summary"), "{p}");
    assert_eq!(f["message-count"], json!("1"), "{p}");
    assert_eq!(
        f["last-message-sender"],
        json!(format!("alice@{DOMAIN}")),
        "{p}"
    );
    assert!(
        f.get("last-message-body").is_none(),
        "no body by default: {p}"
    );
    assert_eq!(p["options"]["secret"], json!("s3cret"), "{p}");
    assert_eq!(
        p["options"]["FORM_TYPE"],
        json!("http://jabber.org/protocol/pubsub#publish-options")
    );
    assert!(
        pushes(&mut app, QUIET).is_empty(),
        "exactly one notification"
    );

    // The phone wakes and resumes: it gets the message, and while connected no more pushes.
    come_back(&mut bob);
    bob.expect_event("message", ARRIVES, |m| m["body"] == "are you there?");
    alice.message(&bob_bare, "welcome back");
    bob.expect_event("message", ARRIVES, |m| m["body"] == "welcome back");
    assert!(pushes(&mut app, QUIET).is_empty(), "no push after resuming");

    // Disabled: a hibernated phone is not notified.
    let r = bob.cmd(json!({"cmd": "push_disable", "jid": app_jid, "node": "bob-phone"}));
    assert_eq!(r["ok"], json!(true), "{r}");
    lose_network(&server, &link, &mut bob, 2);
    alice.message(&bob_bare, "nobody wakes you");
    assert!(pushes(&mut app, QUIET).is_empty(), "no push after disable");

    // Enabled again, but the app server has forgotten the device: its error disables the
    // registration, so the next message does not ask again.
    come_back(&mut bob);
    bob.expect_event("message", ARRIVES, |m| m["body"] == "nobody wakes you");
    let r = bob.cmd(json!({"cmd": "push_enable", "jid": app_jid, "node": "bob-phone"}));
    assert_eq!(r["ok"], json!(true), "{r}");
    app.cmd(json!({"cmd": "push_app_server",
        "error": {"type": "cancel", "condition": "item-not-found"}}));
    lose_network(&server, &link, &mut bob, 3);
    alice.message(&bob_bare, "first");
    let p = app.expect_event("push", ARRIVES, |_| true);
    assert_eq!(
        p["fields"]["message-count"],
        json!("1"),
        "counted afresh: {p}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server.log().contains("refused a notification") {
        assert!(Instant::now() < deadline, "not disabled:\n{}", server.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    alice.message(&bob_bare, "second");
    assert!(
        pushes(&mut app, QUIET).is_empty(),
        "no push after the error"
    );
    eprintln!("push e2e took {:?}", started.elapsed());
}
