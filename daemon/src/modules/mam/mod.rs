//! XEP-0313: Message Archive Management (`urn:xmpp:mam:2` and `#extended`), with XEP-0359
//! stanza ids, XEP-0059 paging and XEP-0441 preferences. Every message with content an account
//! sends or receives is kept in its archive when it is routed; the live copy of a received
//! message carries the `<stanza-id/>` its archived copy has, so a client can tell which
//! archived message it already has. History scrolls back from any device, and a retention job
//! forgets what is older than `[modules.mam] retention_days`.
//!
//! `form.rs` parses queries, `store.rs` owns the tables; this file decides what is archived and
//! answers the IQs. Pages are read through the storage's read-only connection and written
//! through the querying session's own write path, so a page never overflows its queue.

#[cfg(test)]
mod commit_tests;

pub mod form;
mod keep;
pub use keep::should_archive;
mod prefs_cache;
pub mod store;
#[cfg(test)]
mod tests;

use super::{IqFuture, IqRequest, Module};
use crate::hooks::{
    BoxFut, DiscoInfo, DiscoTarget, Flow, Hook, IqKind, IqRoute, IqTarget, Kind, StanzaEvent,
};
use crate::jid::Jid;
use crate::server::Server;
use crate::stanza::{self, StanzaError};
use crate::storage::{now_secs, Storage, StorageError};
use crate::xml::{ns, Element};
pub use form::{NS, NS_EXTENDED};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use store::{Mode, Prefs, QueryFailure};

/// XEP-0359 unique and stable stanza ids.
pub const SID: &str = "urn:xmpp:sid:0";
const FORWARD: &str = "urn:xmpp:forward:0";
const DELAY: &str = "urn:xmpp:delay";
const HINTS: &str = "urn:xmpp:hints";
const CARBONS: &str = "urn:xmpp:carbons:2";
/// Payloads worth archiving without a body: end-to-end encrypted messages and invitations.
const CONTENT: &[&str] = &[
    "eu.siacs.conversations.axolotl",
    "urn:xmpp:omemo:2",
    "urn:xmpp:openpgp:0",
    "jabber:x:encrypted",
    "jabber:x:conference",
    "jabber:x:oob",
];

/// Before carbons (−100), so received carbons carry the stanza id; after modules that refuse
/// messages (blocking runs at higher priorities), so nothing refused is archived.
const ARCHIVE_PRIORITY: i16 = -40;
/// How often the retention job looks for old messages.
const RETENTION_EVERY: Duration = Duration::from_secs(3600);
/// Messages deleted per writer job by the retention job.
const EXPIRE_BATCH: u32 = 500;
/// JIDs per preference list at most.
const MAX_PREF_JIDS: usize = 1000;
/// Result messages handed to the write path at once.
const SEND_BATCH: usize = 50;

/// `[modules.mam]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ArchiveConfig {
    /// Days a message is kept; 0 keeps messages forever.
    #[serde(default = "default_retention_days")]
    pub retention_days: u32,
}

impl Default for ArchiveConfig {
    fn default() -> Self {
        ArchiveConfig {
            retention_days: default_retention_days(),
        }
    }
}

fn default_retention_days() -> u32 {
    365
}

pub struct Archive {
    retention_days: u32,
    prefs: prefs_cache::PrefsCache,
}

impl Archive {
    pub fn new(config: &ArchiveConfig) -> Archive {
        Archive {
            retention_days: config.retention_days,
            prefs: Default::default(),
        }
    }
}

