//! IQs between occupants (vCards, software versions, pings other than the XEP-0410 self-ping,
//! which XEP-0410 §3.2 expects a room to pass on). The room passes a request to the target occupant's
//! newest device under the asker's occupant JID and a fresh id, and the answer back under the
//! target's occupant JID and the asker's id; real JIDs never cross. Pending requests are
//! bounded: the oldest is forgotten first (its answer is then dropped).

use crate::jid::Jid;
use crate::stanza::{self, StanzaError};
use crate::xml::Element;
use std::collections::{HashMap, VecDeque};

/// Requests in flight through all rooms at most.
const MAX_PENDING: usize = 256;

/// A request passed on and not yet answered.
struct Pending {
    /// The asker's real full JID and its id.
    asker: Jid,
    asker_id: String,
    /// The target's occupant JID (the answer's new `from`) and the session asked.
    target_occupant: String,
    target_session: Jid,
}

#[derive(Default)]
pub struct Forwarder {
    pending: HashMap<String, Pending>,
    order: VecDeque<String>,
}

impl Forwarder {
    /// The request as the target occupant's session receives it.
    pub fn request(
        &mut self,
        iq: &Element,
        asker: &Jid,
        asker_occupant: &str,
        target_occupant: &str,
        target_session: &Jid,
    ) -> Element {
        let id = stanza::random_id(12);
        let mut out = iq.clone();
        out.set_attr("id", id.clone());
        out.set_attr("from", asker_occupant.to_string());
        out.set_attr("to", target_session.to_string());
        if self.order.len() >= MAX_PENDING {
            if let Some(old) = self.order.pop_front() {
                self.pending.remove(&old);
            }
        }
        self.order.push_back(id.clone());
        self.pending.insert(
            id,
            Pending {
                asker: asker.clone(),
                asker_id: iq.attr("id").unwrap_or_default().to_string(),
                target_occupant: target_occupant.to_string(),
                target_session: target_session.clone(),
            },
        );
        out
    }

    /// An answer (`result`/`error`) from `from`: the stanza for the asker, if it answers a
    /// request this room passed to exactly that session.
    pub fn answer(&mut self, iq: &Element, from: &Jid) -> Option<Element> {
        let id = iq.attr("id")?;
        if self.pending.get(id)?.target_session != *from {
            return None;
        }
        let p = self.pending.remove(id)?;
        self.order.retain(|o| o != id);
        let mut out = iq.clone();
        out.set_attr("id", p.asker_id);
        out.set_attr("from", p.target_occupant);
        out.set_attr("to", p.asker.to_string());
        Some(out)
    }
}

/// Who may ask an occupant something through the room: its fellow occupants.
pub fn may_ask(asker_is_occupant: bool) -> Result<(), StanzaError> {
    if asker_is_occupant {
        Ok(())
    } else {
        Err(StanzaError::new("modify", "not-acceptable").with_text("you are not in this room"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xml::ns;

    #[test]
    fn answers_go_back_to_the_asker_and_only_from_the_session_asked() {
        let mut f = Forwarder::default();
        let asker = Jid::parse("alice@x/phone").unwrap();
        let target = Jid::parse("bob@x/pc").unwrap();
        let iq = Element::new("iq", ns::CLIENT)
            .with_attr("type", "get")
            .with_attr("id", "a1")
            .with_child(Element::new("vCard", "vcard-temp"));
        let out = f.request(&iq, &asker, "r@g/Alice", "r@g/Bob", &target);
        assert_eq!(out.attr("from"), Some("r@g/Alice"));
        assert_eq!(out.attr("to"), Some("bob@x/pc"));
        let mut answer = Element::new("iq", ns::CLIENT)
            .with_attr("type", "result")
            .with_attr("id", out.attr("id").unwrap());
        let stranger = Jid::parse("eve@x/pc").unwrap();
        assert!(
            f.answer(&answer, &stranger).is_none(),
            "only the session asked answers"
        );
        let back = f.answer(&answer, &target).unwrap();
        assert_eq!(back.attr("id"), Some("a1"));
        assert_eq!(back.attr("from"), Some("r@g/Bob"));
        assert_eq!(back.attr("to"), Some("alice@x/phone"));
        assert!(f.answer(&answer, &target).is_none(), "answered once");
        answer.set_attr("id", "unknown");
        assert!(f.answer(&answer, &target).is_none());
    }

    #[test]
    fn pending_requests_are_bounded() {
        let mut f = Forwarder::default();
        let a = Jid::parse("a@x/1").unwrap();
        let iq = Element::new("iq", ns::CLIENT).with_attr("type", "get");
        for _ in 0..MAX_PENDING + 10 {
            f.request(&iq, &a, "r@g/A", "r@g/B", &a);
        }
        assert_eq!(f.pending.len(), MAX_PENDING);
        assert_eq!(f.order.len(), MAX_PENDING);
    }
}
