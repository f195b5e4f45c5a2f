//! Issue 14, acceptance 2 and 4 across servers, with Debian's Prosody in a network namespace of
//! the test's own (see `hearth_e2e::federation`): a Prosody user reads a Hearth user's OMEMO
//! device list (PEP, open access) and the reverse, and gets the Hearth user's new device list as
//! a PEP notification because its client's caps ask for it (Hearth asks that client's disco#info
//! across the federation); and a Hearth phone whose push app server is a client on Prosody
//! (a slixmpp client answering the pubsub publishes, as an app server would) gets exactly one
//! notification when its link dies and a message comes; and a Prosody user joins a Hearth room.

use hearth_e2e::agent::Agent;
use hearth_e2e::federation::{self, ProsodyRig};
use hearth_e2e::flaky::FlakyLink;
use serde_json::json;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(30);
const QUIET: Duration = Duration::from_secs(2);
const DEVICES: &str = "eu.siacs.conversations.axolotl.devicelist";

fn device_list(id: u32) -> String {
    format!("<list xmlns='eu.siacs.conversations.axolotl'><device id='{id}'/></list>")
}

fn publish_devices(agent: &mut Agent, id: u32) {
    let r = agent.cmd(
        json!({"cmd": "publish", "node": DEVICES, "item_id": "current",
        "xml": device_list(id), "options": {"pubsub#access_model": "open"}}),
    );
    assert_eq!(
        r["ok"],
        json!(true),
        "{} publishing its device list: {r}",
        agent.jid
    );
}

fn read_devices(agent: &mut Agent, of: &str) -> String {
    let r = agent.cmd(json!({"cmd": "items", "to": of, "node": DEVICES}));
    assert_eq!(
        r["ok"],
        json!(true),
        "{} reading {of}'s devices: {r}",
        agent.jid
    );
    r["items"].to_string()
}

#[test]
fn omemo_device_lists_cross_servers_by_fetch_and_by_notification() {
    if !federation::run_in_netns("omemo_device_lists_cross_servers_by_fetch_and_by_notification") {
        return;
    }
    let rig = ProsodyRig::start(true, "");
    let ca = rig.ca.ca_path();
    let mut hana = Agent::spawn(
        "hana@hearth.test",
        "hana-password",
        rig.hearth.c2s_port,
        &ca,
        &[],
    );
    hana.connect();
    hana.cmd(json!({"cmd": "pep_setup", "interest": [DEVICES]}));
    hana.presence();
    let host = format!("--host={}", federation::PROSODY_IP);
    let mut paul = Agent::spawn("paul@prosody.test", "paul-password", 5222, &ca, &[&host]);
    paul.connect();
    // Before the first presence, so it carries the caps that ask for device lists.
    let r = paul.cmd(json!({"cmd": "pep_setup", "interest": [DEVICES]}));
    assert_eq!(r["ok"], json!(true), "{r}");
    paul.presence();
    let logs = || rig.logs();
    // Messages, pings and presence subscriptions both ways: now each sees the other.
    federation::exchange(&mut hana, &mut paul, &logs);

    publish_devices(&mut hana, 1111);
    publish_devices(&mut paul, 2222);
    assert!(
        read_devices(&mut paul, "hana@hearth.test").contains("1111"),
        "{}",
        logs()
    );
    assert!(
        read_devices(&mut hana, "paul@prosody.test").contains("2222"),
        "{}",
        logs()
    );

    // A new device on hana's side: paul's phone hears of it (its caps ask for the node).
    publish_devices(&mut hana, 3333);
    let ev = paul.wait_event("pep", T, |e| {
        e["from"] == "hana@hearth.test"
            && e["node"] == DEVICES
            && e["xml"].as_str().is_some_and(|x| x.contains("3333"))
    });
    assert!(
        ev.is_some(),
        "no notification crossed to Prosody\n{}",
        logs()
    );
}

