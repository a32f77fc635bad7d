//! The SQLite checkpoint: schema, migrations (user_version), one blocking owner. Never holds a
//! connection across an .await; never stores a secret.
//!
//! A [`State`] owns one dedicated OS thread, and that thread owns the only
//! [`rusqlite::Connection`]. Callers talk to it over a channel: [`State::record`] queues a write
//! and returns at once, and the owner commits queued writes in batches (one transaction per 500
//! writes, or 200 ms after the first one, or before any query or flush), so copying never waits
//! on the disk. Queries and flushes are request/response and see every write queued before them.
//!
//! The file and its `<path>.lock` sidecar are created 0600 in directories created 0700 (SQLite
//! gives `-wal` and `-shm` the database's mode): the checkpoint names registries, repositories
//! and upload URLs, which are nobody else's business. A state directory writable by every user
//! is refused.
//! An exclusive lock on the sidecar keeps two ferry runs from interleaving their checkpoints.

mod owner;
mod schema;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs::{DirBuilder, File, OpenOptions, Permissions, TryLockError};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;

use owner::{Command, Owner};

/// The id of a row in `runs`, as SQLite assigns it.
pub type RunId = i64;

/// The newest schema version this ferry reads and writes (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = schema::SUPPORTED;

/// Why the checkpoint could not be opened, read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Creating the directory, the file or the lock file failed.
    #[error("cannot open state file {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("state file {path}")]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    /// SQLite could not write: the disk is full, a quota or file-size limit was reached, or
    /// the device failed. Every transaction is atomic, so what was committed before stands.
    #[error(
        "cannot write state file {path} (is the disk full, or a quota or file-size limit \
         reached?); what was saved before is intact"
    )]
    Write {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    /// The directory of the state file is writable by every user. Refused rather than
    /// fixed, as ssh does with loose key files: changing the mode of a directory ferry did
    /// not create would surprise whoever shares it on purpose.
    #[error(
        "state file {path}: its directory {dir} is writable by every user (mode {mode:o}), so \
         anyone could replace the checkpoint or plant its -wal, -shm or .lock file; keep the \
         state in a private directory (`chmod o-w {dir}`, or another --state)"
    )]
    UnsafeDirectory {
        path: PathBuf,
        dir: PathBuf,
        mode: u32,
    },
    #[error(
        "state file {path} is in use by another ferry run (lock {lock} is held); wait for it to \
         finish or use another --state"
    )]
    Locked { path: PathBuf, lock: PathBuf },
    #[error(
        "state file {path} has schema version {found}, newer than this ferry understands \
         ({supported}); use a newer ferry"
    )]
    NewerSchema {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    /// The owner thread is gone (it panicked); nothing more can be read or written.
    #[error("the state writer for {path} stopped")]
    Closed { path: PathBuf },
}

/// One change to the checkpoint, queued by [`State::record`].
///
/// Callers must never pass credentials in any field: no `user:password@` or bearer tokens in
/// URLs, no `Authorization` headers or token responses in error texts. This module stores what
/// it is given; the file is 0600, but it outlives the run and ends up attached to bug reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// Upsert one copy item, keyed `(target_registry, target_repo, target_ref)`.
    Item(ItemRecord),
    /// A blob known present in `repo` at target registry `registry`; keyed `(registry, digest)`,
    /// so a later record for another repository replaces the repository (any one will do as a
    /// cross-repository mount source).
    Blob {
        registry: String,
        digest: String,
        size: u64,
        repo: String,
    },
    /// An upload in progress: where to resume it and how many bytes the registry has.
    Upload {
        registry: String,
        repo: String,
        digest: String,
        url: String,
        offset: u64,
    },
    /// The upload completed (or was abandoned); its row is deleted.
    UploadFinished {
        registry: String,
        repo: String,
        digest: String,
    },
    /// A manifest was deleted from `repo` of target registry `registry`: forget the items
    /// whose target reference (tag or digest) is one of `refs`, so no later run trusts them.
    Forget {
        registry: String,
        repo: String,
        refs: Vec<String>,
    },
    /// The source digest `tag` pointed to when last seen.
    TagSeen {
        registry: String,
        repo: String,
        tag: String,
        digest: String,
    },
    /// A manifest retention deleted, for audits (and restores where the registry allows).
    Deletion {
        run: RunId,
        registry: String,
        repo: String,
        digest: String,
        /// The tags it had, comma-separated.
        tags: String,
        reason: String,
        /// The registry's own id for it (a GHCR package version id), where it has one.
        version_id: Option<String>,
    },
}

