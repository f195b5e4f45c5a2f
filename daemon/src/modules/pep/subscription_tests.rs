//! Explicit subscriptions and affiliations (XEP-0060 §5.6, §5.7, §6.1, §6.2, §8.8, §8.9), with
//! the helpers of `pep::tests`.

use super::*;

fn op(ns_: &str, name: &str, node: Option<&str>, jid: Option<&str>) -> Element {
    let mut el = Element::new(name, ns_);
    if let Some(n) = node {
        el.set_attr("node", n);
    }
    if let Some(j) = jid {
        el.set_attr("jid", j);
    }
    Element::new("pubsub", ns_).with_child(el)
}

const CAROL: &str = "carol@example.test";

/// The `(jid, subscription)` pairs of a subscriptions answer.
fn listed(r: &Element, ns_: &str) -> Vec<(String, String)> {
    r.child("pubsub", ns_)
        .and_then(|p| p.first_element())
        .map(|l| {
            l.elements()
                .map(|s| {
                    (
                        s.attr("jid")
                            .or(s.attr("node"))
                            .unwrap_or_default()
                            .to_string(),
                        s.attr("subscription")
                            .or(s.attr("affiliation"))
                            .unwrap_or_default()
                            .to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn a_stranger_subscribes_explicitly_gets_the_last_item_and_notifications_until_it_leaves() {
    let h = Harness::new().await;
    let (mut a, _b, mut c) = people(&h).await;
    let open = [("pubsub#access_model", "open")];
    a.iq("set", None, publish("status", Some("s1"), "first", &open))
        .await;
    // carol's caps do not ask for "status": only the explicit subscription brings it.
    let r = c
        .iq(
            "set",
            Some(ALICE),
            op(NS, "subscribe", Some("status"), Some(CAROL)),
        )
        .await;
    assert_eq!(r.attr("type"), Some("result"), "{}", r.to_xml(ns::CLIENT));
    let sub = r
        .child("pubsub", NS)
        .and_then(|p| p.child("subscription", NS));
    assert_eq!(sub.and_then(|s| s.attr("subscription")), Some("subscribed"));
    let last = c.expect("the last item", |e| is_event(e, "status")).await;
    assert!(last.to_xml(ns::CLIENT).contains("first"));

    a.iq("set", None, publish("status", Some("s2"), "second", &[]))
        .await;
    let n = c.expect("a notification", |e| is_event(e, "status")).await;
    assert!(n.to_xml(ns::CLIENT).contains("second"));

    // Her own subscriptions, as she sees them; nobody else's.
    let r = c
        .iq("get", Some(ALICE), op(NS, "subscriptions", None, None))
        .await;
    assert_eq!(
        listed(&r, NS),
        vec![(CAROL.to_string(), "subscribed".to_string())]
    );

    let r = c
        .iq(
            "set",
            Some(ALICE),
            op(NS, "unsubscribe", Some("status"), Some(CAROL)),
        )
        .await;
    assert_eq!(r.attr("type"), Some("result"));
    a.iq("set", None, publish("status", Some("s3"), "third", &[]))
        .await;
    c.expect_none(
        "a notification after leaving",
        Duration::from_millis(200),
        |e| is_event(e, "status"),
    )
    .await;
    let r = c
        .iq(
            "set",
            Some(ALICE),
            op(NS, "unsubscribe", Some("status"), Some(CAROL)),
        )
        .await;
    assert_eq!(
        error_condition(&r),
        Some(("unexpected-request".into(), Some("not-subscribed".into())))
    );
}

#[tokio::test]
async fn subscribing_is_refused_as_xep_0060_says() {
    let h = Harness::new().await;
    let (mut a, _b, mut c) = people(&h).await;
    a.iq("set", None, publish(DEVICES, Some("current"), "1", &[]))
        .await;
    a.iq(
        "set",
        None,
        publish("secret", None, "s", &[("pubsub#access_model", "whitelist")]),
    )
    .await;
    let cases = [
        (
            DEVICES,
            "bob@example.test",
            ("bad-request", Some("invalid-jid")),
        ),
        (
            DEVICES,
            CAROL,
            ("not-authorized", Some("presence-subscription-required")),
        ),
        ("secret", CAROL, ("not-allowed", Some("closed-node"))),
        ("nothing", CAROL, ("item-not-found", None)),
    ];
    for (node, jid, (cond, app)) in cases {
        let r = c
            .iq(
                "set",
                Some(ALICE),
                op(NS, "subscribe", Some(node), Some(jid)),
            )
            .await;
        assert_eq!(
            error_condition(&r),
            Some((cond.to_string(), app.map(str::to_string))),
            "{node} as {jid}"
        );
    }
    // Only the owner sees or changes subscribers and affiliations.
    for name in ["subscriptions", "affiliations"] {
        let r = c
            .iq("get", Some(ALICE), op(NS_OWNER, name, Some(DEVICES), None))
            .await;
        assert_eq!(error_condition(&r).map(|e| e.0), Some("forbidden".into()));
    }
}

#[tokio::test]
async fn the_owner_lists_and_manages_subscribers_and_reads_affiliations() {
    let h = Harness::new().await;
    let (mut a, _b, mut c) = people(&h).await;
    let open = [("pubsub#access_model", "open")];
    a.iq("set", None, publish("status", None, "x", &open)).await;
    c.iq(
        "set",
        Some(ALICE),
        op(NS, "subscribe", Some("status"), Some(CAROL)),
    )
    .await;
    let r = a
        .iq(
            "get",
            None,
            op(NS_OWNER, "subscriptions", Some("status"), None),
        )
        .await;
    let mut subs = listed(&r, NS_OWNER);
    subs.sort();
    let s = |j: &str| (j.to_string(), "subscribed".to_string());
    // alice herself and bob through presence (XEP-0163), carol explicitly.
    assert_eq!(subs, vec![s(ALICE), s("bob@example.test"), s(CAROL)]);

    // The owner removes carol's subscription (§8.8.2).
    let mut set = op(NS_OWNER, "subscriptions", Some("status"), None);
    set.child_mut("subscriptions", NS_OWNER)
        .unwrap()
        .push_child(
            Element::new("subscription", NS_OWNER)
                .with_attr("jid", CAROL)
                .with_attr("subscription", "none"),
        );
    assert_eq!(a.iq("set", None, set).await.attr("type"), Some("result"));
    let r = c
        .iq("get", Some(ALICE), op(NS, "subscriptions", None, None))
        .await;
    assert!(listed(&r, NS).is_empty());

    // Affiliations: the owner owns every node; others have none.
    let r = a.iq("get", None, op(NS, "affiliations", None, None)).await;
    assert_eq!(
        listed(&r, NS),
        vec![("status".to_string(), "owner".to_string())]
    );
    let r = c
        .iq("get", Some(ALICE), op(NS, "affiliations", None, None))
        .await;
    assert!(listed(&r, NS).is_empty());
    let r = a
        .iq(
            "get",
            None,
            op(NS_OWNER, "affiliations", Some("status"), None),
        )
        .await;
    assert_eq!(
        listed(&r, NS_OWNER),
        vec![s(ALICE).0]
            .into_iter()
            .map(|j| (j, "owner".to_string()))
            .collect::<Vec<_>>()
    );
    let r = a
        .iq(
            "set",
            None,
            op(NS_OWNER, "affiliations", Some("status"), None),
        )
        .await;
    assert_eq!(
        error_condition(&r),
        Some(("feature-not-implemented".into(), Some("unsupported".into())))
    );
}

#[tokio::test]
async fn a_subscriber_who_loses_access_gets_nothing_and_subscribers_are_bounded() {
    let h = Harness::with_config("[modules.pep]\nsubscriptions_per_node = 1\n").await;
    let (mut a, mut b, mut c) = people(&h).await;
    // bob (a contact) subscribes explicitly to a presence node he did not ask for in caps.
    a.iq("set", None, publish("mood", None, "happy", &[])).await;
    let r = b
        .iq(
            "set",
            Some(ALICE),
            op(NS, "subscribe", Some("mood"), Some("bob@example.test/b")),
        )
        .await;
    assert_eq!(r.attr("type"), Some("result"), "{}", r.to_xml(ns::CLIENT));
    b.expect("the last item", |e| is_event(e, "mood")).await;
    // The node is full.
    a.iq(
        "set",
        None,
        publish("mood", None, "x", &[("pubsub#access_model", "presence")]),
    )
    .await;
    b.expect("a notification", |e| is_event(e, "mood")).await;
    grant(&h, "alice", "carol", Subscription::Both).await;
    let r = c
        .iq(
            "set",
            Some(ALICE),
            op(NS, "subscribe", Some("mood"), Some(CAROL)),
        )
        .await;
    assert_eq!(
        error_condition(&r),
        Some((
            "policy-violation".into(),
            Some("too-many-subscriptions".into())
        ))
    );
    // alice no longer shares her presence with bob: his subscription stays but is not served.
    grant(&h, "alice", "bob", Subscription::None).await;
    a.iq("set", None, publish("mood", None, "sad", &[])).await;
    b.expect_none(
        "a notification without access",
        Duration::from_millis(200),
        |e| is_event(e, "mood"),
    )
    .await;
}
