//! XEP-0398: User Avatar to vCard-Based Avatars Conversion. One avatar per account, seen two
//! ways: XEP-0084 (PEP nodes `urn:xmpp:avatar:data` and `urn:xmpp:avatar:metadata`) and
//! XEP-0153 (the vCard's PHOTO, announced by its SHA-1 in presence). A client changing either
//! changes the other: a metadata publish (or retract, purge, delete) writes the vCard's PHOTO
//! (`metadata_changed`, called by `pep`); a vCard set with another PHOTO publishes data and
//! metadata (`store_vcard`, called by `vcard`). Each conversion writes storage directly, never
//! through the other side's request handler, so a conversion never converts back; and nothing
//! happens when the hash is the one already known. The hash of the vCard's photo is kept in a
//! table of its own (so presence costs one small read, not a vCard parse) and put into every
//! available presence the account sends (XEP-0398 §4); a changed avatar re-sends the account's
//! presence so contacts learn the new hash.

use super::pep::form::{AccessModel, NodeConfig, SendLast};
use super::pep::store::{self, Item, Limits, Published};
use super::pep::NS_EVENT;
use super::Module;
use crate::hooks::{BoxFut, DiscoInfo, DiscoTarget, Flow, Hook, Kind, StanzaEvent};
use crate::server::Server;
use crate::stanza::StanzaError;
use crate::xml::Element;
use base64::Engine;
use rusqlite::OptionalExtension;
use sha1::{Digest, Sha1};
use std::sync::Arc;

pub const NS_CONVERSION: &str = "urn:xmpp:pep-vcard-conversion:0";
pub const DATA_NODE: &str = "urn:xmpp:avatar:data";
pub const METADATA_NODE: &str = "urn:xmpp:avatar:metadata";
pub const NS_UPDATE: &str = "vcard-temp:x:update";
const NS_VCARD: &str = super::vcard::NS;

/// The table keeps `''` for "no avatar"; a missing row means "not known yet" (an account
/// whose vCard predates this module), filled from the vCard at its next presence.
const MIGRATIONS: &[&str] = &["CREATE TABLE avatar_hashes (
        username TEXT PRIMARY KEY REFERENCES users(username) ON DELETE CASCADE,
        sha1     TEXT NOT NULL
     ) WITHOUT ROWID;"];

pub struct AvatarConversion;

impl Module for AvatarConversion {
    fn name(&self) -> &'static str {
        "avatar_conversion"
    }
    fn hooks(&self) -> &'static [(Hook, i16)] {
        // Before `presence` (0) takes the stanza to broadcast and remember it.
        &[(Hook::Outbound(Kind::Presence), 60)]
    }
    fn migrations(&self) -> &'static [&'static str] {
        MIGRATIONS
    }
    fn disco_info(&self, _server: &Server, target: DiscoTarget, info: &mut DiscoInfo) {
        if target == DiscoTarget::Account {
            info.feature(NS_CONVERSION);
        }
    }
    fn on_stanza<'a>(
        &'a self,
        server: &'a Arc<Server>,
        _hook: Hook,
        ev: &'a mut StanzaEvent<'_>,
    ) -> BoxFut<'a, Flow> {
        Box::pin(async move {
            // Available presence only (no type), broadcast or directed (MUC joins too).
            if ev.stanza.attr("type").is_some() || keeps_client_photo(&ev.stanza) {
                return Flow::Continue;
            }
            if let Some(user) = ev.from.local.clone() {
                match current_hash(server, &user).await {
                    Ok(hash) => inject_hash(&mut ev.stanza, hash.as_deref()),
                    Err(e) => log::error!("avatar: no photo hash for {user}: {e}"),
                }
            }
            Flow::Continue
        })
    }
}

/// An avatar image: its MIME type and bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Photo {
    pub mime: String,
    pub bytes: Vec<u8>,
}

impl Photo {
    pub fn sha1(&self) -> String {
        sha1_hex(&self.bytes)
    }
}

pub fn sha1_hex(bytes: &[u8]) -> String {
    Sha1::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Why a vCard's photo is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PhotoError {
    NotBase64,
    TooBig { bytes: usize, max: usize },
}

