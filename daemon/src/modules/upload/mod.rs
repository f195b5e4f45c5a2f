//! XEP-0363: HTTP File Upload. An account asks the server for a slot (file name, size, type);
//! after checking the size, the account's quota and its daily limit, the server answers with a
//! PUT and a GET URL under `https://DOMAIN/upload/`, signed with the shared secret as Prosody's
//! `mod_http_upload_external` does (`signed.rs`). `hearth-web` serves those URLs on port 443: it
//! checks the signature, asks us over the control socket whether the slot is still open
//! (`control.rs`), streams the body to disk and tells us when the file is complete. Files expire
//! after `file_lifetime_secs`; a job here deletes them and their rows (`store.rs`).
//!
//! The service is the server's own domain (identity `store/file`), so clients find it without a
//! component, and it is shown in disco exactly when `[modules.upload] enabled` is true.

pub mod control;
pub mod signed;
pub mod store;

use super::{IqFuture, IqRequest, Module};
use crate::config::Config;
use crate::hooks::{DiscoInfo, DiscoTarget, Identity, IqKind, IqRoute, IqTarget};
use crate::server::Server;
use crate::stanza::StanzaError;
use crate::storage::now_secs;
use crate::xml::Element;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;
use store::{Limits, NewSlot, Refusal};

pub const NS: &str = "urn:xmpp:http:upload:0";
const DATA_FORMS: &str = "jabber:x:data";
/// Rows the cleanup job deletes per writer job.
const CLEANUP_BATCH: usize = 200;
/// Unfinished upload files (`.partial/`) older than this are removed by the cleanup job.
const PARTIAL_MAX_AGE: Duration = Duration::from_secs(86_400);
/// The directory under the uploads directory where `hearth-web` receives bodies.
pub const PARTIAL_DIR: &str = ".partial";

/// `[modules.upload]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UploadConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Where slot URLs point, ending in `/`; default `https://DOMAIN/upload/` (hearth-web).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Files, named by their slot's token; default `DATA_DIR/uploads`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<PathBuf>,
    /// The HMAC secret shared with the web server; made on first start when missing. Default
    /// `DATA_DIR/upload.secret`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<PathBuf>,
    #[serde(default = "default_max_file_size")]
    pub max_file_size: u64,
    #[serde(default = "default_quota")]
    pub quota_per_account: u64,
    #[serde(default = "default_daily")]
    pub daily_per_account: u64,
    #[serde(default = "default_file_lifetime")]
    pub file_lifetime_secs: i64,
    #[serde(default = "default_slot_lifetime")]
    pub slot_lifetime_secs: i64,
    #[serde(default = "default_cleanup_every")]
    pub cleanup_every_secs: u64,
}

fn yes() -> bool {
    true
}
fn default_max_file_size() -> u64 {
    100 * 1024 * 1024
}
fn default_quota() -> u64 {
    1024 * 1024 * 1024
}
fn default_daily() -> u64 {
    512 * 1024 * 1024
}
fn default_file_lifetime() -> i64 {
    30 * 86_400
}
fn default_slot_lifetime() -> i64 {
    300
}
fn default_cleanup_every() -> u64 {
    3600
}

impl Default for UploadConfig {
    fn default() -> Self {
        UploadConfig {
            enabled: true,
            url: None,
            dir: None,
            secret_file: None,
            max_file_size: default_max_file_size(),
            quota_per_account: default_quota(),
            daily_per_account: default_daily(),
            file_lifetime_secs: default_file_lifetime(),
            slot_lifetime_secs: default_slot_lifetime(),
            cleanup_every_secs: default_cleanup_every(),
        }
    }
}

impl UploadConfig {
    pub fn check(&self) -> Result<(), String> {
        if let Some(u) = &self.url {
            if !(u.starts_with("https://") || u.starts_with("http://")) || !u.ends_with('/') {
                return Err(format!(
                    "modules.upload.url {u:?} must start with https:// and end with /"
                ));
            }
        }
        if self.file_lifetime_secs < 1 || self.slot_lifetime_secs < 1 {
            return Err(
                "modules.upload.file_lifetime_secs and slot_lifetime_secs must be at least 1"
                    .into(),
            );
        }
        if self.cleanup_every_secs < 1 {
            return Err("modules.upload.cleanup_every_secs must be at least 1".into());
        }
        Ok(())
    }
    pub fn base_url(&self, domain: &str) -> String {
        self.url
            .clone()
            .unwrap_or_else(|| format!("https://{domain}/upload/"))
    }
    pub fn dir(&self, config: &Config) -> PathBuf {
        self.dir
            .clone()
            .unwrap_or_else(|| config.data_dir.join("uploads"))
    }
    pub fn secret_path(&self, config: &Config) -> PathBuf {
        self.secret_file
            .clone()
            .unwrap_or_else(|| config.data_dir.join("upload.secret"))
    }
    pub fn limits(&self) -> Limits {
        Limits {
            max_file_size: self.max_file_size,
            quota_per_account: self.quota_per_account,
            daily_per_account: self.daily_per_account,
            file_lifetime_secs: self.file_lifetime_secs,
        }
    }
}

