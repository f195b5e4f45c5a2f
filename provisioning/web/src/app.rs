//! The application: shared state, routes, and what every response gets (security headers,
//! HTTPS redirect once the box is set up, pages for errors).

use crate::backend::Backend;
use crate::cli::ServeArgs;
use crate::session::Sessions;
use crate::setup_code::SetupCode;
use crate::templates::Message;
use crate::tls::CertResolver;
use crate::wizard::reach::ProbeSettings;
use askama::Template;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, Request, State};
use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use hearthd::config::Config;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// Largest backup archive accepted for restore.
pub const MAX_RESTORE_BYTES: usize = 1024 * 1024 * 1024;

/// Per connection: whether it came over TLS, and from where.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    pub tls: bool,
    pub peer: SocketAddr,
}

pub struct AppState {
    pub args: ServeArgs,
    pub sessions: Sessions,
    /// `None` once the box is set up: the code is retired then.
    pub code: std::sync::Mutex<Option<Arc<SetupCode>>>,
    pub wizard: tokio::sync::Mutex<crate::wizard::state::Store>,
    pub backend: Backend,
    pub tls: Arc<CertResolver>,
    pub probe: ProbeSettings,
    pub login_limiter: crate::admin::LoginLimiter,
}

impl AppState {
    /// The box is set up when its config exists; everything else follows from that one fact.
    pub fn provisioned(&self) -> bool {
        self.args.config.exists()
    }

    pub fn config(&self) -> Result<Config, Response> {
        Config::load(&self.args.config).map_err(|e| {
            log::error!("{e}");
            message_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "The configuration cannot be read",
                &format!("{e}. Fix the file, or restore a backup, then reload this page."),
            )
        })
    }

    pub fn setup_code(&self) -> Option<Arc<SetupCode>> {
        self.code.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The directory hearth-acme puts HTTP-01 tokens in: `<webroot>/.well-known/acme-challenge/`,
    /// with the webroot from `[acme] webroot`, else `<data_dir>/acme-webroot` (hearth-acme's default).
    pub fn challenge_dir(&self) -> PathBuf {
        let config = Config::load(&self.args.config).ok();
        let webroot = config
            .as_ref()
            .and_then(|c| c.acme.as_ref()?.get("webroot")?.as_str().map(PathBuf::from))
            .or_else(|| config.as_ref().map(|c| c.data_dir.join("acme-webroot")))
            .unwrap_or_else(|| self.args.data_dir.join("acme-webroot"));
        webroot.join(".well-known").join("acme-challenge")
    }

    /// The HTTPS port visitors should be sent to.
    pub fn https_port(&self) -> u16 {
        self.args
            .https_port
            .or_else(|| self.args.listen_tls.first().map(|a| a.port()))
            .unwrap_or(443)
    }
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(home))
        .merge(crate::wizard::routes())
        .merge(crate::admin::routes())
        .route(
            "/invite/{token}",
            get(crate::invite::page).post(crate::invite::register),
        )
        .route("/.well-known/acme-challenge/{token}", get(acme_challenge))
        .route(
            "/setup/restore",
            get(crate::backup::wizard_page)
                .post(crate::backup::wizard_restore)
                .layer(DefaultBodyLimit::max(MAX_RESTORE_BYTES)),
        )
        .route(
            "/admin/backup/restore",
            post(crate::backup::admin_restore).layer(DefaultBodyLimit::max(MAX_RESTORE_BYTES)),
        )
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::session::middleware,
        ))
        // Uploaded files: no session (a download must not cost a session entry), own headers.
        .merge(crate::upload::routes())
        .layer(middleware::from_fn_with_state(
            state.clone(),
            https_redirect,
        ))
        .layer(middleware::from_fn(security_headers))
        .with_state(state)
}

async fn home(State(app): State<Arc<AppState>>) -> Redirect {
    Redirect::to(if app.provisioned() {
        "/admin"
    } else {
        "/setup"
    })
}

