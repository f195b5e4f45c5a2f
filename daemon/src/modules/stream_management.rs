//! XEP-0198: stream management. After `<enable/>` a session counts the stanzas it handled from
//! the client and the ones it wrote (`h`, modulo 2^32), keeps what the client has not
//! acknowledged, and asks for an ack (`<r/>`) whenever stanzas are outstanding and no request
//! is, so the queue drains at the pace of the client's round trips. The counting sits on the one
//! write path as the last layer, so it counts exactly what reaches the socket (after CSI).
//!
//! With `resume='true'` a session whose connection breaks is kept (hibernated) for
//! `hibernate_secs`: stanzas for it keep passing the layer into the unacknowledged queue, and a
//! new stream of the same account that sends `<resume previd h/>` takes the session over and
//! gets everything the client had not acknowledged, in order. When a session ends for good
//! (expiry, replacement, a clean logout) its unacknowledged messages are routed again to the
//! account — its other sessions or offline storage — with a delay stamp; unanswered IQ
//! requests get an error. A client that never acks is disconnected when the queue is full.

use super::{Module, NonzaResult, Unbound};
use crate::c2s::outbound::{OutboundLayer, SessionLocal};
use crate::c2s::session::{link_door, AttachRequest, Detached, LinkDoor};
use crate::hooks::{BoxFut, CloseReason, FeaturePhase, Flow, Hook, SessionEvent};
use crate::jid::Jid;
use crate::server::Server;
use crate::sessions::{Kick, SessionHandle, SessionShared};
use crate::stanza::{self, StanzaError};
use crate::storage::now_secs;
use crate::xml::{ns, Element};
use serde::{Deserialize, Serialize};
use std::any::Any;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const NS: &str = "urn:xmpp:sm:3";
const DELAY: &str = "urn:xmpp:delay";

/// `[modules.stream_management]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StreamManagementConfig {
    /// How long a session whose connection broke waits to be resumed.
    #[serde(default = "default_hibernate_secs")]
    pub hibernate_secs: u64,
    /// Sessions hibernating at once; beyond it a broken session ends at once.
    #[serde(default = "default_max_hibernating")]
    pub max_hibernating: usize,
    /// Stanzas a session keeps for the client to acknowledge. Beyond it the oldest must have
    /// been sent less than `ACK_GRACE_SECS` ago (a burst such as an offline flush is fine, a
    /// client that stopped acking is not), and beyond `HARD_LIMIT_FACTOR` times it nothing more
    /// is kept: the client is disconnected and the stanzas routed as for an ended session.
    #[serde(default = "default_max_unacked")]
    pub max_unacked: usize,
}

impl Default for StreamManagementConfig {
    fn default() -> Self {
        StreamManagementConfig {
            hibernate_secs: default_hibernate_secs(),
            max_hibernating: default_max_hibernating(),
            max_unacked: default_max_unacked(),
        }
    }
}

impl StreamManagementConfig {
    /// Values that would make the module useless or unbounded.
    pub fn check(&self) -> Result<(), String> {
        if self.max_unacked == 0 {
            return Err("modules.stream_management.max_unacked must be at least 1".into());
        }
        if self.hibernate_secs > 86_400 {
            return Err(
                "modules.stream_management.hibernate_secs must be at most 86400 (a day)".into(),
            );
        }
        Ok(())
    }
}

fn default_hibernate_secs() -> u64 {
    300
}
fn default_max_hibernating() -> usize {
    200
}
fn default_max_unacked() -> usize {
    500
}

/// The layer sits after every other one: it counts what is actually written.
const LAYER_PRIORITY: i16 = i16::MIN;
/// How long a full queue may wait for the client's acks.
const ACK_GRACE_SECS: i64 = 30;
/// The queue never holds more than this many times `max_unacked`.
const HARD_LIMIT_FACTOR: usize = 4;
/// Ended sessions remembered so a late `<resume/>` learns the final `h` (XEP-0198 §5).
const REMEMBER_ENDED: usize = 256;

/// A session's counters and unacknowledged stanzas.
pub struct SmLayer {
    shared: Arc<SessionShared>,
    /// The resumption id, when the client asked for resumption.
    resume_id: Option<Arc<str>>,
    /// Stanzas written to the client (`h` of the outbound direction).
    sent: u32,
    /// The client's last `h`: everything up to it left the queue.
    acked: u32,
    /// Stanzas `acked+1 ..= sent`, with the time each was first queued.
    unacked: VecDeque<(Element, i64)>,
    /// Stanzas handled from the client (our `h`).
    received: u32,
    /// An `<r/>` is out and its `<a/>` has not come yet.
    ack_requested: bool,
    max_unacked: usize,
}

