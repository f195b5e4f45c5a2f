//! XEP-0357: Push Notifications. A phone's client enables push with its vendor's app server
//! (a JID, a node, and a publish-options form holding its secrets); when a message a person
//! would miss reaches the account while none of its sessions has a connection (all hibernated
//! by stream management, or none at all: the message went to offline storage and the
//! archive), the server publishes a `urn:xmpp:push:summary` form to each app server, which
//! wakes the phone. So do messages left unacknowledged in stream management's queue when a
//! link breaks (written to a connection that was already dead). No notification goes out
//! while a session is connected.
//!
//! The summary says how many messages came since a session was last active and who sent the
//! last one (what Conversations and Monal read); the body only when `include_body` is set
//! (off by default: the text would pass through the vendor's servers). Each registration is
//! paced (`min_interval_secs`) and disabled when the app server refuses a notification
//! (XEP-0357 §7.1) or fails `max_failures` times in a row. The group chat service calls
//! [`notify_mention`] for occupants named in a room.

mod notify;
mod store;

pub use notify::{Summary, SUMMARY};
pub use store::Registration;

use super::{IqFuture, IqRequest, Module};
use crate::hooks::{
    BoxFut, CloseReason, DiscoInfo, DiscoTarget, Flow, Hook, IqKind, IqRoute, Kind, SessionEvent,
    StanzaEvent,
};
use crate::jid::Jid;
use crate::server::Server;
use crate::sessions::SessionHandle;
use crate::stanza::{self, StanzaError};
use crate::xml::{ns, Element};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

pub const NS: &str = "urn:xmpp:push:0";
pub const PUBSUB: &str = "http://jabber.org/protocol/pubsub";
const DATA_FORMS: &str = "jabber:x:data";
const PUBLISH_OPTIONS: &str = "http://jabber.org/protocol/pubsub#publish-options";
const DELAY: &str = "urn:xmpp:delay";

/// A node name longer than this is refused (app servers use short random tokens).
const MAX_NODE_BYTES: usize = 1024;
/// The publish-options form as XML; it holds a token and a secret or two.
const MAX_OPTIONS_BYTES: usize = 4096;
/// A body sent as `last-message-body` is cut to this many characters.
const MAX_BODY_CHARS: usize = 256;
/// Payloads that make a message worth waking a phone for without a body: encrypted messages
/// (OMEMO in both versions, OpenPGP for XMPP) and call invitations.
const NOTIFY_PAYLOADS: &[(&str, &str)] = &[
    ("encrypted", "eu.siacs.conversations.axolotl"),
    ("encrypted", "urn:xmpp:omemo:2"),
    ("openpgp", "urn:xmpp:openpgp:0"),
    ("propose", "urn:xmpp:jingle-message:0"),
];

/// `[modules.push]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PushConfig {
    /// App server registrations kept per account; enabling one more drops the oldest.
    #[serde(default = "default_max_per_account")]
    pub max_per_account: u32,
    /// Send the last message's sender (`last-message-sender`, a bare JID).
    #[serde(default = "default_true")]
    pub include_sender: bool,
    /// Send the last message's text (`last-message-body`) to the app server. Off by default:
    /// the app server is someone else's, and an OMEMO message's text is never sent.
    #[serde(default)]
    pub include_body: bool,
    /// At most one notification per registration this often; messages in between are told in
    /// one later notification with the newest summary.
    #[serde(default = "default_min_interval_secs")]
    pub min_interval_secs: u64,
    /// How long the app server has to answer a notification.
    #[serde(default = "default_reply_timeout_secs")]
    pub reply_timeout_secs: u64,
    /// Unanswered notifications (or `wait` errors) in a row that disable a registration; any
    /// other error disables it at once.
    #[serde(default = "default_max_failures")]
    pub max_failures: u32,
}

impl Default for PushConfig {
    fn default() -> Self {
        PushConfig {
            max_per_account: default_max_per_account(),
            include_sender: true,
            include_body: false,
            min_interval_secs: default_min_interval_secs(),
            reply_timeout_secs: default_reply_timeout_secs(),
            max_failures: default_max_failures(),
        }
    }
}

