//! XEP-0114: Jabber Component Protocol. A program on the box (a gateway, a bot, a bridge) connects
//! to a loopback port, names the domain it serves, proves it knows that domain's secret
//! (`SHA-1(stream id ‖ secret)`), and from then on sends and receives the stanzas of that domain.
//! The protocol has no TLS, so it listens on loopback addresses only; a configured address that
//! is not loopback is a startup error.
//!
//! A connected component is a route in `server.domains` (as a hosted service is); what it sends
//! must come from its own domain and goes through `delivery::route` like anything else.

use super::Module;
use crate::domains::{DomainRoute, Refused};
use crate::jid::Jid;
use crate::server::Server;
use crate::stanza::StanzaError;
use crate::xml::{escape_attr, ns, Element, XmlEvent, XmlReader};
use serde::{Deserialize, Serialize};
use sha1::{Digest, Sha1};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

pub const NS: &str = "jabber:component:accept";
/// Stanzas waiting to be written to one component; beyond this the sender gets an error.
const QUEUE: usize = 256;
/// How long a component has to open its stream and shake hands.
const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(10);

/// `[modules.component]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct ComponentConfig {
    /// Loopback addresses to listen on, e.g. `["127.0.0.1:5347"]`; none means off.
    #[serde(default)]
    pub listen: Vec<SocketAddr>,
    /// The shared secret of each component domain, e.g. `"bridge.example.org" = "…"`.
    #[serde(default)]
    pub secrets: BTreeMap<String, String>,
}

impl ComponentConfig {
    /// Refuses addresses other than loopback: the protocol is plain text.
    pub fn check(&self) -> Result<(), String> {
        if let Some(a) = self.listen.iter().find(|a| !a.ip().is_loopback()) {
            return Err(format!(
                "modules.component.listen: {a} is not a loopback address; the component \
                 protocol has no encryption, so it listens on 127.0.0.1 or ::1 only"
            ));
        }
        for (domain, secret) in &self.secrets {
            crate::jid::validate_domain(domain)
                .map_err(|e| format!("modules.component.secrets: {domain:?} is not usable: {e}"))?;
            if secret.len() < 16 {
                return Err(format!(
                    "modules.component.secrets: the secret of {domain} is shorter than 16 characters"
                ));
            }
        }
        Ok(())
    }
}

pub struct Components {
    config: ComponentConfig,
}

impl Components {
    pub fn new(config: &ComponentConfig) -> Components {
        Components {
            config: config.clone(),
        }
    }
}

impl Module for Components {
    fn name(&self) -> &'static str {
        "component"
    }
    fn start(&self, server: &Arc<Server>) {
        for addr in self.config.listen.clone() {
            let server = Arc::downgrade(server);
            tokio::spawn(async move {
                let listener = match TcpListener::bind(addr).await {
                    Ok(l) => l,
                    Err(e) => return log::error!("components: cannot listen on {addr}: {e}"),
                };
                log::info!("components: listening on {addr}");
                loop {
                    let Ok((tcp, peer)) = listener.accept().await else {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    };
                    let Some(server) = server.upgrade() else {
                        return;
                    };
                    tokio::spawn(async move { serve(server, tcp, peer).await });
                }
            });
        }
    }
}

