//! XEP-0049: Private XML Storage (`jabber:iq:private`). A client stores one XML element per
//! (name, namespace) on its own account and reads it back; nobody else can read or write it.
//! Stored in the module's own table, bounded per account; account removal removes it.

use super::{IqFuture, IqRequest, Module};
use crate::hooks::{IqKind, IqRoute, IqTarget};
use crate::stanza::StanzaError;
use crate::xml::Element;
use rusqlite::{params, OptionalExtension};

pub const NS: &str = "jabber:iq:private";
/// Elements one account may keep, and the size of one: bookmarks and client settings fit easily.
pub const MAX_ELEMENTS: i64 = 64;
pub const MAX_BYTES: usize = 64 * 1024;

pub struct PrivateStorage;

/// Namespaces XEP-0049 §3 reserves for the server and protocol itself: refused.
fn reserved(ns: &str) -> bool {
    ns.is_empty()
        || ns == NS
        || ns == "jabber:client"
        || ns == "jabber:server"
        || ns == "vcard-temp"
}

impl Module for PrivateStorage {
    fn name(&self) -> &'static str {
        "private_storage"
    }
    fn migrations(&self) -> &'static [&'static str] {
        &["CREATE TABLE private_storage (
            username     TEXT NOT NULL REFERENCES users(username) ON DELETE CASCADE,
            name         TEXT NOT NULL,
            ns           TEXT NOT NULL,
            xml          TEXT NOT NULL,
            PRIMARY KEY (username, name, ns)
         ) WITHOUT ROWID;"]
    }
    fn iqs(&self) -> &'static [IqRoute] {
        // Only one's own account (no `to`, or one's bare JID): XEP-0049 §3 forbids others.
        const ROUTES: &[IqRoute] = &[IqRoute::new(IqKind::Both, &[IqTarget::OwnAccount], NS)];
        ROUTES
    }
    fn handle_iq<'a>(&'a self, req: IqRequest<'a>) -> IqFuture<'a> {
        Box::pin(async move {
            if !req.to_self() {
                return Err(StanzaError::forbidden());
            }
            let user = req
                .from
                .local
                .clone()
                .ok_or_else(StanzaError::bad_request)?;
            let children: Vec<&Element> = req.payload.elements().collect();
            let [child] = children.as_slice() else {
                return Err(StanzaError::bad_request()
                    .with_text("private storage takes exactly one element per request"));
            };
            if reserved(&child.ns) {
                return Err(StanzaError::new("modify", "not-acceptable")
                    .with_text(format!("the namespace '{}' cannot be stored", child.ns)));
            }
            let (name, ns) = (child.name.clone(), child.ns.clone());
            let storage = &req.server.storage;
            // XEP-0048 bookmarks live in the XEP-0402 PEP node (XEP-0411 conversion).
            if child.is("storage", super::bookmarks::LEGACY) {
                if req.is_set() {
                    super::bookmarks::write_legacy(req.server, &user, child).await?;
                    return Ok(None);
                }
                if let Some(s) = super::bookmarks::read_legacy(req.server, &user).await? {
                    return Ok(Some(Element::new("query", NS).with_child(s)));
                }
            }
            if req.is_set() {
                let xml = child.to_xml("");
                if xml.len() > MAX_BYTES {
                    return Err(StanzaError::new("modify", "not-acceptable")
                        .with_text(format!("at most {MAX_BYTES} bytes per element")));
                }
                let stored = storage
                    .call(move |conn| {
                        let n: i64 = conn.query_row(
                            "SELECT count(*) FROM private_storage WHERE username = ?1
                             AND NOT (name = ?2 AND ns = ?3)",
                            params![user, name, ns],
                            |r| r.get(0),
                        )?;
                        if n >= MAX_ELEMENTS {
                            return Ok(false);
                        }
                        conn.execute(
                            "INSERT INTO private_storage (username, name, ns, xml) VALUES (?1, ?2, ?3, ?4)
                             ON CONFLICT (username, name, ns) DO UPDATE SET xml = ?4",
                            params![user, name, ns, xml],
                        )?;
                        Ok(true)
                    })
                    .await
                    .map_err(|_| StanzaError::internal())?;
                if !stored {
                    return Err(StanzaError::new("wait", "resource-constraint").with_text(
                        format!("at most {MAX_ELEMENTS} private elements per account"),
                    ));
                }
                return Ok(None);
            }
            let found = storage
                .call(move |conn| {
                    Ok(conn
                        .query_row(
                            "SELECT xml FROM private_storage WHERE username = ?1 AND name = ?2 AND ns = ?3",
                            params![user, name, ns],
                            |r| r.get::<_, String>(0),
                        )
                        .optional()?)
                })
                .await
                .map_err(|_| StanzaError::internal())?;
            // Nothing stored: the empty element as asked (XEP-0049 §3.2).
            let element = match found {
                Some(xml) => crate::xml::parse_fragment(&xml).await,
                None => None,
            }
            .unwrap_or_else(|| Element::new(&child.name, &child.ns));
            Ok(Some(Element::new("query", NS).with_child(element)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::NS;
    use crate::harness::Harness;
    use crate::xml::{ns, Element};

    fn query(child: Element) -> Element {
        Element::new("query", NS).with_child(child)
    }

    #[tokio::test]
    async fn stored_xml_comes_back_to_its_owner_only() {
        let h = Harness::new().await;
        h.user("alice").await;
        h.user("bob").await;
        let mut a = h.login("alice", "a").await;
        let mut b = h.login("bob", "b").await;
        let empty = a
            .iq("get", None, query(Element::new("prefs", "urn:test:p")))
            .await;
        let got = empty
            .child("query", NS)
            .and_then(|q| q.child("prefs", "urn:test:p"));
        assert!(
            got.is_some_and(|p| p.text().is_empty()),
            "{}",
            empty.to_xml(ns::CLIENT)
        );
        let set = a
            .iq(
                "set",
                None,
                query(Element::new("prefs", "urn:test:p").with_text("dark")),
            )
            .await;
        assert_eq!(set.attr("type"), Some("result"));
        let back = a
            .iq("get", None, query(Element::new("prefs", "urn:test:p")))
            .await;
        let got = back
            .child("query", NS)
            .and_then(|q| q.child("prefs", "urn:test:p"));
        assert_eq!(got.map(Element::text).as_deref(), Some("dark"));
        // bob sees his own (empty) storage, and may not ask alice's.
        let theirs = b
            .iq("get", None, query(Element::new("prefs", "urn:test:p")))
            .await;
        assert!(!theirs.to_xml(ns::CLIENT).contains("dark"));
        let other = b
            .iq(
                "get",
                Some("alice@example.test"),
                query(Element::new("prefs", "urn:test:p")),
            )
            .await;
        assert_eq!(other.attr("type"), Some("error"));
        assert!(!other.to_xml(ns::CLIENT).contains("dark"));
        // Reserved namespaces and two elements at once are refused.
        let r = a.iq("set", None, query(Element::new("x", NS))).await;
        assert!(r.to_xml(ns::CLIENT).contains("not-acceptable"));
        let two = query(Element::new("a", "urn:t")).with_child(Element::new("b", "urn:t"));
        assert!(a
            .iq("get", None, two)
            .await
            .to_xml(ns::CLIENT)
            .contains("bad-request"));
        // Account removal removes it.
        h.server.storage.delete_user("alice").await.unwrap();
        let n: i64 = h
            .server
            .storage
            .call(|c| Ok(c.query_row("SELECT count(*) FROM private_storage", [], |r| r.get(0))?))
            .await
            .unwrap();
        assert_eq!(n, 0);
    }
}
