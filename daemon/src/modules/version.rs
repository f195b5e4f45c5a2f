//! XEP-0092: Software Version. Off by default (`[modules.version] enabled = true` turns it on):
//! telling every stranger the exact server version helps attackers more than users.

use super::{IqFuture, IqRequest, Module};
#[allow(unused_imports)]
use crate::hooks::{DiscoInfo, DiscoTarget, IqKind, IqRoute, IqTarget};
use crate::stanza::StanzaError;
use crate::xml::Element;

pub const NS: &str = "jabber:iq:version";

/// `[modules.version]`.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct VersionConfig {
    #[serde(default)]
    pub enabled: bool,
}

pub struct Version;

impl Module for Version {
    fn name(&self) -> &'static str {
        "version"
    }
    fn disco_info(
        &self,
        _server: &crate::server::Server,
        target: DiscoTarget,
        info: &mut DiscoInfo,
    ) {
        if target == DiscoTarget::Server {
            info.feature(NS);
        }
    }
    fn iqs(&self) -> &'static [IqRoute] {
        const ROUTES: &[IqRoute] = &[IqRoute::new(IqKind::Get, &[IqTarget::Server], NS)];
        ROUTES
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
