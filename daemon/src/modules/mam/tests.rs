//! The archive through the in-process harness: real sessions, real SQLite, real hooks.

use super::form::{DATA, RSM};
use super::{NS, NS_EXTENDED, SID};
use crate::harness::{body, Harness, TestClient, DOMAIN};
use crate::xml::{ns, Element};
use std::time::Duration;

/// One archive query: the result messages (in arrival order) and the final IQ.
async fn query(
    c: &mut TestClient,
    fields: &[(&str, &[&str])],
    set: &[(&str, &str)],
) -> (Vec<Element>, Element) {
    let mut x = Element::new("x", DATA)
        .with_attr("type", "submit")
        .with_child(
            Element::new("field", DATA)
                .with_attr("var", "FORM_TYPE")
                .with_child(Element::new("value", DATA).with_text(NS)),
        );
    for (var, values) in fields {
        let mut f = Element::new("field", DATA).with_attr("var", *var);
        for v in *values {
            f.push_child(Element::new("value", DATA).with_text(*v));
        }
        x.push_child(f);
    }
    let mut s = Element::new("set", RSM);
    for (name, text) in set {
        s.push_child(Element::new(name, RSM).with_text(*text));
    }
    let q = Element::new("query", NS)
        .with_attr("queryid", "qid")
        .with_child(x)
        .with_child(s);
    c.send(
        Element::new("iq", ns::CLIENT)
            .with_attr("type", "set")
            .with_attr("id", "mamq")
            .with_child(q),
    )
    .await;
    let mut results = Vec::new();
    loop {
        let e = c.recv().await;
        if e.name == "iq" && e.attr("id") == Some("mamq") {
            return (results, e);
        }
        if let Some(r) = e.child("result", NS) {
            assert_eq!(r.attr("queryid"), Some("qid"));
            results.push(e);
        }
    }
}

fn result_id(m: &Element) -> String {
    m.child("result", NS)
        .unwrap()
        .attr("id")
        .unwrap()
        .to_string()
}

fn result_body(m: &Element) -> String {
    let fwd = m
        .child("result", NS)
        .unwrap()
        .child("forwarded", super::FORWARD)
        .unwrap();
    assert!(fwd
        .child("delay", super::DELAY)
        .unwrap()
        .attr("stamp")
        .is_some());
    body(fwd.child("message", ns::CLIENT).unwrap()).unwrap()
}

fn fin(iq: &Element) -> &Element {
    assert_eq!(iq.attr("type"), Some("result"), "{}", iq.to_xml(ns::CLIENT));
    iq.child("fin", NS).expect("fin")
}

fn set_text(fin: &Element, name: &str) -> Option<String> {
    fin.child("set", RSM)?.child(name, RSM).map(Element::text)
}

fn live_id(m: &Element, by: &str) -> String {
    let sid = m
        .child("stanza-id", SID)
        .expect("stanza-id on the live copy");
    assert_eq!(sid.attr("by"), Some(by));
    sid.attr("id").unwrap().to_string()
}

fn error_condition(iq: &Element) -> (String, String) {
    assert_eq!(iq.attr("type"), Some("error"), "{}", iq.to_xml(ns::CLIENT));
    let err = iq.child("error", ns::CLIENT).unwrap();
    let cond = err
        .elements()
        .find(|e| e.ns == ns::STANZA_ERRORS && e.name != "text")
        .unwrap();
    let text = err
        .child("text", ns::STANZA_ERRORS)
        .map(Element::text)
        .unwrap_or_default();
    (cond.name.clone(), text)
}

async fn pair(h: &Harness) -> (TestClient, TestClient) {
    h.user("alice").await;
    h.user("bob").await;
    let mut alice = h.login("alice", "phone").await;
    let mut bob = h.login("bob", "pc").await;
    alice.available().await;
    bob.available().await;
    (alice, bob)
}

