//! Server-to-server streams (RFC 6120), the way to every domain this server does not host.
//!
//! Outgoing (`outgoing.rs`): one connection per pair of (our domain, remote domain), opened on
//! the first stanza, kept while used and closed when idle. Stanzas wait in a bounded queue
//! while it connects; if it cannot connect within `connect_timeout_secs`, each of them goes
//! back to its sender as `remote-server-not-found` or `remote-server-timeout`.
//!
//! Incoming (`incoming.rs`): on `[s2s] listen` (STARTTLS) and `listen_direct_tls` (XEP-0368).
//! TLS is always required. A peer authenticates with SASL EXTERNAL (its certificate, valid for
//! its domain) or dialback (`dialback.rs`); each stanza's `from` must be a domain
//! authenticated on that stream, and then it takes the same path as a local user's
//! (`delivery::route`).
//!
//! This is core, not a module: it registers itself as the route for other domains
//! (`Domains::set_remote`), and knows no XEP payload.

pub mod dialback;
mod incoming;
mod outgoing;
pub mod resolve;
mod tls;

use crate::domains::{DomainRoute, Refused};
use crate::jid::Jid;
use crate::server::Server;
use crate::stanza::StanzaError;
use crate::xml::{escape_attr, ns, Element, Node};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use tokio::sync::mpsc;

/// `[s2s]` in `hearth.toml`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct S2sConfig {
    /// Federation with other XMPP servers. Off for LAN-only boxes (no public certificate).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Where remote servers connect with STARTTLS.
    #[serde(default = "default_listen")]
    pub listen: Vec<SocketAddr>,
    /// Where remote servers connect with TLS from the first byte (XEP-0368).
    #[serde(default = "default_listen_direct_tls")]
    pub listen_direct_tls: Vec<SocketAddr>,
    /// Remote domains reached at a fixed address instead of through DNS:
    /// `"domain" = "host:port"` (STARTTLS) or `"tls:host:port"` (direct TLS).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub routes: BTreeMap<String, String>,
    /// If not empty, only these remote domains may federate with this server.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    /// Remote domains that may never federate with this server.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
    /// More CA certificates (PEM) to trust for remote servers, besides the system's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Stanzas waiting for one remote domain's connection; more are refused.
    #[serde(default = "default_queue")]
    pub queue: usize,
    /// Seconds to find, connect to and authenticate with a remote server before what waits
    /// for it bounces.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_secs: u64,
    /// Seconds without traffic after which a connection is closed.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_secs: u64,
}

impl Default for S2sConfig {
    fn default() -> Self {
        S2sConfig {
            enabled: true,
            listen: default_listen(),
            listen_direct_tls: default_listen_direct_tls(),
            routes: BTreeMap::new(),
            allow: Vec::new(),
            deny: Vec::new(),
            ca_file: None,
            queue: default_queue(),
            connect_timeout_secs: default_connect_timeout(),
            idle_timeout_secs: default_idle_timeout(),
        }
    }
}

fn yes() -> bool {
    true
}
fn default_listen() -> Vec<SocketAddr> {
    vec!["[::]:5269".parse().expect("valid literal")]
}
fn default_listen_direct_tls() -> Vec<SocketAddr> {
    vec!["[::]:5270".parse().expect("valid literal")]
}
fn default_queue() -> usize {
    256
}
fn default_connect_timeout() -> u64 {
    // Below the 30 s a sender should wait at most to hear that a server cannot be reached.
    20
}
fn default_idle_timeout() -> u64 {
    600
}

impl S2sConfig {
    /// Checks what serde cannot: routes, domains in the lists, bounds.
    pub fn check(&self) -> Result<(), String> {
        for (domain, route) in &self.routes {
            crate::jid::validate_domain(domain)
                .map_err(|e| format!("[s2s.routes] {domain:?} is not a domain: {e}"))?;
            resolve::parse_route(route).map_err(|e| format!("[s2s.routes] {domain:?}: {e}"))?;
        }
        for (key, list) in [("allow", &self.allow), ("deny", &self.deny)] {
            for d in list {
                crate::jid::validate_domain(d)
                    .map_err(|e| format!("s2s.{key}: {d:?} is not a domain: {e}"))?;
            }
        }
        if self.queue == 0 {
            return Err("s2s.queue must be at least 1".into());
        }
        if !(1..=60).contains(&self.connect_timeout_secs) {
            return Err("s2s.connect_timeout_secs must be between 1 and 60".into());
        }
        Ok(())
    }

