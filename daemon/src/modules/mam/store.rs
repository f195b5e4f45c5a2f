//! The archive's tables and the SQL on them. Writes run on the storage writer thread (one job
//! per message: preferences checked and the row inserted in the same savepoint); pages are read
//! through the read-only connection, so a long query never holds up a message.

use super::form::Query;
use crate::stanza::StanzaError;
use crate::storage::StorageError;
use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension};

pub const MIGRATIONS: &[&str] = &["CREATE TABLE mam_archive (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        username   TEXT NOT NULL REFERENCES users(username) ON DELETE CASCADE,
        stanza_id  TEXT NOT NULL,
        stamp      INTEGER NOT NULL,
        with_bare  TEXT NOT NULL,
        with_full  TEXT NOT NULL,
        outgoing   INTEGER NOT NULL,
        stanza     TEXT NOT NULL
     );
     CREATE UNIQUE INDEX mam_by_stanza_id ON mam_archive(username, stanza_id);
     CREATE INDEX mam_by_user ON mam_archive(username, id);
     CREATE INDEX mam_by_with ON mam_archive(username, with_bare, id);
     CREATE INDEX mam_by_stamp ON mam_archive(stamp);
     CREATE TABLE mam_prefs (
        username     TEXT PRIMARY KEY REFERENCES users(username) ON DELETE CASCADE,
        default_mode TEXT NOT NULL
     ) WITHOUT ROWID;
     CREATE TABLE mam_prefs_jids (
        username   TEXT NOT NULL REFERENCES users(username) ON DELETE CASCADE,
        jid        TEXT NOT NULL,
        always     INTEGER NOT NULL,
        PRIMARY KEY (username, jid)
     ) WITHOUT ROWID;"];

/// XEP-0441 default: which messages are kept when the JID is in neither list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Always,
    Never,
    Roster,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Always => "always",
            Mode::Never => "never",
            Mode::Roster => "roster",
        }
    }
    pub fn parse(s: &str) -> Option<Mode> {
        match s {
            "always" => Some(Mode::Always),
            "never" => Some(Mode::Never),
            "roster" => Some(Mode::Roster),
            _ => None,
        }
    }
}

/// An account's archiving preferences (bare JIDs in the lists).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prefs {
    pub default: Mode,
    pub always: Vec<String>,
    pub never: Vec<String>,
}

impl Default for Prefs {
    fn default() -> Prefs {
        Prefs {
            default: Mode::Always,
            always: Vec::new(),
            never: Vec::new(),
        }
    }
}

/// XEP-0441 §4: whether a message with `peer` (a bare JID) is archived.
pub fn prefs_allow(prefs: &Prefs, peer: &str, in_roster: impl FnOnce() -> bool) -> bool {
    if prefs.never.iter().any(|j| j == peer) {
        return false;
    }
    if prefs.always.iter().any(|j| j == peer) {
        return true;
    }
    match prefs.default {
        Mode::Always => true,
        Mode::Never => false,
        Mode::Roster => in_roster(),
    }
}

/// A message about to be archived.
pub struct NewEntry {
    pub username: String,
    pub stanza_id: String,
    pub stamp: i64,
    pub with_bare: String,
    pub with_full: String,
    pub outgoing: bool,
    pub stanza: String,
}

pub fn load_prefs(conn: &Connection, username: &str) -> Result<Prefs, StorageError> {
    let default = conn
        .query_row(
            "SELECT default_mode FROM mam_prefs WHERE username = ?1",
            [username],
            |r| r.get::<_, String>(0),
        )
        .optional()?;
    let mut prefs = Prefs {
        default: default
            .as_deref()
            .and_then(Mode::parse)
            .unwrap_or(Mode::Always),
        ..Prefs::default()
    };
    let mut st =
        conn.prepare("SELECT jid, always FROM mam_prefs_jids WHERE username = ?1 ORDER BY jid")?;
    let rows = st.query_map([username], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, bool>(1)?))
    })?;
    for row in rows {
        let (jid, always) = row?;
        if always {
            prefs.always.push(jid);
        } else {
            prefs.never.push(jid);
        }
    }
    Ok(prefs)
}

