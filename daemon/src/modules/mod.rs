//! Modules: one XEP (or RFC section) per file, plugged into the core through the typed hooks of
//! `crate::hooks`. The core fires events and routes IQs, nonzas and disco requests through the
//! registry here; it knows no module by name. Adding a XEP means one new file and one line in
//! `Modules::new`. `docs/architecture.md` ("Writing a module") describes the hooks.

pub mod avatar_conversion;
pub mod blocking;
pub mod bookmarks;
pub mod caps;
pub mod carbons;
pub mod client_state;
pub mod component;
pub mod disco;
pub mod external_services;
pub mod local_only;
pub mod mam;
pub mod muc;
pub mod offline;
pub mod pep;
pub mod ping;
pub mod presence;
pub mod private_storage;
pub mod push;
pub mod register;
pub mod roster;
pub mod session;
pub mod stream_management;
pub mod upload;
pub mod vcard;
pub mod version;

use crate::c2s::outbound::SessionLocal;
use crate::config::Config;
use crate::hooks::{
    BoxFut, CloseReason, DiscoInfo, DiscoTarget, Extensions, FeaturePhase, Flow, Hook, IqKind,
    IqRoute, IqTarget, SessionEvent, SessionFlag, StanzaEvent,
};
use crate::jid::Jid;
use crate::server::Server;
use crate::sessions::SessionHandle;
use crate::stanza::StanzaError;
use crate::xml::Element;
use std::collections::HashMap;
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
    pub target: IqTarget,
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

/// An IQ on a stream that has not logged in yet.
pub struct PreAuthIq<'a> {
    pub server: &'a Arc<Server>,
    pub iq: &'a Element,
    pub payload: &'a Element,
    /// The client's IP address, for rate limits.
    pub ip: &'a str,
    /// State kept for the rest of this negotiation (e.g. an invite token already checked).
    pub stream: &'a mut Extensions,
}

pub type IqResult = Result<Option<Element>, StanzaError>;
pub type IqFuture<'a> = BoxFut<'a, IqResult>;
/// A nonza handler's answer: `Err` closes the stream with that condition and text.
pub type NonzaResult = Result<(), (&'static str, String)>;

/// A module's answer to a nonza before binding.
pub enum Unbound {
    /// Write this and go on negotiating.
    Reply(Element),
    /// Hand this connection to an existing session (stream resumption); if that session is
    /// gone by then, write `if_gone` and close.
    HandOver {
        to: crate::c2s::session::LinkDoor,
        if_gone: Element,
    },
}

pub trait Module: std::any::Any + Send + Sync {
    /// Short name: the `[modules.NAME]` config section and the key of its migrations.
    fn name(&self) -> &'static str;
    /// The hooks this module handles, each with a priority (higher runs first).
    fn hooks(&self) -> &'static [(Hook, i16)] {
        &[]
    }
    fn on_stanza<'a>(
        &'a self,
        _server: &'a Arc<Server>,
        _hook: Hook,
        _ev: &'a mut StanzaEvent<'_>,
    ) -> BoxFut<'a, Flow> {
        Box::pin(async { Flow::Continue })
    }
    fn on_session<'a>(
        &'a self,
        _server: &'a Arc<Server>,
        _hook: Hook,
        _ev: &'a mut SessionEvent<'_>,
    ) -> BoxFut<'a, Flow> {
        Box::pin(async { Flow::Continue })
    }
    /// Adds this module's stream features for a negotiation phase.
    fn stream_features(&self, _server: &Server, _phase: FeaturePhase, _out: &mut Vec<Element>) {}
    /// Top-level elements other than stanzas this module handles, by (name, namespace).
    fn nonzas(&self) -> &'static [(&'static str, &'static str)] {
        &[]
    }
    fn on_nonza<'a>(
        &'a self,
        _server: &'a Arc<Server>,
        _session: &'a SessionHandle,
        _local: &'a mut SessionLocal,
        _nonza: &'a Element,
    ) -> BoxFut<'a, NonzaResult> {
        Box::pin(async { Ok(()) })
    }
    /// A nonza of this module sent after login but before a resource is bound (`account` is
    /// the bare JID that logged in): `None` means it is not allowed there (stream error).
    fn on_unbound_nonza<'a>(
        &'a self,
        _server: &'a Arc<Server>,
        _account: &'a Jid,
        _nonza: &'a Element,
    ) -> BoxFut<'a, Option<Unbound>> {
        Box::pin(async { None })
    }
    /// The IQs this module answers, by type, target and payload namespace.
    fn iqs(&self) -> &'static [IqRoute] {
        &[]
    }
    fn handle_iq<'a>(&'a self, _req: IqRequest<'a>) -> IqFuture<'a> {
        Box::pin(async { Err(StanzaError::service_unavailable()) })
    }
    /// IQs routed with `IqTarget::BeforeLogin`; the answer is written to the stream as is.
    fn handle_preauth_iq<'a>(&'a self, req: PreAuthIq<'a>) -> BoxFut<'a, Element> {
        let reply = crate::stanza::error_reply(req.iq, &StanzaError::service_unavailable());
        Box::pin(async move { reply.unwrap_or_else(|| Element::new("iq", crate::xml::ns::CLIENT)) })
    }
    /// Adds identities, features and forms to the disco#info of the server or of an account.
    fn disco_info(&self, _server: &Server, _target: DiscoTarget, _info: &mut DiscoInfo) {}
    /// Answers disco#info for a node this module owns (returns false for other nodes).
    fn disco_node(
        &self,
        _server: &Server,
        _target: DiscoTarget,
        _node: &str,
        _info: &mut DiscoInfo,
    ) -> bool {
        false
    }
    /// SQL migrations for this module's own tables, applied in order once each (the
    /// `module_versions` table remembers how far each module got).
    fn migrations(&self) -> &'static [&'static str] {
        &[]
    }
    /// Bits of the session flags word this module owns.
    fn session_flags(&self) -> &'static [SessionFlag] {
        &[]
    }
    /// Called once when the server is assembled (inside the runtime, tables migrated): a module
    /// starts its periodic jobs here, holding a `Weak<Server>` and stopping at shutdown.
    fn start(&self, _server: &Arc<Server>) {}
}

