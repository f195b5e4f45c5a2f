//! SSH keys: the public keys that may log in to the box as root. The SSH server runs only while at
//! least one is listed (the image's ssh.service has `ConditionFileNotEmpty=` on the file, and
//! hearth-ssh-keys.path starts or stops it when the file changes), so removing the last key turns SSH off.

use super::{flash, require, set_flash};
use crate::app::{render, render_status, see_other, AppState};
use crate::forms::Errors;
use crate::session::{PostForm, Session};
use crate::templates::{SshKeyRow, SshPage};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::Extension;
use hearthd::setup::ssh_keys::{self, AuthorizedKey};
use std::sync::{Arc, Mutex};

/// One read-modify-write of the keys file at a time (two admins adding keys at once keep both).
static KEYS_FILE: Mutex<()> = Mutex::new(());

pub async fn page(
    State(app): State<Arc<AppState>>,
    Extension(session): Extension<Session>,
) -> Response {
    show(&app, &session, Errors::new(), String::new())
}

fn show(app: &AppState, session: &Session, errors: Errors, key_input: String) -> Response {
    if let Err(r) = require(app, session) {
        return r;
    }
    let (keys, load_error) = match ssh_keys::read_keys(&app.args.ssh_keys) {
        Ok(k) => (k, None),
        Err(e) => (Vec::new(), Some(e)),
    };
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "hearth".into());
    let page = SshPage {
        title: "SSH keys",
        nav: "ssh",
        csrf: session.data.csrf.clone(),
        flash: load_error.or_else(|| flash(app, session)),
        errors,
        login: format!("ssh root@{host}.local"),
        keys: keys
            .iter()
            .map(|k| SshKeyRow {
                kind: k.kind.clone(),
                comment: k.comment.clone(),
                fingerprint: k.fingerprint(),
            })
            .collect(),
        key_input,
    };
    if page.errors.is_empty() {
        render(&page)
    } else {
        render_status(StatusCode::UNPROCESSABLE_ENTITY, &page)
    }
}

pub async fn add(State(app): State<Arc<AppState>>, form: PostForm) -> Response {
    if let Err(r) = require(&app, &form.session) {
        return r;
    }
    let input = form.fields.trimmed("key");
    let mut errors = Errors::new();
    let key = match AuthorizedKey::parse(&input) {
        Ok(k) => k,
        Err(e) => {
            errors.insert("key", capitalise(&e));
            return show(&app, &form.session, errors, input);
        }
    };
    let outcome = {
        let _one_writer = KEYS_FILE.lock().unwrap_or_else(|p| p.into_inner());
        ssh_keys::read_keys(&app.args.ssh_keys).and_then(|mut keys| {
            if keys.iter().any(|k| k.same_key(&key)) {
                return Ok(false);
            }
            keys.push(key.clone());
            ssh_keys::write_keys(&app.args.ssh_keys, &keys).map(|()| true)
        })
    };
    match outcome {
        Ok(true) => {
            log::info!("SSH key {} added ({})", key.fingerprint(), key.comment);
            set_flash(
                &app,
                &form.session,
                format!(
                    "Added {}. It may log in as root now; SSH starts within seconds if it was off.",
                    label(&key)
                ),
            );
            see_other("/admin/ssh")
        }
        Ok(false) => {
            errors.insert("key", "This key is already in the list.");
            show(&app, &form.session, errors, input)
        }
        Err(e) => {
            errors.insert("key", format!("The key could not be saved: {e}"));
            show(&app, &form.session, errors, input)
        }
    }
}

pub async fn remove(State(app): State<Arc<AppState>>, form: PostForm) -> Response {
    if let Err(r) = require(&app, &form.session) {
        return r;
    }
    let fingerprint = form.fields.trimmed("fingerprint");
    let outcome = {
        let _one_writer = KEYS_FILE.lock().unwrap_or_else(|p| p.into_inner());
        ssh_keys::read_keys(&app.args.ssh_keys).and_then(|mut keys| {
            let Some(i) = keys.iter().position(|k| k.fingerprint() == fingerprint) else {
                return Ok(None);
            };
            let gone = keys.remove(i);
            ssh_keys::write_keys(&app.args.ssh_keys, &keys).map(|()| Some((gone, keys.len())))
        })
    };
    let text = match outcome {
        Ok(Some((gone, left))) => {
            log::info!("SSH key {} removed ({})", gone.fingerprint(), gone.comment);
            if left == 0 {
                format!(
                    "Removed {}. No key is left, so SSH is now off.",
                    label(&gone)
                )
            } else {
                format!("Removed {}: it can no longer log in.", label(&gone))
            }
        }
        Ok(None) => "That key is not in the list (any more); reload the page.".into(),
        Err(e) => format!("The key could not be removed: {e}"),
    };
    set_flash(&app, &form.session, text);
    see_other("/admin/ssh")
}

fn label(k: &AuthorizedKey) -> String {
    if k.comment.is_empty() {
        format!("the {} key {}", k.kind, k.fingerprint())
    } else {
        format!("the key of {}", k.comment)
    }
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect::<String>() + ".",
        None => String::new(),
    }
}
