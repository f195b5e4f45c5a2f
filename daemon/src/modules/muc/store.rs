//! The group chat tables: rooms (their settings, subject and vCard), affiliations, and each
//! room's archive. Every room that exists has a row, so its archive has an owner; temporary
//! rooms are removed when their last occupant leaves, and at startup (left over by a crash).
//! The archive has the columns of the accounts' archive (`username` holds the room's name) so
//! `mam::store::query_table` pages through it with the same code.

use super::room::{Affiliated, Affiliation, Room, RoomConfig};
use crate::storage::StorageError;
use rusqlite::{params, Connection, OptionalExtension};

pub const MIGRATIONS: &[&str] = &["CREATE TABLE muc_rooms (
        name          TEXT PRIMARY KEY,
        config        TEXT NOT NULL,
        persistent    INTEGER NOT NULL,
        public        INTEGER NOT NULL,
        subject       TEXT NOT NULL DEFAULT '',
        subject_by    TEXT NOT NULL DEFAULT '',
        salt          TEXT NOT NULL,
        vcard         TEXT,
        avatar_hash   TEXT,
        created       INTEGER NOT NULL,
        last_activity INTEGER NOT NULL
     ) WITHOUT ROWID;
     CREATE TABLE muc_affiliations (
        room        TEXT NOT NULL REFERENCES muc_rooms(name) ON DELETE CASCADE,
        jid         TEXT NOT NULL,
        affiliation TEXT NOT NULL,
        nick        TEXT,
        reason      TEXT,
        PRIMARY KEY (room, jid)
     ) WITHOUT ROWID;
     CREATE INDEX muc_affiliations_by_jid ON muc_affiliations(jid, affiliation);
     CREATE TABLE muc_archive (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        username   TEXT NOT NULL REFERENCES muc_rooms(name) ON DELETE CASCADE,
        stanza_id  TEXT NOT NULL,
        stamp      INTEGER NOT NULL,
        with_bare  TEXT NOT NULL,
        with_full  TEXT NOT NULL,
        outgoing   INTEGER NOT NULL DEFAULT 0,
        stanza     TEXT NOT NULL
     );
     CREATE UNIQUE INDEX muc_archive_by_stanza_id ON muc_archive(username, stanza_id);
     CREATE INDEX muc_archive_by_room ON muc_archive(username, id);
     CREATE INDEX muc_archive_by_with ON muc_archive(username, with_bare, id);
     CREATE INDEX muc_archive_by_stamp ON muc_archive(stamp);"];

/// The archive table, for `mam::store::query_table`.
pub const ARCHIVE_TABLE: &str = "muc_archive";

fn to_json(c: &RoomConfig) -> Result<String, StorageError> {
    serde_json::to_string(c).map_err(|e| StorageError::Unavailable(format!("room settings: {e}")))
}

/// Writes a room's row and its whole affiliation list (a room has few).
pub fn save_room(conn: &Connection, room: &Room, now: i64) -> Result<(), StorageError> {
    conn.execute(
        "INSERT INTO muc_rooms (name, config, persistent, public, subject, subject_by, salt,
                                avatar_hash, created, last_activity)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9)
         ON CONFLICT(name) DO UPDATE SET config = excluded.config,
            persistent = excluded.persistent, public = excluded.public,
            subject = excluded.subject, subject_by = excluded.subject_by,
            avatar_hash = excluded.avatar_hash, last_activity = excluded.last_activity",
        params![
            room.name,
            to_json(&room.config)?,
            room.config.persistent,
            room.config.public,
            room.subject,
            room.subject_by,
            room.salt,
            room.avatar_hash,
            now
        ],
    )?;
    conn.execute("DELETE FROM muc_affiliations WHERE room = ?1", [&room.name])?;
    let mut st = conn.prepare(
        "INSERT INTO muc_affiliations (room, jid, affiliation, nick, reason) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for (jid, a) in &room.affiliations {
        if a.affiliation != Affiliation::None {
            st.execute(params![
                room.name,
                jid,
                a.affiliation.as_str(),
                a.nick,
                a.reason
            ])?;
        }
    }
    Ok(())
}

pub fn load_room(conn: &Connection, name: &str) -> Result<Option<Room>, StorageError> {
    let row = conn
        .query_row(
            "SELECT config, subject, subject_by, salt, avatar_hash FROM muc_rooms WHERE name = ?1",
            [name],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, Option<String>>(4)?,
                ))
            },
        )
        .optional()?;
    let Some((config, subject, subject_by, salt, avatar_hash)) = row else {
        return Ok(None);
    };
    let config: RoomConfig = serde_json::from_str(&config).map_err(|e| {
        StorageError::Unavailable(format!("the settings of room {name} cannot be read: {e}"))
    })?;
    let mut st = conn
        .prepare("SELECT jid, affiliation, nick, reason FROM muc_affiliations WHERE room = ?1")?;
    let rows = st.query_map([name], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, Option<String>>(2)?,
            r.get::<_, Option<String>>(3)?,
        ))
    })?;
    let mut affiliations = std::collections::HashMap::new();
    for row in rows {
        let (jid, aff, nick, reason) = row?;
        if let Some(affiliation) = Affiliation::parse(&aff) {
            affiliations.insert(
                jid,
                Affiliated {
                    affiliation,
                    nick,
                    reason,
                },
            );
        }
    }
    Ok(Some(Room {
        name: name.to_string(),
        config,
        affiliations,
        occupants: Vec::new(),
        subject,
        subject_by,
        locked: false,
        salt,
        avatar_hash,
    }))
}

