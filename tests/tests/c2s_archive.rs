//! Issue 10, acceptance 2, with real slixmpp clients: alice writes bob 300 messages (and carol a
//! few in between). Bob's client pages his archive (XEP-0313) with XEP-0059 result sets, forward
//! and backward, filtered to alice, and gets every one of alice's messages exactly once, in
//! order, each with the `stanza-id` its live copy had. After hearthd restarts they are all there.

use hearth_e2e::agent::Agent;
use hearth_e2e::server::{TestServer, DOMAIN};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const MESSAGES: usize = 300;
const PAGE: usize = 47;

fn device(server: &TestServer, user: &str, resource: &str) -> Agent {
    let mut a = Agent::spawn(
        &format!("{user}@{DOMAIN}/{resource}"),
        &format!("{user}-password"),
        server.c2s_port,
        &server.cert_path,
        &[],
    );
    a.connect();
    a
}

/// (archive id, body) of every result, paging through the whole archive filtered to `with`.
fn page_through(bob: &mut Agent, with: &str, backward: bool) -> Vec<(String, String)> {
    let mut all: Vec<(String, String)> = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..=(MESSAGES / PAGE + 2) {
        let mut cmd = json!({"cmd": "mam_page", "with": with, "max": PAGE});
        match (&cursor, backward) {
            (Some(c), false) => cmd["after"] = json!(c),
            (Some(c), true) => cmd["before"] = json!(c),
            (None, true) => cmd["before"] = json!(""),
            (None, false) => {}
        }
        let r = bob.cmd(cmd);
        assert_eq!(r["ok"], json!(true), "archive query: {r}");
        assert_eq!(r["count"], json!(MESSAGES), "{r}");
        let page: Vec<(String, String)> = r["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                assert!(m["from"].as_str().unwrap().starts_with(with), "{m}");
                assert!(!m["stamp"].as_str().unwrap().is_empty(), "{m}");
                (
                    m["id"].as_str().unwrap().to_string(),
                    m["body"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        assert!(
            page.len() <= PAGE,
            "a page larger than asked: {}",
            page.len()
        );
        if backward {
            cursor = r["first"].as_str().map(str::to_string);
            all.splice(0..0, page);
        } else {
            cursor = r["last"].as_str().map(str::to_string);
            all.extend(page);
        }
        if r["complete"] == json!(true) {
            return all;
        }
    }
    panic!("paging did not finish; got {} results", all.len());
}

#[test]
fn bob_pages_his_archive_both_ways_and_it_survives_a_restart() {
    let mut server = TestServer::start("");
    for u in ["alice", "bob", "carol"] {
        server.add_user(u, &format!("{u}-password"));
    }
    let (alice_jid, bob_jid) = (format!("alice@{DOMAIN}"), format!("bob@{DOMAIN}"));
    let mut bob = device(&server, "bob", "pc");
    assert_eq!(
        bob.cmd(json!({"cmd": "track_stanza_ids"}))["ok"],
        json!(true)
    );
    bob.presence();
    let mut alice = device(&server, "alice", "phone");
    let mut carol = device(&server, "carol", "laptop");
    alice.presence();
    carol.presence();
    let disco = bob.cmd(json!({"cmd": "disco", "to": bob_jid}));
    let features = disco["features"].as_array().cloned().unwrap_or_default();
    for f in ["urn:xmpp:mam:2", "urn:xmpp:mam:2#extended"] {
        assert!(features.contains(&json!(f)), "{f} not in {disco}");
    }

    // alice's storm in three parts with carol's messages in between, so the filter matters.
    let started = Instant::now();
    for part in 0..3 {
        carol.message(&bob_jid, &format!("carol-{part}"));
        let r = alice.cmd(
            json!({"cmd": "storm", "targets": [bob_jid], "count": MESSAGES / 3, "ack_every": 25}),
        );
        assert_eq!(r["ok"], json!(true), "{r}");
    }
    // The storm numbers each part from 0; the live copies tell them apart by arrival order.
    let deadline = Instant::now() + Duration::from_secs(60);
    let live: Vec<Value> = loop {
        let seen: Vec<Value> = bob
            .seen("stanza_id")
            .into_iter()
            .filter(|e| e["from"].as_str().unwrap_or("").starts_with(&alice_jid))
            .collect();
        if seen.len() >= MESSAGES || Instant::now() > deadline {
            break seen;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    eprintln!(
        "{MESSAGES} messages delivered and archived in {:?}",
        started.elapsed()
    );
    assert_eq!(live.len(), MESSAGES, "live copies with a stanza-id");
    for e in &live {
        assert_eq!(e["by"], json!(bob_jid), "{e}");
    }
    let live: Vec<(String, String)> = live
        .iter()
        .map(|e| {
            (
                e["sid"].as_str().unwrap().to_string(),
                e["body"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let mut ids: Vec<&String> = live.iter().map(|l| &l.0).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), MESSAGES, "every live id is different");

    let forward = page_through(&mut bob, &alice_jid, false);
    assert_eq!(
        forward, live,
        "forward paging: every message once, in order, live ids"
    );
    let backward = page_through(&mut bob, &alice_jid, true);
    assert_eq!(backward, live, "backward paging gives the same archive");

    // carol's three are there too, apart from alice's.
    let r = bob.cmd(json!({"cmd": "mam_page", "with": format!("carol@{DOMAIN}"), "max": 10}));
    let bodies: Vec<_> = r["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["body"].clone())
        .collect();
    assert_eq!(
        bodies,
        [json!("carol-0"), json!("carol-1"), json!("carol-2")],
        "{r}"
    );
    assert_eq!(r["complete"], json!(true), "{r}");

    drop(bob);
    server.restart();
    let mut bob = device(&server, "bob", "pc");
    let after_restart = page_through(&mut bob, &alice_jid, false);
    assert_eq!(after_restart, live, "the archive survives a restart");
    drop(server);
}
