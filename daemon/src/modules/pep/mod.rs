//! XEP-0163: Personal Eventing Protocol, on the XEP-0060 subset clients use (OMEMO device lists
//! and bundles, avatars, nicknames): every account is a pubsub service with its own nodes.
//! Publish (with publish-options preconditions), retract, retrieve items, create, delete,
//! purge and node configuration; notifications go to the owner's available sessions and to
//! contacts subscribed to the owner's presence, but only to sessions whose caps ask for the node
//! (`interest.rs`), and the newest item of each node goes to a session once its caps are known.
//! An entity may also subscribe explicitly (`subscriptions.rs`), and the owner lists and
//! manages a node's subscribers. Access models open, presence, roster and whitelist (the owner
//! only) are checked on every read and every notification.

pub mod form;
pub mod interest;
mod iq;
pub(crate) use iq::item_element;
mod remote;
pub mod store;
mod subscriptions;
#[cfg(test)]
mod tests;

use super::{IqFuture, IqRequest, Module};
use crate::hooks::{
    BoxFut, DiscoInfo, DiscoTarget, Flow, Hook, Identity, IqKind, IqRoute, IqTarget, Kind,
    StanzaEvent,
};
use crate::jid::Jid;
use crate::server::Server;
use crate::xml::{ns, Element};
use form::{AccessModel, NodeConfig, SendLast};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

pub const NS: &str = "http://jabber.org/protocol/pubsub";
pub const NS_OWNER: &str = "http://jabber.org/protocol/pubsub#owner";
pub const NS_EVENT: &str = "http://jabber.org/protocol/pubsub#event";
pub const NS_ERRORS: &str = "http://jabber.org/protocol/pubsub#errors";

/// `[modules.pep]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PepConfig {
    /// Most items one node keeps (`pubsub#max_items` = `max` means this).
    #[serde(default = "default_items_per_node")]
    pub items_per_node: u32,
    /// Largest item payload, in bytes of XML (an OMEMO bundle with 100 pre-keys is ~12 KiB).
    #[serde(default = "default_item_bytes")]
    pub item_bytes: usize,
    /// Most nodes one account may have.
    #[serde(default = "default_nodes_per_account")]
    pub nodes_per_account: u32,
    /// Most explicit subscribers (XEP-0060 §6.1) one node may have.
    #[serde(default = "default_subscriptions_per_node")]
    pub subscriptions_per_node: u32,
}

impl Default for PepConfig {
    fn default() -> Self {
        PepConfig {
            items_per_node: default_items_per_node(),
            item_bytes: default_item_bytes(),
            nodes_per_account: default_nodes_per_account(),
            subscriptions_per_node: default_subscriptions_per_node(),
        }
    }
}

fn default_items_per_node() -> u32 {
    64
}
fn default_item_bytes() -> usize {
    64 * 1024
}
fn default_nodes_per_account() -> u32 {
    128
}
fn default_subscriptions_per_node() -> u32 {
    256
}

/// The features disco#info on an account lists: exactly what this module does.
const FEATURES: &[&str] = &[
    NS,
    "http://jabber.org/protocol/pubsub#access-open",
    "http://jabber.org/protocol/pubsub#access-presence",
    "http://jabber.org/protocol/pubsub#access-roster",
    "http://jabber.org/protocol/pubsub#access-whitelist",
    "http://jabber.org/protocol/pubsub#auto-create",
    "http://jabber.org/protocol/pubsub#config-node",
    "http://jabber.org/protocol/pubsub#create-nodes",
    "http://jabber.org/protocol/pubsub#delete-items",
    "http://jabber.org/protocol/pubsub#delete-nodes",
    "http://jabber.org/protocol/pubsub#item-ids",
    "http://jabber.org/protocol/pubsub#last-published",
    "http://jabber.org/protocol/pubsub#persistent-items",
    "http://jabber.org/protocol/pubsub#publish",
    "http://jabber.org/protocol/pubsub#publish-options",
    "http://jabber.org/protocol/pubsub#purge-nodes",
    "http://jabber.org/protocol/pubsub#manage-subscriptions",
    "http://jabber.org/protocol/pubsub#retract-items",
    "http://jabber.org/protocol/pubsub#retrieve-affiliations",
    "http://jabber.org/protocol/pubsub#retrieve-items",
    "http://jabber.org/protocol/pubsub#retrieve-subscriptions",
    "http://jabber.org/protocol/pubsub#subscribe",
];

pub struct Pep {
    config: PepConfig,
    caps: Arc<interest::CapsCache>,
}

impl Pep {
    pub fn new(config: &PepConfig) -> Pep {
        Pep {
            config: config.clone(),
            caps: Arc::default(),
        }
    }
}