/// 30 messages from alice to bob: bob's live copies carry ids; paging his archive forwards and
/// backwards in pages of 7 gives every message once, in order, with the live ids.
#[tokio::test]
async fn paging_both_ways_returns_every_message_once_with_the_live_ids() {
    let h = Harness::new().await;
    let (mut alice, mut bob) = pair(&h).await;
    let bob_bare = format!("bob@{DOMAIN}");
    let mut live = Vec::new();
    for i in 0..30 {
        alice.message(&bob_bare, &format!("m{i}")).await;
        let m = bob.expect("message", |e| body(e).is_some()).await;
        assert_eq!(body(&m).unwrap(), format!("m{i}"));
        live.push(live_id(&m, &bob_bare));
    }
    let alice_bare = format!("alice@{DOMAIN}");
    let mut forward = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let max = "7".to_string();
        let mut set = vec![("max", max.as_str())];
        if let Some(a) = &after {
            set.push(("after", a.as_str()));
        }
        let (results, iq) = query(&mut bob, &[("with", &[alice_bare.as_str()])], &set).await;
        let f = fin(&iq);
        assert_eq!(set_text(f, "count").as_deref(), Some("30"));
        for r in &results {
            forward.push((result_id(r), result_body(r)));
        }
        if f.attr("complete") == Some("true") {
            break;
        }
        after = set_text(f, "last");
        assert!(forward.len() <= 30, "paging does not end");
    }
    let bodies: Vec<_> = (0..30).map(|i| format!("m{i}")).collect();
    assert_eq!(
        forward.iter().map(|f| f.1.clone()).collect::<Vec<_>>(),
        bodies
    );
    assert_eq!(
        forward.iter().map(|f| f.0.clone()).collect::<Vec<_>>(),
        live
    );

    let mut backward: Vec<(String, String)> = Vec::new();
    let mut before = String::new();
    loop {
        let (results, iq) = query(&mut bob, &[], &[("max", "7"), ("before", &before)]).await;
        let f = fin(&iq);
        let page: Vec<_> = results
            .iter()
            .map(|r| (result_id(r), result_body(r)))
            .collect();
        backward.splice(0..0, page);
        if f.attr("complete") == Some("true") {
            break;
        }
        before = set_text(f, "first").unwrap();
        let index: i64 = f
            .child("set", RSM)
            .unwrap()
            .child("first", RSM)
            .unwrap()
            .attr("index")
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(index as usize, 30 - backward.len());
    }
    assert_eq!(backward, forward);

    // alice's archive has her side: 30 outgoing messages.
    let (results, iq) = query(
        &mut alice,
        &[("with", &[bob_bare.as_str()])],
        &[("max", "250")],
    )
    .await;
    assert_eq!(fin(&iq).attr("complete"), Some("true"));
    assert_eq!(results.iter().map(result_body).collect::<Vec<_>>(), bodies);
}

