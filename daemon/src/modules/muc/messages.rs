//! Messages to a room (XEP-0045 §7.4, §7.5, §7.8, §7.13, §8.1): group messages (archived with
//! the room's XEP-0359 stanza id and the sender's XEP-0421 occupant id), subject changes,
//! private messages through the room, mediated invitations and their declines, and voice
//! requests with their approval.

use super::room::{Affiliated, Affiliation, Role, NS_OCCUPANT_ID, NS_USER};
use super::service::{refuse, send, Service};
use super::store;
use crate::jid::Jid;
use crate::modules::mam::SID;
use crate::server::Server;
use crate::stanza::{self, StanzaError};
use crate::storage::now_secs;
use crate::xml::{ns, Element};
use std::sync::Arc;

const DATA: &str = "jabber:x:data";
const REQUEST: &str = "http://jabber.org/protocol/muc#request";
const CONFERENCE: &str = "jabber:x:conference";
/// Payloads worth keeping without a body: end-to-end encrypted messages.
const CONTENT: &[&str] = &[
    "eu.siacs.conversations.axolotl",
    "urn:xmpp:omemo:2",
    "urn:xmpp:openpgp:0",
    "jabber:x:encrypted",
];

fn not_in_room() -> StanzaError {
    StanzaError::new("modify", "not-acceptable").with_text("you are not in this room")
}

/// Whether a group message is worth archiving and showing as history.
fn has_content(m: &Element) -> bool {
    m.elements()
        .any(|c| c.is("body", ns::CLIENT) || CONTENT.contains(&c.ns.as_str()))
}

pub async fn message(
    svc: &mut Service,
    server: &Arc<Server>,
    m: Element,
    from: Jid,
    name: String,
    nick: Option<String>,
) {
    if stanza::stanza_type(&m) == "error" {
        return super::occupants::gone(svc, server, &from, &name).await;
    }
    match svc.load(server, &name).await {
        Ok(true) => {}
        Ok(false) => {
            return refuse(
                server,
                &m,
                StanzaError::item_not_found().with_text("no such room"),
            )
        }
        Err(e) => return refuse(server, &m, e),
    }
    let result = match (nick, stanza::stanza_type(&m)) {
        (Some(nick), "groupchat") => {
            let _ = nick;
            Err(StanzaError::bad_request().with_text("group messages go to the room's own address"))
        }
        (Some(nick), _) => private(svc, server, &m, &from, &name, &nick).await,
        (None, "groupchat") => groupchat(svc, server, &m, &from, &name).await,
        (None, _) => {
            if let Some(x) = m.child("x", NS_USER) {
                mediated(svc, server, x, &from, &name).await
            } else if let Some(form) = m.child("x", DATA) {
                voice(svc, server, form, &from, &name).await
            } else {
                Err(StanzaError::bad_request()
                    .with_text("a room takes group messages, invitations and voice requests"))
            }
        }
    };
    if let Err(e) = result {
        refuse(server, &m, e);
    }
    // A room nobody entered (a refused message to an empty persistent room) leaves memory.
    svc.after_last_left(server, &name).await;
}

async fn groupchat(
    svc: &mut Service,
    server: &Arc<Server>,
    m: &Element,
    from: &Jid,
    name: &str,
) -> Result<(), StanzaError> {
    let room_jid = svc.room_jid(name);
    let room = svc
        .rooms
        .get_mut(name)
        .ok_or_else(StanzaError::item_not_found)?;
    let sender = room.by_session(from).ok_or_else(not_in_room)?.clone();
    if matches!(sender.role, Role::Visitor | Role::None) {
        return Err(StanzaError::forbidden().with_text("you have no voice in this room"));
    }
    let mut out = m.clone();
    out.remove_attr("to");
    out.set_attr("from", format!("{room_jid}/{}", sender.nick));
    // Only the room gives these out (XEP-0359 §4, XEP-0421 §4).
    out.children.retain(|c| match c {
        crate::xml::Node::Element(e) => {
            let forged_id = e.is("stanza-id", SID) && e.attr("by") == Some(room_jid.as_str());
            !(forged_id || e.is("occupant-id", NS_OCCUPANT_ID))
        }
        _ => true,
    });
    out.push_child(
        Element::new("occupant-id", NS_OCCUPANT_ID).with_attr("id", room.occupant_id(&sender.bare)),
    );
    let subject = m.child("subject", ns::CLIENT).map(Element::text);
    let content = has_content(m);
    if let (Some(text), false) = (&subject, content) {
        let may = sender.role == Role::Moderator || room.config.change_subject;
        if !may {
            return Err(
                StanzaError::forbidden().with_text("only moderators may change the subject")
            );
        }
        room.subject = text.clone();
        room.subject_by = sender.nick.clone();
    }
    if content {
        let stanza_id = stanza::random_id(12);
        out.push_child(
            Element::new("stanza-id", SID)
                .with_attr("by", room_jid.clone())
                .with_attr("id", stanza_id.clone()),
        );
        let entry = store::NewMessage {
            room: name.to_string(),
            stanza_id,
            stamp: now_secs(),
            occupant: format!("{room_jid}/{}", sender.nick),
            stanza: out.to_xml(ns::CLIENT),
        };
        // Queued, not awaited: one task serves every room, and waiting for each commit's fsync
        // here would hold all rooms up behind a slow card. The order of the queue is the order
        // of the archive; a failed commit is logged.
        let commit = server
            .storage
            .submit(move |c| store::archive(c, &entry))
            .await
            .map_err(super::service::internal)?;
        let room_name = name.to_string();
        tokio::spawn(async move {
            if let Err(e) = commit.await {
                log::error!("room {room_name}: cannot keep a message in its archive: {e}");
            }
        });
    } else if subject.is_none() {
        // Chat states and markers: passed on, not kept.
    }
    let targets: Vec<Jid> = room
        .occupants
        .iter()
        .flat_map(|o| o.sessions.iter().map(|s| s.jid.clone()))
        .collect();
    for to in targets {
        let mut copy = out.clone();
        copy.set_attr("to", to.to_string());
        send(server, copy).await;
    }
    if let Some(body) = m.child("body", ns::CLIENT).map(Element::text) {
        // A phone asleep in the room (its session hibernated) hears of messages naming it
        // (XEP-0357 with group chats: mentions only, not every message).
        let speaker = Jid::parse(&format!("{room_jid}/{}", sender.nick)).ok();
        for o in room.occupants.iter().filter(|o| o.bare != sender.bare) {
            if o.bare.domain == server.domain() && mentions(&body, &o.nick) {
                if let Some(speaker) = &speaker {
                    crate::modules::push::notify_mention(server, &o.bare, speaker, &body);
                }
            }
        }
    }
    if subject.is_some() && !content {
        svc.save(server, name).await?;
    }
    Ok(())
}

