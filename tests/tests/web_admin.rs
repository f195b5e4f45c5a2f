//! After setup: the admin signs in over HTTPS and uses every page — users, invites (with QR),
//! overview — while hearthd runs; then makes a backup, restores it over the running server (which
//! sees the restored accounts at once), again with the server stopped, and a fresh box restored
//! from it gives back the accounts, the contact lists and the messages that were waiting
//! (acceptance 5).

mod web_common;

use hearth_e2e::agent::Agent;
use hearth_e2e::browser::Browser;
use serde_json::json;
use std::time::{Duration, Instant};
use web_common::*;

const BOB_PASSWORD: &str = "bobs secret pw";

/// Polls the roster until `contact` has `subscription` (the server works asynchronously).
fn wait_roster(a: &mut Agent, contact: &str, subscription: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = a.cmd(json!({"cmd": "roster"}));
        if r["items"][contact]["subscription"] == json!(subscription) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{}: {contact} never became {subscription}: {r}",
            a.jid
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn admin_pages_work_and_a_backup_restores_onto_a_fresh_box() {
    let web = WebServer::start(&[]);
    let b = Browser::start();
    run_wizard(&b, &web, None);
    let mut hd = Hearthd::start(&web);

    // Signing in: a wrong password is refused beside the field, the right one lets in.
    b.goto(&web.https_url("/admin/login"));
    b.fill("#username", ADMIN);
    b.fill("#password", "not the password");
    b.submit("button[type=submit]");
    assert!(
        b.text("#password-error").contains("wrong"),
        "{}",
        b.body_text()
    );
    b.screenshot("admin-0-login");
    sign_in(&b, &web, ADMIN);
    let text = b.body_text();
    assert!(
        text.contains("running")
            && text.contains("this box (self-signed)")
            && text.contains(DOMAIN),
        "{text}"
    );
    b.screenshots("admin-1-overview");

    // Users: add bob through the running hearthd; a taken name and a short password are refused.
    b.goto(&web.https_url("/admin/users"));
    b.fill("#new_name", "bob");
    b.fill("#new_password", BOB_PASSWORD);
    b.fill("#new_password_again", BOB_PASSWORD);
    b.submit("form[action='/admin/users/add'] button[type=submit]");
    assert!(
        b.body_text().contains(&format!("Added bob@{DOMAIN}")),
        "{}",
        b.body_text()
    );
    b.fill("#new_name", "bob");
    b.fill("#new_password", "short");
    b.fill("#new_password_again", "short");
    b.submit("form[action='/admin/users/add'] button[type=submit]");
    assert!(
        b.text("#new_password-error").contains("at least 8"),
        "{}",
        b.body_text()
    );
    b.fill("#new_name", "bob");
    b.fill("#new_password", BOB_PASSWORD);
    b.fill("#new_password_again", BOB_PASSWORD);
    b.submit("form[action='/admin/users/add'] button[type=submit]");
    assert!(
        b.text("#new_name-error").contains("taken"),
        "{}",
        b.body_text()
    );
    b.screenshots("admin-2-users");

    // Invites: one made and shown with its QR code, one revoked.
    b.goto(&web.https_url("/admin/invites"));
    b.fill("#note", "for Grandma");
    b.submit("form[action='/admin/invites'] button[type=submit]");
    b.find("#new-invite svg.qr");
    let uri = b
        .attr("#new-invite a[href^='xmpp:']", "href")
        .expect("invite link");
    b.screenshots("admin-3-invites");
    b.goto(&web.https_url(&format!("/invite/{}", token_of(&uri))));
    assert!(
        b.body_text()
            .contains(&format!("You are invited to chat on {DOMAIN}")),
        "{}",
        b.body_text()
    );
    b.screenshots("invite-landing");
    b.goto(&web.https_url("/admin/invites"));
    b.submit("form[action='/admin/invites/revoke'] button[type=submit]");
    assert!(
        b.body_text().contains("Invite revoked"),
        "{}",
        b.body_text()
    );
    b.goto(&web.https_url(&format!("/invite/{}", token_of(&uri))));
    assert!(b.body_text().contains("revoked"), "{}", b.body_text());

    // A friend whose app cannot use invites makes the account on the landing page instead.
    b.goto(&web.https_url("/admin/invites"));
    b.submit("form[action='/admin/invites'] button[type=submit]");
    let uri = b
        .attr("#new-invite a[href^='xmpp:']", "href")
        .expect("invite link");
    let landing = web.https_url(&format!("/invite/{}", token_of(&uri)));
    b.goto(&landing);
    b.fill("#username", "carol");
    b.fill("#password", "carols secret pw");
    b.fill("#password_again", "carols secret pw");
    b.submit("form[action^='/invite/'] button[type=submit]");
    assert!(
        b.body_text()
            .contains(&format!("Your account carol@{DOMAIN} is ready")),
        "{}",
        b.body_text()
    );
    b.screenshots("invite-registered");
    b.goto(&landing);
    assert!(
        b.body_text().contains("used already"),
        "one invite, one account: {}",
        b.body_text()
    );
    let mut carol = hd.agent("carol", "carols secret pw");
    carol.connect();
    carol.disconnect();
    drop(carol);

    // Carol forgot her password: the admin sets a new one, which works at once.
    b.goto(&web.https_url("/admin/users"));
    let row = "details[id='user-carol']";
    let carol_form = format!("{row} form[action='/admin/users/password']");
    b.click(&format!("{row} summary"));
    b.fill(
        &format!("{carol_form} input[name=password]"),
        "carols new password",
    );
    b.fill(
        &format!("{carol_form} input[name=password_again]"),
        "carols new password",
    );
    b.submit(&format!("{carol_form} button[type=submit]"));
    assert!(
        b.body_text().contains("New password set for carol"),
        "{}",
        b.body_text()
    );
    let mut carol = hd.agent("carol", "carols new password");
    carol.connect();
    carol.disconnect();
    drop(carol);

    // Removing her needs the confirmation tick; without it nothing happens.
    let delete_form = format!("{row} form[action='/admin/users/delete']");
    b.click(&format!("{row} summary"));
    b.submit(&format!("{delete_form} button[type=submit]"));
    assert!(
        b.body_text().contains("Tick \"Yes, remove carol\""),
        "{}",
        b.body_text()
    );
    b.click(&format!("{row} summary"));
    b.click(&format!("{delete_form} input[name=confirm]"));
    b.submit(&format!("{delete_form} button[type=submit]"));
    assert!(
        b.body_text().contains("Removed carol."),
        "{}",
        b.body_text()
    );
    assert!(
        !b.body_text().contains(&format!("carol@{DOMAIN}")),
        "{}",
        b.body_text()
    );
    let mut carol = hd.agent("carol", "carols new password");
    assert_eq!(
        carol.try_connect()["ok"],
        json!(false),
        "a removed account cannot log in"
    );
    drop(carol);

    // "Renew now" on a box without hearth-acme says so instead of failing silently.
    b.goto(&web.https_url("/admin"));
    b.submit("form[action='/admin/renew'] button[type=submit]");
    assert!(
        b.body_text().contains("is not installed on this box"),
        "{}",
        b.body_text()
    );

    // Real chat state worth keeping: admin and bob are contacts, and a message waits for bob.
    let mut admin = hd.agent(ADMIN, ADMIN_PASSWORD);
    admin.connect();
    admin.presence();
    let mut bob = hd.agent("bob", BOB_PASSWORD);
    bob.connect();
    bob.presence();
    let (admin_jid, bob_jid) = (format!("{ADMIN}@{DOMAIN}"), format!("bob@{DOMAIN}"));
    admin.cmd(json!({"cmd": "subscribe", "to": bob_jid}));
    bob.expect_event("presence", Duration::from_secs(20), |v| {
        v["type"] == json!("subscribe")
    });
    bob.cmd(json!({"cmd": "authorize", "to": admin_jid}));
    bob.cmd(json!({"cmd": "subscribe", "to": admin_jid}));
    admin.expect_event("presence", Duration::from_secs(20), |v| {
        v["type"] == json!("subscribe")
    });
    admin.cmd(json!({"cmd": "authorize", "to": bob_jid}));
    wait_roster(&mut bob, &admin_jid, "both");
    wait_roster(&mut admin, &bob_jid, "both");
    bob.disconnect();
    drop(bob);
    admin.message(&bob_jid, "kept through the backup");
    admin.disconnect();
    drop(admin);

    // Backup: one file downloaded from the Backup page. The offline message is in the database
    // once hearthd has stored it; the admin's client disconnected after sending.
    b.goto(&web.https_url("/admin/backup"));
    b.screenshots("admin-4-backup");
    b.click("form[action='/admin/backup/download'] button[type=submit]");
    let archive = b.wait_download(".tar");
    assert!(archive
        .file_name()
        .unwrap()
        .to_string_lossy()
        .starts_with(&format!("hearth-backup-{DOMAIN}-")));

    // After the backup: bob is removed, dave joins and is online.
    b.goto(&web.https_url("/admin/users"));
    let bob_delete = "details[id='user-bob'] form[action='/admin/users/delete']";
    b.click("details[id='user-bob'] summary");
    b.click(&format!("{bob_delete} input[name=confirm]"));
    b.submit(&format!("{bob_delete} button[type=submit]"));
    assert!(b.body_text().contains("Removed bob."), "{}", b.body_text());
    b.fill("#new_name", "dave");
    b.fill("#new_password", "daves password");
    b.fill("#new_password_again", "daves password");
    b.submit("form[action='/admin/users/add'] button[type=submit]");
    let mut dave = hd.agent("dave", "daves password");
    dave.connect();
    dave.presence();

    // Restoring while the chat server runs: hearthd itself copies the backup into its database,
    // and the running server knows it at once, without a restart: dave's session is closed and he
    // cannot log in again, bob can, and his waiting message is there.
    b.goto(&web.https_url("/admin/backup"));
    b.upload("#archive", &archive);
    b.submit("form[action='/admin/backup/restore'] button[type=submit]");
    assert!(
        b.body_text().contains("is restored, with 2 accounts"),
        "{}\n{}",
        b.body_text(),
        web.log()
    );
    dave.expect_event("disconnected", Duration::from_secs(20), |_| true);
    drop(dave);
    let mut dave = hd.agent("dave", "daves password");
    assert_eq!(
        dave.try_connect()["ok"],
        json!(false),
        "dave is not in the backup"
    );
    drop(dave);
    let mut bob = hd.agent("bob", BOB_PASSWORD);
    bob.connect();
    bob.presence();
    bob.expect_event("message", Duration::from_secs(20), |v| {
        v["body"] == json!("kept through the backup")
    });
    bob.disconnect();
    drop(bob);
    sign_in(&b, &web, ADMIN);
    hd.stop();

    // With the chat server stopped, the same box restores from its admin page, and everybody
    // signs in again.
    b.goto(&web.https_url("/admin/backup"));
    b.upload("#archive", &archive);
    b.submit("form[action='/admin/backup/restore'] button[type=submit]");
    assert!(
        b.body_text().contains("is restored, with 2 accounts"),
        "{}",
        b.body_text()
    );
    b.goto(&web.https_url("/admin/users"));
    assert!(
        b.url().ends_with("/admin/login"),
        "signed out after a restore: {}",
        b.url()
    );
    sign_in(&b, &web, ADMIN);
    let kept: Vec<_> = std::fs::read_dir(&web.data_dir)
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("hearth.sqlite.before-restore-")
        })
        .collect();
    assert_eq!(kept.len(), 2, "each replaced database is kept aside");

    // A new SD card: a fresh box, restored from the wizard.
    let fresh = WebServer::start(&[]);
    b.goto(&fresh.url("/setup"));
    b.fill("#code", &fresh.setup_code());
    b.submit("button[type=submit]");
    b.submit("a[href='/setup/restore']");
    b.submit("button[type=submit]");
    assert!(
        b.text("#archive-error").contains("Choose the backup file"),
        "{}",
        b.body_text()
    );
    b.upload("#archive", &archive);
    b.screenshots("wizard-restore");
    b.submit("button[type=submit]");
    let text = b.body_text();
    assert!(
        text.contains("Backup restored") && text.contains("2 accounts"),
        "{text}\n{}",
        fresh.log()
    );

    // The restored box's hearthd: bob's contact and his waiting message are there.
    let hd2 = Hearthd::start(&fresh);
    let mut bob = hd2.agent("bob", BOB_PASSWORD);
    bob.connect();
    let r = bob.cmd(json!({"cmd": "roster"}));
    assert_eq!(
        r["items"][&admin_jid]["subscription"],
        json!("both"),
        "roster after restore: {r}"
    );
    bob.presence();
    let m = bob.expect_event("message", Duration::from_secs(20), |v| {
        v["body"] == json!("kept through the backup")
    });
    assert_eq!(
        m["from"].as_str().unwrap().split('/').next(),
        Some(admin_jid.as_str())
    );
    let mut admin = hd2.agent(ADMIN, ADMIN_PASSWORD);
    admin.connect();
    sign_in(&b, &fresh, ADMIN);
}
