//! RFC 6121 §2: roster management, with XEP-0237 versioning (a version per account; a client
//! that is up to date gets an empty result, otherwise the whole roster).

use super::{IqFuture, IqRequest, Module};
use crate::hooks::{FeaturePhase, IqKind, IqRoute};
use crate::jid::Jid;
use crate::server::Server;
use crate::stanza::StanzaError;
use crate::storage::{RosterItem, Subscription};
use crate::xml::{ns, Element};
use std::sync::atomic::Ordering;
use std::sync::Arc;

pub const NS: &str = "jabber:iq:roster";
/// Stream feature advertising versioning (XEP-0237 §4).
pub const VER_FEATURE_NS: &str = "urn:xmpp:features:rosterver";

/// Roster names and group names longer than this are refused (they end up in every push).
const MAX_TEXT: usize = 1024;
const MAX_GROUPS: usize = 32;

pub struct Roster;

impl Module for Roster {
    fn name(&self) -> &'static str {
        "roster"
    }
    fn iqs(&self) -> &'static [IqRoute] {
        // Other accounts' rosters are refused by the handler, with `forbidden`.
        const ROUTES: &[IqRoute] = &[IqRoute::new(IqKind::Both, crate::hooks::ANY_TARGET, NS)];
        ROUTES
    }
    fn stream_features(&self, _server: &Server, phase: FeaturePhase, out: &mut Vec<Element>) {
        if phase == FeaturePhase::AfterAuth {
            out.push(Element::new("ver", VER_FEATURE_NS));
        }
    }
    fn handle_iq<'a>(&'a self, req: IqRequest<'a>) -> IqFuture<'a> {
        Box::pin(async move {
            // Only the owner manages a roster (RFC 6121 §2.1.5).
            if !req.to_self()
                || req
                    .to
                    .local
                    .as_ref()
                    .is_some_and(|l| Some(l) != req.from.local.as_ref())
            {
                return Err(StanzaError::forbidden());
            }
            let user = req
                .from
                .local
                .clone()
                .ok_or_else(StanzaError::bad_request)?;
            if req.is_set() {
                set(req.server, &user, req.from, req.payload).await
            } else {
                get(&req, &user).await
            }
        })
    }
}

async fn get(req: &IqRequest<'_>, user: &str) -> Result<Option<Element>, StanzaError> {
    if let Some(s) = req.session {
        s.shared.interested.store(true, Ordering::Relaxed);
    }
    let (ver, items) = req
        .server
        .storage
        .roster(user)
        .await
        .map_err(|_| StanzaError::internal())?;
    let ver = ver.to_string();
    if req.payload.attr("ver") == Some(ver.as_str()) {
        return Ok(None);
    }
    let mut q = Element::new("query", NS).with_attr("ver", ver);
    for item in &items {
        q.push_child(item_element(item));
    }
    Ok(Some(q))
}

