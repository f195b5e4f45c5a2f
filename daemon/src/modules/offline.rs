//! XEP-0160: offline messages. A chat or normal message for an account with no available
//! session is stored durably (the storage thread commits with fsync before we return), stamped
//! with XEP-0203 delay, and handed over when the account next sends initial presence: written
//! through the session's one write path first, deleted afterwards, so a crash in between
//! delivers twice rather than never.

use super::Module;
use crate::hooks::{BoxFut, Flow, Hook, Kind, SessionEvent, StanzaEvent};
use crate::server::Server;
use crate::stanza::{self, StanzaError};
use crate::storage::{now_secs, Storage, StorageError};
use crate::xml::{ns, Element};
use rusqlite::params;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

pub const DELAY: &str = "urn:xmpp:delay";

/// `[modules.offline]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OfflineConfig {
    /// Messages kept per account; beyond it senders get `resource-constraint`.
    #[serde(default = "default_max_per_user")]
    pub max_per_user: u32,
}

impl Default for OfflineConfig {
    fn default() -> Self {
        OfflineConfig {
            max_per_user: default_max_per_user(),
        }
    }
}

fn default_max_per_user() -> u32 {
    1000
}

/// Messages handed to the write path per batch while flushing, so a long backlog does not
/// build one huge buffer.
const FLUSH_BATCH: usize = 64;

pub struct Offline {
    max_per_user: u32,
}

impl Offline {
    pub fn new(config: &OfflineConfig) -> Offline {
        Offline {
            max_per_user: config.max_per_user,
        }
    }
}

impl Module for Offline {
    fn name(&self) -> &'static str {
        "offline"
    }
    fn hooks(&self) -> &'static [(Hook, i16)] {
        &[
            (Hook::Undeliverable(Kind::Message), 0),
            // After presence has re-sent pending subscription requests.
            (Hook::SessionAvailable, 0),
        ]
    }
    fn migrations(&self) -> &'static [&'static str] {
        // Databases made before modules owned tables have it already (core schema 1).
        &["CREATE TABLE IF NOT EXISTS offline (
            id           INTEGER PRIMARY KEY AUTOINCREMENT,
            username     TEXT NOT NULL REFERENCES users(username) ON DELETE CASCADE,
            stored_at    INTEGER NOT NULL,
            stanza       TEXT NOT NULL
         );
         CREATE INDEX IF NOT EXISTS offline_by_user ON offline(username, id);"]
    }
    fn disco_info(
        &self,
        _server: &Server,
        target: crate::hooks::DiscoTarget,
        info: &mut crate::hooks::DiscoInfo,
    ) {
        if target == crate::hooks::DiscoTarget::Server {
            info.feature("msgoffline");
        }
    }
    fn on_stanza<'a>(
        &'a self,
        server: &'a Arc<Server>,
        _hook: Hook,
        ev: &'a mut StanzaEvent<'_>,
    ) -> BoxFut<'a, Flow> {
        Box::pin(self.store(server, ev))
    }
    fn on_session<'a>(
        &'a self,
        server: &'a Arc<Server>,
        _hook: Hook,
        ev: &'a mut SessionEvent<'_>,
    ) -> BoxFut<'a, Flow> {
        Box::pin(async move {
            if let Err(e) = flush(server, ev).await {
                log::debug!("{}: offline flush stopped: {e}", ev.session.jid);
            }
            Flow::Continue
        })
    }
}

impl Offline {
    async fn store(&self, server: &Arc<Server>, ev: &mut StanzaEvent<'_>) -> Flow {
        if !matches!(stanza::stanza_type(&ev.stanza), "normal" | "chat") {
            return Flow::Continue;
        }
        let Some(user) = ev.to.as_ref().and_then(|t| t.local.clone()) else {
            return Flow::Continue;
        };
        match server.storage.user_exists(&user).await {
            Ok(true) => {}
            // No such account: the core bounces.
            Ok(false) => return Flow::Continue,
            Err(_) => return Flow::Bounce(StanzaError::internal()),
        }
        if !worth_storing(&ev.stanza) {
            return Flow::Drop;
        }
        let msg = &mut ev.stanza;
        msg.remove_children("delay", DELAY);
        msg.push_child(
            Element::new("delay", DELAY)
                .with_attr("from", server.domain().to_string())
                .with_attr("stamp", crate::timefmt::xep0082(now_secs()))
                .with_text("Offline storage"),
        );
        let xml = msg.to_xml(ns::CLIENT);
        match store(&server.storage, &user, xml, self.max_per_user).await {
            Ok(id) => {
                // A session may have sent initial presence while this was being stored, after
                // its flush read the mailbox: hand the message over now, unless a flush took it.
                let bare = format!("{user}@{}", server.domain());
                let targets = crate::delivery::message_targets(server, &bare);
                if !targets.is_empty() && take(&server.storage, id).await.unwrap_or(false) {
                    for t in targets {
                        let mut copy = ev.stanza.clone();
                        copy.set_attr("to", t.jid.to_string());
                        t.deliver(copy);
                    }
                }
                Flow::Handled
            }
            Err(StorageError::Refused(why)) => {
                log::info!("offline message for {user} refused: {why}");
                Flow::Bounce(
                    StanzaError::new("wait", "resource-constraint")
                        .with_text("The recipient's mailbox is full."),
                )
            }
            Err(e) => {
                log::error!("cannot store offline message for {user}: {e}");
                Flow::Bounce(StanzaError::internal())
            }
        }
    }
}

