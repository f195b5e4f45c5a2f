//! A chat message reaches its recipient without waiting for its archived copies' commit (an
//! fsync, slow on an SD card), while the sender's stream management acknowledgement and any
//! archive query wait for it. The writer thread is held by a job, as a slow card would hold it.

use super::{NS, SID};
use crate::harness::{body, Harness, DOMAIN};
use crate::xml::{ns, Element};
use std::time::Duration;

const SM: &str = "urn:xmpp:sm:3";

#[tokio::test]
async fn delivery_goes_ahead_of_the_commit_and_the_ack_and_queries_wait_for_it() {
    let h = Harness::new().await;
    h.user("alice").await;
    h.user("bob").await;
    let mut alice = h.login("alice", "phone").await;
    let mut bob = h.login("bob", "phone").await;
    alice.available().await;
    bob.available().await;
    alice.send(Element::new("enable", SM)).await;
    alice
        .expect("<enabled/>", |e| e.name == "enabled" && e.ns == SM)
        .await;

    // The writer's next batch waits until `release` is sent.
    let (release, held) = std::sync::mpsc::channel::<()>();
    let hold = h
        .server
        .storage
        .submit(move |_| {
            let _ = held.recv();
            Ok(())
        })
        .await
        .expect("queued");

    alice
        .message(&format!("bob@{DOMAIN}"), "not on the card yet")
        .await;
    alice.send(Element::new("r", SM)).await;
    let live = bob
        .expect("the message", |e| {
            body(e).as_deref() == Some("not on the card yet")
        })
        .await;
    let id = live
        .child("stanza-id", SID)
        .and_then(|s| s.attr("id"))
        .expect("the live copy carries its archive id")
        .to_string();
    alice
        .expect_none(
            "an acknowledgement before the commit",
            Duration::from_millis(300),
            |e| e.name == "a" && e.ns == SM,
        )
        .await;

    // bob asks his archive at once: the answer waits for the commit too.
    bob.send(
        Element::new("iq", ns::CLIENT)
            .with_attr("type", "set")
            .with_attr("id", "q1")
            .with_child(Element::new("query", NS).with_attr("queryid", "now")),
    )
    .await;
    bob.expect_none(
        "an archive answer before the commit",
        Duration::from_millis(300),
        |e| e.name == "iq" || e.child("result", NS).is_some(),
    )
    .await;

    release.send(()).expect("the writer waits");
    hold.await.expect("the held job commits");
    let ack = alice.expect("<a/>", |e| e.name == "a" && e.ns == SM).await;
    assert_eq!(ack.attr("h"), Some("1"), "the message counts as handled");
    let result = bob
        .expect("the archived copy", |e| e.child("result", NS).is_some())
        .await;
    assert_eq!(
        result.child("result", NS).and_then(|r| r.attr("id")),
        Some(id.as_str()),
        "archived under the id the live copy carried"
    );
    let fin = bob
        .expect("the query's end", |e| {
            e.name == "iq" && e.attr("id") == Some("q1")
        })
        .await;
    assert_eq!(fin.attr("type"), Some("result"));
}
