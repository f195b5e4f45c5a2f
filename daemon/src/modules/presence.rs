//! RFC 6121 §3–4: subscriptions and presence, as a module. Its `Outbound(Presence)` hook takes
//! every presence a local session sends; its `InboundBare/InboundFull(Presence)` hooks handle
//! subscription stanzas reaching a local account (from a local contact now, from federation
//! later); `SessionAvailable` re-sends pending requests and `SessionClosed` says goodbye.
//! State per contact lives in the roster (`storage::roster`).

use super::roster::save_and_push;
use super::Module;
use crate::c2s::outbound::SessionLocal;
use crate::delivery::presence;
use crate::hooks::{BoxFut, Flow, Hook, Kind, SessionEvent, StanzaEvent};
use crate::jid::Jid;
use crate::server::Server;
use crate::sessions::SessionHandle;
use crate::stanza;
use crate::storage::RosterItem;
use crate::xml::Element;
use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Directed presences a session sent (RFC 6121 §4.6), so an unavailable follows at logout.
/// Kept in the session's task state: only sessions that send directed presence pay for it.
#[derive(Default)]
struct Directed(HashSet<String>);

/// Directed presences remembered per session at most.
const MAX_DIRECTED: usize = 256;

pub struct Presence;

impl Module for Presence {
    fn name(&self) -> &'static str {
        "presence"
    }
    fn hooks(&self) -> &'static [(Hook, i16)] {
        &[
            (Hook::Outbound(Kind::Presence), 0),
            (Hook::InboundBare(Kind::Presence), 0),
            (Hook::InboundFull(Kind::Presence), 0),
            // Before offline messages are flushed, as RFC 6121 §3.1.3 clients expect.
            (Hook::SessionAvailable, 10),
            (Hook::SessionClosed, 0),
        ]
    }
    fn on_stanza<'a>(
        &'a self,
        server: &'a Arc<Server>,
        hook: Hook,
        ev: &'a mut StanzaEvent<'_>,
    ) -> BoxFut<'a, Flow> {
        Box::pin(async move {
            match hook {
                Hook::Outbound(_) => {
                    let (Some(session), Some(local)) = (ev.sender, ev.local.as_deref_mut()) else {
                        return Flow::Continue;
                    };
                    let p = std::mem::replace(&mut ev.stanza, Element::new("presence", ""));
                    outbound(server, session, p, local).await;
                    Flow::Handled
                }
                _ => {
                    let Some(to) = ev.to.clone() else {
                        return Flow::Continue;
                    };
                    if is_subscription(&ev.stanza) {
                        let p = std::mem::replace(&mut ev.stanza, Element::new("presence", ""));
                        inbound_subscription(server, p, &to).await;
                        Flow::Handled
                    } else if stanza::stanza_type(&ev.stanza) == "probe" {
                        // A server asks for the account's presence; clients never see probes.
                        answer_probe(server, &ev.from, &to).await;
                        Flow::Handled
                    } else {
                        Flow::Continue
                    }
                }
            }
        })
    }
    fn on_session<'a>(
        &'a self,
        server: &'a Arc<Server>,
        hook: Hook,
        ev: &'a mut SessionEvent<'_>,
    ) -> BoxFut<'a, Flow> {
        Box::pin(async move {
            match hook {
                Hook::SessionAvailable => deliver_pending_requests(server, ev.session).await,
                Hook::SessionClosed => {
                    let directed = ev.local.ext.remove::<Directed>().unwrap_or_default();
                    session_ended(server, ev.session, &directed.0).await
                }
                _ => {}
            }
            Flow::Continue
        })
    }
}

fn is_subscription(p: &Element) -> bool {
    matches!(
        stanza::stanza_type(p),
        "subscribe" | "subscribed" | "unsubscribe" | "unsubscribed"
    )
}

/// A subscription stanza between two bare JIDs.
pub fn subscription(from: &str, to: &str, kind: &str) -> Element {
    presence(from, to, Some(kind))
}

