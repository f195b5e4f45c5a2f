//! "Local only" accounts (for children or guests): they cannot send anything to another
//! server — messages, presence, IQs, joining a remote group chat — and get a clear
//! `not-allowed` saying so, but everything from other servers still reaches them. Services this
//! server hosts on domains of their own (group chats here) count as local.
//!
//! The flag is set with `hearthctl user local-only NAME on|off` (control request
//! `user-local-only`); it lives in this module's own table and goes with the account.

use super::Module;
use crate::hooks::{BoxFut, Flow, Hook, Kind, StanzaEvent};
use crate::server::Server;
use crate::stanza::StanzaError;
use crate::storage::{Result, Storage};
use rusqlite::OptionalExtension;
use std::sync::Arc;

pub struct LocalOnly;

const MIGRATIONS: &[&str] = &["CREATE TABLE local_only (
        username TEXT PRIMARY KEY REFERENCES users(username) ON DELETE CASCADE
     ) WITHOUT ROWID;"];

/// Sets or clears the flag; also works while `hearthd` is stopped (the table is made if the
/// server never ran).
pub async fn set(storage: &Storage, user: &str, on: bool) -> Result<bool> {
    storage.migrate_modules(&[("local_only", MIGRATIONS)])?;
    let user = user.to_string();
    storage
        .call(move |conn| {
            let exists = conn
                .query_row("SELECT 1 FROM users WHERE username = ?1", [&user], |_| {
                    Ok(())
                })
                .optional()?
                .is_some();
            if !exists {
                return Ok(false);
            }
            if on {
                conn.execute(
                    "INSERT OR IGNORE INTO local_only (username) VALUES (?1)",
                    [&user],
                )?;
            } else {
                conn.execute("DELETE FROM local_only WHERE username = ?1", [&user])?;
            }
            Ok(true)
        })
        .await
}

/// Whether `user` may only talk with this server's own domains.
pub async fn is_local_only(storage: &Storage, user: &str) -> Result<bool> {
    let user = user.to_string();
    storage
        .read(move |conn| {
            Ok(conn
                .query_row(
                    "SELECT 1 FROM local_only WHERE username = ?1",
                    [&user],
                    |_| Ok(()),
                )
                .optional()?
                .is_some())
        })
        .await
}

impl Module for LocalOnly {
    fn name(&self) -> &'static str {
        "local_only"
    }

    fn migrations(&self) -> &'static [&'static str] {
        MIGRATIONS
    }

    fn hooks(&self) -> &'static [(Hook, i16)] {
        // Before anything else looks at a stanza that must not leave.
        &[
            (Hook::Outbound(Kind::Message), i16::MAX),
            (Hook::Outbound(Kind::Presence), i16::MAX),
            (Hook::Outbound(Kind::Iq), i16::MAX),
        ]
    }

    fn on_stanza<'a>(
        &'a self,
        server: &'a Arc<Server>,
        _hook: Hook,
        ev: &'a mut StanzaEvent<'_>,
    ) -> BoxFut<'a, Flow> {
        Box::pin(async move {
            let Some(to) = &ev.to else {
                return Flow::Continue;
            };
            if to.domain.eq_ignore_ascii_case(server.domain())
                || server.domains.is_hosted(&to.domain)
            {
                return Flow::Continue;
            }
            let Some(user) = ev.from.local.as_deref() else {
                return Flow::Continue;
            };
            match is_local_only(&server.storage, user).await {
                Ok(false) => Flow::Continue,
                // Unknown is refused too: this flag protects children.
                Ok(true) | Err(_) => Flow::Bounce(StanzaError::not_allowed().with_text(format!(
                    "this account may only talk with people on {}",
                    server.domain()
                ))),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domains::{DomainRoute, Refused};
    use crate::harness::{body, Harness};
    use crate::jid::Jid;
    use crate::xml::{ns, Element};
    use std::sync::Mutex;

    #[derive(Default)]
    struct Sink(Mutex<Vec<Element>>);
    impl DomainRoute for Sink {
        fn accept(
            &self,
            _s: &Arc<Server>,
            stanza: Element,
            _to: &Jid,
        ) -> std::result::Result<(), Refused> {
            self.0.lock().unwrap().push(stanza);
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_local_only_account_cannot_send_out_but_still_receives() {
        let h = Harness::new().await;
        h.user("kid").await;
        h.user("parent").await;
        let sink = Arc::new(Sink::default());
        h.server.domains.set_remote(sink.clone());
        assert!(set(&h.server.storage, "kid", true).await.unwrap());
        assert!(!set(&h.server.storage, "nobody", true).await.unwrap());
        let mut kid = h.login("kid", "tablet").await;
        kid.available().await;

        kid.message("stranger@far.example", "hi").await;
        let err = kid
            .expect("not-allowed", |e| {
                e.attr("type") == Some("error") && e.to_xml(ns::CLIENT).contains("not-allowed")
            })
            .await;
        assert!(err
            .to_xml(ns::CLIENT)
            .contains("may only talk with people on"));
        assert!(sink.0.lock().unwrap().is_empty());

        // At home everything works, and the world can still write in.
        kid.message(&format!("parent@{}", crate::harness::DOMAIN), "home")
            .await;
        let msg = Element::new("message", ns::CLIENT)
            .with_attr("type", "chat")
            .with_attr("from", "grandma@far.example/phone")
            .with_attr("to", format!("kid@{}", crate::harness::DOMAIN))
            .with_child(Element::new("body", ns::CLIENT).with_text("hello dear"));
        crate::delivery::route(&h.server, msg, None).await;
        kid.expect("grandma's message", |e| {
            body(e).as_deref() == Some("hello dear")
        })
        .await;

        // Cleared, it goes out.
        assert!(set(&h.server.storage, "kid", false).await.unwrap());
        kid.message("stranger@far.example", "hi again").await;
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let sent = sink.0.lock().unwrap().clone();
        assert_eq!(sent.len(), 1);
        assert_eq!(body(&sent[0]).as_deref(), Some("hi again"));
    }
}
