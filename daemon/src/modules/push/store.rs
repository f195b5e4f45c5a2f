//! The push registrations table: one row per (account, app server JID, node), with the
//! publish-options form the client gave. Removing the account removes its rows (foreign key).

use crate::storage::{now_secs, Storage, StorageError};
use rusqlite::params;

pub const MIGRATIONS: &[&str] = &["CREATE TABLE push_registrations (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        username    TEXT NOT NULL REFERENCES users(username) ON DELETE CASCADE,
        app_server  TEXT NOT NULL,
        node        TEXT NOT NULL,
        options     TEXT,
        enabled_at  INTEGER NOT NULL,
        UNIQUE (username, app_server, node)
     );"];

/// One enabled app server of an account.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Registration {
    /// The app server's JID, normalised.
    pub app_server: String,
    pub node: String,
    /// The XEP-0004 form to send as `<publish-options/>`, as XML.
    pub options: Option<String>,
}

/// Enables (or renews) a registration; it becomes the newest. When the account then has more
/// than `max`, the oldest ones go: a phone reinstalled many times leaves dead registrations
/// behind, and the newest is the one that works. Returns how many were dropped.
pub async fn enable(
    storage: &Storage,
    username: &str,
    reg: Registration,
    max: u32,
) -> Result<usize, StorageError> {
    let username = username.to_string();
    storage
        .call(move |conn| {
            // Delete and insert rather than update: the new row gets the newest id.
            conn.execute(
                "DELETE FROM push_registrations
                 WHERE username = ?1 AND app_server = ?2 AND node = ?3",
                params![username, reg.app_server, reg.node],
            )?;
            conn.execute(
                "INSERT INTO push_registrations (username, app_server, node, options, enabled_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![username, reg.app_server, reg.node, reg.options, now_secs()],
            )?;
            let dropped = conn.execute(
                "DELETE FROM push_registrations WHERE username = ?1 AND id NOT IN
                   (SELECT id FROM push_registrations WHERE username = ?1
                    ORDER BY id DESC LIMIT ?2)",
                params![username, max],
            )?;
            Ok(dropped)
        })
        .await
}

/// Disables one node of an app server, or every node of it when `node` is `None`. Returns how
/// many registrations went.
pub async fn disable(
    storage: &Storage,
    username: &str,
    app_server: &str,
    node: Option<&str>,
) -> Result<usize, StorageError> {
    let (username, app_server) = (username.to_string(), app_server.to_string());
    let node = node.map(str::to_string);
    storage
        .call(move |conn| {
            let n = match node {
                Some(node) => conn.execute(
                    "DELETE FROM push_registrations
                     WHERE username = ?1 AND app_server = ?2 AND node = ?3",
                    params![username, app_server, node],
                )?,
                None => conn.execute(
                    "DELETE FROM push_registrations WHERE username = ?1 AND app_server = ?2",
                    params![username, app_server],
                )?,
            };
            Ok(n)
        })
        .await
}

/// The account's registrations, oldest first. On the read-only connection: a message for an
/// absent account must not wait behind the writer's batches.
pub async fn of_account(
    storage: &Storage,
    username: &str,
) -> Result<Vec<Registration>, StorageError> {
    let username = username.to_string();
    storage
        .read(move |conn| {
            let mut st = conn.prepare_cached(
                "SELECT app_server, node, options FROM push_registrations
                 WHERE username = ?1 ORDER BY id",
            )?;
            let rows = st.query_map([&username], |r| {
                Ok(Registration {
                    app_server: r.get(0)?,
                    node: r.get(1)?,
                    options: r.get(2)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
}
