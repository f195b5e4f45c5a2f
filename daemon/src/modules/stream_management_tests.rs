use super::*;
use crate::harness::{body, Harness, TestClient, DOMAIN};

fn sm(name: &str) -> Element {
    Element::new(name, NS)
}

fn is_sm(e: &Element, name: &str) -> bool {
    e.name == name && e.ns == NS
}

/// Enables stream management and returns the `<enabled/>` answer.
async fn enable(c: &mut TestClient, resume: bool) -> Element {
    let mut e = sm("enable");
    if resume {
        e.set_attr("resume", "true");
    }
    c.send(e).await;
    c.expect("<enabled/>", |e| is_sm(e, "enabled")).await
}

/// The bodies of the next `n` messages, skipping ack requests.
async fn bodies(c: &mut TestClient, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    while out.len() < n {
        let e = c.expect("a message", |e| e.name == "message").await;
        out.push(body(&e).unwrap_or_default());
    }
    out
}

fn resume(previd: &str, h: u32) -> Element {
    sm("resume")
        .with_attr("previd", previd)
        .with_attr("h", h.to_string())
}

#[test]
fn counters_wrap_at_two_to_the_32() {
    let mut layer = SmLayer::new(Arc::default(), 10);
    layer.sent = u32::MAX - 1;
    layer.acked = u32::MAX - 1;
    let mut pass = Vec::new();
    for i in 0..4 {
        layer.outgoing(
            Element::new("message", ns::CLIENT).with_attr("id", i.to_string()),
            &mut pass,
        );
    }
    assert_eq!(layer.sent, 2, "h counts modulo 2^32");
    // One `<r/>` for the burst, after the first stanza.
    assert_eq!(pass.iter().filter(|e| is_sm(e, "r")).count(), 1);
    assert_eq!(layer.ack(0), Ok(2), "0 is two past 2^32 - 2");
    assert_eq!(layer.unacked.front().unwrap().0.attr("id"), Some("2"));
    assert!(layer.ack(5).is_err(), "more than was sent");
    assert_eq!(layer.ack(2), Ok(2));
    assert!(layer.unacked.is_empty());
    layer.received = u32::MAX;
    layer.received(&Element::new("iq", ns::CLIENT));
    assert_eq!(layer.received, 0);
}

#[test]
fn a_full_queue_may_wait_a_little_for_acks_but_not_forever() {
    let mut layer = SmLayer::new(Arc::default(), 3);
    let msg = || Element::new("message", ns::CLIENT);
    let now = now_secs();
    for _ in 0..5 {
        layer.unacked.push_back((msg(), now));
    }
    // Over the soft bound, but the oldest was just sent: a burst, the acks are on their way.
    assert!(!layer.too_much(now));
    // Nothing acknowledged for longer than the grace: too much.
    assert!(layer.too_much(now + ACK_GRACE_SECS + 1));
    // Under the soft bound, old stanzas are fine (a quiet client that acks late).
    layer.unacked.truncate(2);
    assert!(!layer.too_much(now + 3600));
    // The hard bound holds whatever the times.
    for _ in 2..12 {
        layer.unacked.push_back((msg(), now));
    }
    assert!(layer.too_much(now));
}

/// The client receives the messages "m0" to "m{n-1}", each once, in whatever order (what was held
/// and what came later may be stored in either order; the delay stamps keep the real one).
async fn assert_got_m0_to(client: &mut TestClient, n: usize) {
    let mut got = bodies(client, n).await;
    got.sort();
    let mut want: Vec<_> = (0..n).map(|i| format!("m{i}")).collect();
    want.sort();
    assert_eq!(got, want);
}

