//! Entering, presence updates, nickname changes and leaving (XEP-0045 §7.1–§7.7, §7.14), with
//! several devices of one account sharing one nickname, and the presence broadcasts every
//! change of an occupant causes.

use super::room::{
    entry_refusal, Occupant, Role, Room, RoomConfig, Session, NS_MUC, NS_OCCUPANT_ID, NS_USER,
};
use super::service::{refuse, send, Service};
use super::Creators;
use crate::jid::Jid;
use crate::server::Server;
use crate::stanza::{self, StanzaError};
use crate::xml::Element;
use std::sync::Arc;

/// Presence children an occupant shows at most (show, status, caps, avatar hash…).
const MAX_SHOWN: usize = 16;
/// Longest nickname accepted, in bytes.
const MAX_NICK: usize = 256;

/// What other occupants see of a presence: everything but the MUC protocol's own elements.
fn shown_children(p: &Element) -> Vec<Element> {
    p.elements()
        .filter(|c| {
            !(c.ns == NS_MUC || c.ns == NS_USER || c.ns == NS_OCCUPANT_ID || c.name == "priority")
        })
        .take(MAX_SHOWN)
        .cloned()
        .collect()
}

/// Sends the presence of `o` to everybody in the room and to `o`'s own sessions (with 110);
/// `tweak` adds what only this change carries (a new nick, a reason, a destroy notice).
pub async fn announce(
    server: &Arc<Server>,
    domain: &str,
    room: &Room,
    o: &Occupant,
    unavailable: bool,
    codes: &[u16],
    tweak: &(dyn Fn(&mut Element) + Send + Sync),
) {
    let mut targets: Vec<(Jid, Role, bool)> = room
        .occupants
        .iter()
        .filter(|x| x.bare != o.bare)
        .flat_map(|x| {
            x.sessions
                .iter()
                .map(move |s| (s.jid.clone(), x.role, false))
        })
        .collect();
    targets.extend(o.sessions.iter().map(|s| (s.jid.clone(), o.role, true)));
    for (jid, role, own) in targets {
        let mut c = codes.to_vec();
        if own {
            c.push(110);
        }
        let mut p = room.presence_of(domain, o, role, unavailable, &c);
        tweak(&mut p);
        p.set_attr("to", jid.to_string());
        send(server, p).await;
    }
}

/// The `<item/>` inside an occupant presence, to add to it.
pub fn item_mut(p: &mut Element) -> Option<&mut Element> {
    p.child_mut("x", NS_USER)?.child_mut("item", NS_USER)
}

/// Takes occupant `nick` out of the room and tells everybody (kick 307, ban 301, lost
/// membership 321/322, error 333, shutdown 332).
pub async fn remove(
    server: &Arc<Server>,
    domain: &str,
    room: &mut Room,
    nick: &str,
    codes: &[u16],
    reason: Option<String>,
) {
    let Some(i) = room.occupants.iter().position(|o| o.nick == nick) else {
        return;
    };
    let mut o = room.occupants.remove(i);
    o.role = Role::None;
    let tweak = move |p: &mut Element| {
        if let (Some(r), Some(item)) = (&reason, item_mut(p)) {
            item.push_child(Element::new("reason", NS_USER).with_text(r.clone()));
        }
    };
    announce(server, domain, room, &o, true, codes, &tweak).await;
}

