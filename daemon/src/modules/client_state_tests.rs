//! XEP-0352 client state indication: the urgency rules, the holding layer alone, and whole
//! stanza paths through the in-process harness.

use super::*;
use crate::harness::{body, Harness, TestClient, DOMAIN};
use crate::hooks::FeaturePhase;

fn presence_from(from: &str, status: &str) -> Element {
    Element::new("presence", ns::CLIENT)
        .with_attr("from", from)
        .with_child(Element::new("status", ns::CLIENT).with_text(status))
}

fn chat(body_text: Option<&str>) -> Element {
    let mut m = Element::new("message", ns::CLIENT).with_attr("type", "chat");
    match body_text {
        Some(t) => m.push_child(Element::new("body", ns::CLIENT).with_text(t)),
        None => m.push_child(Element::new(
            "composing",
            "http://jabber.org/protocol/chatstates",
        )),
    }
    m
}

#[test]
fn what_is_urgent() {
    assert!(urgency(&Element::new("iq", ns::CLIENT), "alice").is_ok());
    assert!(urgency(&presence_from("bob@x/y", "away"), "alice").is_err());
    let unavailable = Element::new("presence", ns::CLIENT).with_attr("type", "unavailable");
    assert!(urgency(&unavailable, "alice").is_err());
    let subscribe = Element::new("presence", ns::CLIENT).with_attr("type", "subscribe");
    assert_eq!(urgency(&subscribe, "alice"), Ok("subscription"));
    assert_eq!(urgency(&chat(Some("hi")), "alice"), Ok("body"));
    assert!(urgency(&chat(None), "alice").is_err(), "a chat state waits");
    let error = Element::new("message", ns::CLIENT).with_attr("type", "error");
    assert_eq!(urgency(&error, "alice"), Ok("error"));
    let omemo = Element::new("message", ns::CLIENT)
        .with_child(Element::new("encrypted", "eu.siacs.conversations.axolotl"));
    assert_eq!(urgency(&omemo, "alice"), Ok("urgent payload"));
    let room = |t: &str| {
        Element::new("message", ns::CLIENT)
            .with_attr("type", "groupchat")
            .with_child(Element::new("body", ns::CLIENT).with_text(t))
    };
    assert_eq!(urgency(&room("lunch?"), "alice"), Err("group chat"));
    assert_eq!(urgency(&room("Alice, lunch?"), "alice"), Ok("mention"));
    let carbon = |inner: Element| {
        Element::new("message", ns::CLIENT).with_child(
            Element::new("received", CARBONS)
                .with_child(Element::new("forwarded", FORWARD).with_child(inner)),
        )
    };
    assert_eq!(urgency(&carbon(chat(Some("hi"))), "alice"), Ok("body"));
    assert!(urgency(&carbon(chat(None)), "alice").is_err());
}

fn statuses(out: &[Element]) -> Vec<String> {
    out.iter()
        .map(|e| {
            e.child("status", ns::CLIENT)
                .map(Element::text)
                .or_else(|| body(e))
                .unwrap_or_default()
        })
        .collect()
}

#[test]
fn the_layer_keeps_the_newest_presence_per_contact_in_order() {
    let mut layer = HoldLayer::new(64, "alice");
    layer.inactive = true;
    let mut out = Vec::new();
    for (from, status) in [("bob@x/1", "b1"), ("carol@x/1", "c1"), ("bob@x/1", "b2")] {
        layer.outgoing(presence_from(from, status), &mut out);
    }
    assert!(out.is_empty(), "presence waits while inactive");
    assert_eq!(layer.held(), 2);
    layer.outgoing(chat(None), &mut out);
    assert!(out.is_empty(), "a chat state waits too");
    layer.release(&mut out);
    assert!(out.is_empty(), "nothing is released while inactive");
    layer.inactive = false;
    layer.release(&mut out);
    assert_eq!(statuses(&out), ["c1", "b2", ""]);
    assert_eq!(layer.held(), 0);
}

#[test]
fn a_message_with_a_body_goes_at_once_after_what_waited() {
    let mut layer = HoldLayer::new(64, "alice");
    layer.inactive = true;
    let mut out = Vec::new();
    layer.outgoing(presence_from("bob@x/1", "away"), &mut out);
    layer.outgoing(chat(Some("hello")), &mut out);
    assert_eq!(statuses(&out), ["away", "hello"]);
    assert_eq!(layer.held(), 0);
}

