//! Users: list, add, reset a password, remove.

use super::{date, flash, require, set_flash};
use crate::app::{render_status, see_other, AppState};
use crate::forms::{check_new_password, check_username, Errors};
use crate::session::{PostForm, Session};
use crate::templates::{UserRow, UsersPage};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::Extension;
use std::sync::Arc;

pub async fn page(
    State(app): State<Arc<AppState>>,
    Extension(session): Extension<Session>,
) -> Response {
    show(
        &app,
        &session,
        StatusCode::OK,
        Errors::new(),
        String::new(),
        String::new(),
    )
    .await
}

async fn show(
    app: &AppState,
    session: &Session,
    status: StatusCode,
    errors: Errors,
    new_name: String,
    form: String,
) -> Response {
    let (me, config) = match require(app, session) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let (users, load_error) = match app.backend.users(&config).await {
        Ok(u) => (u, None),
        Err(e) => (Vec::new(), Some(e.to_string())),
    };
    let rows = users
        .into_iter()
        .map(|u| UserRow {
            jid: format!("{}@{}", u.username, config.domain),
            is_me: u.username == me,
            name: u.username,
            admin: u.is_admin,
            created: date(u.created_at),
        })
        .collect();
    let page = UsersPage {
        title: "Users",
        nav: "users",
        csrf: session.data.csrf.clone(),
        flash: load_error.or_else(|| flash(app, session)),
        errors,
        users: rows,
        new_name,
        name_hint: format!("The address will be name@{}.", config.domain),
        form,
    };
    render_status(status, &page)
}

pub async fn add(State(app): State<Arc<AppState>>, form: PostForm) -> Response {
    let (_, config) = match require(&app, &form.session) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let f = &form.fields;
    let mut errors = Errors::new();
    let name = check_username(&mut errors, "new_name", f.get("new_name"));
    check_new_password(
        &mut errors,
        "new_password",
        "new_password_again",
        f.get("new_password"),
        f.get("new_password_again"),
    );
    if let (Some(name), true) = (name, errors.is_empty()) {
        let admin = f.get("new_admin") == "on";
        match app
            .backend
            .add_user(&config, &name, f.get("new_password"), admin)
            .await
        {
            Ok(()) => {
                log::info!("user {name} added");
                set_flash(
                    &app,
                    &form.session,
                    format!(
                        "Added {name}@{}. Give them the password in person.",
                        config.domain
                    ),
                );
                return see_other("/admin/users");
            }
            Err(e) => errors.insert("new_name", e.to_string()),
        }
    }
    show(
        &app,
        &form.session,
        StatusCode::UNPROCESSABLE_ENTITY,
        errors,
        f.trimmed("new_name"),
        "add".into(),
    )
    .await
}

pub async fn password(State(app): State<Arc<AppState>>, form: PostForm) -> Response {
    let (_, config) = match require(&app, &form.session) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let f = &form.fields;
    let user = f.trimmed("user");
    let mut errors = Errors::new();
    check_new_password(
        &mut errors,
        "password",
        "password_again",
        f.get("password"),
        f.get("password_again"),
    );
    if errors.is_empty() {
        match app
            .backend
            .set_password(&config, &user, f.get("password"))
            .await
        {
            Ok(()) => {
                log::info!("password of {user} reset");
                set_flash(&app, &form.session, format!("New password set for {user}."));
                return see_other("/admin/users");
            }
            Err(e) => errors.insert("password", e.to_string()),
        }
    }
    show(
        &app,
        &form.session,
        StatusCode::UNPROCESSABLE_ENTITY,
        errors,
        String::new(),
        user,
    )
    .await
}

pub async fn delete(State(app): State<Arc<AppState>>, form: PostForm) -> Response {
    let (me, config) = match require(&app, &form.session) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let user = form.fields.trimmed("user");
    let text = if user == me {
        "You cannot remove the account you are signed in with.".to_string()
    } else if form.fields.get("confirm") != "yes" {
        format!("Tick \"Yes, remove {user}\" to confirm; removing an account deletes its contacts and waiting messages.")
    } else {
        match app.backend.delete_user(&config, &user).await {
            Ok(()) => {
                log::info!("user {user} removed");
                format!("Removed {user}.")
            }
            Err(e) => e.to_string(),
        }
    };
    set_flash(&app, &form.session, text);
    see_other("/admin/users")
}
