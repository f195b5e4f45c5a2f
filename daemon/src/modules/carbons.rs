//! XEP-0280: Message Carbons. A session that enabled carbons gets a copy of every eligible
//! message its account receives on another session (`<received/>`) and of every one its
//! account sends from another session (`<sent/>`), so phone and laptop show the same
//! conversation. The per-session switch is one bit of the session's flags word.

use super::{IqFuture, IqRequest, Module};
use crate::hooks::{
    BoxFut, DiscoInfo, DiscoTarget, Flow, Hook, IqKind, IqRoute, Kind, SessionFlag, StanzaEvent,
};
use crate::server::Server;
use crate::sessions::SessionHandle;
use crate::stanza::{self, StanzaError};
use crate::xml::{ns, Element};
use std::sync::Arc;

pub const NS: &str = "urn:xmpp:carbons:2";
pub const FORWARD: &str = "urn:xmpp:forward:0";
/// XEP-0334 hints: `<no-copy/>` keeps a message out of carbons.
pub const HINTS: &str = "urn:xmpp:hints";
const RECEIPTS: &str = "urn:xmpp:receipts";
const CHAT_STATES: &str = "http://jabber.org/protocol/chatstates";
const MARKERS: &str = "urn:xmpp:chat-markers:0";
const MUC_USER: &str = "http://jabber.org/protocol/muc#user";

/// Set while the session has carbons enabled.
pub const ENABLED: SessionFlag = SessionFlag(1 << 0);

/// Runs after modules that may refuse or drop a message (blocking, archive), so no copy goes
/// out for a message that was not delivered.
const LATE: i16 = -100;

pub struct Carbons;

/// Which way a message went, seen from the account whose sessions get copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Sent,
    Received { to_full_jid: bool },
}

/// XEP-0280 §6: whether a message is copied, and why not when it is not.
pub fn should_copy(msg: &Element, direction: Direction) -> Result<(), &'static str> {
    if msg.child("private", NS).is_some() {
        return Err("private");
    }
    if msg.child("no-copy", HINTS).is_some() {
        return Err("no-copy hint");
    }
    if msg.child("received", NS).is_some() || msg.child("sent", NS).is_some() {
        return Err("already a carbon");
    }
    let kind = stanza::stanza_type(msg);
    match kind {
        "groupchat" => return Err("group chat"),
        // Errors answer a message we cannot tell was eligible; copying them confuses clients.
        "error" => return Err("error"),
        _ => {}
    }
    if direction == (Direction::Received { to_full_jid: true })
        && msg.child("x", MUC_USER).is_some()
    {
        // A private message from a room goes to the one device that joined it.
        return Err("room private message");
    }
    if kind == "chat" {
        return Ok(());
    }
    if kind == "normal" && msg.child("body", ns::CLIENT).is_some() {
        return Ok(());
    }
    if msg
        .elements()
        .any(|c| c.ns == RECEIPTS || c.ns == CHAT_STATES || c.ns == MARKERS)
    {
        return Ok(());
    }
    Err("not a chat message")
}

/// `<message from=bare to=session><sent|received><forwarded><message…/></forwarded></…></message>`
fn wrap(original: &Element, wrapper: &str, account: &str, to: &SessionHandle) -> Element {
    let mut copy = Element::new("message", ns::CLIENT)
        .with_attr("from", account)
        .with_attr("to", to.jid.to_string())
        .with_attr("type", stanza::stanza_type(original).to_string());
    copy.push_child(
        Element::new(wrapper, NS)
            .with_child(Element::new("forwarded", FORWARD).with_child(original.clone())),
    );
    copy
}

