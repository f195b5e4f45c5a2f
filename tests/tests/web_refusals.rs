//! Acceptance 2: what the wizard refuses, and that each refusal is a message a person sees —
//! a wrong setup code (and the pause after too many), a form posted without its CSRF token,
//! malformed answers (each beside its field), and running the wizard again once set up.

mod web_common;

use hearth_e2e::browser::Browser;
use web_common::*;

/// The message shown beside the field `name`, and that the field is marked invalid.
fn field_error(b: &Browser, name: &str) -> String {
    assert_eq!(
        b.attr(&format!("#{name}"), "aria-invalid").as_deref(),
        Some("true"),
        "#{name} is not marked invalid"
    );
    let described = b
        .attr(&format!("#{name}"), "aria-describedby")
        .unwrap_or_default();
    assert!(
        described.contains(&format!("{name}-error")),
        "#{name} does not point at its message: {described}"
    );
    b.text(&format!("#{name}-error"))
}

#[test]
fn wrong_setup_codes_are_refused_then_the_wizard_pauses() {
    let web = WebServer::start(&[]);
    let b = Browser::start();
    b.goto(&web.url("/setup"));
    b.submit("button[type=submit]");
    assert!(field_error(&b, "code").contains("Enter the setup code"));
    for left in (1..5).rev() {
        b.fill("#code", "ABCD-EFGH");
        b.submit("button[type=submit]");
        let msg = field_error(&b, "code");
        assert!(
            msg.contains("not the setup code") && msg.contains(&format!("{left} more")),
            "{msg}"
        );
    }
    b.screenshot("refused-wrong-setup-code");
    b.fill("#code", "ABCD-EFGH");
    b.submit("button[type=submit]");
    assert!(
        b.body_text().contains("Too many wrong codes"),
        "{}",
        b.body_text()
    );
    // Even the right code waits now: guessing must not pay off.
    b.fill("#code", &web.setup_code());
    b.submit("button[type=submit]");
    assert!(
        b.body_text().contains("Too many wrong codes"),
        "{}",
        b.body_text()
    );
    assert!(b.url().ends_with("/setup"), "{}", b.url());
    b.goto(&web.url("/setup/name"));
    assert!(
        b.url().ends_with("/setup"),
        "no way around the code: {}",
        b.url()
    );
}

#[test]
fn a_form_without_its_csrf_token_is_refused() {
    let web = WebServer::start(&[]);
    let b = Browser::start();
    b.goto(&web.url("/setup"));
    b.fill("#code", &web.setup_code());
    b.execute("document.querySelector('input[name=csrf]').remove();", &[]);
    b.submit("button[type=submit]");
    let text = b.body_text();
    assert!(
        text.contains("This form has expired") && text.contains("reload the page"),
        "{text}"
    );
    // A forged token is no better than none.
    b.goto(&web.url("/setup"));
    b.fill("#code", &web.setup_code());
    b.execute(
        "document.querySelector('input[name=csrf]').value = 'forged';",
        &[],
    );
    b.submit("button[type=submit]");
    assert!(
        b.body_text().contains("This form has expired"),
        "{}",
        b.body_text()
    );
    // With the token the same form works.
    b.goto(&web.url("/setup"));
    b.fill("#code", &web.setup_code());
    b.submit("button[type=submit]");
    assert!(b.url().ends_with("/setup/name"), "{}", b.url());
}

#[test]
fn malformed_answers_are_explained_beside_their_fields() {
    let web = WebServer::start(&[]);
    let b = Browser::start();
    b.goto(&web.url("/setup"));
    b.fill("#code", &web.setup_code());
    b.submit("button[type=submit]");

    // Name: nothing chosen, then a URL instead of a name, then a .local name for a real domain.
    b.submit("button[type=submit]");
    assert!(
        b.text("#kind-error").contains("Choose one of the three"),
        "{}",
        b.body_text()
    );
    b.click("input[name=kind][value=own]");
    b.fill("#domain", "https://chat.example.org/");
    b.submit("button[type=submit]");
    assert!(field_error(&b, "domain").contains("without http://"));
    b.screenshots("refused-malformed-domain");
    b.click("input[name=kind][value=own]");
    b.fill("#domain", "hearth.local");
    b.submit("button[type=submit]");
    assert!(field_error(&b, "domain").contains("Only at home"));
    b.click("input[name=kind][value=dyndns]");
    b.fill("#domain", "my home.duckdns.org");
    b.submit("button[type=submit]");
    assert!(field_error(&b, "domain").contains("cannot be used"));
    b.click("input[name=kind][value=own]");
    b.fill("#domain", DOMAIN);
    b.submit("button[type=submit]");

    // Admin: a name with a space, a short password, then two passwords that differ.
    b.fill("#username", "my admin");
    b.fill("#password", "short");
    b.fill("#password_again", "short");
    b.submit("button[type=submit]");
    assert!(field_error(&b, "username").contains("space"));
    assert!(field_error(&b, "password").contains("at least 8"));
    assert_eq!(
        b.attr("#username", "value").as_deref(),
        Some("my admin"),
        "what was typed stays"
    );
    b.screenshots("refused-malformed-admin");
    b.fill("#username", ADMIN);
    b.fill("#password", ADMIN_PASSWORD);
    b.fill("#password_again", "something else");
    b.submit("button[type=submit]");
    assert!(field_error(&b, "password_again").contains("differ"));
    b.fill("#password", ADMIN_PASSWORD);
    b.fill("#password_again", ADMIN_PASSWORD);
    b.submit("button[type=submit]");

    // Join: a value that is none of the choices (a hand-made request).
    b.execute(
        "document.querySelectorAll('input[name=policy]').forEach(i => { i.checked = false; });",
        &[],
    );
    b.submit("button[type=submit]");
    assert!(
        b.text("#policy-error").contains("Choose who may"),
        "{}",
        b.body_text()
    );
    b.click("input[name=policy][value=invite]");
    b.submit("button[type=submit]");

    // Certificate: DNS-01 without provider or token, and a broken e-mail address.
    b.click("input[name=mode][value=acme-dns-01]");
    b.fill("#email", "not an address");
    b.submit("button[type=submit]");
    assert!(field_error(&b, "email").contains("e-mail address"));
    assert!(field_error(&b, "dns_provider").contains("Choose your DNS provider"));
    assert!(field_error(&b, "dns_token").contains("API token"));
    assert!(
        !web.config.exists(),
        "nothing was configured by refused answers"
    );

    // Finish properly; afterwards the wizard refuses to run again, even for a direct POST.
    b.click("input[name=mode][value=self-signed]");
    b.fill("#email", "");
    b.submit("button[type=submit]");
    assert!(
        b.body_text().contains("Your Hearth is ready"),
        "{}",
        b.body_text()
    );
    b.goto(&web.url("/setup/certificate"));
    assert!(
        b.body_text().contains("already set up"),
        "{}",
        b.body_text()
    );
    b.screenshot("refused-wizard-after-setup");
}
