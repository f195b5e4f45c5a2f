//! `/invite/TOKEN`: what a friend sees when they open an invite link. It says which app to
//! install, has a button that hands the invite to the app (`xmpp:` URI, XEP-0401 style), and a
//! form to make the account right here for apps that cannot use the token themselves.

use crate::app::{message_page, render, render_status, AppState};
use crate::backend::invite_uri;
use crate::forms::{check_new_password, check_username, Errors};
use crate::session::{PostForm, Session};
use crate::templates::{InviteDone, InvitePage, APPS};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Extension;
use std::sync::Arc;

/// Tokens are URL-safe base64 made by storage; anything else cannot be one.
fn plausible(token: &str) -> bool {
    !token.is_empty()
        && token.len() <= 128
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn view(
    domain: &str,
    token: &str,
    csrf: String,
    errors: Errors,
    problem: Option<String>,
    username: String,
) -> InvitePage {
    let uri = invite_uri(domain, token);
    InvitePage {
        title: "You are invited",
        csrf,
        errors,
        domain: domain.to_string(),
        token: token.to_string(),
        qr: crate::qr::svg(&uri).unwrap_or_default(),
        uri,
        problem,
        username,
        name_hint: format!("Your address will be name@{domain}."),
        apps: APPS,
    }
}

pub async fn page(
    State(app): State<Arc<AppState>>,
    Path(token): Path<String>,
    Extension(session): Extension<Session>,
) -> Response {
    if !app.provisioned() {
        return message_page(
            StatusCode::NOT_FOUND,
            "No such invite",
            "This box is not set up yet, so it has no invites.",
        );
    }
    let config = match app.config() {
        Ok(c) => c,
        Err(r) => return r,
    };
    let problem = if !plausible(&token) {
        Some(
            "This invite link is not complete. Ask for the link again and copy all of it."
                .to_string(),
        )
    } else {
        app.backend
            .check_invite(&config, &token)
            .await
            .err()
            .map(|e| format!("{e} Ask the person who invited you for a new one."))
    };
    let status = if problem.is_some() {
        StatusCode::GONE
    } else {
        StatusCode::OK
    };
    render_status(
        status,
        &view(
            &config.domain,
            &token,
            session.data.csrf,
            Errors::new(),
            problem,
            String::new(),
        ),
    )
}

pub async fn register(
    State(app): State<Arc<AppState>>,
    Path(token): Path<String>,
    form: PostForm,
) -> Response {
    if !app.provisioned() {
        return message_page(
            StatusCode::NOT_FOUND,
            "No such invite",
            "This box is not set up yet, so it has no invites.",
        );
    }
    let config = match app.config() {
        Ok(c) => c,
        Err(r) => return r,
    };
    let f = &form.fields;
    let csrf = form.session.data.csrf.clone();
    if !plausible(&token) {
        let problem = Some(
            "This invite link is not complete. Ask for the link again and copy all of it."
                .to_string(),
        );
        return render_status(
            StatusCode::GONE,
            &view(
                &config.domain,
                &token,
                csrf,
                Errors::new(),
                problem,
                String::new(),
            ),
        );
    }
    let mut errors = Errors::new();
    let name = check_username(&mut errors, "username", f.get("username"));
    check_new_password(
        &mut errors,
        "password",
        "password_again",
        f.get("password"),
        f.get("password_again"),
    );
    if let (Some(name), true) = (name, errors.is_empty()) {
        if let Err(e) = app.backend.check_invite(&config, &token).await {
            let problem = Some(format!("{e} Ask the person who invited you for a new one."));
            return render_status(
                StatusCode::GONE,
                &view(&config.domain, &token, csrf, errors, problem, name),
            );
        }
        match app
            .backend
            .register_with_invite(&config, &token, &name, f.get("password"))
            .await
        {
            Ok(()) => {
                log::info!("account {name} registered with an invite on the web page");
                return render(&InviteDone {
                    title: "Welcome",
                    jid: format!("{name}@{}", config.domain),
                    apps: APPS,
                });
            }
            Err(e) => errors.insert("username", e.to_string()),
        }
    }
    render_status(
        StatusCode::UNPROCESSABLE_ENTITY,
        &view(
            &config.domain,
            &token,
            csrf,
            errors,
            None,
            f.trimmed("username"),
        ),
    )
}
