//! What a person sees when renewal cannot work: the webroot is not what port 80 serves, the DNS
//! provider publishes to a server the CA does not ask, or the CA is down. Each time the old
//! certificate stays in place, the error is a sentence naming what to fix, and the next attempt
//! waits (exponential backoff recorded in the state file) unless forced.

use hearth_e2e::pebble::{AcmeBox, Pebble, PebbleOptions, RunOutput, WebrootServer};

/// The state file as JSON.
fn state(bx: &AcmeBox) -> serde_json::Value {
    serde_json::from_str(&bx.read(&bx.state_file)).expect("state.json is JSON")
}

/// A failed forced renewal left the pair untouched and recorded a backoff of at least `min_wait`.
fn assert_failed_and_kept(
    bx: &AcmeBox,
    out: &RunOutput,
    pair: &(String, String),
    failures: u64,
    min_wait: i64,
) {
    assert!(!out.success, "renew should fail: {out:?}");
    assert!(
        out.stderr.contains("The current certificate is kept"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("Next attempt after"), "{}", out.stderr);
    assert_eq!(
        (bx.read(&bx.cert), bx.read(&bx.key)),
        *pair,
        "the installed pair changed"
    );
    let st = state(bx);
    assert_eq!(st["failures"], failures, "{st}");
    let wait = st["next_attempt"].as_i64().unwrap() - st["last_attempt"].as_i64().unwrap();
    assert!(
        wait >= min_wait,
        "backoff {wait}s shorter than {min_wait}s: {st}"
    );
    assert!(
        st["last_error"].as_str().is_some_and(|e| !e.is_empty()),
        "{st}"
    );
}

fn issue_first(bx: &AcmeBox, pebble: &Pebble) -> (String, String) {
    let out = bx.run(&["renew"]);
    assert!(
        out.success,
        "first issuance failed: {out:?}\n{}",
        pebble.logs()
    );
    (bx.read(&bx.cert), bx.read(&bx.key))
}

const BASE: i64 = 3 * 3600;

#[test]
fn webroot_not_served_keeps_the_certificate_and_backs_off() {
    let bx = AcmeBox::new("web.test");
    let web = WebrootServer::start(&bx.webroot).unwrap();
    let port = web.port;
    let pebble = Pebble::start(PebbleOptions {
        http_port: port,
        ..Default::default()
    })
    .unwrap();
    bx.configure(&pebble.acme_toml("http-01"));
    let pair = issue_first(&bx, &pebble);

    // Port 80 now reaches something that serves another directory (the router's page, say).
    drop(web);
    let elsewhere = tempfile::tempdir().unwrap();
    let _other = WebrootServer::start_on(elsewhere.path(), port).unwrap();
    let out = bx.run(&["renew", "--force"]);
    assert!(
        out.stderr.contains("did not get our token back"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(&bx.webroot.display().to_string()),
        "names the webroot: {}",
        out.stderr
    );
    assert_failed_and_kept(&bx, &out, &pair, 1, BASE);

    // The timer's next run respects the backoff instead of asking the CA again.
    let out = bx.run(&["renew"]);
    assert!(
        out.success && out.stdout.contains("the last attempt failed"),
        "{out:?}"
    );
    let status = bx.run(&["status"]);
    assert!(
        status.stdout.contains("Last error")
            && status.stdout.contains("did not get our token back"),
        "{}",
        status.stdout
    );
}

#[test]
fn wrong_dns_token_keeps_the_certificate_and_backs_off() {
    let bx = AcmeBox::new("txt.test");
    let pebble = Pebble::start(PebbleOptions::default()).unwrap();
    let provider = |url: &str| {
        format!(
            "{}\n[acme.dns]\nprovider = \"challtestsrv\"\nurl = \"{url}\"\n",
            pebble.acme_toml("dns-01")
        )
    };
    bx.configure(&provider(&pebble.challtestsrv_url));
    let pair = issue_first(&bx, &pebble);

    // The provider now publishes to a DNS server the CA does not ask, while the one it asks holds
    // stale values: the CA sees the wrong token.
    let decoy = Pebble::start(PebbleOptions::default()).unwrap();
    bx.configure(&provider(&decoy.challtestsrv_url));
    for name in bx.names() {
        pebble
            .set_txt(
                &format!("_acme-challenge.{name}"),
                "stale-value-from-last-year",
            )
            .unwrap();
    }
    let out = bx.run(&["renew", "--force"]);
    assert!(
        out.stderr
            .contains("found a different TXT record at _acme-challenge."),
        "{}",
        out.stderr
    );
    assert_failed_and_kept(&bx, &out, &pair, 1, BASE);
}

#[test]
fn acme_server_down_keeps_the_certificate_and_backs_off_longer_each_time() {
    let bx = AcmeBox::new("down.test");
    let web = WebrootServer::start(&bx.webroot).unwrap();
    let mut pebble = Pebble::start(PebbleOptions {
        http_port: web.port,
        ..Default::default()
    })
    .unwrap();
    bx.configure(&pebble.acme_toml("http-01"));
    let pair = issue_first(&bx, &pebble);

    pebble.stop();
    let out = bx.run(&["renew", "--force"]);
    assert!(
        out.stderr
            .contains("Cannot reach the ACME server at https://127.0.0.1:"),
        "{}",
        out.stderr
    );
    assert_failed_and_kept(&bx, &out, &pair, 1, BASE);
    let out = bx.run(&["renew", "--force"]);
    assert_failed_and_kept(&bx, &out, &pair, 2, 2 * BASE);
}
