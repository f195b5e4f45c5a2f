//! The first-boot wizard: setup code, name, admin, who may join, certificate, done.
//!
//! Every step saves its answer to the state directory and moves on; nothing touches the system
//! until the certificate step, which hands all answers to `hearthd::setup::apply` at once.

mod cert;
pub mod reach;
pub mod state;

use crate::app::{message_link, render, render_status, see_other, AppState};
use crate::forms::Errors;
use crate::session::{cookie_value, PostForm, Session};
use crate::setup_code::Verdict;
use crate::templates::*;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::{Extension, Router};
use hearthd::config::RegistrationPolicy;
use hearthd::setup;
use state::{AdminAnswer, NameAnswer, NameKind, Step, WizardState};
use std::sync::Arc;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/setup", get(code_page).post(code_submit))
        .route("/setup/name", get(name_page).post(name_submit))
        .route("/setup/admin", get(admin_page).post(admin_submit))
        .route("/setup/join", get(join_page).post(join_submit))
        .route(
            "/setup/certificate",
            get(cert::cert_page).post(cert::cert_submit),
        )
        .route(
            "/setup/ports",
            get(|| async { see_other("/setup/certificate") }).post(cert::ports_submit),
        )
        .route("/setup/done", get(done_page))
}

pub fn already_set_up() -> Response {
    message_link(
        StatusCode::CONFLICT,
        "This Hearth is already set up",
        "The setup wizard has finished, so it cannot be run again. Sign in to the admin pages to change settings.",
        "/admin/login",
        "Sign in",
    )
}

/// Lets a step through only for someone who gave the setup code, on an unfinished box, in order.
async fn guard(app: &AppState, session: &Session, step: Step) -> Result<WizardState, Response> {
    if app.provisioned() {
        return Err(already_set_up());
    }
    if !session.data.setup_ok {
        return Err(see_other(Step::Code.path()));
    }
    let st = app.wizard.lock().await.load();
    let next = st.next_step();
    if step > next {
        return Err(see_other(next.path()));
    }
    Ok(st)
}

async fn save(app: &AppState, st: &WizardState) -> Result<(), Response> {
    app.wizard.lock().await.save(st).map_err(|e| {
        log::error!("cannot save the wizard state: {e}");
        crate::app::message_page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "The box could not save your answer",
            &format!("Writing to its storage failed ({e}). Check that the SD card is not full or damaged, then try again."),
        )
    })
}

// ---- step 1: setup code ----

async fn code_page(
    State(app): State<Arc<AppState>>,
    Extension(session): Extension<Session>,
) -> Response {
    if app.provisioned() {
        return already_set_up();
    }
    if session.data.setup_ok {
        return see_other(app.wizard.lock().await.load().next_step().path());
    }
    render(&CodePage {
        title: "Set up your Hearth",
        csrf: session.data.csrf,
        errors: Errors::new(),
        locked: None,
    })
}