/// Whether `body` names `nick` as a word of its own (case-insensitive): "anna:" and "@Anna"
/// do, "annabel" does not.
pub fn mentions(body: &str, nick: &str) -> bool {
    let (body, nick) = (body.to_lowercase(), nick.to_lowercase());
    if nick.is_empty() {
        return false;
    }
    let word_char = |c: char| c.is_alphanumeric() || c == '_';
    body.match_indices(&nick).any(|(i, _)| {
        let before = body[..i].chars().next_back();
        let after = body[i + nick.len()..].chars().next();
        !before.is_some_and(word_char) && !after.is_some_and(word_char)
    })
}

/// §7.5: a private message to one occupant, from the sender's occupant JID.
async fn private(
    svc: &mut Service,
    server: &Arc<Server>,
    m: &Element,
    from: &Jid,
    name: &str,
    nick: &str,
) -> Result<(), StanzaError> {
    let room_jid = svc.room_jid(name);
    let room = svc
        .rooms
        .get(name)
        .ok_or_else(StanzaError::item_not_found)?;
    let sender = room.by_session(from).ok_or_else(not_in_room)?;
    if !room.config.allow_pm.allows(sender.role) {
        return Err(
            StanzaError::not_allowed().with_text("private messages are not allowed in this room")
        );
    }
    let target = room.by_nick(nick).ok_or_else(|| {
        StanzaError::item_not_found().with_text(format!("nobody called '{nick}' is in this room"))
    })?;
    let mut out = m.clone();
    out.set_attr("from", format!("{room_jid}/{}", sender.nick));
    if out.child("x", NS_USER).is_none() {
        out.push_child(Element::new("x", NS_USER));
    }
    for s in &target.sessions {
        let mut copy = out.clone();
        copy.set_attr("to", s.jid.to_string());
        send(server, copy).await;
    }
    Ok(())
}