impl SmLayer {
    fn new(shared: Arc<SessionShared>, max_unacked: usize) -> SmLayer {
        SmLayer {
            shared,
            resume_id: None,
            sent: 0,
            acked: 0,
            unacked: VecDeque::new(),
            received: 0,
            ack_requested: false,
            max_unacked,
        }
    }

    /// Whether the queue is over its bounds (see `StreamManagementConfig::max_unacked`).
    fn too_much(&self, now: i64) -> bool {
        let len = self.unacked.len();
        let oldest = self.unacked.front().map_or(now, |(_, t)| *t);
        len >= self.max_unacked.saturating_mul(HARD_LIMIT_FACTOR)
            || (len >= self.max_unacked && now - oldest > ACK_GRACE_SECS)
    }

    /// The client acknowledged everything up to `h`; `Err` when it claims more than was sent.
    fn ack(&mut self, h: u32) -> Result<usize, String> {
        let n = h.wrapping_sub(self.acked) as usize;
        if n > self.unacked.len() {
            return Err(format!(
                "acknowledged {h}, but only {} stanzas were sent",
                self.sent
            ));
        }
        self.unacked.drain(..n);
        if self.unacked.is_empty() {
            // An idle, fully acknowledged session keeps no queue space (~400 bytes each with
            // 1,000 idle sessions): the next stanza allocates it again.
            self.unacked = VecDeque::new();
        }
        self.acked = h;
        Ok(n)
    }
}

impl OutboundLayer for SmLayer {
    fn outgoing(&mut self, stanza: Element, pass: &mut Vec<Element>) {
        self.sent = self.sent.wrapping_add(1);
        let now = now_secs();
        if self.too_much(now) {
            // Not reading or not acking: end the session; what is queued is routed elsewhere.
            self.shared.kick(Kick::TooSlow);
        }
        self.unacked.push_back((stanza.clone(), now));
        pass.push(stanza);
        if !self.ack_requested {
            self.ack_requested = true;
            pass.push(Element::new("r", NS));
        }
    }
    fn received(&mut self, _stanza: &Element) {
        self.received = self.received.wrapping_add(1);
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

/// A resumable session, found by its id.
struct Resumable {
    account: String,
    inbox: LinkDoor,
    hibernating: bool,
}

#[derive(Default)]
struct Registry {
    live: HashMap<Arc<str>, Resumable>,
    /// (id, account, final h) of sessions that ended, newest last.
    ended: VecDeque<(Arc<str>, String, u32)>,
}

pub struct StreamManagement {
    config: StreamManagementConfig,
    registry: Mutex<Registry>,
}

impl StreamManagement {
    pub fn new(config: &StreamManagementConfig) -> StreamManagement {
        StreamManagement {
            config: config.clone(),
            registry: Mutex::default(),
        }
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// `<failed/>` with a stanza error condition, and `h` when known.
fn failed(condition: &str, h: Option<u32>) -> Element {
    let mut f = Element::new("failed", NS).with_child(Element::new(condition, ns::STANZA_ERRORS));
    if let Some(h) = h {
        f.set_attr("h", h.to_string());
    }
    f
}

/// An unguessable resumption id (144 random bits); `None` if the system has no randomness.
fn secret_id() -> Option<String> {
    use base64::Engine;
    let mut buf = [0u8; 18];
    getrandom::getrandom(&mut buf).ok()?;
    Some(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf))
}

fn parse_h(el: &Element) -> Option<u32> {
    el.attr("h")?.parse().ok()
}

impl Module for StreamManagement {
    fn name(&self) -> &'static str {
        "stream_management"
    }
    fn hooks(&self) -> &'static [(Hook, i16)] {
        &[
            (Hook::SessionClosing, 0),
            (Hook::SessionReattached, 0),
            (Hook::SessionClosed, 100),
        ]
    }
    fn stream_features(&self, _server: &Server, phase: FeaturePhase, out: &mut Vec<Element>) {
        if phase == FeaturePhase::AfterAuth {
            out.push(Element::new("sm", NS));
        }
    }
    fn nonzas(&self) -> &'static [(&'static str, &'static str)] {
        &[("enable", NS), ("r", NS), ("a", NS), ("resume", NS)]
    }

