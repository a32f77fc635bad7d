//! The SQLite checkpoint: schema, migrations (user_version), one blocking owner. Never holds a
//! connection across an .await; never stores a secret.
//!
//! A [`State`] owns one dedicated OS thread, and that thread owns the only
//! [`rusqlite::Connection`]. Callers talk to it over a bounded channel: [`State::record`] queues
//! a write and returns at once, and the owner applies queued writes in batches (one transaction
//! per 4,096 writes, or 200 ms after the first one, or before any query or flush), so copying
//! never waits on a commit. Queries and flushes are request/response and see every write queued
//! before them. A run reads what earlier runs recorded through a [`Reader`].
//!
//! The file and its `<path>.lock` sidecar are created 0600 in directories created 0700 (SQLite
//! gives `-wal` and `-shm` the database's mode): the checkpoint names registries, repositories
//! and upload URLs, which are nobody else's business. A state directory writable by every user
//! is refused.
//! An exclusive lock on the sidecar keeps two ferry runs from interleaving their checkpoints.

mod cleanup;
mod error;
mod lookup;
mod migrations;
mod owner;
mod read;
mod records;

use std::fmt;
use std::fs::{DirBuilder, File, OpenOptions, Permissions, TryLockError};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;

pub use cleanup::Pruned;
pub use error::StateError;
pub use lookup::{KnownRefusal, ParkedUpload, Reader};
use owner::{Command, Owner};
pub use records::{
    BlobState, DeletionRecord, ItemRecord, ItemState, ItemStatus, RefusalState, RunId, RunOutcome,
    RunSummary, RunTotals, Snapshot, UploadState, Write, MAX_ERROR_CHARS,
};

/// The newest schema version this ferry reads and writes (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = migrations::SUPPORTED;

/// Handle to the checkpoint. Cheap to clone; the last clone dropped commits every queued write,
/// stops the owner thread and releases the lock.
#[derive(Clone)]
pub struct State {
    inner: Arc<Inner>,
}

impl fmt::Debug for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("State")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

struct Inner {
    path: PathBuf,
    tx: mpsc::SyncSender<Command>,
    thread: Option<JoinHandle<()>>,
    /// Held only for its lock, which the OS releases when this closes. Declared after `thread`
    /// so it drops after the owner thread has been joined and the connection closed.
    _lock: File,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Shutdown makes the owner commit what is queued and return; joining makes that happen
        // before the lock is released, so the next opener sees every write. A send error means
        // the thread already died, and join reports that, which we can only ignore in a drop.
        let _ = self.tx.send(Command::Shutdown);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Writes (and requests) waiting for the owner, at most: a few MiB. The owner applies some
/// 50,000 writes a second, far more than a run makes, so a caller waits for room only when the
/// disk stalls; without a bound, a stalled disk would grow the queue by a struct per item.
const QUEUE_WRITES: usize = 8192;

/// How long SQLite waits on a lock held by another connection (a `sqlite3` shell someone has
/// open, say) before failing; ferry itself never has two connections to one file.
const BUSY_TIMEOUT: Duration = Duration::from_millis(5000);

impl State {
    /// Opens the checkpoint at `path`, creating it (and missing parent directories, 0700) if
    /// needed, and brings its schema up to date.
    ///
    /// Blocks on file I/O and migrations; call it before the runtime gets busy, or from
    /// `spawn_blocking`.
    ///
    /// # Errors
    /// [`StateError::Locked`] while another `State` (in this process or another) has `path`
    /// open; [`StateError::NewerSchema`] for a file written by a newer ferry;
    /// [`StateError::Open`] or [`StateError::Sqlite`] for I/O and database errors.
    pub fn open(path: &Path) -> Result<State, StateError> {
        let path = path.to_path_buf();
        let open_err = |source| StateError::Open {
            path: path.clone(),
            source,
        };
        private_dir(&path)?;
        let lock = lock(&path)?;
        let conn = connect(&path)?;
        let (tx, rx) = mpsc::sync_channel(QUEUE_WRITES);
        let owner = Owner::new(conn, path.clone(), rx);
        let thread = std::thread::Builder::new()
            .name("ferry-state".into())
            .spawn(move || owner.run())
            .map_err(open_err)?;

        Ok(State {
            inner: Arc::new(Inner {
                path,
                tx,
                thread: Some(thread),
                _lock: lock,
            }),
        })
    }

