//! The seam itself, driven through the in-process harness with modules made for the tests:
//! hook priorities and answers, mutable targets, nonzas with an outbound layer on the one write
//! path, an intercepted close, server-asked IQs, entity caps, module config and migrations.

use crate::c2s::outbound::{OutboundLayer, SessionLocal};
use crate::c2s::session::{link_door, Detached, LinkDoor};
use crate::harness::{body, Harness, DOMAIN};
use crate::hooks::{
    BoxFut, CloseReason, DiscoTarget, FeaturePhase, Flow, Hook, Kind, SessionEvent, StanzaEvent,
};
use crate::modules::{Module, NonzaResult};
use crate::server::Server;
use crate::sessions::SessionHandle;
use crate::stanza::StanzaError;
use crate::xml::{ns, Element};
use std::any::Any;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const TEST_NS: &str = "urn:example:seam-test";

/// Drops, bounces or marks messages by their body, and records what it saw, in order.
#[derive(Default)]
struct Gate {
    seen: Mutex<Vec<String>>,
    inboxes: Mutex<Vec<LinkDoor>>,
}

/// How long `Gate` keeps a session whose link broke.
const KEPT_FOR: std::time::Duration = std::time::Duration::from_millis(300);

impl Module for Gate {
    fn name(&self) -> &'static str {
        "test-gate"
    }
    fn hooks(&self) -> &'static [(Hook, i16)] {
        &[
            (Hook::Outbound(Kind::Message), 50),
            (Hook::InboundBare(Kind::Message), 50),
            (Hook::SessionBound, 0),
            (Hook::SessionClosing, 0),
        ]
    }
    fn on_stanza<'a>(
        &'a self,
        _server: &'a Arc<Server>,
        hook: Hook,
        ev: &'a mut StanzaEvent<'_>,
    ) -> BoxFut<'a, Flow> {
        Box::pin(async move {
            let text = body(&ev.stanza).unwrap_or_default();
            self.seen.lock().unwrap().push(format!("{hook:?}:{text}"));
            match (hook, text.as_str()) {
                (Hook::Outbound(_), "drop") => Flow::Drop,
                (Hook::Outbound(_), "bounce") => {
                    Flow::Bounce(StanzaError::forbidden().with_text("gate says no"))
                }
                (Hook::Outbound(_), _) => {
                    ev.stanza.push_child(Element::new("seen", TEST_NS));
                    Flow::Continue
                }
                (_, "laptop only") => {
                    ev.targets
                        .retain(|s| s.jid.resource.as_deref() == Some("laptop"));
                    Flow::Continue
                }
                _ => Flow::Continue,
            }
        })
    }
    fn on_session<'a>(
        &'a self,
        _server: &'a Arc<Server>,
        hook: Hook,
        ev: &'a mut SessionEvent<'_>,
    ) -> BoxFut<'a, Flow> {
        Box::pin(async move {
            self.seen
                .lock()
                .unwrap()
                .push(format!("{hook:?}:{}", ev.session.jid));
            // A session whose link broke is kept for a moment, as stream management hibernates
            // it; it would accept a new connection through the inbox it got when bound.
            if hook == Hook::SessionBound {
                let (door, inbox) = link_door();
                self.inboxes.lock().unwrap().push(door);
                ev.local.ext.insert(inbox);
            }
            if hook == Hook::SessionClosing && ev.reason == Some(CloseReason::LinkLost) {
                let until = tokio::time::Instant::now() + KEPT_FOR;
                ev.local.ext.insert(Detached { until });
                return Flow::Handled;
            }
            Flow::Continue
        })
    }
}

/// Holds every stanza for the session while installed: the shape of a CSI queue.
#[derive(Default)]
struct Hold {
    held: Vec<Element>,
    releasing: bool,
}

