//! [`StateError`]: why the checkpoint could not be opened, read or written.

use std::path::{Path, PathBuf};

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