/// Whether a session asked (through its caps) for notifications of `node`.
fn wants(session: &crate::sessions::SessionHandle, node: &str) -> bool {
    session.available() && interest::of(session).is_some_and(|i| i.0.contains(node))
}

/// Whether `reader` may see nodes of account `owner` with this access model.
pub(crate) async fn may_read(
    server: &Server,
    owner: &str,
    access: AccessModel,
    reader: &Jid,
) -> bool {
    if reader.domain == server.domain() && reader.local.as_deref() == Some(owner) {
        return true;
    }
    let item = match access {
        AccessModel::Open => return true,
        AccessModel::Whitelist => return false,
        AccessModel::Presence | AccessModel::Roster => {
            match server
                .storage
                .roster_item(owner, &reader.bare_string())
                .await
            {
                Ok(Some(item)) => item,
                _ => return false,
            }
        }
    };
    match access {
        AccessModel::Presence => item.subscription.has_from(),
        // No roster groups are configurable here: every roster contact is in.
        _ => item.in_roster,
    }
}

/// An event message from `owner` (bare JID) to `to`.
pub(crate) fn event(owner: &str, to: &Jid, body: Element) -> Element {
    Element::new("message", ns::CLIENT)
        .with_attr("type", "headline")
        .with_attr("from", owner)
        .with_attr("to", to.to_string())
        .with_attr("id", crate::stanza::random_id(9))
        .with_child(Element::new("event", NS_EVENT).with_child(body))
}

/// Sends `body` (an `<items/>`, `<delete/>` or `<purge/>`) to every available session allowed
/// to see account `owner`'s node that asked for it with `node+notify`: the owner's own, and
/// those of local contacts subscribed to the owner's presence.
pub(crate) async fn notify(server: &Arc<Server>, owner: &str, access: AccessModel, body: Element) {
    let owner_bare = format!("{owner}@{}", server.domain());
    let mut readers: Vec<String> = vec![owner_bare.clone()];
    let mut remote_readers: Vec<Jid> = Vec::new();
    if access != AccessModel::Whitelist {
        match server.storage.roster(owner).await {
            Ok((_, items)) => {
                for item in items {
                    let Ok(jid) = Jid::parse(&item.contact) else {
                        continue;
                    };
                    if !item.subscription.has_from() {
                        continue;
                    }
                    if jid.domain == server.domain() {
                        readers.push(jid.bare_string());
                    } else {
                        remote_readers.push(jid);
                    }
                }
            }
            Err(e) => log::error!("PEP: cannot read the roster of {owner}: {e}"),
        }
    }
    let node = body.attr("node").unwrap_or_default().to_string();
    let mut done = std::collections::HashSet::new();
    for bare in readers {
        for s in server.sessions.sessions_of(&bare) {
            if wants(&s, &node) {
                s.deliver(event(&owner_bare, &s.jid, body.clone()));
                done.insert(s.jid.to_string());
            }
        }
    }
    remote::notify(server, &owner_bare, &remote_readers, &body);
    subscriptions::notify_subscribers(server, owner, access, &body, &done).await;
}

/// The newest item of every node the session's account may see, from its own account and from
/// the contacts whose presence it receives (XEP-0163 §6.1.1 "last published item").
pub(crate) async fn send_last_items(
    server: &Arc<Server>,
    session: &crate::sessions::SessionHandle,
) {
    let Some(me) = session.jid.local.clone() else {
        return;
    };
    let mut owners = vec![me.clone()];
    if let Ok((_, items)) = server.storage.roster(&me).await {
        for item in items {
            let Ok(jid) = Jid::parse(&item.contact) else {
                continue;
            };
            if item.subscription.has_to() && jid.domain == server.domain() {
                if let Some(l) = jid.local {
                    owners.push(l);
                }
            }
        }
    }
    for owner in owners {
        send_last_items_of(server, &owner, session).await;
    }
}

/// The newest item of each of `owner`'s nodes that the session wants and may see.
async fn send_last_items_of(
    server: &Arc<Server>,
    owner: &str,
    session: &crate::sessions::SessionHandle,
) {
    for ev in last_item_events(server, owner, &session.jid, |node| wants(session, node)).await {
        session.deliver(ev);
    }
}