    /// Whether this server federates with `domain` at all.
    pub fn allows(&self, domain: &str) -> bool {
        let d = domain.to_ascii_lowercase();
        let listed = |l: &[String]| l.iter().any(|x| x.eq_ignore_ascii_case(&d));
        !listed(&self.deny) && (self.allow.is_empty() || listed(&self.allow))
    }
}

/// Federation's shared state: configuration, trust, the DNS resolver, the dialback secret and
/// the outgoing connections.
pub struct S2s {
    pub config: S2sConfig,
    trust: tls::PeerTrust,
    resolver: hickory_resolver::TokioResolver,
    routes: HashMap<String, resolve::Target>,
    /// Known only to this process: dialback keys made with it are checked only while it runs,
    /// which is as long as the streams they authenticate.
    secret: [u8; 32],
    /// Outgoing connections by (our domain, remote domain): the queue into each one's task.
    links: Mutex<Links>,
    next_link: std::sync::atomic::AtomicU64,
    me: Weak<S2s>,
}

/// Outgoing links by (our domain, remote domain): each one's id and the queue into its task.
type Links = HashMap<(String, String), (u64, mpsc::Sender<Element>)>;

/// Starts federation: the route for other domains. Listeners are given by the caller (they
/// are bound before privileges are dropped).
pub fn start(server: &Arc<Server>) -> Result<Arc<S2s>, String> {
    let config = server.config.s2s.clone();
    config.check()?;
    let trust = tls::PeerTrust::load(config.ca_file.as_deref())?;
    let resolver = resolve::resolver()?;
    let routes = config
        .routes
        .iter()
        .map(|(d, r)| Ok((d.to_ascii_lowercase(), resolve::parse_route(r)?)))
        .collect::<Result<HashMap<_, _>, String>>()?;
    let mut secret = [0u8; 32];
    getrandom::getrandom(&mut secret).map_err(|e| format!("no randomness: {e}"))?;
    let s2s = Arc::new_cyclic(|me| S2s {
        config,
        trust,
        resolver,
        routes,
        secret,
        links: Mutex::new(HashMap::new()),
        next_link: Default::default(),
        me: me.clone(),
    });
    server.domains.set_remote(s2s.clone());
    Ok(s2s)
}

/// Accepts remote servers on the given listeners until shutdown. `bool` marks direct TLS.
pub fn spawn_listeners(
    server: &Arc<Server>,
    s2s: &Arc<S2s>,
    listeners: Vec<(tokio::net::TcpListener, bool)>,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_INCOMING));
    for (listener, direct) in listeners {
        let (server, s2s, slots) = (server.clone(), s2s.clone(), slots.clone());
        tokio::spawn(async move {
            let mut shutdown = server.shutdown_signal();
            loop {
                let (tcp, peer) = tokio::select! {
                    a = listener.accept() => match a {
                        Ok(x) => x,
                        Err(e) => {
                            log::warn!("s2s accept failed: {e}");
                            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                            continue;
                        }
                    },
                    _ = shutdown.changed() => break,
                };
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    log::warn!("{peer}: too many server connections, refusing");
                    continue;
                };
                let (server, s2s) = (server.clone(), s2s.clone());
                tokio::spawn(async move {
                    incoming::serve(server, s2s, tcp, peer, direct).await;
                    drop(permit);
                });
            }
        });
    }
}

/// Incoming server connections at once: a home server talks to a few dozen others.
const MAX_INCOMING: usize = 256;
/// Outgoing links (connected or connecting) at once; each holds a task and a bounded queue.
const MAX_LINKS: usize = 256;

impl S2s {
    /// The domains this server answers for: its own and the services it hosts.
    fn is_local(server: &Server, domain: &str) -> bool {
        domain.eq_ignore_ascii_case(server.domain()) || server.domains.is_hosted(domain)
    }

    /// Removes the queue of link `id`, if it is still the current one for the pair.
    fn forget(&self, pair: &(String, String), id: u64) {
        let mut links = self.links.lock().unwrap_or_else(|e| e.into_inner());
        if links.get(pair).is_some_and(|(i, _)| *i == id) {
            links.remove(pair);
        }
    }
}

