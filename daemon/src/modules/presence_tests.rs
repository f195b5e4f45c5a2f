//! Presence and subscriptions through the in-process harness.

use crate::harness::{Harness, TestClient, DOMAIN};
use crate::xml::{ns, Element};
use std::time::Duration;

fn presence(to: &str, kind: Option<&str>) -> Element {
    let mut p = Element::new("presence", ns::CLIENT).with_attr("to", to);
    if let Some(k) = kind {
        p.set_attr("type", k);
    }
    p
}

fn from_is(e: &Element, prefix: &str) -> bool {
    e.attr("from").is_some_and(|f| f.starts_with(prefix))
}

async fn befriend(alice: &mut TestClient, bob: &mut TestClient) {
    let (a, b) = (format!("alice@{DOMAIN}"), format!("bob@{DOMAIN}"));
    alice.send(presence(&b, Some("subscribe"))).await;
    bob.expect("subscribe", |e| e.attr("type") == Some("subscribe"))
        .await;
    bob.send(presence(&a, Some("subscribed"))).await;
    bob.send(presence(&a, Some("subscribe"))).await;
    alice
        .expect("subscribe", |e| e.attr("type") == Some("subscribe"))
        .await;
    alice.send(presence(&b, Some("subscribed"))).await;
}

#[tokio::test]
async fn contacts_see_each_other_come_and_go() {
    let h = Harness::new().await;
    h.user("alice").await;
    h.user("bob").await;
    let mut alice = h.login("alice", "a").await;
    let mut bob = h.login("bob", "b").await;
    alice.available().await;
    bob.available().await;
    befriend(&mut alice, &mut bob).await;
    // The presence each sent on approval may have passed while the other waited for the
    // request; a fresh broadcast shows that both now see each other.
    let (a, b) = (format!("alice@{DOMAIN}"), format!("bob@{DOMAIN}"));
    alice.available().await;
    bob.expect("alice online", |e| {
        e.name == "presence" && e.attr("type").is_none() && from_is(e, &a)
    })
    .await;
    bob.available().await;
    alice
        .expect("bob online", |e| {
            e.name == "presence" && e.attr("type").is_none() && from_is(e, &b)
        })
        .await;

    // A second device of bob gets alice's presence on login (the probe is answered locally).
    let mut bob2 = h.login("bob", "b2").await;
    bob2.send(Element::new("presence", ns::CLIENT)).await;
    bob2.expect("alice's presence", |e| {
        e.name == "presence" && from_is(e, &a)
    })
    .await;

    bob2.drop_link().await;
    alice
        .expect("bob2 gone", |e| {
            e.attr("type") == Some("unavailable") && e.attr("from") == Some(&*format!("{b}/b2"))
        })
        .await;
    bob.logout().await;
    alice
        .expect("bob gone", |e| {
            e.attr("type") == Some("unavailable") && e.attr("from") == Some(&*format!("{b}/b"))
        })
        .await;
}

#[tokio::test]
async fn a_request_waits_for_the_next_login_and_directed_presence_is_withdrawn() {
    let h = Harness::new().await;
    h.user("alice").await;
    h.user("bob").await;
    let mut alice = h.login("alice", "a").await;
    alice.available().await;
    let b = format!("bob@{DOMAIN}");
    alice.send(presence(&b, Some("subscribe"))).await;
    // bob was away; the request reaches him at initial presence.
    let mut bob = h.login("bob", "b").await;
    bob.send(Element::new("presence", ns::CLIENT)).await;
    bob.expect("the waiting request", |e| {
        e.attr("type") == Some("subscribe")
    })
    .await;

    // Directed presence to someone without a subscription, then logout: they see it end.
    let bob_full = bob.jid.to_string();
    alice.send(presence(&bob_full, None)).await;
    bob.expect("directed presence", |e| {
        e.name == "presence" && e.attr("type").is_none() && from_is(e, "alice@")
    })
    .await;
    alice.logout().await;
    bob.expect("directed unavailable", |e| {
        e.attr("type") == Some("unavailable") && from_is(e, "alice@")
    })
    .await;
    bob.expect_none(
        "anything more from alice",
        Duration::from_millis(200),
        |e| from_is(e, "alice@"),
    )
    .await;
}

/// Presence with a contact on another server, through a route standing in for federation.
#[tokio::test]
async fn presence_and_subscriptions_cross_to_other_domains() {
    use crate::harness::DomainSink;
    use std::sync::Arc;
    let h = Harness::new().await;
    let far = Arc::new(DomainSink::default());
    h.server.domains.set_remote(far.clone());
    h.user("alice").await;
    let a = format!("alice@{DOMAIN}");
    let mut alice = h.login("alice", "a").await;
    alice.available().await;
    let is = |e: &Element, kind: &str, to: &str| {
        e.name == "presence" && e.attr("type") == Some(kind) && e.attr("to") == Some(to)
    };

    // Both ways subscribed, as two servers do it.
    alice
        .send(presence("bob@far.example", Some("subscribe")))
        .await;
    let sub = far
        .expect("subscribe", |e| is(e, "subscribe", "bob@far.example"))
        .await;
    assert_eq!(
        sub.attr("from"),
        Some(a.as_str()),
        "subscriptions leave from the bare JID"
    );
    let from_bob = |kind: &str| presence(&a, Some(kind)).with_attr("from", "bob@far.example");
    crate::delivery::route(&h.server, from_bob("subscribed"), None).await;
    alice
        .expect("subscribed", |e| e.attr("type") == Some("subscribed"))
        .await;
    crate::delivery::route(&h.server, from_bob("subscribe"), None).await;
    alice
        .expect("bob's request", |e| e.attr("type") == Some("subscribe"))
        .await;
    alice
        .send(presence("bob@far.example", Some("subscribed")))
        .await;
    far.expect("approval", |e| is(e, "subscribed", "bob@far.example"))
        .await;

    // A new device: a probe for bob leaves, and its presence reaches bob's server.
    let mut alice2 = h.login("alice", "a2").await;
    alice2.send(Element::new("presence", ns::CLIENT)).await;
    far.expect("probe", |e| is(e, "probe", "bob@far.example"))
        .await;
    far.expect("alice2's presence", |e| {
        e.attr("type").is_none()
            && e.attr("to") == Some("bob@far.example")
            && e.attr("from") == Some(&*format!("{a}/a2"))
    })
    .await;

    // bob's server probes: it gets both devices; a stranger's probe learns nothing.
    let probe = |from: &str| {
        Element::new("presence", ns::CLIENT)
            .with_attr("type", "probe")
            .with_attr("from", from)
            .with_attr("to", a.as_str())
    };
    crate::delivery::route(&h.server, probe("bob@far.example/x"), None).await;
    for res in ["a", "a2"] {
        let full = format!("{a}/{res}");
        far.expect("an answer to the probe", |e| {
            e.attr("type").is_none()
                && e.attr("from") == Some(full.as_str())
                && e.attr("to") == Some("bob@far.example/x")
        })
        .await;
    }
    crate::delivery::route(&h.server, probe("eve@far.example"), None).await;
    far.expect("unsubscribed for a stranger", |e| {
        is(e, "unsubscribed", "eve@far.example")
    })
    .await;
    assert!(!far.has(|e| e.attr("to") == Some("eve@far.example") && e.attr("type").is_none()));
    alice
        .expect_none(
            "no probe reaches a client",
            Duration::from_millis(300),
            |e| e.attr("type") == Some("probe"),
        )
        .await;
}
