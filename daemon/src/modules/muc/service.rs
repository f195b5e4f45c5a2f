//! The service's task: takes stanzas from its queue one at a time, keeps the rooms that have
//! occupants in memory (an empty persistent room lives only in SQLite), and dispatches by kind
//! and address. Also the shared ways out (`send`, `reply`, `refuse`) and the service's own
//! disco answers.

use super::room::{Room, NS_MUC, NS_OCCUPANT_ID};
use super::{history, store, MucConfig};
use crate::jid::Jid;
use crate::server::Server;
use crate::stanza::{self, StanzaError};
use crate::storage::now_secs;
use crate::xml::Element;
use futures_util::FutureExt;
use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

pub const DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
pub const DISCO_ITEMS: &str = "http://jabber.org/protocol/disco#items";
pub const PING: &str = "urn:xmpp:ping";
pub const SELF_PING: &str = "http://jabber.org/protocol/muc#self-ping-optimization";
pub const STABLE_ID: &str = "http://jabber.org/protocol/muc#stable_id";
pub const VCARD: &str = "vcard-temp";
/// Public rooms listed in one disco#items answer at most.
const MAX_LISTED: u32 = 500;
/// How often old archived messages are forgotten.
const RETENTION_EVERY: Duration = Duration::from_secs(3600);

pub struct Service {
    pub domain: String,
    pub settings: MucConfig,
    /// Rooms with occupants (and rooms being worked on), by name.
    pub rooms: HashMap<String, Room>,
    /// IQs passed between occupants, waiting for their answers.
    pub forwarder: super::forward::Forwarder,
}

/// Sends a stanza from the room to an occupant or invitee, through the recipient's hooks.
pub async fn send(server: &Arc<Server>, stanza: Element) {
    log::trace!("group chats: out {}", stanza.to_xml(crate::xml::ns::CLIENT));
    crate::delivery::route(server, stanza, None).await;
}

/// Sends a server-made answer (IQ result, archive page) without hooks.
pub fn reply(server: &Arc<Server>, stanza: Element) {
    crate::delivery::deliver_to_full(server, stanza);
}

/// Answers a stanza with an error (never an error with an error).
pub fn refuse(server: &Arc<Server>, original: &Element, err: StanzaError) {
    crate::delivery::bounce(server, original, err);
}

pub fn internal(e: crate::storage::StorageError) -> StanzaError {
    log::error!("group chats: {e}");
    StanzaError::internal()
}

/// Stanzas to this room panic in tests, to check the service survives a bug.
#[cfg(test)]
pub const PANIC_ROOM_FOR_TESTS: &str = "panic-for-tests";

/// A stanza's name and attributes without its children: enough to answer it with an error.
fn headers_of(stanza: &Element) -> Element {
    Element {
        name: stanza.name.clone(),
        ns: stanza.ns.clone(),
        attrs: stanza.attrs.clone(),
        children: Vec::new(),
    }
}

impl Service {
    pub fn new(domain: String, settings: MucConfig) -> Service {
        Service {
            domain,
            settings,
            rooms: HashMap::new(),
            forwarder: Default::default(),
        }
    }

    pub fn room_jid(&self, name: &str) -> String {
        format!("{name}@{}", self.domain)
    }

    pub async fn run(
        mut self,
        server: Weak<Server>,
        mut shutdown: watch::Receiver<bool>,
        mut queue: mpsc::Receiver<Element>,
    ) {
        if let Some(s) = server.upgrade() {
            match s.storage.call(store::clear_temporary).await {
                Ok(0) => {}
                Ok(n) => log::info!("group chats: removed {n} temporary rooms left from before"),
                Err(e) => log::error!("group chats: cannot clear temporary rooms: {e}"),
            }
        }
        let mut retention = tokio::time::interval(RETENTION_EVERY);
        loop {
            tokio::select! {
                next = queue.recv() => {
                    let (Some(stanza), Some(server)) = (next, server.upgrade()) else { return };
                    // One task serves every room: a bug while handling one stanza must not take
                    // all rooms down with it. The headers are kept to answer with an error.
                    let head = headers_of(&stanza);
                    let handled = std::panic::AssertUnwindSafe(self.handle(&server, stanza))
                        .catch_unwind()
                        .await;
                    if handled.is_err() {
                        self.recover(&server, &head);
                    }
                }
                _ = retention.tick() => {
                    let Some(server) = server.upgrade() else { return };
                    history::expire(&server, self.settings.archive_days).await;
                }
                _ = shutdown.changed() => return,
            }
        }
    }

