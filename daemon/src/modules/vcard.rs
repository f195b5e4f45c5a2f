//! XEP-0054: vcard-temp. Stored whole per account; anyone may read, only the owner may write.

use super::{IqFuture, IqRequest, Module};
use crate::stanza::StanzaError;
use crate::xml::{Element, XmlEvent, XmlLimits, XmlReader};

pub const NS: &str = "vcard-temp";

pub struct VCard;

impl Module for VCard {
    fn server_features(&self) -> &'static [&'static str] {
        &[NS]
    }
    fn iq_namespaces(&self) -> &'static [&'static str] {
        &[NS]
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
                    parse_stored(&xml)
                        .await
                        .unwrap_or_else(|| Element::new("vCard", NS)),
                )),
                None if req.to_self() => Ok(Some(Element::new("vCard", NS))),
                None => Err(StanzaError::item_not_found()),
            }
        })
    }
}

/// Parses a stored vCard back into a tree (it was written by us from a parsed stanza).
async fn parse_stored(xml: &str) -> Option<Element> {
    let doc = format!("<stream:stream xmlns:stream='http://etherx.jabber.org/streams' xmlns='jabber:client'>{xml}");
    let limits = XmlLimits {
        max_stanza_bytes: 1 << 20,
        max_depth: 64,
        max_attributes: 64,
        max_name_bytes: 256,
    };
    let mut reader = XmlReader::new(doc.as_bytes(), limits);
    match (reader.next().await, reader.next().await) {
        (Ok(XmlEvent::StreamStart(_)), Ok(XmlEvent::Stanza(e))) => Some(e),
        _ => None,
    }
}
