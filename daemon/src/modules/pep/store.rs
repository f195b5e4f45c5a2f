//! The PEP tables: one row per node (its configuration), one per item and one per explicit
//! subscriber (`subscriptions.rs`), owned by the account (removing the account removes them
//! all, by foreign key).

use super::form::{AccessModel, NodeConfig, SendLast};
use crate::storage::{Storage, StorageError};
use rusqlite::{params, OptionalExtension};

pub const MIGRATIONS: &[&str] = &[
    "CREATE TABLE pep_nodes (
        username     TEXT NOT NULL REFERENCES users(username) ON DELETE CASCADE,
        node         TEXT NOT NULL,
        access_model TEXT NOT NULL,
        persist      INTEGER NOT NULL,
        max_items    INTEGER NOT NULL,
        send_last    TEXT NOT NULL,
        PRIMARY KEY (username, node)
     ) WITHOUT ROWID;
     CREATE TABLE pep_items (
        username     TEXT NOT NULL,
        node         TEXT NOT NULL,
        item_id      TEXT NOT NULL,
        payload      TEXT NOT NULL,
        seq          INTEGER NOT NULL,
        PRIMARY KEY (username, node, item_id),
        FOREIGN KEY (username, node) REFERENCES pep_nodes(username, node) ON DELETE CASCADE
     ) WITHOUT ROWID;
     CREATE INDEX pep_items_by_seq ON pep_items(username, node, seq);",
    super::subscriptions::MIGRATION,
];

/// One stored item: id and payload XML.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub id: String,
    pub payload: String,
}

/// What a publish must respect (the `[modules.pep]` limits).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub nodes_per_account: u32,
}

/// How a publish went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Published {
    Stored,
    /// The node did not exist and the account already has the most nodes allowed.
    TooManyNodes,
}

fn row_config(r: &rusqlite::Row<'_>) -> rusqlite::Result<NodeConfig> {
    let access: String = r.get(0)?;
    let send_last: String = r.get(3)?;
    Ok(NodeConfig {
        access: AccessModel::parse(&access).unwrap_or(AccessModel::Whitelist),
        persist: r.get(1)?,
        max_items: r.get(2)?,
        send_last: SendLast::parse(&send_last).unwrap_or(SendLast::Never),
    })
}

fn config_of(
    conn: &rusqlite::Connection,
    user: &str,
    node: &str,
) -> rusqlite::Result<Option<NodeConfig>> {
    conn.query_row(
        "SELECT access_model, persist, max_items, send_last FROM pep_nodes
         WHERE username = ?1 AND node = ?2",
        params![user, node],
        row_config,
    )
    .optional()
}

fn write_config(
    conn: &rusqlite::Connection,
    user: &str,
    node: &str,
    c: &NodeConfig,
) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO pep_nodes (username, node, access_model, persist, max_items, send_last)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (username, node) DO UPDATE SET access_model = ?3, persist = ?4,
            max_items = ?5, send_last = ?6",
        params![
            user,
            node,
            c.access.as_str(),
            c.persist,
            c.max_items,
            c.send_last.as_str()
        ],
    )?;
    trim(conn, user, node, if c.persist { c.max_items } else { 1 })
}

/// Keeps the newest `keep` items of a node.
fn trim(conn: &rusqlite::Connection, user: &str, node: &str, keep: u32) -> rusqlite::Result<()> {
    conn.execute(
        "DELETE FROM pep_items WHERE username = ?1 AND node = ?2 AND seq NOT IN
           (SELECT seq FROM pep_items WHERE username = ?1 AND node = ?2
            ORDER BY seq DESC LIMIT ?3)",
        params![user, node, keep],
    )?;
    Ok(())
}

pub async fn config(
    s: &Storage,
    user: &str,
    node: &str,
) -> Result<Option<NodeConfig>, StorageError> {
    let (user, node) = (user.to_string(), node.to_string());
    s.call(move |conn| Ok(config_of(conn, &user, &node)?)).await
}

pub async fn set_config(
    s: &Storage,
    user: &str,
    node: &str,
    c: NodeConfig,
) -> Result<(), StorageError> {
    let (user, node) = (user.to_string(), node.to_string());
    s.call(move |conn| Ok(write_config(conn, &user, &node, &c)?))
        .await
}

