//! XEP-0045: Multi-User Chat, hosted on a domain of its own (`groups.<domain>` unless
//! `[services] muc` names another), with XEP-0249/XEP-0045 invitations, history on joining,
//! XEP-0313 archives of rooms with XEP-0359 stanza ids, XEP-0410 self-ping, XEP-0421 occupant
//! ids and room avatars through vcard-temp (XEP-0153 hash in disco#info and presence).
//!
//! The service registers a `DomainRoute` for its domain: stanzas for room JIDs are taken without
//! waiting into a bounded queue, and one task works through them in order, so room state needs no
//! locks. It answers through `delivery::route` (occupants' presence and messages, which pass the
//! recipients' inbound hooks like any other stanza) and `delivery::deliver_to_full` (IQ replies,
//! archive pages), which reach local users now and remote ones once federation routes them.
//!
//! Files: `room.rs` the state and rules, `form.rs` the configuration form, `store.rs` the
//! tables, `service.rs` the task and dispatch, `occupants.rs` entering, leaving and nicknames,
//! `messages.rs` group messages, private messages, invitations and voice requests, `forward.rs`
//! IQs between occupants, `admin.rs`
//! affiliations, roles, configuration and destruction, `history.rs` history, archive and vCard.

mod admin;
pub mod form;
mod forward;
mod history;
#[cfg(test)]
mod history_tests;
#[cfg(test)]
mod mention_tests;
mod messages;
#[cfg(test)]
mod moderation_tests;
mod occupants;
pub mod room;
mod service;
pub mod store;
#[cfg(test)]
mod tests;

use super::Module;
use crate::config::Config;
use crate::domains::{DomainRoute, Refused};
use crate::jid::Jid;
use crate::server::Server;
use crate::stanza::StanzaError;
use crate::xml::Element;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use tokio::sync::mpsc;

/// Who may create rooms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Creators {
    /// Every account of this server.
    #[default]
    Local,
    /// Only the server's admins.
    Admins,
}

/// `[modules.muc]`. The defaults suit a 512 MB board with a few dozen users: a room in memory
/// costs about a kilobyte plus its occupants; history and archives stay on the card.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MucConfig {
    /// Serve group chats at all.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// `local` (every account here) or `admins`.
    #[serde(default)]
    pub creators: Creators,
    /// Rooms on this server at most.
    #[serde(default = "default_max_rooms")]
    pub max_rooms: u32,
    /// Rooms one account may own.
    #[serde(default = "default_rooms_per_account")]
    pub max_rooms_per_account: u32,
    /// Occupants of one room at most (an owner may set a lower limit).
    #[serde(default = "default_max_occupants")]
    pub max_occupants: u32,
    /// Messages a joining occupant may get from the history at most.
    #[serde(default = "default_max_history")]
    pub max_history: u32,
    /// Days a room's archive keeps a message; 0 keeps them forever.
    #[serde(default = "default_archive_days")]
    pub archive_days: u32,
    /// Stanzas waiting for the service at most; more are refused with `resource-constraint`.
    #[serde(default = "default_queue")]
    pub queue: usize,
}

fn yes() -> bool {
    true
}
fn default_max_rooms() -> u32 {
    200
}
fn default_rooms_per_account() -> u32 {
    10
}
fn default_max_occupants() -> u32 {
    100
}
fn default_max_history() -> u32 {
    50
}
fn default_archive_days() -> u32 {
    365
}
fn default_queue() -> usize {
    512
}

impl Default for MucConfig {
    fn default() -> Self {
        MucConfig {
            enabled: true,
            creators: Creators::default(),
            max_rooms: default_max_rooms(),
            max_rooms_per_account: default_rooms_per_account(),
            max_occupants: default_max_occupants(),
            max_history: default_max_history(),
            archive_days: default_archive_days(),
            queue: default_queue(),
        }
    }
}

/// The domain group chats live on: `[services] muc`, else `groups.<domain>`.
pub fn service_domain(config: &Config) -> String {
    config
        .services
        .muc
        .clone()
        .unwrap_or_else(|| format!("groups.{}", config.domain))
        .to_ascii_lowercase()
}

pub struct Muc {
    settings: MucConfig,
}

impl Muc {
    pub fn new(settings: &MucConfig) -> Muc {
        Muc {
            settings: settings.clone(),
        }
    }
}