impl DomainRoute for S2s {
    fn accept(&self, server: &Arc<Server>, stanza: Element, to: &Jid) -> Result<(), Refused> {
        let refuse = |stanza, error| Err(Refused { stanza, error });
        let Some(from) = crate::stanza::from_jid(&stanza) else {
            return refuse(stanza, StanzaError::bad_request());
        };
        if !S2s::is_local(server, &from.domain) {
            return refuse(
                stanza,
                StanzaError::new("cancel", "remote-server-not-found"),
            );
        }
        if !self.config.allows(&to.domain) {
            let e = StanzaError::new("cancel", "not-allowed")
                .with_text(format!("this server does not federate with {}", to.domain));
            return refuse(stanza, e);
        }
        let pair = (
            from.domain.to_ascii_lowercase(),
            to.domain.to_ascii_lowercase(),
        );
        let mut links = self.links.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, tx)) = links.get(&pair) {
            match tx.try_send(stanza) {
                Ok(()) => return Ok(()),
                Err(mpsc::error::TrySendError::Full(stanza)) => {
                    let e = StanzaError::new("wait", "resource-constraint")
                        .with_text(format!("too many stanzas waiting for {}", to.domain));
                    return refuse(stanza, e);
                }
                // The link's task ended a moment ago: open a new one.
                Err(mpsc::error::TrySendError::Closed(stanza)) => {
                    links.remove(&pair);
                    return self.open_link(server, &mut links, pair, stanza);
                }
            }
        }
        self.open_link(server, &mut links, pair, stanza)
    }
}

impl S2s {
    fn open_link(
        &self,
        server: &Arc<Server>,
        links: &mut Links,
        pair: (String, String),
        stanza: Element,
    ) -> Result<(), Refused> {
        if links.len() >= MAX_LINKS {
            let e = StanzaError::new("wait", "resource-constraint")
                .with_text("too many other servers in use at once; try again later");
            return Err(Refused { stanza, error: e });
        }
        let Some(me) = self.me.upgrade() else {
            return Err(Refused {
                stanza,
                error: StanzaError::service_unavailable(),
            });
        };
        let (tx, rx) = mpsc::channel(self.config.queue);
        let _ = tx.try_send(stanza);
        let id = self
            .next_link
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        links.insert(pair.clone(), (id, tx));
        tokio::spawn(outgoing::run(me, server.clone(), pair, id, rx));
        Ok(())
    }
}

/// The stream header of a server-to-server stream (RFC 6120 §4.7), declaring dialback's
/// namespace as servers expect.
fn header(from: &str, to: Option<&str>, id: Option<&str>) -> String {
    let mut h = format!(
        "<?xml version='1.0'?><stream:stream xmlns='{}' xmlns:stream='{}' xmlns:db='{}' from='{}' version='1.0' xml:lang='en'",
        ns::SERVER,
        ns::STREAMS,
        dialback::NS,
        escape_attr(from)
    );
    if let Some(to) = to {
        h.push_str(&format!(" to='{}'", escape_attr(to)));
    }
    if let Some(id) = id {
        h.push_str(&format!(" id='{}'", escape_attr(id)));
    }
    h.push('>');
    h
}

/// Moves a stanza from one stream namespace to the other (`jabber:client` ↔ `jabber:server`):
/// the stanza and the children in the same namespace, but not what is nested in other
/// namespaces (a forwarded `jabber:client` message stays one).
pub fn rename_stream_ns(el: &mut Element, from: &str, to: &str) {
    if el.ns != from {
        return;
    }
    el.ns = to.to_string();
    for c in &mut el.children {
        if let Node::Element(e) = c {
            rename_stream_ns(e, from, to);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_and_deny_lists() {
        let mut c = S2sConfig::default();
        assert!(c.allows("anywhere.example"));
        c.deny = vec!["Bad.Example".into()];
        assert!(!c.allows("bad.example"));
        assert!(c.allows("good.example"));
        c.allow = vec!["good.example".into()];
        assert!(c.allows("GOOD.example"));
        assert!(!c.allows("other.example"));
    }

    #[test]
    fn bad_settings_are_named() {
        let mut c = S2sConfig::default();
        c.routes.insert("prosody.test".into(), "nowhere".into());
        let e = c.check().unwrap_err();
        assert!(
            e.contains("[s2s.routes]") && e.contains("prosody.test"),
            "{e}"
        );
        let c = S2sConfig {
            deny: vec!["not a domain".into()],
            ..Default::default()
        };
        assert!(c.check().unwrap_err().contains("s2s.deny"));
    }

    #[test]
    fn stanzas_change_stream_namespace_but_forwarded_ones_keep_theirs() {
        let inner = Element::new("message", ns::CLIENT)
            .with_child(Element::new("body", ns::CLIENT).with_text("old"));
        let mut m = Element::new("message", ns::CLIENT)
            .with_child(Element::new("body", ns::CLIENT).with_text("hi"))
            .with_child(Element::new("forwarded", "urn:example:forward").with_child(inner));
        rename_stream_ns(&mut m, ns::CLIENT, ns::SERVER);
        assert_eq!(
            m.to_xml(ns::SERVER),
            "<message><body>hi</body><forwarded xmlns='urn:example:forward'>\
             <message xmlns='jabber:client'><body>old</body></message></forwarded></message>"
        );
    }
}
