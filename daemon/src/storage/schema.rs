//! Schema and migrations, by `PRAGMA user_version`: each entry moves the file one version up,
//! inside a transaction, so a power cut mid-migration leaves the previous version.

use rusqlite::Connection;

const MIGRATIONS: &[&str] = &[
    // 1: accounts, SCRAM credentials (never passwords), rosters, offline messages, vCards, invites.
    "CREATE TABLE users (
        username     TEXT PRIMARY KEY,
        created_at   INTEGER NOT NULL,
        is_admin     INTEGER NOT NULL DEFAULT 0,
        roster_ver   INTEGER NOT NULL DEFAULT 0
     ) WITHOUT ROWID;
     CREATE TABLE scram_credentials (
        username     TEXT NOT NULL REFERENCES users(username) ON DELETE CASCADE,
        hash         TEXT NOT NULL,
        salt         BLOB NOT NULL,
        iterations   INTEGER NOT NULL,
        stored_key   BLOB NOT NULL,
        server_key   BLOB NOT NULL,
        PRIMARY KEY (username, hash)
     ) WITHOUT ROWID;
     CREATE TABLE roster (
        username     TEXT NOT NULL REFERENCES users(username) ON DELETE CASCADE,
        contact      TEXT NOT NULL,
        name         TEXT,
        subscription TEXT NOT NULL DEFAULT 'none',
        ask          INTEGER NOT NULL DEFAULT 0,
        pending_in   INTEGER NOT NULL DEFAULT 0,
        groups       TEXT NOT NULL DEFAULT '[]',
        in_roster    INTEGER NOT NULL DEFAULT 1,
        PRIMARY KEY (username, contact)
     ) WITHOUT ROWID;
     CREATE TABLE offline (
        id           INTEGER PRIMARY KEY AUTOINCREMENT,
        username     TEXT NOT NULL REFERENCES users(username) ON DELETE CASCADE,
        stored_at    INTEGER NOT NULL,
        stanza       TEXT NOT NULL
     );
     CREATE INDEX offline_by_user ON offline(username, id);
     CREATE TABLE vcards (
        username     TEXT PRIMARY KEY REFERENCES users(username) ON DELETE CASCADE,
        xml          TEXT NOT NULL
     ) WITHOUT ROWID;
     CREATE TABLE invites (
        id           INTEGER PRIMARY KEY AUTOINCREMENT,
        token_hash   BLOB NOT NULL UNIQUE,
        created_at   INTEGER NOT NULL,
        expires_at   INTEGER NOT NULL,
        uses_left    INTEGER NOT NULL,
        uses_total   INTEGER NOT NULL,
        note         TEXT NOT NULL DEFAULT '',
        revoked      INTEGER NOT NULL DEFAULT 0
     );",
];

pub(super) fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let current: usize =
        conn.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))? as usize;
    if current > MIGRATIONS.len() {
        return Err(rusqlite::Error::InvalidParameterName(format!(
            "the database is from a newer Hearth (schema {current}, this one knows {}); upgrade Hearth",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}
