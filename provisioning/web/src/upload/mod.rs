//! XEP-0363 files on port 443 of the main domain: `PUT /upload/<token>/<name>?v2=<mac>` stores a
//! file for a slot `hearthd` handed out, `GET`/`HEAD` serve it until it expires (`serve.rs`).
//!
//! A PUT is checked before a byte is written: the signature (Prosody's `mod_http_upload_external`
//! v2, over the path, `Content-Length` and `Content-Type`), free space, then `hearthd`, which owns
//! the slot table, claims the slot (unknown, expired, used or busy slots are refused there). The
//! body streams into `uploads/.partial/` chunk by chunk (never whole in memory), must be exactly the
//! announced length, is fsynced and only then renamed to `uploads/<token>`; any failure removes
//! the partial file, so nothing half-written is ever served.
//!
//! Served files carry a CSP with `sandbox` and `nosniff`, so an uploaded HTML or SVG page runs no
//! script in our origin, and `Content-Disposition: attachment` unless the type is a picture,
//! sound, film or plain text. CORS is open: web clients on other origins upload and show files.

mod serve;

use crate::app::AppState;
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::put;
use axum::Router;
use hearthd::config::Config;
use hearthd::control::Request;
use hearthd::modules::upload::control::UploadRequest;
use hearthd::modules::upload::{read_secret, signed, PARTIAL_DIR};
use http_body_util::BodyExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// Where the files live in URLs (the default `[modules.upload] url` ends in it).
pub const PREFIX: &str = "/upload/";
/// Space left free on the disk besides the upload, so the database never runs out first: this
/// much, or a twentieth of a small filesystem.
const KEEP_FREE: u64 = 64 * 1024 * 1024;
/// A body that sends nothing for this long is given up (a phone in a tunnel, or someone holding
/// a slot and a connection open on purpose).
const BODY_IDLE: Duration = Duration::from_secs(60);
/// Read size when serving a file, and the most tokio's file buffers hold (its default is 2 MiB
/// per open file, the whole memory budget of a transfer).
const READ_CHUNK: usize = 64 * 1024;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new().route(
        "/upload/{*rest}",
        put(put_file)
            .get(serve::get_file)
            .head(serve::get_file)
            .options(preflight),
    )
}

/// A plain-text answer with the CORS header, so a web client can read why it failed.
fn answer(status: StatusCode, text: &str) -> Response {
    let mut r = (status, format!("{text}\n")).into_response();
    cors(r.headers_mut());
    r
}

fn cors(h: &mut HeaderMap) {
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("Content-Length, Content-Range, ETag"),
    );
}

async fn preflight() -> Response {
    let mut r = StatusCode::NO_CONTENT.into_response();
    let h = r.headers_mut();
    cors(h);
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, HEAD, PUT, OPTIONS"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Content-Type, Authorization"),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("86400"),
    );
    r
}

/// The config, when uploads are on; else the answer to give.
fn upload_config(app: &AppState) -> Result<Config, Response> {
    if !app.provisioned() {
        return Err(answer(StatusCode::NOT_FOUND, "This box is not set up yet."));
    }
    let config = app.config()?;
    if !config.modules.upload.enabled {
        return Err(answer(
            StatusCode::NOT_FOUND,
            "Uploads are off on this box.",
        ));
    }
    Ok(config)
}

/// Asks hearthd; `Err` is the answer to give (its refusal, or that it does not run).
async fn ask(config: &Config, req: UploadRequest) -> Result<serde_json::Value, Response> {
    match hearthd::control::request(&config.control_socket, &Request::Upload(req)).await {
        Ok(r) if r.ok => Ok(r.data),
        Ok(r) => {
            let status = r.data["status"]
                .as_u64()
                .and_then(|s| StatusCode::from_u16(s as u16).ok())
                .unwrap_or(StatusCode::NOT_FOUND);
            Err(answer(status, r.error.as_deref().unwrap_or("refused")))
        }
        Err(e) => {
            log::warn!("upload: hearthd does not answer: {e}");
            Err(answer(
                StatusCode::SERVICE_UNAVAILABLE,
                "The chat server is not running; try again in a minute.",
            ))
        }
    }
}