impl OutboundLayer for Hold {
    fn outgoing(&mut self, stanza: Element, pass: &mut Vec<Element>) {
        if self.releasing {
            pass.push(stanza);
        } else {
            self.held.push(stanza);
        }
    }
    fn release(&mut self, pass: &mut Vec<Element>) {
        if self.releasing {
            pass.append(&mut self.held);
        }
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

/// `<hold/>` installs the layer, `<release/>` lets everything go and removes it.
struct Holder;

impl Module for Holder {
    fn name(&self) -> &'static str {
        "test-holder"
    }
    fn nonzas(&self) -> &'static [(&'static str, &'static str)] {
        &[("hold", TEST_NS), ("release", TEST_NS)]
    }
    fn on_nonza<'a>(
        &'a self,
        _server: &'a Arc<Server>,
        _session: &'a SessionHandle,
        local: &'a mut SessionLocal,
        nonza: &'a Element,
    ) -> BoxFut<'a, NonzaResult> {
        Box::pin(async move {
            if nonza.name == "hold" {
                local.install_layer(0, Box::<Hold>::default());
            } else if let Some(h) = local.layer_mut::<Hold>() {
                h.releasing = true;
            }
            let _ = local
                .send_nonza("<ok xmlns='urn:example:seam-test'/>")
                .await;
            Ok(())
        })
    }
}

#[tokio::test]
async fn hooks_run_by_priority_and_their_answers_count() {
    let gate = Arc::new(Gate::default());
    let h = Harness::with_extra_modules(vec![gate.clone()]).await;
    h.user("alice").await;
    h.user("bob").await;
    let mut alice = h.login("alice", "a").await;
    let mut bob = h.login("bob", "b").await;
    alice.available().await;
    bob.available().await;
    let bob_jid = format!("bob@{DOMAIN}");
    alice.message(&bob_jid, "drop").await;
    alice.message(&bob_jid, "bounce").await;
    let err = alice
        .expect("the bounce", |e| e.attr("type") == Some("error"))
        .await;
    assert!(err
        .child("error", ns::CLIENT)
        .and_then(|e| e.child("forbidden", ns::STANZA_ERRORS))
        .is_some());
    alice.message(&bob_jid, "pass").await;
    let m = bob.expect("the message", |e| body(e).is_some()).await;
    assert_eq!(
        body(&m).as_deref(),
        Some("pass"),
        "the dropped one never came"
    );
    assert!(
        m.child("seen", TEST_NS).is_some(),
        "outbound hooks may change the stanza"
    );
    let seen = gate.seen.lock().unwrap().clone();
    assert!(
        seen.contains(&format!("SessionBound:alice@{DOMAIN}/a")),
        "{seen:?}"
    );
    let outbound: Vec<_> = seen.iter().filter(|s| s.starts_with("Outbound")).collect();
    assert_eq!(outbound.len(), 3, "{seen:?}");
    let inbound: Vec<_> = seen
        .iter()
        .filter(|s| s.starts_with("InboundBare"))
        .collect();
    assert_eq!(
        inbound,
        vec!["InboundBare(Message):pass"],
        "only what passed arrives"
    );
}

#[tokio::test]
async fn inbound_hooks_choose_the_target_sessions() {
    let h = Harness::with_extra_modules(vec![Arc::new(Gate::default())]).await;
    h.user("alice").await;
    h.user("bob").await;
    let mut alice = h.login("alice", "a").await;
    let mut phone = h.login("bob", "phone").await;
    let mut laptop = h.login("bob", "laptop").await;
    for c in [&mut alice, &mut phone, &mut laptop] {
        c.available().await;
    }
    alice.message(&format!("bob@{DOMAIN}"), "laptop only").await;
    laptop.expect("the message", |e| body(e).is_some()).await;
    phone
        .expect_none("the message", Duration::from_millis(300), |e| {
            body(e).is_some()
        })
        .await;
}

