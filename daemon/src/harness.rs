//! An in-process test server: the real `Server` (real modules, a real SQLite file in a temp
//! directory, the real session task and write path) with clients attached through in-memory
//! pipes instead of sockets, TLS and SASL. Module tests use it to drive whole stanza paths in
//! milliseconds; the end-to-end tests in `tests/` cover the network and real clients.

use crate::c2s::session::{self, Bound, Link};
use crate::config::Config;
use crate::jid::Jid;
use crate::modules::{Module, Modules, Unbound};
use crate::server::Server;
use crate::storage::Storage;
use crate::tls::TlsStore;
use crate::xml::{ns, Element, XmlEvent, XmlReader};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, ReadHalf, WriteHalf};

pub const DOMAIN: &str = "example.test";
/// How long a test waits for a stanza it expects.
const EXPECT: Duration = Duration::from_secs(5);
const STREAM_HEADER: &str =
    "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>";

pub struct Harness {
    pub server: Arc<Server>,
    _dir: tempfile::TempDir,
}

impl Harness {
    /// A server with the standard modules.
    pub async fn new() -> Harness {
        Harness::build("", None).await
    }

    /// A server with the standard modules and `extra` config text appended.
    pub async fn with_config(extra: &str) -> Harness {
        Harness::build(extra, None).await
    }

    /// A server with the standard modules plus `extra` (modules made for a test).
    pub async fn with_extra_modules(extra: Vec<Arc<dyn Module>>) -> Harness {
        Harness::build("", Some(extra)).await
    }

    async fn build(extra: &str, extra_modules: Option<Vec<Arc<dyn Module>>>) -> Harness {
        let dir = tempfile::tempdir().expect("temp dir");
        let pair = crate::certs::self_signed(&[DOMAIN.to_string()]).expect("certificate");
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&cert, pair.cert_pem).expect("write cert");
        std::fs::write(&key, pair.key_pem).expect("write key");
        let text = format!(
            "domain = \"{DOMAIN}\"\ndata_dir = \"{d}\"\ncontrol_socket = \"{d}/control.sock\"\n[tls]\ncert = \"{c}\"\nkey = \"{k}\"\n{extra}",
            d = dir.path().display(),
            c = cert.display(),
            k = key.display(),
        );
        let config = Config::parse(&text, "harness").expect("harness config");
        let storage = Storage::open(&config.database_path()).expect("database");
        let tls = TlsStore::load(&cert, &key).expect("tls");
        let mut list = Modules::standard(&config);
        list.extend(extra_modules.unwrap_or_default());
        let modules = Modules::from_list(list).expect("modules");
        let server = Server::assemble(config, storage, tls, modules).expect("server");
        Harness { server, _dir: dir }
    }

    /// Creates an account (password "password", the lowest iteration count allowed).
    pub async fn user(&self, name: &str) {
        self.server
            .storage
            .create_user(name, "password", 4096, false)
            .await
            .expect("create user");
    }

    /// A bound session for `user/resource`, as if it had logged in.
    pub async fn login(&self, user: &str, resource: &str) -> TestClient {
        let jid = Jid::parse(&format!("{user}@{DOMAIN}/{resource}")).expect("jid");
        let (reader, writer, client) = self.pipes(jid.clone()).await;
        let bound = Bound {
            reader,
            writer: Box::new(writer),
            jid: jid.clone(),
            peer: "127.0.0.1:5222".parse().expect("literal"),
        };
        let task = tokio::spawn(session::run(self.server.clone(), bound));
        // The session is in the table before the test goes on.
        for _ in 0..500 {
            if self.server.sessions.session(&jid).is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        client.started(Some(task)).await
    }

    /// A new stream of `user` that sends `nonza` after login, before binding (stream
    /// resumption): `Ok` with the client when a session took the stream over, else the answer.
    pub async fn unbound_nonza(&self, user: &str, nonza: Element) -> Result<TestClient, Element> {
        let account = Jid::parse(&format!("{user}@{DOMAIN}")).expect("jid");
        let module = self
            .server
            .modules
            .nonza_handler(&nonza.name, &nonza.ns)
            .cloned()
            .expect("a module handles this nonza");
        let answer = module
            .on_unbound_nonza(&self.server, &account, &nonza)
            .await
            .expect("allowed before binding");
        let (to, if_gone) = match answer {
            Unbound::Reply(reply) => return Err(reply),
            Unbound::HandOver { to, if_gone } => (to, if_gone),
        };
        let (reader, writer, client) = self.pipes(account).await;
        let peer = "127.0.0.1:5222".parse().expect("literal");
        let link = Link::start(reader, Box::new(writer), peer, Some(nonza));
        if to.send(link).await.is_err() {
            return Err(if_gone);
        }
        let mut c = client.started(None).await;
        // The session's full JID, as the resumed session has it.
        c.jid = self
            .server
            .sessions
            .all()
            .into_iter()
            .find(|s| s.jid.bare() == c.jid)
            .map(|s| s.jid)
            .unwrap_or(c.jid);
        Ok(c)
    }

    /// An in-memory connection whose client side has sent its stream header.
    async fn pipes(
        &self,
        jid: Jid,
    ) -> (
        XmlReader<ReadHalf<DuplexStream>>,
        WriteHalf<DuplexStream>,
        TestClient,
    ) {
        let (client, server_side) = tokio::io::duplex(256 * 1024);
        let (srv_read, srv_write) = tokio::io::split(server_side);
        let (cli_read, mut cli_write) = tokio::io::split(client);
        cli_write
            .write_all(STREAM_HEADER.as_bytes())
            .await
            .expect("header");
        let limits = crate::c2s::xml_limits(&self.server.config.limits);
        let mut reader = XmlReader::new(srv_read, limits);
        assert!(matches!(reader.next().await, Ok(XmlEvent::StreamStart(_))));
        // The server's stream header was written during negotiation, which the harness skips.
        let client_reader = XmlReader::new(STREAM_HEADER.as_bytes().chain(cli_read), limits);
        let client = TestClient {
            jid,
            writer: cli_write,
            reader: client_reader,
            task: None,
            next_id: 0,
            skipped: Default::default(),
        };
        (reader, srv_write, client)
    }
}

