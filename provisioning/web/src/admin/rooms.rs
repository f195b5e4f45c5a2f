//! Group chats: every room on the box (name, members, last activity), and destroying one (its
//! occupants are told why, through hearthd).

use super::{date, flash, require, set_flash};
use crate::app::{render, see_other, AppState};
use crate::session::{PostForm, Session};
use crate::templates::{RoomRow, RoomsPage};
use axum::extract::State;
use axum::response::Response;
use axum::Extension;
use std::sync::Arc;

/// Longest reason passed on to the occupants.
const MAX_REASON_CHARS: usize = 200;

pub async fn page(
    State(app): State<Arc<AppState>>,
    Extension(session): Extension<Session>,
) -> Response {
    let (_, config) = match require(&app, &session) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let domain = hearthd::modules::muc::service_domain(&config);
    let (list, load_error) = match app.backend.rooms(&config).await {
        Ok(l) => (l, None),
        Err(e) => (Vec::new(), Some(e.to_string())),
    };
    let rooms = list
        .into_iter()
        .map(|r| RoomRow {
            jid: format!("{}@{domain}", r.name),
            name: r.name,
            title: r.title,
            members: r.members,
            last_activity: date(r.last_activity),
        })
        .collect();
    render(&RoomsPage {
        title: "Group chats",
        nav: "rooms",
        csrf: session.data.csrf.clone(),
        flash: load_error.or_else(|| flash(&app, &session)),
        rooms,
    })
}

pub async fn destroy(State(app): State<Arc<AppState>>, form: PostForm) -> Response {
    let (admin, config) = match require(&app, &form.session) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let room = form.fields.trimmed("room");
    let reason: String = form
        .fields
        .trimmed("reason")
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_REASON_CHARS)
        .collect();
    let text = match app.backend.destroy_room(&config, &room, &reason).await {
        Ok(()) => {
            log::info!("group chat room {room} destroyed by {admin}");
            format!("The room {room} is gone; whoever was in it has been told.")
        }
        Err(e) => e.to_string(),
    };
    set_flash(&app, &form.session, text);
    see_other("/admin/rooms")
}