#[tokio::test]
async fn filters_by_ids_time_and_bounds() {
    let h = Harness::new().await;
    let (mut alice, mut bob) = pair(&h).await;
    h.user("carol").await;
    let mut carol = h.login("carol", "x").await;
    let bob_bare = format!("bob@{DOMAIN}");
    let mut ids = Vec::new();
    for i in 0..6 {
        let from = if i % 2 == 0 { &mut alice } else { &mut carol };
        from.message(&bob_bare, &format!("m{i}")).await;
        let m = bob.expect("message", |e| body(e).is_some()).await;
        ids.push(live_id(&m, &bob_bare));
    }
    let carol_full = format!("carol@{DOMAIN}/x");
    let (r, _) = query(&mut bob, &[("with", &[carol_full.as_str()])], &[]).await;
    assert_eq!(
        r.iter().map(result_body).collect::<Vec<_>>(),
        ["m1", "m3", "m5"]
    );
    let (r, _) = query(
        &mut bob,
        &[("with", &[format!("carol@{DOMAIN}/y").as_str()])],
        &[],
    )
    .await;
    assert!(r.is_empty(), "a full JID matches that resource only");
    let (r, iq) = query(
        &mut bob,
        &[("ids", &[ids[4].as_str(), ids[1].as_str()])],
        &[],
    )
    .await;
    assert_eq!(r.iter().map(result_body).collect::<Vec<_>>(), ["m1", "m4"]);
    assert_eq!(set_text(fin(&iq), "count").as_deref(), Some("2"));
    let (r, _) = query(
        &mut bob,
        &[
            ("after-id", &[ids[1].as_str()]),
            ("before-id", &[ids[4].as_str()]),
        ],
        &[],
    )
    .await;
    assert_eq!(r.iter().map(result_body).collect::<Vec<_>>(), ["m2", "m3"]);
    let (r, iq) = query(
        &mut bob,
        &[
            ("start", &["2000-01-01T00:00:00Z"]),
            ("end", &["2999-01-01T00:00:00Z"]),
        ],
        &[],
    )
    .await;
    assert_eq!(r.len(), 6);
    assert_eq!(fin(&iq).attr("complete"), Some("true"));
    let (r, iq) = query(&mut bob, &[("start", &["2999-01-01T00:00:00Z"])], &[]).await;
    assert!(r.is_empty());
    assert_eq!(set_text(fin(&iq), "count").as_deref(), Some("0"));
    let (r, _) = query(&mut bob, &[("end", &["2000-01-01T00:00:00Z"])], &[]).await;
    assert!(r.is_empty());
    // flip-page: newest first within the page.
    bob.send_xml(&format!(
        "<iq type='set' id='flip'><query xmlns='{NS}'><set xmlns='{RSM}'><max>2</max></set><flip-page/></query></iq>"
    ))
    .await;
    let a = bob
        .expect("result", |e| e.child("result", NS).is_some())
        .await;
    assert_eq!(result_body(&a), "m1");
    let b = bob
        .expect("result", |e| e.child("result", NS).is_some())
        .await;
    assert_eq!(result_body(&b), "m0");
    bob.expect("the fin", |e| e.attr("id") == Some("flip"))
        .await;
    // Unknown ids and malformed forms are errors that say why.
    let (_, iq) = query(&mut bob, &[], &[("after", "no-such-id")]).await;
    let (cond, text) = error_condition(&iq);
    assert_eq!(cond, "item-not-found");
    assert!(text.contains("no-such-id"), "{text}");
    let (_, iq) = query(&mut bob, &[("start", &["last tuesday"])], &[]).await;
    let (cond, text) = error_condition(&iq);
    assert_eq!(cond, "bad-request");
    assert!(text.contains("field 'start'"), "{text}");
    // max=0: the count alone.
    let (r, iq) = query(&mut bob, &[], &[("max", "0")]).await;
    assert!(r.is_empty());
    assert_eq!(set_text(fin(&iq), "count").as_deref(), Some("6"));
    // Nobody reads another account's archive.
    let (_, iq) = {
        let q = Element::new("query", NS);
        let r = alice.iq("set", Some(&bob_bare), q).await;
        (Vec::<Element>::new(), r)
    };
    assert_eq!(iq.attr("type"), Some("error"));
}

/// Chat states, `<no-store/>`, errors and headlines stay out; a forged stanza-id is replaced.
#[tokio::test]
async fn what_is_not_archived_and_forged_ids() {
    let h = Harness::new().await;
    let (mut alice, mut bob) = pair(&h).await;
    let bob_bare = format!("bob@{DOMAIN}");
    alice
        .send_xml(&format!(
            "<message type='chat' to='{bob_bare}'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>\
             <message type='chat' to='{bob_bare}'><body>secret</body><no-store xmlns='urn:xmpp:hints'/></message>\
             <message type='headline' to='{bob_bare}'><body>news</body></message>\
             <message type='chat' to='{bob_bare}'><body>forged</body><stanza-id xmlns='{SID}' by='{bob_bare}' id='fake'/><origin-id xmlns='{SID}' id='mine'/></message>"
        ))
        .await;
    let secret = bob
        .expect("secret", |e| body(e).as_deref() == Some("secret"))
        .await;
    assert!(
        secret.child("stanza-id", SID).is_none(),
        "not archived, no id"
    );
    let forged = bob
        .expect("forged", |e| body(e).as_deref() == Some("forged"))
        .await;
    let sids: Vec<_> = forged
        .elements()
        .filter(|e| e.is("stanza-id", SID))
        .collect();
    assert_eq!(sids.len(), 1);
    assert_ne!(sids[0].attr("id"), Some("fake"));
    assert_eq!(
        forged.child("origin-id", SID).and_then(|o| o.attr("id")),
        Some("mine"),
        "the sender's origin-id is kept"
    );
    let (r, _) = query(&mut bob, &[], &[]).await;
    assert_eq!(r.iter().map(result_body).collect::<Vec<_>>(), ["forged"]);
    let archived = r[0]
        .child("result", NS)
        .unwrap()
        .child("forwarded", super::FORWARD)
        .unwrap();
    let archived = archived.child("message", ns::CLIENT).unwrap();
    assert_eq!(
        archived.child("stanza-id", SID).and_then(|s| s.attr("id")),
        sids[0].attr("id"),
        "the archived copy carries the live copy's id"
    );
    assert!(archived.child("origin-id", SID).is_some());
}

