//! Issue 11, acceptance 5, with real slixmpp clients: an avatar published the XEP-0084 way
//! (slixmpp's xep_0084 plugin: data, then metadata) shows up as the XEP-0153 photo hash in the
//! presence a contact receives and as the PHOTO of the vCard (XEP-0054); a vCard photo set
//! through slixmpp's xep_0054 shows up as the XEP-0084 avatar, notified to a contact that asked
//! for avatar metadata and readable by a stranger (open). Removing either removes both. A
//! stranger follows an avatar with an explicit XEP-0060 subscription (slixmpp's xep_0060), which
//! the owner sees among the node's subscribers.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hearth_e2e::agent::Agent;
use hearth_e2e::server::{TestServer, DOMAIN};
use hearthd::modules::avatar_conversion::sha1_hex;
use serde_json::{json, Value};
use std::time::Duration;

const T: Duration = Duration::from_secs(15);
const METADATA: &str = "urn:xmpp:avatar:metadata";
const DATA: &str = "urn:xmpp:avatar:data";

/// A client that wants avatar notifications (caps with `urn:xmpp:avatar:metadata+notify`, as
/// slixmpp's xep_0084 plugin asks) and reports the photo hash of every presence, online.
fn client(server: &TestServer, user: &str) -> Agent {
    let mut a = Agent::spawn(
        &format!("{user}@{DOMAIN}/phone"),
        &format!("{user}-password"),
        server.c2s_port,
        &server.cert_path,
        &[],
    );
    // Plugins before login, as a client has them: slixmpp's xep_0084 adds
    // `urn:xmpp:avatar:metadata+notify` at binding, and pep_setup then fixes the caps hash.
    let r = a.cmd(json!({"cmd": "avatar_setup"}));
    assert_eq!(r["ok"], json!(true), "{r}");
    a.connect();
    let r = a.cmd(json!({"cmd": "pep_setup", "interest": []}));
    assert_eq!(r["ok"], json!(true), "{r}");
    a.presence();
    a
}

