//! XEP-0191: Blocking Command. A user blocks a JID (a full JID, a bare JID or a whole domain);
//! from then on nothing passes between them in either direction — messages, presence, IQs —
//! until the user unblocks it. Every session of the account gets a push of each change.
//! The lists live in the module's own table and, for the accounts in use, in a bounded cache.

use super::{IqFuture, IqRequest, Module};
use crate::delivery::presence;
use crate::hooks::{
    BoxFut, DiscoInfo, DiscoTarget, Flow, Hook, IqKind, IqRoute, Kind, SessionEvent, StanzaEvent,
};
use crate::jid::Jid;
use crate::server::Server;
use crate::stanza::{self, StanzaError};
use crate::storage::StorageError;
use crate::xml::{ns, Element};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

pub const NS: &str = "urn:xmpp:blocking";
pub const ERRORS: &str = "urn:xmpp:blocking:errors";

/// Blocked JIDs one account may keep: enough for any person, small enough for a Pi.
pub const MAX_ITEMS: usize = 1000;
/// Accounts whose lists are kept in memory (an empty list costs one small entry); beyond this
/// one entry makes room for the next, so a busy server re-reads some lists but never thrashes.
const MAX_CACHED: usize = 8192;
/// Before everything else that looks at a stanza: a blocked stanza goes nowhere, not even into
/// carbons or the archive.
const FIRST: i16 = 100;

type List = Arc<HashSet<String>>;

#[derive(Default)]
pub struct Blocking {
    cache: Mutex<HashMap<String, List>>,
}

/// XEP-0016 §2.1 matching, which XEP-0191 uses: an item blocks the JID itself, its bare JID,
/// its domain with the same resource, or its whole domain.
pub fn blocks(list: &HashSet<String>, jid: &Jid) -> bool {
    if list.is_empty() {
        return false;
    }
    let full = jid.to_string();
    let bare = jid.bare_string();
    let domain_res = jid.resource.as_ref().map(|r| format!("{}/{r}", jid.domain));
    list.contains(&full)
        || list.contains(&bare)
        || domain_res.is_some_and(|d| list.contains(&d))
        || list.contains(&jid.domain)
}

impl Blocking {
    /// The account's list, from the cache or the database.
    async fn list(&self, server: &Server, user: &str) -> List {
        if let Some(l) = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(user)
        {
            return l.clone();
        }
        self.reload(server, user).await
    }

    async fn reload(&self, server: &Server, user: &str) -> List {
        let owner = user.to_string();
        let items = server
            .storage
            .call(move |conn| {
                let mut st = conn.prepare("SELECT jid FROM blocklist WHERE username = ?1")?;
                let rows = st.query_map([&owner], |r| r.get::<_, String>(0))?;
                Ok(rows.collect::<rusqlite::Result<HashSet<_>>>()?)
            })
            .await;
        let list = Arc::new(items.unwrap_or_else(|e| {
            log::error!("cannot read the blocklist of {user}: {e}");
            HashSet::new()
        }));
        self.remember(user, list.clone());
        list
    }

    fn remember(&self, user: &str, list: List) {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= MAX_CACHED && !cache.contains_key(user) {
            if let Some(victim) = cache.keys().next().cloned() {
                cache.remove(&victim);
            }
        }
        cache.insert(user.to_string(), list);
    }

    /// Whether local account `user` blocks `jid`.
    async fn user_blocks(&self, server: &Server, user: &Jid, jid: &Jid) -> bool {
        if user.domain != server.domain() {
            return false;
        }
        let Some(local) = &user.local else {
            return false;
        };
        blocks(&*self.list(server, local).await, jid)
    }

    async fn check(&self, server: &Arc<Server>, hook: Hook, ev: &mut StanzaEvent<'_>) -> Flow {
        let request = match ev.kind {
            Kind::Message => !matches!(stanza::stanza_type(&ev.stanza), "error"),
            Kind::Iq => matches!(ev.stanza.attr("type"), Some("get" | "set")),
            Kind::Presence => false,
        };
        let Some(to) = &ev.to else {
            return Flow::Continue;
        };
        if to.bare() == ev.from.bare() || (to.local.is_none() && to.domain == server.domain()) {
            // One's own account and one's own server are never blocked.
            return Flow::Continue;
        }
        // The sender blocked the addressee: tell the sender why (XEP-0191 §3.6).
        if self.user_blocks(server, &ev.from, to).await {
            return if request {
                Flow::Bounce(
                    StanzaError::new("modify", "not-acceptable")
                        .with_app_condition("blocked", ERRORS)
                        .with_text("you have blocked this contact"),
                )
            } else {
                Flow::Drop
            };
        }
        // The addressee blocked the sender: as if the addressee did not exist (§3.5).
        if matches!(hook, Hook::InboundBare(_) | Hook::InboundFull(_))
            && self.user_blocks(server, to, &ev.from).await
        {
            return if request {
                Flow::Bounce(StanzaError::service_unavailable())
            } else {
                Flow::Drop
            };
        }
        Flow::Continue
    }
}