    /// What the checkpoint at `path` holds, read without writing anything: no lock, no
    /// migration, no file created (an empty snapshot when there is none). For `ferry plan`,
    /// which must decide what a run would, from the same records, while writing nothing; it
    /// may run beside a run that holds the lock (SQLite's WAL lets a reader in).
    ///
    /// Loads every record: for tests and small files. A run, `ferry plan` and `ferry verify`
    /// ask a [`Reader`] ([`State::read_only`]) instead.
    pub fn read_only_snapshot(path: &Path) -> Result<Snapshot, StateError> {
        if !path.exists() {
            return Ok(Snapshot::default());
        }
        let sqlite_err = |source| StateError::from_sqlite(path, source);
        let conn = lookup::open_read_only(path, BUSY_TIMEOUT).map_err(sqlite_err)?;
        let found: i64 = conn
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .map_err(sqlite_err)?;
        if found > migrations::SUPPORTED {
            return Err(StateError::NewerSchema {
                path: path.to_path_buf(),
                found,
                supported: migrations::SUPPORTED,
            });
        }
        if found == 0 {
            return Ok(Snapshot::default());
        }
        read::snapshot(&conn).map_err(sqlite_err)
    }

    /// The checkpoint at `path` as it is now, to be asked record by record, read without
    /// writing anything: no lock, no migration, no file created (a reader that finds nothing
    /// when there is none). For `ferry plan` and `ferry verify`, which decide what a run would,
    /// from the same records, and may run beside a run that holds the lock (SQLite's WAL lets
    /// a reader in, and keeps its view whole while the run writes).
    pub fn read_only(path: &Path) -> Result<Reader, StateError> {
        Reader::open(path, BUSY_TIMEOUT)
    }

    /// The checkpoint as it is once every write queued so far is committed, to be asked
    /// record by record for as long as the reader lives, whatever is written meanwhile: what a
    /// run starts from. Dropping the reader lets SQLite fold the WAL back into the file.
    pub fn reader(&self) -> Result<Reader, StateError> {
        self.flush()?;
        Reader::open(self.path(), BUSY_TIMEOUT)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Starts a run: inserts a `runs` row with status `running`.
    pub fn begin_run(&self, plan_path: &str, plan_fingerprint: &str) -> Result<RunId, StateError> {
        let (plan_path, plan_fingerprint) = (plan_path.to_owned(), plan_fingerprint.to_owned());
        self.call(move |owner| owner.begin_run(&plan_path, &plan_fingerprint))
    }

    /// Everything recorded so far, including writes still queued. Loads every record: for
    /// tests; a run asks a [`Reader`] ([`State::reader`]) instead.
    pub fn snapshot(&self) -> Result<Snapshot, StateError> {
        self.call(|owner| owner.snapshot())
    }

    /// Queues a write and returns at once; it never waits on SQLite, unless the queue is full
    /// (the owner is thousands of writes behind, a stalled disk): then it waits for room. A
    /// write that fails (or cannot be queued because the owner stopped) is reported by the next
    /// [`State::flush`], [`State::flush_async`] or [`State::finish_run`].
    pub fn record(&self, write: Write) {
        // Ignoring a send error is safe: it means the owner is gone, and every later request
        // reports that as Closed.
        let _ = self.inner.tx.send(Command::Write(Box::new(write)));
    }

    /// Blocks until every write queued so far is committed; reports the first write error seen
    /// since the last flush, if any.
    pub fn flush(&self) -> Result<(), StateError> {
        self.call(|owner| owner.take_write_error())
    }

    /// [`State::flush`] for async code: waits without blocking the runtime thread.
    pub async fn flush_async(&self) -> Result<(), StateError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send(Command::Call(Box::new(move |owner| {
            let _ = tx.send(owner.take_write_error());
        })))?;
        rx.await.map_err(|_| self.closed())?
    }