type ClientReader = XmlReader<tokio::io::Chain<&'static [u8], ReadHalf<DuplexStream>>>;

pub struct TestClient {
    pub jid: Jid,
    writer: WriteHalf<DuplexStream>,
    reader: ClientReader,
    /// The session's task, for a client that logged in (a resumed one shares the old task).
    task: Option<tokio::task::JoinHandle<()>>,
    next_id: u32,
    /// Stanzas an `expect` passed over, kept for later `expect`s (arrival order is not
    /// always the order a test asks in).
    skipped: std::collections::VecDeque<Element>,
}

impl TestClient {
    async fn started(mut self, task: Option<tokio::task::JoinHandle<()>>) -> TestClient {
        self.task = task;
        assert!(matches!(
            self.reader.next().await,
            Ok(XmlEvent::StreamStart(_))
        ));
        self
    }

    /// Waits for the session's task to end, a few seconds at most.
    async fn ended(task: Option<tokio::task::JoinHandle<()>>) {
        match task {
            Some(mut task) => {
                let _ = tokio::time::timeout(EXPECT, &mut task).await;
            }
            // A resumed client: the session's task is the first client's; give it a moment.
            None => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }

    pub async fn send(&mut self, el: Element) {
        self.send_xml(&el.to_xml(ns::CLIENT)).await;
    }

    pub async fn send_xml(&mut self, xml: &str) {
        self.writer.write_all(xml.as_bytes()).await.expect("send");
    }

    /// The next element from the server; panics after a few seconds without one.
    pub async fn recv(&mut self) -> Element {
        if let Some(e) = self.skipped.pop_front() {
            return e;
        }
        match tokio::time::timeout(EXPECT, self.reader.next()).await {
            Ok(Ok(XmlEvent::Stanza(e))) => e,
            other => panic!("{}: expected a stanza, got {other:?}", self.jid),
        }
    }

    /// The first element (kept from earlier or arriving now) that matches; the others are kept.
    pub async fn expect(&mut self, what: &str, pred: impl Fn(&Element) -> bool) -> Element {
        if let Some(i) = self.skipped.iter().position(&pred) {
            return self.skipped.remove(i).expect("index just found");
        }
        let deadline = tokio::time::Instant::now() + EXPECT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.reader.next()).await {
                Ok(Ok(XmlEvent::Stanza(e))) if pred(&e) => return e,
                Ok(Ok(XmlEvent::Stanza(e))) => self.skipped.push_back(e),
                other => panic!("{}: waiting for {what}, got {other:?}", self.jid),
            }
        }
    }

    /// Asserts that nothing matching arrives within `wait`.
    pub async fn expect_none(
        &mut self,
        what: &str,
        wait: Duration,
        pred: impl Fn(&Element) -> bool,
    ) {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.reader.next()).await {
                Err(_) => return,
                Ok(Ok(XmlEvent::Stanza(e))) if pred(&e) => {
                    panic!("{}: unexpected {what}: {}", self.jid, e.to_xml(ns::CLIENT))
                }
                Ok(Ok(XmlEvent::Stanza(_))) => {}
                Ok(other) => panic!(
                    "{}: stream ended while checking for {what}: {other:?}",
                    self.jid
                ),
            }
        }
    }

    /// Sends an IQ with `payload` and returns the reply with the same id.
    pub async fn iq(&mut self, kind: &str, to: Option<&str>, payload: Element) -> Element {
        self.next_id += 1;
        let id = format!("t{}", self.next_id);
        let mut iq = Element::new("iq", ns::CLIENT)
            .with_attr("type", kind)
            .with_attr("id", id.clone())
            .with_child(payload);
        if let Some(to) = to {
            iq.set_attr("to", to);
        }
        self.send(iq).await;
        self.expect("IQ reply", |e| {
            e.name == "iq" && e.attr("id") == Some(id.as_str())
        })
        .await
    }

    /// Sends initial presence; the session is available when this returns.
    pub async fn available(&mut self) {
        self.send(Element::new("presence", ns::CLIENT)).await;
        // Our own presence comes back to us (RFC 6121 §4.2.2): the broadcast happened.
        let me = self.jid.to_string();
        self.expect("own presence", |e| {
            e.name == "presence" && e.attr("from") == Some(me.as_str())
        })
        .await;
    }

    pub async fn message(&mut self, to: &str, body: &str) {
        self.send(
            Element::new("message", ns::CLIENT)
                .with_attr("type", "chat")
                .with_attr("to", to)
                .with_child(Element::new("body", ns::CLIENT).with_text(body)),
        )
        .await;
    }

    /// Closes the stream as a client logging out does, and waits for the session to end.
    pub async fn logout(mut self) {
        self.send_xml("</stream:stream>").await;
        TestClient::ended(self.task.take()).await;
    }

    /// The connection breaks (no goodbye), and the server has a moment to notice; the session
    /// may live on (stream management keeps it).
    pub async fn cut(self) {
        drop(self.writer);
        drop(self.reader);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    /// The connection breaks (no goodbye); waits for the session to end.
    pub async fn drop_link(self) {
        let TestClient {
            writer,
            reader,
            task,
            ..
        } = self;
        drop(writer);
        drop(reader);
        TestClient::ended(task).await;
    }
}

