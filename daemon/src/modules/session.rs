//! RFC 3921 session establishment, kept as a no-op for old clients (RFC 6121 drops it; we
//! advertise it as optional so such clients still log in).

use super::{IqFuture, IqRequest, Module};
use crate::xml::ns;

pub struct LegacySession;

impl Module for LegacySession {
    fn iq_namespaces(&self) -> &'static [&'static str] {
        &[ns::SESSION]
    }
    fn handle_iq<'a>(&'a self, _req: IqRequest<'a>) -> IqFuture<'a> {
        Box::pin(async { Ok(None) })
    }
}
