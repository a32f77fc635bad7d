//! [`Reader`]: the checkpoint as a run found it, asked one record at a time.
//!
//! A run used to load every record into maps when it started; at 100,000 items that is tens of
//! MiB held for the whole run. A `Reader` holds one read-only connection with a read
//! transaction opened when the run starts instead: SQLite's WAL keeps that transaction's view
//! (the file as it was then) however much the run writes meanwhile, so each lookup answers as
//! the old snapshot did, from an index, and memory stays that of SQLite's page cache. A dry
//! run (`ferry plan`, `ferry verify`) reads through the same type, so it decides from the very
//! same answers.
//!
//! The price of the long read transaction: the writer cannot checkpoint the WAL past it, so
//! the `-wal` file holds every page the run writes until the reader closes (a few hundred
//! bytes per item; the last connection to close folds it back and removes it).

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Row};

use super::error::StateError;
use super::migrations;
use super::read::{status_at, to_u64};
use super::records::{ItemState, RefusalState, UploadState};

/// `(registry, repo, digest)` of a target, and the upload session parked there.
pub type ParkedUpload = ((String, String, String), UploadState);

/// `(registry, repo, digest)` of a manifest, and the registry's refusal to delete it.
pub type KnownRefusal = ((String, String, String), RefusalState);

/// A consistent, read-only view of the checkpoint: the file as it was when the reader was
/// opened. Cheap lookups by key; `Sync`, so the engine's tasks share one.
pub struct Reader {
    path: PathBuf,
    /// `None`: there is no checkpoint (yet); every lookup finds nothing.
    conn: Option<Mutex<Connection>>,
    /// The file's schema version: a file read without migrating it (`ferry plan`) may be old.
    version: i64,
    /// The private copy `conn` reads instead of the checkpoint, where it has no WAL. Declared
    /// after `conn`, so the connection closes before the file goes.
    _copy: Option<PrivateCopy>,
}

/// A file only its owner may read, deleted when dropped.
struct PrivateCopy(PathBuf);