impl PhotoError {
    pub fn to_stanza_error(&self) -> StanzaError {
        match self {
            PhotoError::NotBase64 => {
                StanzaError::bad_request().with_text("the vCard's PHOTO/BINVAL is not valid base64")
            }
            PhotoError::TooBig { bytes, max } => StanzaError::new("modify", "not-acceptable")
                .with_text(format!(
                    "the vCard's photo has {bytes} bytes; this server keeps at most {max} \
                     ([modules.vcard] photo_bytes)"
                )),
        }
    }
}

fn decode_base64(text: &str) -> Option<Vec<u8>> {
    // BINVAL is often folded into lines.
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(compact)
        .ok()
}

/// The MIME type of well-known image formats by their first bytes (for a PHOTO without TYPE).
fn sniff_mime(b: &[u8]) -> &'static str {
    if b.starts_with(b"\x89PNG\r\n\x1a\n") {
        "image/png"
    } else if b.starts_with(&[0xff, 0xd8, 0xff]) {
        "image/jpeg"
    } else if b.starts_with(b"GIF8") {
        "image/gif"
    } else if b.len() >= 12 && &b[..4] == b"RIFF" && &b[8..12] == b"WEBP" {
        "image/webp"
    } else {
        "application/octet-stream"
    }
}

/// Width and height where the header states them at a fixed place (PNG, GIF): XEP-0084 makes
/// them optional, and no image is decoded for them.
pub fn dimensions(b: &[u8]) -> Option<(u32, u32)> {
    if b.starts_with(b"\x89PNG\r\n\x1a\n") && b.len() >= 24 && &b[12..16] == b"IHDR" {
        let be = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        return Some((be(16), be(20)));
    }
    if b.starts_with(b"GIF8") && b.len() >= 10 {
        let le = |i: usize| u32::from(u16::from_le_bytes([b[i], b[i + 1]]));
        return Some((le(6), le(8)));
    }
    None
}

/// The binary photo of a vCard (`PHOTO` with `BINVAL`); an `EXTVAL` photo or none is `None`.
pub fn photo_of_vcard(vcard: &Element, max: usize) -> Result<Option<Photo>, PhotoError> {
    let Some(binval) = vcard
        .child("PHOTO", NS_VCARD)
        .and_then(|p| p.child("BINVAL", NS_VCARD))
    else {
        return Ok(None);
    };
    let bytes = decode_base64(&binval.text()).ok_or(PhotoError::NotBase64)?;
    if bytes.is_empty() {
        return Ok(None);
    }
    if bytes.len() > max {
        return Err(PhotoError::TooBig {
            bytes: bytes.len(),
            max,
        });
    }
    let given = vcard
        .child("PHOTO", NS_VCARD)
        .and_then(|p| p.child("TYPE", NS_VCARD))
        .map(|t| t.text().trim().to_string())
        .filter(|t| !t.is_empty());
    let mime = given.unwrap_or_else(|| sniff_mime(&bytes).to_string());
    Ok(Some(Photo { mime, bytes }))
}

/// `vcard` (or an empty one) with its PHOTO replaced by `photo` (removed for `None`).
pub fn vcard_with_photo(vcard: Option<Element>, photo: Option<&Photo>) -> Element {
    let mut v = vcard.unwrap_or_else(|| Element::new("vCard", NS_VCARD));
    v.remove_children("PHOTO", NS_VCARD);
    if let Some(p) = photo {
        v.push_child(
            Element::new("PHOTO", NS_VCARD)
                .with_child(Element::new("TYPE", NS_VCARD).with_text(p.mime.clone()))
                .with_child(
                    Element::new("BINVAL", NS_VCARD)
                        .with_text(base64::engine::general_purpose::STANDARD.encode(&p.bytes)),
                ),
        );
    }
    v
}

/// The XEP-0084 data payload.
pub fn data_payload(p: &Photo) -> Element {
    Element::new("data", DATA_NODE)
        .with_text(base64::engine::general_purpose::STANDARD.encode(&p.bytes))
}