impl PushConfig {
    /// Values that would make the module useless or unbounded.
    pub fn check(&self) -> Result<(), String> {
        if !(1..=100).contains(&self.max_per_account) {
            return Err("modules.push.max_per_account must be between 1 and 100".into());
        }
        if !(1..=300).contains(&self.reply_timeout_secs) {
            return Err("modules.push.reply_timeout_secs must be between 1 and 300".into());
        }
        if self.max_failures == 0 {
            return Err("modules.push.max_failures must be at least 1".into());
        }
        if self.min_interval_secs > 3600 {
            return Err("modules.push.min_interval_secs must be at most 3600 (an hour)".into());
        }
        Ok(())
    }
}

fn default_true() -> bool {
    true
}
fn default_max_per_account() -> u32 {
    10
}
fn default_min_interval_secs() -> u64 {
    5
}
fn default_reply_timeout_secs() -> u64 {
    30
}
fn default_max_failures() -> u32 {
    3
}

pub struct Push {
    state: Arc<notify::State>,
}

impl Push {
    pub fn new(config: &PushConfig) -> Push {
        Push {
            state: Arc::new(notify::State::new(config.clone())),
        }
    }
}

/// Whether a message is one a person would want to be woken for, and why (or why not).
pub fn worth_notifying(msg: &Element) -> Result<&'static str, &'static str> {
    if !matches!(stanza::stanza_type(msg), "chat" | "normal") {
        return Err("not a chat or normal message");
    }
    if let Some((name, _)) = NOTIFY_PAYLOADS
        .iter()
        .find(|(name, ns)| msg.child(name, ns).is_some())
    {
        return Ok(if *name == "propose" {
            "call"
        } else {
            "encrypted"
        });
    }
    if msg.child("body", ns::CLIENT).is_some() {
        return Ok("body");
    }
    Err("no body (chat state, receipt, marker)")
}

/// The group chat service's call for an occupant named in a room: notifies `account`'s app
/// servers (as for a direct message from `speaker`, the occupant's room JID) unless one of
/// its sessions is connected. Returns whether notifications were started.
pub fn notify_mention(server: &Arc<Server>, account: &Jid, speaker: &Jid, body: &str) -> bool {
    let Some(push) = server.modules.find::<Push>() else {
        return false;
    };
    let messages = vec![(speaker.clone(), Some(body.to_string()))];
    push.notify(server, account, None, messages)
}

/// The node of an app server's "you are unsubscribed" message (XEP-0357 §8): a pubsub
/// element naming the node, with the account's affiliation `none`.
fn remote_disable(msg: &Element) -> Option<&str> {
    let pubsub = msg.child("pubsub", PUBSUB)?;
    let gone = pubsub
        .elements()
        .any(|a| a.name == "affiliation" && a.attr("affiliation") == Some("none"));
    gone.then(|| pubsub.attr("node")).flatten()
}

/// The text to count for a message: none for an encrypted one (its body is a fallback).
fn body_of(msg: &Element) -> Option<String> {
    let encrypted = NOTIFY_PAYLOADS
        .iter()
        .any(|(name, ns)| msg.child(name, ns).is_some());
    msg.child("body", ns::CLIENT)
        .filter(|_| !encrypted)
        .map(Element::text)
}

impl Push {
    /// Counts the messages and notifies the account's app servers (in a task of its own),
    /// unless a session of the account (other than `leaving`, whose link just broke) is
    /// connected: then the client has them already.
    fn notify(
        &self,
        server: &Arc<Server>,
        account: &Jid,
        leaving: Option<u64>,
        messages: Vec<(Jid, Option<String>)>,
    ) -> bool {
        let Some(user) = account.local.clone() else {
            return false;
        };
        if server
            .sessions
            .sessions_of(&account.bare_string())
            .iter()
            .any(|s| s.connected() && Some(s.id) != leaving)
        {
            return false;
        }
        tokio::spawn(notify::notify_account(
            server.clone(),
            self.state.clone(),
            user,
            messages,
        ));
        true
    }

    /// A link broke: messages its client never acknowledged (written to a connection that
    /// was already dead, or held while the phone slept) wait in stream management's queue for
    /// a resumption that needs a wake-up. Nothing if the session did not ask for resumption.
    fn link_lost(&self, server: &Arc<Server>, ev: &mut SessionEvent<'_>) {
        let account = ev.session.jid.bare();
        let messages: Vec<_> = super::stream_management::unacked_if_resumable(ev.local)
            .filter(|m| m.name == "message" && worth_notifying(m).is_ok())
            .filter_map(|m| {
                let from = stanza::from_jid(m)?;
                // Copies the server made for this session (carbons, archive pages).
                (from.bare() != account).then(|| (from, body_of(m)))
            })
            .collect();
        if !messages.is_empty() {
            self.notify(server, &account, Some(ev.session.id), messages);
        }
    }

