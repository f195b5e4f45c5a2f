//! The upload table: one row per slot handed out, from the request until the file expires. Writes
//! run on the storage writer thread, so a quota check and the insert that uses it are one step.

use crate::storage::StorageError;
use rusqlite::{params, Connection, OptionalExtension};

pub const MIGRATIONS: &[&str] = &["CREATE TABLE upload_files (
        token        TEXT PRIMARY KEY,
        owner        TEXT NOT NULL,
        name         TEXT NOT NULL,
        size         INTEGER NOT NULL,
        content_type TEXT NOT NULL,
        created      INTEGER NOT NULL,
        slot_expires INTEGER NOT NULL,
        file_expires INTEGER NOT NULL,
        state        INTEGER NOT NULL
     ) WITHOUT ROWID;
     CREATE INDEX upload_by_owner ON upload_files(owner, created);
     CREATE INDEX upload_by_expiry ON upload_files(file_expires);
     CREATE TABLE upload_limits (
        key   TEXT PRIMARY KEY,
        value INTEGER NOT NULL
     ) WITHOUT ROWID;"];

/// A slot handed out, nothing received yet.
const OPEN: i64 = 0;
/// The web server is receiving the body.
const RECEIVING: i64 = 1;
/// The file is complete on disk and served.
const STORED: i64 = 2;

/// How long a slot that never got its file is kept after the slot's own expiry: a slow upload
/// is never cut off by the cleanup, and a late PUT hears "expired" rather than "no such slot".
/// (An expired, unused slot no longer counts against the quota.)
pub const RECEIVING_GRACE_SECS: i64 = 86_400;

/// The limits in force: `[modules.upload]`, with whatever the admin pages changed on top.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Limits {
    pub max_file_size: u64,
    pub quota_per_account: u64,
    pub daily_per_account: u64,
    pub file_lifetime_secs: i64,
}

const LIMIT_KEYS: [&str; 4] = [
    "max_file_size",
    "quota_per_account",
    "daily_per_account",
    "file_lifetime_secs",
];

impl Limits {
    fn values(&self) -> [i64; 4] {
        [
            self.max_file_size as i64,
            self.quota_per_account as i64,
            self.daily_per_account as i64,
            self.file_lifetime_secs,
        ]
    }
}

/// `defaults` with the admin's saved changes on top.
pub fn limits(c: &Connection, defaults: Limits) -> Result<Limits, StorageError> {
    let mut v = defaults.values();
    let mut stmt = c.prepare_cached("SELECT key, value FROM upload_limits")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
    for row in rows {
        let (k, value) = row?;
        if let Some(i) = LIMIT_KEYS.iter().position(|x| *x == k) {
            v[i] = value;
        }
    }
    Ok(Limits {
        max_file_size: v[0].max(0) as u64,
        quota_per_account: v[1].max(0) as u64,
        daily_per_account: v[2].max(0) as u64,
        file_lifetime_secs: v[3].max(1),
    })
}

pub fn set_limits(c: &Connection, l: &Limits) -> Result<(), StorageError> {
    for (k, v) in LIMIT_KEYS.iter().zip(l.values()) {
        c.execute(
            "INSERT INTO upload_limits(key, value) VALUES (?1, ?2)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            params![k, v],
        )?;
    }
    Ok(())
}

/// A slot about to be handed out.
#[derive(Debug, Clone)]
pub struct NewSlot {
    pub token: String,
    pub owner: String,
    pub name: String,
    pub size: u64,
    pub content_type: String,
    pub slot_expires: i64,
    pub file_expires: i64,
}

/// Why a slot is refused; each says what the person can do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    TooLarge { max: u64 },
    Quota { quota: u64, held: u64 },
    Daily { daily: u64, used: u64, next_at: i64 },
}

/// Bytes an account holds (stored files and slots still usable) and bytes it asked for in the
/// last 24 hours.
pub fn usage(c: &Connection, owner: &str, now: i64) -> Result<(u64, u64), StorageError> {
    let held: i64 = c.query_row(
        "SELECT COALESCE(SUM(size), 0) FROM upload_files
         WHERE owner = ?1 AND file_expires > ?2 AND (state != 0 OR slot_expires > ?2)",
        params![owner, now],
        |r| r.get(0),
    )?;
    let day: i64 = c.query_row(
        "SELECT COALESCE(SUM(size), 0) FROM upload_files WHERE owner = ?1 AND created > ?2",
        params![owner, now - 86_400],
        |r| r.get(0),
    )?;
    Ok((held as u64, day as u64))
}

