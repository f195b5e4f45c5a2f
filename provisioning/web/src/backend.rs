//! Every call from the pages into `hearthd` goes through here: accounts, invites, passwords, status.
//!
//! When `hearthd` runs, it is the one owner of the database: every request — accounts, invites,
//! the admin sign-in's password check, registration with an invite, backup snapshots and restores —
//! goes over its control socket, and hearth-web does not even keep the file open, so nothing the
//! server holds in memory can go stale behind its back. Only while no `hearthd` answers is the
//! database opened directly through `hearthd::storage`, the same code the server uses. That path is
//! needed: the box is not set up yet (hearthd starts only once the config exists, and the wizard's
//! restore brings the database), or hearthd is stopped or crashed, when the owner must still be able
//! to sign in, see that, and restore a backup.

use hearthd::config::Config;
use hearthd::control::Request;
use hearthd::sasl::{ScramHash, StoredCredential};
use hearthd::storage::{InviteInfo, Storage, StorageError, UserInfo};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// How long a new invite is valid.
pub const INVITE_VALID_SECS: i64 = 7 * 86_400;

/// A failure, phrased for the person at the page.
#[derive(Debug, Clone)]
pub struct BackendError(pub String);

impl std::fmt::Display for BackendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<StorageError> for BackendError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::Conflict(s) | StorageError::NotFound(s) | StorageError::Refused(s) => {
                BackendError(capitalize(&s))
            }
            other => BackendError(format!("The account database had a problem: {other}")),
        }
    }
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => format!("{}{}.", f.to_uppercase(), c.as_str().trim_end_matches('.')),
        None => String::new(),
    }
}

pub type Result<T> = std::result::Result<T, BackendError>;

/// A freshly made invite, with everything the pages show for it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Invite {
    pub id: i64,
    pub token: String,
    /// `xmpp:DOMAIN?register;preauth=TOKEN`, what clients such as Conversations understand.
    pub uri: String,
    /// `https://DOMAIN/invite/TOKEN`, the landing page for everyone else.
    pub url: String,
    pub expires_at: i64,
}

pub fn invite_uri(domain: &str, token: &str) -> String {
    format!("xmpp:{domain}?register;preauth={token}")
}

pub fn invite_url(domain: &str, token: &str) -> String {
    format!("https://{domain}/invite/{token}")
}

fn decode<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> Result<T> {
    serde_json::from_value(v).map_err(|e| {
        BackendError(format!(
            "The chat server sent an answer this page does not understand: {e}"
        ))
    })
}

/// Opens the database once and keeps it: the storage thread is cheap when idle.
#[derive(Default)]
pub struct Backend {
    db: Mutex<Option<(PathBuf, Storage)>>,
}

impl Backend {
    fn storage(&self, config: &Config) -> Result<Storage> {
        let path = config.database_path();
        let mut slot = self.db.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((p, s)) = slot.as_ref() {
            if *p == path {
                return Ok(s.clone());
            }
        }
        let s = Storage::open(&path).map_err(|e| {
            BackendError(format!(
                "Cannot open the account database {}: {e}",
                path.display()
            ))
        })?;
        *slot = Some((path, s.clone()));
        Ok(s)
    }