#[test]
fn a_phone_with_its_app_server_on_another_server_is_pushed_once() {
    if !federation::run_in_netns("a_phone_with_its_app_server_on_another_server_is_pushed_once") {
        return;
    }
    let rig = ProsodyRig::start(
        true,
        "[modules.stream_management]\nhibernate_secs = 60\n[modules.push]\nmin_interval_secs = 0\n",
    );
    let ca = rig.ca.ca_path();
    let host = format!("--host={}", federation::PROSODY_IP);
    // The app server: paul's client on Prosody answers the pubsub publishes.
    let mut app = Agent::spawn(
        "paul@prosody.test/push",
        "paul-password",
        5222,
        &ca,
        &[&host],
    );
    app.connect();
    assert_eq!(
        app.cmd(json!({"cmd": "push_app_server"}))["ok"],
        json!(true)
    );

    let link = FlakyLink::to(rig.hearth.c2s_port);
    let mut phone = Agent::spawn(
        "hana@hearth.test/phone",
        "hana-password",
        link.port,
        &ca,
        &[],
    );
    phone.cmd(json!({"cmd": "stream_management"}));
    phone.connect();
    phone.presence();
    let r = phone.cmd(
        json!({"cmd": "push_enable", "jid": "paul@prosody.test/push",
        "node": "hana-phone", "options": {"secret": "s3cret"}}),
    );
    assert_eq!(r["ok"], json!(true), "{r}");

    // Connected: a message from Prosody reaches the phone, the app server hears nothing.
    let mut paul = rig.paul();
    paul.message("hana@hearth.test", "while connected");
    phone.expect_event("message", T, |m| m["body"] == "while connected");
    assert!(
        app.wait_event("push", QUIET, |_| true).is_none(),
        "no push while connected"
    );

    // The phone's network dies; its session hibernates; one message, one notification.
    link.sever();
    assert_eq!(
        phone.cmd(json!({"cmd": "wait_disconnected"}))["ok"],
        json!(true)
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !rig.hearth.log().contains("hana@hearth.test/phone detached") {
        assert!(
            Instant::now() < deadline,
            "no hibernation\n{}",
            logs_of(&rig)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    paul.message("hana@hearth.test", "are you there?");
    let p = app.wait_event("push", T, |_| true);
    let p = p.unwrap_or_else(|| panic!("no notification reached Prosody\n{}", logs_of(&rig)));
    assert_eq!(p["from"], json!("hana@hearth.test"), "{p}");
    assert_eq!(p["node"], json!("hana-phone"), "{p}");
    assert_eq!(
        p["fields"]["FORM_TYPE"],
        json!("urn:xmpp:push:summary"),
        "{p}"
    );
    assert_eq!(p["fields"]["message-count"], json!("1"), "{p}");
    assert_eq!(
        p["fields"]["last-message-sender"],
        json!("paul@prosody.test"),
        "{p}"
    );
    assert_eq!(p["options"]["secret"], json!("s3cret"), "{p}");
    assert!(
        app.wait_event("push", QUIET, |_| true).is_none(),
        "exactly one notification"
    );
}

fn logs_of(rig: &ProsodyRig) -> String {
    rig.logs()
}

/// Issue 12's goal across servers: a friend on Prosody joins a room on Hearth's group chat
/// service (`groups.hearth.test`, reached by DNS and certificate like the domain) and chats.
#[test]
fn a_friend_on_prosody_joins_a_hearth_room() {
    if !federation::run_in_netns("a_friend_on_prosody_joins_a_hearth_room") {
        return;
    }
    let rig = ProsodyRig::start(true, "");
    let room = "flat@groups.hearth.test";
    let mut hana = rig.hana();
    let r = hana.cmd(json!({"cmd": "muc_join", "room": room, "nick": "hana"}));
    assert_eq!(r["ok"], json!(true), "{r}\n{}", rig.logs());
    let r = hana.cmd(json!({"cmd": "muc_configure", "room": room}));
    assert_eq!(r["ok"], json!(true), "{r}\n{}", rig.logs());
    let mut paul = rig.paul();
    let r = paul.cmd(json!({"cmd": "muc_join", "room": room, "nick": "paul"}));
    assert_eq!(
        r["ok"],
        json!(true),
        "paul could not enter: {r}\n{}",
        rig.logs()
    );
    assert!(r["occupants"].to_string().contains("hana"), "{r}");
    hana.cmd(json!({"cmd": "muc_send", "room": room, "body": "welcome, paul"}));
    let m = paul.wait_event("groupchat", T, |m| m["body"] == "welcome, paul");
    assert!(
        m.is_some(),
        "the room's message never reached Prosody\n{}",
        rig.logs()
    );
    paul.cmd(json!({"cmd": "muc_send", "room": room, "body": "thanks, hana"}));
    let m = hana.wait_event("groupchat", T, |m| m["body"] == "thanks, hana");
    let m = m.unwrap_or_else(|| panic!("paul's message never reached the room\n{}", rig.logs()));
    assert_eq!(m["from"], json!(format!("{room}/paul")), "{m}");
}
