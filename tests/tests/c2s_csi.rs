//! Issue 10, acceptance 5, as a user story with real slixmpp clients: alice's phone goes in her
//! pocket and says `<inactive/>` (XEP-0352). Her friends bob and carol fiddle with their status
//! 50 times between them; the phone hears none of it until alice takes it out (`<active/>`), and
//! then only each friend's latest status. A chat message reaches the pocketed phone at once.

use hearth_e2e::agent::Agent;
use hearth_e2e::server::{TestServer, DOMAIN};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(15);
const CSI: &str = "urn:xmpp:csi:0";

/// alice and `friend` subscribe to each other; both are online afterwards.
fn befriend(alice: &mut Agent, friend: &mut Agent, friend_jid: &str) {
    let alice_jid = format!("alice@{DOMAIN}");
    alice.cmd(json!({"cmd": "subscribe", "to": friend_jid}));
    friend.expect_event("presence", T, |p| {
        p["type"] == "subscribe" && p["from"] == json!(alice_jid)
    });
    friend.cmd(json!({"cmd": "authorize", "to": alice_jid}));
    friend.cmd(json!({"cmd": "subscribe", "to": alice_jid}));
    alice.expect_event("presence", T, |p| {
        p["type"] == "subscribe" && p["from"] == json!(friend_jid)
    });
    alice.cmd(json!({"cmd": "authorize", "to": friend_jid}));
    alice.expect_event("presence", T, |p| {
        p["type"] == "available" && p["from"].as_str().unwrap().starts_with(friend_jid)
    });
}

/// Sends a CSI nonza, then a ping to the server: its answer shows the nonza was handled.
fn set_state(server: &TestServer, agent: &mut Agent, state: &str) {
    let r = agent.cmd(json!({"cmd": "raw", "xml": format!("<{state} xmlns='{CSI}'/>")}));
    assert_eq!(r["ok"], json!(true), "{r}");
    let r = agent.cmd(json!({"cmd": "ping"}));
    assert_eq!(
        r["ok"],
        json!(true),
        "ping after <{state}/>: {r}\n{}",
        server.log()
    );
}

/// Keeps what the agent receives during `wait` (for `seen`).
fn listen(agent: &mut Agent, wait: Duration) {
    let end = Instant::now() + wait;
    while Instant::now() < end {
        let _ = agent.wait_event("nothing", Duration::from_millis(100), |_| false);
    }
}

fn from_friend(p: &Value, friend: &str) -> bool {
    p["from"].as_str().is_some_and(|f| f.starts_with(friend))
}

#[test]
fn a_pocketed_phone_hears_the_latest_status_later_and_messages_at_once() {
    let server = TestServer::start("");
    for u in ["alice", "bob", "carol"] {
        server.add_user(u, &format!("{u}-password"));
    }
    let (bob_jid, carol_jid) = (format!("bob@{DOMAIN}"), format!("carol@{DOMAIN}"));
    let mut phone = server.agent("alice", "alice-password");
    phone.connect();
    phone.cmd(json!({"cmd": "roster"}));
    phone.presence();
    let mut friends = Vec::new();
    for (name, jid) in [("bob", &bob_jid), ("carol", &carol_jid)] {
        let mut f = server.agent(name, &format!("{name}-password"));
        f.connect();
        f.cmd(json!({"cmd": "roster"}));
        f.presence();
        befriend(&mut phone, &mut f, jid);
        friends.push((f, jid.clone()));
    }
    // Anything the subscriptions set off has arrived; only what follows counts.
    let _ = phone.bodies(Duration::from_millis(500));
    let before = phone.seen("presence").len();

    // The phone goes into the pocket; the friends change status 25 times each, interleaved.
    set_state(&server, &mut phone, "inactive");
    for i in 0..25 {
        for (f, _) in friends.iter_mut() {
            f.cmd(json!({"cmd": "presence", "status": format!("status {i}")}));
        }
    }
    for (f, _) in friends.iter_mut() {
        // The server has routed everything each friend sent before the answer to this.
        assert_eq!(f.cmd(json!({"cmd": "ping"}))["ok"], json!(true));
    }
    listen(&mut phone, Duration::from_secs(1));
    let leaked: Vec<_> = phone.seen("presence").split_off(before);
    assert!(
        leaked.is_empty(),
        "presence reached the inactive phone: {leaked:?}"
    );

    // Out of the pocket: one presence per friend, the latest.
    set_state(&server, &mut phone, "active");
    listen(&mut phone, Duration::from_secs(2));
    let seen = phone.seen("presence").split_off(before);
    for jid in [&bob_jid, &carol_jid] {
        let theirs: Vec<_> = seen.iter().filter(|p| from_friend(p, jid)).collect();
        assert_eq!(theirs.len(), 1, "presences from {jid}: {theirs:?}");
        assert_eq!(theirs[0]["status"], json!("status 24"), "{theirs:?}");
    }

    // Back in the pocket: bob writes, and the phone gets it at once, not on <active/>.
    set_state(&server, &mut phone, "inactive");
    let (bob, _) = &mut friends[0];
    let sent = Instant::now();
    bob.message(&format!("alice@{DOMAIN}"), "lunch at one?");
    phone.expect_event("message", Duration::from_secs(5), |m| {
        m["body"] == "lunch at one?"
    });
    eprintln!(
        "message reached the inactive phone after {:?}",
        sent.elapsed()
    );
    drop(server);
}
