//! SSH for the owner: a key in hearth-setup.toml's `[ssh]` is put where the box's sshd reads it; on the
//! admin pages the owner sees it with the fingerprint `ssh-keygen` shows, adds another, is told plainly
//! what is wrong with a malformed or private key, and removes keys until none is left (SSH off).
//! The image side (sshd reading the file, starting only with a key) is proven by `hearth-image boot-test`.

mod web_common;

use hearth_e2e::browser::Browser;
use hearth_e2e::server::binary;
use std::path::Path;
use std::process::Command;
use web_common::*;

/// A fresh ed25519 key pair from ssh-keygen: (public key line, fingerprint as ssh-keygen prints it).
fn key_pair(dir: &Path, name: &str) -> (String, String) {
    let private = dir.join(name);
    let ok = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C"])
        .arg(format!("{name}@laptop"))
        .arg("-f")
        .arg(&private)
        .status()
        .expect("ssh-keygen (apt-get install openssh-client)");
    assert!(ok.success());
    let public = std::fs::read_to_string(private.with_extension("pub")).unwrap();
    let out = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(private.with_extension("pub"))
        .output()
        .unwrap();
    let fingerprint = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string();
    (public.trim().to_string(), fingerprint)
}

fn preseed(web: &WebServer, file: &Path) -> std::process::Output {
    Command::new(binary("hearth-web"))
        .arg("preseed")
        .arg("--file")
        .arg(file)
        .arg("--config")
        .arg(&web.config)
        .arg("--data-dir")
        .arg(&web.data_dir)
        .arg("--ssh-keys")
        .arg(&web.ssh_keys)
        .output()
        .expect("run hearth-web preseed")
}

fn setup_toml(keys: &[&str]) -> String {
    let keys: Vec<String> = keys.iter().map(|k| format!("  \"{k}\",\n")).collect();
    format!(
        "[server]\ndomain = \"{DOMAIN}\"\n[admin]\nusername = \"{ADMIN}\"\npassword = \"{ADMIN_PASSWORD}\"\n\
         [ssh]\nauthorized_keys = [\n{}]\n",
        keys.concat()
    )
}

#[test]
fn the_owner_gives_keys_in_the_preseed_and_manages_them_on_the_admin_pages() {
    let mut web = WebServer::new(&[]);
    let keys_dir = web.dir.path().join("keys");
    std::fs::create_dir_all(&keys_dir).unwrap();
    let (laptop, laptop_fp) = key_pair(&keys_dir, "laptop");
    let (phone, phone_fp) = key_pair(&keys_dir, "phone");
    let file = web.boot_dir.join("hearth-setup.toml");

    // A key cut short in the preseed is refused with file and line; nothing is set up or written.
    let cut = &laptop[..laptop.len() - 20];
    std::fs::write(&file, setup_toml(&[cut])).unwrap();
    let out = preseed(&web, &file);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("hearth-setup.toml:8:") && err.contains("ssh"),
        "{err}"
    );
    assert!(!web.ssh_keys.exists() && !web.config.exists());

    // The whole key: written for sshd (only its owner may read it), the box set up; public keys stay
    // in the file for the owner to read. Running the preseed again adds nothing twice.
    std::fs::write(&file, setup_toml(&[&laptop])).unwrap();
    let out = preseed(&web, &file);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("SSH: 1 new of 1 key(s)"), "{said}");
    assert_eq!(
        std::fs::read_to_string(&web.ssh_keys).unwrap(),
        format!("{laptop}\n")
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&web.ssh_keys)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(std::fs::read_to_string(&file).unwrap().contains(&laptop));
    assert!(preseed(&web, &file).status.success());
    assert_eq!(
        std::fs::read_to_string(&web.ssh_keys)
            .unwrap()
            .lines()
            .count(),
        1
    );

    web.spawn();
    let b = Browser::start();
    sign_in(&b, &web, ADMIN);
    b.goto(&web.https_url("/admin/ssh"));
    let text = b.text("#ssh-keys");
    assert!(
        text.contains("laptop@laptop") && text.contains(&laptop_fp),
        "{text}"
    );
    assert!(
        b.text("#ssh-login").starts_with("ssh root@"),
        "{}",
        b.body_text()
    );
    b.screenshots("ssh-1-preseeded");

    // Mistakes are explained beside the field, and the typed text is kept.
    for (typed, says) in [
        ("-----BEGIN OPENSSH PRIVATE KEY-----", "private key"),
        (cut, "base64"),
        ("hello world", "not a key type"),
        (laptop.as_str(), "already in the list"),
    ] {
        b.fill("#key", typed);
        b.submit("form[action='/admin/ssh'] button[type=submit]");
        let e = b.text("#key-error");
        assert!(e.contains(says), "{typed}: {e}");
        assert_eq!(b.attr("#key", "value").as_deref(), Some(typed));
    }
    b.screenshots("ssh-2-malformed");

    // A form without its CSRF token changes nothing.
    b.goto(&web.https_url("/admin/ssh"));
    b.fill("#key", &phone);
    b.execute(
        "document.querySelector('form[action=\"/admin/ssh\"] input[name=csrf]').remove();",
        &[],
    );
    b.submit("form[action='/admin/ssh'] button[type=submit]");
    assert!(
        b.body_text().contains("This form has expired"),
        "{}",
        b.body_text()
    );
    assert!(!std::fs::read_to_string(&web.ssh_keys)
        .unwrap()
        .contains(&phone));

    // The phone's key is added; both are in the file sshd reads.
    b.goto(&web.https_url("/admin/ssh"));
    b.fill("#key", &phone);
    b.submit("form[action='/admin/ssh'] button[type=submit]");
    assert!(
        b.body_text().contains("Added the key of phone@laptop"),
        "{}",
        b.body_text()
    );
    assert!(b.text("#ssh-keys").contains(&phone_fp));
    assert_eq!(
        std::fs::read_to_string(&web.ssh_keys).unwrap(),
        format!("{laptop}\n{phone}\n")
    );

    // A lost laptop: its key goes, the phone's stays; then the last one goes and SSH is off.
    // Each row's Remove button posts its key's fingerprint.
    let remove = |fp: &str| {
        b.execute(
            "for (const f of document.querySelectorAll('form[action=\"/admin/ssh/remove\"]')) \
             { if (f.querySelector('input[name=fingerprint]').value === arguments[0]) f.submit(); }",
            &[serde_json::json!(fp)],
        );
    };
    remove(&laptop_fp);
    wait_for_text(&b, "Removed the key of laptop@laptop");
    assert_eq!(
        std::fs::read_to_string(&web.ssh_keys).unwrap(),
        format!("{phone}\n")
    );
    remove(&phone_fp);
    wait_for_text(&b, "No key is left, so SSH is now off");
    assert!(b.text("#ssh-none").contains("SSH is off"));
    assert_eq!(std::fs::metadata(&web.ssh_keys).unwrap().len(), 0);
    b.screenshots("ssh-3-none");
}

fn wait_for_text(b: &Browser, want: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !b.body_text().contains(want) {
        assert!(
            std::time::Instant::now() < deadline,
            "{want:?} never shown: {}",
            b.body_text()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
