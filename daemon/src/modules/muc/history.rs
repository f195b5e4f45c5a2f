//! What a room remembers: history on entering (XEP-0045 §7.2.14, `maxstanzas`, `maxchars`,
//! `seconds`, `since`), the room's XEP-0313 archive (paged by the accounts' archive code), the
//! retention of that archive, and the room's vCard with its XEP-0153 avatar hash.

use super::room::{Affiliation, Room};
use super::service::{internal, reply, send, Service};
use super::store;
use crate::jid::Jid;
use crate::modules::mam::{form as mam_form, store as mam_store};
use crate::server::Server;
use crate::stanza::StanzaError;
use crate::storage::now_secs;
use crate::xml::{ns, Element};
use std::sync::Arc;

const DELAY: &str = "urn:xmpp:delay";
const VCARD_UPDATE: &str = "vcard-temp:x:update";
/// Largest room vCard kept (an avatar of a few dozen kilobytes, base64).
const MAX_VCARD: usize = 128 * 1024;
/// Archived messages deleted per writer job.
const EXPIRE_BATCH: u32 = 500;

/// Sends a joining session the history it asked for (within the room's own limit).
pub async fn send_history(
    server: &Arc<Server>,
    domain: &str,
    room: &Room,
    to: &Jid,
    wanted: Option<&Element>,
) {
    let attr = |name: &str| wanted.and_then(|h| h.attr(name));
    let number = |name: &str| attr(name).and_then(|v| v.trim().parse::<u64>().ok());
    let mut limit = room.config.history_length;
    if let Some(n) = number("maxstanzas") {
        limit = limit.min(n.min(u64::from(u32::MAX)) as u32);
    }
    let max_chars = number("maxchars");
    let now = now_secs();
    let mut since = 0i64;
    if let Some(s) = number("seconds") {
        since = since.max(now.saturating_sub(s.min(i64::MAX as u64) as i64));
    }
    if let Some(t) = attr("since").and_then(crate::timefmt::parse_xep0082) {
        since = since.max(t);
    }
    if limit == 0 || max_chars == Some(0) {
        return;
    }
    let name = room.name.clone();
    // Room messages go out before their archived copy is committed (messages.rs): what was
    // queued before this join is committed first, so the history has it.
    let _ = server.storage.settled().await;
    let rows = match server
        .storage
        .read(move |c| store::recent(c, &name, limit, since))
        .await
    {
        Ok(r) => r,
        Err(e) => {
            log::error!("group chats: history of {}: {e}", room.name);
            return;
        }
    };
    // maxchars counts whole stanzas from the newest back (§7.2.14).
    let mut keep = rows.len();
    if let Some(max) = max_chars {
        let mut total = 0u64;
        keep = 0;
        for (_, xml) in rows.iter().rev() {
            total += xml.len() as u64;
            if total > max {
                break;
            }
            keep += 1;
        }
    }
    let room_jid = format!("{}@{domain}", room.name);
    for (stamp, xml) in &rows[rows.len() - keep..] {
        let Some(mut m) = crate::xml::parse_fragment(xml).await else {
            continue;
        };
        m.set_attr("to", to.to_string());
        m.push_child(
            Element::new("delay", DELAY)
                .with_attr("from", room_jid.clone())
                .with_attr("stamp", crate::timefmt::xep0082(*stamp)),
        );
        send(server, m).await;
    }
}

/// The room's avatar hash as presence from the room's own JID (XEP-0153 for rooms).
pub fn avatar_presence(domain: &str, room: &str, hash: &str, to: &Jid) -> Element {
    Element::new("presence", ns::CLIENT)
        .with_attr("from", format!("{room}@{domain}"))
        .with_attr("to", to.to_string())
        .with_child(
            Element::new("x", VCARD_UPDATE)
                .with_child(Element::new("photo", VCARD_UPDATE).with_text(hash)),
        )
}

/// The empty query form (XEP-0313 §4.1.5).
pub fn query_form() -> Element {
    let mut x = Element::new("x", mam_form::DATA)
        .with_attr("type", "form")
        .with_child(
            Element::new("field", mam_form::DATA)
                .with_attr("var", "FORM_TYPE")
                .with_attr("type", "hidden")
                .with_child(Element::new("value", mam_form::DATA).with_text(mam_form::NS)),
        );
    for (var, kind) in mam_form::FIELDS {
        x.push_child(
            Element::new("field", mam_form::DATA)
                .with_attr("var", *var)
                .with_attr("type", *kind),
        );
    }
    Element::new("query", mam_form::NS).with_child(x)
}

/// Who may read a room's archive: its occupants; for members-only rooms its members; for
/// open rooms anybody not banned.
fn may_read(room: &Room, from: &Jid) -> bool {
    let aff = room.affiliation(&from.bare_string());
    if aff == Affiliation::Outcast {
        return false;
    }
    room.by_bare(&from.bare()).is_some() || !room.config.members_only || aff != Affiliation::None
}