/// The XEP-0084 metadata payload: one `<info/>` for the photo, none when there is no avatar.
pub fn metadata_payload(p: Option<&Photo>) -> Element {
    let mut m = Element::new("metadata", METADATA_NODE);
    if let Some(p) = p {
        let mut info = Element::new("info", METADATA_NODE)
            .with_attr("id", p.sha1())
            .with_attr("bytes", p.bytes.len().to_string())
            .with_attr("type", p.mime.clone());
        if let Some((w, h)) = dimensions(&p.bytes) {
            info.set_attr("width", w.to_string());
            info.set_attr("height", h.to_string());
        }
        m.push_child(info);
    }
    m
}

/// What a metadata item says the avatar is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// No avatar (`<metadata/>` without `<info/>`, or no item at all).
    Removed,
    /// The image in the data node under this id (XEP-0398 §3.1: the info without a URL).
    Stored { id: String, mime: Option<String> },
    /// Only images at external URLs: nothing a vCard can hold.
    ExternalOnly,
}

pub fn choice_of(metadata: Option<&Element>) -> Choice {
    let Some(m) = metadata else {
        return Choice::Removed;
    };
    let infos: Vec<&Element> = m
        .elements()
        .filter(|e| e.is("info", METADATA_NODE))
        .collect();
    if infos.is_empty() {
        return Choice::Removed;
    }
    match infos
        .iter()
        .find(|i| i.attr("url").is_none_or(str::is_empty) && i.attr("id").is_some())
    {
        Some(i) => Choice::Stored {
            id: i.attr("id").unwrap_or_default().to_string(),
            mime: i.attr("type").map(str::to_string),
        },
        None => Choice::ExternalOnly,
    }
}

/// A presence whose `<photo/>` is empty says "no avatar, leave it" (XEP-0398 §4).
fn keeps_client_photo(p: &Element) -> bool {
    p.child("x", NS_UPDATE)
        .and_then(|x| x.child("photo", NS_UPDATE))
        .is_some_and(|photo| photo.text().trim().is_empty())
}

/// Puts the account's photo hash into an available presence (XEP-0398 §4): an `<x/>` without
/// `<photo/>`, or with another hash, is replaced; an empty `<photo/>` is left alone. Without an
/// avatar the photo is empty, which XEP-0153 reads as "no avatar".
pub fn inject_hash(p: &mut Element, hash: Option<&str>) {
    if !keeps_client_photo(p) {
        set_photo(p, hash);
    }
}

/// Replaces the presence's `<x xmlns='vcard-temp:x:update'/>` with one naming `hash`.
fn set_photo(p: &mut Element, hash: Option<&str>) {
    p.remove_children("x", NS_UPDATE);
    let mut photo = Element::new("photo", NS_UPDATE);
    if let Some(h) = hash {
        photo = photo.with_text(h);
    }
    p.push_child(Element::new("x", NS_UPDATE).with_child(photo));
}

fn internal(e: crate::storage::StorageError) -> StanzaError {
    log::error!("avatar: {e}");
    StanzaError::internal()
}

/// The hash of the account's avatar (`None`: no avatar), from the table or, the first time,
/// from the stored vCard.
pub async fn current_hash(
    server: &Server,
    user: &str,
) -> Result<Option<String>, crate::storage::StorageError> {
    let u = user.to_string();
    let known: Option<String> = server
        .storage
        .read(move |conn| {
            Ok(conn
                .query_row(
                    "SELECT sha1 FROM avatar_hashes WHERE username = ?1",
                    [&u],
                    |r| r.get(0),
                )
                .optional()?)
        })
        .await?;
    if let Some(h) = known {
        return Ok(Some(h).filter(|h| !h.is_empty()));
    }
    let vcard = match server.storage.vcard(user).await? {
        Some(xml) => crate::xml::parse_fragment(&xml).await,
        None => None,
    };
    // The stored vCard passed the size check when it was set (or predates it): no limit here.
    let hash = vcard
        .and_then(|v| photo_of_vcard(&v, usize::MAX).ok().flatten())
        .map(|p| p.sha1());
    save_hash(server, user, hash.as_deref()).await?;
    Ok(hash)
}

