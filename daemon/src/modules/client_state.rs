//! XEP-0352: Client State Indication. A phone whose screen is off says `<inactive/>`; until it
//! says `<active/>` again the server holds back what can wait (presence updates, chat states,
//! receipts, PEP notifications), so the radio can sleep, and sends at once what a person waits
//! for (a message with a body, an IQ, an error). Held presence is collapsed to the newest per
//! contact resource, which is all a client would show anyway.
//!
//! The holding is an `OutboundLayer` on the session's one write path, installed on the first
//! `<inactive/>`: a session that never uses CSI pays nothing. Its priority is high, so it sees
//! stanzas before stream management's counting layer: what CSI holds has not been sent and is
//! not counted yet.

use super::{Module, NonzaResult};
use crate::c2s::outbound::{OutboundLayer, SessionLocal};
use crate::hooks::{BoxFut, CloseReason, FeaturePhase, Flow, Hook, SessionEvent};
use crate::server::Server;
use crate::sessions::SessionHandle;
use crate::stanza;
use crate::xml::{ns, Element};
use serde::{Deserialize, Serialize};
use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

pub const NS: &str = "urn:xmpp:csi:0";
const CARBONS: &str = "urn:xmpp:carbons:2";
const FORWARD: &str = "urn:xmpp:forward:0";
/// Payloads that mean "someone wants this person now", even without a `<body/>`: encrypted
/// messages (OMEMO, OpenPGP), call invitations, group chat invitations, archive results the
/// client is paging through.
const URGENT_PAYLOADS: &[&str] = &[
    "eu.siacs.conversations.axolotl",
    "urn:xmpp:omemo:2",
    "urn:xmpp:openpgp:0",
    "jabber:x:encrypted",
    "urn:xmpp:jingle-message:0",
    "jabber:x:conference",
    "urn:xmpp:mam:2",
];

/// Layers with a higher priority see a stanza first; stream management counts below this.
const LAYER_PRIORITY: i16 = 100;
/// How long the closing flush may take: a link that is gone must not stall the session's end.
const CLOSING_FLUSH: Duration = Duration::from_secs(2);

/// `[modules.csi]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CsiConfig {
    /// Stanzas held for one inactive session; one more flushes them all (nothing is dropped).
    #[serde(default = "default_max_held")]
    pub max_held: usize,
}

impl Default for CsiConfig {
    fn default() -> Self {
        CsiConfig {
            max_held: default_max_held(),
        }
    }
}

fn default_max_held() -> usize {
    64
}

pub struct ClientState {
    max_held: usize,
}

impl ClientState {
    pub fn new(config: &CsiConfig) -> ClientState {
        ClientState {
            max_held: config.max_held.max(1),
        }
    }
}

/// Whether a stanza must reach an inactive client now, and why (or why it can wait).
pub fn urgency(st: &Element, account_local: &str) -> Result<&'static str, &'static str> {
    let kind = stanza::stanza_type(st);
    match st.name.as_str() {
        "iq" => return Ok("iq"),
        "presence" => {
            return match kind {
                "available" | "unavailable" => Err("presence update"),
                "error" => Ok("error"),
                // subscribe, subscribed, unsubscribe, unsubscribed: the person decides.
                _ => Ok("subscription"),
            };
        }
        "message" => {}
        _ => return Ok("not a stanza"),
    }
    if kind == "error" {
        return Ok("error");
    }
    // A carbon is as urgent as the message it carries.
    let carried = ["received", "sent"].iter().find_map(|w| {
        st.child(w, CARBONS)?
            .child("forwarded", FORWARD)?
            .child("message", ns::CLIENT)
    });
    if let Some(inner) = carried {
        return urgency(inner, account_local);
    }
    if st
        .elements()
        .any(|c| URGENT_PAYLOADS.contains(&c.ns.as_str()))
    {
        return Ok("urgent payload");
    }
    let Some(body) = st.child("body", ns::CLIENT) else {
        return Err("no body (chat state, receipt, marker, notification)");
    };
    if kind == "groupchat" {
        // Room chatter can wait; a message that names the user cannot.
        let text = body.text().to_lowercase();
        return if !account_local.is_empty() && text.contains(&account_local.to_lowercase()) {
            Ok("mention")
        } else {
            Err("group chat")
        };
    }
    Ok("body")
}

/// What an inactive session holds back. Installed on the first `<inactive/>`, kept afterwards
/// (empty while active).
pub struct HoldLayer {
    inactive: bool,
    max_held: usize,
    /// The account's local part, to spot mentions in group chat.
    account_local: String,
    held: Vec<Element>,
}

