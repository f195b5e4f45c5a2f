//! A box that cannot open port 80 gets its certificate by DNS-01: hearth-acme publishes the
//! `_acme-challenge` TXT records through a provider API (here challtestsrv's, the DNS server
//! Pebble asks) and Pebble looks them up. Nobody listens on Pebble's HTTP-01 port, so only DNS
//! can succeed.

use hearth_e2e::pebble::{verify_chain, AcmeBox, Pebble, PebbleOptions};

#[test]
fn dns01_issues_through_the_provider_api_and_check_confirms_the_provider() {
    let bx = AcmeBox::new("dns.test");
    let pebble = Pebble::start(PebbleOptions::default()).unwrap();
    bx.configure(&format!(
        "{}\n[acme.dns]\nprovider = \"challtestsrv\"\nurl = \"{}\"\n",
        pebble.acme_toml("dns-01"),
        pebble.challtestsrv_url
    ));

    let out = bx.run(&["renew"]);
    assert!(out.success, "renew failed: {out:?}\n{}", pebble.logs());
    let chain = bx.read(&bx.cert);
    let root = pebble.root_pem().unwrap();
    for name in bx.names() {
        verify_chain(&chain, &root, &name)
            .unwrap_or_else(|e| panic!("chain not valid for {name}: {e}"));
    }

    let mut args = vec!["check".to_string()];
    for n in bx.names() {
        args.extend(["--resolve".to_string(), format!("{n}=127.0.0.1")]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let check = bx.run(&args);
    assert!(
        check.success,
        "check found problems:\n{}{}",
        check.stdout, check.stderr
    );
    assert!(
        check
            .stdout
            .contains("challtestsrv accepted a test TXT record at _acme-challenge.dns.test"),
        "{}",
        check.stdout
    );
    assert!(
        check.stdout.contains("The certificate covers"),
        "{}",
        check.stdout
    );
}