pub struct Modules {
    list: Vec<Arc<dyn Module>>,
    /// Per hook, module indexes by falling priority.
    hooks: HashMap<Hook, Vec<usize>>,
    iqs: HashMap<&'static str, Vec<(IqRoute, usize)>>,
    nonzas: HashMap<(&'static str, &'static str), usize>,
}

impl Modules {
    /// The standard set of modules, as the configuration enables them.
    pub fn new(config: &Config) -> Result<Modules, String> {
        Modules::from_list(Modules::standard(config))
    }

    /// The modules `new` registers, in order.
    pub fn standard(config: &Config) -> Vec<Arc<dyn Module>> {
        let mut list: Vec<Arc<dyn Module>> = vec![
            Arc::new(disco::Disco),
            Arc::new(caps::Caps::default()),
            Arc::new(ping::Ping),
            Arc::new(roster::Roster),
            Arc::new(presence::Presence),
            Arc::new(vcard::VCard),
            Arc::new(register::Register),
            Arc::new(offline::Offline::new(&config.modules.offline)),
            Arc::new(blocking::Blocking::default()),
            Arc::new(local_only::LocalOnly),
            Arc::new(carbons::Carbons),
            Arc::new(client_state::ClientState::new(&config.modules.csi)),
            Arc::new(mam::Archive::new(&config.modules.mam)),
            Arc::new(pep::Pep::new(&config.modules.pep)),
            Arc::new(muc::Muc::new(&config.modules.muc)),
            Arc::new(private_storage::PrivateStorage),
            Arc::new(push::Push::new(&config.modules.push)),
            Arc::new(bookmarks::Bookmarks),
            Arc::new(avatar_conversion::AvatarConversion),
            Arc::new(session::LegacySession),
            Arc::new(stream_management::StreamManagement::new(
                &config.modules.stream_management,
            )),
            Arc::new(component::Components::new(&config.modules.component)),
        ];
        if config.modules.upload.enabled {
            list.push(Arc::new(upload::Upload::new(&config.modules.upload)));
        }
        if config.modules.version.enabled {
            list.push(Arc::new(version::Version));
        }
        list.extend(
            external_services::ExternalServices::new(&config.modules.external_services)
                .map(|m| Arc::new(m) as Arc<dyn Module>),
        );
        list
    }

