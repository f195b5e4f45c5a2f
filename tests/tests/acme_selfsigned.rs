//! A LAN-only box (or one whose hearth.toml has no [acme] section) gets a self-signed pair without
//! any CA; a broken [acme] section is refused with the key and the line.

use hearth_e2e::pebble::AcmeBox;

#[test]
fn self_signed_mode_makes_a_pair_once_and_then_waits() {
    let bx = AcmeBox::new("lan.test");
    bx.configure("[acme]\nchallenge = \"self-signed\"\n");
    let out = bx.run(&["renew"]);
    assert!(out.success, "{out:?}");
    assert!(
        out.stdout
            .contains("Installed a new certificate for lan.test, groups.lan.test, share.lan.test"),
        "{out:?}"
    );
    assert!(out.stdout.contains("hearthd is not running"), "{out:?}");
    let cert = bx.read(&bx.cert);
    assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"));
    let out = bx.run(&["renew"]);
    assert!(
        out.success && out.stdout.starts_with("Nothing to do"),
        "{out:?}"
    );
    assert_eq!(bx.read(&bx.cert), cert);
    let status = bx.run(&["status"]);
    assert!(
        status.stdout.contains("Mode: self-signed") && status.stdout.contains("self-signed"),
        "{}",
        status.stdout
    );
}

#[test]
fn a_mistyped_key_is_refused_with_its_line() {
    let bx = AcmeBox::new("typo.test");
    bx.configure("[acme]\nchallenge = \"http-01\"\nwebrot = \"/srv\"\n");
    let out = bx.run(&["status"]);
    assert!(!out.success);
    let line = bx
        .read(&bx.config)
        .lines()
        .position(|l| l.starts_with("webrot"))
        .unwrap()
        + 1;
    assert!(
        out.stderr.contains(&format!("hearth.toml:{line}:")),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("webrot"), "{}", out.stderr);
}
