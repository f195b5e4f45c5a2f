//! XEP-0054: vcard-temp. Stored whole per account; anyone may read, only the owner may write.
//! A vCard's PHOTO is also the account's avatar: setting it goes through `avatar_conversion`
//! (XEP-0398), which publishes it to PEP and announces its hash in presence.

use super::{IqFuture, IqRequest, Module};
#[allow(unused_imports)]
use crate::hooks::{DiscoInfo, DiscoTarget, IqKind, IqRoute, IqTarget};
use crate::stanza::StanzaError;
use crate::xml::Element;
use serde::{Deserialize, Serialize};

pub const NS: &str = "vcard-temp";

/// `[modules.vcard]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct VCardConfig {
    /// Largest vCard photo (the avatar), in bytes of image. A vCard with a bigger one is
    /// refused; a PEP avatar bigger than this is not copied into the vCard.
    #[serde(default = "default_photo_bytes")]
    pub photo_bytes: usize,
}

impl Default for VCardConfig {
    fn default() -> Self {
        VCardConfig {
            photo_bytes: default_photo_bytes(),
        }
    }
}

/// Clients scale avatars to a few hundred pixels (Conversations: 192×192 JPEG, ~10–30 KiB).
fn default_photo_bytes() -> usize {
    64 * 1024
}

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
                super::avatar_conversion::store_vcard(req.server, &owner, req.payload).await?;
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