impl Module for Archive {
    fn name(&self) -> &'static str {
        "mam"
    }
    fn hooks(&self) -> &'static [(Hook, i16)] {
        &[
            (Hook::Outbound(Kind::Message), ARCHIVE_PRIORITY),
            (Hook::InboundBare(Kind::Message), ARCHIVE_PRIORITY),
            (Hook::InboundFull(Kind::Message), ARCHIVE_PRIORITY),
            // Queries run in the querying session's task, to write pages through its write path.
            (Hook::Outbound(Kind::Iq), 0),
        ]
    }
    fn migrations(&self) -> &'static [&'static str] {
        store::MIGRATIONS
    }
    fn disco_info(&self, _server: &Server, target: DiscoTarget, info: &mut DiscoInfo) {
        if target == DiscoTarget::Account {
            info.feature(NS);
            info.feature(NS_EXTENDED);
        }
    }
    fn iqs(&self) -> &'static [IqRoute] {
        const ROUTES: &[IqRoute] = &[IqRoute::new(IqKind::Both, &[IqTarget::OwnAccount], NS)];
        ROUTES
    }
    fn handle_iq<'a>(&'a self, req: IqRequest<'a>) -> IqFuture<'a> {
        Box::pin(async move {
            let user = req
                .from
                .local
                .clone()
                .ok_or_else(StanzaError::not_allowed)?;
            let storage = &req.server.storage;
            match (req.payload.name.as_str(), req.is_set()) {
                ("query", false) => Ok(Some(query_form())),
                ("query", true) => {
                    // Only reached without a session task (the hook takes the rest): the page
                    // goes through the session's queue.
                    let (results, fin) = run_query(req.server, req.from, req.payload).await?;
                    let session = req.session.ok_or_else(StanzaError::not_allowed)?;
                    for r in results {
                        session.deliver(r);
                    }
                    Ok(Some(fin))
                }
                ("prefs", false) => {
                    let prefs = read(storage, move |c| store::load_prefs(c, &user)).await?;
                    Ok(Some(prefs_element(&prefs)))
                }
                ("prefs", true) => {
                    let prefs = parse_prefs(req.payload)?;
                    let saved = prefs.clone();
                    let username = user.clone();
                    storage
                        .call(move |c| store::save_prefs(c, &username, &saved))
                        .await
                        .map_err(internal)?;
                    self.prefs.put(&user, prefs.clone());
                    Ok(Some(prefs_element(&prefs)))
                }
                ("metadata", false) => {
                    let b = read(storage, move |c| store::bounds(c, &user)).await?;
                    Ok(Some(metadata_element(b)))
                }
                _ => Err(StanzaError::bad_request()
                    .with_text("the archive answers query, prefs and metadata requests")),
            }
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
                Hook::Outbound(Kind::Iq) => on_query(server, ev).await,
                Hook::Outbound(_) => {
                    keep::archive_sent(server, &self.prefs, ev).await;
                    Flow::Continue
                }
                _ => {
                    keep::archive_received(server, &self.prefs, ev).await;
                    Flow::Continue
                }
            }
        })
    }
    fn start(&self, server: &Arc<Server>) {
        let days = self.retention_days;
        if days == 0 {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let weak = Arc::downgrade(server);
        let mut shutdown = server.shutdown_signal();
        runtime.spawn(async move {
            loop {
                match weak.upgrade() {
                    Some(server) => match expire_old(&server.storage, days, now_secs()).await {
                        Ok(0) => {}
                        Ok(n) => log::info!("archive: forgot {n} messages older than {days} days"),
                        Err(e) => log::error!("archive retention job failed: {e}"),
                    },
                    None => return,
                }
                tokio::select! {
                    _ = tokio::time::sleep(RETENTION_EVERY) => {}
                    _ = shutdown.changed() => return,
                }
            }
        });
    }
}

/// Deletes the messages older than `days` (counted back from `now`), in short batches.
pub async fn expire_old(storage: &Storage, days: u32, now: i64) -> Result<usize, StorageError> {
    if days == 0 {
        return Ok(0);
    }
    let cutoff = now - i64::from(days) * 86_400;
    let mut total = 0;
    loop {
        let n = storage
            .call(move |c| store::expire(c, cutoff, EXPIRE_BATCH))
            .await?;
        total += n;
        if n < EXPIRE_BATCH as usize {
            return Ok(total);
        }
    }
}

fn internal(e: StorageError) -> StanzaError {
    log::error!("archive: {e}");
    StanzaError::internal()
}

async fn read<T: Send + 'static>(
    storage: &Storage,
    f: impl FnOnce(&rusqlite::Connection) -> Result<T, StorageError> + Send + 'static,
) -> Result<T, StanzaError> {
    storage.read(f).await.map_err(internal)
}

