//! RFC 6121 §3–4: subscriptions and presence. Outbound handling runs for stanzas from a local
//! session; inbound handling for stanzas reaching a local account (from a local contact now,
//! from federation later). State per contact lives in the roster (`storage::roster`).

use super::roster::save_and_push;
use crate::jid::Jid;
use crate::router::SessionHandle;
use crate::routing::presence;
use crate::server::Server;
use crate::stanza;
use crate::storage::RosterItem;
use crate::xml::Element;
use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// A subscription stanza between two bare JIDs.
pub fn subscription(from: &str, to: &str, kind: &str) -> Element {
    presence(from, to, Some(kind))
}

/// What an outbound presence meant for the session.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Nothing,
    /// The session just became available: deliver what waited for it.
    BecameAvailable,
}

/// A presence stanza sent by a local session (its `from` already stamped with the full JID).
pub async fn outbound(
    server: &Arc<Server>,
    session: &SessionHandle,
    mut p: Element,
    directed: &mut HashSet<String>,
) -> Outcome {
    let kind = stanza::stanza_type(&p).to_string();
    let user_bare = session.jid.bare_string();
    let to = match stanza::to_jid(&p) {
        Some(Ok(j)) => Some(j),
        Some(Err(_)) => return Outcome::Nothing,
        None => None,
    };
    match (kind.as_str(), to) {
        ("subscribe" | "subscribed" | "unsubscribe" | "unsubscribed", Some(to)) => {
            let contact = to.bare_string();
            if contact == user_bare {
                return Outcome::Nothing;
            }
            outbound_subscription(server, &session.jid, &contact, &kind).await;
            Outcome::Nothing
        }
        ("available" | "unavailable", None) => {
            broadcast(server, session, p, kind == "available").await
        }
        ("available" | "unavailable", Some(to)) => {
            // Directed presence (RFC 6121 §4.6): remembered so an unavailable follows at logout.
            let target = to.to_string();
            if kind == "available" {
                if directed.len() < 256 {
                    directed.insert(target);
                }
            } else {
                directed.remove(&target);
            }
            p.set_attr("to", to.to_string());
            deliver_presence(server, &to, p);
            Outcome::Nothing
        }
        // Probes from clients and errors are not ours to relay.
        _ => Outcome::Nothing,
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
            for s in server.router.sessions_of(&user_bare) {
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
                for s in server.router.sessions_of(&user_bare) {
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

/// Hands a presence stanza to its addressee's server: ours, or (later) a federated one.
pub async fn send_to_contact(server: &Arc<Server>, p: Element) {
    let Some(Ok(to)) = stanza::to_jid(&p) else {
        return;
    };
    if to.domain != server.domain() || to.local.is_none() {
        // Federation is not available yet; remote contacts do not see presence.
        return;
    }
    inbound(server, p, &to).await;
}

/// A presence stanza reaching local account `to`.
async fn inbound(server: &Arc<Server>, p: Element, to: &Jid) {
    let Some(user) = to.local.clone() else { return };
    let Some(from) = stanza::from_jid(&p) else {
        return;
    };
    let kind = stanza::stanza_type(&p).to_string();
    let contact = from.bare_string();
    let user_bare = to.bare_string();
    if !matches!(
        kind.as_str(),
        "subscribe" | "subscribed" | "unsubscribe" | "unsubscribed"
    ) {
        deliver_presence(server, to, p);
        return;
    }
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
                send_to_contact_boxed(server, subscription(&user_bare, &contact, "subscribed"))
                    .await;
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
                for s in server.router.sessions_of(&contact) {
                    deliver_presence(
                        server,
                        to,
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

fn send_to_contact_boxed<'a>(
    server: &'a Arc<Server>,
    p: Element,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>> {
    Box::pin(send_to_contact(server, p))
}

/// Delivers presence to a local JID: a full JID's session, or every available session of a bare JID.
fn deliver_presence(server: &Arc<Server>, to: &Jid, p: Element) {
    if to.domain != server.domain() || to.local.is_none() {
        return;
    }
    if to.is_bare() {
        deliver_to_available(server, &to.bare_string(), p);
    } else if let Some(s) = server.router.session(to) {
        s.deliver(p);
    }
}

fn deliver_to_available(server: &Arc<Server>, bare: &str, p: Element) {
    for s in server.router.sessions_of(bare) {
        if s.available() {
            let mut copy = p.clone();
            copy.set_attr("to", s.jid.to_string());
            s.deliver(copy);
        }
    }
}

/// Presence broadcast (RFC 6121 §4.2, §4.4, §4.5) from one session to the contacts that see it
/// and to the user's own available sessions.
async fn broadcast(
    server: &Arc<Server>,
    session: &SessionHandle,
    mut p: Element,
    available: bool,
) -> Outcome {
    let Some(user) = session.jid.local.clone() else {
        return Outcome::Nothing;
    };
    let was_available = session.available();
    if !available && !was_available {
        return Outcome::Nothing;
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
        probe_contacts(server, session, &roster);
        return Outcome::BecameAvailable;
    }
    Outcome::Nothing
}

/// Answers the probes initial presence implies (RFC 6121 §4.3) for local contacts directly: the
/// new session gets the current presence of every contact it is subscribed to and of the user's
/// other sessions.
fn probe_contacts(server: &Arc<Server>, session: &SessionHandle, roster: &[RosterItem]) {
    let mut sources: Vec<String> = roster
        .iter()
        .filter(|i| i.subscription.has_to())
        .map(|i| i.contact.clone())
        .collect();
    sources.push(session.jid.bare_string());
    for bare in sources {
        for s in server.router.sessions_of(&bare) {
            if s.id == session.id {
                continue;
            }
            if let Some(mut p) = s.last_presence() {
                p.set_attr("from", s.jid.to_string());
                p.set_attr("to", session.jid.to_string());
                session.deliver(p);
            }
        }
    }
}

/// Re-delivers subscription requests that arrived while the user was away (RFC 6121 §3.1.3).
pub async fn deliver_pending_requests(server: &Arc<Server>, session: &SessionHandle) {
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
pub async fn session_ended(
    server: &Arc<Server>,
    session: &SessionHandle,
    directed: &HashSet<String>,
) {
    if session.available() {
        let from = session.jid.to_string();
        let p = presence(&from, "", Some("unavailable"));
        let mut p = p;
        p.remove_attr("to");
        broadcast(server, session, p, false).await;
    }
    for target in directed {
        if let Ok(to) = Jid::parse(target) {
            deliver_presence(
                server,
                &to,
                presence(&session.jid.to_string(), target, Some("unavailable")),
            );
        }
    }
}