/// Checks the account's quota and daily limit and, if both allow it, records the slot.
pub fn create_slot(
    c: &Connection,
    slot: &NewSlot,
    l: &Limits,
    now: i64,
) -> Result<Result<(), Refusal>, StorageError> {
    if slot.size > l.max_file_size {
        return Ok(Err(Refusal::TooLarge {
            max: l.max_file_size,
        }));
    }
    let (held, day) = usage(c, &slot.owner, now)?;
    if held.saturating_add(slot.size) > l.quota_per_account {
        return Ok(Err(Refusal::Quota {
            quota: l.quota_per_account,
            held,
        }));
    }
    if day.saturating_add(slot.size) > l.daily_per_account {
        let oldest: i64 = c.query_row(
            "SELECT COALESCE(MIN(created), ?2) FROM upload_files WHERE owner = ?1 AND created > ?3",
            params![slot.owner, now, now - 86_400],
            |r| r.get(0),
        )?;
        return Ok(Err(Refusal::Daily {
            daily: l.daily_per_account,
            used: day,
            next_at: oldest + 86_400,
        }));
    }
    c.execute(
        "INSERT INTO upload_files(token, owner, name, size, content_type, created, slot_expires,
                                  file_expires, state)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 0)",
        params![
            slot.token,
            slot.owner,
            slot.name,
            slot.size as i64,
            slot.content_type,
            now,
            slot.slot_expires,
            slot.file_expires
        ],
    )?;
    Ok(Ok(()))
}

/// Why a PUT may not use a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UseError {
    Unknown,
    Expired,
    Used,
    Busy,
    WrongSize(u64),
    WrongType,
}

impl UseError {
    /// The sentence `hearth-web` shows, and the HTTP status it goes with.
    pub fn explain(&self) -> (u16, String) {
        match self {
            UseError::Unknown => (404, "There is no upload slot at this address.".into()),
            UseError::Expired => (
                410,
                "This upload slot has expired. Send the file again; your app asks for a new slot."
                    .into(),
            ),
            UseError::Used => (
                409,
                "A file was already uploaded to this slot; a slot is used once.".into(),
            ),
            UseError::Busy => (
                409,
                "An upload to this slot is in progress already.".into(),
            ),
            UseError::WrongSize(want) => (
                400,
                format!("This slot is for a file of exactly {want} bytes; the upload has a different length."),
            ),
            UseError::WrongType => (
                400,
                "The upload's Content-Type differs from the type the slot was asked for.".into(),
            ),
        }
    }
}

/// A PUT starts: the slot must be open, unexpired, and of this size and type. Marks it receiving.
pub fn begin(
    c: &Connection,
    token: &str,
    name: &str,
    size: u64,
    content_type: &str,
    now: i64,
) -> Result<Result<(), UseError>, StorageError> {
    let row: Option<(String, i64, String, i64, i64)> = c
        .query_row(
            "SELECT name, size, content_type, slot_expires, state FROM upload_files WHERE token = ?1",
            params![token],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .optional()?;
    let Some((n, s, t, slot_expires, state)) = row else {
        return Ok(Err(UseError::Unknown));
    };
    let refusal = if n != name {
        Some(UseError::Unknown)
    } else if state == STORED {
        Some(UseError::Used)
    } else if state == RECEIVING {
        Some(UseError::Busy)
    } else if slot_expires <= now {
        Some(UseError::Expired)
    } else if s as u64 != size {
        Some(UseError::WrongSize(s as u64))
    } else if t != content_type {
        Some(UseError::WrongType)
    } else {
        None
    };
    if let Some(r) = refusal {
        return Ok(Err(r));
    }
    c.execute(
        "UPDATE upload_files SET state = ?2 WHERE token = ?1",
        params![token, RECEIVING],
    )?;
    Ok(Ok(()))
}

/// The file is on disk, complete: serve it from now on.
pub fn finish(c: &Connection, token: &str) -> Result<bool, StorageError> {
    Ok(c.execute(
        "UPDATE upload_files SET state = ?2 WHERE token = ?1 AND state = ?3",
        params![token, STORED, RECEIVING],
    )? == 1)
}

/// The PUT failed (broken off, disk full): the slot may be tried again while it is valid.
pub fn abort(c: &Connection, token: &str) -> Result<(), StorageError> {
    c.execute(
        "UPDATE upload_files SET state = ?2 WHERE token = ?1 AND state = ?3",
        params![token, OPEN, RECEIVING],
    )?;
    Ok(())
}

/// What a GET needs to serve a stored, unexpired file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileInfo {
    pub size: u64,
    pub content_type: String,
    pub created: i64,
    pub expires: i64,
}

