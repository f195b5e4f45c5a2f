//! History on entering and the room's archive (XEP-0313 with the room's XEP-0359 ids), and
//! what the room and the service say about themselves in disco, through the real server.

use super::form::DATA;
use super::room::{NS_MUC, NS_OCCUPANT_ID};
use super::tests::*;
use crate::harness::{body, DOMAIN};
use crate::modules::mam::SID;
use crate::xml::{ns, Element};
use std::time::Duration;

#[tokio::test]
async fn history_and_the_archive_give_messages_in_order_with_the_rooms_ids() {
    let (_h, mut c) = setup(&["alice", "bob"]).await;
    let [alice, bob] = &mut c[..] else {
        unreachable!()
    };
    enter(alice, "log", "Alice").await;
    configure(alice, "log", &[("muc#roomconfig_persistentroom", "1")]).await;
    let mut live_ids = Vec::new();
    for i in 1..=3 {
        alice.send(groupchat("log", &format!("m{i}"))).await;
        let m = got_body(alice, &format!("m{i}")).await;
        live_ids.push(
            m.child("stanza-id", SID)
                .unwrap()
                .attr("id")
                .unwrap()
                .to_string(),
        );
    }
    // History limited to two stanzas, with delays from the room.
    let x = Element::new("x", NS_MUC)
        .with_child(Element::new("history", NS_MUC).with_attr("maxstanzas", "2"));
    enter_with(bob, "log", "Bob", x).await;
    let h2 = got_body(bob, "m2").await;
    assert_eq!(
        h2.child("delay", "urn:xmpp:delay").unwrap().attr("from"),
        Some(&*room("log"))
    );
    got_body(bob, "m3").await;
    subject(bob).await;
    bob.expect_none("older history", Duration::from_millis(200), |e| {
        body(e).as_deref() == Some("m1")
    })
    .await;

    let q = Element::new("query", "urn:xmpp:mam:2").with_attr("queryid", "q1");
    bob.send(
        Element::new("iq", ns::CLIENT)
            .with_attr("type", "set")
            .with_attr("id", "mam1")
            .with_attr("to", room("log"))
            .with_child(q),
    )
    .await;
    let mut got = Vec::new();
    for _ in 0..3 {
        let r = bob
            .expect("archive result", |e| {
                e.child("result", "urn:xmpp:mam:2").is_some()
            })
            .await;
        assert_eq!(r.attr("from"), Some(&*room("log")));
        let result = r.child("result", "urn:xmpp:mam:2").unwrap();
        let fwd = result
            .child("forwarded", "urn:xmpp:forward:0")
            .unwrap()
            .child("message", ns::CLIENT)
            .unwrap();
        got.push((result.attr("id").unwrap().to_string(), body(fwd).unwrap()));
    }
    let fin = bob.expect("fin", |e| e.attr("id") == Some("mam1")).await;
    assert_eq!(fin.attr("type"), Some("result"));
    assert_eq!(
        got,
        live_ids
            .iter()
            .cloned()
            .zip(["m1", "m2", "m3"].map(String::from))
            .collect::<Vec<_>>()
    );
    // `with` names an occupant; a real JID finds nothing (it would unmask a nick).
    for (with, n) in [
        (format!("{}/Alice", room("log")), 3),
        (format!("alice@{DOMAIN}"), 0),
    ] {
        let form = Element::new("x", DATA)
            .with_attr("type", "submit")
            .with_child(
                Element::new("field", DATA)
                    .with_attr("var", "with")
                    .with_child(Element::new("value", DATA).with_text(with.clone())),
            );
        let q = Element::new("query", "urn:xmpp:mam:2").with_child(form);
        let fin = bob.iq("set", Some(&room("log")), q).await;
        let count = fin
            .child("fin", "urn:xmpp:mam:2")
            .unwrap()
            .child("set", "http://jabber.org/protocol/rsm")
            .unwrap()
            .child("count", "http://jabber.org/protocol/rsm")
            .unwrap()
            .text();
        assert_eq!(count, n.to_string(), "with {with}");
        for _ in 0..n {
            bob.expect("filtered result", |e| {
                e.child("result", "urn:xmpp:mam:2").is_some()
            })
            .await;
        }
    }
    // disco: the room says what it is.
    let info = bob
        .iq(
            "get",
            Some(&room("log")),
            Element::new("query", super::service::DISCO_INFO),
        )
        .await;
    let xml = info.to_xml(ns::CLIENT);
    for f in [
        "muc_persistent",
        "urn:xmpp:mam:2",
        NS_OCCUPANT_ID,
        "muc_semianonymous",
    ] {
        assert!(xml.contains(f), "{f} in {xml}");
    }
    let service = bob
        .iq(
            "get",
            Some(&muc()),
            Element::new("query", super::service::DISCO_INFO),
        )
        .await;
    assert!(service
        .to_xml(ns::CLIENT)
        .contains("muc#self-ping-optimization"));
    let items = bob
        .iq(
            "get",
            Some(&muc()),
            Element::new("query", super::service::DISCO_ITEMS),
        )
        .await;
    assert!(
        items.to_xml(ns::CLIENT).contains(&room("log")),
        "{}",
        items.to_xml(ns::CLIENT)
    );
}
