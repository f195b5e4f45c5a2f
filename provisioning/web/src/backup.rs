//! Backup and restore: one tar archive holding a consistent SQLite snapshot (accounts, rosters,
//! offline messages, invites), the config, and the certificate with its key.
//!
//! Restore works on a fresh box (from the wizard, the "my SD card died" path) and on a set-up box.
//! It checks everything in a staging directory first and writes the config last, so a bad archive
//! or a power cut never leaves a half-restored box. While the chat server runs, it is the one that
//! copies the database in (control socket `restore`) and closes every session; otherwise no process
//! has the database open and hearth-web installs it itself.

use crate::app::{message_link, render_status, see_other, AppState};
use crate::forms::Errors;
use crate::session::{csrf_ok, expired, Session};
use crate::templates::{BackupPage, RestorePage};
use axum::extract::multipart::{Multipart, MultipartRejection};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use hearthd::config::Config;
use hearthd::control::RESTORE_STAGING;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Written into every archive; restore refuses archives of another format.
const FORMAT: &str = "hearth-backup-1";
/// The only members restore reads; anything else in the archive is ignored (no path tricks).
const DB: &str = "hearth.sqlite";
const CONFIG: &str = "hearth.toml";
const CERT: &str = "certs/fullchain.pem";
const KEY: &str = "certs/privkey.pem";
const MANIFEST: &str = "manifest.json";

fn now() -> i64 {
    crate::admin::now()
}

// ---- making a backup ----

pub async fn admin_page(
    State(app): State<Arc<AppState>>,
    Extension(session): Extension<Session>,
) -> Response {
    if let Err(r) = crate::admin::require(&app, &session) {
        return r;
    }
    let flash = crate::admin::flash(&app, &session);
    render_status(
        StatusCode::OK,
        &BackupPage {
            title: "Backup",
            nav: "backup",
            csrf: session.data.csrf,
            flash,
            errors: Errors::new(),
        },
    )
}

pub async fn admin_download(
    State(app): State<Arc<AppState>>,
    form: crate::session::PostForm,
) -> Response {
    let (_, config) = match crate::admin::require(&app, &form.session) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let staging = app
        .args
        .state_dir
        .join(format!(".backup-{}", crate::session::random_token(6)));
    let result = async {
        std::fs::create_dir_all(&staging)
            .map_err(|e| format!("cannot create {}: {e}", staging.display()))?;
        app.backend
            .snapshot(&config, &staging.join(DB))
            .await
            .map_err(|e| e.to_string())?;
        let (config_path, staging2, cfg) =
            (app.args.config.clone(), staging.clone(), config.clone());
        tokio::task::spawn_blocking(move || archive(&cfg, &config_path, &staging2.join(DB)))
            .await
            .map_err(|e| e.to_string())?
    }
    .await;
    let _ = std::fs::remove_dir_all(&staging);
    match result {
        Ok(bytes) => {
            log::info!("backup downloaded ({} bytes)", bytes.len());
            let name = format!(
                "hearth-backup-{}-{}.tar",
                config.domain,
                crate::certinfo::date(now())
            );
            (
                [
                    (header::CONTENT_TYPE, "application/x-tar".to_string()),
                    (
                        header::CONTENT_DISPOSITION,
                        format!("attachment; filename=\"{name}\""),
                    ),
                ],
                bytes,
            )
                .into_response()
        }
        Err(e) => {
            log::error!("backup failed: {e}");
            crate::admin::set_flash(
                &app,
                &form.session,
                format!("The backup could not be made: {e}"),
            );
            see_other("/admin/backup")
        }
    }
}

/// Builds the archive in memory: a home box's database is a few megabytes.
fn archive(config: &Config, config_path: &Path, snapshot: &Path) -> Result<Vec<u8>, String> {
    let mut b = tar::Builder::new(Vec::new());
    let manifest =
        serde_json::json!({ "format": FORMAT, "domain": config.domain, "created": now() });
    let mut add = |name: &str, data: &[u8]| -> Result<(), String> {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o600);
        h.set_mtime(now().max(0) as u64);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, name, data)
            .map_err(|e| format!("cannot write the archive: {e}"))
    };
    add(MANIFEST, manifest.to_string().as_bytes())?;
    let read = |p: &Path| std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()));
    add(CONFIG, &read(config_path)?)?;
    add(DB, &read(snapshot)?)?;
    if let (Ok(c), Ok(k)) = (
        std::fs::read(&config.tls.cert),
        std::fs::read(&config.tls.key),
    ) {
        add(CERT, &c)?;
        add(KEY, &k)?;
    }
    b.into_inner()
        .map_err(|e| format!("cannot finish the archive: {e}"))
}

