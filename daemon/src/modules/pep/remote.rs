//! PEP for contacts on other servers (XEP-0163 §4.3, §6.1). Their resources' available presence,
//! arriving through federation for a local account, carries XEP-0115 caps; the server asks such a
//! resource's disco#info once per `ver` (through the IQ tracker, cached with the local clients'
//! answers) and remembers, per remote resource, the nodes it wants. Notifications and the newest
//! items then go to those full JIDs, with the access checks local readers get. A remote resource
//! is forgotten when it goes unavailable; the table is bounded.

use super::event;
use super::interest::{self, CapsCache};
use crate::jid::Jid;
use crate::server::Server;
use crate::xml::{ns, Element};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Remote contacts (bare JIDs) whose resources are remembered.
pub const MAX_CONTACTS: usize = 2048;
/// Resources remembered per remote contact.
pub const MAX_RESOURCES: usize = 8;
/// How long a remote resource gets to answer the disco#info question (it crosses two servers).
const ASK_DEADLINE: Duration = Duration::from_secs(20);
const DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
const MUC_USER: &str = "http://jabber.org/protocol/muc#user";

struct Resource {
    jid: String,
    ver: String,
    /// The nodes it wants, once its caps are known.
    wants: Option<Arc<HashSet<String>>>,
}

/// Available resources of remote contacts, by bare JID (server-wide module state).
#[derive(Default)]
pub(crate) struct RemoteResources {
    by_contact: Mutex<HashMap<String, Vec<Resource>>>,
}

impl RemoteResources {
    /// Records an available resource with its caps `ver`; returns whether its interest is
    /// still unknown (a new resource or new caps).
    fn available(&self, full: &Jid, ver: &str, known: Option<Arc<HashSet<String>>>) -> bool {
        let mut map = self.by_contact.lock().unwrap_or_else(|e| e.into_inner());
        let bare = full.bare_string();
        if !map.contains_key(&bare) && map.len() >= MAX_CONTACTS {
            // Full: forget some contact rather than grow (it is learnt again at its next presence).
            if let Some(victim) = map.keys().next().cloned() {
                map.remove(&victim);
            }
        }
        let list = map.entry(bare).or_default();
        let jid = full.to_string();
        if let Some(r) = list.iter_mut().find(|r| r.jid == jid) {
            if r.ver == ver && r.wants.is_some() {
                return false;
            }
            r.ver = ver.to_string();
            r.wants = known.clone();
            return known.is_none();
        }
        if list.len() >= MAX_RESOURCES {
            list.remove(0);
        }
        list.push(Resource {
            jid,
            ver: ver.to_string(),
            wants: known.clone(),
        });
        known.is_none()
    }

    fn gone(&self, full: &Jid) {
        let mut map = self.by_contact.lock().unwrap_or_else(|e| e.into_inner());
        let bare = full.bare_string();
        if let Some(list) = map.get_mut(&bare) {
            let jid = full.to_string();
            list.retain(|r| r.jid != jid);
            if list.is_empty() {
                map.remove(&bare);
            }
        }
    }

    fn learnt(&self, full: &Jid, ver: &str, nodes: Arc<HashSet<String>>) {
        let mut map = self.by_contact.lock().unwrap_or_else(|e| e.into_inner());
        let jid = full.to_string();
        if let Some(r) = map
            .get_mut(&full.bare_string())
            .and_then(|l| l.iter_mut().find(|r| r.jid == jid && r.ver == ver))
        {
            r.wants = Some(nodes);
        }
    }