    /// Ends a run: commits every queued write, then sets `ended_at`, the status and the totals.
    /// Also reports a write error seen since the last flush, after storing the outcome.
    pub fn finish_run(
        &self,
        run: RunId,
        outcome: RunOutcome,
        totals: &RunTotals,
    ) -> Result<(), StateError> {
        let totals = *totals;
        self.call(move |owner| {
            owner.finish_run(run, outcome, &totals)?;
            owner.take_write_error()
        })
    }

    /// One run's summary (`None`: the latest run); `Ok(None)` if there is no such run.
    pub fn run_summary(&self, run: Option<RunId>) -> Result<Option<RunSummary>, StateError> {
        self.call(move |owner| owner.run_summary(run))
    }

    /// The deletions of `run` (`None`: the last run that deleted something), in the order
    /// they were made, with what each kept for `ferry restore`; `Ok(None)` when that run
    /// deleted nothing (or there is none).
    pub fn deletions(
        &self,
        run: Option<RunId>,
    ) -> Result<Option<(RunId, Vec<DeletionRecord>)>, StateError> {
        self.call(move |owner| owner.deletions(run))
    }

    /// Every upload session an earlier run left that can be continued (its hash state kept),
    /// ordered by target and digest.
    pub fn parked_uploads(&self) -> Result<Vec<ParkedUpload>, StateError> {
        self.call(|owner| owner.query(|conn| lookup::parked_uploads(conn, migrations::SUPPORTED)))
    }

    /// Every deletion a registry refused for good, as `((registry, repo, digest), refusal)`,
    /// ordered by that key.
    pub fn refusals(&self) -> Result<Vec<KnownRefusal>, StateError> {
        self.call(|owner| owner.query(lookup::all_refusals))
    }

    /// Deletes the rows of runs older than the newest `keep` (their deletions, and their
    /// `runs` row where no item's latest record names it) and compacts the file when much of
    /// it was freed. Runs after every queued write; the latest record of every item stays.
    pub fn prune_runs(&self, keep: u32) -> Result<Pruned, StateError> {
        self.call(move |owner| owner.query_mut(|conn| cleanup::prune_runs(conn, keep)))
    }

    /// When the last run that succeeded ended (unix seconds, as `ended_at`); `None` when no
    /// run of this checkpoint succeeded. A failed run's metrics carry it over.
    pub fn last_success(&self) -> Result<Option<i64>, StateError> {
        self.call(|owner| owner.last_success())
    }

    /// Runs `f` on the owner thread, after every write queued before it, and waits for the
    /// answer.
    fn call<T, F>(&self, f: F) -> Result<T, StateError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Owner) -> Result<T, StateError> + Send + 'static,
    {
        // A std channel, not a tokio oneshot: its blocking receive does not panic when a caller
        // on a runtime thread uses the blocking API.
        let (tx, rx) = mpsc::sync_channel::<Result<T, StateError>>(1);
        self.send(Command::Call(Box::new(move |owner| {
            let _ = tx.send(f(owner));
        })))?;
        rx.recv().map_err(|_| self.closed())?
    }

    fn send(&self, command: Command) -> Result<(), StateError> {
        self.inner.tx.send(command).map_err(|_| self.closed())
    }

    fn closed(&self) -> StateError {
        StateError::Closed {
            path: self.inner.path.clone(),
        }
    }
}

/// The directory of the state file at `path`, created 0700 where missing, and refused when
/// every user may write to it.
fn private_dir(path: &Path) -> Result<(), StateError> {
    let open_err = |source| StateError::Open {
        path: path.to_path_buf(),
        source,
    };
    let dir = match path.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(parent) => {
            // Only directories this creates get 0700; existing ones are the user's choice,
            // within reason (below).
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(|e| {
                    // Through a regular file, mkdir -p says "File exists": name the file.
                    let file = parent.ancestors().find(|a| a.exists() && !a.is_dir());
                    match (e.kind(), file) {
                        (std::io::ErrorKind::AlreadyExists, Some(file)) => {
                            open_err(std::io::Error::new(
                                std::io::ErrorKind::NotADirectory,
                                format!("{} is a file, not a directory", file.display()),
                            ))
                        }
                        _ => open_err(e),
                    }
                })?;
            parent.to_path_buf()
        }
        None => PathBuf::from("."),
    };
    // World-writable (even with the sticky bit, as /tmp): another user could pre-create
    // the lock, -wal or -shm file, or a symlink in their place, before ferry does.
    let mode = std::fs::metadata(&dir)
        .map_err(open_err)?
        .permissions()
        .mode()
        & 0o7777;
    if mode & 0o002 != 0 {
        return Err(StateError::UnsafeDirectory {
            path: path.to_path_buf(),
            dir,
            mode,
        });
    }
    Ok(())
}