/// `<iq type='set'><query xmlns='urn:xmpp:mam:2'/></iq>` from a local session to its own
/// archive: the results and then the `<fin/>` through the session's write path.
async fn on_query(server: &Arc<Server>, ev: &mut StanzaEvent<'_>) -> Flow {
    if ev.stanza.attr("type") != Some("set") {
        return Flow::Continue;
    }
    let Some(payload) = ev.stanza.first_element().filter(|p| p.is("query", NS)) else {
        return Flow::Continue;
    };
    if ev.stanza.elements().count() != 1 {
        return Flow::Continue; // The core answers bad-request.
    }
    if let Some(to) = &ev.to {
        if !to.is_bare() || to.bare() != ev.from.bare() {
            return Flow::Continue; // Someone else's archive (a room's, later): not ours.
        }
    }
    let payload = payload.clone();
    let Some(local) = ev.local.as_deref_mut() else {
        return Flow::Continue;
    };
    let mut reply = match run_query(server, &ev.from, &payload).await {
        Ok((results, fin)) => {
            for batch in results.chunks(SEND_BATCH) {
                if local.send_all(batch.to_vec()).await.is_err() {
                    return Flow::Handled;
                }
            }
            stanza::iq_result(&ev.stanza, Some(fin))
        }
        Err(e) => match stanza::error_reply(&ev.stanza, &e) {
            Some(r) => r,
            None => return Flow::Handled,
        },
    };
    if ev.stanza.attr("to").is_none() {
        reply.remove_attr("from");
    }
    let _ = local.send(reply).await;
    Flow::Handled
}

/// Runs a query on the archive of `requester`'s account: the result messages and the `<fin/>`.
async fn run_query(
    server: &Server,
    requester: &Jid,
    payload: &Element,
) -> Result<(Vec<Element>, Element), StanzaError> {
    let query = form::parse_query(payload)?;
    let user = requester
        .local
        .clone()
        .ok_or_else(StanzaError::not_allowed)?;
    let q = query.clone();
    // Messages go out before their archived copy is committed: a client may ask about one it
    // has just received, so what was queued before this query is committed first.
    server.storage.settled().await.map_err(internal)?;
    let page = server
        .storage
        .read(move |c| {
            // One snapshot for the count, the cursors and the page, whatever is written meanwhile.
            let snapshot = c.unchecked_transaction()?;
            let page = match store::query(&snapshot, &user, &q) {
                Ok(p) => Ok(Ok(p)),
                Err(QueryFailure::Client(e)) => Ok(Err(e)),
                Err(QueryFailure::Storage(e)) => Err(e),
            };
            drop(snapshot);
            page
        })
        .await
        .map_err(internal)??;
    Ok(render_page(
        &page,
        &query,
        &requester.bare_string(),
        &requester.to_string(),
    )
    .await)
}

/// One page of an archive as the messages a client receives (`<result/>`s from the archive's
/// owner `archive` to `to`) and the `<fin/>` that ends them. Rooms' archives use it too.
pub async fn render_page(
    page: &store::Page,
    query: &form::Query,
    archive: &str,
    to: &str,
) -> (Vec<Element>, Element) {
    let account = archive.to_string();
    let mut results = Vec::with_capacity(page.entries.len());
    for entry in &page.entries {
        let Some(original) = crate::xml::parse_fragment(&entry.stanza).await else {
            log::error!(
                "archive of {account}: message {} cannot be parsed; skipped",
                entry.stanza_id
            );
            continue;
        };
        let mut result = Element::new("result", NS).with_attr("id", entry.stanza_id.clone());
        if let Some(qid) = &query.query_id {
            result.set_attr("queryid", qid.clone());
        }
        result.push_child(
            Element::new("forwarded", FORWARD)
                .with_child(
                    Element::new("delay", DELAY)
                        .with_attr("stamp", crate::timefmt::xep0082(entry.stamp)),
                )
                .with_child(original),
        );
        results.push(
            Element::new("message", ns::CLIENT)
                .with_attr("from", account.clone())
                .with_attr("to", to)
                .with_attr("id", stanza::random_id(9))
                .with_child(result),
        );
    }
    if query.flip {
        results.reverse();
    }
    let mut set = Element::new("set", form::RSM);
    if let (Some(first), Some(last)) = (page.entries.first(), page.entries.last()) {
        let mut f = Element::new("first", form::RSM).with_text(first.stanza_id.clone());
        if let Some(i) = page.first_index {
            f.set_attr("index", i.to_string());
        }
        set.push_child(f);
        set.push_child(Element::new("last", form::RSM).with_text(last.stanza_id.clone()));
    }
    set.push_child(Element::new("count", form::RSM).with_text(page.count.to_string()));
    let mut fin = Element::new("fin", NS);
    if page.complete {
        fin.set_attr("complete", "true");
    }
    fin.push_child(set);
    (results, fin)
}

