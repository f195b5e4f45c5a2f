//! A headless install: the owner writes hearth-setup.toml onto the boot partition, the first-boot
//! unit runs `hearth-web preseed`, and the box comes up set up — no browser, no setup code — with
//! the password gone from the file.

mod web_common;

use hearth_e2e::browser::Browser;
use hearth_e2e::server::binary;
use std::process::Command;
use web_common::*;

fn preseed(web: &WebServer, file: &std::path::Path) -> std::process::Output {
    Command::new(binary("hearth-web"))
        .arg("preseed")
        .arg("--file")
        .arg(file)
        .arg("--config")
        .arg(&web.config)
        .arg("--data-dir")
        .arg(&web.data_dir)
        .output()
        .expect("run hearth-web preseed")
}

fn setup_toml(password: &str) -> String {
    format!(
        r#"hostname = "hearth"            # the box answers as hearth.local
[wifi]                         # optional
ssid = "MyWifi"
psk = "wifi-passphrase"
country = "DE"
[server]
domain = "{DOMAIN}"
registration = "invite"        # closed | invite | open
certificate = "self-signed"    # self-signed | acme-http-01 | acme-dns-01
[admin]
username = "{ADMIN}"
password = "{password}" # removed from the file after first boot
"#
    )
}

#[test]
fn a_preseeded_box_is_set_up_without_a_browser() {
    let mut web = WebServer::new(&[]);
    let file = web.boot_dir.join("hearth-setup.toml");

    // A typo is refused with file, line and key, and the secrets are removed all the same.
    std::fs::write(
        &file,
        setup_toml(ADMIN_PASSWORD).replace("registration =", "registraton ="),
    )
    .unwrap();
    let out = preseed(&web, &file);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("hearth-setup.toml:8") && err.contains("registraton"),
        "{err}"
    );
    assert!(!std::fs::read_to_string(&file)
        .unwrap()
        .contains(ADMIN_PASSWORD));
    assert!(!web.config.exists());

    // The corrected file sets the box up and loses its secrets; comments and the rest stay.
    std::fs::write(&file, setup_toml(ADMIN_PASSWORD)).unwrap();
    let out = preseed(&web, &file);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains(&format!("set up {DOMAIN} with admin {ADMIN}@{DOMAIN}")),
        "{said}"
    );
    let left = std::fs::read_to_string(&file).unwrap();
    assert!(
        !left.contains(ADMIN_PASSWORD) && !left.contains("wifi-passphrase"),
        "{left}"
    );
    assert!(
        left.contains("ssid = \"MyWifi\"") && left.contains("# password: removed after first boot"),
        "{left}"
    );
    assert!(web.config.exists());

    // Every boot runs it again; a set-up box is left alone.
    let out = preseed(&web, &file);
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("set up already")
    );

    // hearth-web starts in admin mode: no setup code is made, the wizard is closed.
    web.spawn();
    assert!(
        !web.boot_dir.join("SETUP-CODE.txt").exists(),
        "a set-up box needs no setup code"
    );
    let b = Browser::start();
    b.goto(&web.url("/setup"));
    assert!(
        b.body_text().contains("already set up"),
        "{}",
        b.body_text()
    );
    sign_in(&b, &web, &format!("{ADMIN}@{DOMAIN}"));

    // And the chat server accepts the admin.
    let hd = Hearthd::start(&web);
    let mut admin = hd.agent(ADMIN, ADMIN_PASSWORD);
    admin.connect();
}

/// A meetup organiser who would rather not write the admin password onto the card gives a SCRAM
/// verifier instead (`hearthctl hash-password` on their laptop); the admin logs in with the password.
#[test]
fn a_password_hash_sets_up_the_admin_without_the_password() {
    use std::io::Write;
    use std::process::Stdio;

    let mut hash = Command::new(binary("hearthctl"))
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run hearthctl hash-password");
    writeln!(hash.stdin.take().unwrap(), "{ADMIN_PASSWORD}").unwrap();
    let out = hash.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let verifier = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(verifier.starts_with("SCRAM-SHA-256$4096:"), "{verifier}");
    assert!(!verifier.contains(ADMIN_PASSWORD));

    let mut web = WebServer::new(&[]);
    let file = web.boot_dir.join("hearth-setup.toml");
    std::fs::write(
        &file,
        setup_toml(ADMIN_PASSWORD).replace(
            &format!("password = \"{ADMIN_PASSWORD}\""),
            &format!("password_hash = \"{verifier}\""),
        ),
    )
    .unwrap();
    assert!(!std::fs::read_to_string(&file)
        .unwrap()
        .contains(ADMIN_PASSWORD));
    let out = preseed(&web, &file);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let left = std::fs::read_to_string(&file).unwrap();
    assert!(
        !left.contains(&verifier) && left.contains("# password_hash: removed after first boot"),
        "{left}"
    );

    // The admin pages and the chat server both accept the password the verifier was made from.
    web.spawn();
    let b = Browser::start();
    sign_in(&b, &web, &format!("{ADMIN}@{DOMAIN}"));
    let hd = Hearthd::start(&web);
    let mut admin = hd.agent(ADMIN, ADMIN_PASSWORD);
    admin.connect();
}
