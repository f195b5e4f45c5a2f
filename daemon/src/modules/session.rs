//! RFC 3921 session establishment, kept as a no-op for old clients (RFC 6121 drops it; we
//! advertise it as optional so such clients still log in).

use super::{IqFuture, IqRequest, Module};
use crate::hooks::{FeaturePhase, IqKind, IqRoute};
use crate::server::Server;
use crate::xml::{ns, Element};

pub struct LegacySession;

impl Module for LegacySession {
    fn name(&self) -> &'static str {
        "session"
    }
    fn iqs(&self) -> &'static [IqRoute] {
        const ROUTES: &[IqRoute] = &[IqRoute::new(
            IqKind::Set,
            crate::hooks::SELF_OR_SERVER,
            ns::SESSION,
        )];
        ROUTES
    }
    fn stream_features(&self, _server: &Server, phase: FeaturePhase, out: &mut Vec<Element>) {
        if phase == FeaturePhase::AfterAuth {
            out.push(
                Element::new("session", ns::SESSION)
                    .with_child(Element::new("optional", ns::SESSION)),
            );
        }
    }
    fn handle_iq<'a>(&'a self, _req: IqRequest<'a>) -> IqFuture<'a> {
        Box::pin(async { Ok(None) })
    }
}