pub fn delete_room(conn: &Connection, name: &str) -> Result<(), StorageError> {
    conn.execute("DELETE FROM muc_archive WHERE username = ?1", [name])?;
    conn.execute("DELETE FROM muc_affiliations WHERE room = ?1", [name])?;
    conn.execute("DELETE FROM muc_rooms WHERE name = ?1", [name])?;
    Ok(())
}

/// Removes temporary rooms a crash left behind (nobody can be in them after a restart).
pub fn clear_temporary(conn: &Connection) -> Result<usize, StorageError> {
    let names: Vec<String> = conn
        .prepare("SELECT name FROM muc_rooms WHERE persistent = 0")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for n in &names {
        delete_room(conn, n)?;
    }
    Ok(names.len())
}

/// How many rooms exist, and how many of them `owner` (a bare JID) owns.
pub fn counts(conn: &Connection, owner: &str) -> Result<(u32, u32), StorageError> {
    let all = conn.query_row("SELECT count(*) FROM muc_rooms", [], |r| r.get(0))?;
    let owned = conn.query_row(
        "SELECT count(*) FROM muc_affiliations WHERE jid = ?1 AND affiliation = 'owner'",
        [owner],
        |r| r.get(0),
    )?;
    Ok((all, owned))
}

pub fn set_vcard(
    conn: &Connection,
    name: &str,
    xml: &str,
    hash: Option<&str>,
) -> Result<(), StorageError> {
    conn.execute(
        "UPDATE muc_rooms SET vcard = ?2, avatar_hash = ?3 WHERE name = ?1",
        params![name, xml, hash],
    )?;
    Ok(())
}

pub fn vcard(conn: &Connection, name: &str) -> Result<Option<String>, StorageError> {
    Ok(conn
        .query_row("SELECT vcard FROM muc_rooms WHERE name = ?1", [name], |r| {
            r.get(0)
        })
        .optional()?
        .flatten())
}

/// A room as the listings show it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Listed {
    pub name: String,
    pub title: String,
    pub public: bool,
    pub members: u32,
    pub last_activity: i64,
}

/// Every room (or only public ones), by name, at most `limit`.
pub fn list(conn: &Connection, only_public: bool, limit: u32) -> Result<Vec<Listed>, StorageError> {
    let mut st = conn.prepare(
        "SELECT r.name, r.config, r.public, r.last_activity,
                (SELECT count(*) FROM muc_affiliations a WHERE a.room = r.name
                   AND a.affiliation IN ('owner', 'admin', 'member'))
         FROM muc_rooms r WHERE (?1 = 0 OR r.public = 1) ORDER BY r.name LIMIT ?2",
    )?;
    let rows = st.query_map(params![only_public, limit], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, bool>(2)?,
            r.get::<_, i64>(3)?,
            r.get::<_, u32>(4)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (name, config, public, last_activity, members) = row?;
        let title = serde_json::from_str::<RoomConfig>(&config)
            .map(|c| c.name)
            .unwrap_or_default();
        out.push(Listed {
            name,
            title,
            public,
            members,
            last_activity,
        });
    }
    Ok(out)
}

/// One message of a room's archive about to be kept.
pub struct NewMessage {
    pub room: String,
    pub stanza_id: String,
    pub stamp: i64,
    /// The sender's occupant JID (`room@service/nick`), in both `with` columns: a query's
    /// `with` names an occupant, and real JIDs stay out of the archive, so filtering by one
    /// cannot tell who said what in a semi-anonymous room.
    pub occupant: String,
    pub stanza: String,
}

pub fn archive(conn: &Connection, m: &NewMessage) -> Result<(), StorageError> {
    conn.execute(
        "INSERT INTO muc_archive (username, stanza_id, stamp, with_bare, with_full, stanza)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            m.room,
            m.stanza_id,
            m.stamp,
            m.occupant,
            m.occupant,
            m.stanza
        ],
    )?;
    conn.execute(
        "UPDATE muc_rooms SET last_activity = ?2 WHERE name = ?1",
        params![m.room, m.stamp],
    )?;
    Ok(())
}

/// The newest `limit` archived messages of a room stamped at or after `since`, oldest first:
/// (stamp, stanza).
pub fn recent(
    conn: &Connection,
    room: &str,
    limit: u32,
    since: i64,
) -> Result<Vec<(i64, String)>, StorageError> {
    let mut st = conn.prepare(
        "SELECT stamp, stanza FROM muc_archive WHERE username = ?1 AND stamp >= ?2
         ORDER BY id DESC LIMIT ?3",
    )?;
    let mut rows = st
        .query_map(params![room, since, limit], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<Vec<(i64, String)>>>()?;
    rows.reverse();
    Ok(rows)
}

/// Forgets up to `limit` archived messages older than `cutoff`; returns how many.
pub fn expire(conn: &Connection, cutoff: i64, limit: u32) -> Result<usize, StorageError> {
    Ok(conn.execute(
        "DELETE FROM muc_archive WHERE id IN
           (SELECT id FROM muc_archive WHERE stamp < ?1 ORDER BY stamp LIMIT ?2)",
        params![cutoff, limit],
    )?)
}
