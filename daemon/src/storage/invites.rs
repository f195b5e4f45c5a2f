//! Invites (XEP-0401 style): a random token, stored only as its SHA-256, with a use count and an
//! expiry. Redeeming one and creating the account happen in one transaction, so a token can never
//! make two accounts more than it allows, and a failed registration does not burn it.

use super::accounts::insert_user;
use super::{now_secs, Result, Storage, StorageError};
use crate::sasl::StoredCredential;
use base64::Engine;
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct InviteInfo {
    pub id: i64,
    pub created_at: i64,
    pub expires_at: i64,
    pub uses_left: i64,
    pub uses_total: i64,
    pub note: String,
    pub revoked: bool,
}

impl InviteInfo {
    pub fn is_usable(&self, now: i64) -> bool {
        !self.revoked && self.uses_left > 0 && self.expires_at > now
    }
}

/// A new invite: the token exists only here and in what is shown to the admin.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewInvite {
    pub id: i64,
    pub token: String,
    pub expires_at: i64,
    pub uses: i64,
}

fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// 18 random bytes: 144 bits, URL-safe base64 without padding (24 characters).
fn new_token() -> Result<String> {
    let mut bytes = [0u8; 18];
    getrandom::getrandom(&mut bytes)
        .map_err(|e| StorageError::Unavailable(format!("no randomness: {e}")))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// Finds a usable invite by token; explains why not when it is unusable.
fn find_usable(conn: &Connection, token: &str) -> Result<i64> {
    let row: Option<(i64, i64, i64, bool)> = conn
        .query_row(
            "SELECT id, expires_at, uses_left, revoked FROM invites WHERE token_hash = ?1",
            [token_hash(token)],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()?;
    match row {
        None => Err(StorageError::Refused("this invite is not valid".into())),
        Some((_, _, _, true)) => Err(StorageError::Refused("this invite was revoked".into())),
        Some((_, exp, _, _)) if exp <= now_secs() => {
            Err(StorageError::Refused("this invite has expired".into()))
        }
        Some((_, _, left, _)) if left <= 0 => Err(StorageError::Refused(
            "this invite has been used already".into(),
        )),
        Some((id, ..)) => Ok(id),
    }
}

impl Storage {
    pub async fn create_invite(&self, uses: u32, valid_secs: i64, note: &str) -> Result<NewInvite> {
        if uses == 0 {
            return Err(StorageError::Refused(
                "an invite must allow at least one use".into(),
            ));
        }
        let token = new_token()?;
        let note = note.to_string();
        self.call(move |conn| {
            let now = now_secs();
            let expires_at = now.saturating_add(valid_secs);
            conn.execute(
                "INSERT INTO invites (token_hash, created_at, expires_at, uses_left, uses_total, note) VALUES (?1, ?2, ?3, ?4, ?4, ?5)",
                params![token_hash(&token), now, expires_at, uses, note],
            )?;
            Ok(NewInvite { id: conn.last_insert_rowid(), token, expires_at, uses: uses as i64 })
        })
        .await
    }

    pub async fn list_invites(&self) -> Result<Vec<InviteInfo>> {
        self.call(|conn| {
            let mut st = conn.prepare(
                "SELECT id, created_at, expires_at, uses_left, uses_total, note, revoked FROM invites ORDER BY id",
            )?;
            let rows = st.query_map([], |r| {
                Ok(InviteInfo {
                    id: r.get(0)?,
                    created_at: r.get(1)?,
                    expires_at: r.get(2)?,
                    uses_left: r.get(3)?,
                    uses_total: r.get(4)?,
                    note: r.get(5)?,
                    revoked: r.get(6)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    pub async fn revoke_invite(&self, id: i64) -> Result<()> {
        self.call(move |conn| {
            match conn.execute("UPDATE invites SET revoked = 1 WHERE id = ?1", [id])? {
                0 => Err(StorageError::NotFound(format!("there is no invite {id}"))),
                _ => Ok(()),
            }
        })
        .await
    }

    /// Whether a token would be accepted now (for landing pages; redeeming checks again).
    pub async fn check_invite(&self, token: &str) -> Result<()> {
        let token = token.to_string();
        self.call(move |conn| find_usable(conn, &token).map(|_| ()))
            .await
    }

    /// Creates the account and uses up one use of the invite, atomically.
    pub async fn register_with_invite(
        &self,
        token: &str,
        username: &str,
        creds: Vec<StoredCredential>,
    ) -> Result<()> {
        let (token, username) = (token.to_string(), username.to_string());
        self.call(move |conn| {
            let id = find_usable(conn, &token)?;
            insert_user(conn, &username, &creds, false)?;
            conn.execute(
                "UPDATE invites SET uses_left = uses_left - 1 WHERE id = ?1",
                [id],
            )?;
            Ok(())
        })
        .await
    }

    /// Creates an account without an invite (open registration, admin tools).
    pub async fn register(
        &self,
        username: &str,
        creds: Vec<StoredCredential>,
        admin: bool,
    ) -> Result<()> {
        let username = username.to_string();
        self.call(move |conn| insert_user(conn, &username, &creds, admin))
            .await
    }
}
