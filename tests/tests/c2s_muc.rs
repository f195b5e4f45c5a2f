//! Issue 12 with real slixmpp clients (its xep_0045, xep_0249 and xep_0313 plugins, and
//! slixmpp-omemo): group chats on `groups.hearth.test`. A persistent members-only non-anonymous
//! room is created, configured, and filled by a direct and a mediated invitation; outsiders and
//! outcasts stay out, a kick carries its status codes; history on entering and the room's archive
//! give the messages in order with the room's stanza ids, and all of it survives a restart;
//! several devices share a nick; three OMEMO clients exchange a group message.

use hearth_e2e::agent::Agent;
use hearth_e2e::server::{TestServer, DOMAIN};
use serde_json::{json, Value};
use std::time::Duration;

const T: Duration = Duration::from_secs(15);

fn room() -> String {
    format!("flat@groups.{DOMAIN}")
}

fn user(server: &TestServer, name: &str, resource: &str) -> Agent {
    let mut a = Agent::spawn(
        &format!("{name}@{DOMAIN}/{resource}"),
        &format!("{name}-password"),
        server.c2s_port,
        &server.cert_path,
        &[],
    );
    a.connect();
    assert_eq!(a.cmd(json!({"cmd": "muc_setup"}))["ok"], json!(true));
    a.presence();
    a
}

fn join(a: &mut Agent, nick: &str) -> Value {
    a.cmd(json!({"cmd": "muc_join", "room": room(), "nick": nick}))
}