    /// After a panic while handling `head`'s stanza: its room may be half changed, so it is
    /// dropped from memory (a persistent room is read again from the database on next use, a
    /// temporary one is gone) and the sender hears `internal-server-error`.
    fn recover(&mut self, server: &Arc<Server>, head: &Element) {
        let room = stanza::to_jid(head)
            .and_then(Result::ok)
            .and_then(|j| j.local);
        log::error!(
            "group chats: handling a stanza for {} failed unexpectedly (a bug); {}",
            room.as_deref().unwrap_or("the service"),
            if room.is_some() {
                "the room is reloaded on next use"
            } else {
                "the service goes on"
            }
        );
        if let Some(room) = room {
            self.rooms.remove(&room);
        }
        refuse(server, head, StanzaError::internal());
    }

    pub async fn handle(&mut self, server: &Arc<Server>, stanza: Element) {
        log::trace!("group chats: in {}", stanza.to_xml(crate::xml::ns::CLIENT));
        #[cfg(test)]
        if stanza::to_jid(&stanza)
            .and_then(Result::ok)
            .is_some_and(|j| j.local.as_deref() == Some(PANIC_ROOM_FOR_TESTS))
        {
            panic!("a bug, as a test provokes it");
        }
        let Some(from) = stanza::from_jid(&stanza) else {
            return;
        };
        let Some(Ok(to)) = stanza::to_jid(&stanza) else {
            return;
        };
        let Some(room) = to.local.clone() else {
            return self.service_stanza(server, stanza, &from).await;
        };
        match stanza.name.as_str() {
            "presence" => {
                super::occupants::presence(self, server, stanza, from, room, to.resource).await
            }
            "message" => {
                super::messages::message(self, server, stanza, from, room, to.resource).await
            }
            "iq" => self.room_iq(server, stanza, from, room, to.resource).await,
            _ => {}
        }
    }

    /// Makes sure a room that exists is in memory; says whether it exists.
    pub async fn load(&mut self, server: &Arc<Server>, name: &str) -> Result<bool, StanzaError> {
        if self.rooms.contains_key(name) {
            return Ok(true);
        }
        let n = name.to_string();
        let room = server
            .storage
            .read(move |c| store::load_room(c, &n))
            .await
            .map_err(internal)?;
        Ok(match room {
            Some(r) => {
                self.rooms.insert(name.to_string(), r);
                true
            }
            None => false,
        })
    }

    /// Writes a room's settings, subject and affiliations.
    pub async fn save(&self, server: &Arc<Server>, name: &str) -> Result<(), StanzaError> {
        let Some(room) = self.rooms.get(name) else {
            return Ok(());
        };
        let mut copy = room.clone();
        copy.occupants.clear();
        server
            .storage
            .call(move |c| store::save_room(c, &copy, now_secs()))
            .await
            .map_err(internal)
    }

    /// A room whose last occupant left: temporary rooms (and rooms never configured) go, the
    /// others stay only in SQLite.
    pub async fn after_last_left(&mut self, server: &Arc<Server>, name: &str) {
        let Some(room) = self.rooms.get(name) else {
            return;
        };
        if !room.occupants.is_empty() {
            return;
        }
        let gone = !room.config.persistent || room.locked;
        self.rooms.remove(name);
        if gone {
            let n = name.to_string();
            if let Err(e) = server
                .storage
                .call(move |c| store::delete_room(c, &n))
                .await
            {
                log::error!("group chats: cannot remove room {name}: {e}");
            }
        }
    }

    /// Stanzas to the service's own JID: disco; nothing else lives there.
    async fn service_stanza(&mut self, server: &Arc<Server>, st: Element, from: &Jid) {
        if st.name != "iq" {
            if st.name == "message" {
                refuse(server, &st, StanzaError::service_unavailable());
            }
            return;
        }
        if !matches!(st.attr("type"), Some("get" | "set")) {
            return;
        }
        let payload = st.first_element().cloned();
        let answer = match payload {
            Some(p) if p.is("query", DISCO_INFO) && st.attr("type") == Some("get") => {
                if p.attr("node").is_some() {
                    Err(StanzaError::item_not_found())
                } else {
                    Ok(Some(self.service_info()))
                }
            }
            Some(p) if p.is("query", DISCO_ITEMS) && st.attr("type") == Some("get") => {
                self.public_rooms(server).await.map(Some)
            }
            Some(p) if p.is("ping", PING) => Ok(None),
            _ => Err(StanzaError::service_unavailable()),
        };
        let _ = from;
        answer_iq(server, &st, answer);
    }

