//! Explicit subscriptions and affiliations on an account's PEP nodes (XEP-0060 §5.6, §5.7,
//! §6.1, §6.2, §8.8, §8.9). XEP-0163 subscribes contacts implicitly (their presence
//! subscription plus `node+notify` in their caps, `interest.rs`); an entity may also subscribe
//! explicitly, and then gets every notification the access model lets it see, whatever its
//! caps say. The owner lists and manages the subscribers of a node. Affiliations are the
//! owner's only (this server keeps no publishers or members), so they can be read, not changed.

use super::form::AccessModel;
use super::iq::{access_error, internal, node_attr, pubsub_error};
use super::{event, may_read, store, PepConfig, NS, NS_OWNER};
use crate::jid::Jid;
use crate::modules::{IqRequest, IqResult};
use crate::server::Server;
use crate::stanza::StanzaError;
use crate::storage::{Storage, StorageError};
use crate::xml::Element;
use rusqlite::params;
use std::collections::HashSet;
use std::sync::Arc;

/// The table (a migration of `pep`, see `store::MIGRATIONS`): one row per subscriber of a node,
/// gone with the node or the account.
pub const MIGRATION: &str = "CREATE TABLE pep_subscriptions (
        username TEXT NOT NULL,
        node     TEXT NOT NULL,
        jid      TEXT NOT NULL,
        PRIMARY KEY (username, node, jid),
        FOREIGN KEY (username, node) REFERENCES pep_nodes(username, node) ON DELETE CASCADE
     ) WITHOUT ROWID;";

/// How a subscribe request went in storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subscribed {
    New,
    Already,
    TooMany,
}

pub async fn subscribe_row(
    s: &Storage,
    user: &str,
    node: &str,
    jid: &str,
    max: u32,
) -> Result<Subscribed, StorageError> {
    let (user, node, jid) = (user.to_string(), node.to_string(), jid.to_string());
    s.call(move |conn| {
        let exists: bool = conn.query_row(
            "SELECT count(*) FROM pep_subscriptions WHERE username = ?1 AND node = ?2 AND jid = ?3",
            params![user, node, jid],
            |r| r.get::<_, i64>(0),
        )? > 0;
        if exists {
            return Ok(Subscribed::Already);
        }
        let n: u32 = conn.query_row(
            "SELECT count(*) FROM pep_subscriptions WHERE username = ?1 AND node = ?2",
            params![user, node],
            |r| r.get(0),
        )?;
        if n >= max {
            return Ok(Subscribed::TooMany);
        }
        conn.execute(
            "INSERT INTO pep_subscriptions (username, node, jid) VALUES (?1, ?2, ?3)",
            params![user, node, jid],
        )?;
        Ok(Subscribed::New)
    })
    .await
}

/// Removes a subscription; false when there was none.
pub async fn unsubscribe_row(
    s: &Storage,
    user: &str,
    node: &str,
    jid: &str,
) -> Result<bool, StorageError> {
    let (user, node, jid) = (user.to_string(), node.to_string(), jid.to_string());
    s.call(move |conn| {
        Ok(conn.execute(
            "DELETE FROM pep_subscriptions WHERE username = ?1 AND node = ?2 AND jid = ?3",
            params![user, node, jid],
        )? > 0)
    })
    .await
}