/// Messages worth keeping: something a person would miss. Chat states and receipts alone are not.
fn worth_storing(msg: &Element) -> bool {
    msg.elements().any(|c| {
        (c.name == "body" && c.ns == ns::CLIENT)
            || c.ns == "http://jabber.org/protocol/muc#user"
            || c.ns == "eu.siacs.conversations.axolotl"
            || c.ns == "urn:xmpp:omemo:2"
            || c.ns == "jabber:x:conference"
            || c.ns == "jabber:x:oob"
    })
}

/// Writes the stored messages to the session that just became available, then deletes them.
async fn flush(server: &Arc<Server>, ev: &mut SessionEvent<'_>) -> std::io::Result<()> {
    let Some(user) = ev.session.jid.local.clone() else {
        return Ok(());
    };
    if ev.session.priority() < 0 {
        return Ok(());
    }
    let messages = match stored(&server.storage, &user).await {
        Ok(m) => m,
        Err(e) => {
            log::error!("cannot read offline messages of {user}: {e}");
            return Ok(());
        }
    };
    let Some(last) = messages.last().map(|m| m.0) else {
        return Ok(());
    };
    let to = ev.session.jid.to_string();
    let mut batch = Vec::with_capacity(FLUSH_BATCH.min(messages.len()));
    for (_, xml) in &messages {
        match crate::xml::parse_fragment(xml).await {
            // Stored with the bare JID; deliver to this resource.
            Some(mut m) => {
                m.set_attr("to", to.clone());
                batch.push(m);
            }
            None => log::error!("an offline message of {user} cannot be parsed; dropped"),
        }
        if batch.len() == FLUSH_BATCH {
            ev.local.send_all(std::mem::take(&mut batch)).await?;
        }
    }
    ev.local.send_all(batch).await?;
    if let Err(e) = delete_up_to(&server.storage, &user, last).await {
        log::error!("cannot delete delivered offline messages of {user}: {e}");
    }
    Ok(())
}

/// Stores a message; refused when the account's queue is full, so one chatty contact cannot
/// fill the SD card.
async fn store(
    storage: &Storage,
    username: &str,
    stanza: String,
    max: u32,
) -> Result<i64, StorageError> {
    let username = username.to_string();
    storage
        .call(move |conn| {
            let count: i64 = conn.query_row(
                "SELECT count(*) FROM offline WHERE username = ?1",
                [&username],
                |r| r.get(0),
            )?;
            if count >= max as i64 {
                return Err(StorageError::Refused(format!(
                    "{username} has {count} offline messages waiting already"
                )));
            }
            conn.execute(
                "INSERT INTO offline (username, stored_at, stanza) VALUES (?1, ?2, ?3)",
                params![username, now_secs(), stanza],
            )?;
            Ok(conn.last_insert_rowid())
        })
        .await
}

/// Deletes one stored message; false if it was gone already (a flush delivered it).
async fn take(storage: &Storage, id: i64) -> Result<bool, StorageError> {
    storage
        .call(move |conn| Ok(conn.execute("DELETE FROM offline WHERE id = ?1", [id])? == 1))
        .await
}