/// Where one copy item stands. Stored as `pending`, `done`, `failed`, `skipped`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ItemStatus {
    Pending,
    Done,
    Failed,
    Skipped,
}

impl ItemStatus {
    /// The text stored in the `status` column.
    pub fn as_str(self) -> &'static str {
        match self {
            ItemStatus::Pending => "pending",
            ItemStatus::Done => "done",
            ItemStatus::Failed => "failed",
            ItemStatus::Skipped => "skipped",
        }
    }

    fn parse(s: &str) -> Option<ItemStatus> {
        Some(match s {
            "pending" => ItemStatus::Pending,
            "done" => ItemStatus::Done,
            "failed" => ItemStatus::Failed,
            "skipped" => ItemStatus::Skipped,
            _ => return None,
        })
    }
}

impl fmt::Display for ItemStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One copy item as the engine reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemRecord {
    pub run: RunId,
    /// The source repository as users write it, e.g. `docker.io/library/nginx`.
    pub source: String,
    /// Tag or digest at the source.
    pub source_ref: String,
    pub source_digest: Option<String>,
    /// A registry host such as `ghcr.io`, or `oci:` for an image layout.
    pub target_registry: String,
    pub target_repo: String,
    /// The tag, or the digest for an untagged copy.
    pub target_ref: String,
    pub status: ItemStatus,
    /// Stored as given: the engine knows whether a retry counts.
    pub attempts: u32,
    /// Stored truncated to [`MAX_ERROR_CHARS`] characters.
    pub last_error: Option<String>,
    pub bytes: u64,
    /// The digest the target holds for it, when done (the source's, or a rewritten index's).
    pub target_digest: Option<String>,
    /// Unix seconds when the target was last confirmed to hold it (copied or found there).
    pub verified_at: Option<i64>,
}

/// `last_error` is cut to this many characters: enough for any error chain ferry prints, and a
/// bound on what a registry's error body can make us store.
pub const MAX_ERROR_CHARS: usize = 2000;

/// How a run ended. Stored as `succeeded`, `partial`, `interrupted`, `failed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunOutcome {
    Succeeded,
    Partial,
    Interrupted,
    Failed,
}

impl RunOutcome {
    /// The text stored in the `runs.status` column.
    pub fn as_str(self) -> &'static str {
        match self {
            RunOutcome::Succeeded => "succeeded",
            RunOutcome::Partial => "partial",
            RunOutcome::Interrupted => "interrupted",
            RunOutcome::Failed => "failed",
        }
    }
}

impl fmt::Display for RunOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A run's counters, as the engine counted them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunTotals {
    pub copied: u64,
    pub present: u64,
    pub failed: u64,
    /// Referrers not carried on purpose (what they refer to failed, was not copied, or was
    /// rewritten to a new digest).
    pub skipped: u64,
    /// Items not started or not finished because of SIGINT/SIGTERM (the next run continues
    /// them).
    pub interrupted: u64,
    pub bytes: u64,
    /// Manifests retention deleted.
    pub deleted: u64,
}

/// Everything a resuming run needs, read in one go at startup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Keyed `(target_registry, target_repo, target_ref)`.
    pub items: HashMap<(String, String, String), ItemState>,
    /// Keyed `(registry, digest)`.
    pub blobs: HashMap<(String, String), BlobState>,
    /// Keyed `(registry, repo, digest)`.
    pub uploads: HashMap<(String, String, String), UploadState>,
    /// `(registry, repo, tag)` to the digest last seen.
    pub tags: HashMap<(String, String, String), String>,
}

/// A copy item as last recorded, by any run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemState {
    pub source: String,
    pub source_ref: String,
    pub source_digest: Option<String>,
    pub status: ItemStatus,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub target_digest: Option<String>,
    pub verified_at: Option<i64>,
}

/// A blob known present at a target registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobState {
    pub repo: String,
    pub size: u64,
}

/// An upload that can be resumed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadState {
    pub url: String,
    pub offset: u64,
}

/// One run, for `ferry status` and the end-of-run report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSummary {
    pub id: RunId,
    pub plan_path: String,
    pub plan_fingerprint: String,
    /// Unix seconds.
    pub started_at: i64,
    /// Unix seconds; `None` while running, or if the run died without finishing.
    pub ended_at: Option<i64>,
    /// `running`, `killed` (it died without a clean exit), or a [`RunOutcome`] as text.
    pub status: String,
    pub totals: RunTotals,
    /// This run's items counted by status text. An item a later run touched again counts for
    /// the later run only: items are keyed by target, not by run.
    pub items_by_status: BTreeMap<String, u64>,
    /// This run's failed items as (`source:ref -> target:ref`, last error), ordered by target.
    /// Digest references are written with `@`.
    pub failures: Vec<(String, String)>,
    /// This run's deletions as (`registry/repo@digest`, tags, reason), in deletion order.
    pub deletions: Vec<(String, String, String)>,
}

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
    tx: mpsc::Sender<Command>,
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