// ---- restoring ----

/// Receives the multipart upload into a file, checking the CSRF field (which the form sends
/// first) before accepting any file data.
async fn receive(
    session: &Session,
    multipart: Result<Multipart, MultipartRejection>,
    dir: &Path,
) -> Result<PathBuf, Result<String, Response>> {
    let mut mp =
        multipart.map_err(|_| Ok("Choose the backup file, then press Restore.".to_string()))?;
    let mut csrf_seen = false;
    let broke =
        |_| Ok("The upload broke off, or the file is larger than 1 GB. Try again.".to_string());
    while let Some(mut field) = mp.next_field().await.map_err(broke)? {
        match field.name() {
            Some("csrf") => {
                let v = field.text().await.map_err(broke)?;
                if !csrf_ok(session, &v) {
                    return Err(Err(expired()));
                }
                csrf_seen = true;
            }
            Some("archive") if csrf_seen => {
                std::fs::create_dir_all(dir)
                    .map_err(|e| Ok(format!("The box cannot store the upload: {e}")))?;
                let path = dir.join(format!(".upload-{}.tar", crate::session::random_token(6)));
                let mut file = std::fs::File::create(&path)
                    .map_err(|e| Ok(format!("The box cannot store the upload: {e}")))?;
                let mut size = 0u64;
                while let Some(chunk) = field.chunk().await.map_err(broke)? {
                    size += chunk.len() as u64;
                    file.write_all(&chunk)
                        .map_err(|e| Ok(format!("The box cannot store the upload: {e}")))?;
                }
                if size == 0 {
                    let _ = std::fs::remove_file(&path);
                    return Err(Ok("Choose the backup file, then press Restore.".into()));
                }
                return Ok(path);
            }
            _ if !csrf_seen => return Err(Err(expired())),
            _ => {}
        }
    }
    Err(if csrf_seen {
        Ok("Choose the backup file, then press Restore.".into())
    } else {
        Err(expired())
    })
}

/// What a successful restore brought back.
pub struct Restored {
    pub config: Config,
    pub users: i64,
}

/// Who puts the backup's database in place: `hearth-web` itself when no server runs (the wizard on
/// a fresh box, or the admin pages while hearthd is stopped), else the running `hearthd`, the one
/// owner of the database while it runs, through its control socket.
pub enum Installer<'a> {
    Direct,
    Hearthd(&'a crate::backend::Backend, &'a Config),
}

/// Unpacks, checks, and installs an archive; see the module comment for the order.
pub async fn restore(
    archive: &Path,
    data_dir: &Path,
    config_path: &Path,
    installer: Installer<'_>,
) -> Result<Restored, String> {
    let staging = data_dir.join(RESTORE_STAGING);
    let result = restore_via(archive, &staging, data_dir, config_path, installer).await;
    let _ = std::fs::remove_dir_all(&staging);
    result
}

async fn restore_via(
    archive: &Path,
    staging: &Path,
    data_dir: &Path,
    config_path: &Path,
    installer: Installer<'_>,
) -> Result<Restored, String> {
    let (a, st) = (archive.to_path_buf(), staging.to_path_buf());
    let (config, users) = tokio::task::spawn_blocking(move || stage(&a, &st))
        .await
        .map_err(|e| e.to_string())??;
    let staged_db = staging.join(DB);
    match installer {
        Installer::Direct => {
            let live = data_dir.join(DB);
            tokio::task::spawn_blocking(move || {
                hearthd::storage::restore::install_database(&staged_db, &live)
            })
            .await
            .map_err(|e| e.to_string())??;
        }
        Installer::Hearthd(backend, running) => {
            if config.domain != running.domain {
                return Err(format!(
                    "This backup is of {}, but this box runs {}. Restore it from the setup wizard of a fresh box instead.",
                    config.domain, running.domain
                ));
            }
            backend
                .restore(running, &staged_db)
                .await
                .map_err(|e| e.to_string())?;
        }
    }
    let (st, dd, cp) = (
        staging.to_path_buf(),
        data_dir.to_path_buf(),
        config_path.to_path_buf(),
    );
    let config = tokio::task::spawn_blocking(move || finish(&st, config, &dd, &cp))
        .await
        .map_err(|e| e.to_string())??;
    Ok(Restored { config, users })
}

