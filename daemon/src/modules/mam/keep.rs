//! What goes into an account's archive, and the `<stanza-id/>` its live copy carries (XEP-0313
//! §7, XEP-0359, XEP-0334 hints). The decision comes from preferences kept in memory
//! (`prefs_cache.rs`) and the insert is queued, not awaited: its commit is left in the event's
//! `pending`, so the core delivers first and acknowledges after the commit.

use super::prefs_cache::PrefsCache;
use super::store::{self, NewEntry};
use super::{CARBONS, CONTENT, HINTS, NS, SID};
use crate::hooks::{Pending, StanzaEvent};
use crate::jid::Jid;
use crate::server::Server;
use crate::stanza;
use crate::storage::now_secs;
use crate::xml::{ns, Element};

/// XEP-0313 §7 with the XEP-0334 hints: whether a routed message belongs in an archive.
pub fn should_archive(msg: &Element) -> Result<(), &'static str> {
    match stanza::stanza_type(msg) {
        "chat" | "normal" => {}
        "groupchat" => return Err("group chat (the room keeps its own archive)"),
        _ => return Err("neither chat nor normal"),
    }
    if msg.child("no-store", HINTS).is_some() || msg.child("no-permanent-store", HINTS).is_some() {
        return Err("no-store hint");
    }
    if msg.child("sent", CARBONS).is_some()
        || msg.child("received", CARBONS).is_some()
        || msg.child("result", NS).is_some()
    {
        return Err("a copy of another message");
    }
    if msg.child("store", HINTS).is_some() {
        return Ok(());
    }
    let content = msg
        .elements()
        .any(|c| c.is("body", ns::CLIENT) || CONTENT.contains(&c.ns.as_str()));
    if content {
        Ok(())
    } else {
        Err("no content (chat states, receipts and markers alone are not kept)")
    }
}

/// Drops `<stanza-id/>` elements that claim to come from `by_any` (our account or domain): only
/// the server assigns those, a client must not be able to forge one (XEP-0359 §4).
pub fn strip_forged_ids(msg: &mut Element, by_any: &[&str]) {
    msg.children.retain(|c| match c {
        crate::xml::Node::Element(e) if e.is("stanza-id", SID) => {
            !by_any.contains(&e.attr("by").unwrap_or(""))
        }
        _ => true,
    });
}

/// Archives `msg` in `owner`'s archive under a fresh id (added to `msg` as its `<stanza-id/>`)
/// when the account's preferences keep it. The commit is left in `pending`: the message goes on
/// to its recipient meanwhile, and the sender's acknowledgement waits for it.
async fn store_message(
    server: &Server,
    prefs: &PrefsCache,
    owner: &Jid,
    peer: &Jid,
    outgoing: bool,
    msg: &mut Element,
    pending: &mut Pending,
) {
    let Some(username) = owner.local.clone() else {
        return;
    };
    let with_bare = peer.bare_string();
    // Decided from preferences kept in memory, so the live copy gets its id without waiting
    // for the card; the writer decides again inside the transaction that keeps it.
    match prefs.keeps(server, &username, &with_bare).await {
        Ok(true) => {}
        Ok(false) => return,
        Err(e) => log::warn!("archive: cannot read {owner}'s preferences ({e}); keeping it"),
    }
    let stanza_id = stanza::random_id(12);
    msg.push_child(
        Element::new("stanza-id", SID)
            .with_attr("by", owner.bare_string())
            .with_attr("id", stanza_id.clone()),
    );
    let entry = NewEntry {
        username,
        stanza_id,
        stamp: now_secs(),
        with_bare,
        with_full: peer.to_string(),
        outgoing,
        stanza: msg.to_xml(ns::CLIENT),
    };
    match server
        .storage
        .submit(move |c| store::archive(c, &entry))
        .await
    {
        Ok(commit) => {
            let owner = owner.clone();
            pending.push(async move {
                match commit.await {
                    Ok(true) => {}
                    Ok(false) => log::debug!("archive: {owner}'s preferences changed; not kept"),
                    // Delivery went on: a message without an archived copy beats a lost message.
                    Err(e) => log::error!("archive: cannot keep a message of {owner}: {e}"),
                }
            });
        }
        Err(e) => {
            log::error!("archive: cannot keep a message of {owner}: {e}");
            msg.remove_children("stanza-id", SID);
        }
    }
}

/// A message one of the account's sessions sent: into the sender's archive. The live copy is
/// left alone (the recipient's server gives it the recipient's id).
pub async fn archive_sent(server: &Server, prefs: &PrefsCache, ev: &mut StanzaEvent<'_>) {
    let owner = ev.from.bare();
    strip_forged_ids(&mut ev.stanza, &[&owner.bare_string(), server.domain()]);
    let peer = ev.to.clone().unwrap_or_else(|| owner.clone());
    if peer.local.is_none() && peer.domain == server.domain() {
        return; // To the server itself: nothing to keep.
    }
    if let Err(why) = should_archive(&ev.stanza) {
        log::trace!("not archived: {why}");
        return;
    }
    let mut copy = ev.stanza.clone();
    store_message(
        server,
        prefs,
        &owner,
        &peer,
        true,
        &mut copy,
        &mut ev.pending,
    )
    .await;
}

/// A message for a local account: into its archive, and the live copy gets the same id.
pub async fn archive_received(server: &Server, prefs: &PrefsCache, ev: &mut StanzaEvent<'_>) {
    let Some(owner) = ev.to.as_ref().map(Jid::bare) else {
        return;
    };
    strip_forged_ids(&mut ev.stanza, &[&owner.bare_string(), server.domain()]);
    if let Err(why) = should_archive(&ev.stanza) {
        log::trace!("not archived: {why}");
        return;
    }
    let peer = ev.from.clone();
    store_message(
        server,
        prefs,
        &owner,
        &peer,
        false,
        &mut ev.stanza,
        &mut ev.pending,
    )
    .await;
}
