//! The pubsub IQs of an account's PEP service (XEP-0060 §6–§8, as XEP-0163 uses them), with
//! the errors XEP-0060 defines for each refusal.

use super::form::{self, FormError, Setting};
use super::store::{self, Item, Limits, Published};
use super::{
    may_read, new_node_config, notify, subscriptions, PepConfig, NS, NS_ERRORS, NS_EVENT, NS_OWNER,
};
use crate::modules::{IqRequest, IqResult};
use crate::stanza::StanzaError;
use crate::storage::StorageError;
use crate::xml::Element;

pub(super) fn internal(e: StorageError) -> StanzaError {
    log::error!("PEP storage: {e}");
    StanzaError::internal()
}

/// A XEP-0060 error: a defined condition plus a pubsub#errors condition.
pub(super) fn pubsub_error(
    kind: &'static str,
    condition: &'static str,
    app: &'static str,
) -> StanzaError {
    StanzaError::new(kind, condition).with_app_condition(app, NS_ERRORS)
}

fn form_error(e: FormError) -> StanzaError {
    match e {
        FormError::Bad(t) => StanzaError::bad_request().with_text(t),
        FormError::Unsupported(t) => StanzaError::new("modify", "not-acceptable").with_text(t),
    }
}

/// An `<item/>` in namespace `ns` carrying the stored payload.
pub(crate) async fn item_element(item: &Item, ns: &str) -> Option<Element> {
    let payload = crate::xml::parse_fragment(&item.payload).await?;
    Some(
        Element::new("item", ns)
            .with_attr("id", item.id.clone())
            .with_child(payload),
    )
}

/// The refusal of a read (or subscription) the node's access model does not allow (§6.1.3).
pub(super) fn access_error(access: form::AccessModel) -> StanzaError {
    match access {
        form::AccessModel::Presence => {
            pubsub_error("auth", "not-authorized", "presence-subscription-required")
        }
        form::AccessModel::Roster => pubsub_error("auth", "not-authorized", "not-in-roster-group"),
        _ => pubsub_error("cancel", "not-allowed", "closed-node"),
    }
}

pub(super) fn node_attr(el: &Element) -> Result<&str, StanzaError> {
    match el.attr("node") {
        Some(n) if !n.is_empty() => Ok(n),
        _ => Err(pubsub_error("modify", "bad-request", "nodeid-required")),
    }
}

/// XEP-0398: a change of the avatar metadata node is copied into the vCard.
async fn avatar_follows(server: &std::sync::Arc<crate::server::Server>, owner: &str, node: &str) {
    use crate::modules::avatar_conversion::{metadata_changed, METADATA_NODE};
    if node == METADATA_NODE {
        metadata_changed(server, owner).await;
    }
}

