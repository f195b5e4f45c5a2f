//! Step 5, the certificate, and finishing: the reachability check and the router page for
//! HTTP-01, then handing every answer to `hearthd::setup::apply` at once.

use super::state::{self, CertAnswer, Step, WizardState};
use super::{already_set_up, guard, reach, save};
use crate::app::{message_link, render, render_status, see_other, AppState};
use crate::forms::Errors;
use crate::session::{PostForm, Session};
use crate::templates::*;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::Extension;
use hearthd::setup::{self, AdminSecret, Answers, CertificateMode};
use std::sync::Arc;

/// DNS providers offered for DNS-01: (value written to `[acme] dns_provider`, label).
/// These are the providers hearth-acme speaks to (`[acme.dns] provider`).
pub const DNS_PROVIDERS: &[(&str, &str)] = &[
    ("desec", "deSEC (also dedyn.io names)"),
    ("duckdns", "DuckDNS"),
];

/// What the ports page asks people to forward: (ports, protocol, what for).
const FORWARDS: &[(&str, &str, &str)] = &[
    ("80", "TCP", "Certificate checks by Let's Encrypt"),
    ("443", "TCP", "Invite pages and admin pages"),
    ("5222", "TCP", "Chat apps"),
    ("5223", "TCP", "Chat apps (direct TLS)"),
    ("5269", "TCP", "Other chat servers (federation)"),
    ("5270", "TCP", "Other chat servers (federation, direct TLS)"),
    // The box's coturn (image/README.md): calls between phones on different networks.
    ("3478", "TCP and UDP", "Calls (STUN/TURN)"),
    ("5349", "TCP", "Calls (TURN over TLS)"),
    ("49160–49200", "UDP", "Calls (relayed audio and video)"),
];

// ---- step 5: certificate ----

fn cert_view(
    st: &WizardState,
    csrf: String,
    errors: Errors,
    answer: &CertAnswer,
    failure: Option<String>,
) -> CertPage {
    CertPage {
        title: "Certificate",
        csrf,
        errors,
        lan: st.is_lan(),
        domain: st
            .name
            .as_ref()
            .map(|n| n.domain.clone())
            .unwrap_or_default(),
        mode: answer.mode.as_str().to_string(),
        email: answer.email.clone(),
        dns_provider: answer.dns_provider.clone(),
        providers: DNS_PROVIDERS,
        failure,
    }
}

pub async fn cert_page(
    State(app): State<Arc<AppState>>,
    Extension(session): Extension<Session>,
) -> Response {
    let st = match guard(&app, &session, Step::Cert).await {
        Ok(st) => st,
        Err(r) => return r,
    };
    let answer = st.cert.clone().unwrap_or_else(|| CertAnswer {
        mode: if st.is_lan() {
            CertificateMode::SelfSigned
        } else {
            CertificateMode::AcmeHttp01
        },
        ..CertAnswer::default()
    });
    render(&cert_view(
        &st,
        session.data.csrf,
        Errors::new(),
        &answer,
        None,
    ))
}

pub async fn cert_submit(State(app): State<Arc<AppState>>, form: PostForm) -> Response {
    let mut st = match guard(&app, &form.session, Step::Cert).await {
        Ok(st) => st,
        Err(r) => return r,
    };
    let f = &form.fields;
    let mut errors = Errors::new();
    let mode = match f.get("mode") {
        _ if st.is_lan() => CertificateMode::SelfSigned,
        "acme-http-01" => CertificateMode::AcmeHttp01,
        "acme-dns-01" => CertificateMode::AcmeDns01,
        "self-signed" => CertificateMode::SelfSigned,
        _ => {
            errors.insert("mode", "Choose how the box gets its certificate.");
            CertificateMode::AcmeHttp01
        }
    };
    let answer = CertAnswer {
        mode,
        email: f.trimmed("email"),
        dns_provider: f.trimmed("dns_provider"),
        dns_token: f.trimmed("dns_token"),
    };
    if mode.is_acme() && !answer.email.is_empty() {
        let ok = answer
            .email
            .split_once('@')
            .is_some_and(|(l, d)| !l.is_empty() && d.contains('.') && !d.contains(' '));
        if !ok {
            errors.insert("email", "This does not look like an e-mail address (name@example.org). Leave it empty if you prefer.");
        }
    }
    if mode == CertificateMode::AcmeDns01 {
        if !DNS_PROVIDERS.iter().any(|(v, _)| *v == answer.dns_provider) {
            errors.insert("dns_provider", "Choose your DNS provider from the list.");
        }
        if answer.dns_token.is_empty() {
            errors.insert("dns_token", "Paste the API token from your DNS provider.");
        } else if answer.dns_token.len() > 512
            || answer
                .dns_token
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            errors.insert(
                "dns_token",
                "An API token has no spaces or line breaks; copy it again.",
            );
        }
    }
    if !errors.is_empty() {
        return render_status(
            StatusCode::UNPROCESSABLE_ENTITY,
            &cert_view(&st, form.session.data.csrf, errors, &answer, None),
        );
    }
    st.cert = Some(answer);
    if let Err(r) = save(&app, &st).await {
        return r;
    }
    if mode == CertificateMode::AcmeHttp01 {
        if let Err(problem) = check_reachability(&app, &mut st).await {
            return ports_view(&st, form.session.data.csrf, problem);
        }
    }
    finish(&app, &form.session, st).await
}