/// Unpacks the archive into `staging` and checks it: manifest, config, database. Writes nothing else.
fn stage(archive: &Path, staging: &Path) -> Result<(Config, i64), String> {
    let _ = std::fs::remove_dir_all(staging);
    std::fs::create_dir_all(staging.join("certs"))
        .map_err(|e| format!("cannot create {}: {e}", staging.display()))?;
    let not_backup =
        "This file is not a Hearth backup (make one on the Backup page of the admin pages).";
    let file = std::fs::File::open(archive).map_err(|e| format!("cannot open the upload: {e}"))?;
    let mut tar = tar::Archive::new(file);
    let entries = tar.entries().map_err(|_| not_backup.to_string())?;
    for entry in entries {
        let mut entry = entry.map_err(|_| not_backup.to_string())?;
        let name = entry
            .path()
            .map_err(|_| not_backup.to_string())?
            .to_string_lossy()
            .into_owned();
        if [MANIFEST, CONFIG, DB, CERT, KEY].contains(&name.as_str())
            && entry.header().entry_type().is_file()
        {
            let mut out = std::fs::File::create(staging.join(&name))
                .map_err(|e| format!("cannot unpack: {e}"))?;
            std::io::copy(&mut entry, &mut out)
                .map_err(|_| "The backup file is damaged (it ends too early).".to_string())?;
        }
    }
    let manifest: serde_json::Value = std::fs::read(staging.join(MANIFEST))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| not_backup.to_string())?;
    if manifest["format"] != FORMAT {
        return Err(
            "This backup was made by a different version of Hearth and cannot be restored here."
                .into(),
        );
    }
    let text = std::fs::read_to_string(staging.join(CONFIG)).map_err(|_| not_backup.to_string())?;
    let config = Config::parse(&text, "the backup's hearth.toml")
        .map_err(|e| format!("The backup's settings are damaged: {e}"))?;
    let users = hearthd::storage::restore::check_database(&staging.join(DB))?;
    Ok((config, users))
}

/// After the database is in place: the certificate (or a new self-signed one) and, last, the config.
fn finish(
    staging: &Path,
    mut config: Config,
    data_dir: &Path,
    config_path: &Path,
) -> Result<Config, String> {
    // The restored box keeps its own places for files, whatever the old box used.
    let (cert, key) = hearthd::setup::cert_paths(data_dir);
    config.data_dir = data_dir.to_path_buf();
    config.tls.cert = cert.clone();
    config.tls.key = key.clone();
    std::fs::create_dir_all(data_dir.join("certs"))
        .map_err(|e| format!("cannot create {}: {e}", data_dir.display()))?;
    match (
        std::fs::read(staging.join(CERT)),
        std::fs::read(staging.join(KEY)),
    ) {
        (Ok(c), Ok(k)) => {
            hearthd::fsutil::write_atomically(&key, &k, 0o640)
                .map_err(|e| format!("cannot write {}: {e}", key.display()))?;
            hearthd::fsutil::write_atomically(&cert, &c, 0o644)
                .map_err(|e| format!("cannot write {}: {e}", cert.display()))?;
        }
        _ => {
            let pair = hearthd::certs::self_signed(&config.certificate_names())
                .map_err(|e| format!("cannot make a certificate: {e}"))?;
            hearthd::fsutil::write_atomically(&key, pair.key_pem.as_bytes(), 0o640)
                .map_err(|e| e.to_string())?;
            hearthd::fsutil::write_atomically(&cert, pair.cert_pem.as_bytes(), 0o644)
                .map_err(|e| e.to_string())?;
        }
    }
    if let Some(dir) = config_path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    config
        .write_atomically(config_path)
        .map_err(|e| e.to_string())?;
    Ok(config)
}

