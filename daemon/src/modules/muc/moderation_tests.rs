//! Moderated rooms (voice requests and their approval), passwords, and the room's vCard with
//! its avatar hash, through the real server (harness).

use super::room::{NS_MUC, NS_USER};
use super::tests::*;
use crate::xml::{ns, Element};

const DATA: &str = "jabber:x:data";
const REQUEST: &str = "http://jabber.org/protocol/muc#request";

fn form(kind: &str, fields: &[(&str, &str)]) -> Element {
    let mut x = Element::new("x", DATA).with_attr("type", kind);
    for (var, v) in fields {
        x.push_child(
            Element::new("field", DATA)
                .with_attr("var", *var)
                .with_child(Element::new("value", DATA).with_text(*v)),
        );
    }
    x
}

#[tokio::test]
async fn a_visitor_asks_for_voice_and_a_moderator_grants_it() {
    let (_h, mut c) = setup(&["alice", "bob"]).await;
    let [alice, bob] = &mut c[..] else {
        unreachable!()
    };
    enter(alice, "talk", "Alice").await;
    configure(alice, "talk", &[("muc#roomconfig_moderatedroom", "1")]).await;
    let own = enter(bob, "talk", "Bob").await;
    assert_eq!(item_attr(&own, "role").as_deref(), Some("visitor"));
    bob.send(groupchat("talk", "can I speak")).await;
    let e = bob
        .expect("refusal", |e| e.attr("type") == Some("error"))
        .await;
    assert_eq!(error_condition(&e), "forbidden");

    let request = form(
        "submit",
        &[("FORM_TYPE", REQUEST), ("muc#role", "participant")],
    );
    bob.send(
        Element::new("message", ns::CLIENT)
            .with_attr("to", room("talk"))
            .with_child(request),
    )
    .await;
    let asked = alice
        .expect("approval form", |e| {
            e.name == "message" && e.child("x", DATA).is_some()
        })
        .await;
    let x = asked.child("x", DATA).unwrap().to_xml(ns::CLIENT);
    assert!(x.contains("Bob") && x.contains("muc#request_allow"), "{x}");
    let approve = form(
        "submit",
        &[
            ("FORM_TYPE", REQUEST),
            ("muc#role", "participant"),
            ("muc#roomnick", "Bob"),
            ("muc#request_allow", "true"),
        ],
    );
    alice
        .send(
            Element::new("message", ns::CLIENT)
                .with_attr("to", room("talk"))
                .with_child(approve),
        )
        .await;
    let p = bob
        .expect("voice", |e| {
            e.name == "presence" && item_attr(e, "role").as_deref() == Some("participant")
        })
        .await;
    assert!(codes(&p).contains(&"110".to_string()));
    bob.send(groupchat("talk", "thank you")).await;
    got_body(alice, "thank you").await;
}

#[tokio::test]
async fn a_password_keeps_strangers_out_and_invitations_carry_it() {
    let (_h, mut c) = setup(&["alice", "bob"]).await;
    let [alice, bob] = &mut c[..] else {
        unreachable!()
    };
    enter(alice, "safe", "Alice").await;
    configure(
        alice,
        "safe",
        &[
            ("muc#roomconfig_passwordprotectedroom", "1"),
            ("muc#roomconfig_roomsecret", "tea"),
        ],
    )
    .await;
    let refused = enter(bob, "safe", "Bob").await;
    assert_eq!(error_condition(&refused), "not-authorized");
    alice
        .send(
            Element::new("message", ns::CLIENT)
                .with_attr("to", room("safe"))
                .with_child(
                    Element::new("x", NS_USER).with_child(
                        Element::new("invite", NS_USER)
                            .with_attr("to", format!("bob@{}", crate::harness::DOMAIN)),
                    ),
                ),
        )
        .await;
    let inv = bob
        .expect("invitation", |e| e.child("x", NS_USER).is_some())
        .await;
    let pw = inv
        .child("x", NS_USER)
        .unwrap()
        .child("password", NS_USER)
        .unwrap()
        .text();
    assert_eq!(pw, "tea");
    let x = Element::new("x", NS_MUC).with_child(Element::new("password", NS_MUC).with_text(pw));
    let own = enter_with(bob, "safe", "Bob", x).await;
    assert_eq!(own.attr("type"), None, "{}", own.to_xml(ns::CLIENT));
}

