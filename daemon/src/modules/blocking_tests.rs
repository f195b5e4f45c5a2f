//! Blocking through the in-process harness: both directions, all three stanza kinds, pushes,
//! and everything back after unblocking.

use super::{ERRORS, NS};
use crate::harness::{body, Harness, TestClient, DOMAIN};
use crate::xml::{ns, Element};
use std::time::Duration;

fn item(jid: &str) -> Element {
    Element::new("item", NS).with_attr("jid", jid)
}

fn error_condition(e: &Element) -> Option<String> {
    let err = e.child("error", ns::CLIENT)?;
    err.elements()
        .find(|c| c.ns == ns::STANZA_ERRORS)
        .map(|c| c.name.clone())
}

async fn friends(alice: &mut TestClient, bob: &mut TestClient) {
    let (a, b) = (format!("alice@{DOMAIN}"), format!("bob@{DOMAIN}"));
    let p = |to: &str, kind: &str| {
        Element::new("presence", ns::CLIENT)
            .with_attr("to", to)
            .with_attr("type", kind)
    };
    alice.send(p(&b, "subscribe")).await;
    bob.expect("subscribe", |e| e.attr("type") == Some("subscribe"))
        .await;
    bob.send(p(&a, "subscribed")).await;
    bob.send(p(&a, "subscribe")).await;
    alice
        .expect("subscribe", |e| e.attr("type") == Some("subscribe"))
        .await;
    alice.send(p(&b, "subscribed")).await;
    bob.expect("alice's presence", |e| {
        e.name == "presence"
            && e.attr("type").is_none()
            && e.attr("from").is_some_and(|f| f.starts_with("alice@"))
    })
    .await;
}