async fn set(
    server: &Arc<Server>,
    user: &str,
    from: &Jid,
    payload: &Element,
) -> Result<Option<Element>, StanzaError> {
    let mut items = payload.elements().filter(|e| e.name == "item");
    let (Some(item), None) = (items.next(), items.next()) else {
        return Err(StanzaError::bad_request().with_text("a roster set carries exactly one item"));
    };
    let contact = item
        .attr("jid")
        .and_then(|j| Jid::parse(j).ok())
        .ok_or_else(|| StanzaError::new("modify", "jid-malformed"))?;
    let contact = contact.bare_string();
    if contact == from.bare_string() {
        return Err(StanzaError::not_allowed().with_text("you cannot add yourself"));
    }
    let storage = &server.storage;
    let existing = storage
        .roster_item(user, &contact)
        .await
        .map_err(|_| StanzaError::internal())?;
    if item.attr("subscription") == Some("remove") {
        let Some(old) = existing.filter(|i| i.in_roster) else {
            return Err(StanzaError::item_not_found());
        };
        // Removing a contact cancels both directions (RFC 6121 §2.5.2).
        let user_bare = from.bare_string();
        if old.subscription.has_to() || old.ask {
            super::presence::send_to_contact(
                server,
                super::presence::subscription(&user_bare, &contact, "unsubscribe"),
            )
            .await;
        }
        if old.subscription.has_from() || old.pending_in {
            super::presence::send_to_contact(
                server,
                super::presence::subscription(&user_bare, &contact, "unsubscribed"),
            )
            .await;
        }
        let gone = RosterItem {
            in_roster: false,
            pending_in: false,
            ..RosterItem::new(&contact)
        };
        let ver = storage
            .save_roster_item(user, gone)
            .await
            .map_err(|_| StanzaError::internal())?;
        let mut removed = Element::new("item", NS)
            .with_attr("jid", contact)
            .with_attr("subscription", "remove");
        removed.children.clear();
        push(server, user, ver, removed);
        return Ok(None);
    }
    let name = item
        .attr("name")
        .filter(|n| !n.is_empty())
        .map(str::to_string);
    let groups: Vec<String> = item
        .elements()
        .filter(|g| g.name == "group")
        .map(|g| g.text())
        .collect();
    if name.as_ref().is_some_and(|n| n.len() > MAX_TEXT)
        || groups.len() > MAX_GROUPS
        || groups.iter().any(|g| g.is_empty() || g.len() > MAX_TEXT)
    {
        return Err(StanzaError::new("modify", "not-acceptable")
            .with_text("name or groups too long, or an empty group"));
    }
    let mut updated = existing.unwrap_or_else(|| RosterItem::new(&contact));
    updated.name = name;
    updated.groups = groups;
    updated.in_roster = true;
    let ver = storage
        .save_roster_item(user, updated.clone())
        .await
        .map_err(|_| StanzaError::internal())?;
    push(server, user, ver, item_element(&updated));
    Ok(None)
}

pub fn item_element(item: &RosterItem) -> Element {
    let mut e = Element::new("item", NS).with_attr("jid", item.contact.clone());
    if let Some(n) = &item.name {
        e.set_attr("name", n.clone());
    }
    e.set_attr("subscription", item.subscription.as_str());
    if item.ask {
        e.set_attr("ask", "subscribe");
    }
    for g in &item.groups {
        e.push_child(Element::new("group", NS).with_text(g.clone()));
    }
    e
}

/// Roster push (RFC 6121 §2.1.6) to every session of `user` that asked for the roster.
pub fn push(server: &Arc<Server>, user: &str, ver: i64, item: Element) {
    let bare = format!("{user}@{}", server.domain());
    for s in server.sessions.sessions_of(&bare) {
        if !s.shared.interested.load(Ordering::Relaxed) {
            continue;
        }
        let iq = Element::new("iq", ns::CLIENT)
            .with_attr("type", "set")
            .with_attr("id", format!("push{}", crate::stanza::random_id(6)))
            .with_attr("to", s.jid.to_string())
            .with_child(
                Element::new("query", NS)
                    .with_attr("ver", ver.to_string())
                    .with_child(item.clone()),
            );
        s.deliver(iq);
    }
}

/// Saves an item changed by a subscription and pushes it when it is visible.
pub async fn save_and_push(server: &Arc<Server>, user: &str, item: RosterItem) {
    let visible = item.in_roster;
    match server.storage.save_roster_item(user, item.clone()).await {
        Ok(ver) if visible => push(server, user, ver, item_element(&item)),
        Ok(_) => {}
        Err(e) => log::error!("cannot save roster item for {user}: {e}"),
    }
}

pub fn is_subscribed_to(item: &Option<RosterItem>) -> bool {
    item.as_ref().is_some_and(|i| i.subscription.has_to())
}

pub fn subscription_of(item: &Option<RosterItem>) -> Subscription {
    item.as_ref().map(|i| i.subscription).unwrap_or_default()
}