    /// Forget the open database (after a restore replaced the file).
    pub fn close(&self) {
        *self.db.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Sends a request to a running hearthd. `None` when it is not running (nothing listens on
    /// the socket): the caller then uses the database directly.
    async fn via_control(
        &self,
        config: &Config,
        req: Request,
    ) -> Option<Result<serde_json::Value>> {
        let answer = hearthd::control::request(&config.control_socket, &req).await;
        if answer.is_ok() {
            // hearthd owns the database now: let go of ours (a connection and a thread).
            self.close();
        }
        match answer {
            Ok(r) if r.ok => Some(Ok(r.data)),
            Ok(r) => Some(Err(BackendError(capitalize(
                &r.error.unwrap_or_else(|| "the chat server refused".into()),
            )))),
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::ConnectionRefused) => {
                None
            }
            Err(e) => Some(Err(BackendError(format!(
                "The chat server did not answer on {}: {e}",
                config.control_socket.display()
            )))),
        }
    }

    pub async fn users(&self, config: &Config) -> Result<Vec<UserInfo>> {
        if let Some(r) = self.via_control(config, Request::UserList).await {
            return r.and_then(decode);
        }
        Ok(self.storage(config)?.list_users().await?)
    }

    pub async fn add_user(
        &self,
        config: &Config,
        name: &str,
        password: &str,
        admin: bool,
    ) -> Result<()> {
        let req = Request::UserAdd {
            user: name.to_string(),
            password: password.to_string(),
            admin,
        };
        if let Some(r) = self.via_control(config, req).await {
            return r.map(|_| ());
        }
        Ok(self
            .storage(config)?
            .create_user(name, password, config.auth.scram_iterations, admin)
            .await?)
    }

    pub async fn set_password(&self, config: &Config, name: &str, password: &str) -> Result<()> {
        let req = Request::UserPasswd {
            user: name.to_string(),
            password: password.to_string(),
        };
        if let Some(r) = self.via_control(config, req).await {
            return r.map(|_| ());
        }
        Ok(self
            .storage(config)?
            .set_password(name, password, config.auth.scram_iterations)
            .await?)
    }

    /// Through hearthd when it runs, so the account's open sessions are closed too.
    pub async fn delete_user(&self, config: &Config, name: &str) -> Result<()> {
        if let Some(r) = self
            .via_control(
                config,
                Request::UserDel {
                    user: name.to_string(),
                },
            )
            .await
        {
            return r.map(|_| ());
        }
        Ok(self.storage(config)?.delete_user(name).await?)
    }

    /// Whether `name` is an admin whose password is `password`. PBKDF2 runs off the async workers.
    pub async fn check_admin(&self, config: &Config, name: &str, password: &str) -> Result<bool> {
        let req = Request::AdminCheck {
            user: name.to_string(),
            password: password.to_string(),
        };
        if let Some(r) = self.via_control(config, req).await {
            return r.map(|v| v["admin"] == serde_json::Value::Bool(true));
        }
        let db = self.storage(config)?;
        let Some(info) = db.user_info(name).await? else {
            return Ok(false);
        };
        let Some(cred) = db.credential(name, ScramHash::Sha256).await? else {
            return Ok(false);
        };
        let password = password.to_string();
        let ok = tokio::task::spawn_blocking(move || cred.verify_password(&password))
            .await
            .map_err(|e| BackendError(format!("password check failed: {e}")))?;
        Ok(ok && info.is_admin)
    }

    pub async fn create_invite(&self, config: &Config, note: &str) -> Result<Invite> {
        let req = Request::InviteCreate {
            uses: 1,
            expires_secs: INVITE_VALID_SECS,
            note: note.to_string(),
        };
        if let Some(r) = self.via_control(config, req).await {
            return r.and_then(decode);
        }
        let n = self
            .storage(config)?
            .create_invite(1, INVITE_VALID_SECS, note)
            .await?;
        Ok(Invite {
            id: n.id,
            uri: invite_uri(&config.domain, &n.token),
            url: invite_url(&config.domain, &n.token),
            token: n.token,
            expires_at: n.expires_at,
        })
    }

    pub async fn invites(&self, config: &Config) -> Result<Vec<InviteInfo>> {
        if let Some(r) = self.via_control(config, Request::InviteList).await {
            return r.and_then(decode);
        }
        Ok(self.storage(config)?.list_invites().await?)
    }

    /// Every group chat room (through hearthd when it runs).
    pub async fn rooms(
        &self,
        config: &Config,
    ) -> Result<Vec<hearthd::modules::muc::store::Listed>> {
        if let Some(r) = self.via_control(config, Request::RoomList).await {
            return r.and_then(decode);
        }
        hearthd::modules::muc::list_rooms(&self.storage(config)?)
            .await
            .map_err(BackendError)
    }

    /// Destroys a room: through hearthd when it runs, so its occupants are told.
    pub async fn destroy_room(&self, config: &Config, room: &str, reason: &str) -> Result<()> {
        let req = Request::RoomDestroy {
            room: room.to_string(),
            reason: reason.to_string(),
        };
        if let Some(r) = self.via_control(config, req).await {
            return r.map(|_| ());
        }
        let storage = self.storage(config)?;
        hearthd::modules::muc::destroy_room(None, &storage, config, room, reason)
            .await
            .map_err(|e| BackendError(capitalize(&e)))
    }

    pub async fn revoke_invite(&self, config: &Config, id: i64) -> Result<()> {
        if let Some(r) = self.via_control(config, Request::InviteRevoke { id }).await {
            return r.map(|_| ());
        }
        Ok(self.storage(config)?.revoke_invite(id).await?)
    }

    /// Why an invite token cannot be used, or `Ok` if it can.
    pub async fn check_invite(&self, config: &Config, token: &str) -> Result<()> {
        let req = Request::InviteCheck {
            token: token.to_string(),
        };
        if let Some(r) = self.via_control(config, req).await {
            return r.map(|_| ());
        }
        Ok(self.storage(config)?.check_invite(token).await?)
    }

    /// Registers an account with an invite, using up one of its uses (atomically in storage).
    pub async fn register_with_invite(
        &self,
        config: &Config,
        token: &str,
        name: &str,
        password: &str,
    ) -> Result<()> {
        let req = Request::InviteRegister {
            token: token.to_string(),
            user: name.to_string(),
            password: password.to_string(),
        };
        if let Some(r) = self.via_control(config, req).await {
            return r.map(|_| ());
        }
        let (password, iterations) = (password.to_string(), config.auth.scram_iterations);
        // Both hashes hearthd offers, derived off the async workers (PBKDF2 is slow on purpose).
        let creds = tokio::task::spawn_blocking(move || {
            [ScramHash::Sha256, ScramHash::Sha1]
                .into_iter()
                .map(|h| StoredCredential::derive(h, &password, iterations))
                .collect::<std::result::Result<Vec<_>, _>>()
        })
        .await
        .map_err(|e| BackendError(format!("password derivation failed: {e}")))?
        .map_err(|e| BackendError(format!("This password cannot be used: {}.", e.text())))?;
        Ok(self
            .storage(config)?
            .register_with_invite(token, name, creds)
            .await?)
    }

    /// A consistent snapshot of the live database into `dest`. A running hearthd writes it into the
    /// data directory (the one place both may write), from where it is moved to `dest`.
    pub async fn snapshot(&self, config: &Config, dest: &Path) -> Result<()> {
        let shared = config.data_dir.join(format!(
            ".backup-{}.sqlite",
            crate::session::random_token(6)
        ));
        let req = Request::Backup {
            dest: shared.clone(),
        };
        if let Some(r) = self.via_control(config, req).await {
            let moved = r.and_then(|_| {
                std::fs::rename(&shared, dest).map_err(|e| {
                    BackendError(format!(
                        "Cannot move the snapshot to {}: {e}",
                        dest.display()
                    ))
                })
            });
            let _ = std::fs::remove_file(&shared);
            return moved;
        }
        Ok(self.storage(config)?.backup_to(dest.to_path_buf()).await?)
    }

    /// Has the running hearthd copy the checked database `staged` into its own (see
    /// `backup::Installer`); every session is closed.
    pub async fn restore(&self, config: &Config, staged: &Path) -> Result<i64> {
        let req = Request::Restore {
            database: staged.to_path_buf(),
        };
        match self.via_control(config, req).await {
            Some(r) => r.map(|v| v["users"].as_i64().unwrap_or(0)),
            None => Err(BackendError(
                "The chat server stopped during the restore; reload the page and try again.".into(),
            )),
        }
    }

    /// Asks hearthd to serve the certificate on disk (after a restore replaced it).
    pub async fn reload_certs(&self, config: &Config) -> Result<()> {
        match self.via_control(config, Request::ReloadCerts).await {
            Some(r) => r.map(|_| ()),
            None => Ok(()),
        }
    }

    /// Whether `hearthd` answers on its control socket.
    pub async fn hearthd_running(&self, config: &Config) -> bool {
        matches!(self.via_control(config, Request::Status).await, Some(Ok(_)))
    }
}
