//! The owner's story: a fresh box, a phone-sized browser, the setup code from the SD card, six
//! steps (with a reboot in the middle and a router that does not forward port 80), then the
//! admin logs in with a real XMPP client and a friend registers with the invite — exactly once.

mod web_common;

use hearth_e2e::browser::Browser;
use hearth_e2e::server::free_port;
use web_common::*;

#[test]
fn owner_sets_up_the_box_in_a_browser_and_chats() {
    // HTTP-01's reachability check sees hearth.test at 127.0.0.1, on a port where nothing listens:
    // a router without port forwarding.
    let closed = free_port().to_string();
    let resolve = format!("{DOMAIN}=127.0.0.1");
    let mut web = WebServer::start(&["--resolve", &resolve, "--probe-port", &closed]);
    let b = Browser::start();

    // Step 1: the setup code. Nothing else is reachable without it.
    b.goto(&web.url("/setup/admin"));
    assert!(
        b.url().ends_with("/setup"),
        "steps need the code first: {}",
        b.url()
    );
    assert_eq!(
        b.execute("return [window.innerWidth, window.innerHeight];", &[]),
        serde_json::json!([390, 844])
    );
    b.screenshots("wizard-1-setup-code");
    // The code is on the console (stdout) with the addresses to open, and in SETUP-CODE.txt.
    let console = web.log();
    assert!(
        console.contains(&format!("enter the setup code:  {}", web.setup_code())),
        "{console}"
    );
    assert!(
        console.contains(&format!(".local:{}/", web.http_port)),
        "{console}"
    );
    b.fill("#code", &web.setup_code().to_lowercase());
    b.submit("button[type=submit]");

    // Step 2: the name.
    assert!(b.url().ends_with("/setup/name"), "{}", b.url());
    b.click("input[name=kind][value=own]");
    b.fill("#domain", DOMAIN);
    b.screenshots("wizard-2-name");
    b.submit("button[type=submit]");

    // Step 3: the admin account.
    assert!(b.url().ends_with("/setup/admin"), "{}", b.url());
    assert!(b.body_text().contains(&format!("name@{DOMAIN}")));
    b.fill("#username", ADMIN);
    b.fill("#password", ADMIN_PASSWORD);
    b.fill("#password_again", ADMIN_PASSWORD);
    b.screenshots("wizard-3-admin");
    b.submit("button[type=submit]");
    assert!(b.url().ends_with("/setup/join"), "{}", b.url());

    // The power goes out. After the reboot the owner gives the code again and resumes at step 4.
    web.restart();
    b.goto(&web.url("/"));
    b.fill("#code", &web.setup_code());
    b.submit("button[type=submit]");
    assert!(b.url().ends_with("/setup/join"), "resumed at {}", b.url());

    // Step 4: who may join (invite-only is preselected).
    assert_eq!(
        b.attr("input[name=policy][value=invite]", "checked")
            .as_deref(),
        Some("true")
    );
    b.screenshots("wizard-4-join");
    b.submit("button[type=submit]");

    // Step 5: Let's Encrypt over HTTP-01 — but the router forwards nothing.
    assert!(b.url().ends_with("/setup/certificate"), "{}", b.url());
    b.click("input[name=mode][value=acme-http-01]");
    b.screenshots("wizard-5-certificate");
    b.submit("button[type=submit]");
    let text = b.body_text();
    assert!(
        text.contains("Your router needs a change") && text.contains("Port forwarding"),
        "{text}"
    );
    assert!(text.contains("port 80 is closed there"), "{text}");
    // The box's coturn: calls need these forwarded too.
    assert!(
        text.contains("3478") && text.contains("5349") && text.contains("49160–49200"),
        "{text}"
    );
    assert!(
        !web.config.exists(),
        "nothing is written before the last step succeeds"
    );
    b.screenshots("wizard-5b-router-ports");
    b.submit("button[value=self-signed]");

    // Step 6: done, with the first invite.
    let text = b.body_text();
    assert!(
        text.contains("Your Hearth is ready") && text.contains(&format!("{ADMIN}@{DOMAIN}")),
        "{text}"
    );
    b.find("svg.qr");
    let uri = b.attr("a[href^='xmpp:']", "href").expect("xmpp: link");
    assert!(
        uri.starts_with(&format!("xmpp:{DOMAIN}?register;preauth=")),
        "{uri}"
    );
    let url = b.text("#invite-url");
    assert_eq!(url, format!("https://{DOMAIN}/invite/{}", token_of(&uri)));
    b.screenshots("wizard-6-done");

    // The box is configured: the setup code is gone, the wizard refuses to run again.
    assert!(web.config.exists());
    assert!(
        !web.boot_dir.join("SETUP-CODE.txt").exists(),
        "the code is retired after setup"
    );
    let state = std::fs::read_to_string(web.state_dir.join("wizard.json")).unwrap();
    assert!(
        !state.contains(ADMIN_PASSWORD),
        "the password does not stay on the card"
    );
    b.goto(&web.url("/setup/name"));
    assert!(
        b.body_text().contains("This Hearth is already set up"),
        "{}",
        b.body_text()
    );
    b.goto(&web.url("/setup"));
    assert!(
        b.body_text().contains("This Hearth is already set up"),
        "{}",
        b.body_text()
    );

    // The chat server starts on that config; the admin logs in with a real client.
    let hd = Hearthd::start(&web);
    let mut admin = hd.agent(ADMIN, ADMIN_PASSWORD);
    admin.connect();
    admin.disconnect();

    // A friend's client registers with the invite token; the same token does not work twice.
    let token = token_of(&uri);
    let first = register_with_token(&hd, &token, "bob", "bobs secret pw");
    assert_eq!(
        first["ok"],
        serde_json::json!(true),
        "first registration: {first}\n{}",
        hd.log()
    );
    let again = register_with_token(&hd, &token, "mallory", "mallorys pw 123");
    assert_eq!(
        again["ok"],
        serde_json::json!(false),
        "second use of one token: {again}"
    );
    let mut bob = hd.agent("bob", "bobs secret pw");
    bob.connect();
    bob.disconnect();
    let mut mallory = hd.agent("mallory", "mallorys pw 123");
    assert_eq!(
        mallory.try_connect()["ok"],
        serde_json::json!(false),
        "no account was made for the second use"
    );

    // The invite page now says the invite is used up.
    b.goto(&web.https_url(&format!("/invite/{token}")));
    assert!(b.body_text().contains("used already"), "{}", b.body_text());
}

