//! The seam between the XMPP core and the modules: typed events, in the spirit of Prosody's
//! `pre-message/bare`, `message/full`, `resource-bind`, `pre-session-close`, `stream-features`
//! and `iq-set/self/NS`, but checked by the compiler.
//!
//! A module names the hooks it wants and a priority for each (`Module::hooks`); the registry
//! runs the handlers of one hook from the highest priority down until one answers something
//! other than [`Flow::Continue`]. The core never names a module: it fires events and acts on the
//! answer. `docs/architecture.md` lists every hook with the modules that use it.

use crate::c2s::outbound::SessionLocal;
use crate::jid::Jid;
use crate::sessions::SessionHandle;
use crate::stanza::StanzaError;
use crate::xml::Element;
use std::any::{Any, TypeId};
use std::future::Future;
use std::pin::Pin;

pub type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A handler's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Flow {
    /// Not mine, or I only looked: the next handler (and finally the core) carries on.
    Continue,
    /// I dealt with it completely: nobody else sees it, the core does nothing more.
    Handled,
    /// Throw it away silently (e.g. blocked, or not worth storing).
    Drop,
    /// Refuse it: the sender gets this stanza error.
    Bounce(StanzaError),
}

/// The three stanza kinds (RFC 6120 §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Message,
    Presence,
    Iq,
}

impl Kind {
    pub fn of(el: &Element) -> Option<Kind> {
        if crate::stanza::is_message(el) {
            Some(Kind::Message)
        } else if crate::stanza::is_presence(el) {
            Some(Kind::Presence)
        } else if crate::stanza::is_iq(el) {
            Some(Kind::Iq)
        } else {
            None
        }
    }
}

/// Where in the pipeline an event fires. Stanza hooks carry the stanza kind, so a module that
/// only cares about messages never runs for presence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Hook {
    /// A stanza a local session sent, `from` stamped, before it is routed ([`StanzaEvent`],
    /// with `local` set: the hook runs in the sender's task).
    Outbound(Kind),
    /// A stanza arriving for a local account's bare JID; `targets` holds the sessions the
    /// delivery rules chose and may be changed.
    InboundBare(Kind),
    /// A stanza arriving for a local full JID; `targets` holds that session if it is bound.
    InboundFull(Kind),
    /// No session took an inbound stanza (`targets` ended empty): offline storage, push.
    Undeliverable(Kind),
    /// A resource was bound ([`SessionEvent`]).
    SessionBound,
    /// The session sent initial presence (it is now `available`).
    SessionAvailable,
    /// The client has been silent for `limits.idle_timeout_secs`: a module may probe it (any
    /// answer counts as life); without an answer the stream closes after a grace period.
    SessionIdle,
    /// The session's stream is about to end. `Handled`, with `c2s::session::Detached` put in
    /// `local.ext` and a `LinkInbox` given earlier, keeps it bound without a connection until
    /// a new one takes it over or the time runs out (stream management hibernation).
    SessionClosing,
    /// A new connection took the session over (its request is `AttachRequest` in `local.ext`);
    /// the module that handed it over answers on the new stream.
    SessionReattached,
    /// The session is gone from the table.
    SessionClosed,
}

/// A stanza passing a stanza hook.
pub struct StanzaEvent<'e> {
    pub kind: Kind,
    pub stanza: Element,
    /// The sender, as stamped by the server.
    pub from: Jid,
    /// The addressee (for inbound hooks always set: the local bare or full JID).
    pub to: Option<Jid>,
    /// The sender's session when it is local.
    pub sender: Option<&'e SessionHandle>,
    /// The sender's task state, for `Outbound` hooks (they run in the sender's task).
    pub local: Option<&'e mut SessionLocal>,
    /// Inbound hooks: the sessions that will receive the stanza. Empty for outbound hooks.
    pub targets: Vec<SessionHandle>,
    /// Work a handler started that must finish before the stanza counts as handled (a stream
    /// management acknowledgement covers it), but need not hold its delivery up.
    pub pending: Pending,
}

/// Writes started for a stanza (e.g. its archived copy's commit). The core delivers the
/// stanza first and then waits for these, so an fsync on a slow card delays the sender's
/// acknowledgement, never the recipient. Costs nothing (no allocation) while empty.
#[derive(Default)]
pub struct Pending(Vec<BoxFut<'static, ()>>);

impl Pending {
    pub fn push(&mut self, work: impl Future<Output = ()> + Send + 'static) {
        self.0.push(Box::pin(work));
    }
    /// Waits for every piece of work, in the order it was started.
    pub async fn settle(self) {
        for work in self.0 {
            work.await;
        }
    }
}

/// Why a session's stream ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// The client closed its stream (`</stream:stream>`): a deliberate logout.
    Logout,
    /// The connection broke or stopped answering.
    LinkLost,
    /// The server closes it with this stream error condition.
    StreamError(&'static str),
}

/// A session lifecycle event; it runs in the session's own task.
pub struct SessionEvent<'e> {
    pub session: &'e SessionHandle,
    pub local: &'e mut SessionLocal,
    /// Set for `SessionClosing` and `SessionClosed`.
    pub reason: Option<CloseReason>,
}

/// When stream features are offered (RFC 6120 §4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeaturePhase {
    /// After TLS, before authentication (SASL mechanisms are the core's; modules add e.g.
    /// in-band registration).
    BeforeAuth,
    /// After authentication, before binding (bind is the core's; modules add e.g. roster
    /// versioning, entity caps, stream management).
    AfterAuth,
}