/// A presence stanza sent by a local session (its `from` already stamped with the full JID).
async fn outbound(
    server: &Arc<Server>,
    session: &SessionHandle,
    mut p: Element,
    local: &mut SessionLocal,
) {
    let kind = stanza::stanza_type(&p).to_string();
    let user_bare = session.jid.bare_string();
    let to = match stanza::to_jid(&p) {
        Some(Ok(j)) => Some(j),
        Some(Err(_)) => return,
        None => None,
    };
    match (kind.as_str(), to) {
        ("subscribe" | "subscribed" | "unsubscribe" | "unsubscribed", Some(to)) => {
            let contact = to.bare_string();
            if contact == user_bare {
                return;
            }
            outbound_subscription(server, &session.jid, &contact, &kind).await;
        }
        ("available" | "unavailable", None) => {
            broadcast(server, session, p, kind == "available").await
        }
        ("available" | "unavailable", Some(to)) => {
            // Directed presence (RFC 6121 §4.6): remembered so an unavailable follows at logout.
            let target = to.to_string();
            if kind == "available" {
                let directed = &mut local.ext.get_or_default::<Directed>().0;
                if directed.len() < MAX_DIRECTED {
                    directed.insert(target);
                }
            } else if let Some(d) = local.ext.get_mut::<Directed>() {
                d.0.remove(&target);
            }
            p.set_attr("to", to.to_string());
            send_to_contact(server, p).await;
        }
        // Probes from clients and errors are not ours to relay.
        _ => {}
    }
}

async fn outbound_subscription(server: &Arc<Server>, user: &Jid, contact: &str, kind: &str) {
    let Some(local) = &user.local else { return };
    let user_bare = user.bare_string();
    let item = server
        .storage
        .roster_item(local, contact)
        .await
        .ok()
        .flatten();
    let mut item = item.unwrap_or_else(|| RosterItem::new(contact));
    match kind {
        "subscribe" => {
            item.in_roster = true;
            if !item.subscription.has_to() {
                item.ask = true;
            }
            save_and_push(server, local, item).await;
        }
        "subscribed" => {
            if !item.pending_in {
                // Pre-approval (RFC 6121 §3.4) is optional and not offered: nothing to approve.
                return;
            }
            item.pending_in = false;
            item.subscription = item.subscription.with_from(true);
            item.in_roster = true;
            save_and_push(server, local, item).await;
            send_to_contact(server, subscription(&user_bare, contact, "subscribed")).await;
            // The contact now sees us: send our current presence (RFC 6121 §3.1.5).
            for s in server.sessions.sessions_of(&user_bare) {
                if let Some(mut p) = s.last_presence() {
                    p.set_attr("to", contact);
                    send_to_contact(server, p).await;
                }
            }
            return;
        }
        "unsubscribe" => {
            if !item.subscription.has_to() && !item.ask {
                return;
            }
            item.subscription = item.subscription.with_to(false);
            item.ask = false;
            save_and_push(server, local, item).await;
        }
        "unsubscribed" => {
            if !item.subscription.has_from() && !item.pending_in {
                return;
            }
            let had_from = item.subscription.has_from();
            item.subscription = item.subscription.with_from(false);
            item.pending_in = false;
            save_and_push(server, local, item).await;
            send_to_contact(server, subscription(&user_bare, contact, kind)).await;
            if had_from {
                for s in server.sessions.sessions_of(&user_bare) {
                    send_to_contact(
                        server,
                        presence(&s.jid.to_string(), contact, Some("unavailable")),
                    )
                    .await;
                }
            }
            return;
        }
        _ => return,
    }
    send_to_contact(server, subscription(&user_bare, contact, kind)).await;
}

/// Hands a presence stanza to its addressee's server: ours (through the inbound hooks of the
/// addressee), or the route of another domain (federation, a hosted service).
pub fn send_to_contact(
    server: &Arc<Server>,
    p: Element,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
    Box::pin(async move {
        let Some(Ok(to)) = stanza::to_jid(&p) else {
            return;
        };
        let Some(from) = stanza::from_jid(&p) else {
            return;
        };
        if to.domain != server.domain() {
            // Another domain: its route (a group chat service here, federation). Without one,
            // presence is dropped silently, as before federation: an error for every remote
            // contact at every presence change would only be noise.
            if server.domains.route_for(&to.domain).is_some() {
                crate::delivery::route(server, p, None).await;
            }
            return;
        }
        if to.local.is_none() {
            return;
        }
        crate::delivery::inbound(server, p, from, to, None).await;
    })
}

