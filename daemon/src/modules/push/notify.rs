//! Sending notifications: the per-account summary (what the app server is told), the per-
//! registration pace (at most one publish per `min_interval_secs`; what comes sooner is folded
//! into one later publish that carries the newest summary), and what the app server's answer
//! does to the registration (XEP-0357 §7.1: an error disables it; a transient one, or silence,
//! only after `max_failures` in a row).

use super::store::{self, Registration};
use super::{PushConfig, NS, PUBSUB};
use crate::iq_tracker::IqError;
use crate::jid::Jid;
use crate::server::Server;
use crate::xml::{ns, Element};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::time::Instant;

pub const SUMMARY: &str = "urn:xmpp:push:summary";
const DATA_FORMS: &str = "jabber:x:data";

/// Accounts whose summary is remembered at once; a larger table is cleared (the next
/// notification then counts from one again, which loses nothing a phone needs).
const MAX_SUMMARIES: usize = 4096;
/// Registrations whose pace is remembered at once; beyond it, idle entries are swept.
const MAX_PACED: usize = 8192;

/// What the notifications of an account say: messages since a session of it was last active.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub count: u32,
    /// The last sender's bare JID (the resource tells the app server nothing it needs).
    pub sender: String,
    /// The last message's text, kept only when `include_body` is set and it was not encrypted.
    pub body: Option<String>,
}

/// One registration's pace and health.
#[derive(Default)]
struct Pace {
    last_sent: Option<Instant>,
    /// A later publish is scheduled; what arrives meanwhile only updates the summary.
    deferred: bool,
    /// Transient failures (timeouts, `wait` errors) in a row.
    failures: u32,
}

/// The module's memory, shared with the tasks that send and wait for answers.
pub struct State {
    pub config: PushConfig,
    summaries: Mutex<HashMap<String, Summary>>,
    paces: Mutex<HashMap<(String, Registration), Pace>>,
}

/// What the app server's answer means for the registration.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Delivered,
    /// Try again next time; counts towards `max_failures`.
    Transient(String),
    /// Disable the registration now.
    Refused(String),
}

/// Reads an answer (or its absence). XEP-0357 §7.1: an error means the JID and node are
/// disabled, but a server may keep a registration through errors it deems transient: `wait`
/// errors and the routing conditions (the remote server was not reached, which says nothing
/// about the app server's opinion) are transient here, as is silence.
pub fn verdict(answer: Result<Element, IqError>) -> Verdict {
    let reply = match answer {
        Ok(r) => r,
        Err(IqError::Timeout) => return Verdict::Transient("no answer in time".into()),
        Err(IqError::Busy) => return Verdict::Transient("too many questions in flight".into()),
        Err(IqError::Undeliverable) => return Verdict::Transient("could not be sent".into()),
    };
    if reply.attr("type") == Some("result") {
        return Verdict::Delivered;
    }
    let error = reply.child("error", ns::CLIENT);
    let kind = error.and_then(|e| e.attr("type")).unwrap_or("cancel");
    let condition = error
        .and_then(|e| e.elements().find(|c| c.ns == ns::STANZA_ERRORS))
        .map_or("undefined-condition", |c| c.name.as_str());
    let why = format!("{condition} ({kind})");
    if kind == "wait" || condition.starts_with("remote-server-") {
        Verdict::Transient(why)
    } else {
        Verdict::Refused(why)
    }
}

