//! XEP-0030: Service Discovery, for the server and for accounts' bare JIDs.

use super::{IqFuture, IqRequest, Module};
use crate::hooks::{DiscoInfo, DiscoTarget, Identity, IqKind, IqRoute};
use crate::server::Server;
use crate::stanza::StanzaError;
use crate::xml::Element;

pub const INFO: &str = "http://jabber.org/protocol/disco#info";
pub const ITEMS: &str = "http://jabber.org/protocol/disco#items";

pub struct Disco;

impl Module for Disco {
    fn name(&self) -> &'static str {
        "disco"
    }
    fn disco_info(&self, _server: &Server, target: DiscoTarget, info: &mut DiscoInfo) {
        info.identities.push(match target {
            DiscoTarget::Server => Identity {
                category: "server",
                kind: "im",
                name: Some("Hearth"),
            },
            DiscoTarget::Account => Identity {
                category: "account",
                kind: "registered",
                name: None,
            },
        });
        info.feature(INFO);
        info.feature(ITEMS);
    }
    fn iqs(&self) -> &'static [IqRoute] {
        const ROUTES: &[IqRoute] = &[
            IqRoute::new(IqKind::Get, crate::hooks::ANY_TARGET, INFO),
            IqRoute::new(IqKind::Get, crate::hooks::ANY_TARGET, ITEMS),
        ];
        ROUTES
    }
    fn handle_iq<'a>(&'a self, req: IqRequest<'a>) -> IqFuture<'a> {
        Box::pin(async move {
            let node = req.payload.attr("node");
            if req.payload.ns == ITEMS {
                if node.is_some() {
                    return Err(StanzaError::item_not_found());
                }
                let mut q = Element::new("query", ITEMS);
                if req.to.local.is_none() {
                    // The services hosted on domains of their own, and those the config names.
                    let mut items = req.server.domains.hosted();
                    for svc in [&req.server.config.services.muc].into_iter().flatten() {
                        if !items.iter().any(|d| d.eq_ignore_ascii_case(svc)) {
                            items.push(svc.clone());
                        }
                    }
                    for jid in items {
                        q.push_child(Element::new("item", ITEMS).with_attr("jid", jid));
                    }
                }
                return Ok(Some(q));
            }
            let target = if let Some(user) = &req.to.local {
                // Strangers learn nothing about whether an account exists (RFC 6121 §8.5.1).
                let own = req.to.bare() == req.from.bare();
                if !own
                    && !req
                        .server
                        .storage
                        .user_exists(user)
                        .await
                        .map_err(|_| StanzaError::internal())?
                {
                    return Err(StanzaError::service_unavailable());
                }
                DiscoTarget::Account
            } else {
                DiscoTarget::Server
            };
            let info = req
                .server
                .modules
                .disco_info(req.server, target, node)
                .ok_or_else(StanzaError::item_not_found)?;
            let mut q = info_element(&info);
            if let Some(node) = node {
                q.set_attr("node", node);
            }
            Ok(Some(q))
        })
    }
}

/// The `<query xmlns='…disco#info'/>` for assembled disco information.
pub fn info_element(info: &DiscoInfo) -> Element {
    let mut q = Element::new("query", INFO);
    for id in &info.identities {
        let mut e = Element::new("identity", INFO)
            .with_attr("category", id.category)
            .with_attr("type", id.kind);
        if let Some(name) = id.name {
            e.set_attr("name", name);
        }
        q.push_child(e);
    }
    for f in &info.features {
        q.push_child(Element::new("feature", INFO).with_attr("var", *f));
    }
    for form in &info.forms {
        q.push_child(form.clone());
    }
    q
}
