//! Delivery rules (RFC 6121 §8): where a stanza from a local session goes.

use crate::jid::Jid;
use crate::modules::IqRequest;
use crate::router::SessionHandle;
use crate::server::Server;
use crate::stanza::{self, error_reply, iq_result, StanzaError};
use crate::xml::{ns, Element};
use std::sync::Arc;

/// Sends a stanza error back to the sender of `original`, if it is a local session.
pub fn bounce(server: &Arc<Server>, original: &Element, err: StanzaError) {
    if let Some(reply) = error_reply(original, &err) {
        deliver_to_full(server, reply);
    }
}

/// Delivers a stanza whose `to` is a local full JID; silently dropped if that session is gone.
pub fn deliver_to_full(server: &Arc<Server>, stanza: Element) {
    if let Some(to) = stanza::to_jid(&stanza).and_then(Result::ok) {
        if let Some(session) = server.router.session(&to) {
            session.deliver(stanza);
        }
    }
}

/// The available sessions that messages to the bare JID go to: highest non-negative priority.
pub fn message_targets(server: &Server, bare: &str) -> Vec<SessionHandle> {
    let sessions: Vec<_> = server
        .router
        .sessions_of(bare)
        .into_iter()
        .filter(|s| s.available() && s.priority() >= 0)
        .collect();
    let Some(top) = sessions.iter().map(SessionHandle::priority).max() else {
        return Vec::new();
    };
    sessions
        .into_iter()
        .filter(|s| s.priority() == top)
        .collect()
}

/// Routes a message or IQ from a local user; `from` is already stamped.
pub async fn route(server: &Arc<Server>, stanza: Element, sender: Option<&SessionHandle>) {
    let to = match stanza::to_jid(&stanza) {
        None => None,
        Some(Ok(j)) => Some(j),
        Some(Err(_)) => {
            return bounce(server, &stanza, StanzaError::new("modify", "jid-malformed"))
        }
    };
    let from = match stanza::from_jid(&stanza) {
        Some(f) => f,
        None => return,
    };
    if stanza::is_iq(&stanza) {
        return route_iq(server, stanza, from, to, sender).await;
    }
    let Some(to) = to else {
        // A message to nobody is for the user's own account (RFC 6120 §10.3.1): treat as bare.
        let mut stanza = stanza;
        stanza.set_attr("to", from.bare_string());
        return Box::pin(route(server, stanza, sender)).await;
    };
    if to.domain != server.domain() {
        // Federation is not available yet: say so instead of dropping silently.
        return bounce(
            server,
            &stanza,
            StanzaError::new("cancel", "remote-server-not-found"),
        );
    }
    if stanza::is_message(&stanza) {
        route_message(server, stanza, &to).await;
    }
}

async fn route_message(server: &Arc<Server>, stanza: Element, to: &Jid) {
    let Some(user) = &to.local else {
        // Messages to the server itself: nothing here reads them.
        return bounce(server, &stanza, StanzaError::service_unavailable());
    };
    if !to.is_bare() {
        if let Some(session) = server.router.session(to) {
            session.deliver(stanza);
            return;
        }
    }
    let kind = stanza::stanza_type(&stanza).to_string();
    match kind.as_str() {
        "error" => return,
        "groupchat" => {
            return bounce(server, &stanza, StanzaError::service_unavailable());
        }
        _ => {}
    }
    let targets = message_targets(server, &to.bare_string());
    if !targets.is_empty() {
        for t in &targets {
            let mut copy = stanza.clone();
            if to.is_bare() {
                copy.set_attr("to", to.bare_string());
            }
            t.deliver(copy);
        }
        return;
    }
    if kind == "headline" {
        return;
    }
    match server.storage.user_exists(user).await {
        Ok(true) => {}
        Ok(false) => return bounce(server, &stanza, StanzaError::service_unavailable()),
        Err(_) => return bounce(server, &stanza, StanzaError::internal()),
    }
    crate::modules::offline::store(server, user, stanza).await;
}

async fn route_iq(
    server: &Arc<Server>,
    iq: Element,
    from: Jid,
    to: Option<Jid>,
    sender: Option<&SessionHandle>,
) {
    let kind = iq.attr("type").unwrap_or("");
    let to = to.unwrap_or_else(|| from.bare());
    if to.domain != server.domain() {
        return bounce(
            server,
            &iq,
            StanzaError::new("cancel", "remote-server-not-found"),
        );
    }
    // Full JID of a session: pass it on, results and errors included.
    if !to.is_bare() {
        match server.router.session(&to) {
            Some(s) => {
                s.deliver(iq);
            }
            None => bounce(server, &iq, StanzaError::service_unavailable()),
        }
        return;
    }
    if kind != "get" && kind != "set" {
        // Results and errors addressed to the server or a bare JID answer nothing we asked.
        return;
    }
    let payload = match iq.first_element() {
        Some(p) if iq.elements().count() == 1 => p.clone(),
        _ => return bounce(server, &iq, StanzaError::bad_request()),
    };
    let Some(module) = server.modules.for_namespace(&payload.ns) else {
        return bounce(server, &iq, StanzaError::service_unavailable());
    };
    let request = IqRequest {
        server,
        from: &from,
        to: &to,
        iq: &iq,
        payload: &payload,
        session: sender,
    };
    match module.handle_iq(request).await {
        Ok(payload) => {
            let mut reply = iq_result(&iq, payload);
            if iq.attr("to").is_none() {
                reply.remove_attr("from");
            }
            deliver_to_full(server, reply);
        }
        Err(e) => bounce(server, &iq, e),
    }
}

/// Builds a presence stanza in the client namespace.
pub fn presence(from: &str, to: &str, kind: Option<&str>) -> Element {
    let mut p = Element::new("presence", ns::CLIENT)
        .with_attr("from", from)
        .with_attr("to", to);
    if let Some(k) = kind {
        p.set_attr("type", k);
    }
    p
}