async fn put_file(
    State(app): State<Arc<AppState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let config = match upload_config(&app) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let Ok(path) = signed::parse_path(uri.path(), PREFIX) else {
        return answer(StatusCode::NOT_FOUND, "This is not an upload address.");
    };
    let Some(mac) = uri.query().and_then(signed::v2_from_query) else {
        return answer(
            StatusCode::FORBIDDEN,
            "An upload needs the signed URL the chat server gave (with ?v2=…).",
        );
    };
    let Some(size) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
    else {
        return answer(
            StatusCode::LENGTH_REQUIRED,
            "An upload needs a Content-Length header.",
        );
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_else(|| "application/octet-stream".into());
    let secret = match read_secret(&config.modules.upload.secret_path(&config)) {
        Ok(s) => s,
        Err(e) => {
            log::error!("upload: {e}");
            return answer(
                StatusCode::SERVICE_UNAVAILABLE,
                "The upload service is not set up yet (no secret); see the log of hearthd.",
            );
        }
    };
    if !signed::verify_v2(&secret, &path, size, &content_type, mac) {
        return answer(
            StatusCode::FORBIDDEN,
            &format!(
                "The signature does not match this upload: its length ({size} bytes) or type \
                 ({content_type}) differs from what the slot was asked for, or the URL was changed."
            ),
        );
    }
    // The rest runs in its own task: if the client goes away, hyper drops this handler, and a
    // claimed slot must still be freed and a partial file removed.
    let work = tokio::spawn(async move {
        let begin = UploadRequest::Begin {
            token: path.token.clone(),
            name: path.name.clone(),
            size,
            content_type,
        };
        if let Err(r) = ask(&config, begin).await {
            return r;
        }
        let dir = config.modules.upload.dir(&config);
        if let Some((free, total)) = free_space(&dir) {
            if free < size.saturating_add(KEEP_FREE.min(total / 20)) {
                let _ = ask(&config, UploadRequest::Abort { token: path.token }).await;
                return answer(
                    StatusCode::INSUFFICIENT_STORAGE,
                    "The box's disk is too full for this file. Ask the owner to free space.",
                );
            }
        }
        match receive(body, &dir, &path.token, size, BODY_IDLE).await {
            Ok(()) => match ask(
                &config,
                UploadRequest::Finish {
                    token: path.token.clone(),
                },
            )
            .await
            {
                Ok(_) => answer(StatusCode::CREATED, "Stored."),
                Err(r) => {
                    let _ = std::fs::remove_file(dir.join(&path.token));
                    r
                }
            },
            Err(e) => {
                let _ = ask(&config, UploadRequest::Abort { token: path.token }).await;
                let (status, text) = e.explain(size);
                log::info!("upload refused: {text}");
                answer(status, &text)
            }
        }
    });
    work.await.unwrap_or_else(|e| {
        log::error!("upload task failed: {e}");
        answer(
            StatusCode::INTERNAL_SERVER_ERROR,
            "The upload failed; see the log of hearth-web.",
        )
    })
}

/// Why a body was not stored.
#[derive(Debug)]
pub enum ReceiveError {
    /// The client stopped sending (or sent more than announced) after this many bytes.
    Length(u64),
    /// Nothing arrived for `BODY_IDLE` after this many bytes.
    Stalled(u64),
    DiskFull,
    Io(std::io::Error),
}

impl ReceiveError {
    fn explain(&self, size: u64) -> (StatusCode, String) {
        match self {
            ReceiveError::Length(got) => (
                StatusCode::BAD_REQUEST,
                format!("The upload had {got} bytes where {size} were announced; nothing was kept."),
            ),
            ReceiveError::Stalled(got) => (
                StatusCode::REQUEST_TIMEOUT,
                format!("The upload stalled after {got} of {size} bytes; nothing was kept."),
            ),
            ReceiveError::DiskFull => (
                StatusCode::INSUFFICIENT_STORAGE,
                "The box's disk filled up during the upload; nothing was kept. Ask the owner to free space."
                    .into(),
            ),
            ReceiveError::Io(e) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("The box could not store the file: {e}"),
            ),
        }
    }
}

impl From<std::io::Error> for ReceiveError {
    fn from(e: std::io::Error) -> Self {
        // ENOSPC and EDQUOT: the disk or the user's quota is full.
        if e.kind() == std::io::ErrorKind::StorageFull || e.raw_os_error() == Some(122) {
            ReceiveError::DiskFull
        } else {
            ReceiveError::Io(e)
        }
    }
}