async fn code_submit(State(app): State<Arc<AppState>>, form: PostForm) -> Response {
    if app.provisioned() {
        return already_set_up();
    }
    let Some(code) = app.setup_code() else {
        return already_set_up();
    };
    let attempt = form.fields.get("code");
    let mut errors = Errors::new();
    let mut locked = None;
    if attempt.trim().is_empty() {
        errors.insert("code", "Enter the setup code.");
    } else {
        match code.check(attempt) {
            Verdict::Right => {
                // A new session id once the code is proven: an id planted earlier is worth nothing.
                let id = app.sessions.rotate(&form.session.id, |s| s.setup_ok = true);
                let tls = false;
                let next = app.wizard.lock().await.load().next_step();
                let mut resp = see_other(next.path());
                resp.headers_mut()
                    .insert(axum::http::header::SET_COOKIE, cookie_value(&id, tls));
                return resp;
            }
            Verdict::Wrong { tries_left } => {
                log::warn!("wrong setup code entered ({tries_left} tries left)");
                errors.insert(
                    "code",
                    format!(
                        "That is not the setup code. Check it on the box's screen or in SETUP-CODE.txt. {tries_left} more {} before the wizard pauses for {} minutes.",
                        if tries_left == 1 { "try" } else { "tries" },
                        crate::setup_code::LOCKOUT.as_secs() / 60
                    ),
                );
            }
            Verdict::Locked { wait } => {
                log::warn!(
                    "setup code locked for {}s after too many wrong codes",
                    wait.as_secs()
                );
                let minutes = wait.as_secs().div_ceil(60);
                locked = Some(format!(
                    "Too many wrong codes. To keep others from guessing, the wizard is paused: try again in {minutes} minute{}.",
                    if minutes == 1 { "" } else { "s" }
                ));
            }
        }
    }
    let status = if locked.is_some() {
        StatusCode::TOO_MANY_REQUESTS
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    render_status(
        status,
        &CodePage {
            title: "Set up your Hearth",
            csrf: form.session.data.csrf,
            errors,
            locked,
        },
    )
}

// ---- step 2: name ----

fn lan_domain() -> String {
    format!("{}.local", crate::netinfo::hostname().to_lowercase())
}

fn name_view(csrf: String, errors: Errors, kind: &str, domain: &str) -> NamePage {
    NamePage {
        title: "Server name",
        csrf,
        errors,
        kind: kind.to_string(),
        domain: domain.to_string(),
        lan_text: format!("Use it in your home network only, as {}. No domain needed; apps ask you once to trust the box.", lan_domain()),
    }
}

async fn name_page(
    State(app): State<Arc<AppState>>,
    Extension(session): Extension<Session>,
) -> Response {
    let st = match guard(&app, &session, Step::Name).await {
        Ok(st) => st,
        Err(r) => return r,
    };
    let (kind, domain) = match &st.name {
        Some(n) if n.kind == NameKind::Lan => ("lan", String::new()),
        Some(n) => (
            if n.kind == NameKind::Own {
                "own"
            } else {
                "dyndns"
            },
            n.domain.clone(),
        ),
        None => ("", String::new()),
    };
    render(&name_view(session.data.csrf, Errors::new(), kind, &domain))
}

async fn name_submit(State(app): State<Arc<AppState>>, form: PostForm) -> Response {
    let mut st = match guard(&app, &form.session, Step::Name).await {
        Ok(st) => st,
        Err(r) => return r,
    };
    let f = &form.fields;
    let (kind_s, domain_s) = (f.trimmed("kind"), f.trimmed("domain"));
    let mut errors = Errors::new();
    let kind = match kind_s.as_str() {
        "own" => Some(NameKind::Own),
        "dyndns" => Some(NameKind::Dyndns),
        "lan" => Some(NameKind::Lan),
        _ => {
            errors.insert("kind", "Choose one of the three kinds of name.");
            None
        }
    };
    let domain = match kind {
        Some(NameKind::Lan) => Some(lan_domain()),
        Some(_) => {
            match setup::check_domain(&domain_s) {
                Ok(d) if d.ends_with(".local") => {
                    errors.insert("domain", "Names ending in .local work only at home. Choose \"Only at home\" for that.");
                    None
                }
                Ok(d) if !d.contains('.') => {
                    errors.insert(
                        "domain",
                        "Enter the full name with its dot, for example chat.example.org.",
                    );
                    None
                }
                Ok(d) => Some(d),
                Err(e) => {
                    errors.insert("domain", e.message);
                    None
                }
            }
        }
        None => None,
    };
    let (Some(kind), Some(domain), true) = (kind, domain, errors.is_empty()) else {
        return render_status(
            StatusCode::UNPROCESSABLE_ENTITY,
            &name_view(form.session.data.csrf, errors, &kind_s, &domain_s),
        );
    };
    if kind == NameKind::Lan && st.cert.as_ref().is_some_and(|c| c.mode.is_acme()) {
        st.cert = None; // Let's Encrypt cannot certify a .local name.
    }
    st.name = Some(NameAnswer { kind, domain });
    if let Err(r) = save(&app, &st).await {
        return r;
    }
    see_other(Step::Admin.path())
}

// ---- step 3: admin ----

async fn admin_page(
    State(app): State<Arc<AppState>>,
    Extension(session): Extension<Session>,
) -> Response {
    let st = match guard(&app, &session, Step::Admin).await {
        Ok(st) => st,
        Err(r) => return r,
    };
    render(&AdminPage {
        title: "Admin account",
        csrf: session.data.csrf,
        errors: Errors::new(),
        username: st.admin.map(|a| a.username).unwrap_or_default(),
        domain: st.name.map(|n| n.domain).unwrap_or_default(),
    })
}

async fn admin_submit(State(app): State<Arc<AppState>>, form: PostForm) -> Response {
    let mut st = match guard(&app, &form.session, Step::Admin).await {
        Ok(st) => st,
        Err(r) => return r,
    };
    let f = &form.fields;
    let mut errors = Errors::new();
    let username = crate::forms::check_username(&mut errors, "username", f.get("username"));
    crate::forms::check_new_password(
        &mut errors,
        "password",
        "password_again",
        f.get("password"),
        f.get("password_again"),
    );
    let (Some(username), true) = (username, errors.is_empty()) else {
        let page = AdminPage {
            title: "Admin account",
            csrf: form.session.data.csrf,
            errors,
            username: f.trimmed("username"),
            domain: st.name.map(|n| n.domain).unwrap_or_default(),
        };
        return render_status(StatusCode::UNPROCESSABLE_ENTITY, &page);
    };
    st.admin = Some(AdminAnswer {
        username,
        password: f.get("password").to_string(),
    });
    if let Err(r) = save(&app, &st).await {
        return r;
    }
    see_other(Step::Join.path())
}

// ---- step 4: who may join ----

async fn join_page(
    State(app): State<Arc<AppState>>,
    Extension(session): Extension<Session>,
) -> Response {
    let st = match guard(&app, &session, Step::Join).await {
        Ok(st) => st,
        Err(r) => return r,
    };
    let policy = st.join.unwrap_or_default().as_str().to_string();
    render(&JoinPage {
        title: "Who may join",
        csrf: session.data.csrf,
        errors: Errors::new(),
        policy,
    })
}

async fn join_submit(State(app): State<Arc<AppState>>, form: PostForm) -> Response {
    let mut st = match guard(&app, &form.session, Step::Join).await {
        Ok(st) => st,
        Err(r) => return r,
    };
    let policy = match form.fields.get("policy") {
        "invite" => RegistrationPolicy::Invite,
        "open" => RegistrationPolicy::Open,
        "closed" => RegistrationPolicy::Closed,
        other => {
            let mut errors = Errors::new();
            errors.insert("policy", "Choose who may make accounts on this server.");
            let page = JoinPage {
                title: "Who may join",
                csrf: form.session.data.csrf,
                errors,
                policy: other.to_string(),
            };
            return render_status(StatusCode::UNPROCESSABLE_ENTITY, &page);
        }
    };
    st.join = Some(policy);
    if let Err(r) = save(&app, &st).await {
        return r;
    }
    see_other(Step::Cert.path())
}

// ---- step 6: done ----

async fn done_page(
    State(app): State<Arc<AppState>>,
    Extension(session): Extension<Session>,
) -> Response {
    let st = app.wizard.lock().await.load();
    let (true, Some(f)) = (session.data.setup_ok, st.finished) else {
        return if app.provisioned() {
            already_set_up()
        } else {
            see_other(Step::Code.path())
        };
    };
    let qr = crate::qr::svg(&f.invite_uri).unwrap_or_default();
    render(&DonePage {
        title: "Ready",
        admin_jid: f.admin_jid,
        invite_uri: f.invite_uri,
        invite_url: f.invite_url,
        qr,
        acme: f.certificate.is_acme(),
        apps: APPS,
    })
}