pub async fn presence(
    svc: &mut Service,
    server: &Arc<Server>,
    p: Element,
    from: Jid,
    name: String,
    nick: Option<String>,
) {
    match stanza::stanza_type(&p) {
        "available" => {}
        "unavailable" => return leave(svc, server, &p, &from, &name).await,
        // An occupant's client answers something with an error: it is gone (XEP-0045 §7.14 333).
        "error" => return gone(svc, server, &from, &name).await,
        _ => return,
    }
    let Some(nick) = nick else {
        return refuse(
            server,
            &p,
            StanzaError::new("modify", "jid-malformed")
                .with_text("enter a room as room@service/nickname"),
        );
    };
    if nick.len() > MAX_NICK || nick.trim().is_empty() {
        return refuse(
            server,
            &p,
            StanzaError::new("modify", "jid-malformed").with_text("that nickname cannot be used"),
        );
    }
    let existed = match svc.load(server, &name).await {
        Ok(b) => b,
        Err(e) => return refuse(server, &p, e),
    };
    if !existed {
        if let Err(e) = create(svc, server, &p, &from, &name).await {
            return refuse(server, &p, e);
        }
    }
    let domain = svc.domain.clone();
    let Some(room) = svc.rooms.get_mut(&name) else {
        return;
    };
    if let Some(current) = room.by_session(&from).map(|o| o.nick.clone()) {
        if current == nick {
            return update(server, &domain, room, &from, &p).await;
        }
        return change_nick(server, &domain, room, &from, &p, &current, &nick).await;
    }
    let password = p
        .child("x", NS_MUC)
        .and_then(|x| x.child("password", NS_MUC))
        .map(Element::text);
    if let Some(err) = entry_refusal(room, &from.bare(), &nick, password.as_deref()) {
        refuse(server, &p, err);
        return svc.after_last_left(server, &name).await;
    }
    if let Some(o) = room.by_bare(&from.bare()) {
        if o.nick != nick {
            return refuse(
                server,
                &p,
                StanzaError::new("cancel", "conflict")
                    .with_text(format!("your account is in this room as '{}'", o.nick)),
            );
        }
    }
    let session = Session {
        jid: from.clone(),
        presence: shown_children(&p),
    };
    let another_device = match room.occupants.iter_mut().find(|o| o.bare == from.bare()) {
        Some(o) => {
            o.sessions.push(session);
            true
        }
        None => {
            let role = room.default_role(room.affiliation(&from.bare_string()));
            room.occupants.push(Occupant {
                nick: nick.clone(),
                bare: from.bare(),
                role,
                sessions: vec![session],
            });
            false
        }
    };
    let me = room.by_session(&from).expect("just added").clone();
    // Everybody already there, as the newcomer may see them (§7.2.3).
    for o in room.occupants.iter().filter(|o| o.bare != me.bare) {
        let mut pres = room.presence_of(&domain, o, me.role, false, &[]);
        pres.set_attr("to", from.to_string());
        send(server, pres).await;
    }
    if !another_device {
        announce_to_others(server, &domain, room, &me).await;
    }
    let mut codes = room.entry_codes();
    if !existed {
        codes.push(201);
    }
    let mut own = room.presence_of(&domain, &me, me.role, false, &[]);
    if let Some(x) = own.child_mut("x", NS_USER) {
        for c in codes {
            x.push_child(Element::new("status", NS_USER).with_attr("code", c.to_string()));
        }
    }
    own.set_attr("to", from.to_string());
    send(server, own).await;
    if existed {
        let wanted = p
            .child("x", NS_MUC)
            .and_then(|x| x.child("history", NS_MUC))
            .cloned();
        super::history::send_history(server, &domain, room, &from, wanted.as_ref()).await;
    }
    send(server, subject_message(&domain, room, &from)).await;
    if let Some(hash) = &room.avatar_hash {
        send(
            server,
            super::history::avatar_presence(&domain, &room.name, hash, &from),
        )
        .await;
    }
}

/// The subject, which ends the entering sequence (§7.2.15; an empty one when none is set).
pub fn subject_message(domain: &str, room: &Room, to: &Jid) -> Element {
    let from = if room.subject_by.is_empty() {
        format!("{}@{domain}", room.name)
    } else {
        format!("{}@{domain}/{}", room.name, room.subject_by)
    };
    Element::new("message", crate::xml::ns::CLIENT)
        .with_attr("type", "groupchat")
        .with_attr("from", from)
        .with_attr("to", to.to_string())
        .with_attr("id", stanza::random_id(9))
        .with_child(Element::new("subject", crate::xml::ns::CLIENT).with_text(room.subject.clone()))
}

async fn announce_to_others(server: &Arc<Server>, domain: &str, room: &Room, me: &Occupant) {
    for o in room.occupants.iter().filter(|o| o.bare != me.bare) {
        let mut p = room.presence_of(domain, me, o.role, false, &[]);
        for s in &o.sessions {
            p.set_attr("to", s.jid.to_string());
            send(server, p.clone()).await;
        }
    }
}

/// Whether `from` may create a room now, and the room it gets.
async fn create(
    svc: &mut Service,
    server: &Arc<Server>,
    p: &Element,
    from: &Jid,
    name: &str,
) -> Result<(), StanzaError> {
    let not_allowed = || StanzaError::not_allowed().with_text("you may not create rooms here");
    let user = match (&from.local, from.domain == server.domain()) {
        (Some(u), true) => u.clone(),
        _ => return Err(not_allowed()),
    };
    if svc.settings.creators == Creators::Admins {
        let info = server
            .storage
            .user_info(&user)
            .await
            .map_err(super::service::internal)?;
        if !info.is_some_and(|i| i.is_admin) {
            return Err(not_allowed());
        }
    }
    let owner = from.bare_string();
    let (all, owned) = server
        .storage
        .read(move |c| super::store::counts(c, &owner))
        .await
        .map_err(super::service::internal)?;
    if all >= svc.settings.max_rooms {
        return Err(StanzaError::new("wait", "resource-constraint")
            .with_text("this server has as many rooms as it may have"));
    }
    if owned >= svc.settings.max_rooms_per_account {
        return Err(StanzaError::not_allowed().with_text(format!(
            "you own {owned} rooms, the most one account may own here"
        )));
    }
    let config = RoomConfig {
        max_users: RoomConfig::default()
            .max_users
            .min(svc.settings.max_occupants),
        history_length: RoomConfig::default()
            .history_length
            .min(svc.settings.max_history),
        ..RoomConfig::default()
    };
    let mut room = Room::new(name, from, config, stanza::random_id(12));
    // A client that speaks XEP-0045 decides between an instant and a reserved room first
    // (§10.1); one that does not gets an instant room.
    room.locked = p.child("x", NS_MUC).is_some();
    svc.rooms.insert(name.to_string(), room);
    if let Err(e) = svc.save(server, name).await {
        svc.rooms.remove(name);
        return Err(e);
    }
    Ok(())
}

