//! Issue 10, acceptance 3, with real slixmpp clients and XEP-0198 stream management: bob is on a
//! bad network (a proxy on loopback that the test cuts at random moments) while alice sends him
//! 1,000 messages; bob resumes his session after every cut and gets each message exactly once.
//! Then bob's link dies for good: what alice sends meanwhile reaches him after a fresh login.

use hearth_e2e::agent::Agent;
use hearth_e2e::flaky::FlakyLink;
use hearth_e2e::server::{TestServer, DOMAIN};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::{Duration, Instant};

const MESSAGES: usize = 1000;
const CUTS: usize = 12;
/// How long a broken session waits for resumption in this test (the default is 300 s).
const HIBERNATE_SECS: u64 = 4;

/// A small xorshift generator: the cut times differ per run, and the seed is printed so a
/// failing run can be replayed.
struct Dice(u64);

impl Dice {
    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        lo + self.0 % (hi - lo)
    }
}

fn agent(server: &TestServer, user: &str, resource: &str, port: u16) -> Agent {
    Agent::spawn(
        &format!("{user}@{DOMAIN}/{resource}"),
        &format!("{user}-password"),
        port,
        &server.cert_path,
        &[],
    )
}

/// How often each body arrived.
fn counts(bodies: &[String]) -> HashMap<&str, usize> {
    let mut c = HashMap::new();
    for b in bodies {
        *c.entry(b.as_str()).or_insert(0) += 1;
    }
    c
}

#[test]
fn bob_on_a_bad_network_gets_every_message_exactly_once() {
    let started = Instant::now();
    let server = TestServer::start(&format!(
        "[modules.stream_management]\nhibernate_secs = {HIBERNATE_SECS}\n"
    ));
    server.add_user("alice", "alice-password");
    server.add_user("bob", "bob-password");
    let link = FlakyLink::to(server.c2s_port);

    let mut bob = agent(&server, "bob", "phone", link.port);
    assert_eq!(
        bob.cmd(json!({"cmd": "stream_management"}))["ok"],
        json!(true)
    );
    bob.connect();
    let r = bob.cmd(json!({"cmd": "sm_state"}));
    assert_eq!(
        r["ok"],
        json!(true),
        "stream management with resumption: {r}"
    );
    bob.presence();
    let mut alice = agent(&server, "alice", "laptop", server.c2s_port);
    alice.connect();
    alice.presence();

    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("cut times seeded with {seed}");
    let mut dice = Dice(seed);
    // alice writes to bob's bare JID, a message every few milliseconds, so the storm lasts
    // long enough for all the cuts to land in it.
    let bob_bare = format!("bob@{DOMAIN}");
    let storm = alice.start(
        json!({"cmd": "paced_messages", "to": bob_bare, "count": MESSAGES,
        "interval_ms": 4, "prefix": "storm"}),
    );
    let mut resumed = 0;
    for cut in 0..CUTS {
        std::thread::sleep(Duration::from_millis(dice.between(50, 300)));
        link.sever();
        let r = bob.cmd(json!({"cmd": "wait_disconnected"}));
        assert_eq!(r["ok"], json!(true), "cut {cut}: {r}");
        let r = bob.cmd(json!({"cmd": "resume"}));
        assert_eq!(
            r["ok"],
            json!(true),
            "cut {cut}: bob could not come back: {r}"
        );
        assert_eq!(
            r["how"],
            json!("resumed"),
            "cut {cut}: a new session instead: {r}"
        );
        resumed += 1;
    }
    let r = alice.reply(storm);
    assert_eq!(r["ok"], json!(true), "alice's storm: {r}");
    assert_eq!(resumed, CUTS);

    // Every message once, none twice, none missing.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut bodies = bob.bodies(Duration::from_millis(500));
    while bodies.len() < MESSAGES && Instant::now() < deadline {
        bodies = bob.bodies(Duration::from_millis(500));
    }
    let seen = counts(&bodies);
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    let missing: Vec<_> = (0..MESSAGES)
        .map(|i| format!("storm-{i}"))
        .filter(|b| !seen.contains_key(b.as_str()))
        .collect();
    assert!(missing.is_empty(), "never delivered: {missing:?}");
    assert_eq!(bodies.len(), MESSAGES);
    // The server's side of it: each cut was a resumption of the same session, and what was
    // in flight at the cuts was sent again rather than lost.
    let log = std::fs::read_to_string(server.log_path()).unwrap_or_default();
    let resends: Vec<usize> = log
        .lines()
        .filter_map(|l| l.split("resumed, ").nth(1))
        .filter_map(|l| l.split(' ').next()?.parse().ok())
        .collect();
    assert_eq!(resends.len(), CUTS, "server-side resumptions");
    eprintln!(
        "phase 1 (1,000 messages, {CUTS} cuts) took {:?}; stanzas sent again per resumption: {resends:?}",
        started.elapsed()
    );

    // Bob's link dies and he does not come back in time. alice goes on writing; the session
    // hibernates, expires, and what it held goes to offline storage.
    std::thread::sleep(Duration::from_millis(500)); // the last acks settle
    link.sever();
    let r = bob.cmd(json!({"cmd": "wait_disconnected"}));
    assert_eq!(r["ok"], json!(true), "{r}");
    for i in 0..20 {
        alice.message(&bob_bare, &format!("later-{i}"));
    }
    let r = alice.cmd(json!({"cmd": "ping"}));
    assert_eq!(r["ok"], json!(true), "{r}");
    std::thread::sleep(Duration::from_secs(HIBERNATE_SECS + 1));
    // His phone tries to resume, is told the session is gone (`<failed/>`), and logs in afresh
    // on the same stream, as Conversations does.
    let r = bob.cmd(json!({"cmd": "resume"}));
    assert_eq!(r["how"], json!("started"), "{r}");
    bob.presence();
    let later_ones = |bob: &mut Agent| -> Vec<Value> {
        bob.seen("message")
            .into_iter()
            .filter(|m| m["body"].as_str().unwrap_or("").starts_with("later-"))
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    while later_ones(&mut bob).len() < 20 && Instant::now() < deadline {
        bob.bodies(Duration::from_millis(300));
    }
    let later = later_ones(&mut bob);
    let got: Vec<&str> = later.iter().map(|m| m["body"].as_str().unwrap()).collect();
    let expected: Vec<String> = (0..20).map(|i| format!("later-{i}")).collect();
    assert_eq!(got, expected, "after logging in again");
    assert!(
        later.iter().all(|m| m["delayed"] == json!(true)),
        "stored messages carry a delay stamp: {later:?}"
    );
    // And nothing of the first 1,000 came twice.
    let all = bob.bodies(Duration::from_millis(300));
    assert_eq!(
        all.len(),
        MESSAGES + 20,
        "no duplicates after logging in again"
    );
    eprintln!("whole test took {:?}", started.elapsed());
    drop(server);
}