/// The `<handshake/>` a component must send for stream `id` and `secret` (XEP-0114 §3).
pub fn handshake_digest(id: &str, secret: &str) -> String {
    Sha1::digest(format!("{id}{secret}").as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A connected component: its domain's route.
struct Connected {
    queue: mpsc::Sender<Element>,
}

impl DomainRoute for Connected {
    fn accept(&self, _server: &Arc<Server>, stanza: Element, _to: &Jid) -> Result<(), Refused> {
        self.queue.try_send(stanza).map_err(|e| Refused {
            stanza: e.into_inner(),
            error: StanzaError::new("wait", "resource-constraint")
                .with_text("the component is not keeping up"),
        })
    }
}

/// Which component domains are connected now (one connection each).
#[derive(Default)]
struct Connections(Mutex<std::collections::HashSet<String>>);

async fn serve(server: Arc<Server>, tcp: TcpStream, peer: SocketAddr) {
    let (read, mut write) = tcp.into_split();
    let mut reader = XmlReader::new(read, crate::c2s::xml_limits(&server.config.limits));
    let id = crate::stanza::random_id(16);
    let header = |from: &str| {
        format!(
            "<?xml version='1.0'?><stream:stream xmlns:stream='{}' xmlns='{NS}' from='{}' id='{id}'>",
            ns::STREAMS,
            escape_attr(from)
        )
    };
    let fail = |condition: &str, text: &str| {
        format!(
            "<stream:error><{condition} xmlns='{}'/><text xmlns='{}'>{}</text></stream:error></stream:stream>",
            ns::STREAM_ERRORS,
            ns::STREAM_ERRORS,
            crate::xml::escape_text(text)
        )
    };
    let opened = tokio::time::timeout(HANDSHAKE_DEADLINE, reader.next()).await;
    let domain = match opened {
        Ok(Ok(XmlEvent::StreamStart(h))) => h.attr("to").unwrap_or_default().to_ascii_lowercase(),
        _ => return,
    };
    let secret = server
        .config
        .modules
        .component
        .secrets
        .get(&domain)
        .cloned();
    let _ = write.write_all(header(&domain).as_bytes()).await;
    let Some(secret) = secret else {
        log::info!("components: {peer} asked for {domain}, which is not configured");
        let _ = write
            .write_all(
                fail("host-unknown", "no component is configured for this domain").as_bytes(),
            )
            .await;
        return;
    };
    let proof = match tokio::time::timeout(HANDSHAKE_DEADLINE, reader.next()).await {
        Ok(Ok(XmlEvent::Stanza(e))) if e.name == "handshake" => e.text(),
        _ => return,
    };
    let expected = handshake_digest(&id, &secret);
    if !bool::from(subtle::ConstantTimeEq::ct_eq(
        proof.trim().to_ascii_lowercase().as_bytes(),
        expected.as_bytes(),
    )) {
        log::warn!("components: {peer} gave a wrong secret for {domain}");
        let _ = write
            .write_all(fail("not-authorized", "wrong handshake").as_bytes())
            .await;
        return;
    }
    let connections = server.module_state::<Connections>();
    if !connections
        .0
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(domain.clone())
    {
        let _ = write
            .write_all(fail("conflict", "this component is already connected").as_bytes())
            .await;
        return;
    }
    let (tx, mut rx) = mpsc::channel::<Element>(QUEUE);
    let route: Arc<dyn DomainRoute> = Arc::new(Connected { queue: tx });
    if let Err(e) = server.domains.host(&domain, route) {
        log::error!("components: {domain}: {e}");
        connections
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&domain);
        let _ = write.write_all(fail("conflict", &e).as_bytes()).await;
        return;
    }
    let _ = write
        .write_all(format!("<handshake xmlns='{NS}'/>").as_bytes())
        .await;
    log::info!("components: {domain} connected from {peer}");
    let writer = tokio::spawn(async move {
        while let Some(stanza) = rx.recv().await {
            let xml = as_component(stanza).to_xml(NS);
            if write.write_all(xml.as_bytes()).await.is_err() {
                break;
            }
        }
        let _ = write.write_all(b"</stream:stream>").await;
    });
    let mut shutdown = server.shutdown_signal();
    loop {
        let event = tokio::select! {
            e = reader.next() => e,
            _ = shutdown.changed() => break,
        };
        match event {
            Ok(XmlEvent::Stanza(stanza)) => from_component(&server, &domain, stanza).await,
            Ok(_) => break,
            Err(e) => {
                log::info!("components: {domain}: {e}");
                break;
            }
        }
    }
    server.domains.unhost(&domain);
    connections
        .0
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&domain);
    writer.abort();
    log::info!("components: {domain} disconnected");
}

/// A stanza from the component for `domain`: its `from` must be in that domain.
async fn from_component(server: &Arc<Server>, domain: &str, stanza: Element) {
    let mut stanza = as_client(stanza);
    if crate::hooks::Kind::of(&stanza).is_none() {
        return;
    }
    let from_ok = crate::stanza::from_jid(&stanza).is_some_and(|f| f.domain == domain);
    if !from_ok {
        // Answer the component itself: a stanza must come from its own domain.
        stanza.set_attr("from", domain);
        if let Some(reply) =
            crate::stanza::error_reply(&stanza, &StanzaError::new("modify", "not-allowed"))
        {
            let _ = server.domains.route_for(domain).map(|r| {
                r.accept(
                    server,
                    reply,
                    &Jid::parse(domain).expect("a domain is a JID"),
                )
            });
        }
        return;
    }
    crate::delivery::route(server, stanza, None).await;
}

/// Stanzas travel inside the server in the client namespace; components speak their own.
fn renamespace(mut e: Element, from: &str, to: &str) -> Element {
    if e.ns == from {
        e.ns = to.to_string();
    }
    for child in e.children.iter_mut() {
        if let crate::xml::Node::Element(c) = child {
            let taken = std::mem::replace(c, Element::new("", ""));
            *c = renamespace(taken, from, to);
        }
    }
    e
}

fn as_client(e: Element) -> Element {
    renamespace(e, NS, ns::CLIENT)
}

fn as_component(e: Element) -> Element {
    renamespace(e, ns::CLIENT, NS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_handshake_is_sha1_of_id_and_secret_in_hex() {
        // XEP-0114 §3 example: stream id 3BF96D32, secret "secret".
        // sha1("3BF96D32secret"), computed with `printf %s 3BF96D32secret | sha1sum`.
        assert_eq!(
            handshake_digest("3BF96D32", "secret"),
            "b09ea9b3b7f586be8a08d0a3dd7466f110aeb136"
        );
    }

    #[test]
    fn only_loopback_addresses_are_allowed() {
        let mut c = ComponentConfig::default();
        c.listen.push("127.0.0.1:5347".parse().unwrap());
        c.listen.push("[::1]:5347".parse().unwrap());
        assert!(c.check().is_ok());
        c.listen.push("0.0.0.0:5347".parse().unwrap());
        assert!(c.check().unwrap_err().contains("0.0.0.0:5347"));
    }

    #[test]
    fn stanzas_change_namespace_both_ways_but_payloads_keep_theirs() {
        let s = Element::new("message", NS)
            .with_child(Element::new("body", NS).with_text("hi"))
            .with_child(Element::new("x", "urn:other"));
        let c = as_client(s);
        assert_eq!(c.ns, ns::CLIENT);
        assert!(c.child("body", ns::CLIENT).is_some());
        assert!(c.child("x", "urn:other").is_some());
        assert_eq!(
            as_component(c).to_xml(NS),
            "<message><body>hi</body><x xmlns='urn:other'/></message>"
        );
    }
}
