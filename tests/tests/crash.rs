//! Acceptance 5: the Pi gets unplugged. `kill -9` in the middle of a message storm loses
//! nothing the server had accepted: what was delivered was delivered, what was stored offline is
//! there after restart, and the database passes `PRAGMA integrity_check`.
//!
//! "Accepted" is measured without trusting the server: the sender pings after every ten
//! messages, and a session handles its stanzas in order, so a ping answer proves that every
//! message before it was delivered or committed to disk.

use hearth_e2e::server::{TestServer, DOMAIN};
use serde_json::json;
use std::collections::HashSet;
use std::time::{Duration, Instant};

#[test]
fn kill_9_mid_storm_loses_no_accepted_message() {
    let mut server = TestServer::start("[modules.offline]\nmax_per_user = 100000\n");
    for u in ["alice", "bob", "carol"] {
        server.add_user(u, &format!("{u}-password"));
    }
    let (bob_jid, carol_jid) = (format!("bob@{DOMAIN}"), format!("carol@{DOMAIN}"));
    let mut bob = server.agent("bob", "bob-password");
    bob.connect();
    bob.presence();
    let mut alice = server.agent("alice", "alice-password");
    alice.connect();

    // Even-numbered messages go to bob (online), odd ones to carol (offline, stored).
    let storm = alice.start(json!({"cmd": "storm", "targets": [bob_jid, carol_jid], "count": 1_000_000, "ack_every": 10}));
    let started = Instant::now();
    alice.expect_event("acked", Duration::from_secs(60), |a| {
        a["upto"].as_u64().unwrap_or(0) >= 400
    });
    server.kill9();
    let reply = alice.reply(storm);
    assert_eq!(
        reply["ok"],
        json!(false),
        "the storm should have been cut short: {reply}"
    );
    let acked = alice
        .seen("acked")
        .iter()
        .filter_map(|a| a["upto"].as_u64())
        .max()
        .unwrap();
    eprintln!(
        "killed after {:?}: {} sent, {} acknowledged",
        started.elapsed(),
        reply["sent"],
        acked + 1
    );

    // The file is sound after the power cut.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let integrity = rt.block_on(async {
        let storage = hearthd::storage::Storage::open(&server.database_path()).unwrap();
        storage.integrity_check().await.unwrap()
    });
    assert_eq!(integrity, "ok");

    // Everything acknowledged to bob arrived while he was online.
    let bob_got: HashSet<String> = bob.bodies(Duration::from_secs(1)).into_iter().collect();
    let missing_bob: Vec<u64> = (0..=acked)
        .filter(|i| i % 2 == 0 && !bob_got.contains(&format!("storm-{i}")))
        .collect();
    assert!(
        missing_bob.is_empty(),
        "bob lost {} accepted messages, e.g. {:?}",
        missing_bob.len(),
        &missing_bob[..missing_bob.len().min(5)]
    );

    // Everything acknowledged to carol is waiting for her after the restart.
    server.start_again();
    let mut carol = server.agent("carol", "carol-password");
    carol.connect();
    carol.presence();
    let mut carol_got = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let wanted: Vec<String> = (0..=acked)
        .filter(|i| i % 2 == 1)
        .map(|i| format!("storm-{i}"))
        .collect();
    while Instant::now() < deadline && !wanted.iter().all(|w| carol_got.contains(w)) {
        carol_got.extend(carol.bodies(Duration::from_millis(500)));
    }
    let missing: Vec<&String> = wanted.iter().filter(|w| !carol_got.contains(*w)).collect();
    assert!(
        missing.is_empty(),
        "carol lost {} of {} accepted offline messages, e.g. {:?}",
        missing.len(),
        wanted.len(),
        &missing[..missing.len().min(5)]
    );
}
