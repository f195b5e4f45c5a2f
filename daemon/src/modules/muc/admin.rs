//! Moderation and ownership (XEP-0045 §8–§10): roles by nickname (kick, voice, moderator) and
//! affiliations by JID (ban, member, admin, owner) in `muc#admin`; the configuration form and
//! destruction with an alternate venue in `muc#owner`. A request with several items is checked
//! whole before any of it applies.

use super::form::{self, FormLimits};
use super::occupants::{announce, remove};
use super::room::{
    may_set_affiliation, may_set_role, Affiliated, Affiliation, Role, Whois, NS_USER,
};
use super::service::{send, Service};
use crate::jid::Jid;
use crate::server::Server;
use crate::stanza::StanzaError;
use crate::xml::{ns, Element};
use std::sync::Arc;

pub const NS_ADMIN: &str = "http://jabber.org/protocol/muc#admin";
pub const NS_OWNER: &str = "http://jabber.org/protocol/muc#owner";
/// Items in one request at most.
const MAX_ITEMS: usize = 100;

type Answer = Result<Option<Element>, StanzaError>;

/// One change asked for.
enum Change {
    Role {
        nick: String,
        role: Role,
        reason: Option<String>,
    },
    Affiliation {
        jid: String,
        affiliation: Affiliation,
        nick: Option<String>,
        reason: Option<String>,
    },
}