/// §7.8.2 mediated invitations (members-only rooms make the invitee a member) and §7.8.3
/// declines.
async fn mediated(
    svc: &mut Service,
    server: &Arc<Server>,
    x: &Element,
    from: &Jid,
    name: &str,
) -> Result<(), StanzaError> {
    let room_jid = svc.room_jid(name);
    let room = svc
        .rooms
        .get_mut(name)
        .ok_or_else(StanzaError::item_not_found)?;
    if let Some(decline) = x.child("decline", NS_USER) {
        let to = decline.attr("to").ok_or_else(StanzaError::bad_request)?;
        let to = Jid::parse(to).map_err(|_| StanzaError::new("modify", "jid-malformed"))?;
        let mut d = Element::new("decline", NS_USER).with_attr("from", from.bare_string());
        if let Some(r) = decline.child("reason", NS_USER) {
            d.push_child(r.clone());
        }
        let msg = Element::new("message", ns::CLIENT)
            .with_attr("from", room_jid)
            .with_attr("to", to.to_string())
            .with_child(Element::new("x", NS_USER).with_child(d));
        send(server, msg).await;
        return Ok(());
    }
    let invites: Vec<&Element> = x
        .elements()
        .filter(|e| e.is("invite", NS_USER))
        .take(16)
        .collect();
    if invites.is_empty() {
        return Err(StanzaError::bad_request().with_text("no invitation in the message"));
    }
    let sender = room.by_session(from).ok_or_else(not_in_room)?.clone();
    let sender_aff = room.affiliation(&sender.bare.bare_string());
    if room.config.members_only && !room.config.allow_invites && !sender_aff.is_admin() {
        return Err(StanzaError::forbidden().with_text("only admins may invite to this room"));
    }
    let mut changed = false;
    for invite in invites {
        let to = invite.attr("to").ok_or_else(StanzaError::bad_request)?;
        let to = Jid::parse(to).map_err(|_| StanzaError::new("modify", "jid-malformed"))?;
        let invitee = to.bare_string();
        match room.affiliation(&invitee) {
            Affiliation::Outcast => {
                return Err(StanzaError::not_allowed()
                    .with_text(format!("{invitee} is banned from this room")))
            }
            Affiliation::None if room.config.members_only => {
                room.affiliations.insert(
                    invitee.clone(),
                    Affiliated {
                        affiliation: Affiliation::Member,
                        nick: None,
                        reason: None,
                    },
                );
                changed = true;
            }
            _ => {}
        }
        let inviter = if room.shows_jids_to(Role::Participant) {
            sender.bare.bare_string()
        } else {
            format!("{room_jid}/{}", sender.nick)
        };
        let mut inv = Element::new("invite", NS_USER).with_attr("from", inviter);
        let reason = invite.child("reason", NS_USER).map(Element::text);
        if let Some(r) = &reason {
            inv.push_child(Element::new("reason", NS_USER).with_text(r.clone()));
        }
        let mut xu = Element::new("x", NS_USER).with_child(inv);
        if let Some(pw) = &room.config.password {
            xu.push_child(Element::new("password", NS_USER).with_text(pw.clone()));
        }
        let body = format!("{} invites you to the room {room_jid}", sender.nick);
        let msg = Element::new("message", ns::CLIENT)
            .with_attr("from", room_jid.clone())
            .with_attr("to", to.to_string())
            .with_attr("id", stanza::random_id(9))
            .with_child(xu)
            .with_child(Element::new("x", CONFERENCE).with_attr("jid", room_jid.clone()))
            .with_child(Element::new("body", ns::CLIENT).with_text(body));
        send(server, msg).await;
    }
    if changed {
        svc.save(server, name).await?;
    }
    Ok(())
}

fn form_value(form: &Element, var: &str) -> Option<String> {
    form.elements()
        .find(|f| f.is("field", DATA) && f.attr("var") == Some(var))
        .and_then(|f| f.child("value", DATA))
        .map(Element::text)
}

/// §7.13 a visitor asks for voice: the moderators get an approval form; §8.6 a moderator
/// submits it back approved: the visitor becomes a participant.
async fn voice(
    svc: &mut Service,
    server: &Arc<Server>,
    form: &Element,
    from: &Jid,
    name: &str,
) -> Result<(), StanzaError> {
    if form_value(form, "FORM_TYPE").as_deref() != Some(REQUEST) {
        return Err(StanzaError::bad_request().with_text("the form is not a muc#request"));
    }
    let domain = svc.domain.clone();
    let room_jid = svc.room_jid(name);
    let room = svc
        .rooms
        .get_mut(name)
        .ok_or_else(StanzaError::item_not_found)?;
    let sender = room.by_session(from).ok_or_else(not_in_room)?.clone();
    let approve = form_value(form, "muc#request_allow").map(|v| v == "1" || v == "true");
    if let Some(allow) = approve {
        if sender.role != Role::Moderator {
            return Err(
                StanzaError::forbidden().with_text("only moderators approve voice requests")
            );
        }
        let nick = form_value(form, "muc#roomnick").ok_or_else(StanzaError::bad_request)?;
        if !allow {
            return Ok(());
        }
        let Some(o) = room.by_nick_mut(&nick) else {
            return Err(StanzaError::item_not_found());
        };
        if o.role == Role::Visitor {
            o.role = Role::Participant;
            let o = o.clone();
            super::occupants::announce(server, &domain, room, &o, false, &[], &|_| {}).await;
        }
        return Ok(());
    }
    if sender.role != Role::Visitor {
        return Ok(()); // Has voice already.
    }
    let field = |var: &str, kind: &str, v: String| {
        Element::new("field", DATA)
            .with_attr("var", var)
            .with_attr("type", kind)
            .with_child(Element::new("value", DATA).with_text(v))
    };
    let request = Element::new("x", DATA)
        .with_attr("type", "form")
        .with_child(Element::new("title", DATA).with_text("Voice request"))
        .with_child(field("FORM_TYPE", "hidden", REQUEST.into()))
        .with_child(field("muc#role", "list-single", "participant".into()))
        .with_child(field("muc#jid", "jid-single", sender.bare.bare_string()))
        .with_child(field("muc#roomnick", "text-single", sender.nick.clone()))
        .with_child(field("muc#request_allow", "boolean", "0".into()));
    for o in room.occupants.iter().filter(|o| o.role == Role::Moderator) {
        for s in &o.sessions {
            let msg = Element::new("message", ns::CLIENT)
                .with_attr("from", room_jid.clone())
                .with_attr("to", s.jid.to_string())
                .with_attr("id", stanza::random_id(9))
                .with_child(request.clone());
            send(server, msg).await;
        }
    }
    Ok(())
}