#[tokio::test]
async fn stanzas_are_counted_both_ways_and_acks_drain_the_queue() {
    let h = Harness::new().await;
    h.user("alice").await;
    h.user("bob").await;
    let mut alice = h.login("alice", "phone").await;
    let mut bob = h.login("bob", "pc").await;
    // Before `<enable/>` acks mean nothing.
    alice.send(sm("r")).await;
    let f = alice.expect("<failed/>", |e| is_sm(e, "failed")).await;
    assert!(f.child("unexpected-request", ns::STANZA_ERRORS).is_some());
    let enabled = enable(&mut alice, false).await;
    assert!(enabled.attr("id").is_none(), "no resumption asked for");
    for i in 0..3 {
        bob.message("alice@example.test/phone", &format!("m{i}"))
            .await;
    }
    // The first stanza brings an ack request; the next ones wait for its answer.
    let mut seen = Vec::new();
    while seen.iter().filter(|s: &&String| s.starts_with('m')).count() < 3 {
        let e = alice.recv().await;
        seen.push(if is_sm(&e, "r") {
            "r".into()
        } else {
            body(&e).unwrap()
        });
    }
    assert_eq!(seen, ["m0", "r", "m1", "m2"]);
    // Acking one of three: the server asks again at once, since two are outstanding.
    alice.send(sm("a").with_attr("h", "1")).await;
    alice.expect("a second <r/>", |e| is_sm(e, "r")).await;
    alice.send(sm("a").with_attr("h", "3")).await;
    alice
        .expect_none(
            "an <r/> with nothing outstanding",
            Duration::from_millis(200),
            |e| is_sm(e, "r"),
        )
        .await;
    // Stanzas from the client: two messages and an IQ the server answers.
    alice.message("bob@example.test/pc", "x").await;
    alice.message("bob@example.test/pc", "y").await;
    alice
        .iq("get", None, Element::new("ping", "urn:xmpp:ping"))
        .await;
    alice.send(sm("r")).await;
    let a = alice.expect("<a/>", |e| is_sm(e, "a")).await;
    assert_eq!(a.attr("h"), Some("3"));
    assert_eq!(bodies(&mut bob, 2).await, ["x", "y"]);
    // An ack for more than was sent ends the stream.
    alice.send(sm("a").with_attr("h", "99")).await;
    let e = alice.expect("a stream error", |e| e.name == "error").await;
    assert!(e.child("undefined-condition", ns::STREAM_ERRORS).is_some());
}

#[tokio::test]
async fn a_client_that_never_acks_is_disconnected_and_nothing_is_lost() {
    let h = Harness::with_config("[modules.stream_management]\nmax_unacked = 5\n").await;
    h.user("alice").await;
    h.user("bob").await;
    let mut alice = h.login("alice", "phone").await;
    let mut bob = h.login("bob", "pc").await;
    enable(&mut alice, true).await;
    // A burst beyond `max_unacked` is fine at first (the acks may be on their way)...
    for i in 0..12 {
        bob.message("alice@example.test/phone", &format!("m{i}"))
            .await;
    }
    alice
        .expect_none("a stream error", Duration::from_millis(200), |e| {
            e.name == "error"
        })
        .await;
    // ...but not beyond four times it.
    for i in 12..24 {
        bob.message("alice@example.test/phone", &format!("m{i}"))
            .await;
    }
    let e = alice.expect("a stream error", |e| e.name == "error").await;
    assert!(e.child("policy-violation", ns::STREAM_ERRORS).is_some());
    // A disconnection by the server is not a broken link: no hibernation.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(h
        .server
        .sessions
        .sessions_of("alice@example.test")
        .is_empty());
    // Everything unacknowledged went to offline storage.
    let mut again = h.login("alice", "laptop").await;
    // Initial presence (not `available()`, which would skip what comes before its echo).
    again.send(Element::new("presence", ns::CLIENT)).await;
    // Messages that came after the session left the table were stored before the
    // unacknowledged ones were routed again; the delay stamps keep the real order.
    assert_got_m0_to(&mut again, 24).await;
}