/// The reachability check; when it came in through NAT, the router's public address is kept
/// for the box's coturn (it goes into `hearth.toml` at the end).
async fn check_reachability(app: &AppState, st: &mut WizardState) -> Result<(), reach::Problem> {
    let domain = st
        .name
        .as_ref()
        .map(|n| n.domain.clone())
        .unwrap_or_default();
    let reached = reach::check(&domain, &app.challenge_dir(), &app.probe).await?;
    st.public_address = reach::nat_public_address(reached, &crate::netinfo::lan_addresses());
    Ok(())
}

fn ports_view(st: &WizardState, csrf: String, problem: reach::Problem) -> Response {
    let (no_dns, addresses, detail) = match problem {
        reach::Problem::NoDns => (true, String::new(), String::new()),
        reach::Problem::Unreachable { addresses, detail } => (
            false,
            addresses
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            detail,
        ),
    };
    let lan_ip = crate::netinfo::lan_addresses()
        .into_iter()
        .find(|a| a.is_ipv4())
        .map(|a| a.to_string())
        .unwrap_or_else(|| "this box's address".into());
    let page = PortsPage {
        title: "Router settings",
        csrf,
        domain: st
            .name
            .as_ref()
            .map(|n| n.domain.clone())
            .unwrap_or_default(),
        no_dns,
        addresses,
        detail,
        lan_ip,
        forwards: FORWARDS,
    };
    render_status(StatusCode::OK, &page)
}

pub async fn ports_submit(State(app): State<Arc<AppState>>, form: PostForm) -> Response {
    let mut st = match guard(&app, &form.session, Step::Cert).await {
        Ok(st) => st,
        Err(r) => return r,
    };
    if st.cert.is_none() {
        return see_other(Step::Cert.path());
    }
    match form.fields.get("action") {
        "check" => {
            if let Err(problem) = check_reachability(&app, &mut st).await {
                return ports_view(&st, form.session.data.csrf, problem);
            }
        }
        "self-signed" => {
            if let Some(c) = st.cert.as_mut() {
                c.mode = CertificateMode::SelfSigned;
            }
            if let Err(r) = save(&app, &st).await {
                return r;
            }
        }
        "anyway" => {}
        _ => return see_other(Step::Cert.path()),
    }
    finish(&app, &form.session, st).await
}

// ---- finishing ----

/// The `[acme]` table for hearth-acme (its keys: `email`, `[acme.dns] provider, token`);
/// `setup::apply` adds `challenge`.
fn acme_table(c: &CertAnswer) -> Option<toml::Table> {
    let mut t = toml::Table::new();
    if c.mode.is_acme() && !c.email.is_empty() {
        t.insert("email".into(), c.email.clone().into());
    }
    if c.mode == CertificateMode::AcmeDns01 {
        let mut dns = toml::Table::new();
        dns.insert("provider".into(), c.dns_provider.clone().into());
        dns.insert("token".into(), c.dns_token.clone().into());
        t.insert("dns".into(), dns.into());
    }
    (!t.is_empty()).then_some(t)
}

async fn finish(app: &AppState, session: &Session, mut st: WizardState) -> Response {
    let (Some(name), Some(admin), Some(join), Some(cert)) =
        (st.name.clone(), st.admin.clone(), st.join, st.cert.clone())
    else {
        return see_other(st.next_step().path());
    };
    let answers = Answers {
        domain: name.domain.clone(),
        registration: join,
        certificate: cert.mode,
        admin_username: admin.username.clone(),
        admin_secret: AdminSecret::Password(admin.password.clone()),
        data_dir: app.args.data_dir.clone(),
        config_path: app.args.config.clone(),
        acme: acme_table(&cert),
        web: None,
        turn_public_address: st.public_address,
    };
    // One finish at a time: a double-clicked button must not run setup twice in parallel.
    let store = app.wizard.lock().await;
    if app.provisioned() {
        return already_set_up();
    }
    let outcome = match setup::apply(&answers).await {
        Ok(o) => o,
        Err(e) => {
            log::error!("setup failed: {e}");
            let back = match e.field {
                Some("domain") => Step::Name,
                Some(f) if f.starts_with("admin") => Step::Admin,
                _ => Step::Cert,
            };
            return message_link(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Setup could not finish",
                &format!(
                    "{}. Nothing was changed on the box; correct this and finish again.",
                    e.message.trim_end_matches('.')
                ),
                back.path(),
                "Go back and correct it",
            );
        }
    };
    log::info!(
        "setup complete: {} with admin {}",
        outcome.config.domain,
        outcome.admin_jid
    );
    app.tls.set_paths(
        outcome.config.tls.cert.clone(),
        outcome.config.tls.key.clone(),
    );
    let invite = app
        .backend
        .create_invite(&outcome.config, "first friend")
        .await;
    let (invite_uri, invite_url) = match invite {
        Ok(i) => (i.uri, i.url),
        Err(e) => {
            log::error!("cannot create the first invite: {e}");
            (String::new(), String::new())
        }
    };
    st.finished = Some(state::Finished {
        domain: outcome.config.domain.clone(),
        admin_jid: outcome.admin_jid.clone(),
        invite_uri,
        invite_url,
        certificate: cert.mode,
    });
    // The password has done its job; it must not stay on the card.
    if let Some(a) = st.admin.as_mut() {
        a.password.clear();
    }
    if let Some(c) = st.cert.as_mut() {
        c.dns_token.clear();
    }
    if let Err(e) = store.save(&st) {
        log::error!("cannot save the finished wizard state: {e}");
    }
    drop(store);
    crate::setup_code::retire(&app.args.state_dir, &app.args.boot_dir);
    *app.code.lock().unwrap_or_else(|p| p.into_inner()) = None;
    if cert.mode.is_acme() {
        crate::admin::system::start_acme(&app.args.hearth_acme, &app.args.config, false);
    }
    let _ = session;
    see_other(Step::Done.path())
}
