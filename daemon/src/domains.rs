//! Domains other than the server's own: where a stanza goes when its `to` is not an account
//! here. A module that hosts a service on a domain of its own (group chats on `groups.<domain>`)
//! registers a route for that domain; federation registers the route for every other domain.
//! The core knows neither: `delivery` asks this table, and a stanza nobody routes is bounced with
//! `remote-server-not-found`.
//!
//! Stanzas coming the other way (from a hosted service or a remote server to a local account) are
//! handed to `delivery::route` with their `from` already stamped and checked by whoever accepted
//! them, and then pass the same inbound hooks as a local user's.

use crate::jid::Jid;
use crate::server::Server;
use crate::stanza::StanzaError;
use crate::xml::Element;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// Takes stanzas for the JIDs of one or more domains.
pub trait DomainRoute: Send + Sync {
    /// A stanza addressed to `to`, with a `from` the server vouches for (a local user, the server
    /// itself, a hosted service, or a domain authenticated on a federation stream). Must not
    /// wait: queue it (in a bounded queue) and return. A refusal gives the stanza back with the
    /// error its sender gets (none when the stanza is itself an error).
    fn accept(&self, server: &Arc<Server>, stanza: Element, to: &Jid) -> Result<(), Refused>;
}

/// A stanza a route would not take, and why.
pub struct Refused {
    pub stanza: Element,
    pub error: StanzaError,
}

#[derive(Default)]
pub struct Domains {
    /// Services this server hosts on domains of their own, by domain (lowercase).
    hosted: RwLock<HashMap<String, Arc<dyn DomainRoute>>>,
    /// Every other domain (federation), when enabled.
    remote: RwLock<Option<Arc<dyn DomainRoute>>>,
}

impl Domains {
    /// Registers the route for a domain this server hosts; a domain has one owner.
    pub fn host(&self, domain: &str, route: Arc<dyn DomainRoute>) -> Result<(), String> {
        let domain = domain.to_ascii_lowercase();
        let mut hosted = self.hosted.write().unwrap_or_else(|e| e.into_inner());
        if hosted.contains_key(&domain) {
            return Err(format!("two services want the domain {domain}"));
        }
        hosted.insert(domain, route);
        Ok(())
    }

    /// Removes a hosted domain's route (a service that went away).
    pub fn unhost(&self, domain: &str) {
        let mut hosted = self.hosted.write().unwrap_or_else(|e| e.into_inner());
        hosted.remove(&domain.to_ascii_lowercase());
    }

    /// Sets the route for domains nobody here hosts (federation).
    pub fn set_remote(&self, route: Arc<dyn DomainRoute>) {
        *self.remote.write().unwrap_or_else(|e| e.into_inner()) = Some(route);
    }

    /// Whether a service on this server answers for `domain` (the main domain excluded).
    pub fn is_hosted(&self, domain: &str) -> bool {
        let hosted = self.hosted.read().unwrap_or_else(|e| e.into_inner());
        hosted.contains_key(domain) || hosted.contains_key(&domain.to_ascii_lowercase())
    }

    /// The domains of the services this server hosts, sorted (for disco#items of the server).
    pub fn hosted(&self) -> Vec<String> {
        let hosted = self.hosted.read().unwrap_or_else(|e| e.into_inner());
        let mut list: Vec<String> = hosted.keys().cloned().collect();
        list.sort_unstable();
        list
    }