#[tokio::test]
async fn a_broken_session_is_resumed_with_what_the_client_missed() {
    let h = Harness::new().await;
    h.user("alice").await;
    h.user("bob").await;
    let mut alice = h.login("alice", "phone").await;
    alice.available().await;
    let mut bob = h.login("bob", "pc").await;
    let enabled = enable(&mut alice, true).await;
    let id = enabled.attr("id").unwrap().to_string();
    assert_eq!(enabled.attr("resume"), Some("true"));
    assert_eq!(enabled.attr("max"), Some("300"));
    assert!(id.len() >= 24, "an unguessable id: {id}");
    bob.message("alice@example.test", "m0").await;
    bob.message("alice@example.test", "m1").await;
    assert_eq!(bodies(&mut alice, 2).await, ["m0", "m1"]);
    alice.message("bob@example.test/pc", "from alice").await;
    bodies(&mut bob, 1).await;
    alice.cut().await;
    // Hibernating: still bound and available, messages for the account still come to it.
    let jid: Jid = "alice@example.test/phone".parse().unwrap();
    assert!(h.server.sessions.session(&jid).is_some());
    bob.message("alice@example.test", "m2").await;
    bob.message("alice@example.test/phone", "m3").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    // The client had m0 only when the link broke.
    let mut alice = h
        .unbound_nonza("alice", resume(&id, 1))
        .await
        .expect("resumed");
    let resumed = alice.expect("<resumed/>", |e| is_sm(e, "resumed")).await;
    assert_eq!(resumed.attr("previd"), Some(id.as_str()));
    // Our h counts alice's stanzas since `<enable/>`: one message.
    assert_eq!(resumed.attr("h"), Some("1"));
    let again = bodies(&mut alice, 3).await;
    assert_eq!(again, ["m1", "m2", "m3"]);
    // The session goes on: new messages, the same counting.
    bob.message("alice@example.test/phone", "m4").await;
    assert_eq!(bodies(&mut alice, 1).await, ["m4"]);
    alice.send(sm("a").with_attr("h", "5")).await;
    alice.send(sm("r")).await;
    let a = alice.expect("<a/>", |e| is_sm(e, "a")).await;
    assert_eq!(a.attr("h"), Some("1"));
    // Resuming a session that is live again moves it to the newest connection.
    let mut third = h
        .unbound_nonza("alice", resume(&id, 5))
        .await
        .expect("taken over");
    let r = third.expect("<resumed/>", |e| is_sm(e, "resumed")).await;
    assert_eq!(r.attr("h"), Some("1"));
    bob.message("alice@example.test/phone", "m5").await;
    assert_eq!(bodies(&mut third, 1).await, ["m5"]);
}

#[tokio::test]
async fn resumption_fails_for_unknown_foreign_and_ended_sessions() {
    let h = Harness::with_config("[modules.stream_management]\nhibernate_secs = 1\n").await;
    h.user("alice").await;
    h.user("mallory").await;
    let mut alice = h.login("alice", "phone").await;
    let id = enable(&mut alice, true)
        .await
        .attr("id")
        .unwrap()
        .to_string();
    alice.send(sm("r")).await;
    alice.expect("<a/>", |e| is_sm(e, "a")).await;
    let no_h = |f: &Element| {
        assert!(is_sm(f, "failed"));
        assert!(f.child("item-not-found", ns::STANZA_ERRORS).is_some());
        f.attr("h").map(str::to_string)
    };
    let f = h
        .unbound_nonza("alice", resume("no-such-id", 0))
        .await
        .err()
        .unwrap();
    assert_eq!(no_h(&f), None);
    // Someone else's session: as if it did not exist.
    let f = h
        .unbound_nonza("mallory", resume(&id, 0))
        .await
        .err()
        .unwrap();
    assert_eq!(no_h(&f), None);
    // Enabling before binding is refused; so is `<resume/>` on a bound stream.
    let f = h.unbound_nonza("alice", sm("enable")).await.err().unwrap();
    assert!(f.child("unexpected-request", ns::STANZA_ERRORS).is_some());
    alice.send(resume(&id, 0)).await;
    let f = alice.expect("<failed/>", |e| is_sm(e, "failed")).await;
    assert!(f.child("unexpected-request", ns::STANZA_ERRORS).is_some());
    // The session expires unresumed: a late resume learns our final h (nonzas do not count).
    alice.message("alice@example.test", "note to self").await;
    alice.cut().await;
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let jid: Jid = format!("alice@{DOMAIN}/phone").parse().unwrap();
    assert!(h.server.sessions.session(&jid).is_none(), "expired");
    let f = h
        .unbound_nonza("alice", resume(&id, 0))
        .await
        .err()
        .unwrap();
    assert_eq!(no_h(&f).as_deref(), Some("1"));
}