pub fn save_prefs(conn: &Connection, username: &str, prefs: &Prefs) -> Result<(), StorageError> {
    conn.execute(
        "INSERT INTO mam_prefs (username, default_mode) VALUES (?1, ?2)
         ON CONFLICT(username) DO UPDATE SET default_mode = excluded.default_mode",
        params![username, prefs.default.as_str()],
    )?;
    conn.execute("DELETE FROM mam_prefs_jids WHERE username = ?1", [username])?;
    let mut st =
        conn.prepare("INSERT INTO mam_prefs_jids (username, jid, always) VALUES (?1, ?2, ?3)")?;
    for (list, always) in [(&prefs.always, true), (&prefs.never, false)] {
        for jid in list {
            st.execute(params![username, jid, always])?;
        }
    }
    Ok(())
}

/// Archives `e` if the account exists and its preferences allow; says whether it did.
pub fn archive(conn: &Connection, e: &NewEntry) -> Result<bool, StorageError> {
    if !keeps(conn, &e.username, &e.with_bare)? {
        return Ok(false);
    }
    conn.execute(
        "INSERT INTO mam_archive (username, stanza_id, stamp, with_bare, with_full, outgoing, stanza)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![e.username, e.stanza_id, e.stamp, e.with_bare, e.with_full, e.outgoing, e.stanza],
    )?;
    Ok(true)
}

/// Whether `username`'s archive keeps a message with `with_bare`: the account exists and its
/// preferences (XEP-0313 §6.1) allow it.
pub fn keeps(conn: &Connection, username: &str, with_bare: &str) -> Result<bool, StorageError> {
    if !crate::storage::user_exists(conn, username)? {
        return Ok(false);
    }
    let prefs = load_prefs(conn, username)?;
    let in_roster = || in_roster(conn, username, with_bare).unwrap_or(false);
    Ok(prefs_allow(&prefs, with_bare, in_roster))
}

