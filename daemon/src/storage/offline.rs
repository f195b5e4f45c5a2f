//! Offline messages (XEP-0160): stored as serialised stanzas, oldest first, removed only after
//! they were handed to a session.

use super::{now_secs, Result, Storage, StorageError};
use rusqlite::params;

impl Storage {
    /// Stores a message for an account that has no session. Refused when the account's queue is
    /// full, so one chatty contact cannot fill the SD card.
    pub async fn store_offline(
        &self,
        username: &str,
        stanza: String,
        max_per_user: u32,
    ) -> Result<()> {
        let username = username.to_string();
        self.call(move |conn| {
            let count: i64 = conn.query_row(
                "SELECT count(*) FROM offline WHERE username = ?1",
                [&username],
                |r| r.get(0),
            )?;
            if count >= max_per_user as i64 {
                return Err(StorageError::Refused(format!(
                    "{username} has {count} offline messages waiting already"
                )));
            }
            conn.execute(
                "INSERT INTO offline (username, stored_at, stanza) VALUES (?1, ?2, ?3)",
                params![username, now_secs(), stanza],
            )?;
            Ok(())
        })
        .await
    }

    /// The waiting messages, oldest first, with their ids for `delete_offline`.
    pub async fn offline_messages(&self, username: &str) -> Result<Vec<(i64, i64, String)>> {
        let username = username.to_string();
        self.call(move |conn| {
            let mut st = conn.prepare(
                "SELECT id, stored_at, stanza FROM offline WHERE username = ?1 ORDER BY id",
            )?;
            let rows = st.query_map([&username], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    /// Removes delivered offline messages (ids up to and including `up_to`).
    pub async fn delete_offline(&self, username: &str, up_to: i64) -> Result<()> {
        let username = username.to_string();
        self.call(move |conn| {
            conn.execute(
                "DELETE FROM offline WHERE username = ?1 AND id <= ?2",
                params![username, up_to],
            )?;
            Ok(())
        })
        .await
    }

    pub async fn offline_count(&self, username: &str) -> Result<i64> {
        let username = username.to_string();
        self.call(move |conn| {
            Ok(conn.query_row(
                "SELECT count(*) FROM offline WHERE username = ?1",
                [&username],
                |r| r.get(0),
            )?)
        })
        .await
    }
}
