use super::notify::{verdict, Verdict};
use super::*;
use crate::harness::{body, Harness, TestClient, DOMAIN};
use crate::iq_tracker::IqError;
use std::collections::HashMap;
use std::time::Duration;

const SM: &str = "urn:xmpp:sm:3";
const DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
const QUIET: Duration = Duration::from_millis(400);

fn app_jid() -> String {
    format!("app@{DOMAIN}/srv")
}

fn enable_el(jid: &str, node: &str) -> Element {
    Element::new("enable", NS)
        .with_attr("jid", jid)
        .with_attr("node", node)
}

fn options_form(secret: &str) -> Element {
    Element::new("x", DATA_FORMS)
        .with_attr("type", "submit")
        .with_child(
            Element::new("field", DATA_FORMS)
                .with_attr("var", "FORM_TYPE")
                .with_child(Element::new("value", DATA_FORMS).with_text(PUBLISH_OPTIONS)),
        )
        .with_child(
            Element::new("field", DATA_FORMS)
                .with_attr("var", "secret")
                .with_child(Element::new("value", DATA_FORMS).with_text(secret)),
        )
}

/// Sends an IQ set with `payload` to the own account and returns the reply's type.
async fn set(c: &mut TestClient, payload: Element) -> Element {
    c.iq("set", None, payload).await
}

fn condition(reply: &Element) -> Option<String> {
    let err = reply.child("error", ns::CLIENT)?;
    err.elements()
        .find(|c| c.ns == ns::STANZA_ERRORS)
        .map(|c| c.name.clone())
}

fn is_push(e: &Element) -> bool {
    e.name == "iq" && e.attr("type") == Some("set") && e.child("pubsub", PUBSUB).is_some()
}

/// The summary form's fields of a publish IQ.
fn fields(iq: &Element) -> HashMap<String, String> {
    let form = iq
        .child("pubsub", PUBSUB)
        .and_then(|p| p.child("publish", PUBSUB))
        .and_then(|p| p.child("item", PUBSUB))
        .and_then(|i| i.child("notification", NS))
        .and_then(|n| n.child("x", DATA_FORMS))
        .expect("a summary form");
    form.elements()
        .filter_map(|f| {
            let v = f.child("value", DATA_FORMS)?.text();
            Some((f.attr("var")?.to_string(), v))
        })
        .collect()
}

/// The app server answers a publish: a result, or an error of this type and condition.
async fn answer(app: &mut TestClient, iq: &Element, error: Option<(&str, &str)>) {
    let mut reply = Element::new("iq", ns::CLIENT)
        .with_attr("id", iq.attr("id").unwrap())
        .with_attr("to", iq.attr("from").unwrap())
        .with_attr("type", if error.is_some() { "error" } else { "result" });
    if let Some((kind, cond)) = error {
        reply.push_child(
            Element::new("error", ns::CLIENT)
                .with_attr("type", kind)
                .with_child(Element::new(cond, ns::STANZA_ERRORS)),
        );
    }
    app.send(reply).await;
}

