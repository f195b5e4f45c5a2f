//! XEP-0402 PEP native bookmarks with XEP-0411 conversion from and to XEP-0048 bookmarks in
//! private XML storage (XEP-0049). The PEP node `urn:xmpp:bookmarks:1` (whitelist: the owner
//! only) is the one truth: a client storing `<storage xmlns='storage:bookmarks'/>` privately
//! has its conferences written to the node, and one reading it gets them built from the node.

use super::pep::form::{AccessModel, NodeConfig, SendLast};
use super::pep::store::{self, Item, Limits, Published};
use super::pep::{notify, NS_EVENT};
use super::Module;
use crate::hooks::{DiscoInfo, DiscoTarget};
use crate::server::Server;
use crate::stanza::StanzaError;
use crate::xml::Element;
use std::sync::Arc;

pub const NODE: &str = "urn:xmpp:bookmarks:1";
pub const LEGACY: &str = "storage:bookmarks";

pub struct Bookmarks;

impl Module for Bookmarks {
    fn name(&self) -> &'static str {
        "bookmarks"
    }
    fn disco_info(&self, _server: &Server, target: DiscoTarget, info: &mut DiscoInfo) {
        if target == DiscoTarget::Account {
            info.feature("urn:xmpp:bookmarks:1#compat");
        } else {
            info.feature("urn:xmpp:bookmarks-conversion:0");
        }
    }
}

fn node_config(server: &Server) -> NodeConfig {
    NodeConfig {
        access: AccessModel::Whitelist,
        persist: true,
        max_items: server.config.modules.pep.items_per_node,
        send_last: SendLast::OnSubAndPresence,
    }
}

/// XEP-0048 `<conference/>` → XEP-0402 item (id = room JID).
pub fn to_native(c: &Element) -> Option<Item> {
    let jid = c.attr("jid").filter(|j| !j.is_empty())?;
    let mut el = Element::new("conference", NODE);
    if let Some(name) = c.attr("name") {
        el.set_attr("name", name);
    }
    if matches!(c.attr("autojoin"), Some("true" | "1")) {
        el.set_attr("autojoin", "true");
    }
    for child in ["nick", "password"] {
        if let Some(v) = c.child(child, LEGACY) {
            el.push_child(Element::new(child, NODE).with_text(v.text()));
        }
    }
    Some(Item {
        id: jid.to_string(),
        payload: el.to_xml(""),
    })
}

/// XEP-0402 item → XEP-0048 `<conference/>`.
pub async fn to_legacy(item: &Item) -> Option<Element> {
    let c = crate::xml::parse_fragment(&item.payload).await?;
    let mut el = Element::new("conference", LEGACY).with_attr("jid", item.id.clone());
    if let Some(name) = c.attr("name") {
        el.set_attr("name", name);
    }
    let autojoin = matches!(c.attr("autojoin"), Some("true" | "1"));
    el.set_attr("autojoin", if autojoin { "true" } else { "false" });
    for child in ["nick", "password"] {
        if let Some(v) = c.child(child, NODE) {
            el.push_child(Element::new(child, LEGACY).with_text(v.text()));
        }
    }
    Some(el)
}

fn internal(e: crate::storage::StorageError) -> StanzaError {
    log::error!("bookmarks: {e}");
    StanzaError::internal()
}

/// The account's bookmarks as XEP-0048 storage, from the PEP node; `None` without a node.
pub async fn read_legacy(server: &Server, user: &str) -> Result<Option<Element>, StanzaError> {
    let Some(items) = store::items(&server.storage, user, NODE, Vec::new(), None)
        .await
        .map_err(internal)?
    else {
        return Ok(None);
    };
    let mut storage = Element::new("storage", LEGACY);
    // Oldest first, as a list is usually kept.
    for item in items.iter().rev() {
        if let Some(c) = to_legacy(item).await {
            storage.push_child(c);
        }
    }
    Ok(Some(storage))
}

