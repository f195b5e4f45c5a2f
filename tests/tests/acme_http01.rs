//! A box gets a real certificate from an ACME CA (Pebble) by HTTP-01 through its webroot, renews
//! it on request, keeps the previous pair, and leaves it alone when nothing is due. Pebble rejects
//! 5% of nonces here, as it does by default, so the client's badNonce retries are exercised too.

use hearth_e2e::pebble::{verify_chain, AcmeBox, Pebble, PebbleOptions, WebrootServer};

#[test]
fn http01_issues_for_every_name_then_renews_only_when_asked() {
    let bx = AcmeBox::new("home.test");
    let web = WebrootServer::start(&bx.webroot).unwrap();
    let pebble = Pebble::start(PebbleOptions {
        http_port: web.port,
        nonce_reject_percent: 5,
        ..Default::default()
    })
    .unwrap();
    bx.configure(&pebble.acme_toml("http-01"));

    // First run: no certificate yet, so one is obtained.
    let out = bx.run(&["renew"]);
    assert!(out.success, "renew failed: {out:?}\n{}", pebble.logs());
    assert!(
        out.stdout.contains(
            "Installed a new certificate for home.test, groups.home.test, share.home.test"
        ),
        "{out:?}"
    );
    let chain = bx.read(&bx.cert);
    let root = pebble.root_pem().unwrap();
    for name in bx.names() {
        verify_chain(&chain, &root, &name)
            .unwrap_or_else(|e| panic!("chain not valid for {name}: {e}"));
    }
    assert!(bx.read(&bx.key).contains("PRIVATE KEY"));
    // The temporary self-signed pair made before issuance is what `.prev` holds now.
    assert!(bx.cert.with_extension("pem.prev").exists());
    // The challenge files are cleaned up.
    let left: Vec<_> = std::fs::read_dir(bx.webroot.join(".well-known/acme-challenge"))
        .unwrap()
        .collect();
    assert!(left.is_empty(), "tokens left behind: {left:?}");

    // Second run: nothing is due, the files stay as they are.
    let out = bx.run(&["renew"]);
    assert!(out.success, "{out:?}");
    assert!(out.stdout.starts_with("Nothing to do"), "{out:?}");
    assert_eq!(bx.read(&bx.cert), chain);

    let status = bx.run(&["status"]);
    assert!(status.success, "{status:?}");
    assert!(
        status.stdout.contains("Pebble Intermediate CA") && status.stdout.contains("valid until"),
        "{}",
        status.stdout
    );

    // --force renews now and keeps the pair it replaces.
    let old_key = bx.read(&bx.key);
    let out = bx.run(&["renew", "--force"]);
    assert!(
        out.success,
        "forced renew failed: {out:?}\n{}",
        pebble.logs()
    );
    let renewed = bx.read(&bx.cert);
    assert_ne!(renewed, chain);
    verify_chain(&renewed, &root, "share.home.test").unwrap();
    assert_eq!(bx.read(&bx.cert.with_extension("pem.prev")), chain);
    assert_eq!(bx.read(&bx.key.with_extension("pem.prev")), old_key);
    assert_ne!(
        bx.read(&bx.key),
        old_key,
        "every certificate gets a fresh key"
    );
}