    /// A registry of exactly these modules (tests use it to plug in their own).
    pub fn from_list(list: Vec<Arc<dyn Module>>) -> Result<Modules, String> {
        let mut hooks: HashMap<Hook, Vec<(i16, usize)>> = HashMap::new();
        let mut iqs: HashMap<&'static str, Vec<(IqRoute, usize)>> = HashMap::new();
        let mut nonzas = HashMap::new();
        let mut flags: u32 = 0;
        for (i, m) in list.iter().enumerate() {
            for (hook, prio) in m.hooks() {
                hooks.entry(*hook).or_default().push((*prio, i));
            }
            for route in m.iqs() {
                let same = iqs.entry(route.ns).or_default();
                for (other, j) in same.iter() {
                    let kinds_meet = route.kind == other.kind
                        || route.kind == IqKind::Both
                        || other.kind == IqKind::Both;
                    if kinds_meet && route.targets.iter().any(|t| other.targets.contains(t)) {
                        return Err(format!(
                            "modules {} and {} both answer IQs in {}",
                            list[*j].name(),
                            m.name(),
                            route.ns
                        ));
                    }
                }
                same.push((*route, i));
            }
            for key in m.nonzas() {
                if let Some(j) = nonzas.insert(*key, i) {
                    return Err(format!(
                        "modules {} and {} both handle <{}/> in {}",
                        list[j].name(),
                        m.name(),
                        key.0,
                        key.1
                    ));
                }
            }
            for f in m.session_flags() {
                if flags & f.0 != 0 {
                    return Err(format!(
                        "module {} claims session flag {:#x}, which another module owns",
                        m.name(),
                        f.0
                    ));
                }
                flags |= f.0;
            }
        }
        let hooks = hooks
            .into_iter()
            .map(|(h, mut v)| {
                // Stable: equal priorities run in registration order.
                v.sort_by_key(|(p, _)| std::cmp::Reverse(*p));
                (h, v.into_iter().map(|(_, i)| i).collect())
            })
            .collect();
        Ok(Modules {
            list,
            hooks,
            iqs,
            nonzas,
        })
    }

    /// Every module's migrations, by module name (modules without tables left out).
    pub fn migrations(&self) -> Vec<(&'static str, &'static [&'static str])> {
        self.list
            .iter()
            .map(|m| (m.name(), m.migrations()))
            .filter(|(_, sql)| !sql.is_empty())
            .collect()
    }

    pub fn all(&self) -> &[Arc<dyn Module>] {
        &self.list
    }

    /// The registered module of type `T`, for a module that offers others a function (the
    /// group chat service asks `push` to notify a mention).
    pub fn find<T: Module>(&self) -> Option<&T> {
        self.list
            .iter()
            .find_map(|m| (&**m as &dyn std::any::Any).downcast_ref::<T>())
    }

    /// Runs a stanza hook: handlers by priority until one answers other than `Continue`.
    pub async fn stanza_event(
        &self,
        server: &Arc<Server>,
        hook: Hook,
        ev: &mut StanzaEvent<'_>,
    ) -> Flow {
        let Some(handlers) = self.hooks.get(&hook) else {
            return Flow::Continue;
        };
        for &i in handlers {
            match self.list[i].on_stanza(server, hook, ev).await {
                Flow::Continue => {}
                other => return other,
            }
        }
        Flow::Continue
    }

    /// Runs a session hook.
    pub async fn session_event(
        &self,
        server: &Arc<Server>,
        hook: Hook,
        ev: &mut SessionEvent<'_>,
    ) -> Flow {
        let Some(handlers) = self.hooks.get(&hook) else {
            return Flow::Continue;
        };
        for &i in handlers {
            match self.list[i].on_session(server, hook, ev).await {
                Flow::Continue => {}
                other => return other,
            }
        }
        Flow::Continue
    }

    /// Ends a session for good: out of the table, then `SessionClosed`. The session's task
    /// calls it when the stream ends, or when a session kept through `SessionClosing` was not
    /// taken over in time.
    pub async fn session_closed(
        &self,
        server: &Arc<Server>,
        session: &SessionHandle,
        local: &mut SessionLocal,
        reason: CloseReason,
    ) {
        server.sessions.unbind(&session.jid, session.id);
        let mut ev = SessionEvent {
            session,
            local,
            reason: Some(reason),
        };
        self.session_event(server, Hook::SessionClosed, &mut ev)
            .await;
    }

    pub fn stream_features(&self, server: &Server, phase: FeaturePhase) -> Vec<Element> {
        let mut out = Vec::new();
        for m in &self.list {
            m.stream_features(server, phase, &mut out);
        }
        out
    }

    pub fn nonza_handler(&self, name: &str, ns: &str) -> Option<&Arc<dyn Module>> {
        // The map is keyed by static strings; find by value without allocating.
        self.nonzas
            .iter()
            .find(|((n, s), _)| *n == name && *s == ns)
            .map(|(_, &i)| &self.list[i])
    }

    /// The module answering an IQ of this type (`get`/`set`) to this target and namespace.
    pub fn iq_handler(&self, kind: &str, target: IqTarget, ns: &str) -> Option<&Arc<dyn Module>> {
        let kind = match kind {
            "get" => IqKind::Get,
            "set" => IqKind::Set,
            _ => return None,
        };
        self.iqs.get(ns)?.iter().find_map(|(route, i)| {
            let kind_ok = route.kind == kind || route.kind == IqKind::Both;
            (kind_ok && route.targets.contains(&target)).then(|| &self.list[*i])
        })
    }

    /// disco#info of the server or an account, or of one of their nodes; `None` for a node
    /// nobody owns.
    pub fn disco_info(
        &self,
        server: &Server,
        target: DiscoTarget,
        node: Option<&str>,
    ) -> Option<DiscoInfo> {
        let mut info = DiscoInfo::default();
        match node {
            None => {
                for m in &self.list {
                    m.disco_info(server, target, &mut info);
                }
            }
            Some(node) => {
                if !self
                    .list
                    .iter()
                    .any(|m| m.disco_node(server, target, node, &mut info))
                {
                    return None;
                }
            }
        }
        info.normalise();
        Some(info)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Claims(&'static str, &'static [IqRoute], &'static [SessionFlag]);
    impl Module for Claims {
        fn name(&self) -> &'static str {
            self.0
        }
        fn iqs(&self) -> &'static [IqRoute] {
            self.1
        }
        fn session_flags(&self) -> &'static [SessionFlag] {
            self.2
        }
    }