async fn save_hash(
    server: &Server,
    user: &str,
    hash: Option<&str>,
) -> Result<(), crate::storage::StorageError> {
    let (u, h) = (user.to_string(), hash.unwrap_or_default().to_string());
    server
        .storage
        .call(move |conn| {
            conn.execute(
                "INSERT INTO avatar_hashes (username, sha1) VALUES (?1, ?2)
                 ON CONFLICT (username) DO UPDATE SET sha1 = ?2",
                [&u, &h],
            )?;
            Ok(())
        })
        .await
}

/// Sends the account's available presences again with the new hash, so contacts (XEP-0153)
/// learn of the change. The remembered presence already went through `inject_hash`, so an
/// empty photo in it may be the server's own "no avatar": the new hash replaces it. Directed
/// presences are not repeated (XEP-0398 §5: clients re-send those).
async fn announce(server: &Arc<Server>, user: &str, hash: Option<&str>) {
    let bare = format!("{user}@{}", server.domain());
    for s in server.sessions.sessions_of(&bare) {
        let Some(mut p) = s.last_presence().filter(|_| s.available()) else {
            continue;
        };
        set_photo(&mut p, hash);
        super::presence::rebroadcast(server, &s, p).await;
    }
}

/// vCard → PEP: stores a vCard a client set (XEP-0054) and, when its photo differs from the
/// known avatar, publishes it as the XEP-0084 avatar (or an empty metadata item when the photo
/// is gone) and announces the new hash.
pub async fn store_vcard(
    server: &Arc<Server>,
    user: &str,
    vcard: &Element,
) -> Result<(), StanzaError> {
    let max = server.config.modules.vcard.photo_bytes;
    let photo = photo_of_vcard(vcard, max).map_err(|e| e.to_stanza_error())?;
    let old = current_hash(server, user).await.map_err(internal)?;
    server
        .storage
        .set_vcard(user, vcard.to_xml(""))
        .await
        .map_err(internal)?;
    let new = photo.as_ref().map(Photo::sha1);
    if new == old {
        return Ok(());
    }
    save_hash(server, user, new.as_deref())
        .await
        .map_err(internal)?;
    if let Err(e) = publish_avatar(server, user, photo.as_ref()).await {
        // The vCard the client asked for is stored; only the PEP copy is missing.
        log::warn!("avatar: the vCard photo of {user} was not published to PEP: {e}");
    }
    announce(server, user, new.as_deref()).await;
    Ok(())
}

/// The node configuration a converted avatar's nodes get when new: open, as clients expect of
/// avatars (XEP-0398 §6: a vCard photo is public anyway).
fn avatar_node() -> NodeConfig {
    NodeConfig {
        access: AccessModel::Open,
        persist: true,
        max_items: 1,
        send_last: SendLast::OnSubAndPresence,
    }
}

/// Publishes (data, then metadata) into the account's avatar nodes and notifies.
async fn publish_avatar(
    server: &Arc<Server>,
    user: &str,
    photo: Option<&Photo>,
) -> Result<(), String> {
    let limits = Limits {
        nodes_per_account: server.config.modules.pep.nodes_per_account,
    };
    let mut items: Vec<(&str, Item)> = Vec::new();
    let id = photo.map_or_else(|| crate::stanza::random_id(8), Photo::sha1);
    if let Some(p) = photo {
        items.push((
            DATA_NODE,
            Item {
                id: id.clone(),
                payload: data_payload(p).to_xml(""),
            },
        ));
    }
    items.push((
        METADATA_NODE,
        Item {
            id,
            payload: metadata_payload(photo).to_xml(""),
        },
    ));
    for (node, item) in items {
        let existing = store::config(&server.storage, user, node)
            .await
            .map_err(|e| e.to_string())?;
        let create = avatar_node();
        let access = existing.map_or(create.access, |c| c.access);
        match store::publish(&server.storage, user, node, create, item.clone(), limits)
            .await
            .map_err(|e| e.to_string())?
        {
            Published::Stored => {}
            Published::TooManyNodes => {
                return Err(format!(
                "the account has {} PEP nodes, the most allowed ([modules.pep] nodes_per_account)",
                limits.nodes_per_account
            ))
            }
        }
        if let Some(el) = super::pep::item_element(&item, NS_EVENT).await {
            let body = Element::new("items", NS_EVENT)
                .with_attr("node", node)
                .with_child(el);
            super::pep::notify(server, user, access, body).await;
        }
    }
    Ok(())
}