impl Module for Carbons {
    fn name(&self) -> &'static str {
        "carbons"
    }
    fn hooks(&self) -> &'static [(Hook, i16)] {
        &[
            (Hook::Outbound(Kind::Message), LATE),
            (Hook::InboundBare(Kind::Message), LATE),
            (Hook::InboundFull(Kind::Message), LATE),
        ]
    }
    fn session_flags(&self) -> &'static [SessionFlag] {
        &[ENABLED]
    }
    fn disco_info(&self, _server: &Server, target: DiscoTarget, info: &mut DiscoInfo) {
        if target == DiscoTarget::Server {
            info.feature(NS);
        }
    }
    fn iqs(&self) -> &'static [IqRoute] {
        const ROUTES: &[IqRoute] = &[IqRoute::new(IqKind::Set, crate::hooks::SELF_OR_SERVER, NS)];
        ROUTES
    }
    fn handle_iq<'a>(&'a self, req: IqRequest<'a>) -> IqFuture<'a> {
        Box::pin(async move {
            let on = match req.payload.name.as_str() {
                "enable" => true,
                "disable" => false,
                _ => return Err(StanzaError::bad_request()),
            };
            let session = req.session.ok_or_else(StanzaError::not_allowed)?;
            session.shared.set_flag(ENABLED, on);
            Ok(None)
        })
    }
    fn on_stanza<'a>(
        &'a self,
        server: &'a Arc<Server>,
        hook: Hook,
        ev: &'a mut StanzaEvent<'_>,
    ) -> BoxFut<'a, Flow> {
        Box::pin(async move {
            match hook {
                Hook::Outbound(_) => copy_sent(server, ev),
                _ => copy_received(server, ev, hook == Hook::InboundFull(Kind::Message)),
            }
            Flow::Continue
        })
    }
}

/// A message one of the account's sessions sent: its other carbons sessions get `<sent/>`.
fn copy_sent(server: &Server, ev: &StanzaEvent<'_>) {
    let Some(sender) = ev.sender else { return };
    let account = sender.jid.bare_string();
    let others: Vec<_> = server
        .sessions
        .sessions_of(&account)
        .into_iter()
        .filter(|s| s.id != sender.id && s.shared.has(ENABLED))
        .collect();
    if others.is_empty() {
        return;
    }
    if let Err(why) = should_copy(&ev.stanza, Direction::Sent) {
        log::trace!("no sent carbon: {why}");
        return;
    }
    for s in others {
        s.deliver(wrap(&ev.stanza, "sent", &account, &s));
    }
}