pub async fn admin_iq(
    svc: &mut Service,
    server: &Arc<Server>,
    name: &str,
    from: &Jid,
    q: &Element,
    set: bool,
) -> Answer {
    let room = svc
        .rooms
        .get(name)
        .ok_or_else(StanzaError::item_not_found)?;
    let actor_aff = room.affiliation(&from.bare_string());
    let actor_role = room.by_session(from).map(|o| o.role).unwrap_or(Role::None);
    let items: Vec<&Element> = q.elements().filter(|i| i.is("item", NS_ADMIN)).collect();
    if items.is_empty() || items.len() > MAX_ITEMS {
        return Err(StanzaError::bad_request()
            .with_text(format!("between 1 and {MAX_ITEMS} items, please")));
    }
    if !set {
        let item = items[0];
        let mut out = Element::new("query", NS_ADMIN);
        // Members see the member lists of non-anonymous rooms: OMEMO clients encrypt to them.
        let may_list = actor_aff.is_admin()
            || actor_role == Role::Moderator
            || (room.config.whois == Whois::Anyone
                && (actor_aff == Affiliation::Member || actor_role != Role::None));
        if !may_list {
            return Err(StanzaError::forbidden());
        }
        if let Some(aff) = item.attr("affiliation") {
            let aff = Affiliation::parse(aff).ok_or_else(StanzaError::bad_request)?;
            let mut list: Vec<_> = room
                .affiliations
                .iter()
                .filter(|(_, a)| a.affiliation == aff)
                .collect();
            list.sort_by(|a, b| a.0.cmp(b.0));
            for (jid, a) in list {
                let mut e = Element::new("item", NS_ADMIN)
                    .with_attr("affiliation", aff.as_str())
                    .with_attr("jid", jid.clone());
                if let Some(n) = &a.nick {
                    e.set_attr("nick", n.clone());
                }
                out.push_child(e);
            }
        } else if let Some(role) = item.attr("role") {
            let role = Role::parse(role).ok_or_else(StanzaError::bad_request)?;
            for o in room.occupants.iter().filter(|o| o.role == role) {
                let mut e = room.item(o, actor_role);
                e.ns = NS_ADMIN.to_string();
                e.set_attr("nick", o.nick.clone());
                out.push_child(e);
            }
        } else {
            return Err(StanzaError::bad_request().with_text("ask for an affiliation or a role"));
        }
        return Ok(Some(out));
    }
    let mut changes = Vec::new();
    let mut owners = room.owners() as i64;
    for item in items {
        let reason = item.child("reason", NS_ADMIN).map(Element::text);
        if let (Some(nick), Some(role)) = (item.attr("nick"), item.attr("role")) {
            let role = Role::parse(role).ok_or_else(StanzaError::bad_request)?;
            let target = room.by_nick(nick).ok_or_else(|| {
                StanzaError::new("cancel", "not-acceptable")
                    .with_text(format!("nobody called '{nick}' is here"))
            })?;
            let target_aff = room.affiliation(&target.bare.bare_string());
            if !may_set_role(actor_aff, actor_role, target_aff, target.role, role) {
                return Err(StanzaError::not_allowed()
                    .with_text(format!("you may not make '{nick}' a {}", role.as_str())));
            }
            changes.push(Change::Role {
                nick: nick.to_string(),
                role,
                reason,
            });
        } else if let (Some(jid), Some(aff)) = (item.attr("jid"), item.attr("affiliation")) {
            let aff = Affiliation::parse(aff).ok_or_else(StanzaError::bad_request)?;
            let jid = Jid::parse(jid)
                .map_err(|_| StanzaError::new("modify", "jid-malformed"))?
                .bare_string();
            let old = room.affiliation(&jid);
            if !may_set_affiliation(actor_aff, old, aff) {
                return Err(StanzaError::not_allowed()
                    .with_text(format!("you may not make {jid} {}", aff.as_str())));
            }
            owners += i64::from(aff == Affiliation::Owner) - i64::from(old == Affiliation::Owner);
            let nick = item.attr("nick").map(str::to_string);
            changes.push(Change::Affiliation {
                jid,
                affiliation: aff,
                nick,
                reason,
            });
        } else {
            return Err(StanzaError::bad_request()
                .with_text("an item has a nick and a role, or a jid and an affiliation"));
        }
    }
    if owners < 1 {
        return Err(
            StanzaError::new("cancel", "conflict").with_text("a room keeps at least one owner")
        );
    }
    let domain = svc.domain.clone();
    let room = svc
        .rooms
        .get_mut(name)
        .ok_or_else(StanzaError::item_not_found)?;
    let mut persist = false;
    for change in changes {
        match change {
            Change::Role {
                nick,
                role: Role::None,
                reason,
            } => remove(server, &domain, room, &nick, &[307], reason).await,
            Change::Role { nick, role, .. } => {
                if let Some(o) = room.by_nick_mut(&nick) {
                    o.role = role;
                    let o = o.clone();
                    announce(server, &domain, room, &o, false, &[], &|_| {}).await;
                }
            }
            Change::Affiliation {
                jid,
                affiliation,
                nick,
                reason,
            } => {
                persist = true;
                if affiliation == Affiliation::None {
                    room.affiliations.remove(&jid);
                } else {
                    room.affiliations.insert(
                        jid.clone(),
                        Affiliated {
                            affiliation,
                            nick,
                            reason: reason.clone(),
                        },
                    );
                }
                let present = room
                    .occupants
                    .iter()
                    .find(|o| o.bare.bare_string() == jid)
                    .map(|o| o.nick.clone());
                let Some(present) = present else { continue };
                if affiliation == Affiliation::Outcast {
                    remove(server, &domain, room, &present, &[301], reason).await;
                } else if affiliation == Affiliation::None && room.config.members_only {
                    remove(server, &domain, room, &present, &[321], reason).await;
                } else {
                    let role = room.default_role(affiliation);
                    if let Some(o) = room.by_nick_mut(&present) {
                        o.role = role;
                        let o = o.clone();
                        announce(server, &domain, room, &o, false, &[], &|_| {}).await;
                    }
                }
            }
        }
    }
    if persist {
        svc.save(server, name).await?;
    }
    svc.after_last_left(server, name).await;
    Ok(None)
}