/// A subscription stanza reaching local account `to`.
async fn inbound_subscription(server: &Arc<Server>, p: Element, to: &Jid) {
    let Some(user) = to.local.clone() else { return };
    let Some(from) = stanza::from_jid(&p) else {
        return;
    };
    let kind = stanza::stanza_type(&p).to_string();
    let contact = from.bare_string();
    let user_bare = to.bare_string();
    if !server.storage.user_exists(&user).await.unwrap_or(false) {
        return;
    }
    let existing = server
        .storage
        .roster_item(&user, &contact)
        .await
        .ok()
        .flatten();
    let mut item = existing
        .clone()
        .unwrap_or_else(|| RosterItem::new(&contact));
    match kind.as_str() {
        "subscribe" => {
            if item.subscription.has_from() {
                // Already approved: answer for the user (RFC 6121 §3.1.3).
                send_to_contact(server, subscription(&user_bare, &contact, "subscribed")).await;
                return;
            }
            if !item.pending_in {
                item.pending_in = true;
                save_and_push(server, &user, item).await;
            }
        }
        "subscribed" => {
            if !item.ask {
                return;
            }
            item.ask = false;
            item.subscription = item.subscription.with_to(true);
            save_and_push(server, &user, item).await;
        }
        "unsubscribe" => {
            if !item.subscription.has_from() && !item.pending_in {
                return;
            }
            item.subscription = item.subscription.with_from(false);
            item.pending_in = false;
            save_and_push(server, &user, item).await;
        }
        _ => {
            // unsubscribed
            if !item.subscription.has_to() && !item.ask {
                return;
            }
            let had_to = item.subscription.has_to();
            item.subscription = item.subscription.with_to(false);
            item.ask = false;
            save_and_push(server, &user, item).await;
            if had_to {
                // The contact's resources vanish from the user's view.
                for s in server.sessions.sessions_of(&contact) {
                    deliver_to_available(
                        server,
                        &user_bare,
                        presence(&s.jid.to_string(), &user_bare, Some("unavailable")),
                    );
                }
            }
        }
    }
    let mut p = p;
    p.set_attr("from", contact);
    deliver_to_available(server, &user_bare, p);
}

fn deliver_to_available(server: &Arc<Server>, bare: &str, p: Element) {
    for s in server.sessions.sessions_of(bare) {
        if s.available() {
            let mut copy = p.clone();
            copy.set_attr("to", s.jid.to_string());
            s.deliver(copy);
        }
    }
}

/// Presence broadcast (RFC 6121 §4.2, §4.4, §4.5) from one session to the contacts that see it
/// and to the user's own available sessions.
async fn broadcast(server: &Arc<Server>, session: &SessionHandle, mut p: Element, available: bool) {
    let Some(user) = session.jid.local.clone() else {
        return;
    };
    let was_available = session.available();
    if !available && !was_available {
        return;
    }
    p.remove_attr("to");
    let priority = p
        .elements()
        .find(|c| c.name == "priority")
        .and_then(|c| c.text().trim().parse::<i32>().ok())
        .unwrap_or(0)
        .clamp(-128, 127);
    {
        let mut last = session
            .shared
            .presence
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        *last = if available { Some(p.clone()) } else { None };
    }
    session.shared.priority.store(priority, Ordering::Relaxed);
    session.shared.available.store(available, Ordering::Relaxed);
    let roster = server
        .storage
        .roster(&user)
        .await
        .map(|(_, items)| items)
        .unwrap_or_default();
    for item in roster.iter().filter(|i| i.subscription.has_from()) {
        let mut copy = p.clone();
        copy.set_attr("to", item.contact.clone());
        send_to_contact(server, copy).await;
    }
    deliver_to_available(server, &session.jid.bare_string(), p);
    if available && !was_available {
        probe_contacts(server, session, &roster).await;
    }
}

