//! XEP-0030: Service Discovery, for the server and for accounts' bare JIDs.

use super::{IqFuture, IqRequest, Module};
use crate::stanza::StanzaError;
use crate::xml::Element;

pub const INFO: &str = "http://jabber.org/protocol/disco#info";
pub const ITEMS: &str = "http://jabber.org/protocol/disco#items";

pub struct Disco;

impl Module for Disco {
    fn server_features(&self) -> &'static [&'static str] {
        &[INFO, ITEMS]
    }
    fn account_features(&self) -> &'static [&'static str] {
        &[INFO, ITEMS]
    }
    fn iq_namespaces(&self) -> &'static [&'static str] {
        &[INFO, ITEMS]
    }
    fn handle_iq<'a>(&'a self, req: IqRequest<'a>) -> IqFuture<'a> {
        Box::pin(async move {
            if req.iq.attr("type") != Some("get") {
                return Err(StanzaError::bad_request());
            }
            let node = req.payload.attr("node");
            if node.is_some() {
                return Err(StanzaError::item_not_found());
            }
            if req.payload.ns == ITEMS {
                let mut q = Element::new("query", ITEMS);
                if req.to.local.is_none() {
                    for svc in [
                        &req.server.config.services.muc,
                        &req.server.config.services.upload,
                    ]
                    .into_iter()
                    .flatten()
                    {
                        q.push_child(Element::new("item", ITEMS).with_attr("jid", svc.clone()));
                    }
                }
                return Ok(Some(q));
            }
            let mut q = Element::new("query", INFO);
            let features = if let Some(user) = &req.to.local {
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
                q.push_child(
                    Element::new("identity", INFO)
                        .with_attr("category", "account")
                        .with_attr("type", "registered"),
                );
                req.server.modules.account_features()
            } else {
                q.push_child(
                    Element::new("identity", INFO)
                        .with_attr("category", "server")
                        .with_attr("type", "im")
                        .with_attr("name", "Hearth"),
                );
                req.server.modules.server_features()
            };
            for f in features {
                q.push_child(Element::new("feature", INFO).with_attr("var", f));
            }
            Ok(Some(q))
        })
    }
}