    fn on_nonza<'a>(
        &'a self,
        _server: &'a Arc<Server>,
        session: &'a SessionHandle,
        local: &'a mut SessionLocal,
        nonza: &'a Element,
    ) -> BoxFut<'a, NonzaResult> {
        Box::pin(async move {
            // A failed write is not answered here: the broken link shows on the reading side,
            // and a hibernation must not be lost to a stream error.
            let Some(layer) = local.layer_mut::<SmLayer>() else {
                if nonza.name == "enable" {
                    return self.enable(session, local, nonza).await;
                }
                let f = failed("unexpected-request", None);
                let _ = local.send_nonza(&f.to_xml(ns::CLIENT)).await;
                return Ok(());
            };
            match nonza.name.as_str() {
                "r" => {
                    let a = format!("<a xmlns='{NS}' h='{}'/>", layer.received);
                    let _ = local.send_nonza(&a).await;
                    Ok(())
                }
                "a" => {
                    let Some(h) = parse_h(nonza) else {
                        return Err(("undefined-condition", "<a/> without a number h".into()));
                    };
                    layer.ack(h).map_err(|e| ("undefined-condition", e))?;
                    layer.ack_requested = !layer.unacked.is_empty();
                    if layer.ack_requested {
                        // Stanzas went out after the last request: ask again, so none lingers.
                        let _ = local.send_nonza(&format!("<r xmlns='{NS}'/>")).await;
                    }
                    Ok(())
                }
                // `enable` twice, or `resume` on a bound stream.
                _ => {
                    let f = failed("unexpected-request", None);
                    let _ = local.send_nonza(&f.to_xml(ns::CLIENT)).await;
                    Ok(())
                }
            }
        })
    }

    fn on_unbound_nonza<'a>(
        &'a self,
        _server: &'a Arc<Server>,
        account: &'a Jid,
        nonza: &'a Element,
    ) -> BoxFut<'a, Option<Unbound>> {
        Box::pin(async move {
            if nonza.name != "resume" {
                // `enable` before binding (XEP-0198 §3), or an ack without a session.
                return Some(Unbound::Reply(failed("unexpected-request", None)));
            }
            let (Some(previd), Some(_)) = (nonza.attr("previd"), parse_h(nonza)) else {
                return Some(Unbound::Reply(failed("bad-request", None)));
            };
            let account = account.bare_string();
            let registry = self.registry();
            if let Some(r) = registry.live.get(previd) {
                // Another account's session looks exactly like an unknown one.
                if r.account == account {
                    return Some(Unbound::HandOver {
                        to: r.inbox.clone(),
                        if_gone: failed("item-not-found", None),
                    });
                }
            }
            let h = registry
                .ended
                .iter()
                .find(|(id, acc, _)| &**id == previd && *acc == account)
                .map(|(_, _, h)| *h);
            Some(Unbound::Reply(failed("item-not-found", h)))
        })
    }

    fn on_session<'a>(
        &'a self,
        server: &'a Arc<Server>,
        hook: Hook,
        ev: &'a mut SessionEvent<'_>,
    ) -> BoxFut<'a, Flow> {
        Box::pin(async move {
            match hook {
                Hook::SessionClosing => self.hibernate(ev),
                Hook::SessionReattached => {
                    self.resumed(ev).await;
                    Flow::Continue
                }
                Hook::SessionClosed => {
                    self.ended(server, ev).await;
                    Flow::Continue
                }
                _ => Flow::Continue,
            }
        })
    }
}

impl StreamManagement {
    async fn enable(
        &self,
        session: &SessionHandle,
        local: &mut SessionLocal,
        nonza: &Element,
    ) -> NonzaResult {
        let mut layer = SmLayer::new(session.shared.clone(), self.config.max_unacked);
        let mut enabled = Element::new("enabled", NS);
        if matches!(nonza.attr("resume"), Some("true" | "1")) && self.config.hibernate_secs > 0 {
            if let Some(id) = secret_id() {
                let id: Arc<str> = id.into();
                let (door, inbox) = link_door();
                self.registry().live.insert(
                    id.clone(),
                    Resumable {
                        account: session.jid.bare_string(),
                        inbox: door,
                        hibernating: false,
                    },
                );
                // The core takes the inbox from `ext` after this nonza.
                local.ext.insert(inbox);
                enabled.set_attr("id", id.to_string());
                enabled.set_attr("resume", "true");
                enabled.set_attr("max", self.config.hibernate_secs.to_string());
                layer.resume_id = Some(id);
            }
        }
        local.install_layer(LAYER_PRIORITY, Box::new(layer));
        let _ = local.send_nonza(&enabled.to_xml(ns::CLIENT)).await;
        Ok(())
    }

    fn hibernate(&self, ev: &mut SessionEvent<'_>) -> Flow {
        if ev.reason != Some(CloseReason::LinkLost) {
            return Flow::Continue;
        }
        let Some(id) = ev
            .local
            .layer_mut::<SmLayer>()
            .and_then(|l| l.resume_id.clone())
        else {
            return Flow::Continue;
        };
        {
            let mut registry = self.registry();
            let busy = registry.live.values().filter(|r| r.hibernating).count();
            if busy >= self.config.max_hibernating {
                log::warn!(
                    "{}: not kept for resumption, {busy} sessions already are",
                    ev.session.jid
                );
                return Flow::Continue;
            }
            match registry.live.get_mut(&id) {
                Some(r) => r.hibernating = true,
                None => return Flow::Continue,
            }
        }
        let until = tokio::time::Instant::now() + Duration::from_secs(self.config.hibernate_secs);
        ev.local.ext.insert(Detached { until });
        Flow::Handled
    }