pub(crate) async fn handle(config: &PepConfig, req: IqRequest<'_>) -> IqResult {
    let server = req.server;
    let owner = match (&req.to.local, &req.from.local) {
        (Some(l), _) => l.clone(),
        (None, Some(l)) => l.clone(),
        _ => return Err(StanzaError::bad_request()),
    };
    let Some(op) = req.payload.first_element() else {
        return Err(StanzaError::bad_request().with_text("an empty pubsub request"));
    };
    let for_oneself =
        req.payload.ns == NS && matches!(op.name.as_str(), "subscribe" | "unsubscribe");
    if !req.to_self() && (req.payload.ns == NS_OWNER || (req.is_set() && !for_oneself)) {
        // Only the owner changes an account's nodes or sees their subscribers; others may
        // only read and subscribe.
        return Err(StanzaError::forbidden());
    }
    let limits = Limits {
        nodes_per_account: config.nodes_per_account,
    };
    let max = config.items_per_node;
    match (req.payload.ns.as_str(), op.name.as_str(), req.is_set()) {
        (NS, "publish", true) => publish(config, &req, &owner, op, limits).await,
        (NS, "subscribe" | "unsubscribe", true) => {
            subscriptions::subscribe(config, &req, &owner, op).await
        }
        (NS, "subscriptions" | "affiliations", false) => {
            subscriptions::own_lists(&req, &owner, op).await
        }
        (NS_OWNER, "subscriptions" | "affiliations", _) => {
            subscriptions::manage(config, &req, &owner, op).await
        }
        (NS, "create", true) => {
            let node = node_attr(op)?.to_string();
            let settings = match req
                .payload
                .child("configure", NS)
                .and_then(|c| c.first_element())
            {
                Some(x) => form::parse(x, form::NODE_CONFIG, max).map_err(form_error)?,
                None => Vec::new(),
            };
            if store::config(&server.storage, &owner, &node)
                .await
                .map_err(internal)?
                .is_some()
            {
                return Err(StanzaError::new("cancel", "conflict"));
            }
            store::set_config(&server.storage, &owner, &node, new_node_config(&settings))
                .await
                .map_err(internal)?;
            Ok(None)
        }
        (NS, "retract", true) => {
            let node = node_attr(op)?.to_string();
            let items: Vec<&Element> = op.elements().filter(|e| e.is("item", NS)).collect();
            let [item] = items.as_slice() else {
                return Err(pubsub_error("modify", "bad-request", "item-required"));
            };
            let Some(id) = item.attr("id").filter(|i| !i.is_empty()) else {
                return Err(pubsub_error("modify", "bad-request", "item-required"));
            };
            let Some(config) = store::config(&server.storage, &owner, &node)
                .await
                .map_err(internal)?
            else {
                return Err(StanzaError::item_not_found());
            };
            match store::retract(&server.storage, &owner, &node, id)
                .await
                .map_err(internal)?
            {
                Some(true) => {}
                _ => return Err(StanzaError::item_not_found()),
            }
            if matches!(op.attr("notify"), Some("1" | "true")) {
                let body = Element::new("items", NS_EVENT)
                    .with_attr("node", node.clone())
                    .with_child(Element::new("retract", NS_EVENT).with_attr("id", id));
                notify(server, &owner, config.access, body).await;
            }
            avatar_follows(server, &owner, &node).await;
            Ok(None)
        }
        (NS, "items", false) => {
            let node = node_attr(op)?.to_string();
            let Some(config) = store::config(&server.storage, &owner, &node)
                .await
                .map_err(internal)?
            else {
                return Err(StanzaError::item_not_found());
            };
            if !may_read(server, &owner, config.access, req.from).await {
                return Err(access_error(config.access));
            }
            let ids: Vec<String> = op
                .elements()
                .filter(|e| e.is("item", NS))
                .filter_map(|e| e.attr("id").map(str::to_string))
                .collect();
            let max_items = match op.attr("max_items") {
                None => None,
                Some(v) => Some(v.parse::<u32>().map_err(|_| {
                    StanzaError::bad_request().with_text("max_items must be a number")
                })?),
            };
            let items = store::items(&server.storage, &owner, &node, ids, max_items)
                .await
                .map_err(internal)?
                .ok_or_else(StanzaError::item_not_found)?;
            let mut out = Element::new("items", NS).with_attr("node", node);
            for item in &items {
                if let Some(el) = item_element(item, NS).await {
                    out.push_child(el);
                }
            }
            Ok(Some(Element::new("pubsub", NS).with_child(out)))
        }
        (NS_OWNER, "configure", set) => {
            let node = node_attr(op)?.to_string();
            let Some(mut current) = store::config(&server.storage, &owner, &node)
                .await
                .map_err(internal)?
            else {
                return Err(StanzaError::item_not_found());
            };
            if !set {
                let reply = Element::new("configure", NS_OWNER)
                    .with_attr("node", node)
                    .with_child(form::render(&current));
                return Ok(Some(Element::new("pubsub", NS_OWNER).with_child(reply)));
            }
            let Some(x) = op.first_element() else {
                return Err(StanzaError::bad_request().with_text("configure without a form"));
            };
            if x.attr("type") == Some("cancel") {
                return Ok(None);
            }
            for s in form::parse(x, form::NODE_CONFIG, max).map_err(form_error)? {
                s.apply(&mut current);
            }
            store::set_config(&server.storage, &owner, &node, current)
                .await
                .map_err(internal)?;
            Ok(None)
        }
        (NS_OWNER, kind @ ("delete" | "purge"), true) => {
            let node = node_attr(op)?.to_string();
            let Some(config) = store::config(&server.storage, &owner, &node)
                .await
                .map_err(internal)?
            else {
                return Err(StanzaError::item_not_found());
            };
            store::delete(&server.storage, &owner, &node, kind == "purge")
                .await
                .map_err(internal)?;
            let body = Element::new(kind, NS_EVENT).with_attr("node", node.clone());
            notify(server, &owner, config.access, body).await;
            avatar_follows(server, &owner, &node).await;
            Ok(None)
        }
        _ => Err(StanzaError::feature_not_implemented()),
    }
}

