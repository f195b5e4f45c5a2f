//! Which nodes a session wants notifications for (XEP-0163 §4.2 "filtered notifications"):
//! the `+notify` features of the client's XEP-0115 capabilities. The server asks the client's
//! disco#info once per `ver` (through the IQ tracker), checks it hashes to that `ver`, and keeps
//! the answer in a bounded cache shared by every session with the same software.

use crate::server::Server;
use crate::sessions::SessionHandle;
use crate::xml::{ns, Element};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const CAPS: &str = "http://jabber.org/protocol/caps";
const DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
const NOTIFY: &str = "+notify";
/// Client software versions remembered (each a few node names).
pub const MAX_CACHED: usize = 256;
/// How long a client gets to answer the disco#info question.
const ASK_DEADLINE: Duration = Duration::from_secs(10);

/// The nodes one session is interested in (set once its caps are known).
#[derive(Clone, Debug, Default)]
pub struct Interest(pub Arc<HashSet<String>>);

/// The caps `ver` a session last announced, and whether a question about it is open.
#[derive(Default)]
struct Announced {
    ver: String,
    asking: bool,
}

/// Whether to look up `ver` for this session now: not when it is the one already known or
/// being asked about, nor while another question to it is open.
pub fn start_asking(session: &SessionHandle, ver: &str) -> bool {
    session.shared.with_ext(|e| {
        let a = e.get_or_default::<Announced>();
        if a.asking || a.ver == ver {
            return false;
        }
        a.ver = ver.to_string();
        a.asking = true;
        true
    })
}

fn done_asking(session: &SessionHandle, learnt: bool) {
    session.shared.with_ext(|e| {
        let a = e.get_or_default::<Announced>();
        a.asking = false;
        if !learnt {
            // A later presence with the same caps may try again.
            a.ver.clear();
        }
    });
}

/// Marks a session that already got the newest items (once per session).
#[derive(Default)]
pub struct LastItemsSent;

#[derive(Default)]
pub struct CapsCache {
    by_ver: Mutex<HashMap<String, Arc<HashSet<String>>>>,
}

impl CapsCache {
    pub fn get(&self, ver: &str) -> Option<Arc<HashSet<String>>> {
        self.by_ver
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(ver)
            .cloned()
    }
    pub fn put(&self, ver: &str, nodes: Arc<HashSet<String>>) {
        let mut map = self.by_ver.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_CACHED && !map.contains_key(ver) {
            if let Some(victim) = map.keys().next().cloned() {
                map.remove(&victim);
            }
        }
        map.insert(ver.to_string(), nodes);
    }
}

/// The session's interest, if its caps are known.
pub fn of(session: &SessionHandle) -> Option<Interest> {
    session.shared.with_ext(|e| e.get::<Interest>().cloned())
}

/// `node+notify` features of a disco#info `<query/>`.
pub fn notify_nodes(query: &Element) -> HashSet<String> {
    query
        .elements()
        .filter(|e| e.name == "feature")
        .filter_map(|e| e.attr("var")?.strip_suffix(NOTIFY).map(str::to_string))
        .collect()
}

/// XEP-0115 §5.1 over a client's disco#info answer (SHA-1, base64).
pub fn ver_of(query: &Element) -> String {
    let ids = query
        .elements()
        .filter(|e| e.name == "identity")
        .map(|e| {
            (
                e.attr("category").unwrap_or(""),
                e.attr("type").unwrap_or(""),
                e.attr("xml:lang").unwrap_or(""),
                e.attr("name").unwrap_or(""),
            )
        })
        .collect();
    let features = query
        .elements()
        .filter(|e| e.name == "feature")
        .filter_map(|e| e.attr("var"))
        .collect();
    crate::modules::caps::ver_from_parts(ids, features, query.elements().filter(|e| e.name == "x"))
}

/// Asks the client for the features behind `node#ver`; `None` if it does not answer in time or
/// the answer does not hash to `ver` (then nothing is cached: another client may answer right).
async fn ask(
    server: &Server,
    session: &SessionHandle,
    node: &str,
    ver: &str,
) -> Option<HashSet<String>> {
    let question = Element::new("iq", ns::CLIENT)
        .with_attr("type", "get")
        .with_attr("to", session.jid.to_string())
        .with_child(Element::new("query", DISCO_INFO).with_attr("node", format!("{node}#{ver}")));
    let reply = server
        .iq_tracker
        .ask(server.domain(), question, ASK_DEADLINE, |iq| {
            session.deliver(iq)
        })
        .await
        .ok()?;
    let query = reply.child("query", DISCO_INFO)?;
    if reply.attr("type") != Some("result") || ver_of(query) != ver {
        log::debug!(
            "PEP: {} answered caps {ver} with a different hash",
            session.jid
        );
        return None;
    }
    Some(notify_nodes(query))
}

/// The caps `(node, ver)` of an available-presence broadcast, SHA-1 only (the hash checked).
pub fn caps_of(presence: &Element) -> Option<(String, String)> {
    let c = presence.child("c", CAPS)?;
    if c.attr("hash") != Some("sha-1") {
        return None;
    }
    Some((c.attr("node")?.to_string(), c.attr("ver")?.to_string()))
}

/// Learns the session's interest from its caps (from the cache or by asking), then hands the
/// session its newest items once.
pub async fn learn(
    server: Arc<Server>,
    cache: &CapsCache,
    session: SessionHandle,
    node: String,
    ver: String,
) {
    let nodes = match cache.get(&ver) {
        Some(n) => n,
        None => match ask(&server, &session, &node, &ver).await {
            Some(n) => {
                let n = Arc::new(n);
                cache.put(&ver, n.clone());
                n
            }
            None => {
                done_asking(&session, false);
                return;
            }
        },
    };
    done_asking(&session, true);
    let first = session.shared.with_ext(|e| {
        e.insert(Interest(nodes));
        let first = e.get::<LastItemsSent>().is_none();
        e.insert(LastItemsSent);
        first
    });
    if first {
        super::send_last_items(&server, &session).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_xep_0115_example_hashes_to_its_ver_and_notify_nodes_are_found() {
        let q = Element::new("query", DISCO_INFO)
            .with_child(
                Element::new("identity", DISCO_INFO)
                    .with_attr("category", "client")
                    .with_attr("type", "pc")
                    .with_attr("name", "Exodus 0.9.1"),
            )
            .with_child(
                Element::new("feature", DISCO_INFO)
                    .with_attr("var", "http://jabber.org/protocol/disco#info"),
            )
            .with_child(
                Element::new("feature", DISCO_INFO)
                    .with_attr("var", "http://jabber.org/protocol/disco#items"),
            )
            .with_child(
                Element::new("feature", DISCO_INFO)
                    .with_attr("var", "http://jabber.org/protocol/muc"),
            )
            .with_child(Element::new("feature", DISCO_INFO).with_attr("var", CAPS));
        assert_eq!(ver_of(&q), "QgayPKawpkPSDYmwT/WM94uAlu0=");
        let q =
            q.with_child(Element::new("feature", DISCO_INFO).with_attr("var", "urn:x:n+notify"));
        assert_eq!(notify_nodes(&q), HashSet::from(["urn:x:n".to_string()]));
    }

    #[test]
    fn the_cache_is_bounded() {
        let c = CapsCache::default();
        for i in 0..MAX_CACHED + 10 {
            c.put(&i.to_string(), Arc::default());
        }
        assert_eq!(c.by_ver.lock().unwrap().len(), MAX_CACHED);
    }
}