#[tokio::test]
async fn the_rooms_vcard_gives_its_avatar_hash_to_occupants() {
    let (_h, mut c) = setup(&["alice", "bob"]).await;
    let [alice, bob] = &mut c[..] else {
        unreachable!()
    };
    enter(alice, "pics", "Alice").await;
    configure(alice, "pics", &[]).await;
    enter(bob, "pics", "Bob").await;
    subject(bob).await;
    // "hello" in base64; its SHA-1 is the XEP-0153 hash.
    let card = Element::new("vCard", "vcard-temp").with_child(
        Element::new("PHOTO", "vcard-temp")
            .with_child(Element::new("TYPE", "vcard-temp").with_text("image/png"))
            .with_child(Element::new("BINVAL", "vcard-temp").with_text("aGVsbG8=")),
    );
    let r = bob.iq("set", Some(&room("pics")), card.clone()).await;
    assert_eq!(error_condition(&r), "forbidden");
    let r = alice.iq("set", Some(&room("pics")), card).await;
    assert_eq!(r.attr("type"), Some("result"));
    let hash = "aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d";
    let p = bob
        .expect("avatar presence", |e| {
            e.name == "presence" && e.attr("from") == Some(&*room("pics"))
        })
        .await;
    assert!(
        p.to_xml(ns::CLIENT).contains(hash),
        "{}",
        p.to_xml(ns::CLIENT)
    );
    let info = bob
        .iq(
            "get",
            Some(&room("pics")),
            Element::new("query", super::service::DISCO_INFO),
        )
        .await;
    assert!(info.to_xml(ns::CLIENT).contains(hash));
    let got = bob
        .iq(
            "get",
            Some(&room("pics")),
            Element::new("vCard", "vcard-temp"),
        )
        .await;
    assert!(got.to_xml(ns::CLIENT).contains("aGVsbG8="));
}

#[tokio::test]
async fn the_servers_admin_lists_and_destroys_rooms_through_the_control_requests() {
    use crate::control::{execute, Request};
    let (h, mut c) = setup(&["alice", "bob"]).await;
    let [alice, bob] = &mut c[..] else {
        unreachable!()
    };
    enter(alice, "noisy", "Alice").await;
    configure(alice, "noisy", &[("muc#roomconfig_roomname", "Noisy")]).await;
    enter(bob, "noisy", "Bob").await;
    let s = &h.server;
    let list = execute(&s.config, &s.storage, Some(s), Request::RoomList).await;
    assert!(list.ok, "{list:?}");
    assert_eq!(list.data[0]["name"], "noisy");
    assert_eq!(list.data[0]["title"], "Noisy");
    let req = Request::RoomDestroy {
        room: "noisy".into(),
        reason: "closed by the admin".into(),
    };
    let r = execute(&s.config, &s.storage, Some(s), req).await;
    assert!(r.ok, "{r:?}");
    let p = bob
        .expect("destroy notice", |e| e.attr("type") == Some("unavailable"))
        .await;
    assert!(p.to_xml(ns::CLIENT).contains("closed by the admin"));
    let list = execute(&s.config, &s.storage, Some(s), Request::RoomList).await;
    assert_eq!(list.data, serde_json::json!([]));
    let req = Request::RoomDestroy {
        room: "noisy".into(),
        reason: String::new(),
    };
    let r = execute(&s.config, &s.storage, Some(s), req).await;
    assert!(r.error.unwrap().contains("no room"));
}

#[tokio::test]
async fn iqs_to_an_occupant_pass_through_the_room_without_real_jids() {
    let (_h, mut c) = setup(&["alice", "bob", "carol"]).await;
    let [alice, bob, carol] = &mut c[..] else {
        unreachable!()
    };
    enter(alice, "q", "Alice").await;
    configure(alice, "q", &[]).await;
    enter(bob, "q", "Bob").await;
    bob.send(
        Element::new("iq", ns::CLIENT)
            .with_attr("type", "get")
            .with_attr("id", "v1")
            .with_attr("to", format!("{}/Alice", room("q")))
            .with_child(Element::new("vCard", "vcard-temp")),
    )
    .await;
    let asked = alice
        .expect("forwarded request", |e| {
            e.name == "iq" && e.attr("type") == Some("get")
        })
        .await;
    assert_eq!(asked.attr("from"), Some(&*format!("{}/Bob", room("q"))));
    assert_ne!(asked.attr("id"), Some("v1"));
    alice
        .send(
            Element::new("iq", ns::CLIENT)
                .with_attr("type", "result")
                .with_attr("id", asked.attr("id").unwrap())
                .with_attr("to", asked.attr("from").unwrap())
                .with_child(
                    Element::new("vCard", "vcard-temp")
                        .with_child(Element::new("FN", "vcard-temp").with_text("Alice A.")),
                ),
        )
        .await;
    let answer = bob.expect("answer", |e| e.attr("id") == Some("v1")).await;
    assert_eq!(answer.attr("type"), Some("result"));
    assert_eq!(answer.attr("from"), Some(&*format!("{}/Alice", room("q"))));
    assert!(answer.to_xml(ns::CLIENT).contains("Alice A."));
    // Someone outside the room cannot ask; a self-ping is answered by the room itself.
    let r = carol
        .iq(
            "get",
            Some(&format!("{}/Alice", room("q"))),
            Element::new("vCard", "vcard-temp"),
        )
        .await;
    assert_eq!(error_condition(&r), "not-acceptable");
    let r = bob
        .iq(
            "get",
            Some(&format!("{}/Bob", room("q"))),
            Element::new("ping", "urn:xmpp:ping"),
        )
        .await;
    assert_eq!(r.attr("type"), Some("result"));
}
