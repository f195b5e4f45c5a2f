//! XEP-0398 conversion: the pure pieces, then both directions through the in-process harness
//! (a PEP avatar becomes the vCard photo and the presence hash; a vCard photo becomes the PEP
//! avatar), removal, the client's own `<photo/>`, the size limit and the absence of loops.

use super::*;
use crate::harness::{Harness, TestClient, DOMAIN};
use crate::modules::pep::NS as PUBSUB;
use crate::storage::{RosterItem, Subscription};
use crate::xml::ns;
use base64::engine::general_purpose::STANDARD as B64;

/// A real 2×3 PNG header (enough for the size fields) followed by arbitrary bytes.
fn png(extra: &[u8]) -> Vec<u8> {
    let mut b = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
    b.extend_from_slice(&2u32.to_be_bytes());
    b.extend_from_slice(&3u32.to_be_bytes());
    b.extend_from_slice(&[8, 6, 0, 0, 0]);
    b.extend_from_slice(extra);
    b
}

fn vcard(photo: Option<(&str, &[u8])>) -> Element {
    let mut v = Element::new("vCard", NS_VCARD)
        .with_child(Element::new("NICKNAME", NS_VCARD).with_text("Al"));
    if let Some((mime, bytes)) = photo {
        // Folded as some clients send it.
        let text = B64.encode(bytes);
        let folded = text
            .as_bytes()
            .chunks(8)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join("\n ");
        v.push_child(
            Element::new("PHOTO", NS_VCARD)
                .with_child(Element::new("TYPE", NS_VCARD).with_text(mime))
                .with_child(Element::new("BINVAL", NS_VCARD).with_text(folded)),
        );
    }
    v
}

#[test]
fn a_vcard_photo_is_decoded_typed_and_bounded() {
    let img = png(b"pixels");
    let p = photo_of_vcard(&vcard(Some(("image/png", &img))), 1000)
        .unwrap()
        .unwrap();
    assert_eq!(
        (p.mime.as_str(), p.bytes.clone()),
        ("image/png", img.clone())
    );
    assert_eq!(photo_of_vcard(&vcard(None), 1000), Ok(None));
    assert_eq!(
        photo_of_vcard(&vcard(Some(("image/png", &img))), 10),
        Err(PhotoError::TooBig {
            bytes: img.len(),
            max: 10
        })
    );
    let mut bad = vcard(None);
    bad.push_child(
        Element::new("PHOTO", NS_VCARD)
            .with_child(Element::new("BINVAL", NS_VCARD).with_text("not*base64")),
    );
    assert_eq!(photo_of_vcard(&bad, 1000), Err(PhotoError::NotBase64));
    assert!(PhotoError::TooBig { bytes: 5, max: 1 }
        .to_stanza_error()
        .to_element()
        .to_xml("")
        .contains("photo_bytes"));
    // Without TYPE the first bytes tell.
    let mut untyped = vcard(None);
    untyped.push_child(
        Element::new("PHOTO", NS_VCARD)
            .with_child(Element::new("BINVAL", NS_VCARD).with_text(B64.encode(&img))),
    );
    assert_eq!(
        photo_of_vcard(&untyped, 1000).unwrap().unwrap().mime,
        "image/png"
    );
}

#[test]
fn metadata_names_the_stored_image_with_its_hash_and_size() {
    let p = Photo {
        mime: "image/png".into(),
        bytes: png(b"x"),
    };
    let m = metadata_payload(Some(&p));
    let info = m.child("info", METADATA_NODE).unwrap();
    assert_eq!(info.attr("id"), Some(sha1_hex(&p.bytes).as_str()));
    assert_eq!(info.attr("bytes"), Some(p.bytes.len().to_string().as_str()));
    assert_eq!(
        (info.attr("width"), info.attr("height")),
        (Some("2"), Some("3"))
    );
    // A JPEG's size is not read (that would mean parsing it): width and height are left out.
    let jpeg = Photo {
        mime: "image/jpeg".into(),
        bytes: vec![0xff, 0xd8, 0xff, 0xe0, 1, 2],
    };
    let m = metadata_payload(Some(&jpeg));
    assert_eq!(m.child("info", METADATA_NODE).unwrap().attr("width"), None);
    assert_eq!(choice_of(Some(&metadata_payload(None))), Choice::Removed);
    assert_eq!(
        choice_of(Some(&m)),
        Choice::Stored {
            id: jpeg.sha1(),
            mime: Some("image/jpeg".into())
        }
    );
    let external = Element::new("metadata", METADATA_NODE).with_child(
        Element::new("info", METADATA_NODE)
            .with_attr("id", "abc")
            .with_attr("url", "https://example.test/a.png"),
    );
    assert_eq!(choice_of(Some(&external)), Choice::ExternalOnly);
    // A vCard keeps its other fields when the photo changes.
    let v = vcard_with_photo(Some(vcard(None)), Some(&jpeg));
    assert!(v.child("NICKNAME", NS_VCARD).is_some());
    assert_eq!(photo_of_vcard(&v, 100).unwrap(), Some(jpeg));
    assert!(vcard_with_photo(Some(v), None)
        .child("PHOTO", NS_VCARD)
        .is_none());
}

