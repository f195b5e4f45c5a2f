//! Issue 11 with real slixmpp clients: personal eventing (XEP-0163) as OMEMO uses it. OMEMO
//! device lists and bundles (both `eu.siacs.conversations.axolotl` and `urn:xmpp:omemo:2`)
//! published with open access and fetched by a stranger; access models and publish-options
//! preconditions; notifications only to clients whose caps ask for the node (+notify), and the
//! newest item when such a client comes online; two slixmpp-omemo clients (three devices)
//! exchanging OMEMO messages.

use hearth_e2e::agent::Agent;
use hearth_e2e::server::{TestServer, DOMAIN};
use serde_json::{json, Value};
use std::time::Duration;

const T: Duration = Duration::from_secs(15);
const LEGACY_DEVICES: &str = "eu.siacs.conversations.axolotl.devicelist";
const DEVICES: &str = "urn:xmpp:omemo:2:devices";
const AVATAR: &str = "urn:xmpp:avatar:metadata";

fn device(server: &TestServer, user: &str, resource: &str, interest: &[&str]) -> Agent {
    let mut a = Agent::spawn(
        &format!("{user}@{DOMAIN}/{resource}"),
        &format!("{user}-password"),
        server.c2s_port,
        &server.cert_path,
        &[],
    );
    a.connect();
    let r = a.cmd(json!({"cmd": "pep_setup", "interest": interest}));
    assert_eq!(r["ok"], json!(true), "{r}");
    a.presence();
    a
}

fn publish(a: &mut Agent, node: &str, id: &str, xml: &str, options: Value) -> Value {
    a.cmd(json!({"cmd": "publish", "node": node, "item_id": id, "xml": xml, "options": options}))
}

fn items(a: &mut Agent, owner: &str, node: &str) -> Value {
    a.cmd(json!({"cmd": "items", "to": owner, "node": node}))
}

fn befriend(server_users: (&mut Agent, &str), other: (&mut Agent, &str)) {
    let (a, a_jid) = server_users;
    let (b, b_jid) = other;
    a.cmd(json!({"cmd": "subscribe", "to": b_jid}));
    b.expect_event("presence", T, |p| p["type"] == "subscribe");
    b.cmd(json!({"cmd": "authorize", "to": a_jid}));
    b.cmd(json!({"cmd": "subscribe", "to": a_jid}));
    a.expect_event("presence", T, |p| p["type"] == "subscribe");
    a.cmd(json!({"cmd": "authorize", "to": b_jid}));
    a.expect_event("presence", T, |p| {
        p["type"] == "available" && p["from"].as_str().unwrap().starts_with(b_jid)
    });
}