/// Replaces the account's bookmarks with those of a XEP-0048 `<storage/>`: each conference
/// published (the owner's interested sessions notified), the others retracted.
pub async fn write_legacy(
    server: &Arc<Server>,
    user: &str,
    storage: &Element,
) -> Result<(), StanzaError> {
    let wanted: Vec<Item> = storage
        .elements()
        .filter(|e| e.is("conference", LEGACY))
        .filter_map(to_native)
        .collect();
    let pep = &server.config.modules.pep;
    if wanted.len() > pep.items_per_node as usize {
        return Err(StanzaError::new("wait", "resource-constraint")
            .with_text(format!("at most {} bookmarks", pep.items_per_node)));
    }
    let limits = Limits {
        nodes_per_account: pep.nodes_per_account,
    };
    let existing = store::items(&server.storage, user, NODE, Vec::new(), None)
        .await
        .map_err(internal)?
        .unwrap_or_default();
    for old in existing
        .iter()
        .filter(|o| !wanted.iter().any(|w| w.id == o.id))
    {
        store::retract(&server.storage, user, NODE, &old.id)
            .await
            .map_err(internal)?;
        let body = Element::new("items", NS_EVENT)
            .with_attr("node", NODE)
            .with_child(Element::new("retract", NS_EVENT).with_attr("id", old.id.clone()));
        notify(server, user, AccessModel::Whitelist, body).await;
    }
    for item in wanted {
        if existing.contains(&item) {
            continue;
        }
        match store::publish(
            &server.storage,
            user,
            NODE,
            node_config(server),
            item.clone(),
            limits,
        )
        .await
        .map_err(internal)?
        {
            Published::Stored => {}
            Published::TooManyNodes => {
                return Err(StanzaError::new("wait", "resource-constraint")
                    .with_text("the account has the most PEP nodes allowed"))
            }
        }
        if let Some(el) = super::pep::item_element(&item, NS_EVENT).await {
            let body = Element::new("items", NS_EVENT)
                .with_attr("node", NODE)
                .with_child(el);
            notify(server, user, AccessModel::Whitelist, body).await;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{LEGACY, NODE};
    use crate::harness::Harness;
    use crate::modules::pep::NS as PUBSUB;
    use crate::modules::private_storage::NS as PRIVATE;
    use crate::xml::{ns, Element};

    fn private(child: Element) -> Element {
        Element::new("query", PRIVATE).with_child(child)
    }

    #[tokio::test]
    async fn bookmarks_convert_both_ways() {
        let h = Harness::new().await;
        h.user("alice").await;
        let mut a = h.login("alice", "a").await;
        // XEP-0048 in → XEP-0402 out.
        let legacy = Element::new("storage", LEGACY).with_child(
            Element::new("conference", LEGACY)
                .with_attr("jid", "room@groups.example.test")
                .with_attr("name", "Room")
                .with_attr("autojoin", "true")
                .with_child(Element::new("nick", LEGACY).with_text("al")),
        );
        assert_eq!(
            a.iq("set", None, private(legacy)).await.attr("type"),
            Some("result")
        );
        let items = Element::new("pubsub", PUBSUB)
            .with_child(Element::new("items", PUBSUB).with_attr("node", NODE));
        let r = a.iq("get", None, items.clone()).await;
        let xml = r.to_xml(ns::CLIENT);
        assert!(
            xml.contains("room@groups.example.test")
                && xml.contains("autojoin='true'")
                && xml.contains(">al<"),
            "{xml}"
        );

        // XEP-0402 in → XEP-0048 out (the first bookmark replaced by a second).
        let publish = Element::new("pubsub", PUBSUB).with_child(
            Element::new("publish", PUBSUB)
                .with_attr("node", NODE)
                .with_child(
                    Element::new("item", PUBSUB)
                        .with_attr("id", "other@groups.example.test")
                        .with_child(Element::new("conference", NODE).with_attr("name", "Other")),
                ),
        );
        assert_eq!(
            a.iq("set", None, publish).await.attr("type"),
            Some("result")
        );
        let r = a
            .iq("get", None, private(Element::new("storage", LEGACY)))
            .await;
        let xml = r.to_xml(ns::CLIENT);
        assert!(
            xml.contains("other@groups.example.test") && xml.contains("room@groups.example.test"),
            "{xml}"
        );
        // Storing a list without the first removes it from the node.
        let only_other = Element::new("storage", LEGACY).with_child(
            Element::new("conference", LEGACY).with_attr("jid", "other@groups.example.test"),
        );
        a.iq("set", None, private(only_other)).await;
        let xml = a.iq("get", None, items).await.to_xml(ns::CLIENT);
        assert!(
            !xml.contains("room@groups.example.test") && xml.contains("other@"),
            "{xml}"
        );
        // Nobody else reads them (whitelist).
        h.user("bob").await;
        let mut b = h.login("bob", "b").await;
        let r = b
            .iq(
                "get",
                Some("alice@example.test"),
                Element::new("pubsub", PUBSUB)
                    .with_child(Element::new("items", PUBSUB).with_attr("node", NODE)),
            )
            .await;
        assert_eq!(r.attr("type"), Some("error"));
    }
}