fn photo_text(p: &Element) -> Option<String> {
    p.child("x", NS_UPDATE)
        .and_then(|x| x.child("photo", NS_UPDATE))
        .map(Element::text)
}

#[test]
fn the_hash_goes_into_presence_unless_the_client_sent_an_empty_photo() {
    let mut p = Element::new("presence", ns::CLIENT);
    inject_hash(&mut p, Some("abc"));
    assert_eq!(photo_text(&p).as_deref(), Some("abc"));
    // Another hash, or an <x/> without <photo/>, is replaced; one <x/> stays.
    inject_hash(&mut p, Some("def"));
    assert_eq!(photo_text(&p).as_deref(), Some("def"));
    assert_eq!(p.elements().filter(|e| e.is("x", NS_UPDATE)).count(), 1);
    let mut not_ready =
        Element::new("presence", ns::CLIENT).with_child(Element::new("x", NS_UPDATE));
    inject_hash(&mut not_ready, Some("abc"));
    assert_eq!(photo_text(&not_ready).as_deref(), Some("abc"));
    // No avatar: an empty photo, which XEP-0153 reads as "none".
    let mut none = Element::new("presence", ns::CLIENT);
    inject_hash(&mut none, None);
    assert_eq!(photo_text(&none).as_deref(), Some(""));
    let mut empty = Element::new("presence", ns::CLIENT)
        .with_child(Element::new("x", NS_UPDATE).with_child(Element::new("photo", NS_UPDATE)));
    inject_hash(&mut empty, Some("abc"));
    assert_eq!(photo_text(&empty).as_deref(), Some(""));
}

const ALICE: &str = "alice@example.test";

async fn friends(h: &Harness) -> (TestClient, TestClient) {
    for (user, contact) in [("alice", "bob"), ("bob", "alice")] {
        h.user(user).await;
        let mut item = RosterItem::new(&format!("{contact}@{DOMAIN}"));
        item.subscription = Subscription::Both;
        item.in_roster = true;
        h.server.storage.save_roster_item(user, item).await.unwrap();
    }
    let mut a = h.login("alice", "a").await;
    let mut b = h.login("bob", "b").await;
    a.available().await;
    b.available().await;
    (a, b)
}

fn publish(node: &str, id: &str, payload: Element) -> Element {
    Element::new("pubsub", PUBSUB).with_child(
        Element::new("publish", PUBSUB)
            .with_attr("node", node)
            .with_child(
                Element::new("item", PUBSUB)
                    .with_attr("id", id)
                    .with_child(payload),
            ),
    )
}

fn items(node: &str) -> Element {
    Element::new("pubsub", PUBSUB).with_child(Element::new("items", PUBSUB).with_attr("node", node))
}

fn first_payload(reply: &Element) -> Option<Element> {
    reply
        .child("pubsub", PUBSUB)?
        .child("items", PUBSUB)?
        .first_element()?
        .first_element()
        .cloned()
}

async fn vcard_of(c: &mut TestClient, whose: &str) -> Element {
    let r = c
        .iq("get", Some(whose), Element::new("vCard", NS_VCARD))
        .await;
    r.child("vCard", NS_VCARD).cloned().expect("a vCard")
}