/// Code, name, admin, join (with `policy`), up to the certificate page.
fn to_certificate_step(b: &Browser, web: &WebServer, kind: &str, policy: &str) {
    b.goto(&web.url("/setup"));
    b.fill("#code", &web.setup_code());
    b.submit("button[type=submit]");
    b.click(&format!("input[name=kind][value={kind}]"));
    if kind != "lan" {
        b.fill("#domain", DOMAIN);
    }
    b.submit("button[type=submit]");
    b.fill("#username", ADMIN);
    b.fill("#password", ADMIN_PASSWORD);
    b.fill("#password_again", ADMIN_PASSWORD);
    b.submit("button[type=submit]");
    b.click(&format!("input[name=policy][value={policy}]"));
    b.submit("button[type=submit]");
    assert!(b.url().ends_with("/setup/certificate"), "{}", b.url());
}

/// `hearth-acme status` reads the config the wizard wrote without complaint.
fn hearth_acme_accepts(web: &WebServer) {
    let out = std::process::Command::new(hearth_e2e::server::binary("hearth-acme"))
        .arg("--config")
        .arg(&web.config)
        .arg("status")
        .output()
        .expect("run hearth-acme");
    assert!(
        out.status.success(),
        "hearth-acme refuses the wizard's config: {}{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(&web.config).unwrap()
    );
}

#[test]
fn every_certificate_choice_writes_a_config_hearthd_and_hearth_acme_accept() {
    let b = Browser::start();

    // Only at home: the box's .local name, and a self-signed certificate is the only choice.
    let web = WebServer::start(&[]);
    to_certificate_step(&b, &web, "lan", "open");
    assert_eq!(b.find_all("input[name=mode]").len(), 1, "{}", b.body_text());
    b.submit("button[type=submit]");
    assert!(
        b.body_text().contains("Your Hearth is ready"),
        "{}",
        b.body_text()
    );
    let c = hearthd::config::Config::load(&web.config).unwrap();
    assert!(c.domain.ends_with(".local"), "{}", c.domain);
    assert_eq!(
        c.registration.policy,
        hearthd::config::RegistrationPolicy::Open
    );
    assert_eq!(
        c.acme.as_ref().unwrap()["challenge"].as_str(),
        Some("self-signed")
    );
    hearth_acme_accepts(&web);

    // Let's Encrypt over HTTP-01 with port 80 reachable: straight to the end, no router page.
    let mut web = WebServer::new(&[]);
    let resolve = format!("{DOMAIN}=127.0.0.1");
    let port = web.http_port.to_string();
    web.extra.extend([
        "--resolve".to_string(),
        resolve,
        "--probe-port".to_string(),
        port,
    ]);
    web.spawn();
    to_certificate_step(&b, &web, "own", "closed");
    b.click("input[name=mode][value=acme-http-01]");
    b.fill("#email", "owner@example.org");
    b.submit("button[type=submit]");
    let text = b.body_text();
    assert!(
        text.contains("Your Hearth is ready") && text.contains("certificate is on its way"),
        "{text}"
    );
    let c = hearthd::config::Config::load(&web.config).unwrap();
    let acme = c.acme.as_ref().unwrap();
    assert_eq!(acme["challenge"].as_str(), Some("http-01"));
    assert_eq!(acme["email"].as_str(), Some("owner@example.org"));
    assert!(
        c.tls.cert.exists(),
        "a placeholder certificate lets hearthd start meanwhile"
    );
    hearth_acme_accepts(&web);

    // DNS-01: the provider token goes to hearth-acme's section and leaves the wizard's state.
    let web = WebServer::start(&[]);
    to_certificate_step(&b, &web, "dyndns", "invite");
    b.click("input[name=mode][value=acme-dns-01]");
    b.click("details summary");
    b.execute(
        "document.querySelector('#dns_provider').value = 'desec';",
        &[],
    );
    b.fill("#dns_token", "desec-api-token-123");
    b.submit("button[type=submit]");
    assert!(
        b.body_text().contains("Your Hearth is ready"),
        "{}",
        b.body_text()
    );
    let c = hearthd::config::Config::load(&web.config).unwrap();
    let dns = c.acme.as_ref().unwrap()["dns"].as_table().unwrap().clone();
    assert_eq!(dns["provider"].as_str(), Some("desec"));
    assert_eq!(dns["token"].as_str(), Some("desec-api-token-123"));
    let state = std::fs::read_to_string(web.state_dir.join("wizard.json")).unwrap();
    assert!(!state.contains("desec-api-token-123"), "{state}");
    hearth_acme_accepts(&web);
}
