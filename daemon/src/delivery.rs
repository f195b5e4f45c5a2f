//! Delivery rules (RFC 6120 §10, RFC 6121 §8): where a stanza goes, with the module hooks at
//! each step. A stanza from a local session passes the `Outbound` hooks, is routed, and, when
//! it is for a local account, passes the `InboundBare`/`InboundFull` hooks with the sessions the
//! rules chose; if none takes it, the `Undeliverable` hooks. IQs to the server or a bare JID go
//! to the module registered for their type, target and namespace.

use crate::c2s::outbound::SessionLocal;
use crate::hooks::{Flow, Hook, IqTarget, Kind, Pending, StanzaEvent};
use crate::jid::Jid;
use crate::modules::IqRequest;
use crate::server::Server;
use crate::sessions::SessionHandle;
use crate::stanza::{self, error_reply, iq_result, StanzaError};
use crate::xml::{ns, Element};
use std::sync::Arc;

/// Sends a stanza error back to the sender of `original`, if it is a local session.
pub fn bounce(server: &Arc<Server>, original: &Element, err: StanzaError) {
    if let Some(reply) = error_reply(original, &err) {
        deliver_to_full(server, reply);
    }
}

/// Delivers a server-made stanza (a reply, a push) without hooks: through the route of another
/// domain (a hosted service, a remote server), or to a local full JID (dropped if that session is
/// gone). An IQ answer for a local bare JID or the domain (a question the server asked, for
/// itself or on an account's behalf, bounced) goes to the IQ tracker, so the asker learns at
/// once rather than at its deadline.
pub fn deliver_to_full(server: &Arc<Server>, stanza: Element) {
    if let Some(to) = stanza::to_jid(&stanza).and_then(Result::ok) {
        if to.domain != server.domain() {
            if let Some(route) = server.domains.route_for(&to.domain) {
                if let Err(r) = route.accept(server, stanza, &to) {
                    log::debug!("a reply to {to} was not taken: {}", r.error.condition);
                }
            }
            return;
        }
        if to.is_bare() {
            if stanza::is_iq(&stanza) && matches!(stanza.attr("type"), Some("result" | "error")) {
                if let Some(from) = stanza::from_jid(&stanza) {
                    server.iq_tracker.resolve(&from, stanza);
                }
            }
            return;
        }
        if let Some(session) = server.sessions.session(&to) {
            session.deliver(stanza);
        }
    }
}

/// A stanza for a domain that is not the server's own: its route (a service hosted here,
/// federation), or `remote-server-not-found` when nothing routes there.
fn to_other_domain(server: &Arc<Server>, stanza: Element, to: &Jid) {
    match server.domains.route_for(&to.domain) {
        Some(route) => {
            if let Err(r) = route.accept(server, stanza, to) {
                bounce(server, &r.stanza, r.error);
            }
        }
        None => bounce(
            server,
            &stanza,
            StanzaError::new("cancel", "remote-server-not-found"),
        ),
    }
}