/// Which IQ types a route accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IqKind {
    Get,
    Set,
    Both,
}

/// Whom an IQ is addressed to, as seen from the sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IqTarget {
    /// The server's domain.
    Server,
    /// The sender's own bare JID (or no `to` at all, RFC 6120 §10.3.3).
    OwnAccount,
    /// Another account's bare JID on this server.
    OtherAccount,
    /// A stream that has not logged in yet (in-band registration).
    BeforeLogin,
}

/// One line of a module's IQ table: `iq-set/self/urn:xmpp:carbons:2` is
/// `IqRoute { kind: Set, targets: &[OwnAccount], ns }`.
#[derive(Debug, Clone, Copy)]
pub struct IqRoute {
    pub kind: IqKind,
    pub targets: &'static [IqTarget],
    pub ns: &'static str,
}

impl IqRoute {
    pub const fn new(kind: IqKind, targets: &'static [IqTarget], ns: &'static str) -> IqRoute {
        IqRoute { kind, targets, ns }
    }
}

/// Every logged-in target: server, own account and other accounts.
pub const ANY_TARGET: &[IqTarget] = &[
    IqTarget::Server,
    IqTarget::OwnAccount,
    IqTarget::OtherAccount,
];
/// The server and the sender's own account (requests a client makes about itself).
pub const SELF_OR_SERVER: &[IqTarget] = &[IqTarget::Server, IqTarget::OwnAccount];

/// What a disco#info request asks about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiscoTarget {
    Server,
    Account,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub category: &'static str,
    pub kind: &'static str,
    pub name: Option<&'static str>,
}

/// A disco#info answer being assembled by the modules.
#[derive(Debug, Default)]
pub struct DiscoInfo {
    pub identities: Vec<Identity>,
    pub features: Vec<&'static str>,
    /// XEP-0128 extended information (data forms).
    pub forms: Vec<Element>,
    /// Set by the module that owns the requested node; a node nobody owns is `item-not-found`.
    pub node_known: bool,
}

impl DiscoInfo {
    pub fn feature(&mut self, f: &'static str) {
        self.features.push(f);
    }
    /// Sorted and without duplicates, as XEP-0115 hashing and stable answers want.
    pub fn normalise(&mut self) {
        self.features.sort_unstable();
        self.features.dedup();
        self.identities
            .sort_by(|a, b| (a.category, a.kind, a.name).cmp(&(b.category, b.kind, b.name)));
        self.identities.dedup();
    }
}

/// A per-session or per-stream slot for module state that costs nothing until first use:
/// `None` until a module puts something in, then a small list keyed by type.
// Boxed on purpose: `Option<Box<Vec>>` is 8 bytes in every session, `Option<Vec>` would be 24.
#[allow(clippy::box_collection)]
#[derive(Default)]
pub struct Extensions(Option<Box<Vec<Box<dyn Any + Send + Sync>>>>);

impl std::fmt::Debug for Extensions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.0.as_ref().map_or(0, |l| l.len());
        write!(f, "Extensions({n} values)")
    }
}

impl Extensions {
    pub fn get<T: Any + Send + Sync>(&self) -> Option<&T> {
        self.0.as_ref()?.iter().find_map(|b| b.downcast_ref::<T>())
    }
    pub fn get_mut<T: Any + Send + Sync>(&mut self) -> Option<&mut T> {
        self.0
            .as_mut()?
            .iter_mut()
            .find_map(|b| b.downcast_mut::<T>())
    }
    /// The module's value, created with `Default` on first use.
    pub fn get_or_default<T: Any + Send + Sync + Default>(&mut self) -> &mut T {
        let list = self.0.get_or_insert_with(Default::default);
        let i = match list
            .iter()
            .position(|b| (**b).type_id() == TypeId::of::<T>())
        {
            Some(i) => i,
            None => {
                list.push(Box::new(T::default()));
                list.len() - 1
            }
        };
        list[i]
            .downcast_mut::<T>()
            .expect("the type was just checked")
    }
    /// Puts a value in, replacing one of the same type.
    pub fn insert<T: Any + Send + Sync>(&mut self, value: T) {
        self.remove::<T>();
        self.0
            .get_or_insert_with(Default::default)
            .push(Box::new(value));
    }
    pub fn remove<T: Any + Send + Sync>(&mut self) -> Option<T> {
        let list = self.0.as_mut()?;
        let i = list
            .iter()
            .position(|b| (**b).type_id() == TypeId::of::<T>())?;
        list.swap_remove(i).downcast::<T>().ok().map(|b| *b)
    }
    pub fn is_empty(&self) -> bool {
        self.0.as_ref().is_none_or(|l| l.is_empty())
    }
}

/// A bit in a session's flags word, owned by one module (e.g. "carbons enabled"). Bits are
/// declared by modules (`Module::session_flags`); the registry refuses two owners of one bit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionFlag(pub u32);

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default, Debug, PartialEq)]
    struct Counter(u32);

    #[test]
    fn extensions_allocate_only_when_used() {
        let mut ext = Extensions::default();
        assert!(ext.is_empty());
        assert!(ext.get::<Counter>().is_none());
        assert!(ext.is_empty(), "a lookup allocates nothing");
        ext.get_or_default::<Counter>().0 += 2;
        ext.get_or_default::<Counter>().0 += 1;
        assert_eq!(ext.get::<Counter>(), Some(&Counter(3)));
        assert_eq!(ext.remove::<Counter>(), Some(Counter(3)));
        assert!(ext.is_empty());
        assert_eq!(std::mem::size_of::<Extensions>(), 8);
    }
}
