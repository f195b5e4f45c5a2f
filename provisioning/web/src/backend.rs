//! Every call from the pages into `hearthd` goes through here: accounts, invites, passwords, status.
//!
//! When `hearthd` runs, it is the one writer of the database, so requests go over its control
//! socket. Before it has ever run (first boot) or while it is stopped, the database is opened
//! directly through `hearthd::storage`, the same code the server uses. Reads that the control
//! protocol does not offer (password check, invite check) and web registration with an invite
//! use the database directly in both cases; SQLite's WAL and busy timeout make that safe.

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
        match hearthd::control::request(&config.control_socket, &req).await {
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

    pub async fn revoke_invite(&self, config: &Config, id: i64) -> Result<()> {
        if let Some(r) = self.via_control(config, Request::InviteRevoke { id }).await {
            return r.map(|_| ());
        }
        Ok(self.storage(config)?.revoke_invite(id).await?)
    }

    /// Why an invite token cannot be used, or `Ok` if it can.
    pub async fn check_invite(&self, config: &Config, token: &str) -> Result<()> {
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

    /// A consistent snapshot of the live database into `dest`.
    pub async fn snapshot(&self, config: &Config, dest: &Path) -> Result<()> {
        Ok(self.storage(config)?.backup_to(dest.to_path_buf()).await?)
    }

    /// Whether `hearthd` answers on its control socket.
    pub async fn hearthd_running(&self, config: &Config) -> bool {
        matches!(self.via_control(config, Request::Status).await, Some(Ok(_)))
    }
}