/// The empty query form, for clients that discover the fields (XEP-0313 §4.1.5).
fn query_form() -> Element {
    let mut x = Element::new("x", form::DATA)
        .with_attr("type", "form")
        .with_child(
            Element::new("field", form::DATA)
                .with_attr("var", "FORM_TYPE")
                .with_attr("type", "hidden")
                .with_child(Element::new("value", form::DATA).with_text(NS)),
        );
    for (var, kind) in form::FIELDS {
        x.push_child(
            Element::new("field", form::DATA)
                .with_attr("var", *var)
                .with_attr("type", *kind),
        );
    }
    Element::new("query", NS).with_child(x)
}

fn prefs_element(p: &Prefs) -> Element {
    let list = |name: &str, jids: &[String]| {
        let mut e = Element::new(name, NS);
        for j in jids {
            e.push_child(Element::new("jid", NS).with_text(j.clone()));
        }
        e
    };
    Element::new("prefs", NS)
        .with_attr("default", p.default.as_str())
        .with_child(list("always", &p.always))
        .with_child(list("never", &p.never))
}

/// A `<prefs/>` set (XEP-0441 §4.2): a default and two lists of bare JIDs.
fn parse_prefs(el: &Element) -> Result<Prefs, StanzaError> {
    let bad = |t: String| StanzaError::bad_request().with_text(t);
    let default = el
        .attr("default")
        .ok_or_else(|| bad("<prefs/> needs a 'default' of always, never or roster".into()))?;
    let default = Mode::parse(default).ok_or_else(|| {
        bad(format!(
            "default '{default}' is not one of always, never, roster"
        ))
    })?;
    let mut prefs = Prefs {
        default,
        ..Prefs::default()
    };
    for list in el.elements() {
        let target = match (list.name.as_str(), list.ns.as_str()) {
            ("always", NS) => &mut prefs.always,
            ("never", NS) => &mut prefs.never,
            _ => continue,
        };
        for j in list.elements().filter(|j| j.is("jid", NS)) {
            let text = j.text();
            let jid = Jid::parse(text.trim()).map_err(|e| {
                bad(format!(
                    "'{}' in <{}/> is not a JID: {}",
                    text.trim(),
                    list.name,
                    e.0
                ))
            })?;
            let bare = jid.bare_string();
            if !target.contains(&bare) {
                target.push(bare);
            }
        }
        if target.len() > MAX_PREF_JIDS {
            return Err(bad(format!(
                "<{}/> lists more than {MAX_PREF_JIDS} JIDs",
                list.name
            )));
        }
    }
    if let Some(both) = prefs.always.iter().find(|j| prefs.never.contains(j)) {
        return Err(bad(format!("{both} is in both <always/> and <never/>")));
    }
    Ok(prefs)
}

fn metadata_element(bounds: store::Bounds) -> Element {
    let mut m = Element::new("metadata", NS);
    if let Some(((first_id, first_stamp), (last_id, last_stamp))) = bounds {
        for (name, id, stamp) in [
            ("start", first_id, first_stamp),
            ("end", last_id, last_stamp),
        ] {
            m.push_child(
                Element::new(name, NS)
                    .with_attr("id", id)
                    .with_attr("timestamp", crate::timefmt::xep0082(stamp)),
            );
        }
    }
    m
}