/// A message reaching the account: its carbons sessions that are not receiving it anyway get
/// `<received/>`.
fn copy_received(server: &Server, ev: &StanzaEvent<'_>, to_full_jid: bool) {
    let Some(to) = &ev.to else { return };
    let account = to.bare_string();
    let others: Vec<_> = server
        .sessions
        .sessions_of(&account)
        .into_iter()
        .filter(|s| s.shared.has(ENABLED) && !ev.targets.iter().any(|t| t.id == s.id))
        .collect();
    if others.is_empty() || ev.targets.is_empty() {
        // Nobody else wants a copy, or the message goes offline (delivered later, not copied).
        return;
    }
    if let Err(why) = should_copy(&ev.stanza, Direction::Received { to_full_jid }) {
        log::trace!("no received carbon: {why}");
        return;
    }
    for s in others {
        s.deliver(wrap(&ev.stanza, "received", &account, &s));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(kind: &str) -> Element {
        Element::new("message", ns::CLIENT)
            .with_attr("type", kind)
            .with_child(Element::new("body", ns::CLIENT).with_text("hi"))
    }

    #[test]
    fn eligibility_follows_section_6() {
        let sent = Direction::Sent;
        let received_full = Direction::Received { to_full_jid: true };
        assert_eq!(should_copy(&msg("chat"), sent), Ok(()));
        assert_eq!(should_copy(&msg("normal"), sent), Ok(()));
        assert_eq!(should_copy(&msg("groupchat"), sent), Err("group chat"));
        assert_eq!(should_copy(&msg("error"), sent), Err("error"));
        assert_eq!(
            should_copy(&msg("headline"), sent),
            Err("not a chat message")
        );
        let private = msg("chat").with_child(Element::new("private", NS));
        assert_eq!(should_copy(&private, sent), Err("private"));
        let no_copy = msg("chat").with_child(Element::new("no-copy", HINTS));
        assert_eq!(should_copy(&no_copy, sent), Err("no-copy hint"));
        let receipt = Element::new("message", ns::CLIENT)
            .with_child(Element::new("received", RECEIPTS).with_attr("id", "1"));
        assert_eq!(should_copy(&receipt, sent), Ok(()));
        let bare_normal = Element::new("message", ns::CLIENT);
        assert_eq!(should_copy(&bare_normal, sent), Err("not a chat message"));
        let muc_pm = msg("chat").with_child(Element::new("x", MUC_USER));
        assert_eq!(
            should_copy(&muc_pm, received_full),
            Err("room private message")
        );
        assert_eq!(should_copy(&muc_pm, sent), Ok(()));
        let carbon = msg("chat").with_child(Element::new("sent", NS));
        assert_eq!(should_copy(&carbon, sent), Err("already a carbon"));
    }
}

#[cfg(test)]
mod harness_tests {
    use super::NS;
    use crate::harness::{body, Harness, DOMAIN};
    use crate::xml::Element;
    use std::time::Duration;

    fn carbon_body(e: &crate::xml::Element, wrapper: &str) -> Option<String> {
        let fwd = e.child(wrapper, NS)?.child("forwarded", super::FORWARD)?;
        body(fwd.child("message", crate::xml::ns::CLIENT)?)
    }

    /// alice on a phone and a laptop, both with carbons; bob writes to alice's phone, alice
    /// answers from the phone: the laptop sees both sides. A `<private/>` message stays put.
    #[tokio::test]
    async fn both_devices_see_both_sides_except_private() {
        let h = Harness::new().await;
        h.user("alice").await;
        h.user("bob").await;
        let mut phone = h.login("alice", "phone").await;
        let mut laptop = h.login("alice", "laptop").await;
        let mut bob = h.login("bob", "pc").await;
        for c in [&mut phone, &mut laptop, &mut bob] {
            c.available().await;
        }
        for c in [&mut phone, &mut laptop] {
            let r = c.iq("set", None, Element::new("enable", NS)).await;
            assert_eq!(r.attr("type"), Some("result"));
        }
        let phone_jid = phone.jid.to_string();
        bob.message(&phone_jid, "hello phone").await;
        let m = phone
            .expect("the message", |e| body(e).as_deref() == Some("hello phone"))
            .await;
        assert!(
            m.child("received", NS).is_none(),
            "the addressee gets the message itself"
        );
        let c = laptop
            .expect("received carbon", |e| carbon_body(e, "received").is_some())
            .await;
        assert_eq!(carbon_body(&c, "received").as_deref(), Some("hello phone"));
        assert_eq!(c.attr("from"), Some(format!("alice@{DOMAIN}").as_str()));

        phone.message(&format!("bob@{DOMAIN}"), "hello bob").await;
        bob.expect("alice's answer", |e| {
            body(e).as_deref() == Some("hello bob")
        })
        .await;
        let c = laptop
            .expect("sent carbon", |e| carbon_body(e, "sent").is_some())
            .await;
        assert_eq!(carbon_body(&c, "sent").as_deref(), Some("hello bob"));
        phone
            .expect_none(
                "a carbon of its own message",
                Duration::from_millis(200),
                |e| e.child("sent", NS).is_some(),
            )
            .await;

        let secret = Element::new("message", crate::xml::ns::CLIENT)
            .with_attr("type", "chat")
            .with_attr("to", format!("bob@{DOMAIN}"))
            .with_child(Element::new("body", crate::xml::ns::CLIENT).with_text("secret"))
            .with_child(Element::new("private", NS));
        phone.send(secret).await;
        bob.expect("the private message", |e| {
            body(e).as_deref() == Some("secret")
        })
        .await;
        laptop
            .expect_none(
                "a carbon of a private message",
                Duration::from_millis(300),
                |e| e.child("sent", NS).is_some() || e.child("received", NS).is_some(),
            )
            .await;

        // Disabled: no more copies.
        let r = laptop.iq("set", None, Element::new("disable", NS)).await;
        assert_eq!(r.attr("type"), Some("result"));
        bob.message(&phone_jid, "after disable").await;
        phone
            .expect("the message", |e| {
                body(e).as_deref() == Some("after disable")
            })
            .await;
        laptop
            .expect_none("a carbon after disable", Duration::from_millis(300), |e| {
                e.child("received", NS).is_some()
            })
            .await;
    }

    #[tokio::test]
    async fn the_server_announces_carbons() {
        let h = Harness::new().await;
        h.user("alice").await;
        let mut a = h.login("alice", "x").await;
        let r = a
            .iq(
                "get",
                Some(DOMAIN),
                Element::new("query", "http://jabber.org/protocol/disco#info"),
            )
            .await;
        let q = r.first_element().expect("query");
        assert!(q.elements().any(|f| f.attr("var") == Some(NS)));
    }
}