/// The waiting messages, oldest first, with their ids.
async fn stored(storage: &Storage, username: &str) -> Result<Vec<(i64, String)>, StorageError> {
    let username = username.to_string();
    storage
        .call(move |conn| {
            let mut st =
                conn.prepare("SELECT id, stanza FROM offline WHERE username = ?1 ORDER BY id")?;
            let rows = st.query_map([&username], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
}

async fn delete_up_to(storage: &Storage, username: &str, up_to: i64) -> Result<(), StorageError> {
    let username = username.to_string();
    storage
        .call(move |conn| {
            conn.execute(
                "DELETE FROM offline WHERE username = ?1 AND id <= ?2",
                params![username, up_to],
            )?;
            Ok(())
        })
        .await
}

/// How many messages wait for an account (for tests and status pages).
pub async fn waiting(storage: &Storage, username: &str) -> Result<i64, StorageError> {
    let username = username.to_string();
    storage
        .call(move |conn| {
            Ok(conn.query_row(
                "SELECT count(*) FROM offline WHERE username = ?1",
                [&username],
                |r| r.get(0),
            )?)
        })
        .await
}

#[cfg(test)]
mod tests {
    use crate::harness::{body, Harness, DOMAIN};
    use crate::xml::{ns, Element};

    /// bob is away: alice's messages wait, stamped with delay, and reach bob in order at his
    /// initial presence, after which nothing is left stored. A chat state alone is not kept.
    /// The race a slow card opens: the delivery rules found bob away, and by the time the
    /// message is stored his phone has sent initial presence (and its flush found nothing). The
    /// message reaches him at once, once, and is not left stored for his next login.
    #[tokio::test]
    async fn a_message_stored_as_the_account_comes_online_is_handed_over() {
        use crate::hooks::{Hook, Kind, StanzaEvent};
        let h = Harness::new().await;
        h.user("bob").await;
        let mut bob = h.login("bob", "phone").await;
        bob.available().await;
        let bob_bare = format!("bob@{DOMAIN}");
        let mut ev = StanzaEvent {
            kind: Kind::Message,
            stanza: Element::new("message", ns::CLIENT)
                .with_attr("type", "chat")
                .with_attr("from", format!("alice@{DOMAIN}/x"))
                .with_attr("to", bob_bare.clone())
                .with_child(Element::new("body", ns::CLIENT).with_text("just in time")),
            from: crate::jid::Jid::parse(&format!("alice@{DOMAIN}/x")).unwrap(),
            to: Some(crate::jid::Jid::parse(&bob_bare).unwrap()),
            sender: None,
            local: None,
            targets: Vec::new(),
            pending: Default::default(),
        };
        let flow = h
            .server
            .modules
            .stanza_event(&h.server, Hook::Undeliverable(Kind::Message), &mut ev)
            .await;
        assert_eq!(flow, crate::hooks::Flow::Handled);
        let m = bob
            .expect("the message", |e| {
                body(e).as_deref() == Some("just in time")
            })
            .await;
        assert!(m.child("delay", super::DELAY).is_some());
        assert_eq!(super::waiting(&h.server.storage, "bob").await.unwrap(), 0);
        bob.expect_none(
            "a second copy",
            std::time::Duration::from_millis(300),
            |e| body(e).is_some(),
        )
        .await;
    }

    #[tokio::test]
    async fn messages_wait_for_initial_presence_in_order() {
        let h = Harness::new().await;
        h.user("alice").await;
        h.user("bob").await;
        let mut alice = h.login("alice", "x").await;
        alice.available().await;
        let bob_bare = format!("bob@{DOMAIN}");
        for i in 0..100 {
            alice.message(&bob_bare, &format!("m{i}")).await;
        }
        alice
            .send(
                Element::new("message", ns::CLIENT)
                    .with_attr("type", "chat")
                    .with_attr("to", bob_bare.clone())
                    .with_child(Element::new(
                        "composing",
                        "http://jabber.org/protocol/chatstates",
                    )),
            )
            .await;
        let mut waited = 0;
        while super::waiting(&h.server.storage, "bob").await.unwrap() < 100 && waited < 500 {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            waited += 1;
        }
        let mut bob = h.login("bob", "phone").await;
        bob.send(Element::new("presence", ns::CLIENT)).await;
        for i in 0..100 {
            let m = bob
                .expect("an offline message", |e| body(e).is_some())
                .await;
            assert_eq!(body(&m).as_deref(), Some(format!("m{i}").as_str()));
            assert_eq!(m.attr("to"), Some(bob.jid.to_string().as_str()));
            assert!(m.child("delay", super::DELAY).is_some());
        }
        let mut left = 1;
        for _ in 0..200 {
            left = super::waiting(&h.server.storage, "bob").await.unwrap();
            if left == 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(left, 0, "delivered messages are deleted");
    }

    #[tokio::test]
    async fn a_full_mailbox_and_a_missing_account_bounce() {
        let h = Harness::with_config("[modules.offline]\nmax_per_user = 2\n").await;
        h.user("alice").await;
        h.user("bob").await;
        let mut alice = h.login("alice", "x").await;
        alice.available().await;
        for i in 0..3 {
            alice
                .message(&format!("bob@{DOMAIN}"), &format!("m{i}"))
                .await;
        }
        let e = alice
            .expect("a bounce", |e| e.attr("type") == Some("error"))
            .await;
        let err = e.child("error", ns::CLIENT).expect("error child");
        assert!(err
            .child("resource-constraint", ns::STANZA_ERRORS)
            .is_some());
        alice.message(&format!("nobody@{DOMAIN}"), "hello?").await;
        let e = alice
            .expect("a bounce", |e| e.attr("type") == Some("error"))
            .await;
        let err = e.child("error", ns::CLIENT).expect("error child");
        assert!(err
            .child("service-unavailable", ns::STANZA_ERRORS)
            .is_some());
    }
}
