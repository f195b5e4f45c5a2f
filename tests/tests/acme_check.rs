//! `hearth-acme check` tries what renewal needs the way the CA will and says what to fix: here it
//! fetches its own test token through port "80" (a loopback port) for every name, then reports the
//! port closed once the web server is gone, and a name that DNS does not know.

use hearth_e2e::pebble::{AcmeBox, Pebble, PebbleOptions, WebrootServer};

#[test]
fn check_fetches_a_test_token_through_every_name_and_explains_a_closed_port() {
    let bx = AcmeBox::new("check.test");
    let web = WebrootServer::start(&bx.webroot).unwrap();
    let port = web.port.to_string();
    let pebble = Pebble::start(PebbleOptions {
        http_port: web.port,
        ..Default::default()
    })
    .unwrap();
    bx.configure(&pebble.acme_toml("http-01"));
    assert!(bx.run(&["renew"]).success, "{}", pebble.logs());

    let mut args = vec!["check".to_string(), "--http-port".into(), port.clone()];
    for n in bx.names() {
        args.extend(["--resolve".to_string(), format!("{n}=127.0.0.1")]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = bx.run(&args);
    assert!(out.success, "check found problems:\n{}", out.stdout);
    for n in bx.names() {
        assert!(
            out.stdout
                .contains(&format!("http://{n}:{port}/ serves our test token")),
            "{n}: {}",
            out.stdout
        );
    }
    assert!(
        out.stdout.contains("The last renewal") && out.stdout.contains("succeeded"),
        "{}",
        out.stdout
    );
    let left: Vec<_> = std::fs::read_dir(bx.webroot.join(".well-known/acme-challenge"))
        .unwrap()
        .collect();
    assert!(left.is_empty(), "the test token is removed: {left:?}");

    drop(web);
    let out = bx.run(&args);
    assert!(!out.success, "{}", out.stdout);
    assert!(
        out.stdout
            .contains(&format!("http://check.test:{port}/ does not answer")),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("Forward TCP port"), "{}", out.stdout);

    // Without --resolve the names go to the system's DNS, which has never heard of check.test.
    let out = bx.run(&["check", "--http-port", &port]);
    assert!(!out.success);
    assert!(
        out.stdout.contains("check.test cannot be looked up")
            || out.stdout.contains("check.test has no address"),
        "{}",
        out.stdout
    );
}