/// A new presence from a session already in the room (show, status): everybody sees it.
async fn update(server: &Arc<Server>, domain: &str, room: &mut Room, from: &Jid, p: &Element) {
    let Some(o) = room.occupants.iter_mut().find(|o| o.has_session(from)) else {
        return;
    };
    if let Some(s) = o.sessions.iter_mut().find(|s| &s.jid == from) {
        s.presence = shown_children(p);
    }
    // The latest presence of any of its devices is the occupant's.
    if let Some(i) = o.sessions.iter().position(|s| &s.jid == from) {
        let s = o.sessions.remove(i);
        o.sessions.push(s);
    }
    let o = o.clone();
    announce(server, domain, room, &o, false, &[], &|_| {}).await;
}

/// §7.6: unavailable with 303 and the new nick, then available under the new nick.
async fn change_nick(
    server: &Arc<Server>,
    domain: &str,
    room: &mut Room,
    from: &Jid,
    p: &Element,
    old: &str,
    new: &str,
) {
    let bare = from.bare();
    let taken = room.by_nick(new).is_some_and(|o| o.bare != bare)
        || room
            .affiliations
            .iter()
            .any(|(j, a)| a.nick.as_deref() == Some(new) && *j != bare.bare_string());
    if taken {
        return refuse(
            server,
            p,
            StanzaError::new("cancel", "conflict").with_text("that nickname is in use"),
        );
    }
    let Some(before) = room.by_nick(old).cloned() else {
        return;
    };
    let new_nick = new.to_string();
    announce(
        server,
        domain,
        room,
        &before,
        true,
        &[303],
        &move |p: &mut Element| {
            if let Some(item) = item_mut(p) {
                item.set_attr("nick", new_nick.clone());
            }
        },
    )
    .await;
    let Some(o) = room.by_nick_mut(old) else {
        return;
    };
    o.nick = new.to_string();
    if let Some(s) = o.sessions.iter_mut().find(|s| &s.jid == from) {
        s.presence = shown_children(p);
    }
    let after = o.clone();
    announce(server, domain, room, &after, false, &[], &|_| {}).await;
}

/// §7.14: a session leaves; the occupant leaves with its last session.
async fn leave(svc: &mut Service, server: &Arc<Server>, p: &Element, from: &Jid, name: &str) {
    let domain = svc.domain.clone();
    let Some(room) = svc.rooms.get_mut(name) else {
        return;
    };
    let Some(i) = room.occupants.iter().position(|o| o.has_session(from)) else {
        return;
    };
    let status: Vec<Element> = p
        .elements()
        .filter(|c| c.name == "status")
        .take(1)
        .cloned()
        .collect();
    let o = &mut room.occupants[i];
    if o.sessions.len() > 1 {
        // Another device stays: only this one is told it left.
        o.sessions.retain(|s| &s.jid != from);
        let mut alone = o.clone();
        alone.sessions.clear();
        alone.role = Role::None;
        let mut pres = room.presence_of(&domain, &alone, Role::None, true, &[110]);
        pres.set_attr("to", from.to_string());
        send(server, pres).await;
        return;
    }
    let mut o = room.occupants.remove(i);
    o.role = Role::None;
    announce(
        server,
        &domain,
        room,
        &o,
        true,
        &[],
        &move |p: &mut Element| {
            for s in &status {
                p.children.insert(0, crate::xml::Node::Element(s.clone()));
            }
        },
    )
    .await;
    svc.after_last_left(server, name).await;
}

/// A session of an occupant answered with an error: it is taken out (333).
pub async fn gone(svc: &mut Service, server: &Arc<Server>, from: &Jid, name: &str) {
    let domain = svc.domain.clone();
    let Some(room) = svc.rooms.get_mut(name) else {
        return;
    };
    let Some(o) = room.occupants.iter_mut().find(|o| o.has_session(from)) else {
        return;
    };
    o.sessions.retain(|s| &s.jid != from);
    if o.sessions.is_empty() {
        let nick = o.nick.clone();
        remove(server, &domain, room, &nick, &[333], None).await;
        svc.after_last_left(server, name).await;
    }
}