impl Module for Blocking {
    fn name(&self) -> &'static str {
        "blocking"
    }
    fn hooks(&self) -> &'static [(Hook, i16)] {
        &[
            (Hook::Outbound(Kind::Message), FIRST),
            (Hook::Outbound(Kind::Presence), FIRST),
            (Hook::Outbound(Kind::Iq), FIRST),
            (Hook::InboundBare(Kind::Message), FIRST),
            (Hook::InboundBare(Kind::Presence), FIRST),
            (Hook::InboundBare(Kind::Iq), FIRST),
            (Hook::InboundFull(Kind::Message), FIRST),
            (Hook::InboundFull(Kind::Presence), FIRST),
            (Hook::InboundFull(Kind::Iq), FIRST),
            // A login re-reads the list, so an account removed and made again starts clean.
            (Hook::SessionBound, 0),
        ]
    }
    fn migrations(&self) -> &'static [&'static str] {
        &["CREATE TABLE blocklist (
            username     TEXT NOT NULL REFERENCES users(username) ON DELETE CASCADE,
            jid          TEXT NOT NULL,
            PRIMARY KEY (username, jid)
         ) WITHOUT ROWID;"]
    }
    fn disco_info(&self, _server: &Server, target: DiscoTarget, info: &mut DiscoInfo) {
        if target == DiscoTarget::Server {
            info.feature(NS);
        }
    }
    fn iqs(&self) -> &'static [IqRoute] {
        const ROUTES: &[IqRoute] = &[IqRoute::new(IqKind::Both, crate::hooks::SELF_OR_SERVER, NS)];
        ROUTES
    }
    fn on_stanza<'a>(
        &'a self,
        server: &'a Arc<Server>,
        hook: Hook,
        ev: &'a mut StanzaEvent<'_>,
    ) -> BoxFut<'a, Flow> {
        Box::pin(self.check(server, hook, ev))
    }
    fn on_session<'a>(
        &'a self,
        server: &'a Arc<Server>,
        _hook: Hook,
        ev: &'a mut SessionEvent<'_>,
    ) -> BoxFut<'a, Flow> {
        Box::pin(async move {
            if let Some(user) = &ev.session.jid.local {
                self.reload(server, user).await;
            }
            Flow::Continue
        })
    }
    fn handle_iq<'a>(&'a self, req: IqRequest<'a>) -> IqFuture<'a> {
        Box::pin(async move {
            let user = req
                .from
                .local
                .clone()
                .ok_or_else(StanzaError::bad_request)?;
            match (req.is_set(), req.payload.name.as_str()) {
                (false, "blocklist") => {
                    let list = self.list(req.server, &user).await;
                    let mut items: Vec<_> = list.iter().collect();
                    items.sort();
                    let mut q = Element::new("blocklist", NS);
                    for jid in items {
                        q.push_child(Element::new("item", NS).with_attr("jid", jid.clone()));
                    }
                    Ok(Some(q))
                }
                (true, "block") => self.change(req.server, req.from, req.payload, true).await,
                (true, "unblock") => self.change(req.server, req.from, req.payload, false).await,
                _ => Err(StanzaError::bad_request()),
            }
        })
    }
}