    fn service_info(&self) -> Element {
        let mut q = Element::new("query", DISCO_INFO).with_child(
            Element::new("identity", DISCO_INFO)
                .with_attr("category", "conference")
                .with_attr("type", "text")
                .with_attr("name", "Group chats"),
        );
        for f in [
            DISCO_INFO,
            DISCO_ITEMS,
            NS_MUC,
            crate::modules::mam::NS,
            crate::modules::mam::SID,
            SELF_PING,
            STABLE_ID,
            NS_OCCUPANT_ID,
            VCARD,
            PING,
        ] {
            q.push_child(Element::new("feature", DISCO_INFO).with_attr("var", f));
        }
        q
    }

    async fn public_rooms(&self, server: &Arc<Server>) -> Result<Element, StanzaError> {
        let listed = server
            .storage
            .read(|c| store::list(c, true, MAX_LISTED))
            .await
            .map_err(internal)?;
        let mut q = Element::new("query", DISCO_ITEMS);
        for r in listed {
            // Rooms still being set up are not listed; their row shows the defaults.
            if self.rooms.get(&r.name).is_some_and(|room| room.locked) {
                continue;
            }
            let mut item =
                Element::new("item", DISCO_ITEMS).with_attr("jid", self.room_jid(&r.name));
            if !r.title.is_empty() {
                item.set_attr("name", r.title);
            }
            q.push_child(item);
        }
        Ok(q)
    }

    async fn room_iq(
        &mut self,
        server: &Arc<Server>,
        iq: Element,
        from: Jid,
        name: String,
        nick: Option<String>,
    ) {
        if !matches!(iq.attr("type"), Some("get" | "set")) {
            // Answers: to a request passed to an occupant, else nothing the room asked.
            if let Some(back) = self.forwarder.answer(&iq, &from) {
                send(server, back).await;
            }
            return;
        }
        let payload = match iq.first_element() {
            Some(p) if iq.elements().count() == 1 => p.clone(),
            _ => return answer_iq(server, &iq, Err(StanzaError::bad_request())),
        };
        match self.load(server, &name).await {
            Ok(true) => {}
            Ok(false) => {
                return answer_iq(
                    server,
                    &iq,
                    Err(StanzaError::item_not_found().with_text("no such room")),
                )
            }
            Err(e) => return answer_iq(server, &iq, Err(e)),
        }
        if let Some(nick) = nick {
            if let Some(answer) = self
                .occupant_iq(server, &iq, &name, &nick, &from, &payload)
                .await
            {
                answer_iq(server, &iq, answer);
            }
            return self.after_last_left(server, &name).await;
        }
        let set = iq.attr("type") == Some("set");
        let answer = match (payload.name.as_str(), payload.ns.as_str(), set) {
            ("query", DISCO_INFO, false) => self.room_info(&name, &payload),
            ("query", DISCO_ITEMS, false) => Ok(Some(Element::new("query", DISCO_ITEMS))),
            ("query", super::admin::NS_ADMIN, _) => {
                super::admin::admin_iq(self, server, &name, &from, &payload, set).await
            }
            ("query", super::admin::NS_OWNER, _) => {
                super::admin::owner_iq(self, server, &name, &from, &payload, set).await
            }
            ("query", crate::modules::mam::NS, false) => Ok(Some(history::query_form())),
            ("query", crate::modules::mam::NS, true) => {
                // The pages go out before the result, as XEP-0313 §4.1 has it.
                history::archive_query(self, server, &name, &from, &iq, &payload).await
            }
            ("vCard", VCARD, _) => {
                history::vcard_iq(self, server, &name, &from, &payload, set).await
            }
            ("ping", PING, false) => Ok(None),
            _ => Err(StanzaError::service_unavailable()),
        };
        answer_iq(server, &iq, answer);
        // A room only asked about (disco, archive) does not stay in memory.
        self.after_last_left(server, &name).await;
    }

