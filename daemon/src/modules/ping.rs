//! XEP-0199: XMPP Ping. The server answers pings addressed to it (and to a user's bare JID on
//! the user's behalf); clients use it to check the connection after a network change.

use super::{IqFuture, IqRequest, Module};
use crate::hooks::{BoxFut, DiscoInfo, DiscoTarget, Flow, Hook, IqKind, IqRoute, SessionEvent};
use crate::xml::{ns, Element};

pub const NS: &str = "urn:xmpp:ping";

pub struct Ping;

impl Module for Ping {
    fn hooks(&self) -> &'static [(Hook, i16)] {
        &[(Hook::SessionIdle, 0)]
    }
    /// The server's keepalive: an idle client is pinged through its session's write path.
    fn on_session<'a>(
        &'a self,
        server: &'a std::sync::Arc<crate::server::Server>,
        _hook: Hook,
        ev: &'a mut SessionEvent<'_>,
    ) -> BoxFut<'a, Flow> {
        Box::pin(async move {
            let ping = Element::new("iq", ns::CLIENT)
                .with_attr("type", "get")
                .with_attr("id", format!("ping-{}", crate::stanza::random_id(6)))
                .with_attr("from", server.domain().to_string())
                .with_attr("to", ev.session.jid.to_string())
                .with_child(Element::new("ping", NS));
            let _ = ev.local.send(ping).await;
            Flow::Continue
        })
    }
    fn name(&self) -> &'static str {
        "ping"
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
        const ROUTES: &[IqRoute] = &[IqRoute::new(IqKind::Get, crate::hooks::ANY_TARGET, NS)];
        ROUTES
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