pub async fn owner_iq(
    svc: &mut Service,
    server: &Arc<Server>,
    name: &str,
    from: &Jid,
    q: &Element,
    set: bool,
) -> Answer {
    let limits = FormLimits {
        max_users: svc.settings.max_occupants,
        max_history: svc.settings.max_history,
    };
    let room = svc
        .rooms
        .get(name)
        .ok_or_else(StanzaError::item_not_found)?;
    // The server's admin (control socket) may do what owners do.
    let owner = room.affiliation(&from.bare_string()) == Affiliation::Owner
        || super::service::from_server(server, from);
    if !owner {
        return Err(StanzaError::forbidden().with_text("only owners configure a room"));
    }
    if !set {
        return Ok(Some(
            Element::new("query", NS_OWNER).with_child(form::render(&room.config, limits)),
        ));
    }
    if let Some(destroy) = q.child("destroy", NS_OWNER) {
        destroy_room(svc, server, name, destroy).await?;
        return Ok(None);
    }
    let Some(x) = q.child("x", form::DATA) else {
        return Err(StanzaError::bad_request().with_text("send a form or a <destroy/>"));
    };
    if x.attr("type") == Some("cancel") {
        // Cancelling the first configuration gives up the room (§10.1.3).
        if room.locked {
            let empty = Element::new("destroy", NS_OWNER);
            destroy_room(svc, server, name, &empty).await?;
        }
        return Ok(None);
    }
    let new = form::parse(x, &room.config, limits)
        .map_err(|t| StanzaError::new("modify", "not-acceptable").with_text(t))?;
    let domain = svc.domain.clone();
    let room_jid = svc.room_jid(name);
    let room = svc
        .rooms
        .get_mut(name)
        .ok_or_else(StanzaError::item_not_found)?;
    let old = std::mem::replace(&mut room.config, new);
    let was_locked = std::mem::replace(&mut room.locked, false);
    svc.save(server, name).await?;
    let room = svc
        .rooms
        .get_mut(name)
        .ok_or_else(StanzaError::item_not_found)?;
    if was_locked {
        return Ok(None);
    }
    // §10.2.1: occupants hear that the settings changed (104), and how anonymity did.
    let mut codes = vec![104];
    match (old.whois, room.config.whois) {
        (Whois::Moderators, Whois::Anyone) => codes.push(172),
        (Whois::Anyone, Whois::Moderators) => codes.push(173),
        _ => {}
    }
    let mut x = Element::new("x", NS_USER);
    for c in codes {
        x.push_child(Element::new("status", NS_USER).with_attr("code", c.to_string()));
    }
    let targets: Vec<String> = room
        .occupants
        .iter()
        .flat_map(|o| o.sessions.iter().map(|s| s.jid.to_string()))
        .collect();
    for to in targets {
        let msg = Element::new("message", ns::CLIENT)
            .with_attr("type", "groupchat")
            .with_attr("from", room_jid.clone())
            .with_attr("to", to)
            .with_attr("id", crate::stanza::random_id(9))
            .with_child(x.clone());
        send(server, msg).await;
    }
    if room.config.members_only && !old.members_only {
        // §9.3: those who are not members leave (322).
        let outsiders: Vec<String> = room
            .occupants
            .iter()
            .filter(|o| room.affiliation(&o.bare.bare_string()) == Affiliation::None)
            .map(|o| o.nick.clone())
            .collect();
        for nick in outsiders {
            remove(server, &domain, room, &nick, &[322], None).await;
        }
    }
    Ok(None)
}

/// §10.9: everybody leaves with the destroy notice (and the alternate venue), then the room
/// and its archive are gone.
pub async fn destroy_room(
    svc: &mut Service,
    server: &Arc<Server>,
    name: &str,
    destroy: &Element,
) -> Result<(), StanzaError> {
    let domain = svc.domain.clone();
    let Some(mut room) = svc.rooms.remove(name) else {
        return Err(StanzaError::item_not_found());
    };
    let mut notice = Element::new("destroy", NS_USER);
    if let Some(alt) = destroy.attr("jid") {
        Jid::parse(alt).map_err(|_| StanzaError::new("modify", "jid-malformed"))?;
        notice.set_attr("jid", alt);
    }
    if let Some(r) = destroy.child("reason", NS_OWNER) {
        notice.push_child(Element::new("reason", NS_USER).with_text(r.text()));
    }
    if let Some(p) = destroy.child("password", NS_OWNER) {
        notice.push_child(Element::new("password", NS_USER).with_text(p.text()));
    }
    room.affiliations.clear();
    let occupants = std::mem::take(&mut room.occupants);
    for mut o in occupants {
        o.role = Role::None;
        for s in &o.sessions {
            let mut p = room.presence_of(&domain, &o, Role::None, true, &[]);
            if let Some(x) = p.child_mut("x", NS_USER) {
                x.push_child(notice.clone());
            }
            p.set_attr("to", s.jid.to_string());
            send(server, p).await;
        }
    }
    let n = name.to_string();
    server
        .storage
        .call(move |c| super::store::delete_room(c, &n))
        .await
        .map_err(super::service::internal)
}