impl Drop for PrivateCopy {
    fn drop(&mut self) {
        // Nothing to do about a failure here: the file is in the temporary directory, 0600.
        let _ = std::fs::remove_file(&self.0);
    }
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("path", &self.path)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl Reader {
    /// A reader that finds nothing: a checkpoint that does not exist.
    pub fn empty(path: &Path) -> Reader {
        Reader {
            path: path.to_path_buf(),
            conn: None,
            version: 0,
            _copy: None,
        }
    }

    /// Opens `path` read-only, writing nothing: no lock, no migration, no file created (an
    /// empty reader when there is none). Its view is fixed at once.
    pub(super) fn open(path: &Path, busy: Duration) -> Result<Reader, StateError> {
        if !path.exists() {
            return Ok(Reader::empty(path));
        }
        let sqlite_err = |source| StateError::from_sqlite(path, source);
        let conn = open_read_only(path, busy).map_err(sqlite_err)?;
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .map_err(sqlite_err)?;
        if version > migrations::SUPPORTED {
            return Err(StateError::NewerSchema {
                path: path.to_path_buf(),
                found: version,
                supported: migrations::SUPPORTED,
            });
        }
        if version == 0 {
            return Ok(Reader::empty(path));
        }
        let mode: String = conn
            .pragma_query_value(None, "journal_mode", |row| row.get(0))
            .map_err(sqlite_err)?;
        let (conn, copy) = match mode.eq_ignore_ascii_case("wal") {
            true => (conn, None),
            false => {
                let (copy, file) = private_copy(&conn, path, busy)?;
                (copy, Some(file))
            }
        };
        // BEGIN alone takes no snapshot; the first read does. Reading the schema fixes the
        // view before anything else is written.
        conn.execute_batch("BEGIN; SELECT COUNT(*) FROM sqlite_master;")
            .map_err(sqlite_err)?;
        Ok(Reader {
            path: path.to_path_buf(),
            conn: Some(Mutex::new(conn)),
            version,
            _copy: copy,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on the connection; `default` without one.
    ///
    /// Called from the engine's async tasks: each query is one or a few B-tree lookups on an
    /// index (microseconds, pages mostly in SQLite's cache or the OS's), shorter than a hop to
    /// a blocking thread and back would be, so it runs in place. The mutex is held for that
    /// query only, never across an `.await`.
    fn with<T>(
        &self,
        default: T,
        f: impl FnOnce(&Connection, i64) -> rusqlite::Result<T>,
    ) -> Result<T, StateError> {
        let Some(conn) = &self.conn else {
            return Ok(default);
        };
        // A panic while holding the lock cannot leave the connection half-changed (it only
        // reads), so a poisoned lock is still usable.
        let conn = conn.lock().unwrap_or_else(|e| e.into_inner());
        f(&conn, self.version).map_err(|e| StateError::from_sqlite(&self.path, e))
    }

    /// The record of the item with this target key, by any run.
    pub fn item(
        &self,
        registry: &str,
        repo: &str,
        reference: &str,
    ) -> Result<Option<ItemState>, StateError> {
        self.with(None, |conn, version| {
            item(conn, version, registry, repo, reference)
        })
    }

    /// Does the checkpoint record any item?
    pub fn has_items(&self) -> Result<bool, StateError> {
        self.with(false, |conn, _| {
            conn.prepare_cached("SELECT EXISTS (SELECT 1 FROM items)")?
                .query_row([], |row| row.get(0))
        })
    }

    /// A repository of target registry `registry` recorded holding the blob.
    pub fn blob_repo(&self, registry: &str, digest: &str) -> Result<Option<String>, StateError> {
        self.with(None, |conn, _| {
            conn.prepare_cached("SELECT repo FROM blobs WHERE registry = ?1 AND digest = ?2")?
                .query_row(params![registry, digest], |row| row.get(0))
                .optional()
        })
    }

    /// Has any run recorded writing into `repo` of target registry `registry`: an item, a
    /// blob, an upload session?
    pub fn knows_target(&self, registry: &str, repo: &str) -> Result<bool, StateError> {
        self.with(false, |conn, _| {
            conn.prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM items
                                WHERE target_registry = ?1 AND target_repo = ?2)
                     OR EXISTS (SELECT 1 FROM blobs WHERE registry = ?1 AND repo = ?2)
                     OR EXISTS (SELECT 1 FROM uploads WHERE registry = ?1 AND repo = ?2)",
            )?
            .query_row(params![registry, repo], |row| row.get(0))
        })
    }

    /// The upload session recorded for this blob at this target repository.
    pub fn upload(
        &self,
        registry: &str,
        repo: &str,
        digest: &str,
    ) -> Result<Option<UploadState>, StateError> {
        self.with(None, |conn, version| {
            conn.prepare_cached(&format!(
                "SELECT url, offset, {}, size, source FROM uploads
                 WHERE registry = ?1 AND repo = ?2 AND digest = ?3",
                upload_columns(version)
            ))?
            .query_row(params![registry, repo, digest], |row| upload_state(row, 0))
            .optional()
        })
    }

    /// Every upload session that can be continued (one whose hash state was kept).
    pub fn parked_uploads(&self) -> Result<Vec<ParkedUpload>, StateError> {
        self.with(Vec::new(), parked_uploads)
    }

    /// What registries refused for good to delete in `repo`, by digest.
    pub fn refusals(
        &self,
        registry: &str,
        repo: &str,
    ) -> Result<Vec<(String, RefusalState)>, StateError> {
        self.with(Vec::new(), |conn, version| {
            if version < 8 {
                return Ok(Vec::new());
            }
            let mut stmt = conn.prepare_cached(
                "SELECT digest, version_id, reason, first_at, last_at FROM refusals
                 WHERE registry = ?1 AND repo = ?2 ORDER BY digest",
            )?;
            let rows = stmt.query_map(params![registry, repo], |row| {
                Ok((row.get(0)?, refusal_state(row, 1)?))
            })?;
            rows.collect()
        })
    }

    /// Calls `f` with (registry, repo, reference, source, target digest) of every item whose
    /// target digest is recorded, one row at a time.
    pub fn each_copied(
        &self,
        mut f: impl FnMut(String, String, String, String, String),
    ) -> Result<(), StateError> {
        self.with((), |conn, version| {
            if version < 3 {
                return Ok(());
            }
            let mut stmt = conn.prepare_cached(
                "SELECT target_registry, target_repo, target_ref, source, target_digest
                 FROM items WHERE target_digest IS NOT NULL",
            )?;
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                f(
                    row.get(0)?,
                    row.get(1)?,
                    row.get(2)?,
                    row.get(3)?,
                    row.get(4)?,
                );
            }
            Ok(())
        })
    }

    /// Calls `f` with (registry, repo, tag, since) of every tag pruning found missing.
    pub fn each_missing(
        &self,
        mut f: impl FnMut(String, String, String, i64),
    ) -> Result<(), StateError> {
        self.with((), |conn, version| {
            if version < 6 {
                return Ok(());
            }
            let mut stmt = conn.prepare_cached("SELECT registry, repo, tag, since FROM missing")?;
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                f(row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?);
            }
            Ok(())
        })
    }
}