#[test]
fn a_full_layer_flushes_rather_than_drops() {
    let mut layer = HoldLayer::new(3, "alice");
    layer.inactive = true;
    let mut out = Vec::new();
    for i in 0..3 {
        layer.outgoing(
            presence_from(&format!("c{i}@x/1"), &format!("s{i}")),
            &mut out,
        );
    }
    assert!(out.is_empty());
    layer.outgoing(presence_from("c3@x/1", "s3"), &mut out);
    assert_eq!(statuses(&out), ["s0", "s1", "s2", "s3"]);
    assert_eq!(layer.held(), 0);
}

fn directed(to: &str, status: &str) -> Element {
    Element::new("presence", ns::CLIENT)
        .with_attr("to", to)
        .with_child(Element::new("status", ns::CLIENT).with_text(status))
}

/// Sends a nonza and waits until the session has handled it (a ping answered after it).
async fn nonza(c: &mut TestClient, name: &str) {
    c.send(Element::new(name, NS)).await;
    let r = c
        .iq("get", Some(DOMAIN), Element::new("ping", "urn:xmpp:ping"))
        .await;
    assert_eq!(r.attr("type"), Some("result"));
}

fn status_from(e: &Element, who: &str) -> Option<String> {
    let from = e.attr("from")?;
    (e.name == "presence" && from.starts_with(who))
        .then(|| e.child("status", ns::CLIENT).map(Element::text))
        .flatten()
}

/// alice's phone goes inactive; bob and carol change their presence 25 times each; alice
/// hears nothing until she is active again, then one presence from each, the newest. A chat
/// message while inactive arrives at once.
#[tokio::test]
async fn an_inactive_phone_gets_one_presence_per_contact_and_messages_at_once() {
    let h = Harness::new().await;
    for u in ["alice", "bob", "carol"] {
        h.user(u).await;
    }
    let mut alice = h.login("alice", "phone").await;
    let mut bob = h.login("bob", "pc").await;
    let mut carol = h.login("carol", "pc").await;
    alice.available().await;
    let phone = alice.jid.to_string();
    nonza(&mut alice, "inactive").await;

    for i in 0..25 {
        bob.send(directed(&phone, &format!("bob-{i}"))).await;
        carol.send(directed(&phone, &format!("carol-{i}"))).await;
    }
    alice
        .expect_none(
            "a presence while inactive",
            Duration::from_millis(500),
            |e| e.name == "presence",
        )
        .await;
    alice.send(Element::new("active", NS)).await;
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_millis(500);
    while let Ok(e) =
        tokio::time::timeout_at(deadline, alice.expect("presence", |e| e.name == "presence")).await
    {
        seen.push(e);
    }
    let bobs: Vec<_> = seen.iter().filter_map(|e| status_from(e, "bob@")).collect();
    let carols: Vec<_> = seen
        .iter()
        .filter_map(|e| status_from(e, "carol@"))
        .collect();
    assert_eq!(bobs, ["bob-24"]);
    assert_eq!(carols, ["carol-24"]);

    // Inactive again: a chat state waits, a message with a body does not (and the chat state,
    // which came first, comes with it).
    nonza(&mut alice, "inactive").await;
    let mut composing = chat(None);
    composing.set_attr("to", phone.as_str());
    bob.send(composing).await;
    alice
        .expect_none("a chat state", Duration::from_millis(300), |e| {
            e.name == "message"
        })
        .await;
    bob.message(&phone, "are you there?").await;
    let first = alice.expect("a message", |e| e.name == "message").await;
    assert!(body(&first).is_none(), "the held chat state comes first");
    let m = alice.recv().await;
    assert_eq!(body(&m).as_deref(), Some("are you there?"));
}

#[tokio::test]
async fn the_feature_is_offered_and_the_bound_comes_from_config() {
    let h = Harness::with_config("[modules.csi]\nmax_held = 2\n").await;
    let features = h
        .server
        .modules
        .stream_features(&h.server, FeaturePhase::AfterAuth);
    assert!(features.iter().any(|f| f.is("csi", NS)));
    h.user("alice").await;
    h.user("bob").await;
    let mut alice = h.login("alice", "phone").await;
    let mut bob = h.login("bob", "pc").await;
    alice.available().await;
    let phone = alice.jid.to_string();
    nonza(&mut alice, "inactive").await;
    for i in 0..2 {
        let mut m = chat(None);
        m.set_attr("to", phone.as_str());
        m.set_attr("id", format!("state-{i}"));
        bob.send(m).await;
    }
    alice
        .expect_none("a held chat state", Duration::from_millis(300), |e| {
            e.name == "message"
        })
        .await;
    let mut m = chat(None);
    m.set_attr("to", phone.as_str());
    m.set_attr("id", "state-2");
    bob.send(m).await;
    for i in 0..3 {
        let e = alice.expect("a chat state", |e| e.name == "message").await;
        assert_eq!(e.attr("id"), Some(format!("state-{i}").as_str()));
    }
}
