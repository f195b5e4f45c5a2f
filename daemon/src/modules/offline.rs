//! XEP-0160: offline messages. A chat or normal message for an account with no available
//! session is stored durably (the storage thread commits with fsync before we return), stamped
//! with XEP-0203 delay, and handed over when the account next sends initial presence.

use super::Module;
use crate::routing::bounce;
use crate::server::Server;
use crate::stanza::StanzaError;
use crate::storage::StorageError;
use crate::xml::{ns, Element};
use std::sync::Arc;

pub const DELAY: &str = "urn:xmpp:delay";

pub struct Offline;

impl Module for Offline {
    fn server_features(&self) -> &'static [&'static str] {
        &["msgoffline"]
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

/// Stores a message for `user`, or bounces it if that is not possible.
pub async fn store(server: &Arc<Server>, user: &str, mut msg: Element) {
    if !worth_storing(&msg) {
        return;
    }
    let now = crate::storage::now_secs();
    msg.remove_children("delay", DELAY);
    msg.push_child(
        Element::new("delay", DELAY)
            .with_attr("from", server.domain().to_string())
            .with_attr("stamp", crate::timefmt::xep0082(now))
            .with_text("Offline storage"),
    );
    let xml = msg.to_xml(ns::CLIENT);
    match server
        .storage
        .store_offline(user, xml, server.config.limits.offline_max_per_user)
        .await
    {
        Ok(()) => {}
        Err(StorageError::Refused(why)) => {
            log::info!("offline message for {user} refused: {why}");
            bounce(
                server,
                &msg,
                StanzaError::new("wait", "resource-constraint")
                    .with_text("The recipient's mailbox is full."),
            );
        }
        Err(e) => {
            log::error!("cannot store offline message for {user}: {e}");
            bounce(server, &msg, StanzaError::internal());
        }
    }
}
