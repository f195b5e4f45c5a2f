//! Invites: create (with a QR code to scan off the screen), list, revoke.
//! A token exists only in the answer to "create": the database keeps its hash.

use super::{date, flash, now, require, set_flash};
use crate::app::{render, render_status, see_other, AppState};
use crate::forms::Errors;
use crate::session::{PostForm, Session};
use crate::templates::{InviteRow, InvitesPage, NewInviteView};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::Extension;
use std::sync::Arc;

/// Longest note kept with an invite ("for Grandma").
const MAX_NOTE_CHARS: usize = 100;

pub async fn page(
    State(app): State<Arc<AppState>>,
    Extension(session): Extension<Session>,
) -> Response {
    show(&app, &session, Errors::new(), None).await
}

async fn show(
    app: &AppState,
    session: &Session,
    errors: Errors,
    created: Option<NewInviteView>,
) -> Response {
    let (_, config) = match require(app, session) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let (list, load_error) = match app.backend.invites(&config).await {
        Ok(l) => (l, None),
        Err(e) => (Vec::new(), Some(e.to_string())),
    };
    let t = now();
    let invites = list
        .into_iter()
        .rev()
        .map(|i| InviteRow {
            id: i.id,
            state: if i.revoked {
                "revoked"
            } else if i.uses_left <= 0 {
                "used"
            } else if i.expires_at <= t {
                "expired"
            } else {
                "open"
            },
            usable: i.is_usable(t),
            note: i.note,
            created: date(i.created_at),
            expires: date(i.expires_at),
        })
        .collect();
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    let page = InvitesPage {
        title: "Invites",
        nav: "invites",
        csrf: session.data.csrf.clone(),
        flash: load_error.or_else(|| flash(app, session)),
        errors,
        invites,
        created,
    };
    if status == StatusCode::OK {
        render(&page)
    } else {
        render_status(status, &page)
    }
}

pub async fn create(State(app): State<Arc<AppState>>, form: PostForm) -> Response {
    let (_, config) = match require(&app, &form.session) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let note = form.fields.trimmed("note");
    let mut errors = Errors::new();
    if note.chars().count() > MAX_NOTE_CHARS {
        errors.insert(
            "note",
            format!("Keep the note under {MAX_NOTE_CHARS} characters."),
        );
    } else if note.chars().any(char::is_control) {
        errors.insert(
            "note",
            "The note contains a control character; type it again.",
        );
    }
    if !errors.is_empty() {
        return show(&app, &form.session, errors, None).await;
    }
    match app.backend.create_invite(&config, &note).await {
        Ok(invite) => {
            log::info!("invite {} created", invite.id);
            let qr = crate::qr::svg(&invite.uri).unwrap_or_default();
            // Shown right here, not after a redirect: the token cannot be looked up again.
            show(
                &app,
                &form.session,
                Errors::new(),
                Some(NewInviteView {
                    uri: invite.uri,
                    url: invite.url,
                    qr,
                }),
            )
            .await
        }
        Err(e) => {
            errors.insert("note", format!("The invite could not be made: {e}"));
            show(&app, &form.session, errors, None).await
        }
    }
}

pub async fn revoke(State(app): State<Arc<AppState>>, form: PostForm) -> Response {
    let (_, config) = match require(&app, &form.session) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let text = match form.fields.get("id").parse::<i64>() {
        Ok(id) => match app.backend.revoke_invite(&config, id).await {
            Ok(()) => {
                log::info!("invite {id} revoked");
                "Invite revoked: its link no longer works.".to_string()
            }
            Err(e) => e.to_string(),
        },
        Err(_) => "That invite does not exist; reload the page.".to_string(),
    };
    set_flash(&app, &form.session, text);
    see_other("/admin/invites")
}
