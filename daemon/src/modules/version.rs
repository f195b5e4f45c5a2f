//! XEP-0092: Software Version. Off by default (`[modules] version = true` turns it on): telling
//! every stranger the exact server version helps attackers more than users.

use super::{IqFuture, IqRequest, Module};
use crate::stanza::StanzaError;
use crate::xml::Element;

pub const NS: &str = "jabber:iq:version";

pub struct Version;

impl Module for Version {
    fn server_features(&self) -> &'static [&'static str] {
        &[NS]
    }
    fn iq_namespaces(&self) -> &'static [&'static str] {
        &[NS]
    }
    fn handle_iq<'a>(&'a self, req: IqRequest<'a>) -> IqFuture<'a> {
        Box::pin(async move {
            if req.iq.attr("type") != Some("get") || req.to.local.is_some() {
                return Err(StanzaError::service_unavailable());
            }
            Ok(Some(
                Element::new("query", NS)
                    .with_child(Element::new("name", NS).with_text("Hearth"))
                    .with_child(Element::new("version", NS).with_text(env!("CARGO_PKG_VERSION"))),
            ))
        })
    }
}
