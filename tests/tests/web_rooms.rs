//! Issue 12, the admin pages: a group chat started from a chat app shows up on the "Group chats"
//! page with its name, members and last activity; destroying it there tells whoever is in it.

mod web_common;

use hearth_e2e::browser::Browser;
use serde_json::json;
use std::time::Duration;
use web_common::*;

#[test]
fn the_admin_lists_group_chats_and_destroys_one() {
    let web = WebServer::start(&[]);
    let b = Browser::start();
    run_wizard(&b, &web, None);
    let hd = Hearthd::start(&web);
    let room = format!("meetup@groups.{DOMAIN}");

    let mut phone = hd.agent(ADMIN, ADMIN_PASSWORD);
    phone.connect();
    phone.cmd(json!({"cmd": "muc_setup"}));
    phone.presence();
    let r = phone.cmd(json!({"cmd": "muc_join", "room": room, "nick": "Host"}));
    assert_eq!(r["ok"], json!(true), "{r}\n{}", hd.log());
    let r = phone.cmd(json!({"cmd": "muc_configure", "room": room, "fields": {
        "muc#roomconfig_roomname": "Saturday meetup",
        "muc#roomconfig_persistentroom": true,
    }}));
    assert_eq!(r["ok"], json!(true), "{r}");

    sign_in(&b, &web, ADMIN);
    b.goto(&web.https_url("/admin/rooms"));
    let text = b.text("#rooms");
    assert!(
        text.contains("Saturday meetup") && text.contains(&room) && text.contains("last active"),
        "{}",
        b.body_text()
    );
    b.screenshots("admin-rooms");
    b.fill("#reason-meetup", "the meetup moved");
    b.submit("form[action='/admin/rooms/destroy'] button[type=submit]");
    assert!(
        b.body_text().contains("The room meetup is gone"),
        "{}",
        b.body_text()
    );
    assert!(
        b.body_text().contains("No group chats yet"),
        "{}",
        b.body_text()
    );
    let p = phone.expect_event("muc_presence", Duration::from_secs(15), |p| {
        p["type"] == "unavailable"
    });
    assert_eq!(p["destroyed"], json!(true), "{p}");
    assert_eq!(p["reason"], json!("the meetup moved"), "{p}");
    assert_eq!(p["role"], json!("none"), "{p}");
}