/// Writes pending in the owner before it commits them.
const BATCH_WRITES: usize = 500;
/// How long the first pending write waits for company before the owner commits anyway: bounds
/// what a crash loses without paying an fsync per write.
const BATCH_DELAY: Duration = Duration::from_millis(200);
/// How long SQLite waits on a lock held by another connection (a `sqlite3` shell someone has
/// open, say) before failing; ferry itself never has two connections to one file.
const BUSY_TIMEOUT: Duration = Duration::from_millis(5000);

impl StateError {
    /// A SQLite error on `path`: [`StateError::Write`] when writing failed (a full disk says
    /// so), else [`StateError::Sqlite`].
    pub(crate) fn from_sqlite(path: &Path, source: rusqlite::Error) -> StateError {
        use rusqlite::ffi;
        let write_failed = match &source {
            rusqlite::Error::SqliteFailure(e, _) => match e.code {
                rusqlite::ErrorCode::DiskFull => true,
                // I/O errors other than reads: write, fsync, truncate, growing -shm…
                rusqlite::ErrorCode::SystemIoFailure => !matches!(
                    e.extended_code,
                    ffi::SQLITE_IOERR_READ | ffi::SQLITE_IOERR_SHORT_READ
                ),
                _ => false,
            },
            _ => false,
        };
        let path = path.to_path_buf();
        match write_failed {
            true => StateError::Write { path, source },
            false => StateError::Sqlite { path, source },
        }
    }
}

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
            return Err(StateError::UnsafeDirectory { path, dir, mode });
        }

        // Lock before touching the database, so a second run cannot chmod, migrate or read a
        // file the first one is halfway through writing. The lock file is never deleted:
        // unlinking it while another opener holds it open would let two runs lock two files.
        let mut lock_path = path.clone().into_os_string();
        lock_path.push(".lock");
        let lock_path = PathBuf::from(lock_path);
        let lock = create_private(&lock_path).map_err(open_err)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(StateError::Locked {
                    path,
                    lock: lock_path,
                })
            }
            Err(TryLockError::Error(e)) => return Err(open_err(e)),
        }

        // SQLite would create the file with 0644 (less the umask); create it first so the
        // database never exists with a looser mode. SQLite gives -wal and -shm files the mode of
        // the database file.
        drop(create_private(&path).map_err(open_err)?);

        let sqlite_err = |source| StateError::from_sqlite(&path, source);
        let mut conn = Connection::open(&path).map_err(sqlite_err)?;
        configure(&conn).map_err(sqlite_err)?;
        schema::migrate(&mut conn).map_err(|e| match e {
            schema::MigrateError::Sqlite(source) => sqlite_err(source),
            schema::MigrateError::Newer(found) => StateError::NewerSchema {
                path: path.clone(),
                found,
                supported: schema::SUPPORTED,
            },
        })?;
        // The lock is ours, so no run is alive: a run still marked `running` died without a
        // clean exit (SIGKILL, OOM, power loss). Say so instead of leaving it running forever.
        conn.execute(
            "UPDATE runs SET status = 'killed' WHERE status = 'running'",
            [],
        )
        .map_err(sqlite_err)?;

        let (tx, rx) = mpsc::channel();
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
    pub fn read_only_snapshot(path: &Path) -> Result<Snapshot, StateError> {
        if !path.exists() {
            return Ok(Snapshot::default());
        }
        let sqlite_err = |source| StateError::from_sqlite(path, source);
        let conn = Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(sqlite_err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(sqlite_err)?;
        let found: i64 = conn
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .map_err(sqlite_err)?;
        if found > schema::SUPPORTED {
            return Err(StateError::NewerSchema {
                path: path.to_path_buf(),
                found,
                supported: schema::SUPPORTED,
            });
        }
        if found == 0 {
            return Ok(Snapshot::default());
        }
        owner::read_snapshot(&conn).map_err(sqlite_err)
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

    /// Everything recorded so far, including writes still queued.
    pub fn snapshot(&self) -> Result<Snapshot, StateError> {
        self.call(|owner| owner.snapshot())
    }

    /// Queues a write and returns at once; it never waits on SQLite. A write that fails (or
    /// cannot be queued because the owner stopped) is reported by the next [`State::flush`],
    /// [`State::flush_async`] or [`State::finish_run`].
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
mod tests;