/// The exclusive lock on `<path>.lock`, taken before the database is touched, so a second run
/// cannot chmod, migrate or read a file the first one is halfway through writing. The lock
/// file is never deleted: unlinking it while another opener holds it open would let two runs
/// lock two files.
fn lock(path: &Path) -> Result<File, StateError> {
    let open_err = |source| StateError::Open {
        path: path.to_path_buf(),
        source,
    };
    let mut lock_path = path.to_path_buf().into_os_string();
    lock_path.push(".lock");
    let lock_path = PathBuf::from(lock_path);
    let lock = create_private(&lock_path).map_err(open_err)?;
    match lock.try_lock() {
        Ok(()) => Ok(lock),
        Err(TryLockError::WouldBlock) => Err(StateError::Locked {
            path: path.to_path_buf(),
            lock: lock_path,
        }),
        Err(TryLockError::Error(e)) => Err(open_err(e)),
    }
}

/// The connection to the (locked) database at `path`: created 0600, configured, its schema
/// brought up to date, and runs a crash left `running` marked `killed`.
fn connect(path: &Path) -> Result<Connection, StateError> {
    // SQLite would create the file with 0644 (less the umask); create it first so the
    // database never exists with a looser mode. SQLite gives -wal and -shm files the mode of
    // the database file.
    drop(create_private(path).map_err(|source| StateError::Open {
        path: path.to_path_buf(),
        source,
    })?);
    let sqlite_err = |source| StateError::from_sqlite(path, source);
    let mut conn = Connection::open(path).map_err(sqlite_err)?;
    configure(&conn).map_err(sqlite_err)?;
    migrations::migrate(&mut conn).map_err(|e| match e {
        migrations::MigrateError::Sqlite(source) => sqlite_err(source),
        migrations::MigrateError::Newer(found) => StateError::NewerSchema {
            path: path.to_path_buf(),
            found,
            supported: migrations::SUPPORTED,
        },
    })?;
    // The lock is ours, so no run is alive: a run still marked `running` died without a
    // clean exit (SIGKILL, OOM, power loss). Say so instead of leaving it running forever.
    conn.execute(
        "UPDATE runs SET status = 'killed' WHERE status = 'running'",
        [],
    )
    .map_err(sqlite_err)?;
    Ok(conn)
}

/// Opens (creating if missing) a file that only its owner may read, and tightens an existing
/// one that is more open than 0600.
fn create_private(path: &Path) -> std::io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)?;
    // `mode` applies only when the file is created; a file left by an older tool, or copied in
    // with a 0644 umask, still has to be closed off.
    let mode = file.metadata()?.permissions().mode();
    if mode & 0o077 != 0 {
        file.set_permissions(Permissions::from_mode(0o600))?;
    }
    Ok(file)
}

/// Connection settings, applied on every open (only `journal_mode` persists in the file).
fn configure(conn: &Connection) -> rusqlite::Result<()> {
    // WAL: readers never block the writer, and a commit is an append instead of a rewrite.
    let mode: String =
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        // Some filesystems (network mounts) cannot do WAL; SQLite then keeps the old mode,
        // which is slower but just as safe.
        tracing::debug!(journal_mode = %mode, "state file: WAL unavailable");
    }
    // NORMAL in WAL mode: a power cut may lose the last commits but never corrupts the file;
    // losing a few checkpoint rows only means re-checking a few images.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(())
}

#[cfg(test)]
mod lookup_tests;
#[cfg(test)]
mod restore_tests;
#[cfg(test)]
mod runs_tests;
#[cfg(test)]
mod tests;