#[tokio::test]
async fn an_expired_session_hands_its_messages_on() {
    let h = Harness::with_config("[modules.stream_management]\nhibernate_secs = 1\n").await;
    h.user("alice").await;
    h.user("bob").await;
    let mut bob = h.login("bob", "pc").await;
    // Expiry with no other session: offline storage, with a delay stamp.
    let mut alice = h.login("alice", "phone").await;
    alice.available().await;
    enable(&mut alice, true).await;
    bob.message("alice@example.test", "before").await;
    bodies(&mut alice, 1).await;
    alice.cut().await;
    bob.message("alice@example.test", "while away").await;
    // Expiry after a second; then the phone's task stores what it held and ends (only bob's is
    // left). Waiting for that, not a fixed time, keeps a busy machine from racing the login.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while h.server.sessions.running() > 1 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(h.server.sessions.running(), 1, "the phone's session ended");
    let mut alice = h.login("alice", "laptop").await;
    alice.send(Element::new("presence", ns::CLIENT)).await;
    let m = alice.expect("a message", |e| e.name == "message").await;
    assert_eq!(body(&m).as_deref(), Some("before"), "never acknowledged");
    assert!(m.child("delay", DELAY).is_some());
    assert_eq!(bodies(&mut alice, 1).await, ["while away"]);
}

#[tokio::test]
async fn a_replaced_session_hands_its_messages_on() {
    // The default hibernation (minutes): the old session must end by replacement, not by
    // expiring while the logins below take their time on a busy machine.
    let h = Harness::new().await;
    h.user("alice").await;
    h.user("bob").await;
    let mut bob = h.login("bob", "pc").await;
    let mut alice = h.login("alice", "laptop").await;
    alice.available().await;
    // Replacement: a new login with the same resource takes over; the old session's
    // unacknowledged messages reach the account's sessions.
    enable(&mut alice, true).await;
    alice.message("bob@example.test/pc", "ping").await;
    bodies(&mut bob, 1).await;
    alice.cut().await;
    bob.message("alice@example.test/laptop", "to the laptop")
        .await;
    let mut phone = h.login("alice", "phone").await;
    phone.available().await;
    // The old laptop session is replaced before the new one is available: phone gets it.
    let mut laptop = h.login("alice", "laptop").await;
    let m = phone.expect("a message", |e| e.name == "message").await;
    assert_eq!(body(&m).as_deref(), Some("to the laptop"));
    assert!(m.child("delay", DELAY).is_some());
    laptop.available().await;
}

#[tokio::test]
async fn hibernation_is_bounded_in_count_and_in_what_it_holds() {
    let h =
        Harness::with_config("[modules.stream_management]\nmax_hibernating = 1\nmax_unacked = 3\n")
            .await;
    for u in ["alice", "bob", "carol"] {
        h.user(u).await;
    }
    let mut bob = h.login("bob", "pc").await;
    let mut alice = h.login("alice", "phone").await;
    let mut carol = h.login("carol", "phone").await;
    enable(&mut alice, true).await;
    enable(&mut carol, true).await;
    alice.cut().await;
    carol.cut().await;
    // One may hibernate; the second broken session ends at once.
    let alice_jid: Jid = "alice@example.test/phone".parse().unwrap();
    let carol_jid: Jid = "carol@example.test/phone".parse().unwrap();
    assert!(h.server.sessions.session(&alice_jid).is_some());
    assert!(h.server.sessions.session(&carol_jid).is_none());
    assert_eq!(
        h.server.sessions.counts().0,
        2,
        "bob and the hibernating alice"
    );
    // A hibernating session holds a bounded queue (here at most 4 x 3 at once): beyond that it
    // ends, and what it held goes to offline storage rather than nowhere.
    for i in 0..13 {
        bob.message("alice@example.test/phone", &format!("m{i}"))
            .await;
    }
    // The hibernating task ends it as it takes the queue and then stores what it held; on a
    // busy machine that takes a moment. Only bob's task may be left before the new login, or
    // the laptop's offline flush could run before the last of it is stored.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while h.server.sessions.running() > 1 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(h.server.sessions.session(&alice_jid).is_none(), "ended");
    assert_eq!(
        h.server.sessions.running(),
        1,
        "only bob's session task is left"
    );
    let mut again = h.login("alice", "laptop").await;
    again.send(Element::new("presence", ns::CLIENT)).await;
    assert_got_m0_to(&mut again, 13).await;
}