/// Whether `contact` is in `username`'s roster (XEP-0313's "roster" default).
pub fn in_roster(conn: &Connection, username: &str, contact: &str) -> Result<bool, StorageError> {
    Ok(conn
        .query_row(
            "SELECT 1 FROM roster WHERE username = ?1 AND contact = ?2 AND in_roster = 1",
            [username, contact],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

/// One archived message as a query returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub row: i64,
    pub stanza_id: String,
    pub stamp: i64,
    pub stanza: String,
}

/// One page of results.
#[derive(Debug, Default)]
pub struct Page {
    /// Oldest first.
    pub entries: Vec<Entry>,
    /// No more results beyond this page in the paging direction.
    pub complete: bool,
    /// Results matching the filters, all pages together.
    pub count: i64,
    /// Position of the page's first result among them.
    pub first_index: Option<i64>,
}

/// Why a query has no page.
#[derive(Debug)]
pub enum QueryFailure {
    Client(StanzaError),
    Storage(StorageError),
}

impl From<rusqlite::Error> for QueryFailure {
    fn from(e: rusqlite::Error) -> Self {
        QueryFailure::Storage(e.into())
    }
}

/// The row of an archive id, or `item-not-found` (XEP-0313 §4.1.4: an unknown id is an error,
/// not an empty page).
fn row_of(
    conn: &Connection,
    table: &str,
    username: &str,
    stanza_id: &str,
) -> Result<i64, QueryFailure> {
    conn.query_row(
        &format!("SELECT id FROM {table} WHERE username = ?1 AND stanza_id = ?2"),
        [username, stanza_id],
        |r| r.get(0),
    )
    .optional()?
    .ok_or_else(|| {
        QueryFailure::Client(
            StanzaError::item_not_found()
                .with_text(format!("no message with id '{stanza_id}' in this archive")),
        )
    })
}

/// Runs a query on `username`'s archive.
pub fn query(conn: &Connection, username: &str, q: &Query) -> Result<Page, QueryFailure> {
    query_table(conn, "mam_archive", username, q)
}

/// Runs a query on the archive of `owner` in `table`, a table with the columns of
/// `mam_archive` (group chat rooms keep theirs in `muc_archive`).
pub fn query_table(
    conn: &Connection,
    table: &'static str,
    username: &str,
    q: &Query,
) -> Result<Page, QueryFailure> {
    let mut filter = String::from("username = ?");
    let mut args: Vec<Value> = vec![Value::Text(username.to_string())];
    if let Some(with) = &q.with {
        if with.is_bare() {
            filter.push_str(" AND with_bare = ?");
        } else {
            filter.push_str(" AND with_full = ?");
        }
        args.push(Value::Text(with.to_string()));
    }
    if let Some(start) = q.start {
        filter.push_str(" AND stamp >= ?");
        args.push(Value::Integer(start));
    }
    if let Some(end) = q.end {
        filter.push_str(" AND stamp <= ?");
        args.push(Value::Integer(end));
    }
    if !q.ids.is_empty() {
        filter.push_str(" AND stanza_id IN (");
        for (i, id) in q.ids.iter().enumerate() {
            filter.push_str(if i == 0 { "?" } else { ", ?" });
            args.push(Value::Text(id.clone()));
        }
        filter.push(')');
    }
    let count: i64 = conn.query_row(
        &format!("SELECT count(*) FROM {table} WHERE {filter}"),
        params_from_iter(args.iter()),
        |r| r.get(0),
    )?;
    let mut lower = None::<i64>;
    for id in &q.after {
        let row = row_of(conn, table, username, id)?;
        lower = Some(lower.map_or(row, |l| l.max(row)));
    }
    let mut upper = None::<i64>;
    for id in &q.before {
        let row = row_of(conn, table, username, id)?;
        upper = Some(upper.map_or(row, |u| u.min(row)));
    }
    let mut paged = filter.clone();
    let mut paged_args = args.clone();
    if let Some(l) = lower {
        paged.push_str(" AND id > ?");
        paged_args.push(Value::Integer(l));
    }
    if let Some(u) = upper {
        paged.push_str(" AND id < ?");
        paged_args.push(Value::Integer(u));
    }
    let order = if q.backwards { "DESC" } else { "ASC" };
    // One more than asked tells whether another page follows.
    paged_args.push(Value::Integer(i64::from(q.max) + 1));
    let mut st = conn.prepare(&format!(
        "SELECT id, stanza_id, stamp, stanza FROM {table} WHERE {paged} ORDER BY id {order} LIMIT ?"
    ))?;
    let mut entries = st
        .query_map(params_from_iter(paged_args.iter()), |r| {
            Ok(Entry {
                row: r.get(0)?,
                stanza_id: r.get(1)?,
                stamp: r.get(2)?,
                stanza: r.get(3)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let complete = entries.len() <= q.max as usize;
    entries.truncate(q.max as usize);
    if q.backwards {
        entries.reverse();
    }
    let first_index = match entries.first() {
        Some(first) => {
            args.push(Value::Integer(first.row));
            Some(conn.query_row(
                &format!("SELECT count(*) FROM {table} WHERE {filter} AND id < ?"),
                params_from_iter(args.iter()),
                |r| r.get(0),
            )?)
        }
        None => None,
    };
    Ok(Page {
        entries,
        complete,
        count,
        first_index,
    })
}

/// The oldest and newest message of an archive: (archive id, stamp) each.
pub type Bounds = Option<((String, i64), (String, i64))>;

pub fn bounds(conn: &Connection, username: &str) -> Result<Bounds, StorageError> {
    let edge = |order: &str| {
        conn.query_row(
            &format!(
                "SELECT stanza_id, stamp FROM mam_archive WHERE username = ?1 ORDER BY id {order} LIMIT 1"
            ),
            [username],
            |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)),
        )
        .optional()
    };
    Ok(match (edge("ASC")?, edge("DESC")?) {
        (Some(a), Some(b)) => Some((a, b)),
        _ => None,
    })
}

/// Deletes up to `limit` messages stamped before `cutoff`; returns how many went. Small
/// batches keep each writer job short, so messages are not held up behind a purge.
pub fn expire(conn: &Connection, cutoff: i64, limit: u32) -> Result<usize, StorageError> {
    Ok(conn.execute(
        "DELETE FROM mam_archive WHERE id IN
           (SELECT id FROM mam_archive WHERE stamp < ?1 ORDER BY stamp LIMIT ?2)",
        params![cutoff, limit],
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preferences_decide_by_list_then_default() {
        let mut p = Prefs::default();
        assert!(prefs_allow(&p, "a@x", || false));
        p.default = Mode::Never;
        assert!(!prefs_allow(&p, "a@x", || true));
        p.always.push("a@x".into());
        assert!(prefs_allow(&p, "a@x", || false));
        p.never.push("a@x".into());
        assert!(!prefs_allow(&p, "a@x", || true), "never wins over always");
        p.default = Mode::Roster;
        assert!(prefs_allow(&p, "b@x", || true));
        assert!(!prefs_allow(&p, "b@x", || false));
    }
}
