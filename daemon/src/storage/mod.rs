//! Storage: one SQLite file, one writer thread, an async facade.
//!
//! Every call becomes a job on one dedicated thread that owns the connection. The thread takes
//! all jobs waiting at that moment, runs each inside its own savepoint of one transaction, commits
//! once, and only then answers the callers. That is group commit: `synchronous=FULL` (an fsync per
//! commit, so an acknowledged message or a new account survives a power cut) costs one fsync per
//! batch instead of one per message, which matters on an SD card.

mod accounts;
mod invites;
pub mod restore;
mod roster;
mod schema;
mod vcard;

pub use accounts::{derive_credentials as accounts_derive, user_exists, UserInfo};
pub use invites::{InviteInfo, NewInvite};
pub use roster::{RosterItem, Subscription};

use rusqlite::Connection;
use std::path::{Path, PathBuf};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// Jobs waiting for the writer thread; callers wait (backpressure) beyond this.
const QUEUE_DEPTH: usize = 1024;
/// Jobs committed together at most, so one batch cannot hold replies back for long.
const MAX_BATCH: usize = 256;
/// SQLite page cache, in KiB (negative `cache_size` means KiB): small boards, small cache.
const CACHE_KIB: i64 = 2048;
/// Page cache of the read-only connection, in KiB.
const READER_CACHE_KIB: i64 = 512;
/// Page cache of the lookup connection (a few index pages), in KiB.
const LOOKUP_CACHE_KIB: i64 = 128;

#[derive(Debug)]
pub enum StorageError {
    Sqlite(rusqlite::Error),
    /// The thing to create exists already (e.g. the user name is taken).
    Conflict(String),
    /// The thing to change does not exist.
    NotFound(String),
    /// The request is not acceptable (e.g. an invite that expired).
    Refused(String),
    /// The writer thread is gone (shutdown or a failed commit).
    Unavailable(String),
}

impl std::fmt::Display for StorageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StorageError::Sqlite(e) => write!(f, "database error: {e}"),
            StorageError::Conflict(s) | StorageError::NotFound(s) | StorageError::Refused(s) => {
                f.write_str(s)
            }
            StorageError::Unavailable(s) => write!(f, "database unavailable: {s}"),
        }
    }
}

impl std::error::Error for StorageError {}

impl From<rusqlite::Error> for StorageError {
    fn from(e: rusqlite::Error) -> Self {
        StorageError::Sqlite(e)
    }
}

pub type Result<T> = std::result::Result<T, StorageError>;

/// What a job hands back: whether it succeeded (else its savepoint is rolled back) and how to
/// answer its caller once the batch's fate is known.
type Reply = Box<dyn FnOnce(std::result::Result<(), String>) + Send>;
type Job = Box<dyn FnOnce(&Connection) -> (bool, Reply) + Send>;

/// A handle to the database; cheap to clone.
#[derive(Clone)]
pub struct Storage {
    jobs: std_mpsc::SyncSender<Job>,
    path: PathBuf,
    /// One read-only connection for long reads (archive pages), opened on first use, so they
    /// never wait behind the writer's batches nor hold them up (WAL gives each read a snapshot).
    reader: Arc<Mutex<Option<Connection>>>,
    /// One read-only connection for [`Storage::lookup`], opened on first use.
    lookup_conn: Arc<Mutex<Option<Connection>>>,
}