#[tokio::test]
async fn copies_made_for_one_session_are_not_handed_on() {
    let h = Harness::with_config("[modules.stream_management]\nhibernate_secs = 1\n").await;
    h.user("alice").await;
    h.user("bob").await;
    let mut bob = h.login("bob", "pc").await;
    let mut phone = h.login("alice", "phone").await;
    phone.available().await;
    let mut laptop = h.login("alice", "laptop").await;
    laptop.available().await;
    let carbons = Element::new("enable", crate::modules::carbons::NS);
    assert_eq!(
        laptop.iq("set", None, carbons).await.attr("type"),
        Some("result")
    );
    enable(&mut laptop, true).await;
    bob.message("alice@example.test/phone", "for the phone")
        .await;
    assert_eq!(bodies(&mut phone, 1).await, ["for the phone"]);
    // The laptop gets a carbon (from alice's bare JID), never acknowledges it, and expires.
    laptop.expect("a carbon", |e| e.name == "message").await;
    laptop.cut().await;
    tokio::time::sleep(Duration::from_millis(1300)).await;
    phone
        .expect_none("a carbon handed on", Duration::from_millis(300), |e| {
            e.name == "message"
        })
        .await;
}

#[tokio::test]
async fn archive_results_are_not_handed_on() {
    let h = Harness::with_config("[modules.stream_management]\nhibernate_secs = 1\n").await;
    h.user("alice").await;
    h.user("bob").await;
    let mut bob = h.login("bob", "pc").await;
    let mut phone = h.login("alice", "phone").await;
    phone.available().await;
    let mut laptop = h.login("alice", "laptop").await;
    laptop.available().await;
    enable(&mut laptop, true).await;
    bob.message("alice@example.test/phone", "archived").await;
    assert_eq!(bodies(&mut phone, 1).await, ["archived"]);
    // The laptop reads the archive (results from alice's bare JID, written through its write
    // path), never acknowledges them, and expires: the phone must not get them as messages.
    let query = Element::new("query", crate::modules::mam::NS).with_attr("queryid", "q1");
    assert_eq!(
        laptop.iq("set", None, query).await.attr("type"),
        Some("result")
    );
    let result = laptop
        .expect("an archive result", |e| {
            e.name == "message" && e.child("result", crate::modules::mam::NS).is_some()
        })
        .await;
    assert_eq!(result.attr("from"), Some("alice@example.test"));
    laptop.cut().await;
    tokio::time::sleep(Duration::from_millis(1300)).await;
    phone
        .expect_none(
            "an archive result handed on",
            Duration::from_millis(300),
            |e| e.name == "message",
        )
        .await;
}

#[tokio::test]
async fn at_shutdown_a_hibernating_session_stores_what_it_held() {
    let h = Harness::new().await;
    h.user("alice").await;
    h.user("bob").await;
    let mut bob = h.login("bob", "pc").await;
    let mut alice = h.login("alice", "phone").await;
    enable(&mut alice, true).await;
    alice.cut().await;
    bob.message("alice@example.test/phone", "held").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    h.server.begin_shutdown();
    // What the daemon waits for before it exits.
    for _ in 0..250 {
        if h.server.sessions.running() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(h.server.sessions.running(), 0);
    let stored = crate::modules::offline::waiting(&h.server.storage, "alice").await;
    assert_eq!(stored.unwrap(), 1, "the held message is in offline storage");
}

#[tokio::test]
async fn a_clean_logout_is_not_kept() {
    let h = Harness::new().await;
    h.user("alice").await;
    let mut alice = h.login("alice", "phone").await;
    enable(&mut alice, true).await;
    let jid = alice.jid.clone();
    alice.logout().await;
    assert!(h.server.sessions.session(&jid).is_none());
}

#[test]
fn config_is_strict_and_has_defaults() {
    let base = "domain = \"example.test\"\n[tls]\ncert = \"/c\"\nkey = \"/k\"\n";
    let c = crate::config::Config::parse(base, "t").unwrap();
    assert_eq!(c.modules.stream_management.hibernate_secs, 300);
    let bad = format!("{base}[modules.stream_management]\nhibernate = 3\n");
    let err = crate::config::Config::parse(&bad, "t")
        .unwrap_err()
        .to_string();
    assert!(err.contains("hibernate"), "{err}");
    let zero = format!("{base}[modules.stream_management]\nmax_unacked = 0\n");
    let err = crate::config::Config::parse(&zero, "t")
        .unwrap_err()
        .to_string();
    assert!(err.contains("max_unacked must be at least 1"), "{err}");
}