/// The available sessions that messages to the bare JID go to: highest non-negative priority.
pub fn message_targets(server: &Server, bare: &str) -> Vec<SessionHandle> {
    let sessions: Vec<_> = server
        .sessions
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

/// A stanza a local session sent (`from` stamped): the outbound hooks, then routing.
pub async fn from_session(
    server: &Arc<Server>,
    stanza: Element,
    sender: &SessionHandle,
    local: &mut SessionLocal,
) {
    let Some(kind) = Kind::of(&stanza) else {
        return;
    };
    let to = match stanza::to_jid(&stanza) {
        None => None,
        Some(Ok(j)) => Some(j),
        Some(Err(_)) => {
            return bounce(server, &stanza, StanzaError::new("modify", "jid-malformed"))
        }
    };
    let mut ev = StanzaEvent {
        kind,
        stanza,
        from: sender.jid.clone(),
        to,
        sender: Some(sender),
        local: Some(local),
        targets: Vec::new(),
        pending: Pending::default(),
    };
    let flow = server
        .modules
        .stanza_event(server, Hook::Outbound(kind), &mut ev)
        .await;
    let pending = std::mem::take(&mut ev.pending);
    match flow {
        Flow::Continue => route(server, ev.stanza, Some(sender)).await,
        Flow::Handled | Flow::Drop => {}
        Flow::Bounce(e) => bounce(server, &ev.stanza, e),
    }
    // Routed and delivered; the stanza counts as handled once the sender's writes are done.
    pending.settle().await;
}

/// Routes a stanza from a local user or from the server itself; `from` is already stamped.
pub async fn route(server: &Arc<Server>, stanza: Element, sender: Option<&SessionHandle>) {
    let to = match stanza::to_jid(&stanza) {
        None => None,
        Some(Ok(j)) => Some(j),
        Some(Err(_)) => {
            return bounce(server, &stanza, StanzaError::new("modify", "jid-malformed"))
        }
    };
    let Some(from) = stanza::from_jid(&stanza) else {
        return;
    };
    let Some(kind) = Kind::of(&stanza) else {
        return;
    };
    if kind == Kind::Iq {
        return route_iq(server, stanza, from, to, sender).await;
    }
    // No `to` means the user's own account (RFC 6120 §10.3.1).
    let mut stanza = stanza;
    let to = match to {
        Some(to) => to,
        None => {
            stanza.set_attr("to", from.bare_string());
            from.bare()
        }
    };
    if to.domain != server.domain() {
        return to_other_domain(server, stanza, &to);
    }
    if to.local.is_none() {
        // Messages to the server itself: nothing here reads them. Presence to it: ignored.
        if kind == Kind::Message {
            bounce(server, &stanza, StanzaError::service_unavailable());
        }
        return;
    }
    inbound(server, stanza, from, to, sender).await;
}

/// A message or presence for a local account: pick the target sessions (RFC 6121 §8.5), run the
/// inbound hooks, deliver, and if nobody took it run the undeliverable hooks.
pub async fn inbound(
    server: &Arc<Server>,
    stanza: Element,
    from: Jid,
    to: Jid,
    sender: Option<&SessionHandle>,
) {
    let Some(kind) = Kind::of(&stanza) else {
        return;
    };
    let kind_attr = stanza::stanza_type(&stanza).to_string();
    let full_session = (!to.is_bare())
        .then(|| server.sessions.session(&to))
        .flatten();
    // A message to a full JID that is not bound is treated as one to the bare JID (§8.5.3.2.1).
    let as_bare = to.is_bare() || (full_session.is_none() && kind == Kind::Message);
    let targets = match (&full_session, kind) {
        (Some(s), _) => vec![s.clone()],
        (None, Kind::Message) if as_bare => match kind_attr.as_str() {
            "groupchat" => return bounce(server, &stanza, StanzaError::service_unavailable()),
            "error" | "headline" if !to.is_bare() => return,
            "error" => return,
            _ => message_targets(server, &to.bare_string()),
        },
        (None, Kind::Presence) if to.is_bare() => server
            .sessions
            .sessions_of(&to.bare_string())
            .into_iter()
            .filter(SessionHandle::available)
            .collect(),
        _ => Vec::new(),
    };
    let hook = if full_session.is_some() || !as_bare {
        Hook::InboundFull(kind)
    } else {
        Hook::InboundBare(kind)
    };
    let mut ev = StanzaEvent {
        kind,
        stanza,
        from,
        to: Some(to),
        sender,
        local: None,
        targets,
        pending: Pending::default(),
    };
    let flow = server.modules.stanza_event(server, hook, &mut ev).await;
    let pending = std::mem::take(&mut ev.pending);
    deliver_inbound(server, ev, flow, &kind_attr).await;
    // Delivered (or stored); the stanza counts as handled once the hooks' writes are done.
    pending.settle().await;
}

/// The end of [`inbound`]: the targets get the stanza, or the undeliverable hooks run.
async fn deliver_inbound(
    server: &Arc<Server>,
    mut ev: StanzaEvent<'_>,
    flow: Flow,
    kind_attr: &str,
) {
    let kind = ev.kind;
    match flow {
        Flow::Continue => {}
        Flow::Handled | Flow::Drop => return,
        Flow::Bounce(e) => return bounce(server, &ev.stanza, e),
    }
    if !ev.targets.is_empty() {
        let targets = std::mem::take(&mut ev.targets);
        let last = targets.len() - 1;
        let mut stanza = Some(ev.stanza);
        for (i, t) in targets.iter().enumerate() {
            let mut copy = if i == last {
                stanza.take().expect("taken once, at the last target")
            } else {
                stanza.as_ref().expect("kept until the last target").clone()
            };
            if kind == Kind::Presence {
                copy.set_attr("to", t.jid.to_string());
            }
            t.deliver(copy);
        }
        return;
    }
    let flow = server
        .modules
        .stanza_event(server, Hook::Undeliverable(kind), &mut ev)
        .await;
    let pending = std::mem::take(&mut ev.pending);
    match flow {
        Flow::Handled | Flow::Drop => {}
        Flow::Bounce(e) => bounce(server, &ev.stanza, e),
        // Nobody kept it: say so for messages a person sent (RFC 6121 §8.5.2.2).
        Flow::Continue => {
            if kind == Kind::Message && matches!(kind_attr, "normal" | "chat") {
                bounce(server, &ev.stanza, StanzaError::service_unavailable());
            }
        }
    }
    pending.settle().await;
}

async fn route_iq(
    server: &Arc<Server>,
    iq: Element,
    from: Jid,
    to: Option<Jid>,
    sender: Option<&SessionHandle>,
) {
    let kind = iq.attr("type").unwrap_or("").to_string();
    let to = to.unwrap_or_else(|| from.bare());
    if to.domain != server.domain() {
        return to_other_domain(server, iq, &to);
    }
    let request = matches!(kind.as_str(), "get" | "set");
    // Full JID of a session: pass it on, results and errors included.
    if !to.is_bare() {
        let targets: Vec<_> = server.sessions.session(&to).into_iter().collect();
        let mut ev = StanzaEvent {
            kind: Kind::Iq,
            stanza: iq,
            from,
            to: Some(to),
            sender,
            local: None,
            targets,
            pending: Pending::default(),
        };
        let hook = if ev.targets.is_empty() {
            Hook::Undeliverable(Kind::Iq)
        } else {
            Hook::InboundFull(Kind::Iq)
        };
        let flow = server.modules.stanza_event(server, hook, &mut ev).await;
        let pending = std::mem::take(&mut ev.pending);
        match flow {
            Flow::Continue => match ev.targets.first() {
                Some(s) => {
                    s.deliver(ev.stanza);
                }
                None if request => bounce(server, &ev.stanza, StanzaError::service_unavailable()),
                None => {}
            },
            Flow::Handled | Flow::Drop => {}
            Flow::Bounce(e) => bounce(server, &ev.stanza, e),
        }
        pending.settle().await;
        return;
    }
    if !request {
        // Results and errors for the server or an account's bare JID: answers to what a module
        // asked (itself or on the account's behalf, as push notifications are), or stray.
        server.iq_tracker.resolve(&from, iq);
        return;
    }
    let target = if to.local.is_none() {
        IqTarget::Server
    } else if to.bare() == from.bare() {
        IqTarget::OwnAccount
    } else {
        IqTarget::OtherAccount
    };
    let mut iq = iq;
    if target == IqTarget::OtherAccount {
        // The account answers through the server, but its owner's rules (blocking) apply first.
        let mut ev = StanzaEvent {
            kind: Kind::Iq,
            stanza: iq,
            from: from.clone(),
            to: Some(to.clone()),
            sender,
            local: None,
            targets: Vec::new(),
            pending: Pending::default(),
        };
        let flow = server
            .modules
            .stanza_event(server, Hook::InboundBare(Kind::Iq), &mut ev)
            .await;
        std::mem::take(&mut ev.pending).settle().await;
        match flow {
            Flow::Continue => iq = ev.stanza,
            Flow::Handled | Flow::Drop => return,
            Flow::Bounce(e) => return bounce(server, &ev.stanza, e),
        }
    }
    let payload = match iq.first_element() {
        Some(p) if iq.elements().count() == 1 => p.clone(),
        _ => return bounce(server, &iq, StanzaError::bad_request()),
    };
    let Some(module) = server
        .modules
        .iq_handler(&kind, target, &payload.ns)
        .cloned()
    else {
        return bounce(server, &iq, StanzaError::service_unavailable());
    };
    let request = IqRequest {
        server,
        from: &from,
        to: &to,
        iq: &iq,
        payload: &payload,
        session: sender,
        target,
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