/// Broadcasts an available session's presence again, changed by another module (the avatar
/// hash of XEP-0398), as if the client had sent it.
pub async fn rebroadcast(server: &Arc<Server>, session: &SessionHandle, p: Element) {
    if session.available() {
        broadcast(server, session, p, true).await;
    }
}

/// The probes initial presence implies (RFC 6121 §4.3): local contacts are answered directly
/// (the new session gets the current presence of every contact it is subscribed to and of the
/// user's other sessions); contacts on other servers get a probe from the user's bare JID.
async fn probe_contacts(server: &Arc<Server>, session: &SessionHandle, roster: &[RosterItem]) {
    let user_bare = session.jid.bare_string();
    let mut sources: Vec<String> = Vec::new();
    for contact in roster.iter().filter(|i| i.subscription.has_to()) {
        match Jid::parse(&contact.contact) {
            Ok(j) if j.domain != server.domain() => {
                send_to_contact(
                    server,
                    presence(&user_bare, &contact.contact, Some("probe")),
                )
                .await
            }
            _ => sources.push(contact.contact.clone()),
        }
    }
    sources.push(user_bare);
    for bare in sources {
        for s in server.sessions.sessions_of(&bare) {
            if s.id == session.id {
                continue;
            }
            if let Some(mut p) = s.last_presence() {
                p.set_attr("from", s.jid.to_string());
                p.set_attr("to", session.jid.to_string());
                send_to_contact(server, p).await;
            }
        }
    }
}

/// A probe for local account `user` from `prober` (RFC 6121 §4.3.2): the current presence of
/// each available session if the prober is subscribed, `unavailable` if none is, and
/// `unsubscribed` (revealing nothing) if the prober has no subscription.
async fn answer_probe(server: &Arc<Server>, prober: &Jid, user: &Jid) {
    let Some(local) = &user.local else { return };
    let user_bare = user.bare_string();
    let reply_to = prober.to_string();
    let item = server
        .storage
        .roster_item(local, &prober.bare_string())
        .await
        .ok()
        .flatten();
    if !item.is_some_and(|i| i.subscription.has_from()) {
        if server.storage.user_exists(local).await.unwrap_or(false) {
            send_to_contact(server, subscription(&user_bare, &reply_to, "unsubscribed")).await;
        }
        return;
    }
    let mut answered = false;
    for s in server.sessions.sessions_of(&user_bare) {
        if let Some(mut p) = s.last_presence() {
            p.set_attr("from", s.jid.to_string());
            p.set_attr("to", reply_to.as_str());
            send_to_contact(server, p).await;
            answered = true;
        }
    }
    if !answered {
        send_to_contact(server, presence(&user_bare, &reply_to, Some("unavailable"))).await;
    }
}

/// Re-delivers subscription requests that arrived while the user was away (RFC 6121 §3.1.3).
async fn deliver_pending_requests(server: &Arc<Server>, session: &SessionHandle) {
    let Some(user) = &session.jid.local else {
        return;
    };
    for contact in server
        .storage
        .pending_subscriptions(user)
        .await
        .unwrap_or_default()
    {
        session.deliver(subscription(
            &contact,
            &session.jid.to_string(),
            "subscribe",
        ));
    }
}

/// A session ended: if it was available, everyone who saw it sees it leave.
async fn session_ended(server: &Arc<Server>, session: &SessionHandle, directed: &HashSet<String>) {
    if session.available() {
        let from = session.jid.to_string();
        let p = presence(&from, "", Some("unavailable"));
        let mut p = p;
        p.remove_attr("to");
        broadcast(server, session, p, false).await;
    }
    for target in directed {
        send_to_contact(
            server,
            presence(&session.jid.to_string(), target, Some("unavailable")),
        )
        .await;
    }
}

#[cfg(test)]
#[path = "presence_tests.rs"]
mod tests;