/// Waits until every session of the account lost its connection (hibernated).
async fn wait_hibernated(h: &Harness, bare: &str) {
    for _ in 0..250 {
        let s = h.server.sessions.sessions_of(bare);
        if !s.is_empty() && s.iter().all(|s| !s.connected()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{bare} did not hibernate");
}

/// Waits until the account has `n` registrations.
async fn wait_registrations(h: &Harness, user: &str, n: usize) -> Vec<Registration> {
    let mut regs = Vec::new();
    for _ in 0..300 {
        regs = store::of_account(&h.server.storage, user).await.unwrap();
        if regs.len() == n {
            return regs;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{user} has {} registrations, not {n}: {regs:?}", regs.len());
}

/// alice, bob and the app server's account; bob enabled push with the app server and is gone
/// (logged out): his messages are stored offline.
async fn offline_bob(config: &str) -> (Harness, TestClient, TestClient) {
    let h = Harness::with_config(config).await;
    for u in ["alice", "bob", "app"] {
        h.user(u).await;
    }
    let app = h.login("app", "srv").await;
    let mut bob = h.login("bob", "phone").await;
    let r = set(&mut bob, enable_el(&app_jid(), "n1")).await;
    assert_eq!(r.attr("type"), Some("result"), "{}", r.to_xml(ns::CLIENT));
    bob.logout().await;
    let mut alice = h.login("alice", "laptop").await;
    alice.available().await;
    (h, alice, app)
}

#[test]
fn what_wakes_a_phone() {
    let msg = |children: Vec<Element>| {
        let mut m = Element::new("message", ns::CLIENT).with_attr("type", "chat");
        for c in children {
            m.push_child(c);
        }
        m
    };
    let text = Element::new("body", ns::CLIENT).with_text("hi");
    assert_eq!(worth_notifying(&msg(vec![text.clone()])), Ok("body"));
    let omemo = Element::new("encrypted", "eu.siacs.conversations.axolotl");
    assert_eq!(worth_notifying(&msg(vec![omemo])), Ok("encrypted"));
    let call = Element::new("propose", "urn:xmpp:jingle-message:0");
    assert_eq!(worth_notifying(&msg(vec![call])), Ok("call"));
    let typing = Element::new("composing", "http://jabber.org/protocol/chatstates");
    assert!(worth_notifying(&msg(vec![typing])).is_err());
    let mut group = msg(vec![text.clone()]);
    group.set_attr("type", "groupchat");
    assert!(
        worth_notifying(&group).is_err(),
        "rooms go through notify_mention"
    );
    let mut headline = msg(vec![text]);
    headline.set_attr("type", "headline");
    assert!(worth_notifying(&headline).is_err());
}

#[test]
fn errors_disable_unless_transient() {
    let reply = |kind: &str, cond: &str| {
        Element::new("iq", ns::CLIENT)
            .with_attr("type", "error")
            .with_child(
                Element::new("error", ns::CLIENT)
                    .with_attr("type", kind)
                    .with_child(Element::new(cond, ns::STANZA_ERRORS)),
            )
    };
    let ok = Element::new("iq", ns::CLIENT).with_attr("type", "result");
    assert_eq!(verdict(Ok(ok)), Verdict::Delivered);
    assert!(matches!(
        verdict(Ok(reply("cancel", "item-not-found"))),
        Verdict::Refused(_)
    ));
    assert!(matches!(
        verdict(Ok(reply("auth", "not-authorized"))),
        Verdict::Refused(_)
    ));
    assert!(matches!(
        verdict(Ok(reply("wait", "resource-constraint"))),
        Verdict::Transient(_)
    ));
    assert!(matches!(
        verdict(Ok(reply("cancel", "remote-server-not-found"))),
        Verdict::Transient(_)
    ));
    assert!(matches!(
        verdict(Err(IqError::Timeout)),
        Verdict::Transient(_)
    ));
}

#[test]
fn config_limits_are_checked() {
    assert!(PushConfig::default().check().is_ok());
    let c = |f: fn(&mut PushConfig)| {
        let mut c = PushConfig::default();
        f(&mut c);
        c.check()
    };
    assert!(c(|c| c.max_per_account = 0).is_err());
    assert!(c(|c| c.reply_timeout_secs = 0).is_err());
    assert!(c(|c| c.max_failures = 0).is_err());
    assert!(c(|c| c.min_interval_secs = 7200).is_err());
}

/// Enabling stores the app server, node and form, bounded per account (the newest kept);
/// bad requests say what is wrong; disabling without a node removes every node of that JID;
/// the account advertises the feature.
#[tokio::test]
async fn enable_and_disable_per_account_bounded() {
    let h = Harness::with_config("[modules.push]\nmax_per_account = 2\n").await;
    h.user("bob").await;
    let mut bob = h.login("bob", "phone").await;
    let info = bob
        .iq(
            "get",
            Some(&format!("bob@{DOMAIN}")),
            Element::new("query", DISCO_INFO),
        )
        .await;
    let features: Vec<_> = info
        .child("query", DISCO_INFO)
        .unwrap()
        .elements()
        .filter_map(|f| f.attr("var"))
        .map(str::to_string)
        .collect();
    assert!(features.iter().any(|f| f == NS), "{features:?}");

    let push = "push.example.net";
    for node in ["a", "b", "c"] {
        let r = set(&mut bob, enable_el(push, node)).await;
        assert_eq!(r.attr("type"), Some("result"));
    }
    let regs = wait_registrations(&h, "bob", 2).await;
    let nodes: Vec<_> = regs.iter().map(|r| r.node.as_str()).collect();
    assert_eq!(nodes, ["b", "c"], "the oldest went");
    // Enabling "b" again with a form makes it the newest and keeps the form.
    let r = set(
        &mut bob,
        enable_el(push, "b").with_child(options_form("s3cret")),
    )
    .await;
    assert_eq!(r.attr("type"), Some("result"));
    let regs = wait_registrations(&h, "bob", 2).await;
    assert_eq!(regs[1].node, "b");
    assert!(regs[1].options.as_deref().unwrap().contains("s3cret"));

    let no_node = Element::new("enable", NS).with_attr("jid", push);
    assert_eq!(
        condition(&set(&mut bob, no_node).await).as_deref(),
        Some("bad-request")
    );
    let r = set(&mut bob, enable_el(DOMAIN, "x")).await;
    assert_eq!(condition(&r).as_deref(), Some("not-acceptable"));
    let r = set(&mut bob, enable_el("not a jid@@", "x")).await;
    assert_eq!(condition(&r).as_deref(), Some("jid-malformed"));
    let mut wrong_form = options_form("x");
    wrong_form.children.remove(0);
    wrong_form.push_child(
        Element::new("field", DATA_FORMS)
            .with_attr("var", "FORM_TYPE")
            .with_child(Element::new("value", DATA_FORMS).with_text("urn:other")),
    );
    let r = set(&mut bob, enable_el(push, "x").with_child(wrong_form)).await;
    assert_eq!(condition(&r).as_deref(), Some("bad-request"));
    let r = set(&mut bob, enable_el(push, &"n".repeat(2000))).await;
    assert_eq!(condition(&r).as_deref(), Some("bad-request"));
    wait_registrations(&h, "bob", 2).await;

    let r = set(&mut bob, Element::new("disable", NS).with_attr("jid", push)).await;
    assert_eq!(r.attr("type"), Some("result"));
    wait_registrations(&h, "bob", 0).await;
}

/// bob's phone enabled stream management and push, then lost its network: his session
/// hibernates, and alice's message produces exactly one notification at the app server, with
/// the summary form and bob's publish-options. While bob is connected, none.
#[tokio::test]
async fn a_hibernated_account_is_notified_once_a_connected_one_never() {
    let h = Harness::with_config("[modules.push]\nmin_interval_secs = 0\n").await;
    for u in ["alice", "bob", "app"] {
        h.user(u).await;
    }
    let mut app = h.login("app", "srv").await;
    let mut bob = h.login("bob", "phone").await;
    bob.available().await;
    bob.send(Element::new("enable", SM).with_attr("resume", "true"))
        .await;
    let enabled = bob
        .expect("<enabled/>", |e| e.name == "enabled" && e.ns == SM)
        .await;
    let previd = enabled.attr("id").unwrap().to_string();
    let r = set(
        &mut bob,
        enable_el(&app_jid(), "phone-node").with_child(options_form("s3cret")),
    )
    .await;
    assert_eq!(r.attr("type"), Some("result"));
    let mut alice = h.login("alice", "laptop").await;
    alice.available().await;
    let bob_bare = format!("bob@{DOMAIN}");

    bob.cut().await;
    wait_hibernated(&h, &bob_bare).await;
    alice.message(&bob_bare, "are you there?").await;
    let push = app.expect("a notification", is_push).await;
    assert_eq!(push.attr("from"), Some(bob_bare.as_str()));
    let publish = push
        .child("pubsub", PUBSUB)
        .unwrap()
        .child("publish", PUBSUB)
        .unwrap();
    assert_eq!(publish.attr("node"), Some("phone-node"));
    let f = fields(&push);
    assert_eq!(f["FORM_TYPE"], SUMMARY);
    assert_eq!(f["message-count"], "1");
    assert_eq!(f["last-message-sender"], format!("alice@{DOMAIN}"));
    assert!(
        !f.contains_key("last-message-body"),
        "no body by default: {f:?}"
    );
    let options = push
        .child("pubsub", PUBSUB)
        .unwrap()
        .child("publish-options", PUBSUB)
        .expect("publish-options");
    assert!(options.to_xml(ns::CLIENT).contains("s3cret"));
    answer(&mut app, &push, None).await;
    app.expect_none("a second notification", QUIET, is_push)
        .await;

    // bob's phone wakes and resumes: connected again, so no more notifications.
    let resume = Element::new("resume", SM)
        .with_attr("previd", previd)
        .with_attr("h", "0");
    let mut bob = h.unbound_nonza("bob", resume).await.expect("resumed");
    bob.expect("<resumed/>", |e| e.name == "resumed").await;
    alice.message(&bob_bare, "welcome back").await;
    bob.expect("the message", |e| {
        body(e).as_deref() == Some("welcome back")
    })
    .await;
    app.expect_none("a notification", QUIET, is_push).await;
    wait_registrations(&h, "bob", 1).await;
}

/// The link dies while a message is on its way (written, never acknowledged): stream
/// management keeps it for the resumption, and the phone is woken for it.
#[tokio::test]
async fn a_broken_link_with_unacknowledged_messages_notifies() {
    let h = Harness::with_config("[modules.push]\nmin_interval_secs = 0\n").await;
    for u in ["alice", "bob", "app"] {
        h.user(u).await;
    }
    let mut app = h.login("app", "srv").await;
    let mut bob = h.login("bob", "phone").await;
    bob.available().await;
    bob.send(Element::new("enable", SM).with_attr("resume", "true"))
        .await;
    bob.expect("<enabled/>", |e| e.name == "enabled" && e.ns == SM)
        .await;
    set(&mut bob, enable_el(&app_jid(), "n1")).await;
    let mut alice = h.login("alice", "laptop").await;
    alice.available().await;
    let bob_bare = format!("bob@{DOMAIN}");
    alice.message(&bob_bare, "while connected").await;
    bob.expect("the message", |e| body(e).is_some()).await;
    app.expect_none("a notification while connected", QUIET, is_push)
        .await;
    // bob never acknowledged it; his link breaks.
    bob.cut().await;
    let push = app.expect("a notification", is_push).await;
    let f = fields(&push);
    assert_eq!(f["message-count"], "1");
    assert_eq!(f["last-message-sender"], format!("alice@{DOMAIN}"));
    answer(&mut app, &push, None).await;
    wait_hibernated(&h, &bob_bare).await;
    alice.message(&bob_bare, "and another").await;
    let push = app.expect("a notification", is_push).await;
    assert_eq!(fields(&push)["message-count"], "2");
    answer(&mut app, &push, None).await;
    app.expect_none("more", QUIET, is_push).await;
}

/// Offline: each message counts, a chat state does not, an OMEMO message does (without its
/// fallback body even when bodies are sent); initial presence starts the count again.
#[tokio::test]
async fn offline_messages_count_until_bob_comes_back() {
    let config = "[modules.push]\nmin_interval_secs = 0\ninclude_body = true\n";
    let (h, mut alice, mut app) = offline_bob(config).await;
    let bob_bare = format!("bob@{DOMAIN}");
    alice.message(&bob_bare, "one").await;
    let first = app.expect("a notification", is_push).await;
    assert_eq!(fields(&first)["message-count"], "1");
    assert_eq!(fields(&first)["last-message-body"], "one");
    answer(&mut app, &first, None).await;
    alice
        .send(
            Element::new("message", ns::CLIENT)
                .with_attr("type", "chat")
                .with_attr("to", bob_bare.clone())
                .with_child(Element::new(
                    "composing",
                    "http://jabber.org/protocol/chatstates",
                )),
        )
        .await;
    app.expect_none("a notification for a chat state", QUIET, is_push)
        .await;
    alice
        .send(
            Element::new("message", ns::CLIENT)
                .with_attr("type", "chat")
                .with_attr("to", bob_bare.clone())
                .with_child(Element::new("encrypted", "eu.siacs.conversations.axolotl"))
                .with_child(Element::new("body", ns::CLIENT).with_text("OMEMO fallback")),
        )
        .await;
    let second = app.expect("a notification", is_push).await;
    let f = fields(&second);
    assert_eq!(f["message-count"], "2");
    assert!(!f.contains_key("last-message-body"), "{f:?}");
    answer(&mut app, &second, None).await;

    let mut bob = h.login("bob", "phone").await;
    bob.available().await;
    bob.logout().await;
    alice.message(&bob_bare, "again").await;
    let third = app.expect("a notification", is_push).await;
    assert_eq!(fields(&third)["message-count"], "1", "counted afresh");
    answer(&mut app, &third, None).await;
}

/// An error of type cancel disables the registration at once; `wait` errors only after
/// `max_failures` in a row; an app server that is not there (the local JID has no session:
/// the bounce reaches the tracker) at once.
#[tokio::test]
async fn error_replies_disable_the_registration() {
    let config = "[modules.push]\nmin_interval_secs = 0\nmax_failures = 2\n";
    let (h, mut alice, mut app) = offline_bob(config).await;
    let bob_bare = format!("bob@{DOMAIN}");
    alice.message(&bob_bare, "one").await;
    let push = app.expect("a notification", is_push).await;
    answer(&mut app, &push, Some(("wait", "resource-constraint"))).await;
    tokio::time::sleep(QUIET).await;
    wait_registrations(&h, "bob", 1).await;
    alice.message(&bob_bare, "two").await;
    let push = app.expect("a notification", is_push).await;
    answer(&mut app, &push, Some(("wait", "resource-constraint"))).await;
    wait_registrations(&h, "bob", 0).await;

    // Enabled again; now a cancel error disables it after one notification.
    let mut bob = h.login("bob", "phone").await;
    set(&mut bob, enable_el(&app_jid(), "n1")).await;
    set(&mut bob, enable_el(&format!("gone@{DOMAIN}/x"), "n2")).await;
    bob.logout().await;
    wait_registrations(&h, "bob", 2).await;
    alice.message(&bob_bare, "three").await;
    let push = app.expect("a notification", is_push).await;
    answer(&mut app, &push, Some(("cancel", "item-not-found"))).await;
    wait_registrations(&h, "bob", 0).await;
    alice.message(&bob_bare, "four").await;
    app.expect_none("a notification after disabling", QUIET, is_push)
        .await;
}

/// An app server that never answers is disabled after `max_failures` deadlines.
#[tokio::test]
async fn a_silent_app_server_is_disabled() {
    let config =
        "[modules.push]\nmin_interval_secs = 0\nmax_failures = 1\nreply_timeout_secs = 1\n";
    let (h, mut alice, mut app) = offline_bob(config).await;
    alice.message(&format!("bob@{DOMAIN}"), "hello").await;
    app.expect("a notification", is_push).await;
    wait_registrations(&h, "bob", 1).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    wait_registrations(&h, "bob", 0).await;
}

/// Paced: three quick messages give one notification now and one a second later with the
/// newest count, not three.
#[tokio::test]
async fn notifications_are_paced_per_registration() {
    let (_h, mut alice, mut app) = offline_bob("[modules.push]\nmin_interval_secs = 1\n").await;
    let bob_bare = format!("bob@{DOMAIN}");
    alice.message(&bob_bare, "one").await;
    let first = app.expect("a notification", is_push).await;
    assert_eq!(fields(&first)["message-count"], "1");
    answer(&mut app, &first, None).await;
    alice.message(&bob_bare, "two").await;
    alice.message(&bob_bare, "three").await;
    app.expect_none("a notification within the interval", QUIET, is_push)
        .await;
    let later = app.expect("the paced notification", is_push).await;
    assert_eq!(fields(&later)["message-count"], "3");
    answer(&mut app, &later, None).await;
    app.expect_none("more", Duration::from_millis(1300), is_push)
        .await;
}

/// The group chat service's call: a mention of an absent account notifies its app server.
#[tokio::test]
async fn a_mention_notifies_an_absent_account() {
    let (h, _alice, mut app) = offline_bob("[modules.push]\nmin_interval_secs = 0\n").await;
    let bob = Jid::parse(&format!("bob@{DOMAIN}")).unwrap();
    let speaker = Jid::parse("room@groups.example.test/alice").unwrap();
    assert!(notify_mention(&h.server, &bob, &speaker, "bob: lunch?"));
    let push = app.expect("a notification", is_push).await;
    assert_eq!(
        fields(&push)["last-message-sender"],
        "room@groups.example.test"
    );
    answer(&mut app, &push, None).await;
}

/// XEP-0357 §8: the app server's own message that the registration is gone disables it;
/// the same message from anyone else does nothing.
#[tokio::test]
async fn the_app_server_can_disable_a_registration() {
    let (h, mut alice, mut app) = offline_bob("").await;
    let gone = |node: &str| {
        Element::new("message", ns::CLIENT)
            .with_attr("to", format!("bob@{DOMAIN}"))
            .with_child(
                Element::new("pubsub", PUBSUB)
                    .with_attr("node", node)
                    .with_child(
                        Element::new("affiliation", PUBSUB)
                            .with_attr("jid", format!("bob@{DOMAIN}"))
                            .with_attr("affiliation", "none"),
                    ),
            )
    };
    alice.send(gone("n1")).await;
    app.send(gone("other-node")).await;
    tokio::time::sleep(QUIET).await;
    wait_registrations(&h, "bob", 1).await;
    app.send(gone("n1")).await;
    wait_registrations(&h, "bob", 0).await;
}
