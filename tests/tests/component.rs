//! XEP-0114 components: slixmpp's ComponentXMPP (a real component library) connects to hearthd's
//! loopback component port, and a slixmpp client chats with it through the server; a wrong secret,
//! an unconfigured domain and a `from` outside the component's domain are refused.

use hearth_e2e::agent::{peer_script, venv_python};
use hearth_e2e::server::{free_port, TestServer, DOMAIN};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const SECRET: &str = "component-secret-for-tests";

struct Component {
    child: Child,
    lines: mpsc::Receiver<Value>,
}

impl Component {
    fn start(jid: &str, secret: &str, port: u16, forge_as: &str) -> Component {
        let mut child = Command::new(venv_python())
            .arg(peer_script("component_echo.py"))
            .args([
                format!("--jid={jid}"),
                format!("--secret={secret}"),
                format!("--port={port}"),
                format!("--forge-as={forge_as}"),
                "--seconds=60".into(),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn component_echo.py");
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    let _ = tx.send(v);
                }
            }
        });
        Component { child, lines }
    }

    /// The first event named `event` within `wait`, if any.
    fn event(&self, event: &str, wait: Duration) -> Option<Value> {
        let deadline = Instant::now() + wait;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(v) if v["event"] == event => return Some(v),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
        None
    }
}

impl Drop for Component {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_component_chats_through_the_server_and_only_with_its_secret_and_domain() {
    let port = free_port();
    let echo = format!("echo.{DOMAIN}");
    let server = TestServer::start(&format!(
        "[modules.component]\nlisten = [\"127.0.0.1:{port}\"]\n\
         [modules.component.secrets]\n\"{echo}\" = \"{SECRET}\"\n"
    ));
    server.add_user("alice", "alice-component-pw");

    // Wrong secret and unknown domain: refused, with the stream errors XEP-0114 names.
    let wrong = Component::start(&echo, "not-the-secret-at-all", port, "");
    assert!(wrong.event("connected", Duration::from_secs(5)).is_none());
    drop(wrong);
    let unknown = Component::start(&format!("nope.{DOMAIN}"), SECRET, port, "");
    assert!(unknown.event("connected", Duration::from_secs(5)).is_none());
    drop(unknown);
    let log = server.log();
    assert!(log.contains("wrong secret for echo."), "{log}");
    assert!(log.contains("which is not configured"), "{log}");

    let component = Component::start(&echo, SECRET, port, &format!("alice@{DOMAIN}/forged"));
    component
        .event("connected", Duration::from_secs(15))
        .expect("the component shakes hands");
    let mut alice = server.agent("alice", "alice-component-pw");
    alice.connect();
    alice.presence();
    alice.message(&format!("bot@{echo}"), "hello component");
    let got = component
        .event("message", Duration::from_secs(10))
        .expect("the component gets alice's message");
    assert_eq!(got["body"], "hello component");
    assert!(got["from"]
        .as_str()
        .unwrap()
        .starts_with(&format!("alice@{DOMAIN}/")));
    alice.expect_event("message", Duration::from_secs(10), |m| {
        m["body"] == "echo: hello component" && m["from"] == format!("bot@{echo}")
    });

    // A stanza from outside its own domain never reaches alice.
    alice.message(&format!("bot@{echo}"), "forge");
    component
        .event("message", Duration::from_secs(10))
        .expect("forge request");
    assert!(alice
        .wait_event("message", Duration::from_secs(3), |m| m["body"] == "forged")
        .is_none());
}