    /// The full JIDs of `bare`'s resources that want `node`.
    fn wanting(&self, bare: &str, node: &str) -> Vec<String> {
        let map = self.by_contact.lock().unwrap_or_else(|e| e.into_inner());
        map.get(bare)
            .map(|l| {
                l.iter()
                    .filter(|r| r.wants.as_ref().is_some_and(|w| w.contains(node)))
                    .map(|r| r.jid.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn wants(&self, full: &Jid) -> Option<Arc<HashSet<String>>> {
        let map = self.by_contact.lock().unwrap_or_else(|e| e.into_inner());
        let jid = full.to_string();
        map.get(&full.bare_string())?
            .iter()
            .find(|r| r.jid == jid)?
            .wants
            .clone()
    }
}

/// A presence from a remote resource reached local account `owner`: remember or forget the
/// resource; when its caps are new, learn them (off this task) and send it `owner`'s newest items.
pub(crate) fn presence_in(
    server: &Arc<Server>,
    cache: &Arc<CapsCache>,
    presence: &Element,
    from: &Jid,
    owner: &str,
) {
    // Occupants of group chats (here or elsewhere) are no contacts: their presence carries the
    // room's `muc#user` payload, and this server's own services are no remote servers.
    if from.is_bare()
        || from.domain == server.domain()
        || server.domains.is_hosted(&from.domain)
        || presence.child("x", MUC_USER).is_some()
    {
        return;
    }
    let table = server.module_state::<RemoteResources>();
    match presence.attr("type") {
        None => {}
        Some("unavailable") => return table.gone(from),
        Some(_) => return,
    }
    let Some((node, ver)) = interest::caps_of(presence) else {
        return;
    };
    let known = cache.get(&ver);
    log::debug!(
        "PEP: {from} is available with caps {ver} ({})",
        if known.is_some() { "known" } else { "to ask" }
    );
    if !table.available(from, &ver, known.clone()) {
        return;
    }
    let (server, cache, from, owner) = (
        server.clone(),
        cache.clone(),
        from.clone(),
        owner.to_string(),
    );
    tokio::spawn(async move {
        let nodes = match known {
            Some(n) => n,
            None => match ask(&server, &from, &node, &ver).await {
                Some(n) => {
                    let n = Arc::new(n);
                    cache.put(&ver, n.clone());
                    n
                }
                None => return,
            },
        };
        table.learnt(&from, &ver, nodes);
        send_last_items(&server, &owner, &from).await;
    });
}

/// Asks a remote resource for the features behind `node#ver`; `None` without an answer in time
/// or when it does not hash to `ver`.
async fn ask(server: &Arc<Server>, to: &Jid, node: &str, ver: &str) -> Option<HashSet<String>> {
    let question = Element::new("iq", ns::CLIENT)
        .with_attr("type", "get")
        .with_attr("to", to.to_string())
        .with_child(Element::new("query", DISCO_INFO).with_attr("node", format!("{node}#{ver}")));
    let reply = server
        .iq_tracker
        .ask(server.domain(), question, ASK_DEADLINE, |iq| {
            crate::delivery::deliver_to_full(server, iq);
            true
        })
        .await
        .ok()?;
    let query = reply.child("query", DISCO_INFO)?;
    if reply.attr("type") != Some("result") || interest::ver_of(query) != ver {
        log::debug!("PEP: {to} answered caps {ver} with a different hash");
        return None;
    }
    Some(interest::notify_nodes(query))
}

/// The newest item of each of `owner`'s nodes that the remote resource wants and may read.
async fn send_last_items(server: &Arc<Server>, owner: &str, to: &Jid) {
    let Some(wants) = server.module_state::<RemoteResources>().wants(to) else {
        return;
    };
    for ev in super::last_item_events(server, owner, to, |node| wants.contains(node)).await {
        crate::delivery::deliver_to_full(server, ev);
    }
}

/// Sends a notification (`body`) of `owner_bare`'s node to the resources of the remote
/// `contacts` (bare JIDs, already allowed to read) that want it.
pub(crate) fn notify(server: &Arc<Server>, owner_bare: &str, contacts: &[Jid], body: &Element) {
    if contacts.is_empty() {
        return;
    }
    let node = body.attr("node").unwrap_or_default();
    let table = server.module_state::<RemoteResources>();
    for contact in contacts {
        let wanting = table.wanting(&contact.bare_string(), node);
        log::debug!(
            "PEP: {node} of {owner_bare} to {contact}: {} resources want it",
            wanting.len()
        );
        for full in wanting {
            if let Ok(to) = Jid::parse(&full) {
                crate::delivery::deliver_to_full(server, event(owner_bare, &to, body.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jid(s: &str) -> Jid {
        Jid::parse(s).unwrap()
    }

    #[test]
    fn resources_are_remembered_per_contact_bounded_and_forgotten() {
        let t = RemoteResources::default();
        let nodes: Arc<HashSet<String>> = Arc::new(HashSet::from(["urn:n".to_string()]));
        assert!(t.available(&jid("bob@far.example/a"), "v1", None));
        assert!(t.wanting("bob@far.example", "urn:n").is_empty());
        t.learnt(&jid("bob@far.example/a"), "v1", nodes.clone());
        assert_eq!(
            t.wanting("bob@far.example", "urn:n"),
            vec!["bob@far.example/a"]
        );
        // The same caps again: nothing to learn; known caps: nothing to learn either.
        assert!(!t.available(&jid("bob@far.example/a"), "v1", None));
        assert!(!t.available(&jid("bob@far.example/b"), "v1", Some(nodes.clone())));
        assert_eq!(t.wanting("bob@far.example", "urn:n").len(), 2);
        t.gone(&jid("bob@far.example/a"));
        assert_eq!(
            t.wanting("bob@far.example", "urn:n"),
            vec!["bob@far.example/b"]
        );
        for i in 0..MAX_RESOURCES + 3 {
            t.available(
                &jid(&format!("carol@far.example/{i}")),
                "v",
                Some(nodes.clone()),
            );
        }
        assert_eq!(t.wanting("carol@far.example", "urn:n").len(), MAX_RESOURCES);
        for i in 0..MAX_CONTACTS + 3 {
            t.available(&jid(&format!("u{i}@far.example/r")), "v", None);
        }
        assert_eq!(t.by_contact.lock().unwrap().len(), MAX_CONTACTS);
    }

    /// A remote contact's phone announces caps; the server learns them by asking across the
    /// federation route, then notifies that phone (and not a remote resource without interest),
    /// and answers remote reads by the access model.
    #[tokio::test]
    async fn remote_contacts_get_notifications_by_caps_and_reads_by_access() {
        use crate::harness::{DomainSink, Harness, DOMAIN};
        use crate::storage::{RosterItem, Subscription};
        let h = Harness::new().await;
        let far = Arc::new(DomainSink::default());
        h.server.domains.set_remote(far.clone());
        h.user("alice").await;
        let mut item = RosterItem::new("bob@far.example");
        item.subscription = Subscription::Both;
        item.in_roster = true;
        h.server
            .storage
            .save_roster_item("alice", item)
            .await
            .unwrap();
        let a = format!("alice@{DOMAIN}");

        let caps_query = |feature: &str| {
            Element::new("query", DISCO_INFO)
                .with_child(
                    Element::new("identity", DISCO_INFO)
                        .with_attr("category", "client")
                        .with_attr("type", "phone")
                        .with_attr("name", feature),
                )
                .with_child(Element::new("feature", DISCO_INFO).with_attr("var", feature))
        };
        let announce = |res: &str, q: &Element| {
            Element::new("presence", ns::CLIENT)
                .with_attr("from", format!("bob@far.example/{res}"))
                .with_attr("to", a.as_str())
                .with_child(
                    Element::new("c", interest::CAPS)
                        .with_attr("hash", "sha-1")
                        .with_attr("node", "urn:test")
                        .with_attr("ver", interest::ver_of(q)),
                )
        };
        for (res, feature) in [("phone", "urn:test:n+notify"), ("pager", "urn:test:other")] {
            let q = caps_query(feature);
            crate::delivery::route(&h.server, announce(res, &q), None).await;
            let full = format!("bob@far.example/{res}");
            let question = far
                .expect("a disco#info question", |e| {
                    e.name == "iq" && e.attr("to") == Some(full.as_str())
                })
                .await;
            let answer = Element::new("iq", ns::CLIENT)
                .with_attr("type", "result")
                .with_attr("id", question.attr("id").unwrap())
                .with_attr("from", full.as_str())
                .with_attr("to", question.attr("from").unwrap())
                .with_child(q);
            crate::delivery::route(&h.server, answer, None).await;
        }
        // Let the learning tasks finish.
        for _ in 0..50 {
            if !RemoteResources::wanting(&h.server.module_state(), "bob@far.example", "urn:test:n")
                .is_empty()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        let mut alice = h.login("alice", "a").await;
        let publish = Element::new("pubsub", super::super::NS).with_child(
            Element::new("publish", super::super::NS)
                .with_attr("node", "urn:test:n")
                .with_child(
                    Element::new("item", super::super::NS)
                        .with_attr("id", "current")
                        .with_child(Element::new("x", "urn:test").with_text("hello far")),
                ),
        );
        let r = alice.iq("set", None, publish).await;
        assert_eq!(r.attr("type"), Some("result"), "{}", r.to_xml(ns::CLIENT));
        let note = far
            .expect("a notification for the phone", |e| {
                e.name == "message" && e.attr("to") == Some("bob@far.example/phone")
            })
            .await;
        assert_eq!(note.attr("from"), Some(a.as_str()));
        assert!(note.to_xml(ns::CLIENT).contains("hello far"));
        assert!(!far.has(|e| e.attr("to") == Some("bob@far.example/pager")));

        // An explicit XEP-0060 subscription from the other server gets notifications by JID.
        let sub = Element::new("iq", ns::CLIENT)
            .with_attr("type", "set")
            .with_attr("id", "s1")
            .with_attr("from", "bob@far.example/pager")
            .with_attr("to", a.as_str())
            .with_child(
                Element::new("pubsub", super::super::NS).with_child(
                    Element::new("subscribe", super::super::NS)
                        .with_attr("node", "urn:test:n")
                        .with_attr("jid", "bob@far.example/pager"),
                ),
            );
        crate::delivery::route(&h.server, sub, None).await;
        let got = far
            .expect("the subscription", |e| e.attr("id") == Some("s1"))
            .await;
        assert_eq!(
            got.attr("type"),
            Some("result"),
            "{}",
            got.to_xml(ns::CLIENT)
        );
        let republish = Element::new("pubsub", super::super::NS).with_child(
            Element::new("publish", super::super::NS)
                .with_attr("node", "urn:test:n")
                .with_child(
                    Element::new("item", super::super::NS)
                        .with_attr("id", "current")
                        .with_child(Element::new("x", "urn:test").with_text("again")),
                ),
        );
        assert_eq!(
            alice.iq("set", None, republish).await.attr("type"),
            Some("result")
        );
        for to in ["bob@far.example/phone", "bob@far.example/pager"] {
            far.expect("a notification by caps and by subscription", |e| {
                e.name == "message"
                    && e.attr("to") == Some(to)
                    && e.to_xml(ns::CLIENT).contains("again")
            })
            .await;
        }

        // Reads from the other server: bob (subscribed) may read a presence node, eve may not.
        let r =
            alice
                .iq(
                    "set",
                    None,
                    Element::new("pubsub", super::super::NS).with_child(
                        Element::new("publish", super::super::NS)
                            .with_attr("node", "urn:test:p")
                            .with_child(Element::new("item", super::super::NS).with_child(
                                Element::new("x", "urn:test").with_text("for contacts"),
                            )),
                    ),
                )
                .await;
        assert_eq!(r.attr("type"), Some("result"));
        let read = |from: &str, id: &str| {
            Element::new("iq", ns::CLIENT)
                .with_attr("type", "get")
                .with_attr("id", id)
                .with_attr("from", from)
                .with_attr("to", a.as_str())
                .with_child(Element::new("pubsub", super::super::NS).with_child(
                    Element::new("items", super::super::NS).with_attr("node", "urn:test:p"),
                ))
        };
        crate::delivery::route(&h.server, read("bob@far.example/phone", "r1"), None).await;
        let got = far
            .expect("bob's items", |e| e.attr("id") == Some("r1"))
            .await;
        assert_eq!(got.attr("type"), Some("result"));
        assert!(got.to_xml(ns::CLIENT).contains("for contacts"));
        crate::delivery::route(&h.server, read("eve@far.example/x", "r2"), None).await;
        let got = far
            .expect("eve's refusal", |e| e.attr("id") == Some("r2"))
            .await;
        assert_eq!(got.attr("type"), Some("error"));
        assert!(!got.to_xml(ns::CLIENT).contains("for contacts"));
    }
}