/// Once the box is set up, plain HTTP only serves ACME challenges and the wizard's last page
/// (whose session began over HTTP); everything else moves to HTTPS, where cookies are Secure.
async fn https_redirect(State(app): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let tls = req
        .extensions()
        .get::<ConnInfo>()
        .map(|c| c.tls)
        .unwrap_or(false);
    if !app.tls.has_paths() && app.provisioned() {
        // Set up behind our back (preseed while we ran): serve its certificate from now on.
        if let Ok(c) = Config::load(&app.args.config) {
            app.tls.set_paths(c.tls.cert, c.tls.key);
        }
    }
    let path = req.uri().path();
    let exempt = path.starts_with("/.well-known/acme-challenge/") || path == "/setup/done";
    if tls || exempt || !app.provisioned() || app.tls.current().is_none() {
        return next.run(req).await;
    }
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.parse::<axum::http::uri::Authority>().ok())
        .map(|a| a.host().to_string())
        .unwrap_or_else(|| "hearth.local".into());
    let port = app.https_port();
    let port = if port == 443 {
        String::new()
    } else {
        format!(":{port}")
    };
    let pq = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host
    };
    Redirect::permanent(&format!("https://{host}{port}{pq}")).into_response()
}

/// No scripts at all, no framing, no referrer (invite tokens are in URLs), no caching of pages
/// that show accounts and tokens.
async fn security_headers(req: Request, next: Next) -> Response {
    let tls = req
        .extensions()
        .get::<ConnInfo>()
        .map(|c| c.tls)
        .unwrap_or(false);
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    // Uploaded files bring their own, stricter policy (`sandbox`).
    if !h.contains_key(header::CONTENT_SECURITY_POLICY) {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
            ),
        );
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    if tls {
        h.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
    resp
}

/// ACME HTTP-01: `hearth-acme` writes the token files, we only read them. Token names are
/// base64url (RFC 8555 §8.3), which also rules out path tricks.
async fn acme_challenge(
    State(app): State<Arc<AppState>>,
    UrlPath(token): UrlPath<String>,
) -> Response {
    let valid = !token.is_empty()
        && token.len() <= 256
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !valid {
        return (StatusCode::NOT_FOUND, "not found").into_response();
    }
    match tokio::fs::read(app.challenge_dir().join(&token)).await {
        Ok(body) => ([(header::CONTENT_TYPE, "application/octet-stream")], body).into_response(),
        Err(_) => (StatusCode::NOT_FOUND, "not found").into_response(),
    }
}

async fn not_found(uri: Uri) -> Response {
    log::debug!("404 {uri}");
    message_page(
        StatusCode::NOT_FOUND,
        "Page not found",
        "There is no page at this address. Start again from the home page.",
    )
}

/// Renders a template; a template error becomes a plain 500 page rather than a panic.
pub fn render<T: Template>(t: &T) -> Response {
    render_status(StatusCode::OK, t)
}

pub fn render_status<T: Template>(status: StatusCode, t: &T) -> Response {
    match t.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            log::error!("template error: {e}");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "The page could not be built; see the log of hearth-web.",
            )
                .into_response()
        }
    }
}

/// A page with a heading, one paragraph and a link home.
pub fn message_page(status: StatusCode, heading: &str, text: &str) -> Response {
    message_link(status, heading, text, "/", "Go to the start page")
}

pub fn message_link(
    status: StatusCode,
    heading: &str,
    text: &str,
    href: &str,
    link: &str,
) -> Response {
    render_status(
        status,
        &Message {
            title: heading.to_string(),
            heading: heading.to_string(),
            text: text.to_string(),
            href: href.to_string(),
            link: link.to_string(),
        },
    )
}

/// 303 See Other: after a POST, the browser fetches the next page with GET.
pub fn see_other(to: &str) -> Response {
    Redirect::to(to).into_response()
}