/// XEP-0313 on a room: the result messages go out, then the IQ result carries the `<fin/>`.
pub async fn archive_query(
    svc: &Service,
    server: &Arc<Server>,
    name: &str,
    from: &Jid,
    iq: &Element,
    payload: &Element,
) -> Result<Option<Element>, StanzaError> {
    let room = svc
        .rooms
        .get(name)
        .ok_or_else(StanzaError::item_not_found)?;
    if !may_read(room, from) {
        return Err(StanzaError::forbidden().with_text("only members read this room's archive"));
    }
    let query = mam_form::parse_query(payload)?;
    let q = query.clone();
    let owner = name.to_string();
    server.storage.settled().await.map_err(internal)?;
    let page = server
        .storage
        .read(move |c| {
            let snapshot = c.unchecked_transaction()?;
            let page = match mam_store::query_table(&snapshot, store::ARCHIVE_TABLE, &owner, &q) {
                Ok(p) => Ok(Ok(p)),
                Err(mam_store::QueryFailure::Client(e)) => Ok(Err(e)),
                Err(mam_store::QueryFailure::Storage(e)) => Err(e),
            };
            drop(snapshot);
            page
        })
        .await
        .map_err(internal)??;
    let room_jid = svc.room_jid(name);
    let to = iq.attr("from").unwrap_or_default().to_string();
    let (results, fin) = crate::modules::mam::render_page(&page, &query, &room_jid, &to).await;
    for r in results {
        reply(server, r);
    }
    Ok(Some(fin))
}

/// vcard-temp on the room's JID: anyone reads it, owners set it; the photo's SHA-1 becomes the
/// room's avatar hash, announced to the occupants.
pub async fn vcard_iq(
    svc: &mut Service,
    server: &Arc<Server>,
    name: &str,
    from: &Jid,
    payload: &Element,
    set: bool,
) -> Result<Option<Element>, StanzaError> {
    let room = svc
        .rooms
        .get_mut(name)
        .ok_or_else(StanzaError::item_not_found)?;
    if !set {
        let n = name.to_string();
        let xml = server
            .storage
            .read(move |c| store::vcard(c, &n))
            .await
            .map_err(internal)?;
        let card = match xml {
            Some(x) => crate::xml::parse_fragment(&x).await,
            None => None,
        };
        return Ok(Some(
            card.unwrap_or_else(|| Element::new("vCard", super::service::VCARD)),
        ));
    }
    if room.affiliation(&from.bare_string()) != Affiliation::Owner {
        return Err(StanzaError::forbidden().with_text("only owners set the room's vCard"));
    }
    let xml = payload.to_xml("");
    if xml.len() > MAX_VCARD {
        return Err(StanzaError::new("modify", "not-acceptable")
            .with_text(format!("a room's vCard may have {MAX_VCARD} bytes at most")));
    }
    let hash = photo_hash(payload);
    room.avatar_hash = hash.clone();
    let n = name.to_string();
    let h = hash.clone();
    server
        .storage
        .call(move |c| store::set_vcard(c, &n, &xml, h.as_deref()))
        .await
        .map_err(internal)?;
    let domain = svc.domain.clone();
    let room = svc
        .rooms
        .get(name)
        .ok_or_else(StanzaError::item_not_found)?;
    let targets: Vec<Jid> = room
        .occupants
        .iter()
        .flat_map(|o| o.sessions.iter().map(|s| s.jid.clone()))
        .collect();
    for to in targets {
        send(
            server,
            avatar_presence(&domain, name, hash.as_deref().unwrap_or(""), &to),
        )
        .await;
    }
    Ok(None)
}

/// XEP-0153: the hex SHA-1 of the photo's decoded bytes, if the vCard has one.
fn photo_hash(card: &Element) -> Option<String> {
    use base64::Engine;
    use sha1::Digest;
    let binval = card
        .child("PHOTO", super::service::VCARD)?
        .child("BINVAL", super::service::VCARD)?;
    let text: String = binval
        .text()
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .ok()?;
    let digest = sha1::Sha1::digest(&bytes);
    Some(digest.iter().map(|b| format!("{b:02x}")).collect())
}

/// Forgets archived messages older than `days` (0 keeps them forever).
pub async fn expire(server: &Arc<Server>, days: u32) {
    if days == 0 {
        return;
    }
    let cutoff = now_secs() - i64::from(days) * 86_400;
    loop {
        match server
            .storage
            .call(move |c| store::expire(c, cutoff, EXPIRE_BATCH))
            .await
        {
            Ok(n) if n < EXPIRE_BATCH as usize => return,
            Ok(_) => {}
            Err(e) => {
                log::error!("group chats: archive retention failed: {e}");
                return;
            }
        }
    }
}