#[tokio::test]
async fn blocked_means_nothing_passes_either_way_until_unblocked() {
    let h = Harness::new().await;
    h.user("alice").await;
    h.user("bob").await;
    let mut alice = h.login("alice", "phone").await;
    let mut alice2 = h.login("alice", "laptop").await;
    let mut bob = h.login("bob", "pc").await;
    for c in [&mut alice, &mut alice2, &mut bob] {
        c.available().await;
    }
    friends(&mut alice, &mut bob).await;
    let (a, b) = (format!("alice@{DOMAIN}"), format!("bob@{DOMAIN}"));

    let r = alice
        .iq("set", None, Element::new("block", NS).with_child(item(&b)))
        .await;
    assert_eq!(r.attr("type"), Some("result"), "{}", r.to_xml(ns::CLIENT));
    let push = alice2
        .expect("the push", |e| {
            e.name == "iq" && e.child("block", NS).is_some()
        })
        .await;
    assert_eq!(
        push.child("block", NS)
            .unwrap()
            .child("item", NS)
            .unwrap()
            .attr("jid"),
        Some(b.as_str())
    );
    bob.expect("alice vanishing", |e| {
        e.attr("type") == Some("unavailable") && e.attr("from").is_some_and(|f| f.starts_with(&a))
    })
    .await;
    let list = alice.iq("get", None, Element::new("blocklist", NS)).await;
    let items: Vec<_> = list
        .child("blocklist", NS)
        .unwrap()
        .elements()
        .filter_map(|i| i.attr("jid").map(str::to_string))
        .collect();
    assert_eq!(items, vec![b.clone()]);

    // bob -> alice: refused as if alice did not exist.
    bob.message(&a, "are you there?").await;
    let e = bob
        .expect("a bounce", |e| e.attr("type") == Some("error"))
        .await;
    assert_eq!(error_condition(&e).as_deref(), Some("service-unavailable"));
    let ping = Element::new("ping", "urn:xmpp:ping");
    let r = bob
        .iq("get", Some(&alice.jid.to_string()), ping.clone())
        .await;
    assert_eq!(error_condition(&r).as_deref(), Some("service-unavailable"));
    // alice -> bob: refused with the reason.
    alice.message(&b, "hello?").await;
    let e = alice
        .expect("a bounce", |e| e.attr("type") == Some("error"))
        .await;
    assert_eq!(error_condition(&e).as_deref(), Some("not-acceptable"));
    assert!(e
        .child("error", ns::CLIENT)
        .unwrap()
        .child("blocked", ERRORS)
        .is_some());
    let r = alice
        .iq("get", Some(&bob.jid.to_string()), ping.clone())
        .await;
    assert_eq!(error_condition(&r).as_deref(), Some("not-acceptable"));
    // Presence: bob's changes do not reach alice, alice's do not reach bob.
    bob.send(
        Element::new("presence", ns::CLIENT)
            .with_child(Element::new("status", ns::CLIENT).with_text("blocked status")),
    )
    .await;
    alice
        .send(
            Element::new("presence", ns::CLIENT)
                .with_child(Element::new("status", ns::CLIENT).with_text("hidden status")),
        )
        .await;
    let quiet = Duration::from_millis(300);
    alice
        .expect_none("bob's presence", quiet, |e| {
            e.name == "presence" && e.attr("from").is_some_and(|f| f.starts_with(&b))
        })
        .await;
    bob.expect_none("alice's presence or message", quiet, |e| {
        e.attr("from").is_some_and(|f| f.starts_with(&a))
    })
    .await;

    // Unblock: presence comes back, messages flow.
    let r = alice
        .iq(
            "set",
            None,
            Element::new("unblock", NS).with_child(item(&b)),
        )
        .await;
    assert_eq!(r.attr("type"), Some("result"));
    alice2
        .expect("the unblock push", |e| {
            e.name == "iq" && e.child("unblock", NS).is_some()
        })
        .await;
    bob.expect("alice again", |e| {
        e.name == "presence"
            && e.attr("type").is_none()
            && e.attr("from").is_some_and(|f| f.starts_with(&a))
    })
    .await;
    alice
        .expect("bob again", |e| {
            e.name == "presence"
                && e.attr("type").is_none()
                && e.attr("from").is_some_and(|f| f.starts_with(&b))
        })
        .await;
    bob.message(&alice.jid.to_string(), "back").await;
    let m = alice.expect("the message", |e| body(e).is_some()).await;
    assert_eq!(body(&m).as_deref(), Some("back"));
    // An IQ reaches alice's client again (it answers itself; the harness client does not).
    bob.send(
        Element::new("iq", ns::CLIENT)
            .with_attr("type", "get")
            .with_attr("id", "after")
            .with_attr("to", alice.jid.to_string())
            .with_child(ping),
    )
    .await;
    alice
        .expect("bob's IQ", |e| {
            e.name == "iq" && e.attr("id") == Some("after")
        })
        .await;
}

#[tokio::test]
async fn a_whole_domain_can_be_blocked_and_bad_items_are_refused() {
    let h = Harness::new().await;
    h.user("alice").await;
    h.user("bob").await;
    let mut alice = h.login("alice", "a").await;
    let mut bob = h.login("bob", "b").await;
    alice.available().await;
    bob.available().await;
    let r = alice
        .iq(
            "set",
            None,
            Element::new("block", NS).with_child(item("spam.example")),
        )
        .await;
    assert_eq!(r.attr("type"), Some("result"));
    // Another domain is blocked, ours is not: bob still gets through.
    bob.message(&alice.jid.to_string(), "still here").await;
    alice.expect("bob's message", |e| body(e).is_some()).await;
    let r = alice
        .iq(
            "set",
            None,
            Element::new("block", NS).with_child(item("@@bad")),
        )
        .await;
    assert_eq!(error_condition(&r).as_deref(), Some("jid-malformed"));
    let r = alice.iq("set", None, Element::new("block", NS)).await;
    assert_eq!(error_condition(&r).as_deref(), Some("bad-request"));
    let list: std::collections::HashSet<String> = [format!("bob@{DOMAIN}/b")].into_iter().collect();
    assert!(super::blocks(&list, &bob.jid));
    assert!(!super::blocks(
        &list,
        &crate::jid::Jid::parse(&format!("bob@{DOMAIN}/other")).unwrap()
    ));
    let list: std::collections::HashSet<String> = [DOMAIN.to_string()].into_iter().collect();
    assert!(super::blocks(&list, &bob.jid));
}