    /// A message reached the account (or its offline storage).
    fn message(&self, server: &Arc<Server>, hook: Hook, ev: &StanzaEvent<'_>) {
        let Some(to) = &ev.to else { return };
        let msg = &ev.stanza;
        if matches!(hook, Hook::InboundBare(_) | Hook::InboundFull(_)) {
            if let Some(node) = remote_disable(msg) {
                self.disabled_by_app_server(server, to, &ev.from, node);
            }
            if ev.targets.is_empty() {
                // Nobody takes it: the undeliverable hooks run next, and notify then.
                return;
            }
        }
        if ev.targets.iter().any(SessionHandle::connected) {
            // The common case, decided without looking at the account's other sessions.
            return;
        }
        if let Err(why) = worth_notifying(msg) {
            log::trace!("push: no notification for {to}: {why}");
            return;
        }
        if ev.from.bare() == to.bare() {
            // The account writing to itself (notes to self, a copy of its own message).
            return;
        }
        if msg
            .elements()
            .any(|d| d.is("delay", DELAY) && d.attr("from") == Some(server.domain()))
        {
            // Routed again by the server (stream management's queue of an ended session):
            // notified when it first came.
            return;
        }
        self.notify(server, to, None, vec![(ev.from.clone(), body_of(msg))]);
    }

    /// XEP-0357 §8: the app server says the registration is gone (the phone uninstalled the
    /// app); only that app server's own message can say so.
    fn disabled_by_app_server(&self, server: &Arc<Server>, to: &Jid, from: &Jid, node: &str) {
        let Some(user) = to.local.clone() else { return };
        let (app_server, node) = (from.to_string(), node.to_string());
        self.state
            .forget_app_server(&user, &app_server, Some(&node));
        let server = server.clone();
        tokio::spawn(async move {
            match store::disable(&server.storage, &user, &app_server, Some(&node)).await {
                Ok(0) => {}
                Ok(_) => log::info!("push: {app_server} disabled a registration of {user}"),
                Err(e) => log::error!("push: cannot disable a registration of {user}: {e}"),
            }
        });
    }

    async fn enable(&self, req: &IqRequest<'_>, user: &str) -> Result<(), StanzaError> {
        let p = req.payload;
        let app_server = app_server_of(p, req)?;
        let node = match p.attr("node") {
            Some(n) if !n.is_empty() && n.len() <= MAX_NODE_BYTES => n.to_string(),
            Some(n) if !n.is_empty() => return Err(bad("the node is too long")),
            _ => return Err(bad("<enable/> needs a node")),
        };
        let options = match p.child("x", DATA_FORMS) {
            None => None,
            Some(form) => Some(options_xml(form)?),
        };
        let reg = Registration {
            app_server,
            node,
            options,
        };
        let max = self.state.config.max_per_account;
        match store::enable(&req.server.storage, user, reg.clone(), max).await {
            Ok(dropped) => {
                self.state.forget(user, &reg);
                log::info!(
                    "push: {user} enabled {} ({} older registrations dropped)",
                    reg.app_server,
                    dropped
                );
                Ok(())
            }
            Err(e) => {
                log::error!("push: cannot store a registration of {user}: {e}");
                Err(StanzaError::internal())
            }
        }
    }

    async fn disable(&self, req: &IqRequest<'_>, user: &str) -> Result<(), StanzaError> {
        let app_server = app_server_of(req.payload, req)?;
        let node = req.payload.attr("node").filter(|n| !n.is_empty());
        match store::disable(&req.server.storage, user, &app_server, node).await {
            Ok(n) => {
                self.state.forget_app_server(user, &app_server, node);
                log::info!("push: {user} disabled {n} registrations with {app_server}");
                Ok(())
            }
            Err(e) => {
                log::error!("push: cannot disable a registration of {user}: {e}");
                Err(StanzaError::internal())
            }
        }
    }
}

fn bad(text: &str) -> StanzaError {
    StanzaError::bad_request().with_text(text)
}

