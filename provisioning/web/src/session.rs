//! Sessions and CSRF tokens.
//!
//! Every visitor gets a random session id in the `hearth_session` cookie (HttpOnly,
//! SameSite=Strict) and a per-session CSRF token that every form carries. The cookie is also
//! `Secure` whenever the request came over HTTPS, which is always the case for the admin pages.
//! The wizard is the exception that cannot be Secure: it runs over plain HTTP on first boot because
//! no certificate exists yet, and a Secure cookie would never be sent back over HTTP.
//! SameSite=Strict plus the CSRF token keep other sites from posting into it all the same.

use crate::app::{AppState, ConnInfo};
use crate::forms::Fields;
use axum::extract::{FromRequest, Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const COOKIE: &str = "hearth_session";
/// Sessions kept at once; the least recently used goes first. Bounds memory against floods.
const MAX_SESSIONS: usize = 1024;
/// A session unused this long is forgotten (the admin signs in again).
const IDLE_TIMEOUT: Duration = Duration::from_secs(2 * 3600);
/// Form bodies larger than this are refused; the largest real form is a few hundred bytes.
pub const MAX_FORM_BYTES: usize = 64 * 1024;

/// Random bytes as URL-safe base64. 32 bytes: unguessable session ids and CSRF tokens.
pub fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    // getrandom only fails when the kernel has no entropy source at all; a box in that state
    // must not hand out predictable tokens, so this is one of the few places we stop hard.
    getrandom::getrandom(&mut buf).expect("the kernel's random number generator is unavailable");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}

#[derive(Debug, Clone)]
pub struct SessionData {
    pub csrf: String,
    pub last_seen: Instant,
    /// This visitor entered the right setup code.
    pub setup_ok: bool,
    /// Signed in as this admin account.
    pub admin: Option<String>,
    /// A one-time notice shown on the next page ("User bob removed.").
    pub flash: Option<String>,
}

/// The session attached to the current request by [`middleware`].
#[derive(Debug, Clone)]
pub struct Session {
    pub id: String,
    pub data: SessionData,
}

#[derive(Default)]
pub struct Sessions {
    inner: Mutex<HashMap<String, SessionData>>,
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, SessionData>> {
        // A panic while holding the lock cannot leave the map inconsistent (single inserts/removes).
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn get(&self, id: &str) -> Option<SessionData> {
        let mut map = self.lock();
        let now = Instant::now();
        match map.get_mut(id) {
            Some(s) if now.duration_since(s.last_seen) < IDLE_TIMEOUT => {
                s.last_seen = now;
                Some(s.clone())
            }
            Some(_) => {
                map.remove(id);
                None
            }
            None => None,
        }
    }

    fn create(&self, data: SessionData) -> String {
        let id = random_token(32);
        let mut map = self.lock();
        if map.len() >= MAX_SESSIONS {
            let now = Instant::now();
            map.retain(|_, s| now.duration_since(s.last_seen) < IDLE_TIMEOUT);
            if map.len() >= MAX_SESSIONS {
                if let Some(oldest) = map
                    .iter()
                    .min_by_key(|(_, s)| s.last_seen)
                    .map(|(k, _)| k.clone())
                {
                    map.remove(&oldest);
                }
            }
        }
        map.insert(id.clone(), data);
        id
    }

    /// Changes a session in place.
    pub fn update(&self, id: &str, f: impl FnOnce(&mut SessionData)) {
        if let Some(s) = self.lock().get_mut(id) {
            f(s);
        }
    }

    /// Takes the one-time notice.
    pub fn take_flash(&self, id: &str) -> Option<String> {
        self.lock().get_mut(id).and_then(|s| s.flash.take())
    }

    /// Replaces a session by a fresh one with a new id and CSRF token, keeping `keep` from it.
    /// Used at sign-in, so an id planted before the login is worth nothing after it.
    pub fn rotate(&self, old: &str, f: impl FnOnce(&mut SessionData)) -> String {
        let mut data = self.lock().remove(old).unwrap_or_else(fresh);
        data.csrf = random_token(32);
        data.last_seen = Instant::now();
        f(&mut data);
        self.create(data)
    }

    /// Ends every admin session (after a restore the accounts may differ).
    pub fn drop_admins(&self) {
        self.lock().retain(|_, s| s.admin.is_none());
    }
}

fn fresh() -> SessionData {
    SessionData {
        csrf: random_token(32),
        last_seen: Instant::now(),
        setup_ok: false,
        admin: None,
        flash: None,
    }
}

/// The `Set-Cookie` value for a session id.
pub fn cookie_value(id: &str, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("hearth_session=; Path=/"))
}

fn cookie_from(req: &Request) -> Option<String> {
    req.headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| {
            v.split(';').find_map(|kv| {
                let (k, val) = kv.trim().split_once('=')?;
                (k == COOKIE).then(|| val.to_string())
            })
        })
}

/// Attaches a [`Session`] to every request, creating one (and its cookie) for new visitors.
pub async fn middleware(
    State(app): State<Arc<AppState>>,
    mut req: Request,
    next: Next,
) -> Response {
    let tls = req
        .extensions()
        .get::<ConnInfo>()
        .map(|c| c.tls)
        .unwrap_or(false);
    let existing =
        cookie_from(&req).and_then(|id| app.sessions.get(&id).map(|data| Session { id, data }));
    let (session, new) = match existing {
        Some(s) => (s, false),
        None => {
            let data = fresh();
            (
                Session {
                    id: app.sessions.create(data.clone()),
                    data,
                },
                true,
            )
        }
    };
    let id = session.id.clone();
    req.extensions_mut().insert(session);
    let mut resp = next.run(req).await;
    // A handler that rotated the session set its own cookie; otherwise announce a new one.
    if new && !resp.headers().contains_key(header::SET_COOKIE) {
        resp.headers_mut()
            .append(header::SET_COOKIE, cookie_value(&id, tls));
    }
    resp
}

/// A POSTed urlencoded form whose CSRF token matched the session's. Anything else is answered
/// with a page saying what to do, never a bare status code.
pub struct PostForm {
    pub session: Session,
    pub fields: Fields,
}

impl<S: Send + Sync> FromRequest<S> for PostForm {
    type Rejection = Response;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let session = req
            .extensions()
            .get::<Session>()
            .cloned()
            .ok_or_else(|| expired().into_response())?;
        let bytes = axum::body::to_bytes(req.into_body(), MAX_FORM_BYTES).await.map_err(|_| {
            crate::app::message_page(
                axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                "Too much text",
                "The form sent more text than any field here takes. Go back, shorten what you typed and try again.",
            )
        })?;
        let fields = Fields::parse(&bytes);
        if !csrf_ok(&session, fields.get("csrf")) {
            return Err(expired().into_response());
        }
        Ok(PostForm { session, fields })
    }
}

/// Constant-time comparison, so the token cannot be guessed byte by byte from response times.
pub fn csrf_ok(session: &Session, sent: &str) -> bool {
    use subtle::ConstantTimeEq;
    !sent.is_empty() && bool::from(session.data.csrf.as_bytes().ct_eq(sent.as_bytes()))
}

pub fn expired() -> Response {
    crate::app::message_page(
        axum::http::StatusCode::FORBIDDEN,
        "This form has expired",
        "The form was not sent from this page or has expired (for example after the box restarted). \
         Go back, reload the page, and send the form again.",
    )
}
