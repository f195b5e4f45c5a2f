//! Group chats driven through the real server (harness): clients enter, talk, moderate and
//! configure rooms on `groups.example.test` as a client would.

use super::admin::{NS_ADMIN, NS_OWNER};
use super::form::{DATA, ROOMCONFIG};
use super::room::{NS_MUC, NS_OCCUPANT_ID, NS_USER};
use crate::harness::{body, Harness, TestClient, DOMAIN};
use crate::modules::mam::SID;
use crate::xml::{ns, Element};
use std::time::Duration;

pub(super) fn muc() -> String {
    format!("groups.{DOMAIN}")
}
pub(super) fn room(name: &str) -> String {
    format!("{name}@{}", muc())
}

pub(super) fn codes(p: &Element) -> Vec<String> {
    p.child("x", NS_USER)
        .map(|x| {
            x.elements()
                .filter(|s| s.name == "status")
                .filter_map(|s| s.attr("code").map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

pub(super) fn item_attr(p: &Element, attr: &str) -> Option<String> {
    p.child("x", NS_USER)?
        .child("item", NS_USER)?
        .attr(attr)
        .map(str::to_string)
}

pub(super) fn error_condition(e: &Element) -> String {
    e.child("error", ns::CLIENT)
        .and_then(|er| {
            er.elements()
                .find(|c| c.ns == ns::STANZA_ERRORS && c.name != "text")
        })
        .map(|c| c.name.clone())
        .unwrap_or_default()
}

/// Sends the entering presence; returns the answer from the occupant JID that ends it (own
/// presence with 110, or an error).
pub(super) async fn enter_with(c: &mut TestClient, name: &str, nick: &str, x: Element) -> Element {
    let occupant = format!("{}/{nick}", room(name));
    c.send(
        Element::new("presence", ns::CLIENT)
            .with_attr("to", occupant.clone())
            .with_child(x),
    )
    .await;
    c.expect("own room presence or error", |e| {
        e.name == "presence"
            && e.attr("from") == Some(occupant.as_str())
            && (e.attr("type") == Some("error") || codes(e).contains(&"110".to_string()))
    })
    .await
}

pub(super) async fn enter(c: &mut TestClient, name: &str, nick: &str) -> Element {
    enter_with(c, name, nick, Element::new("x", NS_MUC)).await
}

/// Waits for the subject message that ends entering.
pub(super) async fn subject(c: &mut TestClient) -> Element {
    c.expect("subject", |e| {
        e.name == "message" && e.child("subject", ns::CLIENT).is_some()
    })
    .await
}

pub(super) fn config_form(fields: &[(&str, &str)]) -> Element {
    let mut x = Element::new("x", DATA)
        .with_attr("type", "submit")
        .with_child(
            Element::new("field", DATA)
                .with_attr("var", "FORM_TYPE")
                .with_child(Element::new("value", DATA).with_text(ROOMCONFIG)),
        );
    for (var, v) in fields {
        x.push_child(
            Element::new("field", DATA)
                .with_attr("var", *var)
                .with_child(Element::new("value", DATA).with_text(*v)),
        );
    }
    Element::new("query", NS_OWNER).with_child(x)
}

pub(super) async fn configure(c: &mut TestClient, name: &str, fields: &[(&str, &str)]) -> Element {
    c.iq("set", Some(&room(name)), config_form(fields)).await
}

pub(super) async fn admin_set(c: &mut TestClient, name: &str, item: Element) -> Element {
    c.iq(
        "set",
        Some(&room(name)),
        Element::new("query", NS_ADMIN).with_child(item),
    )
    .await
}

pub(super) fn groupchat(name: &str, text: &str) -> Element {
    Element::new("message", ns::CLIENT)
        .with_attr("type", "groupchat")
        .with_attr("to", room(name))
        .with_attr("id", format!("m-{text}"))
        .with_child(Element::new("body", ns::CLIENT).with_text(text))
}

pub(super) async fn got_body(c: &mut TestClient, text: &str) -> Element {
    let t = text.to_string();
    c.expect(text, move |e| {
        e.name == "message" && body(e).as_deref() == Some(t.as_str())
    })
    .await
}

pub(super) async fn setup(users: &[&str]) -> (Harness, Vec<TestClient>) {
    let h = Harness::new().await;
    let mut clients = Vec::new();
    for u in users {
        h.user(u).await;
        let mut c = h.login(u, "phone").await;
        c.available().await;
        clients.push(c);
    }
    (h, clients)
}

#[tokio::test]
async fn an_instant_room_is_created_entered_and_talked_in() {
    let (h, mut c) = setup(&["alice", "bob"]).await;
    let (alice, rest) = c.split_first_mut().unwrap();
    let bob = &mut rest[0];
    let own = enter(alice, "flat", "Alice").await;
    let mut got = codes(&own);
    got.sort();
    assert_eq!(got, ["110", "170", "201"], "{}", own.to_xml(ns::CLIENT));
    assert_eq!(item_attr(&own, "affiliation").as_deref(), Some("owner"));
    assert_eq!(item_attr(&own, "role").as_deref(), Some("moderator"));
    subject(alice).await;
    // Locked until the owner decides: others may not enter yet.
    let refused = enter(bob, "flat", "Bob").await;
    assert_eq!(error_condition(&refused), "item-not-found");
    let r = alice
        .iq(
            "set",
            Some(&room("flat")),
            Element::new("query", NS_OWNER)
                .with_child(Element::new("x", DATA).with_attr("type", "submit")),
        )
        .await;
    assert_eq!(r.attr("type"), Some("result"), "{}", r.to_xml(ns::CLIENT));

    let own = enter(bob, "flat", "Bob").await;
    assert!(own.child("occupant-id", NS_OCCUPANT_ID).is_some());
    assert_eq!(item_attr(&own, "role").as_deref(), Some("participant"));
    // Semi-anonymous by default: bob does not see alice's address, alice (moderator) sees his.
    let alice_seen = bob
        .expect("alice's presence", |e| {
            e.attr("from") == Some(&*format!("{}/Alice", room("flat")))
        })
        .await;
    assert_eq!(item_attr(&alice_seen, "jid"), None);
    let bob_seen = alice
        .expect("bob's presence", |e| {
            e.attr("from") == Some(&*format!("{}/Bob", room("flat")))
        })
        .await;
    assert_eq!(
        item_attr(&bob_seen, "jid").as_deref(),
        Some(&*format!("bob@{DOMAIN}"))
    );
    subject(bob).await;

    bob.send(groupchat("flat", "hello flat")).await;
    let at_alice = got_body(alice, "hello flat").await;
    let at_bob = got_body(bob, "hello flat").await;
    assert_eq!(
        at_alice.attr("from"),
        Some(&*format!("{}/Bob", room("flat")))
    );
    let sid = |m: &Element| {
        m.child("stanza-id", SID).map(|s| {
            (
                s.attr("by").unwrap().to_string(),
                s.attr("id").unwrap().to_string(),
            )
        })
    };
    assert_eq!(sid(&at_alice), sid(&at_bob));
    assert_eq!(sid(&at_alice).unwrap().0, room("flat"));
    assert_eq!(
        at_bob.attr("id"),
        Some("m-hello flat"),
        "the sender recognises its own message"
    );

    // A subject change by the moderator, refused for a participant.
    let mut subj = Element::new("message", ns::CLIENT)
        .with_attr("type", "groupchat")
        .with_attr("to", room("flat"));
    subj.push_child(Element::new("subject", ns::CLIENT).with_text("Milk"));
    bob.send(subj.clone()).await;
    let e = bob
        .expect("refusal", |e| e.attr("type") == Some("error"))
        .await;
    assert_eq!(error_condition(&e), "forbidden");
    alice.send(subj).await;
    let s = subject(bob).await;
    assert_eq!(s.child("subject", ns::CLIENT).unwrap().text(), "Milk");

    // Leaving: alice sees bob go; the room answers self-ping only for occupants.
    bob.send(
        Element::new("presence", ns::CLIENT)
            .with_attr("type", "unavailable")
            .with_attr("to", format!("{}/Bob", room("flat"))),
    )
    .await;
    let gone = alice
        .expect("bob leaves", |e| {
            e.attr("type") == Some("unavailable")
                && e.attr("from") == Some(&*format!("{}/Bob", room("flat")))
        })
        .await;
    assert_eq!(item_attr(&gone, "role").as_deref(), Some("none"));
    let ping = Element::new("ping", "urn:xmpp:ping");
    let r = bob
        .iq(
            "get",
            Some(&format!("{}/Alice", room("flat"))),
            ping.clone(),
        )
        .await;
    assert_eq!(error_condition(&r), "not-acceptable");
    let r = alice
        .iq("get", Some(&format!("{}/Alice", room("flat"))), ping)
        .await;
    assert_eq!(r.attr("type"), Some("result"));
    drop(h);
}

#[tokio::test]
async fn members_only_rooms_invite_kick_and_ban() {
    let (_h, mut c) = setup(&["alice", "bob", "carol"]).await;
    let [alice, bob, carol] = &mut c[..] else {
        unreachable!()
    };
    enter(alice, "club", "Alice").await;
    let r = configure(
        alice,
        "club",
        &[
            ("muc#roomconfig_persistentroom", "1"),
            ("muc#roomconfig_membersonly", "1"),
            ("muc#roomconfig_whois", "anyone"),
            ("muc#roomconfig_roomname", "The club"),
        ],
    )
    .await;
    assert_eq!(r.attr("type"), Some("result"), "{}", r.to_xml(ns::CLIENT));
    let refused = enter(carol, "club", "Carol").await;
    assert_eq!(error_condition(&refused), "registration-required");

    // A mediated invitation makes bob a member.
    alice
        .send(
            Element::new("message", ns::CLIENT)
                .with_attr("to", room("club"))
                .with_child(
                    Element::new("x", NS_USER).with_child(
                        Element::new("invite", NS_USER)
                            .with_attr("to", format!("bob@{DOMAIN}"))
                            .with_child(Element::new("reason", NS_USER).with_text("come")),
                    ),
                ),
        )
        .await;
    let inv = bob
        .expect("invitation", |e| {
            e.child("x", NS_USER)
                .is_some_and(|x| x.child("invite", NS_USER).is_some())
        })
        .await;
    assert_eq!(inv.attr("from"), Some(&*room("club")));
    let own = enter(bob, "club", "Bob").await;
    assert_eq!(
        item_attr(&own, "affiliation").as_deref(),
        Some("member"),
        "{}",
        own.to_xml(ns::CLIENT)
    );
    assert!(
        codes(&own).contains(&"100".to_string()),
        "non-anonymous room says so"
    );
    // Members read the member list (OMEMO clients need it in non-anonymous rooms).
    let list = bob
        .iq(
            "get",
            Some(&room("club")),
            Element::new("query", NS_ADMIN)
                .with_child(Element::new("item", NS_ADMIN).with_attr("affiliation", "member")),
        )
        .await;
    assert!(
        list.to_xml(ns::CLIENT).contains(&format!("bob@{DOMAIN}")),
        "{}",
        list.to_xml(ns::CLIENT)
    );

    // A participant may not kick; the owner kicks with 307.
    let r = admin_set(
        bob,
        "club",
        Element::new("item", NS_ADMIN)
            .with_attr("nick", "Alice")
            .with_attr("role", "none"),
    )
    .await;
    assert_eq!(error_condition(&r), "not-allowed");
    let r = admin_set(
        alice,
        "club",
        Element::new("item", NS_ADMIN)
            .with_attr("nick", "Bob")
            .with_attr("role", "none")
            .with_child(Element::new("reason", NS_ADMIN).with_text("calm down")),
    )
    .await;
    assert_eq!(r.attr("type"), Some("result"));
    let kicked = bob
        .expect("kick", |e| e.attr("type") == Some("unavailable"))
        .await;
    let mut k = codes(&kicked);
    k.sort();
    assert_eq!(k, ["110", "307"]);
    let seen = alice
        .expect("bob kicked", |e| e.attr("type") == Some("unavailable"))
        .await;
    assert_eq!(codes(&seen), ["307"]);

    // Back in, then banned (301); an outcast cannot come back.
    enter(bob, "club", "Bob").await;
    let r = admin_set(
        alice,
        "club",
        Element::new("item", NS_ADMIN)
            .with_attr("jid", format!("bob@{DOMAIN}"))
            .with_attr("affiliation", "outcast"),
    )
    .await;
    assert_eq!(r.attr("type"), Some("result"));
    let banned = bob
        .expect("ban", |e| {
            e.attr("type") == Some("unavailable") && codes(e).contains(&"301".to_string())
        })
        .await;
    assert_eq!(
        item_attr(&banned, "affiliation").as_deref(),
        Some("outcast")
    );
    let refused = enter(bob, "club", "Bob").await;
    assert_eq!(error_condition(&refused), "forbidden");
    // The last owner cannot leave the room ownerless.
    let r = admin_set(
        alice,
        "club",
        Element::new("item", NS_ADMIN)
            .with_attr("jid", format!("alice@{DOMAIN}"))
            .with_attr("affiliation", "member"),
    )
    .await;
    assert_eq!(error_condition(&r), "conflict");
}

#[tokio::test]
async fn devices_of_one_account_share_a_nick_and_others_cannot_take_it() {
    let (h, mut c) = setup(&["alice", "bob"]).await;
    let [alice, bob] = &mut c[..] else {
        unreachable!()
    };
    enter_with(alice, "meet", "Alice", Element::new("presence", "urn:none")).await; // no MUC <x/>: instant
    let mut laptop = h.login("alice", "laptop").await;
    laptop.available().await;
    let own = enter(&mut laptop, "meet", "Alice").await;
    assert_eq!(own.attr("type"), None, "{}", own.to_xml(ns::CLIENT));
    let conflict = enter(bob, "meet", "Alice").await;
    assert_eq!(error_condition(&conflict), "conflict");
    // A third device of the same account under another nick is refused too.
    let mut tablet = h.login("alice", "tablet").await;
    tablet.available().await;
    let conflict = enter(&mut tablet, "meet", "Other").await;
    assert_eq!(error_condition(&conflict), "conflict");
    enter(bob, "meet", "Bob").await;
    bob.send(groupchat("meet", "to both devices")).await;
    got_body(alice, "to both devices").await;
    got_body(&mut laptop, "to both devices").await;
    // One device leaves: the other stays, and bob sees nobody leave.
    alice
        .send(
            Element::new("presence", ns::CLIENT)
                .with_attr("type", "unavailable")
                .with_attr("to", format!("{}/Alice", room("meet"))),
        )
        .await;
    alice
        .expect("own leave", |e| e.attr("type") == Some("unavailable"))
        .await;
    bob.expect_none("alice leaving", Duration::from_millis(300), |e| {
        e.attr("type") == Some("unavailable")
    })
    .await;
    bob.send(groupchat("meet", "still there?")).await;
    got_body(&mut laptop, "still there?").await;
    // A private message through the room reaches the occupant's device, marked as such.
    bob.send(
        Element::new("message", ns::CLIENT)
            .with_attr("type", "chat")
            .with_attr("to", format!("{}/Alice", room("meet")))
            .with_child(Element::new("body", ns::CLIENT).with_text("psst")),
    )
    .await;
    let pm = got_body(&mut laptop, "psst").await;
    assert_eq!(pm.attr("from"), Some(&*format!("{}/Bob", room("meet"))));
    assert!(pm.child("x", NS_USER).is_some());
    // Nick change: 303 with the new nick, then the new presence.
    bob.send(
        Element::new("presence", ns::CLIENT).with_attr("to", format!("{}/Robert", room("meet"))),
    )
    .await;
    let change = laptop
        .expect("303", |e| codes(e).contains(&"303".to_string()))
        .await;
    assert_eq!(item_attr(&change, "nick").as_deref(), Some("Robert"));
    laptop
        .expect("new nick", |e| {
            e.attr("from") == Some(&*format!("{}/Robert", room("meet")))
        })
        .await;
}

#[tokio::test]
async fn a_destroyed_room_sends_everybody_to_the_alternate_venue() {
    let (h, mut c) = setup(&["alice", "bob"]).await;
    let [alice, bob] = &mut c[..] else {
        unreachable!()
    };
    enter(alice, "old", "Alice").await;
    configure(alice, "old", &[("muc#roomconfig_persistentroom", "1")]).await;
    enter(bob, "old", "Bob").await;
    let destroy = Element::new("query", NS_OWNER).with_child(
        Element::new("destroy", NS_OWNER)
            .with_attr("jid", room("new"))
            .with_child(Element::new("reason", NS_OWNER).with_text("moved")),
    );
    let r = bob.iq("set", Some(&room("old")), destroy.clone()).await;
    assert_eq!(error_condition(&r), "forbidden");
    let r = alice.iq("set", Some(&room("old")), destroy).await;
    assert_eq!(r.attr("type"), Some("result"));
    let p = bob
        .expect("destroy notice", |e| e.attr("type") == Some("unavailable"))
        .await;
    let d = p
        .child("x", NS_USER)
        .unwrap()
        .child("destroy", NS_USER)
        .unwrap();
    assert_eq!(d.attr("jid"), Some(&*room("new")));
    let rows = h
        .server
        .storage
        .read(|c| super::store::list(c, false, 10))
        .await
        .unwrap();
    assert!(rows.is_empty(), "{rows:?}");
}

/// A bug while handling one room's stanza (a panic, provoked here) answers that stanza with
/// `internal-server-error` and leaves the service and the other rooms working.
#[tokio::test]
async fn a_bug_in_one_room_does_not_take_the_service_down() {
    let (_h, mut c) = setup(&["alice"]).await;
    let alice = &mut c[0];
    let broken = enter(alice, super::service::PANIC_ROOM_FOR_TESTS, "Alice").await;
    assert_eq!(broken.attr("type"), Some("error"));
    assert_eq!(error_condition(&broken), "internal-server-error");
    let own = enter(alice, "flat", "Alice").await;
    assert!(
        codes(&own).contains(&"110".to_string()),
        "{}",
        own.to_xml(ns::CLIENT)
    );
}
