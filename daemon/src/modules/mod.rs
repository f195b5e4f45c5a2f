//! Modules: one XEP (or RFC section) per file. The core routes IQs by payload namespace to the
//! module that registered it and asks modules for their disco features; it knows none of them by
//! name. Adding a XEP means one new file and one line in `Modules::new`.

pub mod disco;
pub mod offline;
pub mod ping;
pub mod presence;
pub mod register;
pub mod roster;
pub mod session;
pub mod vcard;
pub mod version;

use crate::config::Config;
use crate::jid::Jid;
use crate::router::SessionHandle;
use crate::server::Server;
use crate::stanza::StanzaError;
use crate::xml::Element;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// An IQ addressed to the server or to an account's bare JID, from an authenticated user.
pub struct IqRequest<'a> {
    pub server: &'a Arc<Server>,
    /// The sender's full JID (stamped by the server, never trusted from the client).
    pub from: &'a Jid,
    /// The addressee: the server's domain or a bare JID.
    pub to: &'a Jid,
    pub iq: &'a Element,
    /// The payload (the IQ's one child).
    pub payload: &'a Element,
    /// The sender's own session, when it is local.
    pub session: Option<&'a SessionHandle>,
}

impl IqRequest<'_> {
    pub fn is_set(&self) -> bool {
        self.iq.attr("type") == Some("set")
    }
    /// Addressed to the sender's own account (or to the server on its behalf).
    pub fn to_self(&self) -> bool {
        self.to.local.is_none() || self.to.bare() == self.from.bare()
    }
}

pub type IqResult = Result<Option<Element>, StanzaError>;
pub type IqFuture<'a> = Pin<Box<dyn Future<Output = IqResult> + Send + 'a>>;

pub trait Module: Send + Sync {
    /// disco#info features of the server.
    fn server_features(&self) -> &'static [&'static str] {
        &[]
    }
    /// disco#info features of every account's bare JID.
    fn account_features(&self) -> &'static [&'static str] {
        &[]
    }
    /// IQ payload namespaces this module answers.
    fn iq_namespaces(&self) -> &'static [&'static str] {
        &[]
    }
    fn handle_iq<'a>(&'a self, _req: IqRequest<'a>) -> IqFuture<'a> {
        Box::pin(async { Err(StanzaError::service_unavailable()) })
    }
}

pub struct Modules {
    list: Vec<Arc<dyn Module>>,
    by_ns: HashMap<&'static str, usize>,
}

impl Modules {
    pub fn new(config: &Config) -> Modules {
        let mut list: Vec<Arc<dyn Module>> = vec![
            Arc::new(disco::Disco),
            Arc::new(ping::Ping),
            Arc::new(roster::Roster),
            Arc::new(vcard::VCard),
            Arc::new(register::Register),
            Arc::new(offline::Offline),
            Arc::new(session::LegacySession),
        ];
        if config.modules.version {
            list.push(Arc::new(version::Version));
        }
        let mut by_ns = HashMap::new();
        for (i, m) in list.iter().enumerate() {
            for ns in m.iq_namespaces() {
                by_ns.insert(*ns, i);
            }
        }
        Modules { list, by_ns }
    }

    pub fn server_features(&self) -> Vec<&'static str> {
        let mut f: Vec<_> = self
            .list
            .iter()
            .flat_map(|m| m.server_features().iter().copied())
            .collect();
        f.sort_unstable();
        f.dedup();
        f
    }

    pub fn account_features(&self) -> Vec<&'static str> {
        let mut f: Vec<_> = self
            .list
            .iter()
            .flat_map(|m| m.account_features().iter().copied())
            .collect();
        f.sort_unstable();
        f.dedup();
        f
    }

    /// The module for an IQ payload namespace.
    pub fn for_namespace(&self, ns: &str) -> Option<Arc<dyn Module>> {
        self.by_ns.get(ns).map(|&i| self.list[i].clone())
    }
}