/// A copy of the checkpoint `conn` reads, in a file of the temporary directory only this user
/// may read, and a read-only connection to it. For a checkpoint without WAL (a filesystem
/// that cannot share memory): there a reader's open transaction would hold a shared lock that
/// keeps the run's writer from committing for the whole run.
fn private_copy(
    conn: &Connection,
    path: &Path,
    busy: Duration,
) -> Result<(Connection, PrivateCopy), StateError> {
    use std::os::unix::fs::OpenOptionsExt;
    static COPIES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COPIES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let file = std::env::temp_dir().join(format!("ferry-checkpoint-{}-{n}.db", std::process::id()));
    // Created empty, 0600 and new (never through a file someone planted), before SQLite
    // writes into it: VACUUM INTO takes an empty file.
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&file)
        .map_err(|source| StateError::Open {
            path: file.clone(),
            source,
        })?;
    let copy = PrivateCopy(file);
    let sqlite_err = |source| StateError::from_sqlite(path, source);
    let name = copy.0.to_str().ok_or_else(|| StateError::Open {
        path: copy.0.clone(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "not UTF-8"),
    })?;
    conn.execute("VACUUM INTO ?1", [name]).map_err(sqlite_err)?;
    let conn = open_read_only(&copy.0, busy).map_err(sqlite_err)?;
    Ok((conn, copy))
}

/// A read-only connection to `path`, for a [`Reader`] or a read that writes nothing.
pub(super) fn open_read_only(path: &Path, busy: Duration) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(busy)?;
    Ok(conn)
}

fn item(
    conn: &Connection,
    version: i64,
    registry: &str,
    repo: &str,
    reference: &str,
) -> rusqlite::Result<Option<ItemState>> {
    // A file read without migrating it (`ferry plan`) may predate version 3.
    let digests = match version {
        ..3 => "NULL, NULL",
        _ => "target_digest, verified_at",
    };
    conn.prepare_cached(&format!(
        "SELECT source, source_ref, source_digest, status, attempts, last_error, {digests}
         FROM items WHERE target_registry = ?1 AND target_repo = ?2 AND target_ref = ?3"
    ))?
    .query_row(params![registry, repo, reference], |row| {
        Ok(ItemState {
            source: row.get(0)?,
            source_ref: row.get(1)?,
            source_digest: row.get(2)?,
            status: status_at(row, 3)?,
            attempts: u32::try_from(row.get::<_, i64>(4)?).unwrap_or(u32::MAX),
            last_error: row.get(5)?,
            target_digest: row.get(6)?,
            verified_at: row.get(7)?,
        })
    })
    .optional()
}

/// The `hash_state` column, or NULL in a file older than version 5 (such an upload starts
/// over).
fn upload_columns(version: i64) -> &'static str {
    match version {
        ..5 => "NULL",
        _ => "hash_state",
    }
}

/// An [`UploadState`] from (url, offset, hash_state, size, source) starting at column `at`.
fn upload_state(row: &Row<'_>, at: usize) -> rusqlite::Result<UploadState> {
    Ok(UploadState {
        url: row.get(at)?,
        offset: to_u64(row.get(at + 1)?),
        hash_state: row.get(at + 2)?,
        size: to_u64(row.get(at + 3)?),
        source: row.get(at + 4)?,
    })
}

/// Every upload session with a kept hash state (a handful: sessions open when a run
/// stopped), ordered by target and digest.
pub(super) fn parked_uploads(
    conn: &Connection,
    version: i64,
) -> rusqlite::Result<Vec<ParkedUpload>> {
    if version < 5 {
        return Ok(Vec::new());
    }
    let mut stmt = conn.prepare_cached(
        "SELECT registry, repo, digest, url, offset, hash_state, size, source FROM uploads
         WHERE hash_state IS NOT NULL ORDER BY registry, repo, digest",
    )?;
    let rows = stmt.query_map([], |row| {
        Ok((
            (row.get(0)?, row.get(1)?, row.get(2)?),
            upload_state(row, 3)?,
        ))
    })?;
    rows.collect()
}

/// Every refusal the checkpoint remembers, as `((registry, repo, digest), refusal)`, ordered
/// by that key.
pub(super) fn all_refusals(conn: &Connection) -> rusqlite::Result<Vec<KnownRefusal>> {
    let mut stmt = conn.prepare_cached(
        "SELECT registry, repo, digest, version_id, reason, first_at, last_at FROM refusals
         ORDER BY registry, repo, digest",
    )?;
    let rows = stmt.query_map([], |row| {
        Ok((
            (row.get(0)?, row.get(1)?, row.get(2)?),
            refusal_state(row, 3)?,
        ))
    })?;
    rows.collect()
}

/// A [`RefusalState`] from (version_id, reason, first_at, last_at) starting at column `at`.
fn refusal_state(row: &Row<'_>, at: usize) -> rusqlite::Result<RefusalState> {
    Ok(RefusalState {
        version_id: row.get(at)?,
        reason: row.get(at + 1)?,
        first_at: row.get(at + 2)?,
        last_at: row.get(at + 3)?,
    })
}
