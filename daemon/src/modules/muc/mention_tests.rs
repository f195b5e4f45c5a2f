//! Group chats and push (XEP-0357): an occupant whose phone sleeps in the room (its session
//! hibernated by stream management) is notified when a message names it, and only then.

use super::admin::NS_OWNER;
use super::form::DATA;
use super::messages::mentions;
use super::tests::{enter, groupchat, room, subject};
use crate::harness::{Harness, DOMAIN};
use crate::xml::{ns, Element};
use std::time::Duration;

const SM: &str = "urn:xmpp:sm:3";
const PUSH: &str = "urn:xmpp:push:0";
const PUBSUB: &str = "http://jabber.org/protocol/pubsub";

#[test]
fn a_mention_is_the_nick_as_a_word_of_its_own() {
    assert!(mentions("bob: lunch?", "bob"));
    assert!(mentions("hey @Bob!", "bob"));
    assert!(mentions("ask Anna Maria", "anna maria"));
    assert!(!mentions("bobby tables", "bob"));
    assert!(!mentions("kebob", "bob"));
    assert!(!mentions("anything", ""));
}

#[tokio::test]
async fn a_sleeping_occupant_is_pushed_for_mentions_only() {
    let h = Harness::with_config("[modules.push]\nmin_interval_secs = 0\n").await;
    for u in ["alice", "bob", "app"] {
        h.user(u).await;
    }
    let mut app = h.login("app", "srv").await;
    let mut alice = h.login("alice", "laptop").await;
    alice.available().await;
    enter(&mut alice, "flat", "alice").await;
    subject(&mut alice).await;
    // An instant room: the owner accepts the default configuration.
    let r = alice
        .iq(
            "set",
            Some(&room("flat")),
            Element::new("query", NS_OWNER)
                .with_child(Element::new("x", DATA).with_attr("type", "submit")),
        )
        .await;
    assert_eq!(r.attr("type"), Some("result"));
    let mut bob = h.login("bob", "phone").await;
    bob.available().await;
    bob.send(Element::new("enable", SM).with_attr("resume", "true"))
        .await;
    bob.expect("<enabled/>", |e| e.name == "enabled" && e.ns == SM)
        .await;
    let r = bob
        .iq(
            "set",
            None,
            Element::new("enable", PUSH)
                .with_attr("jid", format!("app@{DOMAIN}/srv"))
                .with_attr("node", "bob-phone"),
        )
        .await;
    assert_eq!(r.attr("type"), Some("result"));
    enter(&mut bob, "flat", "bob").await;
    subject(&mut bob).await;

    bob.cut().await;
    let bare = format!("bob@{DOMAIN}");
    for _ in 0..250 {
        let s = h.server.sessions.sessions_of(&bare);
        if !s.is_empty() && s.iter().all(|s| !s.connected()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let is_push = |e: &Element| e.name == "iq" && e.child("pubsub", PUBSUB).is_some();
    alice.send(groupchat("flat", "dinner at eight")).await;
    app.expect_none(
        "a push for a message naming nobody",
        Duration::from_millis(500),
        is_push,
    )
    .await;
    alice.send(groupchat("flat", "bob: are you coming?")).await;
    let push = app.expect("a push for the mention", is_push).await;
    assert_eq!(push.attr("from"), Some(bare.as_str()));
    assert!(
        push.to_xml(ns::CLIENT)
            .contains(&format!("<value>{}</value>", room("flat"))),
        "the sender is the room: {}",
        push.to_xml(ns::CLIENT)
    );
}