/// The way in: stanzas for the service's domain, queued for its task.
struct Route {
    queue: mpsc::Sender<Element>,
}

impl DomainRoute for Route {
    fn accept(&self, _server: &Arc<Server>, stanza: Element, _to: &Jid) -> Result<(), Refused> {
        self.queue.try_send(stanza).map_err(|e| {
            let (stanza, error) = match e {
                mpsc::error::TrySendError::Full(s) => (
                    s,
                    StanzaError::new("wait", "resource-constraint")
                        .with_text("the group chat service is busy; try again"),
                ),
                mpsc::error::TrySendError::Closed(s) => (s, StanzaError::service_unavailable()),
            };
            Refused { stanza, error }
        })
    }
}

impl Module for Muc {
    fn name(&self) -> &'static str {
        "muc"
    }
    fn migrations(&self) -> &'static [&'static str] {
        store::MIGRATIONS
    }
    fn start(&self, server: &Arc<Server>) {
        if !self.settings.enabled {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let domain = service_domain(&server.config);
        let (tx, rx) = mpsc::channel(self.settings.queue.max(1));
        if let Err(e) = server.domains.host(&domain, Arc::new(Route { queue: tx })) {
            log::error!("group chats are off: {e}");
            return;
        }
        let svc = service::Service::new(domain, self.settings.clone());
        runtime.spawn(svc.run(Arc::downgrade(server), server.shutdown_signal(), rx));
    }
}

/// Every room, for the admin pages: name, title, members, last activity. Empty when group chats
/// never ran on this database (their tables are made at the server's first start).
pub async fn list_rooms(storage: &crate::storage::Storage) -> Result<Vec<store::Listed>, String> {
    storage
        .read(|c| {
            let made: bool = c
                .query_row(
                    "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'muc_rooms'",
                    [],
                    |r| r.get::<_, i64>(0),
                )
                .map(|n| n > 0)?;
            if !made {
                return Ok(Vec::new());
            }
            store::list(c, false, u32::MAX)
        })
        .await
        .map_err(|e| e.to_string())
}

/// Destroys a room as the server's admin: through the service, so its occupants are told (the
/// same `muc#owner` destroy an owner sends, from the server's own JID). When the server is not
/// running, `storage` removes it directly.
pub async fn destroy_room(
    live: Option<&Arc<Server>>,
    storage: &crate::storage::Storage,
    config: &Config,
    name: &str,
    reason: &str,
) -> Result<(), String> {
    let name = crate::jid::normalize_local(name).map_err(|e| format!("room name {name:?}: {e}"))?;
    let domain = service_domain(config);
    let Some(server) = live else {
        let exists = list_rooms(storage).await?.iter().any(|r| r.name == name);
        if !exists {
            return Err(format!("there is no room {name}@{domain}"));
        }
        return storage
            .call(move |c| store::delete_room(c, &name))
            .await
            .map_err(|e| e.to_string());
    };
    let route = server
        .domains
        .route_for(&domain)
        .filter(|_| server.domains.is_hosted(&domain))
        .ok_or_else(|| "group chats are not running".to_string())?;
    let room = Jid::parse(&format!("{name}@{domain}")).map_err(|e| e.to_string())?;
    let mut destroy = Element::new("destroy", admin::NS_OWNER);
    if !reason.is_empty() {
        destroy.push_child(Element::new("reason", admin::NS_OWNER).with_text(reason));
    }
    let iq = Element::new("iq", crate::xml::ns::CLIENT)
        .with_attr("type", "set")
        .with_attr("to", room.to_string())
        .with_child(Element::new("query", admin::NS_OWNER).with_child(destroy));
    let s = server.clone();
    let answer = server
        .iq_tracker
        .ask(
            server.domain(),
            iq,
            std::time::Duration::from_secs(10),
            move |iq| route.accept(&s, iq, &room).is_ok(),
        )
        .await
        .map_err(|e| format!("the group chat service did not answer: {e:?}"))?;
    match answer.attr("type") {
        Some("result") => Ok(()),
        _ => Err(
            match answer
                .to_xml(crate::xml::ns::CLIENT)
                .contains("item-not-found")
            {
                true => format!("there is no room {name}@{domain}"),
                false => "the group chat service refused".to_string(),
            },
        ),
    }
}
