//! XEP-0054: vcard-temp. Stored whole per account; anyone may read, only the owner may write.

use super::{IqFuture, IqRequest, Module};
#[allow(unused_imports)]
use crate::hooks::{DiscoInfo, DiscoTarget, IqKind, IqRoute, IqTarget};
use crate::stanza::StanzaError;
use crate::xml::Element;

pub const NS: &str = "vcard-temp";

pub struct VCard;

impl Module for VCard {
    fn name(&self) -> &'static str {
        "vcard"
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
        const ROUTES: &[IqRoute] = &[IqRoute::new(IqKind::Both, crate::hooks::ANY_TARGET, NS)];
        ROUTES
    }
    fn handle_iq<'a>(&'a self, req: IqRequest<'a>) -> IqFuture<'a> {
        Box::pin(async move {
            let storage = &req.server.storage;
            let owner = match &req.to.local {
                Some(l) => l.clone(),
                None if req.is_set() => req
                    .from
                    .local
                    .clone()
                    .ok_or_else(StanzaError::bad_request)?,
                // vCard of the server itself: we have none to give.
                None => return Ok(Some(Element::new("vCard", NS))),
            };
            if req.is_set() {
                if !req.to_self() {
                    return Err(StanzaError::forbidden());
                }
                storage
                    .set_vcard(&owner, req.payload.to_xml(""))
                    .await
                    .map_err(|_| StanzaError::internal())?;
                return Ok(None);
            }
            match storage
                .vcard(&owner)
                .await
                .map_err(|_| StanzaError::internal())?
            {
                Some(xml) => Ok(Some(
                    crate::xml::parse_fragment(&xml)
                        .await
                        .unwrap_or_else(|| Element::new("vCard", NS)),
                )),
                None if req.to_self() => Ok(Some(Element::new("vCard", NS))),
                None => Err(StanzaError::item_not_found()),
            }
        })
    }
}