/// The shared secret: the file's text, trimmed (what one would put in Prosody's config too).
pub fn read_secret(path: &Path) -> std::io::Result<Vec<u8>> {
    let text = std::fs::read_to_string(path)?;
    let s = text.trim();
    if s.len() < 16 {
        return Err(std::io::Error::other(format!(
            "{} holds no usable secret (at least 16 characters)",
            path.display()
        )));
    }
    Ok(s.as_bytes().to_vec())
}

/// Makes the uploads directory (group-writable and setgid, so the web server in group `hearth`
/// can write and we can delete) and the secret (readable by the group) when they are missing.
pub fn prepare(config: &Config) -> Result<Vec<u8>, String> {
    use std::os::unix::fs::PermissionsExt;
    let up = &config.modules.upload;
    let dir = up.dir(config);
    for d in [dir.clone(), dir.join(PARTIAL_DIR)] {
        if !d.exists() {
            std::fs::create_dir_all(&d)
                .map_err(|e| format!("cannot create {}: {e}", d.display()))?;
            let _ = std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o2770));
        }
    }
    let path = up.secret_path(config);
    if !path.exists() {
        let mut raw = [0u8; 32];
        getrandom::getrandom(&mut raw).map_err(|e| format!("no randomness for the secret: {e}"))?;
        let text: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        crate::fsutil::write_atomically(&path, format!("{text}\n").as_bytes(), 0o640)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    read_secret(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

pub struct Upload {
    config: UploadConfig,
    secret: OnceLock<Vec<u8>>,
    /// The limits last read from the database, for the disco form (which cannot wait for it).
    current: Arc<RwLock<Limits>>,
}

impl Upload {
    pub fn new(config: &UploadConfig) -> Upload {
        Upload {
            config: config.clone(),
            secret: OnceLock::new(),
            current: Arc::new(RwLock::new(config.limits())),
        }
    }

    async fn limits(&self, server: &Server) -> Result<Limits, StanzaError> {
        let defaults = self.config.limits();
        let l = server
            .storage
            .read(move |c| store::limits(c, defaults))
            .await
            .map_err(|e| {
                log::error!("upload: cannot read the limits: {e}");
                StanzaError::internal()
            })?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = l;
        Ok(l)
    }

    async fn slot(&self, req: &IqRequest<'_>) -> Result<Element, StanzaError> {
        let p = req.payload;
        let bad = |t: &str| StanzaError::bad_request().with_text(t.to_string());
        let name = p
            .attr("filename")
            .ok_or_else(|| bad("the request needs a filename"))?;
        let size: u64 = p
            .attr("size")
            .and_then(|s| s.parse().ok())
            .filter(|s| *s > 0)
            .ok_or_else(|| bad("the request needs a size in bytes, greater than 0"))?;
        let content_type = p
            .attr("content-type")
            .filter(|t| !t.is_empty())
            .unwrap_or("application/octet-stream")
            .to_ascii_lowercase();
        if !signed::valid_content_type(&content_type) {
            return Err(bad("the content-type is not a plain type/subtype"));
        }
        let secret = self.secret.get().ok_or_else(|| {
            StanzaError::internal()
                .with_text("the upload service has no secret; see the server log")
        })?;
        let limits = self.limits(req.server).await?;
        let token = signed::new_token().ok_or_else(StanzaError::internal)?;
        let path = signed::FilePath {
            token,
            name: signed::clean_name(name),
        };
        let now = now_secs();
        let slot = NewSlot {
            token: path.token.clone(),
            owner: req.from.local.clone().unwrap_or_default(),
            name: path.name.clone(),
            size,
            content_type: content_type.clone(),
            slot_expires: now + self.config.slot_lifetime_secs,
            file_expires: now + limits.file_lifetime_secs,
        };
        let outcome = req
            .server
            .storage
            .call(move |c| store::create_slot(c, &slot, &limits, now))
            .await
            .map_err(|e| {
                log::error!("upload: cannot record a slot: {e}");
                StanzaError::internal()
            })?;
        if let Err(r) = outcome {
            return Err(refusal_error(&r));
        }
        let base = self.config.base_url(&req.server.config.domain);
        let get = format!("{base}{}", path.url_part());
        let mac = signed::mac_v2(secret, &path, size, &content_type);
        Ok(Element::new("slot", NS)
            .with_child(Element::new("put", NS).with_attr("url", format!("{get}?v2={mac}")))
            .with_child(Element::new("get", NS).with_attr("url", get)))
    }
}

/// XEP-0363 §5's errors, with a sentence a person can act on.
fn refusal_error(r: &Refusal) -> StanzaError {
    match r {
        Refusal::TooLarge { max } => StanzaError::new("modify", "not-acceptable")
            .with_app_condition("file-too-large", NS)
            .with_text(format!(
                "The file is too large: this server takes files up to {}.",
                human(*max)
            )),
        Refusal::Quota { quota, held } => StanzaError::new("wait", "resource-constraint")
            .with_text(format!(
                "Your upload space is full: you have {} of {} in files that have not expired yet. \
                 Older files expire and free space by themselves.",
                human(*held),
                human(*quota)
            )),
        Refusal::Daily {
            daily,
            used,
            next_at,
        } => StanzaError::new("wait", "resource-constraint").with_text(format!(
            "You have uploaded {} in the last 24 hours; the daily limit is {}. \
             Try again after {}.",
            human(*used),
            human(*daily),
            crate::timefmt::xep0082(*next_at)
        )),
    }
}

/// Sizes for people: 100 MiB, 3.5 KiB, 12 bytes.
pub fn human(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} bytes");
    }
    let mut v = n as f64 / 1024.0;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if v.fract() < 0.05 {
        format!("{v:.0} {}", UNITS[i])
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

impl Module for Upload {
    fn name(&self) -> &'static str {
        "upload"
    }
    fn migrations(&self) -> &'static [&'static str] {
        store::MIGRATIONS
    }
    fn disco_info(&self, _server: &Server, target: DiscoTarget, info: &mut DiscoInfo) {
        if target != DiscoTarget::Server || self.secret.get().is_none() {
            return;
        }
        info.identities.push(Identity {
            category: "store",
            kind: "file",
            name: Some("HTTP File Upload"),
        });
        info.feature(NS);
        let max = self
            .current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .max_file_size;
        let field = |var: &str, value: String| {
            Element::new("field", DATA_FORMS)
                .with_attr("var", var)
                .with_child(Element::new("value", DATA_FORMS).with_text(value))
        };
        info.forms.push(
            Element::new("x", DATA_FORMS)
                .with_attr("type", "result")
                .with_child(field("FORM_TYPE", NS.to_string()).with_attr("type", "hidden"))
                .with_child(field("max-file-size", max.to_string())),
        );
    }
    fn iqs(&self) -> &'static [IqRoute] {
        const ROUTES: &[IqRoute] = &[IqRoute::new(IqKind::Get, &[IqTarget::Server], NS)];
        ROUTES
    }
    fn handle_iq<'a>(&'a self, req: IqRequest<'a>) -> IqFuture<'a> {
        Box::pin(async move {
            if !req.payload.is("request", NS) || req.from.local.is_none() {
                return Err(StanzaError::bad_request());
            }
            self.slot(&req).await.map(Some)
        })
    }
    fn start(&self, server: &Arc<Server>) {
        match prepare(&server.config) {
            Ok(secret) => {
                let _ = self.secret.set(secret);
            }
            Err(e) => {
                log::error!("upload: the service is off: {e}");
                return;
            }
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let weak = Arc::downgrade(server);
        let mut shutdown = server.shutdown_signal();
        let every = Duration::from_secs(self.config.cleanup_every_secs);
        let defaults = self.config.limits();
        let current = self.current.clone();
        runtime.spawn(async move {
            loop {
                let Some(server) = weak.upgrade() else { return };
                // The admin pages may have changed the limits; the disco form follows.
                if let Ok(l) = server
                    .storage
                    .read(move |c| store::limits(c, defaults))
                    .await
                {
                    *current.write().unwrap_or_else(|p| p.into_inner()) = l;
                }
                match cleanup(&server.config, &server.storage, now_secs()).await {
                    Ok(0) => {}
                    Ok(n) => log::info!("upload: removed {n} expired files and slots"),
                    Err(e) => log::error!("upload: cleanup failed: {e}"),
                }
                drop(server);
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = shutdown.changed() => return,
                }
            }
        });
    }
}

/// Deletes what has expired: rows first (so nothing is served any more), then their files,
/// then unfinished uploads left by a web server that stopped mid-way. Returns rows deleted.
pub async fn cleanup(
    config: &Config,
    storage: &crate::storage::Storage,
    now: i64,
) -> Result<usize, crate::storage::StorageError> {
    let dir = config.modules.upload.dir(config);
    let mut total = 0;
    loop {
        let tokens = storage
            .call(move |c| store::take_expired(c, now, CLEANUP_BATCH))
            .await?;
        for t in &tokens {
            if signed::is_token(t) {
                match std::fs::remove_file(dir.join(t)) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => log::warn!("upload: cannot remove {}: {e}", dir.join(t).display()),
                }
            }
        }
        total += tokens.len();
        if tokens.len() < CLEANUP_BATCH {
            break;
        }
    }
    if let Ok(entries) = std::fs::read_dir(dir.join(PARTIAL_DIR)) {
        for e in entries.flatten() {
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > PARTIAL_MAX_AGE);
            if old {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests;