/// The body text of a message, or of the message forwarded inside it.
pub fn body(e: &Element) -> Option<String> {
    e.child("body", ns::CLIENT).map(Element::text)
}

/// A route for other domains that keeps what it is given: what a remote server (or a service on
/// a domain of its own) would receive. `server.domains.set_remote(sink.clone())` plugs it in.
#[derive(Default)]
pub struct DomainSink {
    taken: std::sync::Mutex<Vec<Element>>,
    arrived: tokio::sync::Notify,
}

impl crate::domains::DomainRoute for DomainSink {
    fn accept(
        &self,
        _server: &Arc<Server>,
        stanza: Element,
        _to: &Jid,
    ) -> Result<(), crate::domains::Refused> {
        self.taken.lock().unwrap().push(stanza);
        self.arrived.notify_waiters();
        Ok(())
    }
}

impl DomainSink {
    /// Takes (and removes) the first stanza matching `pred`, waiting for it if need be.
    pub async fn expect(&self, what: &str, pred: impl Fn(&Element) -> bool) -> Element {
        let deadline = tokio::time::Instant::now() + EXPECT;
        loop {
            let arrived = self.arrived.notified();
            {
                let mut taken = self.taken.lock().unwrap();
                if let Some(i) = taken.iter().position(&pred) {
                    return taken.remove(i);
                }
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                let seen: Vec<String> = self
                    .taken
                    .lock()
                    .unwrap()
                    .iter()
                    .map(|e| e.to_xml(ns::CLIENT))
                    .collect();
                panic!("the other domain never got {what}; it got: {seen:#?}");
            }
        }
    }

    /// Whether anything matching `pred` arrived (without waiting).
    pub fn has(&self, pred: impl Fn(&Element) -> bool) -> bool {
        self.taken.lock().unwrap().iter().any(pred)
    }
}
