//! PEP through the in-process harness: publish and read with each access model, preconditions,
//! notifications, last items on login, limits and account removal.

use super::form::{DATA_FORMS, NODE_CONFIG, PUBLISH_OPTIONS};
use super::{NS, NS_ERRORS, NS_EVENT, NS_OWNER};
use crate::harness::{Harness, TestClient, DOMAIN};
use crate::storage::{RosterItem, Subscription};
use crate::xml::{ns, Element};
use std::time::Duration;

const DEVICES: &str = "eu.siacs.conversations.axolotl.devicelist";

fn error_condition(e: &Element) -> Option<(String, Option<String>)> {
    let err = e.child("error", ns::CLIENT)?;
    let defined = err
        .elements()
        .find(|c| c.ns == ns::STANZA_ERRORS)?
        .name
        .clone();
    let app = err
        .elements()
        .find(|c| c.ns == NS_ERRORS)
        .map(|c| c.name.clone());
    Some((defined, app))
}

fn options(fields: &[(&str, &str)], form_type: &str) -> Element {
    let field = |var: &str, v: &str| {
        Element::new("field", DATA_FORMS)
            .with_attr("var", var)
            .with_child(Element::new("value", DATA_FORMS).with_text(v))
    };
    let mut x = Element::new("x", DATA_FORMS)
        .with_attr("type", "submit")
        .with_child(field("FORM_TYPE", form_type));
    for (k, v) in fields {
        x.push_child(field(k, v));
    }
    x
}

fn publish(node: &str, id: Option<&str>, text: &str, opts: &[(&str, &str)]) -> Element {
    let mut item =
        Element::new("item", NS).with_child(Element::new("list", "urn:test:pep").with_text(text));
    if let Some(id) = id {
        item.set_attr("id", id);
    }
    let mut p = Element::new("pubsub", NS).with_child(
        Element::new("publish", NS)
            .with_attr("node", node)
            .with_child(item),
    );
    if !opts.is_empty() {
        p.push_child(
            Element::new("publish-options", NS).with_child(options(opts, PUBLISH_OPTIONS)),
        );
    }
    p
}

fn items(node: &str) -> Element {
    Element::new("pubsub", NS).with_child(Element::new("items", NS).with_attr("node", node))
}

fn item_texts(reply: &Element) -> Vec<String> {
    reply
        .child("pubsub", NS)
        .and_then(|p| p.child("items", NS))
        .map(|i| {
            i.elements()
                .map(|it| it.first_element().map(Element::text).unwrap_or_default())
                .collect()
        })
        .unwrap_or_default()
}

fn is_event(e: &Element, node: &str) -> bool {
    e.name == "message"
        && e.child("event", NS_EVENT)
            .and_then(|ev| ev.first_element())
            .is_some_and(|b| b.attr("node") == Some(node))
}

/// `user` lets `contact` see its presence (a `from` subscription), straight in the database.
async fn grant(h: &Harness, user: &str, contact: &str, sub: Subscription) {
    let mut item = RosterItem::new(&format!("{contact}@{DOMAIN}"));
    item.subscription = sub;
    item.in_roster = true;
    h.server.storage.save_roster_item(user, item).await.unwrap();
}

const DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
const INTERESTING: &[&str] = &[DEVICES, "bundles", "n"];