impl HoldLayer {
    pub fn new(max_held: usize, account_local: &str) -> HoldLayer {
        HoldLayer {
            inactive: false,
            max_held,
            account_local: account_local.to_string(),
            held: Vec::new(),
        }
    }

    pub fn held(&self) -> usize {
        self.held.len()
    }

    fn hold(&mut self, st: Element, pass: &mut Vec<Element>) {
        if st.name == "presence" {
            // The newest presence of a contact resource replaces the one held before; it goes
            // to the end so the order of what is left stays the order things happened.
            let from = st.attr("from");
            if let Some(i) = self
                .held
                .iter()
                .position(|h| h.name == "presence" && h.attr("from") == from)
            {
                self.held.remove(i);
            }
        }
        if self.held.len() >= self.max_held {
            // Full: everything goes out rather than anything being lost.
            pass.append(&mut self.held);
            pass.push(st);
            self.held = Vec::new();
            return;
        }
        self.held.push(st);
    }
}

impl OutboundLayer for HoldLayer {
    fn outgoing(&mut self, stanza: Element, pass: &mut Vec<Element>) {
        if !self.inactive {
            pass.push(stanza);
            return;
        }
        match urgency(&stanza, &self.account_local) {
            Err(why) => {
                log::trace!("csi: holding ({why})");
                self.hold(stanza, pass);
            }
            Ok(why) => {
                // The radio wakes for this anyway: what waited goes first, so the client sees
                // things in the order they happened.
                log::trace!(
                    "csi: sending at once ({why}), with {} held",
                    self.held.len()
                );
                pass.append(&mut self.held);
                self.held = Vec::new();
                pass.push(stanza);
            }
        }
    }
    fn release(&mut self, pass: &mut Vec<Element>) {
        if !self.inactive && !self.held.is_empty() {
            pass.append(&mut self.held);
            self.held = Vec::new();
        }
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

impl Module for ClientState {
    fn name(&self) -> &'static str {
        "csi"
    }
    fn hooks(&self) -> &'static [(Hook, i16)] {
        // Before stream management decides what happens to the session's unsent stanzas.
        &[(Hook::SessionClosing, 100)]
    }
    fn stream_features(&self, _server: &Server, phase: FeaturePhase, out: &mut Vec<Element>) {
        if phase == FeaturePhase::AfterAuth {
            out.push(Element::new("csi", NS));
        }
    }
    fn nonzas(&self) -> &'static [(&'static str, &'static str)] {
        &[("active", NS), ("inactive", NS)]
    }
    fn on_nonza<'a>(
        &'a self,
        _server: &'a Arc<Server>,
        session: &'a SessionHandle,
        local: &'a mut SessionLocal,
        nonza: &'a Element,
    ) -> BoxFut<'a, NonzaResult> {
        let inactive = nonza.name == "inactive";
        if local.layer_mut::<HoldLayer>().is_none() {
            if !inactive {
                // Active is the default: nothing to change, nothing to install.
                return Box::pin(async { Ok(()) });
            }
            let account = session.jid.local.as_deref().unwrap_or("");
            local.install_layer(
                LAYER_PRIORITY,
                Box::new(HoldLayer::new(self.max_held, account)),
            );
        }
        if let Some(layer) = local.layer_mut::<HoldLayer>() {
            layer.inactive = inactive;
        }
        // On `<active/>` the session asks the layers for released stanzas right after this.
        Box::pin(async { Ok(()) })
    }
    fn on_session<'a>(
        &'a self,
        _server: &'a Arc<Server>,
        _hook: Hook,
        ev: &'a mut SessionEvent<'_>,
    ) -> BoxFut<'a, Flow> {
        Box::pin(async move {
            let Some(layer) = ev.local.layer_mut::<HoldLayer>() else {
                return Flow::Continue;
            };
            if layer.held.is_empty() {
                return Flow::Continue;
            }
            // The stream ends: what was held goes out now, through the layers below (stream
            // management keeps it for a resumption if the link is gone).
            layer.inactive = false;
            let why = ev.reason.clone().unwrap_or(CloseReason::Logout);
            let flushed = tokio::time::timeout(CLOSING_FLUSH, ev.local.release()).await;
            if !matches!(flushed, Ok(Ok(()))) {
                log::debug!("csi: held stanzas not written at close ({why:?})");
            }
            Flow::Continue
        })
    }
}

#[cfg(test)]
#[path = "client_state_tests.rs"]
mod tests;
