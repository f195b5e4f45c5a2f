//! XEP-0199: XMPP Ping. The server answers pings addressed to it (and to a user's bare JID on
//! the user's behalf); clients use it to check the connection after a network change.

use super::{IqFuture, IqRequest, Module};

pub const NS: &str = "urn:xmpp:ping";

pub struct Ping;

impl Module for Ping {
    fn server_features(&self) -> &'static [&'static str] {
        &[NS]
    }
    fn iq_namespaces(&self) -> &'static [&'static str] {
        &[NS]
    }
    fn handle_iq<'a>(&'a self, req: IqRequest<'a>) -> IqFuture<'a> {
        Box::pin(async move {
            if req.iq.attr("type") != Some("get") {
                return Err(crate::stanza::StanzaError::bad_request());
            }
            Ok(None)
        })
    }
}