impl Storage {
    /// Opens (creating if needed) the database and migrates it to the current schema.
    pub fn open(path: &Path) -> Result<Storage> {
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir).map_err(|e| {
                    StorageError::Unavailable(format!(
                        "cannot create directory {}: {e}",
                        dir.display()
                    ))
                })?;
            }
        }
        let mut conn = Connection::open(path)?;
        configure(&conn)?;
        schema::migrate(&mut conn)?;
        let (tx, rx) = std_mpsc::sync_channel::<Job>(QUEUE_DEPTH);
        std::thread::Builder::new()
            .name("hearth-storage".into())
            .spawn(move || writer_loop(conn, rx))
            .map_err(|e| StorageError::Unavailable(format!("cannot start storage thread: {e}")))?;
        Ok(Storage {
            jobs: tx,
            path: path.to_path_buf(),
            reader: Arc::default(),
            lookup_conn: Arc::default(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Brings every module's tables up to date, at startup (blocks until committed).
    pub fn migrate_modules(
        &self,
        modules: &[(&'static str, &'static [&'static str])],
    ) -> Result<()> {
        let modules = modules.to_vec();
        let (tx, rx) = std_mpsc::sync_channel(1);
        let job: Job = Box::new(move |conn| {
            let mut result = Ok(());
            for (name, sql) in &modules {
                if let Err(e) = schema::migrate_module(conn, name, sql) {
                    result = Err(format!("module {name}: {e}"));
                    break;
                }
            }
            let ok = result.is_ok();
            let reply: Reply = Box::new(move |committed| {
                let _ = tx.send(result.and(committed));
            });
            (ok, reply)
        });
        self.jobs
            .send(job)
            .map_err(|_| StorageError::Unavailable("storage thread stopped".into()))?;
        rx.recv()
            .map_err(|_| StorageError::Unavailable("storage thread stopped".into()))?
            .map_err(StorageError::Unavailable)
    }

    /// Runs `f` on the writer thread inside the next batch; resolves after the batch committed.
    pub async fn call<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        self.submit(f).await?.await
    }

    /// Queues `f` for the writer thread's next batch and returns once it is queued; the returned
    /// future resolves after that batch committed. A caller can act meanwhile (deliver the
    /// message it is archiving) and wait for durability only where it promises it (before an
    /// acknowledgement), so a slow card's fsync is not on the way to the recipient.
    pub async fn submit<T, F>(&self, f: F) -> Result<Committed<T>>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let result = f(conn);
            let ok = result.is_ok();
            let reply: Reply = Box::new(move |committed| {
                let _ = tx.send(match committed {
                    Ok(()) => result,
                    Err(e) if ok => Err(StorageError::Unavailable(format!("commit failed: {e}"))),
                    Err(_) => result,
                });
            });
            (ok, reply)
        });
        // The queue is bounded; waiting for a slot is done off the async threads.
        let jobs = self.jobs.clone();
        match jobs.try_send(job) {
            Ok(()) => {}
            Err(std_mpsc::TrySendError::Full(job)) => {
                tokio::task::spawn_blocking(move || jobs.send(job))
                    .await
                    .map_err(|e| StorageError::Unavailable(e.to_string()))?
                    .map_err(|_| StorageError::Unavailable("storage thread stopped".into()))?;
            }
            Err(std_mpsc::TrySendError::Disconnected(_)) => {
                return Err(StorageError::Unavailable("storage thread stopped".into()))
            }
        }
        Ok(Committed(rx))
    }

    /// Resolves once everything queued for the writer before this call is committed (an empty
    /// batch writes nothing, so this costs no fsync of its own). Reads that must see a write
    /// whose result was already shown to a client wait for this first.
    pub async fn settled(&self) -> Result<()> {
        self.call(|_| Ok(())).await
    }

    /// A short read on the way of a stanza (a few indexed rows) on its own read-only
    /// connection, off the async threads: it never waits behind the writer's fsync nor behind a
    /// long archive page on [`Storage::read`]'s connection. Sees what was committed when it starts.
    pub async fn lookup<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        read_on(
            self.lookup_conn.clone(),
            self.path.clone(),
            LOOKUP_CACHE_KIB,
            f,
        )
        .await
    }

    /// Runs `f` on the read-only connection, off the async threads. It sees what was committed
    /// when it starts and never delays a write; reads take turns on the one connection.
    pub async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        read_on(self.reader.clone(), self.path.clone(), READER_CACHE_KIB, f).await
    }

    /// Copies a consistent snapshot of the live database to `dest`. A separate read-only
    /// connection does it, so the server keeps writing meanwhile (WAL gives the snapshot).
    pub async fn backup_to(&self, dest: PathBuf) -> Result<()> {
        let src = self.path.clone();
        tokio::task::spawn_blocking(move || backup_file(&src, &dest))
            .await
            .map_err(|e| StorageError::Unavailable(e.to_string()))?
    }

    /// `PRAGMA integrity_check`: "ok" when the file is sound.
    pub async fn integrity_check(&self) -> Result<String> {
        self.call(|conn| {
            Ok(conn.query_row("PRAGMA integrity_check", [], |r| r.get::<_, String>(0))?)
        })
        .await
    }
}