/// `(node, jid)` of the account's subscriptions, of one node or all, of some JIDs or all.
pub async fn rows(
    s: &Storage,
    user: &str,
    node: Option<String>,
    jids: Option<Vec<String>>,
) -> Result<Vec<(String, String)>, StorageError> {
    let user = user.to_string();
    s.read(move |conn| {
        let mut st = conn.prepare(
            "SELECT node, jid FROM pep_subscriptions WHERE username = ?1
             AND (?2 IS NULL OR node = ?2) ORDER BY node, jid",
        )?;
        let all = st
            .query_map(params![user, node], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<Vec<(String, String)>>>()?;
        Ok(match jids {
            Some(j) => all.into_iter().filter(|(_, s)| j.contains(s)).collect(),
            None => all,
        })
    })
    .await
}

async fn node_names(s: &Storage, user: &str) -> Result<Vec<String>, StorageError> {
    let user = user.to_string();
    s.read(move |conn| {
        let mut st =
            conn.prepare("SELECT node FROM pep_nodes WHERE username = ?1 ORDER BY node")?;
        let names = st
            .query_map([&user], |r| r.get(0))?
            .collect::<rusqlite::Result<Vec<String>>>()?;
        Ok(names)
    })
    .await
}

/// The available local sessions a subscription of `jid` reaches: that resource, or every
/// resource of a bare JID (subscribers on other servers are sent to by their JID instead).
fn sessions_for(server: &Server, jid: &Jid) -> Vec<crate::sessions::SessionHandle> {
    if jid.domain != server.domain() {
        return Vec::new();
    }
    let mut all = server.sessions.sessions_of(&jid.bare_string());
    if jid.resource.is_some() {
        all.retain(|s| s.jid == *jid);
    }
    all.retain(|s| s.available());
    all
}

/// Sends a notification `body` to the explicit subscribers of the node the access model still
/// admits, except sessions in `done` (they had it through their caps).
pub(crate) async fn notify_subscribers(
    server: &Arc<Server>,
    owner: &str,
    access: AccessModel,
    body: &Element,
    done: &HashSet<String>,
) {
    let node = body.attr("node").unwrap_or_default().to_string();
    let subscribers = match rows(&server.storage, owner, Some(node), None).await {
        Ok(r) => r,
        Err(e) => {
            log::error!("PEP: cannot read the subscribers of {owner}: {e}");
            return;
        }
    };
    let owner_bare = format!("{owner}@{}", server.domain());
    let mut sent: HashSet<String> = HashSet::new();
    for (_, jid) in subscribers {
        let Ok(jid) = Jid::parse(&jid) else { continue };
        if !may_read(server, owner, access, &jid).await {
            continue;
        }
        if jid.domain != server.domain() {
            // A subscriber on another server: its server delivers (XEP-0060 §7.1.2).
            if sent.insert(jid.to_string()) {
                crate::delivery::deliver_to_full(server, event(&owner_bare, &jid, body.clone()));
            }
            continue;
        }
        for s in sessions_for(server, &jid) {
            let full = s.jid.to_string();
            if !done.contains(&full) && sent.insert(full) {
                s.deliver(event(&owner_bare, &s.jid, body.clone()));
            }
        }
    }
}

fn subscription(node: &str, jid: &str, state: &str) -> Element {
    Element::new("subscription", NS)
        .with_attr("node", node)
        .with_attr("jid", jid)
        .with_attr("subscription", state)
}

/// §6.1 and §6.2: `<subscribe/>` and `<unsubscribe/>` by the requester, for itself.
pub(super) async fn subscribe(
    config: &PepConfig,
    req: &IqRequest<'_>,
    owner: &str,
    op: &Element,
) -> IqResult {
    let server = req.server;
    let node = node_attr(op)?.to_string();
    let on = op.name == "subscribe";
    let jid = match op.attr("jid").map(Jid::parse) {
        Some(Ok(j)) if j.bare() == req.from.bare() && (j.resource.is_none() || j == *req.from) => j,
        // §6.1.3.1 and §6.2.3.3: only for oneself.
        _ if on => return Err(pubsub_error("modify", "bad-request", "invalid-jid")),
        _ => return Err(StanzaError::forbidden()),
    };
    let Some(node_config) = store::config(&server.storage, owner, &node)
        .await
        .map_err(internal)?
    else {
        return Err(StanzaError::item_not_found());
    };
    let jid_text = jid.to_string();
    if !on {
        if !unsubscribe_row(&server.storage, owner, &node, &jid_text)
            .await
            .map_err(internal)?
        {
            return Err(pubsub_error(
                "cancel",
                "unexpected-request",
                "not-subscribed",
            ));
        }
        return Ok(None);
    }
    if !may_read(server, owner, node_config.access, &jid).await {
        return Err(access_error(node_config.access));
    }
    let max = config.subscriptions_per_node;
    match subscribe_row(&server.storage, owner, &node, &jid_text, max)
        .await
        .map_err(internal)?
    {
        Subscribed::TooMany => {
            return Err(
                pubsub_error("wait", "policy-violation", "too-many-subscriptions").with_text(
                    format!(
            "a node may have at most {max} subscribers ([modules.pep] subscriptions_per_node)"
        ),
                ),
            )
        }
        Subscribed::New | Subscribed::Already => {}
    }
    // §6.1.7: the last item follows the result (it is queued; the result is written first).
    if node_config.send_last != super::form::SendLast::Never {
        let newest = store::items(&server.storage, owner, &node, Vec::new(), Some(1))
            .await
            .map_err(internal)?
            .unwrap_or_default();
        let owner_bare = format!("{owner}@{}", server.domain());
        for item in newest {
            if let Some(el) = super::item_element(&item, super::NS_EVENT).await {
                let body = Element::new("items", super::NS_EVENT)
                    .with_attr("node", node.clone())
                    .with_child(el);
                for s in sessions_for(server, &jid) {
                    s.deliver(event(&owner_bare, &s.jid, body.clone()));
                }
            }
        }
    }
    Ok(Some(Element::new("pubsub", NS).with_child(subscription(
        &node,
        &jid_text,
        "subscribed",
    ))))
}

/// §5.6: the requester's own subscriptions to this account's nodes; §5.7: its affiliations
/// (the owner owns every node; nobody else has one).
pub(super) async fn own_lists(req: &IqRequest<'_>, owner: &str, op: &Element) -> IqResult {
    let server = req.server;
    let filter = op.attr("node").map(str::to_string);
    let mut out = Element::new(op.name.as_str(), NS);
    if let Some(n) = &filter {
        out.set_attr("node", n.clone());
    }
    if op.name == "subscriptions" {
        let me = vec![req.from.bare_string(), req.from.to_string()];
        for (node, jid) in rows(&server.storage, owner, filter, Some(me))
            .await
            .map_err(internal)?
        {
            out.push_child(subscription(&node, &jid, "subscribed"));
        }
    } else if req.to_self() {
        for node in node_names(&server.storage, owner).await.map_err(internal)? {
            if filter.as_ref().is_none_or(|f| *f == node) {
                out.push_child(
                    Element::new("affiliation", NS)
                        .with_attr("node", node)
                        .with_attr("affiliation", "owner"),
                );
            }
        }
    }
    Ok(Some(Element::new("pubsub", NS).with_child(out)))
}

/// The JIDs a node's notifications reach without an explicit subscription (XEP-0163): the
/// owner and the contacts the access model admits that receive the owner's presence.
async fn implied_subscribers(server: &Server, owner: &str, access: AccessModel) -> Vec<String> {
    let mut out = vec![format!("{owner}@{}", server.domain())];
    if access == AccessModel::Whitelist {
        return out;
    }
    if let Ok((_, items)) = server.storage.roster(owner).await {
        for item in items.into_iter().filter(|i| i.subscription.has_from()) {
            let Ok(jid) = Jid::parse(&item.contact) else {
                continue;
            };
            if may_read(server, owner, access, &jid).await {
                out.push(jid.bare_string());
            }
        }
    }
    out
}

/// §8.8 (subscriptions) and §8.9 (affiliations) for the owner.
pub(super) async fn manage(
    config: &PepConfig,
    req: &IqRequest<'_>,
    owner: &str,
    op: &Element,
) -> IqResult {
    let server = req.server;
    let node = node_attr(op)?.to_string();
    let Some(node_config) = store::config(&server.storage, owner, &node)
        .await
        .map_err(internal)?
    else {
        return Err(StanzaError::item_not_found());
    };
    let owner_bare = format!("{owner}@{}", server.domain());
    match (op.name.as_str(), req.is_set()) {
        ("affiliations", false) => Ok(Some(
            Element::new("pubsub", NS_OWNER).with_child(
                Element::new("affiliations", NS_OWNER)
                    .with_attr("node", node)
                    .with_child(
                        Element::new("affiliation", NS_OWNER)
                            .with_attr("jid", owner_bare)
                            .with_attr("affiliation", "owner"),
                    ),
            ),
        )),
        ("affiliations", true) => {
            Err(
                pubsub_error("cancel", "feature-not-implemented", "unsupported")
                    .with_text("affiliations cannot be changed: a PEP node has its owner only"),
            )
        }
        ("subscriptions", false) => {
            let mut list = Element::new("subscriptions", NS_OWNER).with_attr("node", node.clone());
            let mut seen = HashSet::new();
            let explicit = rows(&server.storage, owner, Some(node), None)
                .await
                .map_err(internal)?
                .into_iter()
                .map(|(_, j)| j);
            let implied = implied_subscribers(server, owner, node_config.access).await;
            for jid in implied.into_iter().chain(explicit) {
                if seen.insert(jid.clone()) {
                    list.push_child(
                        Element::new("subscription", NS_OWNER)
                            .with_attr("jid", jid)
                            .with_attr("subscription", "subscribed"),
                    );
                }
            }
            Ok(Some(Element::new("pubsub", NS_OWNER).with_child(list)))
        }
        ("subscriptions", true) => {
            // §8.8.2: each <subscription jid subscription='subscribed|none'/>.
            for s in op.elements().filter(|e| e.is("subscription", NS_OWNER)) {
                let jid = match s.attr("jid").map(Jid::parse) {
                    Some(Ok(j)) => j,
                    _ => return Err(pubsub_error("modify", "bad-request", "invalid-jid")),
                };
                let text = jid.to_string();
                match s.attr("subscription") {
                    Some("subscribed") => {
                        if !may_read(server, owner, node_config.access, &jid).await {
                            return Err(StanzaError::new("modify", "not-acceptable").with_text(
                                format!("{text} may not read this node (its access model)"),
                            ));
                        }
                        let max = config.subscriptions_per_node;
                        if subscribe_row(&server.storage, owner, &node, &text, max)
                            .await
                            .map_err(internal)?
                            == Subscribed::TooMany
                        {
                            return Err(pubsub_error(
                                "wait",
                                "policy-violation",
                                "too-many-subscriptions",
                            ));
                        }
                    }
                    Some("none") => {
                        unsubscribe_row(&server.storage, owner, &node, &text)
                            .await
                            .map_err(internal)?;
                    }
                    _ => {
                        return Err(StanzaError::bad_request()
                            .with_text("subscription must be 'subscribed' or 'none'"))
                    }
                }
            }
            Ok(None)
        }
        _ => Err(StanzaError::feature_not_implemented()),
    }
}
