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
    // 2: modules own their tables; this remembers how far each module's migrations got.
    "CREATE TABLE module_versions (
        module       TEXT PRIMARY KEY,
        version      INTEGER NOT NULL
     ) WITHOUT ROWID;",
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

/// Applies a module's migrations it has not had yet, each in its own savepoint, recording the
/// version in `module_versions` in the same step.
pub(super) fn migrate_module(
    conn: &Connection,
    module: &str,
    migrations: &[&str],
) -> rusqlite::Result<()> {
    use rusqlite::OptionalExtension;
    let current: i64 = conn
        .query_row(
            "SELECT version FROM module_versions WHERE module = ?1",
            [module],
            |r| r.get(0),
        )
        .optional()?
        .unwrap_or(0);
    if current as usize > migrations.len() {
        return Err(rusqlite::Error::InvalidParameterName(format!(
            "the tables of module {module} are from a newer Hearth (version {current}, this one knows {}); upgrade Hearth",
            migrations.len()
        )));
    }
    for (i, sql) in migrations.iter().enumerate().skip(current as usize) {
        conn.execute_batch("SAVEPOINT module_migration")?;
        let step = conn.execute_batch(sql).and_then(|()| {
            conn.execute(
                "INSERT INTO module_versions (module, version) VALUES (?1, ?2)
                 ON CONFLICT(module) DO UPDATE SET version = excluded.version",
                rusqlite::params![module, (i + 1) as i64],
            )
            .map(|_| ())
        });
        match step {
            Ok(()) => conn.execute_batch("RELEASE module_migration")?,
            Err(e) => {
                conn.execute_batch("ROLLBACK TO module_migration; RELEASE module_migration")?;
                return Err(e);
            }
        }
    }
    Ok(())
}