#[tokio::test]
async fn a_layer_on_the_write_path_holds_everything_until_released() {
    let h = Harness::with_extra_modules(vec![Arc::new(Holder)]).await;
    h.user("alice").await;
    h.user("bob").await;
    let mut alice = h.login("alice", "a").await;
    let mut bob = h.login("bob", "b").await;
    alice.available().await;
    bob.available().await;
    bob.send_xml("<hold xmlns='urn:example:seam-test'/>").await;
    bob.expect("the nonza's answer", |e| e.is("ok", TEST_NS))
        .await;
    let bob_full = bob.jid.to_string();
    for i in 0..5 {
        alice.message(&bob_full, &format!("m{i}")).await;
    }
    // The server's own replies take the same path: an IQ answer is held too.
    bob.send_xml("<iq type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    bob.expect_none("a held stanza", Duration::from_millis(300), |e| {
        e.name == "message" || e.name == "iq"
    })
    .await;
    bob.send_xml("<release xmlns='urn:example:seam-test'/>")
        .await;
    // The reply may have been queued between the messages (it came from bob's own task).
    let (mut bodies, mut replied) = (Vec::new(), false);
    while bodies.len() < 5 || !replied {
        let e = bob.expect("a released stanza", |e| e.name != "ok").await;
        match e.name.as_str() {
            "message" => bodies.push(body(&e).unwrap_or_default()),
            "iq" => replied = e.attr("id") == Some("p1"),
            _ => {}
        }
    }
    assert_eq!(bodies, ["m0", "m1", "m2", "m3", "m4"]);
    // Unknown top-level elements still end the stream.
    bob.send_xml("<mystery xmlns='urn:example:unknown'/>").await;
    let e = bob.expect("a stream error", |e| e.name == "error").await;
    assert!(e
        .child("unsupported-stanza-type", ns::STREAM_ERRORS)
        .is_some());
}

#[tokio::test]
async fn a_module_may_keep_a_session_whose_link_broke() {
    let h = Harness::with_extra_modules(vec![Arc::new(Gate::default())]).await;
    h.user("alice").await;
    let a = h.login("alice", "kept").await;
    let jid = a.jid.clone();
    a.cut().await;
    assert!(h.server.sessions.session(&jid).is_some(), "still bound");
    // When the time runs out, it is out of the table.
    tokio::time::sleep(KEPT_FOR * 2).await;
    assert!(h.server.sessions.session(&jid).is_none());
    // A client that logs out is not kept.
    let b = h.login("alice", "gone").await;
    let jid = b.jid.clone();
    b.logout().await;
    assert!(h.server.sessions.session(&jid).is_none());
}

#[tokio::test]
async fn the_server_can_ask_a_client_and_gets_the_answer() {
    let h = Harness::new().await;
    h.user("alice").await;
    let mut alice = h.login("alice", "a").await;
    let session = h.server.sessions.session(&alice.jid).unwrap();
    let question = Element::new("iq", ns::CLIENT)
        .with_attr("type", "get")
        .with_attr("to", alice.jid.to_string())
        .with_child(Element::new("query", TEST_NS));
    let server = h.server.clone();
    let asking = tokio::spawn(async move {
        server
            .iq_tracker
            .ask(server.domain(), question, Duration::from_secs(5), |iq| {
                session.deliver(iq)
            })
            .await
    });
    let q = alice.expect("the question", |e| e.name == "iq").await;
    let id = q.attr("id").unwrap().to_string();
    alice
        .send_xml(&format!(
            "<iq type='result' id='{id}' to='{DOMAIN}'><query xmlns='{TEST_NS}'><answer/></query></iq>"
        ))
        .await;
    let reply = asking.await.unwrap().expect("an answer");
    assert!(reply
        .first_element()
        .is_some_and(|q| q.child("answer", TEST_NS).is_some()));
}