fn codes(v: &Value) -> Vec<String> {
    v["codes"]
        .as_array()
        .map(|c| {
            c.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn send(a: &mut Agent, body: &str) {
    let r = a.cmd(json!({"cmd": "muc_send", "room": room(), "body": body}));
    assert_eq!(r["ok"], json!(true), "{r}");
}

/// The stanza id the room gave a message, as an occupant received it live.
fn live_id(a: &mut Agent, body: &str) -> String {
    let m = a.expect_event("groupchat", T, |m| {
        m["body"] == body && m["delayed"] == false
    });
    assert_eq!(m["by"], json!(room()), "{m}");
    m["stanza_id"].as_str().expect("stanza id").to_string()
}

fn archive(a: &mut Agent) -> Vec<(String, String)> {
    let r = a.cmd(json!({"cmd": "muc_mam", "room": room(), "max": 2}));
    assert_eq!(r["ok"], json!(true), "{r}");
    r["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["id"].as_str().unwrap().to_string(),
                m["body"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// Acceptance 1 and 2.
#[test]
fn a_members_only_room_keeps_its_members_and_history_across_a_restart() {
    let mut server = TestServer::start("");
    for u in ["alice", "bob", "carol", "dave"] {
        server.add_user(u, &format!("{u}-password"));
    }
    let (bob_jid, carol_jid, dave_jid) = (
        format!("bob@{DOMAIN}"),
        format!("carol@{DOMAIN}"),
        format!("dave@{DOMAIN}"),
    );
    let mut alice = user(&server, "alice", "phone");
    let mut bob = user(&server, "bob", "pc");
    let mut carol = user(&server, "carol", "pc");
    let mut dave = user(&server, "dave", "pc");

    let r = join(&mut alice, "Alice");
    assert_eq!(r["ok"], json!(true), "{r}\n{}", server.log());
    assert!(
        codes(&r).contains(&"201".into()) && codes(&r).contains(&"110".into()),
        "{r}"
    );
    assert_eq!(r["affiliation"], json!("owner"));
    let r = alice.cmd(json!({"cmd": "muc_configure", "room": room(), "fields": {
        "muc#roomconfig_roomname": "The flat",
        "muc#roomconfig_persistentroom": true,
        "muc#roomconfig_membersonly": true,
        "muc#roomconfig_whois": "anyone",
        "muc#roomconfig_allowinvites": false,
    }}));
    assert_eq!(r["ok"], json!(true), "{r}");

    // bob: made a member, then invited directly (XEP-0249, client to client, as Conversations does).
    let r = alice.cmd(
        json!({"cmd": "muc_affiliation", "room": room(), "jid": bob_jid, "affiliation": "member"}),
    );
    assert_eq!(r["ok"], json!(true), "{r}");
    alice.cmd(
        json!({"cmd": "muc_invite_direct", "room": room(), "to": bob_jid, "reason": "our flat"}),
    );
    let inv = bob.expect_event("muc_invite", T, |i| i["direct"] == true);
    assert_eq!(inv["room"], json!(room()));
    // carol: a mediated invitation through the room, which makes her a member.
    alice.cmd(json!({"cmd": "muc_invite", "room": room(), "to": carol_jid, "reason": "join us"}));
    let inv = carol.expect_event("muc_invite", T, |i| i["direct"] == false);
    assert_eq!(inv["room"], json!(room()));
    for (a, nick) in [(&mut bob, "Bob"), (&mut carol, "Carol")] {
        let r = join(a, nick);
        assert_eq!(r["ok"], json!(true), "{nick}: {r}");
        assert_eq!(r["affiliation"], json!("member"), "{r}");
        assert!(codes(&r).contains(&"100".into()), "non-anonymous: {r}");
    }
    let r = alice.cmd(json!({"cmd": "muc_list", "room": room(), "affiliation": "member"}));
    assert_eq!(
        r["jids"],
        json!([bob_jid.clone(), carol_jid.clone()]),
        "{r}"
    );

    // The outsider stays out.
    let r = join(&mut dave, "Dave");
    assert_eq!(
        (r["ok"].clone(), r["condition"].clone()),
        (json!(false), json!("registration-required")),
        "{r}"
    );

    // Chat, with the room's stanza ids on every copy.
    let mut ids = Vec::new();
    for (i, text) in ["one", "two", "three"].iter().enumerate() {
        let sender = [&mut alice, &mut bob, &mut carol][i % 3]
            .cmd(json!({"cmd": "muc_send", "room": room(), "body": text}));
        assert_eq!(sender["ok"], json!(true));
        let id = live_id(&mut alice, text);
        assert_eq!(live_id(&mut bob, text), id);
        assert_eq!(live_id(&mut carol, text), id);
        ids.push((id, text.to_string()));
    }

    // A kick: 307 for everybody, 110 for the one kicked.
    let r = alice.cmd(json!({"cmd": "muc_role", "room": room(), "nick": "Bob", "role": "none", "reason": "tea break"}));
    assert_eq!(r["ok"], json!(true), "{r}");
    let p = bob.expect_event("muc_presence", T, |p| {
        p["type"] == "unavailable" && p["from"] == json!(format!("{}/Bob", room()))
    });
    assert_eq!(codes(&p), ["110", "307"], "{p}");
    let p = carol.expect_event("muc_presence", T, |p| {
        p["type"] == "unavailable" && p["from"] == json!(format!("{}/Bob", room()))
    });
    assert_eq!(codes(&p), ["307"], "{p}");

    // A ban: carol leaves with 301 and cannot come back.
    let r = alice.cmd(json!({"cmd": "muc_affiliation", "room": room(), "jid": carol_jid, "affiliation": "outcast"}));
    assert_eq!(r["ok"], json!(true), "{r}");
    let p = carol.expect_event("muc_presence", T, |p| p["type"] == "unavailable");
    assert_eq!(codes(&p), ["110", "301"], "{p}");
    let r = join(&mut carol, "Carol");
    assert_eq!(r["condition"], json!("forbidden"), "{r}");

    // History on entering (the last two) and the archive (all three, in order, the same ids).
    let mut laptop = user(&server, "bob", "laptop");
    let r = laptop.cmd(json!({"cmd": "muc_join", "room": room(), "nick": "Bob", "maxstanzas": 2}));
    assert_eq!(r["ok"], json!(true), "{r}");
    let history: Vec<(String, String)> = r["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["stanza_id"].as_str().unwrap_or("").to_string(),
                m["body"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(history, ids[1..].to_vec(), "{r}");
    assert_eq!(archive(&mut laptop), ids);

    // Restart: the room, its members, its outcast and its archive are still there.
    drop((alice, bob, carol, dave, laptop));
    server.restart();
    let mut alice = user(&server, "alice", "phone");
    let r = join(&mut alice, "Alice");
    assert_eq!(r["ok"], json!(true), "{r}\n{}", server.log());
    assert!(
        !codes(&r).contains(&"201".into()),
        "the room was not made again: {r}"
    );
    assert_eq!(r["affiliation"], json!("owner"));
    let mut bob = user(&server, "bob", "pc");
    let r = join(&mut bob, "Bob");
    assert_eq!(r["affiliation"], json!("member"), "{r}");
    let got: Vec<String> = r["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["body"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(got, ["one", "two", "three"], "{r}");
    assert_eq!(archive(&mut bob), ids);
    let mut carol = user(&server, "carol", "pc");
    assert_eq!(join(&mut carol, "Carol")["condition"], json!("forbidden"));
    let mut dave = user(&server, "dave", "pc");
    assert_eq!(
        join(&mut dave, "Dave")["condition"],
        json!("registration-required")
    );
    let _ = dave_jid;
}

/// Acceptance 4.
#[test]
fn devices_of_one_account_share_a_nick_and_another_account_cannot_take_it() {
    let server = TestServer::start("");
    for u in ["alice", "bob"] {
        server.add_user(u, &format!("{u}-password"));
    }
    let mut phone = user(&server, "alice", "phone");
    let mut laptop = user(&server, "alice", "laptop");
    let mut bob = user(&server, "bob", "pc");
    let r = join(&mut phone, "Alice");
    assert_eq!(r["ok"], json!(true), "{r}");
    assert_eq!(
        phone.cmd(json!({"cmd": "muc_configure", "room": room()}))["ok"],
        json!(true)
    );
    let r = join(&mut laptop, "Alice");
    assert_eq!(r["ok"], json!(true), "{r}");
    assert_eq!(r["affiliation"], json!("owner"));
    let r = join(&mut bob, "Alice");
    assert_eq!(r["condition"], json!("conflict"), "{r}");
    assert_eq!(join(&mut bob, "Bob")["ok"], json!(true));
    send(&mut bob, "for every device");
    for d in [&mut phone, &mut laptop] {
        d.expect_event("groupchat", T, |m| m["body"] == "for every device");
    }
    send(&mut laptop, "from the laptop");
    bob.expect_event("groupchat", T, |m| {
        m["body"] == "from the laptop" && m["from"] == json!(format!("{}/Alice", room()))
    });
    phone.expect_event("groupchat", T, |m| m["body"] == "from the laptop");

    // The admin's view: hearthctl lists the room and destroys it; every device is told.
    let out = server.hearthctl(&["room", "list"], None);
    let listed = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success() && listed.starts_with("flat "),
        "{listed}"
    );
    let out = server.hearthctl(
        &["room", "destroy", &room(), "--reason", "closing time"],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for d in [&mut phone, &mut laptop, &mut bob] {
        let p = d.expect_event("muc_presence", T, |p| p["destroyed"] == true);
        assert_eq!(p["reason"], json!("closing time"), "{p}");
    }
    let out = server.hearthctl(&["room", "list"], None);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "");
    let out = server.hearthctl(&["room", "destroy", "flat"], None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no room"));
}

fn omemo_member(server: &TestServer, name: &str) -> (Agent, Value) {
    let mut a = Agent::spawn(
        &format!("{name}@{DOMAIN}/phone"),
        &format!("{name}-password"),
        server.c2s_port,
        &server.cert_path,
        &[],
    );
    a.connect();
    let r = a.cmd(json!({"cmd": "omemo_setup"}));
    assert_eq!(r["ok"], json!(true), "OMEMO setup of {name}: {r}");
    assert_eq!(a.cmd(json!({"cmd": "muc_setup"}))["ok"], json!(true));
    a.presence();
    (a, r["device"].clone())
}

/// Acceptance 3: OMEMO in a members-only non-anonymous room, as Conversations requires it.
#[test]
fn three_omemo_clients_exchange_a_group_message_each_decrypts() {
    let server = TestServer::start("");
    let names = ["alice", "bob", "carol"];
    for u in names {
        server.add_user(u, &format!("{u}-password"));
    }
    let jids: Vec<String> = names.iter().map(|n| format!("{n}@{DOMAIN}")).collect();
    let (mut alice, alice_device) = omemo_member(&server, "alice");
    let (mut bob, _) = omemo_member(&server, "bob");
    let (mut carol, _) = omemo_member(&server, "carol");
    assert_eq!(join(&mut alice, "Alice")["ok"], json!(true));
    let r = alice.cmd(json!({"cmd": "muc_configure", "room": room(), "fields": {
        "muc#roomconfig_persistentroom": true,
        "muc#roomconfig_membersonly": true,
        "muc#roomconfig_whois": "anyone",
    }}));
    assert_eq!(r["ok"], json!(true), "{r}");
    for j in &jids[1..] {
        let r = alice.cmd(
            json!({"cmd": "muc_affiliation", "room": room(), "jid": j, "affiliation": "member"}),
        );
        assert_eq!(r["ok"], json!(true), "{r}");
    }
    assert_eq!(join(&mut bob, "Bob")["ok"], json!(true));
    assert_eq!(join(&mut carol, "Carol")["ok"], json!(true));
    // Each learns the real JIDs of the others from their presence (non-anonymous room).
    alice.expect_event("muc_presence", T, |p| p["jid"] == json!(jids[2]));
    bob.expect_event("muc_presence", T, |p| p["jid"] == json!(jids[2]));

    let r = alice.cmd(
        json!({"cmd": "muc_omemo_send", "room": room(), "body": "secret plans",
                             "members": [jids[1].clone(), jids[2].clone()]}),
    );
    assert_eq!(r["ok"], json!(true), "{r}");
    for member in [&mut bob, &mut carol] {
        let m = member.expect_event("omemo_message", T, |m| m["body"] == "secret plans");
        assert_eq!(m["from"], json!(format!("{}/Alice", room())));
        assert_eq!(m["device"], alice_device);
    }
    let r = bob.cmd(
        json!({"cmd": "muc_omemo_send", "room": room(), "body": "count me in",
                           "members": [jids[0].clone(), jids[2].clone()]}),
    );
    assert_eq!(r["ok"], json!(true), "{r}");
    for member in [&mut alice, &mut carol] {
        member.expect_event("omemo_message", T, |m| m["body"] == "count me in");
    }
    // The room's archive kept only ciphertext.
    let r = carol.cmd(json!({"cmd": "muc_mam", "room": room()}));
    let bodies: Vec<&str> = r["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["body"].as_str())
        .collect();
    assert_eq!(bodies.len(), 2, "{r}");
    assert!(
        bodies
            .iter()
            .all(|b| !b.contains("secret") && !b.contains("count me")),
        "{r}"
    );
}
