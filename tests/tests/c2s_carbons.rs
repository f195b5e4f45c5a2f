//! Issue 10, acceptance 1, as a user story with real slixmpp clients: alice has a phone and a
//! laptop, both with Message Carbons (XEP-0280) on. What bob writes reaches both devices; what
//! alice writes from her phone shows up on her laptop as a sent carbon; a `<private/>` message
//! stays on the device it was written on.

use hearth_e2e::agent::Agent;
use hearth_e2e::server::{TestServer, DOMAIN};
use serde_json::json;
use std::time::Duration;

const T: Duration = Duration::from_secs(15);

fn device(server: &TestServer, user: &str, resource: &str) -> Agent {
    let mut a = Agent::spawn(
        &format!("{user}@{DOMAIN}/{resource}"),
        &format!("{user}-password"),
        server.c2s_port,
        &server.cert_path,
        &[],
    );
    a.connect();
    a
}

#[test]
fn alices_phone_and_laptop_see_the_whole_conversation() {
    let server = TestServer::start("");
    server.add_user("alice", "alice-password");
    server.add_user("bob", "bob-password");
    let (alice, bob_jid) = (format!("alice@{DOMAIN}"), format!("bob@{DOMAIN}"));

    let mut phone = device(&server, "alice", "phone");
    let mut laptop = device(&server, "alice", "laptop");
    let mut bob = device(&server, "bob", "pc");
    for d in [&mut phone, &mut laptop] {
        let r = d.cmd(json!({"cmd": "carbons"}));
        assert_eq!(r["ok"], json!(true), "enabling carbons: {r}");
    }
    let disco = phone.cmd(json!({"cmd": "disco"}));
    assert!(
        disco["features"]
            .as_array()
            .unwrap()
            .contains(&json!("urn:xmpp:carbons:2")),
        "{disco}"
    );
    for d in [&mut phone, &mut laptop, &mut bob] {
        d.presence();
    }
    // Both devices are available (each sees the other) before bob writes, so the delivery rules
    // pick both for messages to alice's bare JID.
    for d in [&mut phone, &mut laptop] {
        for res in ["phone", "laptop"] {
            let full = format!("{alice}/{res}");
            d.expect_event("presence", T, |p| {
                p["type"] == "available" && p["from"] == json!(full)
            });
        }
    }

    // To alice's bare JID: both devices (same priority) get the message itself.
    bob.message(&alice, "hi alice");
    for d in [&mut phone, &mut laptop] {
        d.expect_event("message", T, |m| m["body"] == "hi alice");
    }
    // To the phone only: the laptop gets a received carbon of it.
    bob.message(&format!("{alice}/phone"), "to your phone");
    phone.expect_event("message", T, |m| m["body"] == "to your phone");
    let c = laptop.expect_event("carbon", T, |c| c["body"] == "to your phone");
    assert_eq!(c["direction"], json!("received"), "{c}");
    assert!(c["from"].as_str().unwrap().starts_with(&bob_jid), "{c}");

    // alice answers from the phone: bob gets it, the laptop gets a sent carbon.
    phone.message(&bob_jid, "hello from my phone");
    bob.expect_event("message", T, |m| m["body"] == "hello from my phone");
    let c = laptop.expect_event("carbon", T, |c| c["body"] == "hello from my phone");
    assert_eq!(c["direction"], json!("sent"), "{c}");
    assert_eq!(c["to"], json!(bob_jid), "{c}");
    assert!(c["from"].as_str().unwrap().ends_with("/phone"), "{c}");

    // A private message is not copied; the ordinary one after it is (so the laptop was listening).
    phone.cmd(json!({"cmd": "message", "to": bob_jid, "body": "just between us", "private": true}));
    phone.message(&bob_jid, "back in the open");
    bob.expect_event("message", T, |m| m["body"] == "just between us");
    laptop.expect_event("carbon", T, |c| c["body"] == "back in the open");
    let leaked: Vec<_> = laptop
        .seen("carbon")
        .into_iter()
        .filter(|c| c["body"] == "just between us")
        .collect();
    assert!(
        leaked.is_empty(),
        "a private message was copied: {leaked:?}"
    );
    // Nor does the phone get copies of its own messages.
    assert!(
        phone.seen("carbon").is_empty(),
        "{:?}",
        phone.seen("carbon")
    );

    // With carbons off, the laptop hears nothing of the phone's conversation.
    let r = laptop.cmd(json!({"cmd": "carbons", "enable": false}));
    assert_eq!(r["ok"], json!(true), "{r}");
    bob.message(&format!("{alice}/phone"), "laptop is not listening");
    phone.expect_event("message", T, |m| m["body"] == "laptop is not listening");
    assert!(laptop
        .wait_event("carbon", Duration::from_secs(1), |c| c["body"]
            == "laptop is not listening")
        .is_none());
    drop(server);
}