impl Blocking {
    async fn change(
        &self,
        server: &Arc<Server>,
        from: &Jid,
        payload: &Element,
        block: bool,
    ) -> Result<Option<Element>, StanzaError> {
        let user = from.local.clone().ok_or_else(StanzaError::bad_request)?;
        let mut jids = Vec::new();
        for item in payload.elements().filter(|e| e.name == "item") {
            let jid = item
                .attr("jid")
                .and_then(|j| Jid::parse(j).ok())
                .ok_or_else(|| StanzaError::new("modify", "jid-malformed"))?;
            jids.push(jid.to_string());
        }
        if block && jids.is_empty() {
            // §3.3: a block needs at least one item.
            return Err(StanzaError::bad_request().with_text("say whom to block"));
        }
        let before = self.list(server, &user).await;
        let owner = user.clone();
        let items = jids.clone();
        let after = server
            .storage
            .call(move |conn| {
                if block {
                    let mut st = conn.prepare(
                        "INSERT OR IGNORE INTO blocklist (username, jid) VALUES (?1, ?2)",
                    )?;
                    for j in &items {
                        st.execute([&owner, j])?;
                    }
                } else if items.is_empty() {
                    conn.execute("DELETE FROM blocklist WHERE username = ?1", [&owner])?;
                } else {
                    let mut st =
                        conn.prepare("DELETE FROM blocklist WHERE username = ?1 AND jid = ?2")?;
                    for j in &items {
                        st.execute([&owner, j])?;
                    }
                }
                let mut st = conn.prepare("SELECT jid FROM blocklist WHERE username = ?1")?;
                let rows = st.query_map([&owner], |r| r.get::<_, String>(0))?;
                let after = rows.collect::<rusqlite::Result<HashSet<_>>>()?;
                if after.len() > MAX_ITEMS {
                    // The savepoint is rolled back: nothing of this change stays.
                    return Err(StorageError::Refused(format!(
                        "at most {MAX_ITEMS} blocked addresses"
                    )));
                }
                Ok(after)
            })
            .await
            .map_err(|e| match e {
                StorageError::Refused(why) => {
                    StanzaError::new("wait", "resource-constraint").with_text(why)
                }
                _ => StanzaError::internal(),
            })?;
        let after = Arc::new(after);
        self.remember(&user, after.clone());
        let changed: Vec<String> = if block {
            after.difference(&before).cloned().collect()
        } else {
            before.difference(&after).cloned().collect()
        };
        push(server, from, payload, block, &jids);
        for jid in changed.iter().filter_map(|j| Jid::parse(j).ok()) {
            if block {
                vanish(server, from, &jid);
            } else {
                reappear(server, from, &jid).await;
            }
        }
        Ok(None)
    }
}

/// §3.3/§3.4: every session of the account learns of the change.
fn push(server: &Arc<Server>, from: &Jid, payload: &Element, block: bool, jids: &[String]) {
    let mut change = Element::new(if block { "block" } else { "unblock" }, NS);
    for j in jids {
        change.push_child(Element::new("item", NS).with_attr("jid", j.clone()));
    }
    if !block && jids.is_empty() {
        change = payload.clone();
    }
    for s in server.sessions.sessions_of(&from.bare_string()) {
        s.deliver(
            Element::new("iq", ns::CLIENT)
                .with_attr("type", "set")
                .with_attr("id", format!("block-{}", stanza::random_id(6)))
                .with_attr("to", s.jid.to_string())
                .with_child(change.clone()),
        );
    }
}

/// Local sessions matched by a (possibly domain-wide) blocked JID.
fn sessions_matching(server: &Server, jid: &Jid) -> Vec<crate::sessions::SessionHandle> {
    let set: HashSet<String> = [jid.to_string()].into();
    if jid.domain != server.domain() {
        return Vec::new();
    }
    if jid.local.is_none() {
        return server
            .sessions
            .all()
            .into_iter()
            .filter(|s| blocks(&set, &s.jid))
            .collect();
    }
    server
        .sessions
        .sessions_of(&jid.bare_string())
        .into_iter()
        .filter(|s| blocks(&set, &s.jid))
        .collect()
}

/// Just blocked: the user's resources vanish for the contact and the contact's for the user.
/// Written straight to the sessions: the hooks would now (rightly) drop these.
fn vanish(server: &Arc<Server>, user: &Jid, blocked: &Jid) {
    let mine: Vec<_> = server
        .sessions
        .sessions_of(&user.bare_string())
        .into_iter()
        .filter(|s| s.available())
        .collect();
    for theirs in sessions_matching(server, blocked) {
        for me in &mine {
            if theirs.available() {
                let (m, t) = (me.jid.to_string(), theirs.jid.to_string());
                theirs.deliver(presence(&m, &t, Some("unavailable")));
                me.deliver(presence(&t, &m, Some("unavailable")));
            }
        }
    }
}

/// Just unblocked: presence flows again where the roster says it should.
async fn reappear(server: &Arc<Server>, user: &Jid, unblocked: &Jid) {
    let Some(local) = &user.local else { return };
    let item = server
        .storage
        .roster_item(local, &unblocked.bare_string())
        .await
        .ok()
        .flatten();
    let Some(item) = item else { return };
    let mine = server.sessions.sessions_of(&user.bare_string());
    for theirs in sessions_matching(server, unblocked) {
        for me in &mine {
            if item.subscription.has_from() {
                if let Some(mut p) = me.last_presence() {
                    p.set_attr("from", me.jid.to_string());
                    p.set_attr("to", theirs.jid.to_string());
                    super::presence::send_to_contact(server, p).await;
                }
            }
            if item.subscription.has_to() && me.available() {
                if let Some(mut p) = theirs.last_presence() {
                    p.set_attr("from", theirs.jid.to_string());
                    p.set_attr("to", me.jid.to_string());
                    super::presence::send_to_contact(server, p).await;
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "blocking_tests.rs"]
mod tests;