/// The publish request for one registration (XEP-0357 §6).
pub async fn publish_iq(
    reg: &Registration,
    summary: &Summary,
    config: &PushConfig,
    account: &str,
) -> Element {
    let mut form = Element::new("x", DATA_FORMS)
        .with_attr("type", "submit")
        .with_child(field("FORM_TYPE", SUMMARY))
        .with_child(field("message-count", &summary.count.to_string()));
    if config.include_sender {
        form.push_child(field("last-message-sender", &summary.sender));
    }
    if let (true, Some(body)) = (config.include_body, &summary.body) {
        form.push_child(field("last-message-body", body));
    }
    let item =
        Element::new("item", PUBSUB).with_child(Element::new("notification", NS).with_child(form));
    let mut pubsub = Element::new("pubsub", PUBSUB).with_child(
        Element::new("publish", PUBSUB)
            .with_attr("node", reg.node.clone())
            .with_child(item),
    );
    if let Some(xml) = &reg.options {
        match crate::xml::parse_fragment(xml).await {
            Some(options) => {
                pubsub.push_child(Element::new("publish-options", PUBSUB).with_child(options))
            }
            None => log::error!("push: stored publish-options of {account} cannot be parsed"),
        }
    }
    Element::new("iq", ns::CLIENT)
        .with_attr("type", "set")
        .with_attr("to", reg.app_server.clone())
        .with_child(pubsub)
}

fn field(var: &str, value: &str) -> Element {
    Element::new("field", DATA_FORMS)
        .with_attr("var", var)
        .with_child(Element::new("value", DATA_FORMS).with_text(value))
}

impl State {
    pub fn new(config: PushConfig) -> State {
        State {
            config,
            summaries: Mutex::default(),
            paces: Mutex::default(),
        }
    }

    /// Counts a message for `username` and returns the summary to send.
    pub fn count(&self, username: &str, sender: &Jid, body: Option<&str>) -> Summary {
        let mut map = self.summaries.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_SUMMARIES && !map.contains_key(username) {
            map.clear();
        }
        let s = map.entry(username.to_string()).or_insert(Summary {
            count: 0,
            sender: String::new(),
            body: None,
        });
        s.count = s.count.saturating_add(1);
        s.sender = sender.bare_string();
        s.body = body
            .filter(|_| self.config.include_body)
            .map(|b| b.chars().take(super::MAX_BODY_CHARS).collect());
        s.clone()
    }

    /// A session of the account became active: the count starts again.
    pub fn reset(&self, username: &str) {
        self.summaries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(username);
    }

    fn summary(&self, username: &str) -> Option<Summary> {
        self.summaries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(username)
            .cloned()
    }

    /// The registration was disabled: forget its pace.
    pub fn forget(&self, username: &str, reg: &Registration) {
        self.paces
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(username.to_string(), reg.clone()));
    }

    /// Forgets the pace of every registration of `app_server` (and `node`) of an account.
    pub fn forget_app_server(&self, username: &str, app_server: &str, node: Option<&str>) {
        self.paces
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(user, reg), _| {
                !(user == username
                    && reg.app_server == app_server
                    && node.is_none_or(|n| n == reg.node))
            });
    }

    /// Whether to publish now (`Some(Duration::ZERO)`), later (`Some(wait)`: schedule one
    /// publish), or not at all (one is scheduled already and will carry the newest summary).
    fn pace(&self, username: &str, reg: &Registration) -> Option<Duration> {
        let interval = Duration::from_secs(self.config.min_interval_secs);
        let now = Instant::now();
        let mut map = self.paces.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_PACED {
            map.retain(|_, p| p.deferred || p.last_sent.is_some_and(|t| now - t < interval));
        }
        let p = map.entry((username.to_string(), reg.clone())).or_default();
        if p.deferred {
            return None;
        }
        match p.last_sent {
            Some(t) if now - t < interval => {
                p.deferred = true;
                Some(interval - (now - t))
            }
            _ => {
                p.last_sent = Some(now);
                Some(Duration::ZERO)
            }
        }
    }

    /// The scheduled publish is due: it goes out now.
    fn due(&self, username: &str, reg: &Registration) {
        let mut map = self.paces.lock().unwrap_or_else(|e| e.into_inner());
        let p = map.entry((username.to_string(), reg.clone())).or_default();
        p.deferred = false;
        p.last_sent = Some(Instant::now());
    }

    /// Records a transient failure; true when the registration has now failed too often.
    fn failed(&self, username: &str, reg: &Registration) -> bool {
        let mut map = self.paces.lock().unwrap_or_else(|e| e.into_inner());
        let p = map.entry((username.to_string(), reg.clone())).or_default();
        p.failures += 1;
        p.failures >= self.config.max_failures
    }

    fn succeeded(&self, username: &str, reg: &Registration) {
        if let Some(p) = self
            .paces
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(&(username.to_string(), reg.clone()))
        {
            p.failures = 0;
        }
    }
}