pub fn lookup(
    c: &Connection,
    token: &str,
    name: &str,
    now: i64,
) -> Result<Option<FileInfo>, StorageError> {
    Ok(c.query_row(
        "SELECT size, content_type, created, file_expires FROM upload_files
             WHERE token = ?1 AND name = ?2 AND state = ?3 AND file_expires > ?4",
        params![token, name, STORED, now],
        |r| {
            Ok(FileInfo {
                size: r.get::<_, i64>(0)? as u64,
                content_type: r.get(1)?,
                created: r.get(2)?,
                expires: r.get(3)?,
            })
        },
    )
    .optional()?)
}

/// Up to `limit` rows whose time is over: expired files, slots never used, uploads that never
/// finished, and the files of accounts that were deleted. Returns their tokens, rows deleted.
pub fn take_expired(c: &Connection, now: i64, limit: usize) -> Result<Vec<String>, StorageError> {
    let mut stmt = c.prepare_cached(
        "SELECT token FROM upload_files
         WHERE file_expires <= ?1
            OR (state != 2 AND slot_expires + ?2 <= ?1)
            OR owner NOT IN (SELECT username FROM users)
         LIMIT ?3",
    )?;
    let tokens: Vec<String> = stmt
        .query_map(params![now, RECEIVING_GRACE_SECS, limit as i64], |r| {
            r.get(0)
        })?
        .collect::<Result<_, _>>()?;
    for t in &tokens {
        c.execute("DELETE FROM upload_files WHERE token = ?1", params![t])?;
    }
    Ok(tokens)
}

/// What the admin pages show.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Stats {
    pub files: u64,
    pub bytes: u64,
    pub accounts: u64,
}