/// Event messages to `reader` with the newest item of each of `owner`'s nodes that it wants and
/// may read (XEP-0163 §6.1.1), for a local session or a remote resource alike.
pub(crate) async fn last_item_events(
    server: &Server,
    owner: &str,
    reader: &Jid,
    wants: impl Fn(&str) -> bool,
) -> Vec<Element> {
    let last = match store::last_items(&server.storage, owner).await {
        Ok(l) => l,
        Err(e) => {
            log::error!("PEP: cannot read the nodes of {owner}: {e}");
            return Vec::new();
        }
    };
    let owner_bare = format!("{owner}@{}", server.domain());
    let mut out = Vec::new();
    for (node, config, item) in last {
        if config.send_last == SendLast::Never
            || !wants(&node)
            || !may_read(server, owner, config.access, reader).await
        {
            continue;
        }
        let Some(el) = iq::item_element(&item, NS_EVENT).await else {
            continue;
        };
        let body = Element::new("items", NS_EVENT)
            .with_attr("node", node)
            .with_child(el);
        out.push(event(&owner_bare, reader, body));
    }
    out
}

impl Module for Pep {
    fn name(&self) -> &'static str {
        "pep"
    }
    fn hooks(&self) -> &'static [(Hook, i16)] {
        // Before `presence` takes the broadcast; after `blocking`.
        &[
            (Hook::Outbound(Kind::Presence), 50),
            // An approved subscription, before `presence` takes it: the approver's roster is
            // already updated (that happened on the way out), so the new subscriber may read.
            (Hook::InboundBare(Kind::Presence), 50),
            // Presence of remote contacts' resources: which nodes they want (`remote.rs`).
            (Hook::InboundFull(Kind::Presence), 50),
        ]
    }
    fn migrations(&self) -> &'static [&'static str] {
        store::MIGRATIONS
    }
    fn disco_info(&self, _server: &Server, target: DiscoTarget, info: &mut DiscoInfo) {
        if target == DiscoTarget::Account {
            info.identities.push(Identity {
                category: "pubsub",
                kind: "pep",
                name: None,
            });
            for f in FEATURES {
                info.feature(f);
            }
        }
    }
    fn iqs(&self) -> &'static [IqRoute] {
        const ROUTES: &[IqRoute] = &[
            IqRoute::new(
                IqKind::Both,
                &[IqTarget::OwnAccount, IqTarget::OtherAccount],
                NS,
            ),
            // Others are told `forbidden` (XEP-0060 §8), not that nobody answers.
            IqRoute::new(
                IqKind::Both,
                &[IqTarget::OwnAccount, IqTarget::OtherAccount],
                NS_OWNER,
            ),
        ];
        ROUTES
    }
    fn handle_iq<'a>(&'a self, req: IqRequest<'a>) -> IqFuture<'a> {
        Box::pin(iq::handle(&self.config, req))
    }
    fn on_stanza<'a>(
        &'a self,
        server: &'a Arc<Server>,
        hook: Hook,
        ev: &'a mut StanzaEvent<'_>,
    ) -> BoxFut<'a, Flow> {
        if matches!(hook, Hook::InboundBare(_) | Hook::InboundFull(_)) {
            if let Some(owner) = ev.to.as_ref().and_then(|t| t.local.as_deref()) {
                remote::presence_in(server, &self.caps, &ev.stanza, &ev.from, owner);
            }
            if matches!(hook, Hook::InboundFull(_)) {
                return Box::pin(async { Flow::Continue });
            }
            return Box::pin(async move {
                // XEP-0163 §6.1.1: a new subscriber gets the last items ("on_sub").
                let approver = (ev.stanza.attr("type") == Some("subscribed")
                    && ev.from.domain == server.domain())
                .then(|| ev.from.local.clone())
                .flatten();
                if let (Some(owner), Some(to)) = (approver, &ev.to) {
                    for s in server.sessions.sessions_of(&to.bare_string()) {
                        send_last_items_of(server, &owner, &s).await;
                    }
                }
                Flow::Continue
            });
        }
        // An available-presence broadcast with caps: learn what the client wants, off this
        // task (the client must answer a question first), then hand it its newest items.
        if ev.to.is_none() && ev.stanza.attr("type").is_none() {
            if let (Some(session), Some((node, ver))) = (ev.sender, interest::caps_of(&ev.stanza)) {
                if !interest::start_asking(session, &ver) {
                    // The same caps again, or a question to this client is still open: a
                    // client cannot make the server ask it over and over.
                    return Box::pin(async { Flow::Continue });
                }
                let (server, cache, session) = (server.clone(), self.caps.clone(), session.clone());
                tokio::spawn(async move {
                    interest::learn(server, &cache, session, node, ver).await;
                });
            }
        }
        Box::pin(async { Flow::Continue })
    }
}

/// The configuration a new node gets: PEP defaults, then the publisher's options.
pub(crate) fn new_node_config(settings: &[form::Setting]) -> NodeConfig {
    let mut c = NodeConfig::default_pep();
    for s in settings {
        s.apply(&mut c);
    }
    c
}
