//! The admin pages after setup: sign-in, and the sections in `users`, `invites`, `rooms`, `ssh`, `system`
//! (and backups in `crate::backup`). Only accounts marked admin in the database may sign in.

pub mod invites;
pub mod rooms;
pub mod ssh;
pub mod system;
pub mod users;

use crate::app::{render, render_status, see_other, AppState, ConnInfo};
use crate::forms::Errors;
use crate::session::{cookie_value, PostForm, Session};
use crate::templates::LoginPage;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Extension, Router};
use hearthd::config::Config;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Failed sign-ins (all accounts together) before everybody waits; stops password guessing
/// from the LAN without locking the owner out for long.
const MAX_LOGIN_FAILURES: u32 = 10;
const LOGIN_LOCKOUT: Duration = Duration::from_secs(60);

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/admin", get(system::home))
        .route("/admin/renew", post(system::renew))
        .route("/admin/login", get(login_page).post(login_submit))
        .route("/admin/logout", post(logout))
        .route("/admin/users", get(users::page))
        .route("/admin/users/add", post(users::add))
        .route("/admin/users/password", post(users::password))
        .route("/admin/users/delete", post(users::delete))
        .route("/admin/invites", get(invites::page).post(invites::create))
        .route("/admin/invites/revoke", post(invites::revoke))
        .route("/admin/rooms", get(rooms::page))
        .route("/admin/rooms/destroy", post(rooms::destroy))
        .route("/admin/ssh", get(ssh::page).post(ssh::add))
        .route("/admin/ssh/remove", post(ssh::remove))
        .route("/admin/backup", get(crate::backup::admin_page))
        .route(
            "/admin/backup/download",
            post(crate::backup::admin_download),
        )
}

#[derive(Default)]
pub struct LoginLimiter {
    inner: Mutex<(u32, Option<Instant>)>,
}

impl LoginLimiter {
    /// `Some(wait)` while sign-ins are paused.
    fn locked(&self) -> Option<Duration> {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        match g.1 {
            Some(until) if Instant::now() < until => Some(until - Instant::now()),
            Some(_) => {
                *g = (0, None);
                None
            }
            None => None,
        }
    }
    fn failed(&self) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.0 += 1;
        if g.0 >= MAX_LOGIN_FAILURES {
            g.1 = Some(Instant::now() + LOGIN_LOCKOUT);
        }
    }
    fn succeeded(&self) {
        *self.inner.lock().unwrap_or_else(|p| p.into_inner()) = (0, None);
    }
}

/// The signed-in admin and the current config, or the response to send instead.
pub fn require(app: &AppState, session: &Session) -> Result<(String, Config), Response> {
    if !app.provisioned() {
        return Err(see_other("/setup"));
    }
    let Some(admin) = session.data.admin.clone() else {
        return Err(see_other("/admin/login"));
    };
    Ok((admin, app.config()?))
}

/// Takes the one-time notice for this page.
pub fn flash(app: &AppState, session: &Session) -> Option<String> {
    app.sessions.take_flash(&session.id)
}

pub fn set_flash(app: &AppState, session: &Session, text: impl Into<String>) {
    let text = text.into();
    app.sessions.update(&session.id, |s| s.flash = Some(text));
}

async fn login_page(
    State(app): State<Arc<AppState>>,
    Extension(session): Extension<Session>,
) -> Response {
    if !app.provisioned() {
        return see_other("/setup");
    }
    if session.data.admin.is_some() {
        return see_other("/admin");
    }
    let flash = flash(&app, &session);
    render(&LoginPage {
        title: "Sign in",
        csrf: session.data.csrf,
        errors: Errors::new(),
        username: String::new(),
        flash,
    })
}

async fn login_submit(
    State(app): State<Arc<AppState>>,
    Extension(conn): Extension<ConnInfo>,
    form: PostForm,
) -> Response {
    if !app.provisioned() {
        return see_other("/setup");
    }
    let config = match app.config() {
        Ok(c) => c,
        Err(r) => return r,
    };
    let username_in = form.fields.trimmed("username");
    let mut errors = Errors::new();
    let again = |errors: Errors, status: StatusCode| {
        let page = LoginPage {
            title: "Sign in",
            csrf: form.session.data.csrf.clone(),
            errors,
            username: username_in.clone(),
            flash: None,
        };
        render_status(status, &page)
    };
    if !conn.tls {
        // The admin cookie is Secure and the password must not cross the network in clear.
        errors.insert(
            "username",
            "Sign-in works only over https://. Open this page with https:// in front.",
        );
        return again(errors, StatusCode::FORBIDDEN);
    }
    if let Some(wait) = app.login_limiter.locked() {
        errors.insert(
            "password",
            format!(
                "Too many wrong passwords. Wait {} seconds, then try again.",
                wait.as_secs().max(1)
            ),
        );
        return again(errors, StatusCode::TOO_MANY_REQUESTS);
    }
    let password = form.fields.get("password");
    // Accept `alice@domain` too: that is how people know their account.
    let suffix = format!("@{}", config.domain);
    let bare = match username_in.to_lowercase().strip_suffix(&suffix) {
        Some(local) => local.to_string(),
        None => username_in.clone(),
    };
    let username = crate::forms::check_username(&mut errors, "username", &bare);
    if password.is_empty() {
        errors.insert("password", "Enter your password.");
    }
    let Some(username) = username.filter(|_| errors.is_empty()) else {
        return again(errors, StatusCode::UNPROCESSABLE_ENTITY);
    };
    match app.backend.check_admin(&config, &username, password).await {
        Ok(true) => {
            app.login_limiter.succeeded();
            log::info!("admin {username} signed in from {}", conn.peer.ip());
            let id = app
                .sessions
                .rotate(&form.session.id, |s| s.admin = Some(username.clone()));
            let mut resp = see_other("/admin");
            resp.headers_mut()
                .insert(header::SET_COOKIE, cookie_value(&id, true));
            resp
        }
        Ok(false) => {
            app.login_limiter.failed();
            log::warn!(
                "failed admin sign-in for {username:?} from {}",
                conn.peer.ip()
            );
            errors.insert(
                "password",
                "The user name or password is wrong, or this account may not manage the box.",
            );
            again(errors, StatusCode::UNAUTHORIZED)
        }
        Err(e) => {
            errors.insert(
                "password",
                format!("The password could not be checked: {e}"),
            );
            again(errors, StatusCode::INTERNAL_SERVER_ERROR)
        }
    }
}

async fn logout(
    State(app): State<Arc<AppState>>,
    Extension(conn): Extension<ConnInfo>,
    form: PostForm,
) -> Response {
    let id = app.sessions.rotate(&form.session.id, |s| s.admin = None);
    app.sessions
        .update(&id, |s| s.flash = Some("You are signed out.".into()));
    let mut resp = see_other("/admin/login");
    resp.headers_mut()
        .insert(header::SET_COOKIE, cookie_value(&id, conn.tls));
    resp
}

/// `2026-05-01` for a Unix time.
pub fn date(secs: i64) -> String {
    crate::certinfo::date(secs)
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
