//! Accounts and their SCRAM credentials. Passwords are never stored, only what RFC 5802 needs.

use super::{now_secs, Result, Storage, StorageError};
use crate::sasl::{ScramHash, StoredCredential};
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct UserInfo {
    pub username: String,
    pub created_at: i64,
    pub is_admin: bool,
}

fn hash_name(h: ScramHash) -> &'static str {
    h.name()
}

pub(super) fn insert_user(
    conn: &Connection,
    username: &str,
    creds: &[StoredCredential],
    admin: bool,
) -> Result<()> {
    let exists: bool = conn
        .query_row(
            "SELECT 1 FROM users WHERE username = ?1",
            [username],
            |_| Ok(true),
        )
        .optional()?
        .unwrap_or(false);
    if exists {
        return Err(StorageError::Conflict(format!(
            "the user name {username:?} is taken"
        )));
    }
    conn.execute(
        "INSERT INTO users (username, created_at, is_admin) VALUES (?1, ?2, ?3)",
        params![username, now_secs(), admin],
    )?;
    write_credentials(conn, username, creds)
}

fn write_credentials(conn: &Connection, username: &str, creds: &[StoredCredential]) -> Result<()> {
    conn.execute(
        "DELETE FROM scram_credentials WHERE username = ?1",
        [username],
    )?;
    for c in creds {
        conn.execute(
            "INSERT INTO scram_credentials (username, hash, salt, iterations, stored_key, server_key)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![username, hash_name(c.hash), c.salt, c.iterations, c.stored_key, c.server_key],
        )?;
    }
    Ok(())
}

/// Derives the credentials for every SCRAM hash we offer. PBKDF2 is deliberately slow, so this
/// runs on a blocking thread, never on the storage thread or an async worker.
pub async fn derive_credentials(
    password: String,
    iterations: u32,
) -> Result<Vec<StoredCredential>> {
    tokio::task::spawn_blocking(move || {
        [ScramHash::Sha256, ScramHash::Sha1]
            .into_iter()
            .map(|h| {
                StoredCredential::derive(h, &password, iterations)
                    .map_err(|e| StorageError::Refused(e.to_string()))
            })
            .collect()
    })
    .await
    .map_err(|e| StorageError::Unavailable(e.to_string()))?
}

impl Storage {
    /// Creates an account; `Conflict` if the name is taken.
    pub async fn create_user(
        &self,
        username: &str,
        password: &str,
        iterations: u32,
        admin: bool,
    ) -> Result<()> {
        let creds = derive_credentials(password.to_string(), iterations).await?;
        self.create_user_with_credentials(username, creds, admin)
            .await
    }

    /// Creates an account from credentials made elsewhere (a `password_hash` in the preseed): the
    /// password never reaches the box.
    pub async fn create_user_with_credentials(
        &self,
        username: &str,
        creds: Vec<StoredCredential>,
        admin: bool,
    ) -> Result<()> {
        let username = username.to_string();
        self.call(move |conn| insert_user(conn, &username, &creds, admin))
            .await
    }

    pub async fn set_password(
        &self,
        username: &str,
        password: &str,
        iterations: u32,
    ) -> Result<()> {
        let creds = derive_credentials(password.to_string(), iterations).await?;
        self.set_credentials(username, creds).await
    }

    /// Replaces an account's credentials with ones made elsewhere (see `create_user_with_credentials`).
    pub async fn set_credentials(
        &self,
        username: &str,
        creds: Vec<StoredCredential>,
    ) -> Result<()> {
        let username = username.to_string();
        self.call(move |conn| {
            if !user_exists(conn, &username)? {
                return Err(StorageError::NotFound(format!(
                    "there is no user {username:?}"
                )));
            }
            write_credentials(conn, &username, &creds)
        })
        .await
    }

    /// Removes an account and everything it owns (roster, offline messages, vCard, and by foreign
    /// key the tables of modules: PEP nodes, archive, blocklist).
    pub async fn delete_user(&self, username: &str) -> Result<()> {
        let username = username.to_string();
        self.call(move |conn| {
            let n = conn.execute("DELETE FROM users WHERE username = ?1", [&username])?;
            if n == 0 {
                return Err(StorageError::NotFound(format!(
                    "there is no user {username:?}"
                )));
            }
            // Others' roster entries pointing at the account stay: they are contacts like any
            // remote JID, and the owners decide whether to remove them.
            Ok(())
        })
        .await
    }

    pub async fn list_users(&self) -> Result<Vec<UserInfo>> {
        self.call(|conn| {
            let mut st =
                conn.prepare("SELECT username, created_at, is_admin FROM users ORDER BY username")?;
            let rows = st.query_map([], |r| {
                Ok(UserInfo {
                    username: r.get(0)?,
                    created_at: r.get(1)?,
                    is_admin: r.get(2)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    pub async fn user_exists(&self, username: &str) -> Result<bool> {
        let username = username.to_string();
        self.call(move |conn| user_exists(conn, &username)).await
    }

    pub async fn user_info(&self, username: &str) -> Result<Option<UserInfo>> {
        let username = username.to_string();
        self.call(move |conn| {
            Ok(conn
                .query_row(
                    "SELECT username, created_at, is_admin FROM users WHERE username = ?1",
                    [&username],
                    |r| {
                        Ok(UserInfo {
                            username: r.get(0)?,
                            created_at: r.get(1)?,
                            is_admin: r.get(2)?,
                        })
                    },
                )
                .optional()?)
        })
        .await
    }

    /// The stored SCRAM credential for one hash, if the account exists.
    pub async fn credential(
        &self,
        username: &str,
        hash: ScramHash,
    ) -> Result<Option<StoredCredential>> {
        let username = username.to_string();
        self.call(move |conn| {
            Ok(conn
                .query_row(
                    "SELECT salt, iterations, stored_key, server_key FROM scram_credentials WHERE username = ?1 AND hash = ?2",
                    params![username, hash_name(hash)],
                    |r| {
                        Ok(StoredCredential {
                            hash,
                            salt: r.get(0)?,
                            iterations: r.get(1)?,
                            stored_key: r.get(2)?,
                            server_key: r.get(3)?,
                        })
                    },
                )
                .optional()?)
        })
        .await
    }
}

/// Whether the account exists (on any connection, e.g. a read-only one).
pub fn user_exists(conn: &Connection, username: &str) -> Result<bool> {
    Ok(conn
        .query_row(
            "SELECT 1 FROM users WHERE username = ?1",
            [username],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}