/// Waits for a presence from alice carrying a photo hash and returns it.
async fn presence_photo(c: &mut TestClient) -> String {
    let p = c
        .expect("alice's presence with a photo", |e| {
            e.name == "presence"
                && e.attr("from").is_some_and(|f| f.starts_with(ALICE))
                && photo_text(e).is_some_and(|t| !t.is_empty())
        })
        .await;
    photo_text(&p).unwrap()
}

#[tokio::test]
async fn a_pep_avatar_becomes_the_vcard_photo_and_the_presence_hash() {
    let h = Harness::new().await;
    let (mut a, mut b) = friends(&h).await;
    let img = png(b"alice's face");
    let hash = sha1_hex(&img);
    let data = Element::new("data", DATA_NODE).with_text(B64.encode(&img));
    let r = a.iq("set", None, publish(DATA_NODE, &hash, data)).await;
    assert_eq!(r.attr("type"), Some("result"), "{}", r.to_xml(ns::CLIENT));
    let meta = Element::new("metadata", METADATA_NODE).with_child(
        Element::new("info", METADATA_NODE)
            .with_attr("id", hash.clone())
            .with_attr("bytes", img.len().to_string())
            .with_attr("type", "image/png"),
    );
    let r = a.iq("set", None, publish(METADATA_NODE, &hash, meta)).await;
    assert_eq!(r.attr("type"), Some("result"));

    // bob sees the hash in alice's presence (sent again by the server) and the photo in her vCard.
    assert_eq!(presence_photo(&mut b).await, hash);
    assert_eq!(presence_photo(&mut a).await, hash);
    let v = vcard_of(&mut b, ALICE).await;
    let photo = photo_of_vcard(&v, usize::MAX).unwrap().unwrap();
    assert_eq!((photo.mime.as_str(), photo.bytes), ("image/png", img));
    assert_eq!(v.child("NICKNAME", NS_VCARD), None, "nothing else invented");

    // A later presence of alice's carries the hash too, whatever she put in it.
    a.send(Element::new("presence", ns::CLIENT).with_child(
        Element::new("x", NS_UPDATE).with_child(Element::new("photo", NS_UPDATE).with_text("0000")),
    ))
    .await;
    assert_eq!(presence_photo(&mut b).await, hash);

    // Empty metadata: the avatar is gone from the vCard and from presence.
    let r = a
        .iq(
            "set",
            None,
            publish(METADATA_NODE, "none", metadata_payload(None)),
        )
        .await;
    assert_eq!(r.attr("type"), Some("result"));
    b.expect("alice's presence without a photo", |e| {
        e.name == "presence"
            && e.attr("from").is_some_and(|f| f.starts_with(ALICE))
            && photo_text(e).as_deref() == Some("")
    })
    .await;
    assert!(vcard_of(&mut b, ALICE)
        .await
        .child("PHOTO", NS_VCARD)
        .is_none());
}

#[tokio::test]
async fn metadata_that_does_not_match_its_data_leaves_the_vcard_alone() {
    let h = Harness::new().await;
    let (mut a, _b) = friends(&h).await;
    let img = png(b"one");
    let data = Element::new("data", DATA_NODE).with_text(B64.encode(&img));
    a.iq("set", None, publish(DATA_NODE, "not-its-hash", data))
        .await;
    let meta = Element::new("metadata", METADATA_NODE).with_child(
        Element::new("info", METADATA_NODE)
            .with_attr("id", "not-its-hash")
            .with_attr("type", "image/png"),
    );
    let r = a
        .iq("set", None, publish(METADATA_NODE, "not-its-hash", meta))
        .await;
    assert_eq!(
        r.attr("type"),
        Some("result"),
        "the PEP publish itself stands"
    );
    assert!(vcard_of(&mut a, ALICE)
        .await
        .child("PHOTO", NS_VCARD)
        .is_none());
    assert_eq!(current_hash(&h.server, "alice").await.unwrap(), None);
}