async fn publish(
    config: &PepConfig,
    req: &IqRequest<'_>,
    owner: &str,
    op: &Element,
    limits: Limits,
) -> IqResult {
    let server = req.server;
    let node = node_attr(op)?.to_string();
    let items: Vec<&Element> = op.elements().filter(|e| e.is("item", NS)).collect();
    let [item] = items.as_slice() else {
        return Err(pubsub_error("modify", "bad-request", "item-required"));
    };
    let payloads: Vec<&Element> = item.elements().collect();
    let [payload] = payloads.as_slice() else {
        return Err(pubsub_error("modify", "bad-request", "invalid-payload"));
    };
    let xml = payload.to_xml("");
    if xml.len() > config.item_bytes {
        return Err(
            pubsub_error("modify", "not-acceptable", "payload-too-big").with_text(format!(
                "an item may have at most {} bytes",
                config.item_bytes
            )),
        );
    }
    let settings: Vec<Setting> = match req
        .payload
        .child("publish-options", NS)
        .and_then(|p| p.first_element())
    {
        Some(x) => {
            form::parse(x, form::PUBLISH_OPTIONS, config.items_per_node).map_err(|e| match e {
                FormError::Bad(t) => StanzaError::bad_request().with_text(t),
                FormError::Unsupported(t) => {
                    pubsub_error("modify", "conflict", "precondition-not-met").with_text(t)
                }
            })?
        }
        None => Vec::new(),
    };
    let existing = store::config(&server.storage, owner, &node)
        .await
        .map_err(internal)?;
    if let Some(current) = &existing {
        // XEP-0060 §7.1.5: an existing node must already have the options the publisher asks.
        if let Some(s) = settings.iter().find(|s| !s.holds(current)) {
            return Err(pubsub_error("modify", "conflict", "precondition-not-met")
                .with_text(format!("the node's configuration differs: {s:?}")));
        }
    }
    let id = item
        .attr("id")
        .filter(|i| !i.is_empty())
        .map(str::to_string)
        .unwrap_or_else(|| crate::stanza::random_id(12));
    let stored = Item {
        id: id.clone(),
        payload: xml,
    };
    let create = new_node_config(&settings);
    let access = existing.map_or(create.access, |c| c.access);
    match store::publish(
        &server.storage,
        owner,
        &node,
        create,
        stored.clone(),
        limits,
    )
    .await
    .map_err(internal)?
    {
        Published::Stored => {}
        Published::TooManyNodes => {
            return Err(
                StanzaError::new("wait", "resource-constraint").with_text(format!(
                    "an account may have at most {} nodes",
                    limits.nodes_per_account
                )),
            )
        }
    }
    if let Some(el) = item_element(&stored, NS_EVENT).await {
        let body = Element::new("items", NS_EVENT)
            .with_attr("node", node.clone())
            .with_child(el);
        notify(server, owner, access, body).await;
    }
    avatar_follows(server, owner, &node).await;
    let reply = Element::new("publish", NS)
        .with_attr("node", node)
        .with_child(Element::new("item", NS).with_attr("id", id));
    Ok(Some(Element::new("pubsub", NS).with_child(reply)))
}