fn befriend(a: &mut Agent, a_jid: &str, b: &mut Agent, b_jid: &str) {
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

/// A PNG header saying 16×16, then some bytes: enough for the server, which never decodes it.
fn image(marker: &[u8]) -> Vec<u8> {
    let mut b = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
    b.extend_from_slice(&16u32.to_be_bytes());
    b.extend_from_slice(&16u32.to_be_bytes());
    b.extend_from_slice(&[8, 6, 0, 0, 0]);
    b.extend_from_slice(marker);
    b
}

/// The hash the next presence from `from` carries (`""`: "no avatar").
fn photo_in_presence(a: &mut Agent, from: &str, want: &str) -> Value {
    a.expect_event("avatar_presence", T, |p| {
        p["from"].as_str().unwrap_or_default().starts_with(from) && p["photo"] == json!(want)
    })
}

fn setup(server: &TestServer) -> (Agent, Agent, String, String) {
    server.add_user("alice", "alice-password");
    server.add_user("bob", "bob-password");
    let (alice_jid, bob_jid) = (format!("alice@{DOMAIN}"), format!("bob@{DOMAIN}"));
    let mut alice = client(server, "alice");
    let mut bob = client(server, "bob");
    befriend(&mut alice, &alice_jid, &mut bob, &bob_jid);
    (alice, bob, alice_jid, bob_jid)
}

#[test]
fn a_pep_avatar_shows_up_as_the_vcard_photo_and_the_presence_hash() {
    let server = TestServer::start("");
    let (mut alice, mut bob, alice_jid, _) = setup(&server);
    let img = image(b"alice from PEP");
    let r =
        alice.cmd(json!({"cmd": "avatar_publish", "data": B64.encode(&img), "type": "image/png"}));
    assert_eq!(r["ok"], json!(true), "{r}\n{}", server.log());
    let hash = sha1_hex(&img);
    assert_eq!(
        r["id"],
        json!(hash),
        "slixmpp names the item by the SHA-1 too"
    );

    // XEP-0153: bob's client learns the hash from presence, then finds the image in the vCard.
    photo_in_presence(&mut bob, &alice_jid, &hash);
    let v = bob.cmd(json!({"cmd": "vcard_get", "to": alice_jid}));
    assert_eq!(v["ok"], json!(true), "{v}");
    assert_eq!(
        (&v["sha1"], &v["type"]),
        (&json!(hash), &json!("image/png")),
        "{v}"
    );
    assert_eq!(v["photo"], json!(B64.encode(&img)));

    // Taking the avatar down (empty metadata) empties both.
    let r = alice.cmd(json!({"cmd": "avatar_stop"}));
    assert_eq!(r["ok"], json!(true), "{r}");
    photo_in_presence(&mut bob, &alice_jid, "");
    let v = bob.cmd(json!({"cmd": "vcard_get", "to": alice_jid}));
    assert_eq!(v["photo"], Value::Null, "{v}");
}

#[test]
fn a_vcard_photo_shows_up_as_the_pep_avatar() {
    let server = TestServer::start("");
    let (mut alice, mut bob, alice_jid, _) = setup(&server);
    server.add_user("carol", "carol-password");
    let mut carol = client(&server, "carol");
    let img = image(b"alice from a vCard");
    let hash = sha1_hex(&img);
    let r = alice.cmd(json!({"cmd": "vcard_set", "photo": B64.encode(&img), "type": "image/png"}));
    assert_eq!(r["ok"], json!(true), "{r}\n{}", server.log());

    // bob asked for avatar metadata notifications: the converted avatar is announced to him,
    // and his presence view of alice carries the same hash.
    let e = bob
        .wait_event("pep", T, |e| {
            e["node"] == METADATA && e["from"] == json!(alice_jid)
        })
        .unwrap_or_else(|| panic!("no notification for bob; server log:\n{}", server.log()));
    assert_eq!(e["id"], json!(hash), "{e}");
    let xml = e["xml"].as_str().unwrap();
    assert!(
        xml.contains(&hash) && xml.contains("image/png") && xml.contains("width=\"16\""),
        "{xml}"
    );
    photo_in_presence(&mut bob, &alice_jid, &hash);

    // carol is no contact of alice's: an avatar is open, so she reads the image itself.
    let r = carol.cmd(json!({"cmd": "items", "to": alice_jid, "node": DATA}));
    assert_eq!(r["ok"], json!(true), "{r}");
    let item = &r["items"][0];
    assert_eq!(item["id"], json!(hash));
    assert!(
        item["xml"].as_str().unwrap().contains(&B64.encode(&img)),
        "{r}"
    );

    // A vCard without a photo takes the avatar down in PEP too.
    let r = alice.cmd(json!({"cmd": "vcard_set"}));
    assert_eq!(r["ok"], json!(true), "{r}");
    let e = bob.expect_event("pep", T, |e| {
        e["node"] == METADATA && e["id"] != json!(hash) && e["from"] == json!(alice_jid)
    });
    assert!(!e["xml"].as_str().unwrap().contains("info"), "{e}");
    photo_in_presence(&mut bob, &alice_jid, "");
}

#[test]
fn a_stranger_follows_an_avatar_by_subscribing_and_the_owner_sees_it() {
    let server = TestServer::start("");
    server.add_user("alice", "alice-password");
    server.add_user("carol", "carol-password");
    let (alice_jid, carol_jid) = (format!("alice@{DOMAIN}"), format!("carol@{DOMAIN}"));
    let mut alice = client(&server, "alice");
    let mut carol = client(&server, "carol");
    let first = image(b"first");
    let r =
        alice.cmd(json!({"cmd": "vcard_set", "photo": B64.encode(&first), "type": "image/png"}));
    assert_eq!(r["ok"], json!(true), "{r}");

    // carol is no contact: nothing reaches her until she subscribes; then the newest item.
    let r = carol.cmd(json!({"cmd": "pep_subscribe", "to": alice_jid, "node": METADATA}));
    assert_eq!(
        r["subscription"],
        json!("subscribed"),
        "{r}\n{}",
        server.log()
    );
    let e = carol.expect_event("pep", T, |e| e["node"] == METADATA);
    assert_eq!(e["id"], json!(sha1_hex(&first)), "{e}");
    let second = image(b"second");
    let r = alice
        .cmd(json!({"cmd": "avatar_publish", "data": B64.encode(&second), "type": "image/png"}));
    assert_eq!(r["ok"], json!(true), "{r}");
    carol.expect_event("pep", T, |e| {
        e["node"] == METADATA && e["id"] == json!(sha1_hex(&second))
    });

    let r = carol.cmd(json!({"cmd": "pep_subscriptions", "to": alice_jid}));
    assert_eq!(
        r["subscriptions"],
        json!([{"node": METADATA, "jid": carol_jid, "subscription": "subscribed"}]),
        "{r}"
    );
    let r = alice.cmd(json!({"cmd": "pep_node_subscriptions", "to": alice_jid, "node": METADATA}));
    let jids: Vec<&str> = r["subscriptions"]
        .as_array()
        .unwrap_or_else(|| panic!("{r}"))
        .iter()
        .filter_map(|s| s["jid"].as_str())
        .collect();
    assert!(
        jids.contains(&carol_jid.as_str()) && jids.contains(&alice_jid.as_str()),
        "{r}"
    );
    // Only alice may ask that.
    let r = carol.cmd(json!({"cmd": "pep_node_subscriptions", "to": alice_jid, "node": METADATA}));
    assert_eq!(r["condition"], json!("forbidden"), "{r}");

    let r = carol.cmd(json!({"cmd": "pep_unsubscribe", "to": alice_jid, "node": METADATA}));
    assert_eq!(r["ok"], json!(true), "{r}");
    alice.cmd(json!({"cmd": "avatar_stop"}));
    let late = carol.wait_event("pep", Duration::from_secs(1), |e| e["node"] == METADATA);
    assert!(late.is_none(), "{late:?}");
}