/// Streams the body into a partial file, then fsync, rename into place, fsync the directory.
/// On any failure the partial file is removed.
pub async fn receive(
    body: Body,
    dir: &Path,
    token: &str,
    size: u64,
    idle: Duration,
) -> Result<(), ReceiveError> {
    let partial = dir
        .join(PARTIAL_DIR)
        .join(format!("{token}.{}", crate::session::random_token(6)));
    let result = write_partial(body, &partial, size, idle).await;
    let result = match result {
        Ok(()) => place(&partial, &dir.join(token)).await,
        Err(e) => Err(e),
    };
    if result.is_err() {
        let _ = tokio::fs::remove_file(&partial).await;
    }
    result
}

async fn write_partial(
    body: Body,
    partial: &Path,
    size: u64,
    idle: Duration,
) -> Result<(), ReceiveError> {
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o640)
        .open(partial)
        .await?;
    file.set_max_buf_size(READ_CHUNK);
    let mut body = body;
    let mut got: u64 = 0;
    loop {
        let Ok(frame) = tokio::time::timeout(idle, body.frame()).await else {
            return Err(ReceiveError::Stalled(got));
        };
        let Some(frame) = frame else { break };
        let Ok(frame) = frame else {
            return Err(ReceiveError::Length(got));
        };
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        got += data.len() as u64;
        if got > size {
            return Err(ReceiveError::Length(got));
        }
        file.write_all(&data).await?;
    }
    if got != size {
        return Err(ReceiveError::Length(got));
    }
    file.flush().await?;
    file.sync_all().await?;
    Ok(())
}

async fn place(partial: &Path, target: &Path) -> Result<(), ReceiveError> {
    let (partial, target) = (partial.to_path_buf(), target.to_path_buf());
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        if target.exists() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "a file for this slot exists already",
            ));
        }
        std::fs::rename(&partial, &target)?;
        std::fs::File::open(target.parent().unwrap_or(Path::new(".")))?.sync_all()
    })
    .await
    .map_err(|e| ReceiveError::Io(std::io::Error::other(e)))??;
    Ok(())
}

/// Bytes available to us and the filesystem's size.
fn free_space(dir: &Path) -> Option<(u64, u64)> {
    let st = nix::sys::statvfs::statvfs(dir).ok()?;
    let frag = st.fragment_size() as u64;
    Some((
        st.blocks_available() as u64 * frag,
        st.blocks() as u64 * frag,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `/dev/full` answers every write with ENOSPC: the disk-full path, without filling a disk.
    #[tokio::test]
    async fn a_full_disk_is_reported_as_such() {
        let mut f = tokio::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .await
            .unwrap();
        let e = f.write_all(&[0u8; 4096]).await;
        let e = match e {
            Err(e) => e,
            Ok(()) => f.flush().await.unwrap_err(),
        };
        assert!(matches!(ReceiveError::from(e), ReceiveError::DiskFull));
    }

    const IDLE: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn a_stalled_body_is_given_up_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(PARTIAL_DIR)).unwrap();
        // The other end stays open and silent.
        let (_quiet, reader) = tokio::io::duplex(64);
        let body = Body::from_stream(tokio_util::io::ReaderStream::new(reader));
        let token = "0123456789abcdef0123456789abcdef";
        let r = receive(body, dir.path(), token, 5, Duration::from_millis(200)).await;
        assert!(matches!(r, Err(ReceiveError::Stalled(0))), "{r:?}");
        assert_eq!(
            std::fs::read_dir(dir.path().join(PARTIAL_DIR))
                .unwrap()
                .count(),
            0
        );
    }

    #[tokio::test]
    async fn a_short_body_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(PARTIAL_DIR)).unwrap();
        let token = "0123456789abcdef0123456789abcdef";
        let r = receive(Body::from("abc"), dir.path(), token, 5, IDLE).await;
        assert!(matches!(r, Err(ReceiveError::Length(3))), "{r:?}");
        let r = receive(Body::from("abcdef"), dir.path(), token, 5, IDLE).await;
        assert!(matches!(r, Err(ReceiveError::Length(6))), "{r:?}");
        assert_eq!(
            std::fs::read_dir(dir.path().join(PARTIAL_DIR))
                .unwrap()
                .count(),
            0
        );
        assert!(!dir.path().join(token).exists());
        receive(Body::from("abcde"), dir.path(), token, 5, IDLE)
            .await
            .unwrap();
        assert_eq!(std::fs::read(dir.path().join(token)).unwrap(), b"abcde");
        let again = receive(Body::from("abcde"), dir.path(), token, 5, IDLE).await;
        assert!(again.is_err(), "a stored file is never replaced");
        assert_eq!(
            std::fs::read_dir(dir.path().join(PARTIAL_DIR))
                .unwrap()
                .count(),
            0
        );
    }
}