#[test]
fn omemo_device_lists_and_bundles_in_both_namespaces_are_published_and_fetched() {
    let server = TestServer::start("");
    server.add_user("alice", "alice-password");
    server.add_user("bob", "bob-password");
    let alice_jid = format!("alice@{DOMAIN}");
    let mut alice = device(&server, "alice", "phone", &[]);
    let mut bob = device(&server, "bob", "pc", &[]);

    let disco = alice.cmd(json!({"cmd": "disco", "to": alice_jid}));
    assert!(
        disco["features"]
            .as_array()
            .unwrap()
            .contains(&json!("http://jabber.org/protocol/pubsub#publish-options")),
        "{disco}"
    );
    let open = json!({"pubsub#access_model": "open", "pubsub#max_items": "max"});
    let nodes = [
        (LEGACY_DEVICES, "current",
         "<list xmlns='eu.siacs.conversations.axolotl'><device id='1234'/></list>"),
        ("eu.siacs.conversations.axolotl.bundles:1234", "current",
         "<bundle xmlns='eu.siacs.conversations.axolotl'><signedPreKeyPublic signedPreKeyId='1'>BQ==</signedPreKeyPublic><signedPreKeySignature>c2ln</signedPreKeySignature><identityKey>aWs=</identityKey><prekeys><preKeyPublic preKeyId='1'>cGs=</preKeyPublic></prekeys></bundle>"),
        (DEVICES, "current",
         "<devices xmlns='urn:xmpp:omemo:2'><device id='1234' label='phone'/></devices>"),
        ("urn:xmpp:omemo:2:bundles", "1234",
         "<bundle xmlns='urn:xmpp:omemo:2'><spk id='1'>c3Br</spk><spks>c2ln</spks><ik>aWs=</ik><prekeys><pk id='1'>cGs=</pk></prekeys></bundle>"),
    ];
    for (node, id, xml) in nodes {
        let r = publish(&mut alice, node, id, xml, open.clone());
        assert_eq!(r["ok"], json!(true), "publishing {node}: {r}");
        assert_eq!(r["item_id"], json!(id));
    }
    // bob is no contact of alice's: open access lets him read all four.
    for (node, id, xml) in nodes {
        let r = items(&mut bob, &alice_jid, node);
        assert_eq!(r["ok"], json!(true), "fetching {node}: {r}");
        let got = &r["items"].as_array().unwrap()[0];
        assert_eq!(got["id"], json!(id));
        // What the client sees is what was published (ElementTree renames prefixes, not content).
        let seen = got["xml"].as_str().unwrap();
        let marker = if node.contains("bundles") {
            "cGs="
        } else {
            "1234"
        };
        let ns = xml.split('\'').nth(1).unwrap();
        assert!(seen.contains(marker) && seen.contains(ns), "{node}: {got}");
    }
    // The device list is replaced, not added to (one item, id "current").
    publish(
        &mut alice,
        DEVICES,
        "current",
        "<devices xmlns='urn:xmpp:omemo:2'><device id='1234'/><device id='99'/></devices>",
        open,
    );
    let r = items(&mut bob, &alice_jid, DEVICES);
    let list = r["items"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{r}");
    assert!(list[0]["xml"].as_str().unwrap().contains("99"), "{r}");
}

#[test]
fn access_models_and_preconditions_are_enforced() {
    let server = TestServer::start("");
    for u in ["alice", "bob", "carol"] {
        server.add_user(u, &format!("{u}-password"));
    }
    let (alice_jid, bob_jid) = (format!("alice@{DOMAIN}"), format!("bob@{DOMAIN}"));
    let mut alice = device(&server, "alice", "phone", &[]);
    let mut bob = device(&server, "bob", "pc", &[]);
    let mut carol = device(&server, "carol", "pc", &[]);
    befriend((&mut alice, &alice_jid), (&mut bob, &bob_jid));

    // Default (presence) access: the contact reads, the stranger is told why not.
    let r = publish(
        &mut alice,
        "urn:xmpp:avatar:metadata",
        "a1",
        "<metadata xmlns='urn:xmpp:avatar:metadata'/>",
        json!(null),
    );
    assert_eq!(r["ok"], json!(true), "{r}");
    assert_eq!(
        items(&mut bob, &alice_jid, "urn:xmpp:avatar:metadata")["ok"],
        json!(true)
    );
    let r = items(&mut carol, &alice_jid, "urn:xmpp:avatar:metadata");
    assert_eq!(
        (r["condition"].as_str(), r["app"].as_str()),
        (
            Some("not-authorized"),
            Some("presence-subscription-required")
        ),
        "{r}"
    );

    // Whitelist: only the owner.
    let r = publish(
        &mut alice,
        "secret",
        "s",
        "<s xmlns='urn:test'/>",
        json!({"pubsub#access_model": "whitelist"}),
    );
    assert_eq!(r["ok"], json!(true), "{r}");
    let r = items(&mut bob, &alice_jid, "secret");
    assert_eq!(
        (r["condition"].as_str(), r["app"].as_str()),
        (Some("not-allowed"), Some("closed-node")),
        "{r}"
    );
    assert_eq!(items(&mut alice, &alice_jid, "secret")["ok"], json!(true));

    // A precondition the existing node does not meet.
    let r = publish(
        &mut alice,
        "secret",
        "s",
        "<s xmlns='urn:test'/>",
        json!({"pubsub#access_model": "open"}),
    );
    assert_eq!(
        (r["condition"].as_str(), r["app"].as_str()),
        (Some("conflict"), Some("precondition-not-met")),
        "{r}"
    );
}

#[test]
fn notifications_go_to_interested_clients_and_the_last_item_on_coming_online() {
    let server = TestServer::start("");
    server.add_user("alice", "alice-password");
    server.add_user("bob", "bob-password");
    let (alice_jid, bob_jid) = (format!("alice@{DOMAIN}"), format!("bob@{DOMAIN}"));
    let mut alice = device(&server, "alice", "phone", &[AVATAR]);
    let mut bob = device(&server, "bob", "pc", &[AVATAR]);
    befriend((&mut alice, &alice_jid), (&mut bob, &bob_jid));
    let mut bob_tv = device(&server, "bob", "tv", &[DEVICES]);
    bob_tv.expect_event("presence", T, |p| {
        p["from"].as_str().unwrap().starts_with(&alice_jid)
    });

    let r = publish(
        &mut alice,
        AVATAR,
        "a7",
        "<metadata xmlns='urn:xmpp:avatar:metadata'><info id='a7' bytes='7' type='image/png'/></metadata>",
        json!(null),
    );
    assert_eq!(r["ok"], json!(true), "{r}");
    let e = bob
        .wait_event("pep", T, |e| e["node"] == AVATAR)
        .unwrap_or_else(|| panic!("no notification for bob; server log:\n{}", server.log()));
    assert_eq!(e["from"], json!(alice_jid));
    assert!(e["xml"].as_str().unwrap().contains("a7"), "{e}");
    alice.expect_event("pep", T, |e| e["node"] == AVATAR);
    // The tv did not ask for avatars.
    let seen = bob_tv.wait_event("pep", Duration::from_secs(1), |e| e["node"] == AVATAR);
    assert!(seen.is_none(), "{seen:?}");

    // A new device of bob that wants avatars gets alice's newest one on coming online.
    let mut bob_laptop = device(&server, "bob", "laptop", &[AVATAR]);
    let e = bob_laptop.expect_event("pep", T, |e| {
        e["node"] == AVATAR && e["from"] == json!(alice_jid)
    });
    assert!(e["xml"].as_str().unwrap().contains("a7"), "{e}");
}

fn omemo_device(server: &TestServer, user: &str, resource: &str) -> (Agent, Value) {
    let mut a = Agent::spawn(
        &format!("{user}@{DOMAIN}/{resource}"),
        &format!("{user}-password"),
        server.c2s_port,
        &server.cert_path,
        &[],
    );
    a.connect();
    let r = a.cmd(json!({"cmd": "omemo_setup"}));
    assert_eq!(
        r["ok"],
        json!(true),
        "OMEMO setup of {user}: {r}\n{}",
        server.log()
    );
    a.presence();
    (a, r["device"].clone())
}

/// Acceptance 1: two slixmpp-omemo clients publish their device lists and bundles through PEP
/// and exchange an OMEMO-encrypted message both ways; the receiver's second device decrypts too.
#[test]
fn two_omemo_clients_exchange_encrypted_messages_both_ways() {
    let server = TestServer::start("");
    server.add_user("alice", "alice-password");
    server.add_user("bob", "bob-password");
    let (alice_jid, bob_jid) = (format!("alice@{DOMAIN}"), format!("bob@{DOMAIN}"));
    let (mut alice, alice_device) = omemo_device(&server, "alice", "phone");
    let (mut bob, bob_device) = omemo_device(&server, "bob", "pc");
    befriend((&mut alice, &alice_jid), (&mut bob, &bob_jid));

    // Each device list names the device, in both OMEMO versions, readable by the other.
    for (reader, owner, device) in [
        (&mut bob, &alice_jid, &alice_device),
        (&mut alice, &bob_jid, &bob_device),
    ] {
        for node in [DEVICES, LEGACY_DEVICES] {
            let r = items(reader, owner, node);
            assert_eq!(r["ok"], json!(true), "{node} of {owner}: {r}");
            let xml = r["items"][0]["xml"].as_str().unwrap_or_default();
            assert!(xml.contains(&device.to_string()), "{node} of {owner}: {r}");
        }
    }

    // bob's second device (carbons on both) joins his device list.
    let (mut bob_laptop, _) = omemo_device(&server, "bob", "laptop");
    for d in [&mut bob, &mut bob_laptop] {
        assert_eq!(d.cmd(json!({"cmd": "carbons"}))["ok"], json!(true));
    }

    let r = alice.cmd(json!({"cmd": "omemo_send", "to": bob_jid, "body": "secret hello"}));
    assert_eq!(r["ok"], json!(true), "{r}");
    for d in [&mut bob, &mut bob_laptop] {
        let m = d.expect_event("omemo_message", T, |m| m["body"] == "secret hello");
        assert!(m["from"].as_str().unwrap().starts_with(&alice_jid), "{m}");
        assert_eq!(m["device"], alice_device);
    }
    // The server only ever saw ciphertext: the plain text is nowhere in what bob received raw.
    let plain = bob.seen("message");
    assert!(
        plain.iter().all(|p| p["body"] != "secret hello"),
        "{plain:?}"
    );

    let r = bob.cmd(json!({"cmd": "omemo_send", "to": alice_jid, "body": "secret answer"}));
    assert_eq!(r["ok"], json!(true), "{r}");
    let m = alice.expect_event("omemo_message", T, |m| m["body"] == "secret answer");
    assert_eq!(m["device"], bob_device);
}

/// Acceptance 4: bookmarks stored the XEP-0048 way (private storage) are read back as XEP-0402
/// PEP items, and the other way round.
#[test]
fn bookmarks_convert_between_private_storage_and_pep() {
    let server = TestServer::start("");
    server.add_user("alice", "alice-password");
    let alice_jid = format!("alice@{DOMAIN}");
    let mut phone = device(&server, "alice", "phone", &[]);
    let r = phone.cmd(json!({"cmd": "bookmarks_set", "rooms": [
        {"jid": "family@groups.hearth.test", "nick": "al", "name": "Family", "autojoin": true}]}));
    assert_eq!(r["ok"], json!(true), "{r}");
    let r = items(&mut phone, &alice_jid, "urn:xmpp:bookmarks:1");
    let list = r["items"].as_array().expect("items");
    assert_eq!(list.len(), 1, "{r}");
    assert_eq!(list[0]["id"], json!("family@groups.hearth.test"));
    let xml = list[0]["xml"].as_str().unwrap();
    assert!(
        xml.contains("Family") && xml.contains("al") && xml.contains("autojoin=\"true\""),
        "{xml}"
    );

    let opts = json!({"pubsub#access_model": "whitelist", "pubsub#max_items": "max", "pubsub#persist_items": "true"});
    let r = publish(
        &mut phone,
        "urn:xmpp:bookmarks:1",
        "work@groups.hearth.test",
        "<conference xmlns='urn:xmpp:bookmarks:1' name='Work'><nick>alice</nick></conference>",
        opts,
    );
    assert_eq!(r["ok"], json!(true), "{r}");
    let r = phone.cmd(json!({"cmd": "bookmarks_get"}));
    let rooms = r["rooms"].as_array().expect("rooms");
    let work = rooms
        .iter()
        .find(|r| r["jid"] == "work@groups.hearth.test")
        .expect("work room");
    assert_eq!(
        (work["name"].as_str(), work["nick"].as_str()),
        (Some("Work"), Some("alice")),
        "{r}"
    );
    assert!(
        rooms
            .iter()
            .any(|r| r["jid"] == "family@groups.hearth.test"),
        "{r}"
    );
}