    async fn resumed(&self, ev: &mut SessionEvent<'_>) {
        let request = ev
            .local
            .ext
            .get_mut::<AttachRequest>()
            .and_then(|r| r.0.take());
        let Some(request) = request else { return };
        let Some(layer) = ev.local.layer_mut::<SmLayer>() else {
            return;
        };
        if let Some(id) = &layer.resume_id {
            if let Some(r) = self.registry().live.get_mut(id) {
                r.hibernating = false;
            }
        }
        let h = parse_h(&request).unwrap_or(layer.acked);
        if let Err(e) = layer.ack(h) {
            // Resend everything rather than lose something.
            log::warn!("{}: resume with a bad h: {e}", ev.session.jid);
        }
        let mut xml = Element::new("resumed", NS)
            .with_attr("previd", request.attr("previd").unwrap_or_default())
            .with_attr("h", layer.received.to_string())
            .to_xml(ns::CLIENT);
        for (stanza, queued) in &layer.unacked {
            let mut again = stanza.clone();
            if again.name == "message" && again.child("delay", DELAY).is_none() {
                again.push_child(delay(ev.session.jid.domain.as_str(), *queued));
            }
            again.write_to(&mut xml, ns::CLIENT);
        }
        layer.ack_requested = !layer.unacked.is_empty();
        if layer.ack_requested {
            xml.push_str(&format!("<r xmlns='{NS}'/>"));
        }
        log::info!(
            "{}: resumed, {} stanzas sent again",
            ev.session.jid,
            layer.unacked.len()
        );
        let _ = ev.local.send_nonza(&xml).await;
    }

    /// The session is gone: forget it, and route what the client never acknowledged.
    async fn ended(&self, server: &Arc<Server>, ev: &mut SessionEvent<'_>) {
        let Some(mut boxed) = ev.local.take_layer::<SmLayer>() else {
            return;
        };
        let Some(layer) = boxed.as_any_mut().downcast_mut::<SmLayer>() else {
            return;
        };
        if let Some(id) = layer.resume_id.take() {
            let mut registry = self.registry();
            registry.live.remove(&id);
            registry
                .ended
                .push_back((id, ev.session.jid.bare_string(), layer.received));
            if registry.ended.len() > REMEMBER_ENDED {
                registry.ended.pop_front();
            }
        }
        let unacked = std::mem::take(&mut layer.unacked);
        if !unacked.is_empty() {
            log::info!(
                "{}: {} stanzas were not acknowledged; routing them again",
                ev.session.jid,
                unacked.len()
            );
        }
        let account = ev.session.jid.bare();
        for (stanza, queued) in unacked {
            reroute(server, stanza, queued, &account).await;
        }
    }
}

/// An unacknowledged stanza of an ended session: a message goes to the account again (its
/// other sessions or offline storage); an IQ request gets an error; presence is dropped (the
/// next session gets fresh presence from its contacts).
async fn reroute(server: &Arc<Server>, mut stanza: Element, queued: i64, account: &Jid) {
    match stanza.name.as_str() {
        "message" => {
            if !matches!(stanza::stanza_type(&stanza), "normal" | "chat" | "headline") {
                return;
            }
            let Some(from) = stanza::from_jid(&stanza) else {
                return;
            };
            if from == *account {
                // A copy the server made for this session alone (a carbon, an archive result):
                // the other sessions have their own.
                return;
            }
            if stanza.child("delay", DELAY).is_none() {
                stanza.push_child(delay(server.domain(), queued));
            }
            stanza.set_attr("to", account.to_string());
            crate::delivery::inbound(server, stanza, from, account.clone(), None).await;
        }
        "iq" if matches!(stanza.attr("type"), Some("get" | "set")) => {
            let err = StanzaError::new("cancel", "recipient-unavailable");
            crate::delivery::bounce(server, &stanza, err);
        }
        _ => {}
    }
}

/// The stanzas a session's client has not acknowledged, if it asked for resumption (the empty
/// list otherwise): when its link breaks it may hibernate, and its client sees them only on
/// resuming. Push notifications look at them then.
pub fn unacked_if_resumable(local: &mut SessionLocal) -> impl Iterator<Item = &Element> {
    local
        .layer_mut::<SmLayer>()
        .filter(|l| l.resume_id.is_some())
        .into_iter()
        .flat_map(|l| l.unacked.iter().map(|(stanza, _)| stanza))
}

fn delay(domain: &str, stamp: i64) -> Element {
    Element::new("delay", DELAY)
        .with_attr("from", domain.to_string())
        .with_attr("stamp", crate::timefmt::xep0082(stamp))
}

#[cfg(test)]
#[path = "stream_management_tests.rs"]
mod tests;