/// The `jid` of `<enable/>` or `<disable/>`, normalised. The server itself and the account's
/// own JID are refused: notifications there would publish into the account's own storage.
fn app_server_of(p: &Element, req: &IqRequest<'_>) -> Result<String, StanzaError> {
    let jid = p
        .attr("jid")
        .ok_or_else(|| bad("the app server's jid is missing"))?;
    let jid = Jid::parse(jid).map_err(|e| {
        StanzaError::new("modify", "jid-malformed").with_text(format!("app server jid: {e}"))
    })?;
    let own_server = jid.local.is_none() && jid.domain == req.server.domain();
    if own_server || jid.bare() == req.from.bare() {
        return Err(StanzaError::new("modify", "not-acceptable")
            .with_text("the app server cannot be this server or your own account"));
    }
    Ok(jid.to_string())
}

/// The publish-options form, checked and serialised for storage.
fn options_xml(form: &Element) -> Result<String, StanzaError> {
    let form_type = form
        .elements()
        .find(|f| f.name == "field" && f.attr("var") == Some("FORM_TYPE"))
        .and_then(|f| f.child("value", DATA_FORMS))
        .map(Element::text);
    if form_type.is_some_and(|t| t != PUBLISH_OPTIONS) {
        return Err(bad("the form's FORM_TYPE must be pubsub#publish-options"));
    }
    let xml = form.to_xml(ns::CLIENT);
    if xml.len() > MAX_OPTIONS_BYTES {
        return Err(
            StanzaError::new("modify", "not-acceptable").with_text(format!(
                "the publish-options form is over {MAX_OPTIONS_BYTES} bytes"
            )),
        );
    }
    Ok(xml)
}

impl Module for Push {
    fn name(&self) -> &'static str {
        "push"
    }
    fn hooks(&self) -> &'static [(Hook, i16)] {
        &[
            // Last, after blocking, the archive and carbons had their say about the targets.
            (Hook::InboundBare(Kind::Message), -120),
            (Hook::InboundFull(Kind::Message), -120),
            // Before offline storage, which takes the message (`Handled`).
            (Hook::Undeliverable(Kind::Message), 10),
            (Hook::SessionAvailable, 0),
            (Hook::SessionReattached, -10),
            // After CSI wrote what it held (100), before stream management hibernates (0).
            (Hook::SessionClosing, 50),
        ]
    }
    fn migrations(&self) -> &'static [&'static str] {
        store::MIGRATIONS
    }
    fn disco_info(&self, _server: &Server, target: DiscoTarget, info: &mut DiscoInfo) {
        if target == DiscoTarget::Account {
            info.feature(NS);
        }
    }
    fn iqs(&self) -> &'static [IqRoute] {
        const ROUTES: &[IqRoute] = &[IqRoute::new(IqKind::Set, crate::hooks::SELF_OR_SERVER, NS)];
        ROUTES
    }
    fn handle_iq<'a>(&'a self, req: IqRequest<'a>) -> IqFuture<'a> {
        Box::pin(async move {
            let Some(user) = req.from.local.clone() else {
                return Err(StanzaError::forbidden());
            };
            match req.payload.name.as_str() {
                "enable" => self.enable(&req, &user).await?,
                "disable" => self.disable(&req, &user).await?,
                _ => return Err(StanzaError::feature_not_implemented()),
            }
            Ok(None)
        })
    }
    fn on_stanza<'a>(
        &'a self,
        server: &'a Arc<Server>,
        hook: Hook,
        ev: &'a mut StanzaEvent<'_>,
    ) -> BoxFut<'a, Flow> {
        self.message(server, hook, ev);
        Box::pin(async { Flow::Continue })
    }
    fn on_session<'a>(
        &'a self,
        server: &'a Arc<Server>,
        hook: Hook,
        ev: &'a mut SessionEvent<'_>,
    ) -> BoxFut<'a, Flow> {
        match hook {
            Hook::SessionClosing => {
                if ev.reason == Some(CloseReason::LinkLost) {
                    self.link_lost(server, ev);
                }
            }
            // Initial presence or a resumed stream: the person is back, the count starts again.
            _ => {
                if let Some(user) = &ev.session.jid.local {
                    self.state.reset(user);
                }
            }
        }
        Box::pin(async { Flow::Continue })
    }
}

#[cfg(test)]
mod tests;