#[tokio::test]
async fn caps_in_the_features_match_the_servers_disco() {
    use crate::modules::caps;
    let h = Harness::new().await;
    h.user("alice").await;
    let features = h
        .server
        .modules
        .stream_features(&h.server, FeaturePhase::AfterAuth);
    let c = features
        .iter()
        .find(|f| f.is("c", caps::NS))
        .expect("caps feature");
    let info = h
        .server
        .modules
        .disco_info(&h.server, DiscoTarget::Server, None)
        .unwrap();
    assert_eq!(
        c.attr("ver"),
        Some(caps::verification_string(&info).as_str())
    );
    let mut alice = h.login("alice", "a").await;
    let node = format!("{}#{}", caps::NODE, c.attr("ver").unwrap());
    let r = alice
        .iq(
            "get",
            Some(DOMAIN),
            Element::new("query", crate::modules::disco::INFO).with_attr("node", node.clone()),
        )
        .await;
    let q = r.first_element().expect("an answer");
    assert_eq!(q.attr("node"), Some(node.as_str()));
    assert_eq!(
        q.elements().filter(|e| e.name == "feature").count(),
        info.features.len()
    );
    let r = alice
        .iq(
            "get",
            Some(DOMAIN),
            Element::new("query", crate::modules::disco::INFO).with_attr("node", "nope"),
        )
        .await;
    assert_eq!(r.attr("type"), Some("error"));
}

#[test]
fn module_sections_are_strict_and_name_the_line() {
    let text = "domain = \"example.test\"\n[tls]\ncert = \"/c\"\nkey = \"/k\"\n[modules.offline]\nmax_per_user = 5\nmax_per_usr = 6\n";
    let err = crate::config::Config::parse(text, "hearth.toml")
        .unwrap_err()
        .0;
    assert!(err.contains("hearth.toml:7"), "{err}");
    assert!(err.contains("max_per_usr"), "{err}");
    let err = crate::config::Config::parse(
        "domain = \"example.test\"\n[tls]\ncert = \"/c\"\nkey = \"/k\"\n[modules.nosuch]\nx = 1\n",
        "hearth.toml",
    )
    .unwrap_err()
    .0;
    assert!(
        err.contains("hearth.toml:5") && err.contains("nosuch"),
        "{err}"
    );
}

struct Tables;
impl Module for Tables {
    fn name(&self) -> &'static str {
        "test-tables"
    }
    fn migrations(&self) -> &'static [&'static str] {
        &[
            "CREATE TABLE test_things (id INTEGER PRIMARY KEY, what TEXT NOT NULL);",
            "ALTER TABLE test_things ADD COLUMN size INTEGER NOT NULL DEFAULT 0;",
        ]
    }
}

#[tokio::test]
async fn modules_own_their_tables_and_migrate_once() {
    let h = Harness::with_extra_modules(vec![Arc::new(Tables)]).await;
    let storage = &h.server.storage;
    // Running the migrations again (the next start) changes nothing and fails nothing.
    let again: &[(&'static str, &'static [&'static str])] = &[("test-tables", Tables.migrations())];
    storage.migrate_modules(again).unwrap();
    let (version, columns) = storage
        .call(|conn| {
            let v: i64 = conn.query_row(
                "SELECT version FROM module_versions WHERE module = 'test-tables'",
                [],
                |r| r.get(0),
            )?;
            conn.execute("INSERT INTO test_things (what, size) VALUES ('x', 2)", [])?;
            let n: i64 = conn.query_row(
                "SELECT count(*) FROM pragma_table_info('test_things')",
                [],
                |r| r.get(0),
            )?;
            Ok((v, n))
        })
        .await
        .unwrap();
    assert_eq!((version, columns), (2, 3));
}

#[tokio::test]
async fn a_message_without_to_goes_to_the_senders_own_account() {
    let h = Harness::new().await;
    h.user("alice").await;
    let mut phone = h.login("alice", "phone").await;
    let mut laptop = h.login("alice", "laptop").await;
    phone.available().await;
    laptop.available().await;
    phone
        .send_xml("<message type='chat'><body>note to self</body></message>")
        .await;
    let m = laptop
        .expect("the note", |e| body(e).as_deref() == Some("note to self"))
        .await;
    assert_eq!(m.attr("to"), Some(format!("alice@{DOMAIN}").as_str()));
}