pub fn stats(c: &Connection, now: i64) -> Result<Stats, StorageError> {
    Ok(c.query_row(
        "SELECT COUNT(*), COALESCE(SUM(size), 0), COUNT(DISTINCT owner) FROM upload_files
         WHERE state = ?1 AND file_expires > ?2",
        params![STORED, now],
        |r| {
            Ok(Stats {
                files: r.get::<_, i64>(0)? as u64,
                bytes: r.get::<_, i64>(1)? as u64,
                accounts: r.get::<_, i64>(2)? as u64,
            })
        },
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> Connection {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch("CREATE TABLE users(username TEXT PRIMARY KEY); INSERT INTO users VALUES ('alice'), ('bob');")
            .unwrap();
        c.execute_batch(MIGRATIONS[0]).unwrap();
        c
    }

    const L: Limits = Limits {
        max_file_size: 100,
        quota_per_account: 250,
        daily_per_account: 400,
        file_lifetime_secs: 1000,
    };

    fn slot(token: &str, owner: &str, size: u64, now: i64) -> NewSlot {
        NewSlot {
            token: token.into(),
            owner: owner.into(),
            name: "a.txt".into(),
            size,
            content_type: "text/plain".into(),
            slot_expires: now + 60,
            file_expires: now + 1_000_000,
        }
    }

    #[test]
    fn size_quota_and_daily_limit_are_each_enforced() {
        let c = db();
        assert_eq!(
            create_slot(&c, &slot("t0", "alice", 101, 0), &L, 0).unwrap(),
            Err(Refusal::TooLarge { max: 100 })
        );
        for (i, t) in ["t1", "t2"].iter().enumerate() {
            assert_eq!(
                create_slot(&c, &slot(t, "alice", 100, i as i64), &L, 0).unwrap(),
                Ok(())
            );
        }
        assert_eq!(
            create_slot(&c, &slot("t3", "alice", 100, 0), &L, 0).unwrap(),
            Err(Refusal::Quota {
                quota: 250,
                held: 200
            })
        );
        assert_eq!(
            create_slot(&c, &slot("b1", "bob", 100, 0), &L, 0).unwrap(),
            Ok(()),
            "quota is per account"
        );
        // Unused slots stop counting once they expire; the day's total still counts them.
        let later = 100;
        assert_eq!(
            create_slot(&c, &slot("t3", "alice", 100, later), &L, later).unwrap(),
            Ok(())
        );
        assert_eq!(
            create_slot(&c, &slot("t4", "alice", 100, later), &L, later).unwrap(),
            Ok(())
        );
        let roomy = Limits {
            quota_per_account: 1000,
            ..L
        };
        let r = create_slot(&c, &slot("t5", "alice", 100, later), &roomy, later).unwrap();
        assert_eq!(
            r,
            Err(Refusal::Daily {
                daily: 400,
                used: 400,
                next_at: 86_400
            })
        );
    }

    #[test]
    fn a_slot_is_used_once_within_its_time_at_its_size() {
        let c = db();
        create_slot(&c, &slot("t", "alice", 10, 0), &L, 0)
            .unwrap()
            .unwrap();
        assert_eq!(
            begin(&c, "t", "b.txt", 10, "text/plain", 1).unwrap(),
            Err(UseError::Unknown)
        );
        assert_eq!(
            begin(&c, "t", "a.txt", 11, "text/plain", 1).unwrap(),
            Err(UseError::WrongSize(10))
        );
        assert_eq!(
            begin(&c, "t", "a.txt", 10, "text/html", 1).unwrap(),
            Err(UseError::WrongType)
        );
        assert_eq!(
            begin(&c, "t", "a.txt", 10, "text/plain", 60).unwrap(),
            Err(UseError::Expired)
        );
        assert_eq!(
            begin(&c, "t", "a.txt", 10, "text/plain", 1).unwrap(),
            Ok(())
        );
        assert_eq!(
            begin(&c, "t", "a.txt", 10, "text/plain", 1).unwrap(),
            Err(UseError::Busy)
        );
        assert!(
            lookup(&c, "t", "a.txt", 2).unwrap().is_none(),
            "not served before it is complete"
        );
        abort(&c, "t").unwrap();
        assert_eq!(
            begin(&c, "t", "a.txt", 10, "text/plain", 2).unwrap(),
            Ok(()),
            "retry after a failure"
        );
        assert!(finish(&c, "t").unwrap());
        assert_eq!(
            begin(&c, "t", "a.txt", 10, "text/plain", 3).unwrap(),
            Err(UseError::Used)
        );
        let info = lookup(&c, "t", "a.txt", 3).unwrap().unwrap();
        assert_eq!((info.size, info.expires), (10, 1_000_000));
        assert_eq!(
            stats(&c, 3).unwrap(),
            Stats {
                files: 1,
                bytes: 10,
                accounts: 1
            }
        );
        assert!(
            lookup(&c, "t", "a.txt", 1_000_000).unwrap().is_none(),
            "expired files are not served"
        );
    }

    #[test]
    fn cleanup_takes_expired_files_unused_slots_and_gone_accounts() {
        let c = db();
        for (t, owner) in [("stored", "alice"), ("unused", "alice"), ("bobs", "bob")] {
            create_slot(&c, &slot(t, owner, 10, 0), &L, 0)
                .unwrap()
                .unwrap();
        }
        for t in ["stored", "bobs"] {
            begin(&c, t, "a.txt", 10, "text/plain", 1).unwrap().unwrap();
            finish(&c, t).unwrap();
        }
        assert!(take_expired(&c, 61, 10).unwrap().is_empty());
        let day_later = 60 + RECEIVING_GRACE_SECS;
        assert_eq!(
            take_expired(&c, day_later, 10).unwrap(),
            vec!["unused".to_string()]
        );
        c.execute("DELETE FROM users WHERE username = 'bob'", [])
            .unwrap();
        assert_eq!(
            take_expired(&c, day_later, 10).unwrap(),
            vec!["bobs".to_string()]
        );
        assert_eq!(
            take_expired(&c, 1_000_000, 10).unwrap(),
            vec!["stored".to_string()]
        );
    }

    #[test]
    fn saved_limits_override_the_config() {
        let c = db();
        assert_eq!(limits(&c, L).unwrap(), L);
        let changed = Limits {
            max_file_size: 5,
            ..L
        };
        set_limits(&c, &changed).unwrap();
        assert_eq!(limits(&c, L).unwrap(), changed);
    }
}