/// Counts `messages` (sender, body) and notifies every app server the account enabled, each at
/// its own pace. Runs in its own task: the message's delivery does not wait for the database
/// or the app servers.
/// Only accounts with registrations are counted, so mail for unknown or push-less accounts
/// costs no memory.
pub async fn notify_account(
    server: Arc<Server>,
    state: Arc<State>,
    username: String,
    messages: Vec<(Jid, Option<String>)>,
) {
    let regs = match store::of_account(&server.storage, &username).await {
        Ok(r) => r,
        Err(e) => {
            log::error!("push: cannot read the registrations of {username}: {e}");
            return;
        }
    };
    if regs.is_empty() {
        return;
    }
    let mut summary = None;
    for (sender, body) in &messages {
        summary = Some(state.count(&username, sender, body.as_deref()));
    }
    let Some(summary) = summary else {
        return;
    };
    for reg in regs {
        match state.pace(&username, &reg) {
            None => {}
            Some(wait) if wait.is_zero() => {
                let (server, state) = (server.clone(), state.clone());
                let (username, summary) = (username.clone(), summary.clone());
                tokio::spawn(
                    async move { publish(&server, &state, &username, reg, summary).await },
                );
            }
            Some(wait) => {
                let (server, state) = (Arc::downgrade(&server), state.clone());
                tokio::spawn(deferred(server, state, username.clone(), reg, wait));
            }
        }
    }
}

/// A publish held back by the pace: after `wait`, it sends the summary as it is then (none if
/// a session became active meanwhile).
async fn deferred(
    server: Weak<Server>,
    state: Arc<State>,
    username: String,
    reg: Registration,
    wait: Duration,
) {
    tokio::time::sleep(wait).await;
    state.due(&username, &reg);
    let Some(server) = server.upgrade() else {
        return;
    };
    if let Some(summary) = state.summary(&username) {
        publish(&server, &state, &username, reg, summary).await;
    }
}

/// Sends one publish and acts on the answer.
async fn publish(
    server: &Arc<Server>,
    state: &State,
    username: &str,
    reg: Registration,
    summary: Summary,
) {
    let account = format!("{username}@{}", server.domain());
    let iq = publish_iq(&reg, &summary, &state.config, &account).await;
    let deadline = Duration::from_secs(state.config.reply_timeout_secs);
    let route = server.clone();
    let answer = server
        .iq_tracker
        .ask(&account, iq, deadline, move |iq| {
            // Routed as any stanza from the account: a local JID now, a remote one through
            // federation. A bounce comes back to the tracker (`delivery::deliver_to_full`).
            tokio::spawn(async move { crate::delivery::route(&route, iq, None).await });
            true
        })
        .await;
    match verdict(answer) {
        Verdict::Delivered => {
            log::debug!("push: {account} notified {} ({})", reg.app_server, reg.node);
            state.succeeded(username, &reg);
        }
        Verdict::Transient(why) => {
            if state.failed(username, &reg) {
                log::info!(
                    "push: {account}'s app server {} failed {} times in a row ({why}); disabled",
                    reg.app_server,
                    state.config.max_failures
                );
                disable(server, state, username, &reg).await;
            } else {
                log::info!("push: {account}'s app server {}: {why}", reg.app_server);
            }
        }
        Verdict::Refused(why) => {
            log::info!(
                "push: {account}'s app server {} refused a notification ({why}); disabled",
                reg.app_server
            );
            disable(server, state, username, &reg).await;
        }
    }
}

async fn disable(server: &Server, state: &State, username: &str, reg: &Registration) {
    state.forget(username, reg);
    if let Err(e) =
        store::disable(&server.storage, username, &reg.app_server, Some(&reg.node)).await
    {
        log::error!("push: cannot disable a registration of {username}: {e}");
    }
}