/// PEP → vCard: the account's metadata node changed (publish, retract, purge or delete); the
/// vCard's PHOTO follows its newest item. Problems are logged, not returned: the PEP request
/// itself succeeded, and the conversion is transparent to the client (XEP-0398 §2).
pub async fn metadata_changed(server: &Arc<Server>, user: &str) {
    if let Err(e) = convert_metadata(server, user).await {
        log::warn!("avatar: the PEP avatar of {user} was not copied to the vCard: {e}");
    }
}

async fn convert_metadata(server: &Arc<Server>, user: &str) -> Result<(), String> {
    let newest = store::items(&server.storage, user, METADATA_NODE, Vec::new(), Some(1))
        .await
        .map_err(|e| e.to_string())?
        .unwrap_or_default();
    let metadata = match newest.first() {
        Some(item) => crate::xml::parse_fragment(&item.payload).await,
        None => None,
    };
    let photo = match choice_of(metadata.as_ref()) {
        Choice::ExternalOnly => return Ok(()),
        Choice::Removed => None,
        Choice::Stored { id, mime } => Some(stored_photo(server, user, &id, mime).await?),
    };
    let new = photo.as_ref().map(Photo::sha1);
    if new
        == current_hash(server, user)
            .await
            .map_err(|e| e.to_string())?
    {
        return Ok(());
    }
    let vcard = match server
        .storage
        .vcard(user)
        .await
        .map_err(|e| e.to_string())?
    {
        Some(xml) => crate::xml::parse_fragment(&xml).await,
        None => None,
    };
    let vcard = vcard_with_photo(vcard, photo.as_ref());
    server
        .storage
        .set_vcard(user, vcard.to_xml(""))
        .await
        .map_err(|e| e.to_string())?;
    save_hash(server, user, new.as_deref())
        .await
        .map_err(|e| e.to_string())?;
    announce(server, user, new.as_deref()).await;
    Ok(())
}

/// The image the metadata points at, from the data node, checked against its id (the SHA-1
/// of the bytes, XEP-0084 §4.2) and the vCard photo limit.
async fn stored_photo(
    server: &Server,
    user: &str,
    id: &str,
    mime: Option<String>,
) -> Result<Photo, String> {
    let items = store::items(&server.storage, user, DATA_NODE, vec![id.to_string()], None)
        .await
        .map_err(|e| e.to_string())?
        .unwrap_or_default();
    let Some(item) = items.first() else {
        return Err(format!("no item '{id}' in {DATA_NODE}"));
    };
    let data = crate::xml::parse_fragment(&item.payload)
        .await
        .filter(|d| d.is("data", DATA_NODE))
        .ok_or_else(|| format!("item '{id}' of {DATA_NODE} is not a <data/> element"))?;
    let bytes = decode_base64(&data.text())
        .ok_or_else(|| format!("item '{id}' of {DATA_NODE} is not base64"))?;
    if sha1_hex(&bytes) != id.to_ascii_lowercase() {
        return Err(format!(
            "item '{id}' of {DATA_NODE} does not hash to its id"
        ));
    }
    let max = server.config.modules.vcard.photo_bytes;
    if bytes.len() > max {
        return Err(format!(
            "the image has {} bytes, more than [modules.vcard] photo_bytes ({max})",
            bytes.len()
        ));
    }
    let mime = mime.unwrap_or_else(|| sniff_mime(&bytes).to_string());
    Ok(Photo { mime, bytes })
}

#[cfg(test)]
#[path = "avatar_conversion_tests.rs"]
mod tests;