#[tokio::test]
async fn preferences_are_kept_and_honoured() {
    let h = Harness::new().await;
    let (mut alice, mut bob) = pair(&h).await;
    let bob_bare = format!("bob@{DOMAIN}");
    let alice_bare = format!("alice@{DOMAIN}");
    // Kept under the default; the preferences are now remembered in memory, and the change
    // below must replace them there too.
    alice.message(&bob_bare, "before").await;
    let m = bob
        .expect("before", |e| body(e).as_deref() == Some("before"))
        .await;
    assert!(m.child("stanza-id", SID).is_some());
    let r = bob.iq("get", None, Element::new("prefs", NS)).await;
    assert_eq!(
        r.child("prefs", NS).unwrap().attr("default"),
        Some("always")
    );
    // default never, alice always.
    let set = Element::new("prefs", NS)
        .with_attr("default", "never")
        .with_child(
            Element::new("always", NS)
                .with_child(Element::new("jid", NS).with_text(format!("{alice_bare}/phone"))),
        )
        .with_child(Element::new("never", NS));
    let r = bob.iq("set", None, set).await;
    assert_eq!(r.attr("type"), Some("result"));
    let r = bob.iq("get", None, Element::new("prefs", NS)).await;
    let p = r.child("prefs", NS).unwrap();
    assert_eq!(p.attr("default"), Some("never"));
    assert_eq!(
        p.child("always", NS)
            .unwrap()
            .child("jid", NS)
            .unwrap()
            .text(),
        alice_bare
    );
    h.user("carol").await;
    let mut carol = h.login("carol", "x").await;
    carol.message(&bob_bare, "from carol").await;
    alice.message(&bob_bare, "from alice").await;
    let m = bob
        .expect("carol", |e| body(e).as_deref() == Some("from carol"))
        .await;
    assert!(m.child("stanza-id", SID).is_none());
    bob.expect("alice", |e| body(e).as_deref() == Some("from alice"))
        .await;
    let (r, _) = query(&mut bob, &[], &[]).await;
    assert_eq!(
        r.iter().map(result_body).collect::<Vec<_>>(),
        ["before", "from alice"]
    );
    // Roster mode: nobody is in bob's roster, so nothing more is kept.
    let set = Element::new("prefs", NS).with_attr("default", "roster");
    assert_eq!(bob.iq("set", None, set).await.attr("type"), Some("result"));
    alice.message(&bob_bare, "not a contact").await;
    let m = bob
        .expect("alice", |e| body(e).as_deref() == Some("not a contact"))
        .await;
    assert!(m.child("stanza-id", SID).is_none());
    // Bad preferences are refused with a reason.
    let r = bob
        .iq(
            "set",
            None,
            Element::new("prefs", NS).with_attr("default", "sometimes"),
        )
        .await;
    let (cond, text) = error_condition(&r);
    assert_eq!(cond, "bad-request");
    assert!(text.contains("sometimes"), "{text}");
}