/// Stores an item (replacing one with the same id), creating the node with `create` if it is
/// new, and trims the node to its `max_items` (one, when it does not persist items: the last
/// item is still kept to send to contacts coming online).
pub async fn publish(
    s: &Storage,
    user: &str,
    node: &str,
    create: NodeConfig,
    item: Item,
    limits: Limits,
) -> Result<Published, StorageError> {
    let (user, node) = (user.to_string(), node.to_string());
    s.call(move |conn| {
        let config = match config_of(conn, &user, &node)? {
            Some(c) => c,
            None => {
                let n: u32 = conn.query_row(
                    "SELECT count(*) FROM pep_nodes WHERE username = ?1",
                    [&user],
                    |r| r.get(0),
                )?;
                if n >= limits.nodes_per_account {
                    return Ok(Published::TooManyNodes);
                }
                write_config(conn, &user, &node, &create)?;
                create
            }
        };
        let seq: i64 = conn.query_row(
            "SELECT coalesce(max(seq), 0) + 1 FROM pep_items WHERE username = ?1 AND node = ?2",
            params![user, node],
            |r| r.get(0),
        )?;
        conn.execute(
            "INSERT INTO pep_items (username, node, item_id, payload, seq) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (username, node, item_id) DO UPDATE SET payload = ?4, seq = ?5",
            params![user, node, item.id, item.payload, seq],
        )?;
        trim(conn, &user, &node, if config.persist { config.max_items } else { 1 })?;
        Ok(Published::Stored)
    })
    .await
}

/// The node's items, newest first: those with `ids` if given, else the newest `max` (all when
/// `None`). `None` when the node does not exist.
pub async fn items(
    s: &Storage,
    user: &str,
    node: &str,
    ids: Vec<String>,
    max: Option<u32>,
) -> Result<Option<Vec<Item>>, StorageError> {
    let (user, node) = (user.to_string(), node.to_string());
    s.call(move |conn| {
        if config_of(conn, &user, &node)?.is_none() {
            return Ok(None);
        }
        let mut st = conn.prepare(
            "SELECT item_id, payload FROM pep_items WHERE username = ?1 AND node = ?2
             ORDER BY seq DESC LIMIT ?3",
        )?;
        let limit = max.map_or(-1, i64::from);
        let rows = st.query_map(params![user, node, limit], |r| {
            Ok(Item {
                id: r.get(0)?,
                payload: r.get(1)?,
            })
        })?;
        let mut all = rows.collect::<rusqlite::Result<Vec<_>>>()?;
        if !ids.is_empty() {
            all.retain(|i| ids.contains(&i.id));
        }
        Ok(Some(all))
    })
    .await
}

/// Removes one item: `Some(true)` if it was there, `None` if the node does not exist.
pub async fn retract(
    s: &Storage,
    user: &str,
    node: &str,
    id: &str,
) -> Result<Option<bool>, StorageError> {
    let (user, node, id) = (user.to_string(), node.to_string(), id.to_string());
    s.call(move |conn| {
        if config_of(conn, &user, &node)?.is_none() {
            return Ok(None);
        }
        let n = conn.execute(
            "DELETE FROM pep_items WHERE username = ?1 AND node = ?2 AND item_id = ?3",
            params![user, node, id],
        )?;
        Ok(Some(n > 0))
    })
    .await
}

/// Deletes a node (`items_only`: purges it) — false when there was no such node.
pub async fn delete(
    s: &Storage,
    user: &str,
    node: &str,
    items_only: bool,
) -> Result<bool, StorageError> {
    let (user, node) = (user.to_string(), node.to_string());
    s.call(move |conn| {
        if config_of(conn, &user, &node)?.is_none() {
            return Ok(false);
        }
        conn.execute(
            "DELETE FROM pep_items WHERE username = ?1 AND node = ?2",
            params![user, node],
        )?;
        if !items_only {
            conn.execute(
                "DELETE FROM pep_nodes WHERE username = ?1 AND node = ?2",
                params![user, node],
            )?;
        }
        Ok(true)
    })
    .await
}

/// Every node of an account with its configuration and newest item (for last-item delivery).
pub async fn last_items(
    s: &Storage,
    user: &str,
) -> Result<Vec<(String, NodeConfig, Item)>, StorageError> {
    let user = user.to_string();
    s.call(move |conn| {
        let mut st = conn.prepare(
            "SELECT n.access_model, n.persist, n.max_items, n.send_last, n.node, i.item_id, i.payload
             FROM pep_nodes n JOIN pep_items i ON i.username = n.username AND i.node = n.node
             WHERE n.username = ?1 AND i.seq = (SELECT max(seq) FROM pep_items
                 WHERE username = n.username AND node = n.node)",
        )?;
        let rows = st.query_map([&user], |r| {
            Ok((
                r.get::<_, String>(4)?,
                row_config(r)?,
                Item {
                    id: r.get(5)?,
                    payload: r.get(6)?,
                },
            ))
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    })
    .await
}