    /// IQs to an occupant's JID: the XEP-0410 self-ping is answered here; the rest goes to the
    /// occupant's newest device (`forward.rs`). `None` when it was passed on.
    async fn occupant_iq(
        &mut self,
        server: &Arc<Server>,
        iq: &Element,
        name: &str,
        nick: &str,
        from: &Jid,
        payload: &Element,
    ) -> Option<Result<Option<Element>, StanzaError>> {
        let room_jid = self.room_jid(name);
        let Some(room) = self.rooms.get(name) else {
            return Some(Err(StanzaError::item_not_found()));
        };
        let asker = room.by_session(from);
        if payload.is("ping", PING) && asker.is_some_and(|o| o.nick == nick) {
            return Some(Ok(None));
        }
        if let Err(e) = super::forward::may_ask(asker.is_some()) {
            // XEP-0410 §3: a ping answered so tells the client it is no longer in the room.
            return Some(Err(e));
        }
        let Some(target) = room.by_nick(nick).and_then(|o| o.sessions.last()) else {
            return Some(Err(StanzaError::item_not_found()));
        };
        let asker_occupant = format!(
            "{room_jid}/{}",
            asker.map(|o| o.nick.as_str()).unwrap_or("")
        );
        let out = self.forwarder.request(
            iq,
            from,
            &asker_occupant,
            &format!("{room_jid}/{nick}"),
            &target.jid.clone(),
        );
        send(server, out).await;
        None
    }

    fn room_info(&self, name: &str, payload: &Element) -> Result<Option<Element>, StanzaError> {
        if payload.attr("node").is_some() {
            return Err(StanzaError::item_not_found());
        }
        let room = self
            .rooms
            .get(name)
            .ok_or_else(StanzaError::item_not_found)?;
        let c = &room.config;
        let title = if c.name.is_empty() { name } else { &c.name };
        let mut q = Element::new("query", DISCO_INFO).with_child(
            Element::new("identity", DISCO_INFO)
                .with_attr("category", "conference")
                .with_attr("type", "text")
                .with_attr("name", title),
        );
        let pick = |b: bool, yes: &'static str, no: &'static str| if b { yes } else { no };
        let features = [
            NS_MUC,
            pick(c.persistent, "muc_persistent", "muc_temporary"),
            pick(c.public, "muc_public", "muc_hidden"),
            pick(c.members_only, "muc_membersonly", "muc_open"),
            pick(c.moderated, "muc_moderated", "muc_unmoderated"),
            pick(
                c.password.is_some(),
                "muc_passwordprotected",
                "muc_unsecured",
            ),
            pick(
                c.whois == super::room::Whois::Anyone,
                "muc_nonanonymous",
                "muc_semianonymous",
            ),
            crate::modules::mam::NS,
            crate::modules::mam::SID,
            NS_OCCUPANT_ID,
            STABLE_ID,
            SELF_PING,
            VCARD,
            DISCO_INFO,
        ];
        for f in features {
            q.push_child(Element::new("feature", DISCO_INFO).with_attr("var", f));
        }
        let data = super::form::DATA;
        let field = |var: &str, v: String| {
            Element::new("field", data)
                .with_attr("var", var)
                .with_child(Element::new("value", data).with_text(v))
        };
        let mut form = Element::new("x", data)
            .with_attr("type", "result")
            .with_child(
                Element::new("field", data)
                    .with_attr("var", "FORM_TYPE")
                    .with_attr("type", "hidden")
                    .with_child(Element::new("value", data).with_text(super::form::ROOMINFO)),
            )
            .with_child(field("muc#roominfo_description", c.description.clone()))
            .with_child(field(
                "muc#roominfo_occupants",
                room.occupants.len().to_string(),
            ))
            .with_child(field("muc#roominfo_subject", room.subject.clone()))
            .with_child(field("muc#roomconfig_roomname", c.name.clone()));
        if let Some(h) = &room.avatar_hash {
            form.push_child(field("muc#roominfo_avatarhash", h.clone()));
        }
        q.push_child(form);
        Ok(Some(q))
    }
}

/// Whether a stanza comes from the server itself (its admin, through the control socket).
pub fn from_server(server: &Server, from: &Jid) -> bool {
    from.local.is_none() && from.resource.is_none() && from.domain == server.domain()
}

/// Sends an IQ's result (with the payload, if any) or its error; the server's own requests are
/// answered to the tracker that waits for them.
pub fn answer_iq(server: &Arc<Server>, iq: &Element, answer: Result<Option<Element>, StanzaError>) {
    let reply_el = match answer {
        Ok(payload) => Some(stanza::iq_result(iq, payload)),
        Err(e) => stanza::error_reply(iq, &e),
    };
    let Some(reply_el) = reply_el else {
        return;
    };
    let asker = stanza::from_jid(iq);
    let room = stanza::to_jid(iq).and_then(Result::ok);
    match (asker, room) {
        (Some(asker), Some(room)) if from_server(server, &asker) => {
            server.iq_tracker.resolve(&room, reply_el);
        }
        _ => reply(server, reply_el),
    }
}