    /// The route for a domain that is not the server's own: its hosted service, else the remote
    /// route, else none.
    pub fn route_for(&self, domain: &str) -> Option<Arc<dyn DomainRoute>> {
        {
            let hosted = self.hosted.read().unwrap_or_else(|e| e.into_inner());
            if let Some(r) = hosted
                .get(domain)
                .or_else(|| hosted.get(&domain.to_ascii_lowercase()))
            {
                return Some(r.clone());
            }
        }
        self.remote
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::{body, Harness, DOMAIN};
    use crate::xml::ns;
    use std::sync::Mutex;

    /// Keeps what it is given; refuses bodies saying "refuse".
    #[derive(Default)]
    struct Sink(Mutex<Vec<Element>>);

    impl DomainRoute for Sink {
        fn accept(&self, _server: &Arc<Server>, stanza: Element, _to: &Jid) -> Result<(), Refused> {
            if body(&stanza).as_deref() == Some("refuse") {
                return Err(Refused {
                    stanza,
                    error: StanzaError::new("wait", "resource-constraint"),
                });
            }
            self.0.lock().unwrap().push(stanza);
            Ok(())
        }
    }

    #[test]
    fn a_domain_has_one_owner_and_hosted_beats_remote() {
        let d = Domains::default();
        assert!(d.route_for("remote.example").is_none());
        let a: Arc<dyn DomainRoute> = Arc::new(Sink::default());
        let b: Arc<dyn DomainRoute> = Arc::new(Sink::default());
        d.host("Groups.Example.Test", a.clone()).unwrap();
        assert!(d.host("groups.example.test", b.clone()).is_err());
        d.set_remote(b.clone());
        assert!(Arc::ptr_eq(
            &d.route_for("groups.example.test").unwrap(),
            &a
        ));
        assert!(Arc::ptr_eq(&d.route_for("remote.example").unwrap(), &b));
        assert!(d.is_hosted("GROUPS.example.test"));
        assert!(!d.is_hosted("remote.example"));
        assert_eq!(d.hosted(), vec!["groups.example.test".to_string()]);
    }

    #[tokio::test]
    async fn stanzas_for_other_domains_take_their_route_and_replies_come_back() {
        let h = Harness::new().await;
        h.user("alice").await;
        let mut alice = h.login("alice", "phone").await;
        // No route yet: the sender hears that the domain cannot be reached.
        alice.message("bob@far.example", "hello").await;
        let err = alice
            .expect("remote-server-not-found", |e| {
                e.attr("type") == Some("error")
                    && e.to_xml(ns::CLIENT).contains("remote-server-not-found")
            })
            .await;
        assert_eq!(err.attr("from"), Some("bob@far.example"));

        let sink = Arc::new(Sink::default());
        h.server.domains.set_remote(sink.clone());
        alice.message("bob@far.example", "hello").await;
        alice.message("bob@far.example", "refuse").await;
        alice
            .expect("the route's refusal", |e| {
                e.attr("type") == Some("error")
                    && e.to_xml(ns::CLIENT).contains("resource-constraint")
            })
            .await;
        let got = sink.0.lock().unwrap().clone();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].attr("from"), Some(&*format!("alice@{DOMAIN}/phone")));
        assert_eq!(body(&got[0]).as_deref(), Some("hello"));

        // A remote IQ to the server is answered through the same route.
        let ping = Element::new("iq", ns::CLIENT)
            .with_attr("type", "get")
            .with_attr("id", "p1")
            .with_attr("from", "far.example")
            .with_attr("to", DOMAIN)
            .with_child(Element::new("ping", crate::modules::ping::NS));
        crate::delivery::route(&h.server, ping, None).await;
        let reply = sink.0.lock().unwrap().last().cloned().unwrap();
        assert_eq!(reply.attr("type"), Some("result"));
        assert_eq!(reply.attr("id"), Some("p1"));
        assert_eq!(reply.attr("to"), Some("far.example"));

        // And a message from another domain reaches the local account through the inbound path.
        let msg = Element::new("message", ns::CLIENT)
            .with_attr("type", "chat")
            .with_attr("from", "bob@far.example/laptop")
            .with_attr("to", format!("alice@{DOMAIN}"))
            .with_child(Element::new("body", ns::CLIENT).with_text("hi from far"));
        alice.available().await;
        crate::delivery::route(&h.server, msg, None).await;
        alice
            .expect("the remote message", |e| {
                body(e).as_deref() == Some("hi from far")
            })
            .await;
    }
}