/// Snapshot of the database file at `src` into a new file `dest` (replaced if present).
pub fn backup_file(src: &Path, dest: &Path) -> Result<()> {
    use rusqlite::OpenFlags;
    let conn = Connection::open_with_flags(
        src,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    let _ = std::fs::remove_file(dest);
    conn.execute("VACUUM INTO ?1", [dest.to_string_lossy()])?;
    Ok(())
}

/// Runs `f` on the read-only connection in `slot` (opened on first use), off the async threads.
async fn read_on<T, F>(
    slot: Arc<Mutex<Option<Connection>>>,
    path: PathBuf,
    cache_kib: i64,
    f: F,
) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> Result<T> + Send + 'static,
{
    tokio::task::spawn_blocking(move || {
        let mut slot = slot.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            use rusqlite::OpenFlags;
            let conn = Connection::open_with_flags(
                &path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?;
            conn.busy_timeout(std::time::Duration::from_secs(5))?;
            conn.pragma_update(None, "cache_size", -cache_kib)?;
            *slot = Some(conn);
        }
        f(slot.as_ref().expect("opened above"))
    })
    .await
    .map_err(|e| StorageError::Unavailable(e.to_string()))?
}

/// What [`Storage::submit`] hands back: resolves with the job's result once its batch committed.
pub struct Committed<T>(oneshot::Receiver<Result<T>>);

impl<T> std::future::Future for Committed<T> {
    type Output = Result<T>;
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<T>> {
        std::pin::Pin::new(&mut self.0)
            .poll(cx)
            .map(|r| r.map_err(|_| StorageError::Unavailable("storage thread stopped".into()))?)
    }
}

fn configure(conn: &Connection) -> Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    // WAL: readers (hearth-web, hearthctl) never block the server. FULL: the commit that
    // acknowledges a message or account is on the card before anyone is told it happened.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", true)?;
    conn.pragma_update(None, "cache_size", -CACHE_KIB)?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    Ok(())
}

fn writer_loop(conn: Connection, rx: std_mpsc::Receiver<Job>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        run_batch(&conn, batch);
    }
}

fn run_batch(conn: &Connection, batch: Vec<Job>) {
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        let msg = e.to_string();
        // Without a transaction each job would commit alone: refuse them all instead.
        for job in batch {
            let (_, reply) = job(conn);
            reply(Err(msg.clone()));
        }
        let _ = conn.execute_batch("ROLLBACK");
        return;
    }
    let mut replies = Vec::with_capacity(batch.len());
    // If a savepoint cannot be made the transaction is unusable: the remaining jobs still run
    // (that is the only way to get their reply handles) but the whole batch is rolled back.
    let mut broken: Option<String> = None;
    for job in batch {
        if broken.is_none() {
            if let Err(e) = conn.execute_batch("SAVEPOINT job") {
                broken = Some(e.to_string());
            }
        }
        let (ok, reply) = job(conn);
        if broken.is_none() {
            if !ok {
                let _ = conn.execute_batch("ROLLBACK TO job");
            }
            let _ = conn.execute_batch("RELEASE job");
        }
        replies.push(reply);
    }
    let outcome = match broken {
        Some(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
        None => conn.execute_batch("COMMIT").map_err(|e| {
            log::error!("database commit failed: {e}");
            let _ = conn.execute_batch("ROLLBACK");
            e.to_string()
        }),
    };
    for reply in replies {
        reply(outcome.clone());
    }
}

pub(crate) fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