#[tokio::test]
async fn a_vcard_photo_becomes_the_open_pep_avatar_once() {
    let h = Harness::new().await;
    let (mut a, mut b) = friends(&h).await;
    h.user("carol").await;
    let mut c = h.login("carol", "c").await;
    let img = png(b"from a vCard");
    let hash = sha1_hex(&img);
    let r = a.iq("set", None, vcard(Some(("image/png", &img)))).await;
    assert_eq!(r.attr("type"), Some("result"), "{}", r.to_xml(ns::CLIENT));
    assert_eq!(presence_photo(&mut b).await, hash);

    // carol is no contact: the converted avatar is open, as clients expect of avatars.
    let m = first_payload(&c.iq("get", Some(ALICE), items(METADATA_NODE)).await)
        .expect("metadata item");
    let info = m.child("info", METADATA_NODE).expect("info");
    assert_eq!(info.attr("id"), Some(hash.as_str()));
    assert_eq!(info.attr("type"), Some("image/png"));
    assert_eq!(info.attr("bytes"), Some(img.len().to_string().as_str()));
    assert_eq!(
        (info.attr("width"), info.attr("height")),
        (Some("2"), Some("3"))
    );
    let d = first_payload(&c.iq("get", Some(ALICE), items(DATA_NODE)).await).expect("data");
    assert_eq!(B64.decode(d.text()).unwrap(), img);

    // The same photo again (a client changing only the nickname) publishes nothing new, and
    // the conversion did not convert back into the vCard (its NICKNAME is still there).
    let before = c.iq("get", Some(ALICE), items(METADATA_NODE)).await;
    let r = a.iq("set", None, vcard(Some(("image/png", &img)))).await;
    assert_eq!(r.attr("type"), Some("result"));
    let after = c.iq("get", Some(ALICE), items(METADATA_NODE)).await;
    assert_eq!(first_payload(&before), first_payload(&after));
    assert!(vcard_of(&mut c, ALICE)
        .await
        .child("NICKNAME", NS_VCARD)
        .is_some());

    // A vCard without a photo empties the metadata.
    a.iq("set", None, vcard(None)).await;
    let m = first_payload(&c.iq("get", Some(ALICE), items(METADATA_NODE)).await).unwrap();
    assert_eq!(choice_of(Some(&m)), Choice::Removed);
    assert_eq!(current_hash(&h.server, "alice").await.unwrap(), None);
}

#[tokio::test]
async fn a_photo_over_the_limit_is_refused_with_the_setting_named() {
    let h = Harness::with_config("[modules.vcard]\nphoto_bytes = 64\n").await;
    h.user("alice").await;
    let mut a = h.login("alice", "a").await;
    let r = a
        .iq("set", None, vcard(Some(("image/png", &png(&[7; 100])))))
        .await;
    assert_eq!(r.attr("type"), Some("error"));
    let xml = r.to_xml(ns::CLIENT);
    assert!(
        xml.contains("not-acceptable") && xml.contains("photo_bytes"),
        "{xml}"
    );
    // Nothing was stored.
    assert!(vcard_of(&mut a, ALICE)
        .await
        .child("PHOTO", NS_VCARD)
        .is_none());
}

#[tokio::test]
async fn a_vcard_stored_before_the_conversion_existed_gives_its_hash_at_login() {
    let h = Harness::new().await;
    h.user("alice").await;
    let img = png(b"old");
    h.server
        .storage
        .set_vcard("alice", vcard(Some(("image/png", &img))).to_xml(""))
        .await
        .unwrap();
    let mut a = h.login("alice", "a").await;
    a.send(Element::new("presence", ns::CLIENT)).await;
    assert_eq!(presence_photo(&mut a).await, sha1_hex(&img));
}

#[tokio::test]
async fn the_account_advertises_the_conversion() {
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
    let xml = info.to_xml(ns::CLIENT);
    assert!(xml.contains(NS_CONVERSION), "{xml}");
}

#[tokio::test]
async fn a_directed_presence_carries_the_hash_too() {
    // XEP-0398 §4: "also ... directed presences such as MUC joins".
    let h = Harness::new().await;
    for u in ["alice", "carol"] {
        h.user(u).await;
    }
    let mut a = h.login("alice", "a").await;
    let mut c = h.login("carol", "c").await;
    c.available().await;
    let img = png(b"directed");
    a.iq("set", None, vcard(Some(("image/jpeg", &img)))).await;
    a.send(Element::new("presence", ns::CLIENT).with_attr("to", "carol@example.test/c"))
        .await;
    assert_eq!(presence_photo(&mut c).await, sha1_hex(&img));
}