/// With bob away, the message waits offline and reaches him with the id of its archived copy.
#[tokio::test]
async fn offline_messages_carry_their_archive_id() {
    let h = Harness::new().await;
    h.user("alice").await;
    h.user("bob").await;
    let mut alice = h.login("alice", "x").await;
    alice.available().await;
    let bob_bare = format!("bob@{DOMAIN}");
    alice.message(&bob_bare, "while you were out").await;
    for _ in 0..500 {
        if crate::modules::offline::waiting(&h.server.storage, "bob")
            .await
            .unwrap()
            == 1
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut bob = h.login("bob", "pc").await;
    bob.send(Element::new("presence", ns::CLIENT)).await;
    let m = bob.expect("offline message", |e| body(e).is_some()).await;
    let id = live_id(&m, &bob_bare);
    let (r, _) = query(&mut bob, &[], &[]).await;
    assert_eq!(r.iter().map(result_id).collect::<Vec<_>>(), [id]);
}

#[tokio::test]
async fn form_metadata_disco_and_retention() {
    let h = Harness::new().await;
    let (mut alice, mut bob) = pair(&h).await;
    let bob_bare = format!("bob@{DOMAIN}");
    let r = bob.iq("get", None, Element::new("metadata", NS)).await;
    assert_eq!(r.child("metadata", NS).unwrap().elements().count(), 0);
    let r = bob.iq("get", None, Element::new("query", NS)).await;
    let x = r.child("query", NS).unwrap().child("x", DATA).unwrap();
    let vars: Vec<_> = x.elements().filter_map(|f| f.attr("var")).collect();
    assert_eq!(
        vars,
        [
            "FORM_TYPE",
            "with",
            "start",
            "end",
            "before-id",
            "after-id",
            "ids"
        ]
    );
    let r = bob
        .iq(
            "get",
            Some(&bob_bare),
            Element::new("query", "http://jabber.org/protocol/disco#info"),
        )
        .await;
    let q = r.first_element().unwrap();
    for f in [NS, NS_EXTENDED] {
        assert!(q.elements().any(|e| e.attr("var") == Some(f)), "{f}");
    }
    for i in 0..3 {
        alice.message(&bob_bare, &format!("m{i}")).await;
        bob.expect("message", |e| body(e).is_some()).await;
    }
    let r = bob.iq("get", None, Element::new("metadata", NS)).await;
    let m = r.child("metadata", NS).unwrap();
    assert!(m.child("start", NS).unwrap().attr("timestamp").is_some());
    assert!(m.child("end", NS).unwrap().attr("id").is_some());

    // Retention: age the first message by 400 days; a 365-day job forgets it, 0 keeps all.
    let storage = &h.server.storage;
    storage
        .call(|c| {
            c.execute("UPDATE mam_archive SET stamp = stamp - 400 * 86400 WHERE id IN (SELECT min(id) FROM mam_archive WHERE username = 'bob')", [])?;
            Ok(())
        })
        .await
        .unwrap();
    let now = crate::storage::now_secs();
    assert_eq!(super::expire_old(storage, 0, now).await.unwrap(), 0);
    assert_eq!(super::expire_old(storage, 365, now).await.unwrap(), 1);
    assert_eq!(super::expire_old(storage, 365, now).await.unwrap(), 0);
    let (r, _) = query(&mut bob, &[], &[]).await;
    assert_eq!(r.iter().map(result_body).collect::<Vec<_>>(), ["m1", "m2"]);
}

#[test]
fn retention_is_configurable_and_strict() {
    let base = "domain = \"example.test\"\n[tls]\ncert = \"/c\"\nkey = \"/k\"\n";
    let c = crate::config::Config::parse(base, "t").unwrap();
    assert_eq!(c.modules.mam.retention_days, 365);
    let c =
        crate::config::Config::parse(&format!("{base}[modules.mam]\nretention_days = 0\n"), "t")
            .unwrap();
    assert_eq!(c.modules.mam.retention_days, 0);
    let e = crate::config::Config::parse(&format!("{base}[modules.mam]\nretention = 3\n"), "t")
        .unwrap_err();
    assert!(e.to_string().contains("retention"), "{e}");
}

/// A long archive read (a snapshot held for 1.5 s) does not hold up a message being archived:
/// reads go through the read-only WAL connection, not the writer.
#[tokio::test]
async fn a_long_read_does_not_hold_up_messages() {
    let h = Harness::new().await;
    let (mut alice, mut bob) = pair(&h).await;
    let bob_bare = format!("bob@{DOMAIN}");
    alice.message(&bob_bare, "before").await;
    bob.expect("first", |e| body(e).is_some()).await;
    // Delivered before its archived copies are committed: let them commit first.
    h.server.storage.settled().await.unwrap();
    let storage = h.server.storage.clone();
    let reading = tokio::spawn(async move {
        storage
            .read(|c| {
                let snapshot = c.unchecked_transaction()?;
                let n: i64 =
                    snapshot.query_row("SELECT count(*) FROM mam_archive", [], |r| r.get(0))?;
                std::thread::sleep(Duration::from_millis(1500));
                Ok(n)
            })
            .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = std::time::Instant::now();
    alice.message(&bob_bare, "during a read").await;
    let m = bob.expect("second", |e| body(e).is_some()).await;
    live_id(&m, &bob_bare);
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "archiving waited for a reader: {:?}",
        started.elapsed()
    );
    assert_eq!(
        reading.await.unwrap().unwrap(),
        2,
        "the reader saw its snapshot"
    );
}
