//! Putting a backup's database in place: checking the file, then copying it into the live one.
//!
//! Used by whoever owns the database at that moment: `hearthd` (the control socket's `restore`,
//! while it runs) or `hearth-web` (the setup wizard's restore on a fresh box, and the admin pages
//! while `hearthd` is stopped). Nobody else writes `hearth.sqlite` while `hearthd` runs.

use rusqlite::{Connection, OpenFlags};
use std::path::Path;
use std::time::Duration;

/// How long to wait for the writer's lock: the server's own writer finishes a batch in milliseconds.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Opens a backup's database on its own and checks it is sound and has an accounts table; returns
/// the number of accounts. Errors are phrased for the person restoring.
pub fn check_database(path: &Path) -> Result<i64, String> {
    let damaged = |e: rusqlite::Error| format!("The database in the backup is damaged ({e}).");
    let conn =
        Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE).map_err(damaged)?;
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .map_err(damaged)?;
    if check != "ok" {
        return Err(format!("The database in the backup is damaged ({check})."));
    }
    let users: i64 = conn
        .query_row("SELECT count(*) FROM users", [], |r| r.get(0))
        .map_err(damaged)?;
    conn.close().map_err(|(_, e)| damaged(e))?;
    Ok(users)
}

/// Brings a checked backup's database up to this Hearth's schema, core and modules, before it is
/// installed: a backup made before a module existed (or before its latest migration) would otherwise
/// be missing tables the running server's modules use, since they are only migrated at startup.
pub fn upgrade_database(
    path: &Path,
    modules: &[(&'static str, &'static [&'static str])],
) -> Result<(), String> {
    let fail =
        |e: rusqlite::Error| format!("cannot bring the backup up to this Hearth's schema: {e}");
    let mut conn = Connection::open(path).map_err(fail)?;
    super::schema::migrate(&mut conn).map_err(fail)?;
    for (name, sql) in modules {
        super::schema::migrate_module(&conn, name, sql)
            .map_err(|e| format!("cannot prepare module {name}'s tables in the backup: {e}"))?;
    }
    conn.close().map_err(|(_, e)| fail(e))
}

/// Copies the checked database `staged` into the live file through SQLite's online backup API
/// rather than renaming files: connections still open on the live file (the server's writer) then
/// see the new content instead of a file that is gone, and the WAL stays consistent. The old
/// content is first kept as one consistent file, `<live>.before-restore-<unix time>`.
pub fn install_database(staged: &Path, live: &Path) -> Result<(), String> {
    let fail = |e: rusqlite::Error| format!("cannot install the database: {e}");
    let existed = std::fs::metadata(live)
        .map(|m| m.len() > 0)
        .unwrap_or(false);
    let mut conn = Connection::open(live).map_err(fail)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(fail)?;
    if existed {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let name = live
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "hearth.sqlite".into());
        // Two restores within a second keep both old copies.
        let keep = (0..)
            .map(|n| match n {
                0 => live.with_file_name(format!("{name}.before-restore-{now}")),
                n => live.with_file_name(format!("{name}.before-restore-{now}-{n}")),
            })
            .find(|p| !p.exists())
            .unwrap_or_else(|| live.with_file_name(format!("{name}.before-restore")));
        conn.execute("VACUUM INTO ?1", [keep.to_string_lossy()])
            .map_err(|e| format!("cannot keep a copy of the old database: {e}"))?;
    }
    conn.restore(
        rusqlite::DatabaseName::Main,
        staged,
        None::<fn(rusqlite::backup::Progress)>,
    )
    .map_err(fail)?;
    conn.close().map_err(|(_, e)| fail(e))
}

/// Whether `path` names a file directly inside `dir` whose name starts with `prefix`: the control
/// socket reads and writes only such files (the data directory, which hearth-web shares).
pub fn is_file_in(path: &Path, dir: &Path, prefix: &str) -> bool {
    let name_ok = path
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with(prefix) && !n.contains('/'));
    name_ok
        && path.parent() == Some(dir)
        && !path
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::Storage;

    #[tokio::test]
    async fn a_restore_replaces_what_the_running_writer_sees() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("hearth.sqlite");
        let db = Storage::open(&live).unwrap();
        db.create_user("alice", "alice-password", 4096, false)
            .await
            .unwrap();
        db.backup_to(dir.path().join("backup.sqlite"))
            .await
            .unwrap();
        db.create_user("bob", "bob-password", 4096, false)
            .await
            .unwrap();
        assert_eq!(check_database(&dir.path().join("backup.sqlite")), Ok(1));
        install_database(&dir.path().join("backup.sqlite"), &live).unwrap();
        // The writer's own open connection sees the restored content at once.
        let names: Vec<String> = db
            .list_users()
            .await
            .unwrap()
            .into_iter()
            .map(|u| u.username)
            .collect();
        assert_eq!(names, vec!["alice".to_string()]);
        let kept = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .find(|e| e.file_name().to_string_lossy().contains("before-restore"))
            .expect("the old content is kept");
        assert_eq!(check_database(&kept.path()), Ok(2));
    }

    #[tokio::test]
    async fn an_old_backup_gets_the_tables_of_modules_added_since() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("old.sqlite");
        let db = Storage::open(&old).unwrap();
        db.create_user("alice", "alice-password", 4096, false)
            .await
            .unwrap();
        db.backup_to(dir.path().join("backup.sqlite"))
            .await
            .unwrap();
        let backup = dir.path().join("backup.sqlite");
        const NEW: &[&str] = &["CREATE TABLE newer_module_items (id INTEGER PRIMARY KEY);"];
        upgrade_database(&backup, &[("newer-module", NEW)]).unwrap();
        let conn = Connection::open(&backup).unwrap();
        let n: i64 = conn
            .query_row("SELECT count(*) FROM newer_module_items", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 0, "the module's table exists and is empty");
        assert_eq!(
            check_database(&backup),
            Ok(1),
            "the accounts are still there"
        );
        // Running it again changes nothing.
        upgrade_database(&backup, &[("newer-module", NEW)]).unwrap();
    }

    #[test]
    fn a_damaged_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.sqlite");
        std::fs::write(&p, b"not a database at all, just text").unwrap();
        assert!(check_database(&p).unwrap_err().contains("damaged"));
    }

    #[test]
    fn only_files_directly_in_the_directory_qualify() {
        let d = Path::new("/var/lib/hearth");
        assert!(is_file_in(
            Path::new("/var/lib/hearth/.backup-x1.sqlite"),
            d,
            ".backup-"
        ));
        for bad in [
            "/var/lib/hearth/hearth.sqlite",
            "/var/lib/hearth/sub/.backup-x",
            "/var/lib/hearth/../hearth/.backup-x",
            "/etc/.backup-x",
        ] {
            assert!(!is_file_in(Path::new(bad), d, ".backup-"), "{bad}");
        }
    }
}