/// Restores an uploaded archive (wizard and admin page alike), removes the upload, and points
/// HTTPS at the restored certificate. `running` is hearthd's config when it answers.
async fn restore_upload(
    app: &AppState,
    upload: &Path,
    data_dir: PathBuf,
    running: Option<&Config>,
) -> Result<Restored, String> {
    let installer = match running {
        Some(c) => Installer::Hearthd(&app.backend, c),
        None => Installer::Direct,
    };
    let result = restore(upload, &data_dir, &app.args.config, installer).await;
    let _ = std::fs::remove_file(upload);
    if let Ok(r) = &result {
        log::info!(
            "restored a backup of {} with {} accounts",
            r.config.domain,
            r.users
        );
        app.tls
            .set_paths(r.config.tls.cert.clone(), r.config.tls.key.clone());
        if let Some(c) = running {
            // hearthd serves the restored certificate on new connections from now on.
            if let Err(e) = app.backend.reload_certs(c).await {
                log::warn!("hearthd did not reload the restored certificate: {e}");
            }
        }
    }
    result
}

pub async fn wizard_page(
    State(app): State<Arc<AppState>>,
    Extension(session): Extension<Session>,
) -> Response {
    if app.provisioned() {
        return crate::wizard::already_set_up();
    }
    if !session.data.setup_ok {
        return see_other("/setup");
    }
    render_status(
        StatusCode::OK,
        &RestorePage {
            title: "Restore",
            csrf: session.data.csrf,
            errors: Errors::new(),
        },
    )
}

pub async fn wizard_restore(
    State(app): State<Arc<AppState>>,
    Extension(session): Extension<Session>,
    multipart: Result<Multipart, MultipartRejection>,
) -> Response {
    if app.provisioned() {
        return crate::wizard::already_set_up();
    }
    if !session.data.setup_ok {
        return see_other("/setup");
    }
    let problem = |text: String| {
        let mut errors = Errors::new();
        errors.insert("archive", text);
        render_status(
            StatusCode::UNPROCESSABLE_ENTITY,
            &RestorePage {
                title: "Restore",
                csrf: session.data.csrf.clone(),
                errors,
            },
        )
    };
    let upload = match receive(&session, multipart, &app.args.state_dir).await {
        Ok(p) => p,
        Err(Ok(text)) => return problem(text),
        Err(Err(resp)) => return resp,
    };
    let _guard = app.wizard.lock().await;
    match restore_upload(&app, &upload, app.args.data_dir.clone(), None).await {
        Ok(r) => {
            crate::setup_code::retire(&app.args.state_dir, &app.args.boot_dir);
            *app.code.lock().unwrap_or_else(|p| p.into_inner()) = None;
            message_link(
                StatusCode::OK,
                "Backup restored",
                &format!(
                    "{} is back, with {} accounts. Sign in with an admin account from the backup.",
                    r.config.domain, r.users
                ),
                "/admin/login",
                "Sign in",
            )
        }
        Err(e) => problem(e),
    }
}

pub async fn admin_restore(
    State(app): State<Arc<AppState>>,
    Extension(session): Extension<Session>,
    multipart: Result<Multipart, MultipartRejection>,
) -> Response {
    let (_, config) = match crate::admin::require(&app, &session) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let problem = |text: String| {
        let mut errors = Errors::new();
        errors.insert("archive", text);
        let page = BackupPage {
            title: "Backup",
            nav: "backup",
            csrf: session.data.csrf.clone(),
            flash: None,
            errors,
        };
        render_status(StatusCode::UNPROCESSABLE_ENTITY, &page)
    };
    let upload = match receive(&session, multipart, &app.args.state_dir).await {
        Ok(p) => p,
        Err(Ok(text)) => return problem(text),
        Err(Err(resp)) => return resp,
    };
    // While hearthd runs it installs the database itself; stopped, nobody else has it open.
    let running = app.backend.hearthd_running(&config).await;
    app.backend.close();
    match restore_upload(
        &app,
        &upload,
        config.data_dir.clone(),
        running.then_some(&config),
    )
    .await
    {
        Ok(r) => {
            // The accounts may differ now: everybody signs in again.
            app.sessions.drop_admins();
            let settings = if running {
                " Settings from the backup (such as who may join) apply when the chat server next starts."
            } else {
                ""
            };
            message_link(
                StatusCode::OK,
                "Backup restored",
                &format!(
                    "{} is restored, with {} accounts. Everyone signs in again.{settings}",
                    r.config.domain, r.users
                ),
                "/admin/login",
                "Sign in",
            )
        }
        Err(e) => problem(e),
    }
}