    const GET_SERVER: &[IqRoute] = &[IqRoute::new(IqKind::Get, &[IqTarget::Server], "urn:t")];
    const SET_SERVER: &[IqRoute] = &[IqRoute::new(IqKind::Set, &[IqTarget::Server], "urn:t")];
    const BOTH_SELF: &[IqRoute] = &[IqRoute::new(IqKind::Both, &[IqTarget::OwnAccount], "urn:t")];

    #[test]
    fn iq_routes_split_by_type_and_target_and_clashes_are_refused() {
        let m = Modules::from_list(vec![
            Arc::new(Claims("a", GET_SERVER, &[])),
            Arc::new(Claims("b", SET_SERVER, &[])),
            Arc::new(Claims("c", BOTH_SELF, &[])),
        ])
        .unwrap();
        assert_eq!(
            m.iq_handler("get", IqTarget::Server, "urn:t")
                .unwrap()
                .name(),
            "a"
        );
        assert_eq!(
            m.iq_handler("set", IqTarget::Server, "urn:t")
                .unwrap()
                .name(),
            "b"
        );
        assert_eq!(
            m.iq_handler("set", IqTarget::OwnAccount, "urn:t")
                .unwrap()
                .name(),
            "c"
        );
        assert!(m
            .iq_handler("get", IqTarget::OtherAccount, "urn:t")
            .is_none());
        assert!(m.iq_handler("result", IqTarget::Server, "urn:t").is_none());
        let clash = Modules::from_list(vec![
            Arc::new(Claims("a", GET_SERVER, &[])),
            Arc::new(Claims("x", GET_SERVER, &[])),
        ]);
        assert!(clash.err().unwrap().contains("a and x"));
    }

    #[test]
    fn a_session_flag_has_one_owner() {
        let clash = Modules::from_list(vec![
            Arc::new(Claims("a", &[], &[SessionFlag(1)])),
            Arc::new(Claims("b", &[], &[SessionFlag(1)])),
        ]);
        assert!(clash.is_err());
    }

    #[test]
    fn the_standard_set_has_no_clashes() {
        let config = Config::parse(
            "domain = \"example.test\"\n[tls]\ncert = \"/c\"\nkey = \"/k\"\n[modules.version]\nenabled = true\n",
            "test",
        )
        .unwrap();
        let m = Modules::new(&config).unwrap();
        let mut names: Vec<_> = m.all().iter().map(|m| m.name()).collect();
        let n = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), n, "module names are unique");
    }
}