/// Sends available presence with caps asking for `node+notify` of `nodes`, answers the server's
/// disco#info question (each resource has its own software name, so its own `ver`), and waits
/// until the server knows the session's interest.
async fn available_with_caps(h: &Harness, c: &mut TestClient, nodes: &[&str]) {
    let mut query = Element::new("query", DISCO_INFO).with_child(
        Element::new("identity", DISCO_INFO)
            .with_attr("category", "client")
            .with_attr("type", "pc")
            .with_attr("name", format!("test {}", c.jid)),
    );
    for n in nodes {
        query.push_child(
            Element::new("feature", DISCO_INFO).with_attr("var", format!("{n}+notify")),
        );
    }
    let ver = super::interest::ver_of(&query);
    c.send(
        Element::new("presence", ns::CLIENT).with_child(
            Element::new("c", super::interest::CAPS)
                .with_attr("hash", "sha-1")
                .with_attr("node", "urn:test:client")
                .with_attr("ver", ver.clone()),
        ),
    )
    .await;
    let q = c
        .expect("disco#info question", |e| {
            e.name == "iq" && e.child("query", DISCO_INFO).is_some()
        })
        .await;
    assert_eq!(
        q.child("query", DISCO_INFO).and_then(|q| q.attr("node")),
        Some(format!("urn:test:client#{ver}").as_str())
    );
    query.set_attr("node", format!("urn:test:client#{ver}"));
    c.send(
        Element::new("iq", ns::CLIENT)
            .with_attr("type", "result")
            .with_attr("id", q.attr("id").unwrap())
            .with_attr("to", DOMAIN)
            .with_child(query),
    )
    .await;
    for _ in 0..500 {
        let s = h.server.sessions.session(&c.jid).unwrap();
        if super::interest::of(&s).is_some() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    panic!("the server never learnt {}'s caps", c.jid);
}

async fn people(h: &Harness) -> (TestClient, TestClient, TestClient) {
    for u in ["alice", "bob", "carol"] {
        h.user(u).await;
    }
    grant(h, "alice", "bob", Subscription::Both).await;
    grant(h, "bob", "alice", Subscription::Both).await;
    let mut a = h.login("alice", "a").await;
    let mut b = h.login("bob", "b").await;
    let mut c = h.login("carol", "c").await;
    for cl in [&mut a, &mut b, &mut c] {
        available_with_caps(h, cl, INTERESTING).await;
    }
    (a, b, c)
}

const ALICE: &str = "alice@example.test";

#[tokio::test]
async fn the_account_advertises_pep_and_publish_options() {
    let h = Harness::new().await;
    h.user("alice").await;
    let mut a = h.login("alice", "a").await;
    let info = a
        .iq(
            "get",
            Some(ALICE),
            Element::new("query", "http://jabber.org/protocol/disco#info"),
        )
        .await;
    let q = info.first_element().expect("query");
    assert!(q.elements().any(|e| e.name == "identity"
        && e.attr("category") == Some("pubsub")
        && e.attr("type") == Some("pep")));
    let features: Vec<_> = q.elements().filter_map(|e| e.attr("var")).collect();
    assert!(features.contains(&"http://jabber.org/protocol/pubsub#publish-options"));
    assert!(features.contains(&"http://jabber.org/protocol/pubsub#access-open"));
}

#[tokio::test]
async fn presence_access_lets_subscribers_read_and_notifies_them_but_not_strangers() {
    let h = Harness::new().await;
    let (mut a, mut b, mut c) = people(&h).await;
    let r = a
        .iq("set", None, publish(DEVICES, Some("current"), "1", &[]))
        .await;
    assert_eq!(r.attr("type"), Some("result"), "{}", r.to_xml(ns::CLIENT));
    let id = r
        .child("pubsub", NS)
        .and_then(|p| p.child("publish", NS))
        .and_then(|p| p.child("item", NS));
    assert_eq!(id.and_then(|i| i.attr("id")), Some("current"));
    a.expect("own notification", |e| is_event(e, DEVICES)).await;
    let n = b
        .expect("contact's notification", |e| is_event(e, DEVICES))
        .await;
    assert_eq!(n.attr("from"), Some(ALICE));
    c.expect_none(
        "a notification for a stranger",
        Duration::from_millis(200),
        |e| is_event(e, DEVICES),
    )
    .await;

    let r = b.iq("get", Some(ALICE), items(DEVICES)).await;
    assert_eq!(item_texts(&r), vec!["1"]);
    let r = c.iq("get", Some(ALICE), items(DEVICES)).await;
    assert_eq!(
        error_condition(&r),
        Some((
            "not-authorized".into(),
            Some("presence-subscription-required".into())
        ))
    );
    // Nobody but the owner writes.
    let r = b
        .iq("set", Some(ALICE), publish(DEVICES, None, "x", &[]))
        .await;
    assert_eq!(error_condition(&r).map(|e| e.0), Some("forbidden".into()));
    // A node that does not exist.
    let r = b.iq("get", Some(ALICE), items("nothing")).await;
    assert_eq!(
        error_condition(&r).map(|e| e.0),
        Some("item-not-found".into())
    );
}

#[tokio::test]
async fn publish_options_create_open_nodes_and_refuse_unmet_preconditions() {
    let h = Harness::new().await;
    let (mut a, _b, mut c) = people(&h).await;
    let open = [("pubsub#access_model", "open"), ("pubsub#max_items", "max")];
    let r = a
        .iq("set", None, publish("bundles", Some("7"), "bundle", &open))
        .await;
    assert_eq!(r.attr("type"), Some("result"));
    let r = c.iq("get", Some(ALICE), items("bundles")).await;
    assert_eq!(item_texts(&r), vec!["bundle"]);
    let r = a
        .iq(
            "set",
            None,
            publish(
                "bundles",
                Some("7"),
                "b2",
                &[("pubsub#access_model", "presence")],
            ),
        )
        .await;
    assert_eq!(
        error_condition(&r),
        Some(("conflict".into(), Some("precondition-not-met".into())))
    );
    let r = a
        .iq(
            "set",
            None,
            publish(
                "bundles",
                Some("7"),
                "b2",
                &[("pubsub#access_model", "authorize")],
            ),
        )
        .await;
    assert_eq!(
        error_condition(&r),
        Some(("conflict".into(), Some("precondition-not-met".into())))
    );
    // The node changes to whitelist: a stranger may no longer read.
    let cfg = Element::new("pubsub", NS_OWNER).with_child(
        Element::new("configure", NS_OWNER)
            .with_attr("node", "bundles")
            .with_child(options(
                &[("pubsub#access_model", "whitelist")],
                NODE_CONFIG,
            )),
    );
    assert_eq!(a.iq("set", None, cfg).await.attr("type"), Some("result"));
    let r = c.iq("get", Some(ALICE), items("bundles")).await;
    assert_eq!(
        error_condition(&r),
        Some(("not-allowed".into(), Some("closed-node".into())))
    );
    let get = Element::new("pubsub", NS_OWNER)
        .with_child(Element::new("configure", NS_OWNER).with_attr("node", "bundles"));
    let r = a.iq("get", None, get).await;
    assert!(
        r.to_xml(ns::CLIENT).contains("whitelist"),
        "{}",
        r.to_xml(ns::CLIENT)
    );
}

#[tokio::test]
async fn items_are_trimmed_retrieved_retracted_purged_and_deleted() {
    let h = Harness::new().await;
    let (mut a, mut b, _c) = people(&h).await;
    for i in 1..=4 {
        let r = a
            .iq(
                "set",
                None,
                publish(
                    "n",
                    Some(&format!("i{i}")),
                    &i.to_string(),
                    &[("pubsub#max_items", "3")],
                ),
            )
            .await;
        assert_eq!(r.attr("type"), Some("result"));
    }
    assert_eq!(
        item_texts(&a.iq("get", None, items("n")).await),
        vec!["4", "3", "2"]
    );
    let mut two = items("n");
    two.child_mut("items", NS)
        .unwrap()
        .set_attr("max_items", "2");
    assert_eq!(item_texts(&a.iq("get", None, two).await), vec!["4", "3"]);
    let mut by_id = items("n");
    by_id
        .child_mut("items", NS)
        .unwrap()
        .push_child(Element::new("item", NS).with_attr("id", "i2"));
    assert_eq!(
        item_texts(&b.iq("get", Some(ALICE), by_id).await),
        vec!["2"]
    );

    let retract = Element::new("pubsub", NS).with_child(
        Element::new("retract", NS)
            .with_attr("node", "n")
            .with_attr("notify", "true")
            .with_child(Element::new("item", NS).with_attr("id", "i4")),
    );
    assert_eq!(
        a.iq("set", None, retract.clone()).await.attr("type"),
        Some("result")
    );
    b.expect("retraction", |e| {
        is_event(e, "n") && e.to_xml(ns::CLIENT).contains("retract")
    })
    .await;
    assert_eq!(
        error_condition(&a.iq("set", None, retract).await).map(|e| e.0),
        Some("item-not-found".into())
    );

    let owner = |op: &str| {
        Element::new("pubsub", NS_OWNER)
            .with_child(Element::new(op, NS_OWNER).with_attr("node", "n"))
    };
    assert_eq!(
        a.iq("set", None, owner("purge")).await.attr("type"),
        Some("result")
    );
    assert!(item_texts(&a.iq("get", None, items("n")).await).is_empty());
    assert_eq!(
        a.iq("set", None, owner("delete")).await.attr("type"),
        Some("result")
    );
    b.expect("deletion", |e| {
        is_event(e, "n") && e.to_xml(ns::CLIENT).contains("delete")
    })
    .await;
    let r = a.iq("get", None, items("n")).await;
    assert_eq!(
        error_condition(&r).map(|e| e.0),
        Some("item-not-found".into())
    );
}

#[tokio::test]
async fn the_last_item_arrives_on_login_and_account_removal_removes_nodes() {
    let h = Harness::new().await;
    let (mut a, b, _c) = people(&h).await;
    a.iq("set", None, publish(DEVICES, Some("current"), "dev", &[]))
        .await;
    b.logout().await;
    let mut b = h.login("bob", "b2").await;
    available_with_caps(&h, &mut b, INTERESTING).await;
    let n = b.expect("last item", |e| is_event(e, DEVICES)).await;
    assert!(n.to_xml(ns::CLIENT).contains("dev"));
    // A client without interest in the node gets neither the last item nor notifications.
    let mut b3 = h.login("bob", "b3").await;
    available_with_caps(&h, &mut b3, &["bundles"]).await;
    a.iq("set", None, publish(DEVICES, Some("current"), "dev2", &[]))
        .await;
    b.expect("notification", |e| {
        is_event(e, DEVICES) && e.to_xml(ns::CLIENT).contains("dev2")
    })
    .await;
    b3.expect_none(
        "an unwanted notification",
        Duration::from_millis(200),
        |e| is_event(e, DEVICES),
    )
    .await;

    h.server.storage.delete_user("alice").await.unwrap();
    let left: i64 = h
        .server
        .storage
        .call(|conn| Ok(conn.query_row("SELECT count(*) FROM pep_nodes", [], |r| r.get(0))?))
        .await
        .unwrap();
    assert_eq!(left, 0);
}

#[tokio::test]
async fn limits_on_item_size_and_node_count() {
    let h = Harness::with_config("[modules.pep]\nitem_bytes = 100\nnodes_per_account = 1\n").await;
    h.user("alice").await;
    let mut a = h.login("alice", "a").await;
    let r = a
        .iq("set", None, publish("one", None, &"x".repeat(200), &[]))
        .await;
    assert_eq!(
        error_condition(&r),
        Some(("not-acceptable".into(), Some("payload-too-big".into())))
    );
    assert_eq!(
        a.iq("set", None, publish("one", None, "ok", &[]))
            .await
            .attr("type"),
        Some("result")
    );
    let r = a.iq("set", None, publish("two", None, "no", &[])).await;
    assert_eq!(
        error_condition(&r).map(|e| e.0),
        Some("resource-constraint".into())
    );
    // A publish without a node.
    let r = a.iq("set", None, publish("", None, "no", &[])).await;
    assert_eq!(
        error_condition(&r),
        Some(("bad-request".into(), Some("nodeid-required".into())))
    );
}

#[tokio::test]
async fn a_client_is_asked_about_its_caps_once_at_a_time() {
    let h = Harness::new().await;
    h.user("alice").await;
    let mut a = h.login("alice", "a").await;
    let presence = || {
        Element::new("presence", ns::CLIENT).with_child(
            Element::new("c", super::interest::CAPS)
                .with_attr("hash", "sha-1")
                .with_attr("node", "urn:test:client")
                .with_attr("ver", "bm90IGEgcmVhbCBoYXNo"),
        )
    };
    a.send(presence()).await;
    a.send(presence()).await;
    let is_question = |e: &Element| e.name == "iq" && e.child("query", DISCO_INFO).is_some();
    let q = a.expect("the caps question", is_question).await;
    a.expect_none("a second question", Duration::from_millis(300), is_question)
        .await;
    // A wrong answer teaches nothing: no interest, nothing cached.
    a.send(
        Element::new("iq", ns::CLIENT)
            .with_attr("type", "result")
            .with_attr("id", q.attr("id").unwrap())
            .with_attr("to", DOMAIN)
            .with_child(
                Element::new("query", DISCO_INFO).with_child(
                    Element::new("feature", DISCO_INFO).with_attr("var", "urn:x+notify"),
                ),
            ),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let s = h.server.sessions.session(&a.jid).unwrap();
    assert!(super::interest::of(&s).is_none());
}

#[tokio::test]
async fn a_new_subscriber_gets_the_last_items() {
    let h = Harness::new().await;
    h.user("alice").await;
    h.user("dave").await;
    let mut a = h.login("alice", "a").await;
    let mut d = h.login("dave", "d").await;
    available_with_caps(&h, &mut a, INTERESTING).await;
    available_with_caps(&h, &mut d, INTERESTING).await;
    a.iq("set", None, publish(DEVICES, Some("current"), "dl", &[]))
        .await;
    d.expect_none(
        "an item before subscribing",
        Duration::from_millis(200),
        |e| is_event(e, DEVICES),
    )
    .await;
    let presence = |to: &str, kind: &str| {
        Element::new("presence", ns::CLIENT)
            .with_attr("to", to)
            .with_attr("type", kind)
    };
    d.send(presence(ALICE, "subscribe")).await;
    a.expect("request", |e| e.attr("type") == Some("subscribe"))
        .await;
    a.send(presence("dave@example.test", "subscribed")).await;
    let n = d.expect("the last item", |e| is_event(e, DEVICES)).await;
    assert!(n.to_xml(ns::CLIENT).contains("dl"));
}

#[path = "subscription_tests.rs"]
mod subscriptions;
