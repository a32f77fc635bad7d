//! The owner thread: the only code that holds the connection (its queries are in `read` and
//! `lookup`).
//!
//! It batches queued writes into transactions because a commit is what costs (a WAL append and,
//! every so often, an fsync); per-row inserts inside one transaction are cheap. Each write is
//! applied as it arrives, inside the open transaction, so nothing waits in memory but what the
//! bounded queue holds.

use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection};

use super::error::StateError;
use super::records::{
    DeletionRecord, ItemRecord, RunId, RunOutcome, RunSummary, RunTotals, Snapshot, Write,
    MAX_ERROR_CHARS,
};

/// Writes in one transaction before the owner commits it. A run of 100,000 items queues some
/// 300,000 writes; at this size that is under a hundred commits, and the WAL holds few copies
/// of the same page (each commit appends every page it changed).
const BATCH_WRITES: usize = 4096;
/// How long the first write of a batch waits for company before the owner commits anyway:
/// bounds what a crash loses without paying a commit per write.
pub(super) const BATCH_DELAY: Duration = Duration::from_millis(200);
/// How long the owner sleeps, a batch open and the queue empty, before it looks again.
const GATHER: Duration = Duration::from_millis(5);

/// A request run on the owner thread; it sends its own reply.
pub(super) type Job = Box<dyn FnOnce(&mut Owner) + Send>;

pub(super) enum Command {
    Write(Box<Write>),
    /// Runs after every write queued before it is committed.
    Call(Job),
    /// Commit what is queued and stop.
    Shutdown,
}

pub(super) struct Owner {
    conn: Connection,
    path: PathBuf,
    rx: Receiver<Command>,
    /// Writes applied in the open transaction.
    batched: usize,
    /// When the open batch must be committed; `None` while there is none.
    deadline: Option<Instant>,
    /// Unix seconds when the open batch began: the `updated_at` of its rows.
    batch_now: i64,
    /// The first write error since the last flush. Writes are fire-and-forget, so this is how
    /// a failure reaches a caller at all.
    write_error: Option<StateError>,
}

impl Owner {
    pub(super) fn new(conn: Connection, path: PathBuf, rx: Receiver<Command>) -> Owner {
        Owner {
            conn,
            path,
            rx,
            batched: 0,
            deadline: None,
            batch_now: 0,
            write_error: None,
        }
    }

    pub(super) fn run(mut self) {
        loop {
            let received = match self.deadline {
                None => self.rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
                Some(deadline) => self
                    .rx
                    .recv_timeout(deadline.saturating_duration_since(Instant::now())),
            };
            let more = match received {
                Ok(command) => self.handle(command),
                Err(RecvTimeoutError::Timeout) => {
                    self.commit();
                    true
                }
                // Disconnected cannot happen while Inner holds the sender, but if it does the
                // right thing is the same as for Shutdown.
                Err(RecvTimeoutError::Disconnected) => false,
            };
            if !more || !self.drain() {
                break;
            }
            // While a batch is open, let the next writes gather for a moment: a writer
            // blocked in `recv` is woken (a futex call and two context switches) by every
            // write, two or three per item; asleep, it is woken by none.
            if let Some(deadline) = self.deadline {
                std::thread::sleep(GATHER.min(deadline.saturating_duration_since(Instant::now())));
            }
        }
        self.commit();
        if let Some(e) = self.write_error.take() {
            // Nobody flushed after the failure, so nobody else will ever hear of it.
            tracing::warn!("{}: writes were lost", crate::error::chain(&e));
        }
    }

    /// One command; `false` once told to stop.
    fn handle(&mut self, command: Command) -> bool {
        match command {
            Command::Write(write) => {
                self.write(&write);
                if self.batched >= BATCH_WRITES {
                    self.commit();
                }
                true
            }
            Command::Call(job) => {
                self.commit();
                job(self);
                true
            }
            Command::Shutdown => false,
        }
    }

    /// Everything queued now, committing when the batch's deadline passes meanwhile; `false`
    /// once told to stop.
    fn drain(&mut self) -> bool {
        loop {
            if self.deadline.is_some_and(|d| Instant::now() >= d) {
                self.commit();
            }
            match self.rx.try_recv() {
                Ok(command) => {
                    if !self.handle(command) {
                        return false;
                    }
                }
                Err(TryRecvError::Disconnected) => return false,
                Err(TryRecvError::Empty) => return true,
            }
        }
    }

    /// Applies one write in the open batch, opening one if there is none.
    fn write(&mut self, write: &Write) {
        if self.deadline.is_none() {
            self.deadline = Some(Instant::now() + BATCH_DELAY);
            self.batch_now = unix_now();
            // If BEGIN fails, the writes still go, each in its own transaction.
            if let Err(e) = self.conn.execute_batch("BEGIN") {
                self.failed(e);
            }
        }
        self.batched += 1;
        // One bad write (a foreign key to a run that does not exist, say) fails only its own
        // statement; SQLite keeps the transaction, so the rest of the batch still commits.
        if let Err(e) = apply_one(&self.conn, write, self.batch_now) {
            self.failed(e);
        }
    }

    /// Commits the open batch, if any.
    fn commit(&mut self) {
        self.deadline = None;
        self.batched = 0;
        // An error that made SQLite roll the transaction back (a full disk) leaves nothing to
        // commit; it was recorded when it happened.
        if self.conn.is_autocommit() {
            return;
        }
        if let Err(e) = self.conn.execute_batch("COMMIT") {
            self.failed(e);
            // Leave no transaction open for the next batch to nest in.
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }

    /// Keeps the first write error since the last flush, and says it at once, not only when
    /// the run ends: the copy goes on (it is idempotent), but an interruption from now on
    /// costs re-checking images.
    fn failed(&mut self, e: rusqlite::Error) {
        if self.write_error.is_none() {
            let e = self.err(e);
            tracing::warn!(
                "{}; the copy goes on without a checkpoint",
                crate::error::chain(&e)
            );
            self.write_error = Some(e);
        }
    }

    pub(super) fn take_write_error(&mut self) -> Result<(), StateError> {
        match self.write_error.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    pub(super) fn begin_run(
        &mut self,
        plan_path: &str,
        plan_fingerprint: &str,
    ) -> Result<RunId, StateError> {
        let result = self
            .conn
            .prepare_cached(
                "INSERT INTO runs (plan_path, plan_fingerprint, started_at, status)
                 VALUES (?1, ?2, ?3, 'running')",
            )
            .and_then(|mut stmt| stmt.execute(params![plan_path, plan_fingerprint, unix_now()]))
            .map(|_| self.conn.last_insert_rowid());
        result.map_err(|e| self.err(e))
    }

    pub(super) fn finish_run(
        &mut self,
        run: RunId,
        outcome: RunOutcome,
        totals: &RunTotals,
    ) -> Result<(), StateError> {
        let changed = self
            .conn
            .prepare_cached(
                "UPDATE runs SET ended_at = ?2, status = ?3, copied = ?4, present = ?5,
                        failed = ?6, skipped = ?7, interrupted = ?8, bytes = ?9,
                        deleted = ?10, unchanged = ?11, pruned = ?12
                 WHERE id = ?1",
            )
            .and_then(|mut stmt| {
                stmt.execute(params![
                    run,
                    unix_now(),
                    outcome.as_str(),
                    to_i64(totals.copied),
                    to_i64(totals.present),
                    to_i64(totals.failed),
                    to_i64(totals.skipped),
                    to_i64(totals.interrupted),
                    to_i64(totals.bytes),
                    to_i64(totals.deleted),
                    to_i64(totals.unchanged),
                    to_i64(totals.pruned),
                ])
            })
            .map_err(|e| self.err(e))?;
        if changed == 0 {
            // A run id that begin_run did not hand out: a caller bug, not worth its own variant.
            return Err(self.err(rusqlite::Error::QueryReturnedNoRows));
        }
        Ok(())
    }

    pub(super) fn snapshot(&mut self) -> Result<Snapshot, StateError> {
        super::read::snapshot(&self.conn).map_err(|e| self.err(e))
    }

    pub(super) fn run_summary(
        &mut self,
        run: Option<RunId>,
    ) -> Result<Option<RunSummary>, StateError> {
        super::read::run_summary(&self.conn, run).map_err(|e| self.err(e))
    }

    pub(super) fn deletions(
        &mut self,
        run: Option<RunId>,
    ) -> Result<Option<(RunId, Vec<DeletionRecord>)>, StateError> {
        super::read::deletion_records(&self.conn, run).map_err(|e| self.err(e))
    }

    pub(super) fn last_success(&mut self) -> Result<Option<i64>, StateError> {
        super::read::last_success(&self.conn).map_err(|e| self.err(e))
    }

    /// Runs a read on the connection.
    pub(super) fn query<T>(
        &mut self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StateError> {
        f(&self.conn).map_err(|e| self.err(e))
    }

    /// Runs `f` with the connection to itself (it may open transactions).
    pub(super) fn query_mut<T>(
        &mut self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StateError> {
        f(&mut self.conn).map_err(|e| self.err(e))
    }

    fn err(&self, source: rusqlite::Error) -> StateError {
        StateError::from_sqlite(&self.path, source)
    }
}

fn apply_one(conn: &Connection, write: &Write, now: i64) -> rusqlite::Result<()> {
    match write {
        Write::Item(item) => {
            upsert_item(conn, item, now)?;
        }
        Write::Forget {
            registry,
            repo,
            refs,
        } => {
            let mut stmt = conn.prepare_cached(
                "DELETE FROM items
                 WHERE target_registry = ?1 AND target_repo = ?2 AND target_ref = ?3",
            )?;
            for r in refs {
                stmt.execute(params![registry, repo, r])?;
            }
            not_missing(conn, registry, repo, refs)?;
        }
        Write::Missing { .. } | Write::NotMissing { .. } => apply_missing(conn, write)?,
        Write::Refusal { .. } => apply_refusal(conn, write, now)?,
        Write::Blob {
            registry,
            digest,
            size,
            repo,
        } => {
            conn.prepare_cached(
                "INSERT INTO blobs (registry, digest, size, repo, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (registry, digest) DO UPDATE SET
                     size = excluded.size, repo = excluded.repo, updated_at = excluded.updated_at",
            )?
            .execute(params![registry, digest, to_i64(*size), repo, now])?;
        }
        Write::Upload { .. } | Write::UploadFinished { .. } => {
            apply_upload(conn, write, now)?;
        }
        Write::TagSeen {
            registry,
            repo,
            tag,
            digest,
        } => {
            conn.prepare_cached(
                "INSERT INTO tags (registry, repo, tag, digest, seen_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (registry, repo, tag) DO UPDATE SET
                     digest = excluded.digest, seen_at = excluded.seen_at",
            )?
            .execute(params![registry, repo, tag, digest, now])?;
        }
        Write::Deletion {
            run,
            registry,
            repo,
            digest,
            tags,
            reason,
            version_id,
            media_type,
            manifest,
        } => {
            conn.prepare_cached(
                "INSERT INTO deletions (run, registry, repo, digest, tags, reason, version_id,
                                        deleted_at, media_type, manifest)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )?
            .execute(params![
                run, registry, repo, digest, tags, reason, version_id, now, media_type, manifest
            ])?;
        }
        Write::Restored { id } => {
            conn.prepare_cached("UPDATE deletions SET restored_at = ?2 WHERE id = ?1")?
                .execute(params![id, now])?;
        }
    }
    Ok(())
}

/// [`Write::Refusal`]: what a registry refused for good to delete, kept with when it first
/// did; a refusal met again (or kept without asking) updates when a run last met it.
fn apply_refusal(conn: &Connection, write: &Write, now: i64) -> rusqlite::Result<()> {
    if let Write::Refusal {
        registry,
        repo,
        digest,
        version_id,
        reason,
    } = write
    {
        conn.prepare_cached(
            "INSERT INTO refusals (registry, repo, digest, version_id, reason, first_at, last_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)
             ON CONFLICT (registry, repo, digest) DO UPDATE SET
                 version_id = COALESCE(excluded.version_id, version_id),
                 reason = excluded.reason, last_at = excluded.last_at",
        )?
        .execute(params![registry, repo, digest, version_id, reason, now])?;
    }
    Ok(())
}

/// [`Write::Missing`] and [`Write::NotMissing`]: when pruning first found a tag missing.
fn apply_missing(conn: &Connection, write: &Write) -> rusqlite::Result<()> {
    match write {
        Write::Missing {
            registry,
            repo,
            tag,
            since,
        } => {
            conn.prepare_cached(
                "INSERT INTO missing (registry, repo, tag, since) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (registry, repo, tag) DO NOTHING",
            )?
            .execute(params![registry, repo, tag, since])?;
            Ok(())
        }
        Write::NotMissing {
            registry,
            repo,
            tags,
        } => not_missing(conn, registry, repo, tags),
        _ => Ok(()),
    }
}

/// Forget that `tags` of a target repository were missing.
fn not_missing(
    conn: &Connection,
    registry: &str,
    repo: &str,
    tags: &[String],
) -> rusqlite::Result<()> {
    let mut stmt =
        conn.prepare_cached("DELETE FROM missing WHERE registry = ?1 AND repo = ?2 AND tag = ?3")?;
    for t in tags {
        stmt.execute(params![registry, repo, t])?;
    }
    Ok(())
}

/// [`Write::Item`]: one row per target reference, the latest values winning, except the
/// digest ferry last put at the target, which an attempt that failed does not erase: it is
/// how pruning knows the tag is still the one ferry wrote.
fn upsert_item(conn: &Connection, item: &ItemRecord, now: i64) -> rusqlite::Result<usize> {
    conn.prepare_cached(
        "INSERT INTO items (target_registry, target_repo, target_ref, run, source,
                            source_ref, source_digest, status, attempts, last_error,
                            bytes, updated_at, target_digest, verified_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)
         ON CONFLICT (target_registry, target_repo, target_ref) DO UPDATE SET
             run = excluded.run, source = excluded.source,
             source_ref = excluded.source_ref, source_digest = excluded.source_digest,
             status = excluded.status, attempts = excluded.attempts,
             last_error = excluded.last_error, bytes = excluded.bytes,
             updated_at = excluded.updated_at,
             target_digest = COALESCE(excluded.target_digest, items.target_digest),
             verified_at = excluded.verified_at",
    )?
    .execute(params![
        item.target_registry,
        item.target_repo,
        item.target_ref,
        item.run,
        item.source,
        item.source_ref,
        item.source_digest,
        item.status.as_str(),
        i64::from(item.attempts),
        item.last_error
            .as_deref()
            .map(|e| truncate_chars(e, MAX_ERROR_CHARS)),
        to_i64(item.bytes),
        now,
        item.target_digest,
        item.verified_at,
    ])
}

/// [`Write::Upload`] and [`Write::UploadFinished`]: a session's row kept while it is open.
fn apply_upload(conn: &Connection, write: &Write, now: i64) -> rusqlite::Result<usize> {
    match write {
        Write::Upload {
            registry,
            repo,
            digest,
            url,
            offset,
            hash_state,
            size,
            source,
        } => conn
            .prepare_cached(
                "INSERT INTO uploads
                     (registry, repo, digest, url, offset, updated_at, hash_state, size, source)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT (registry, repo, digest) DO UPDATE SET
                     url = excluded.url, offset = excluded.offset,
                     updated_at = excluded.updated_at, hash_state = excluded.hash_state,
                     size = excluded.size, source = excluded.source",
            )?
            .execute(params![
                registry,
                repo,
                digest,
                url,
                to_i64(*offset),
                now,
                hash_state,
                to_i64(*size),
                source
            ]),
        Write::UploadFinished {
            registry,
            repo,
            digest,
        } => conn
            .prepare_cached(
                "DELETE FROM uploads WHERE registry = ?1 AND repo = ?2 AND digest = ?3",
            )?
            .execute(params![registry, repo, digest]),
        _ => Ok(0),
    }
}

/// The first `max` characters of `s` (not bytes: an error text may be any UTF-8).
fn truncate_chars(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((end, _)) => &s[..end],
        None => s,
    }
}

/// SQLite integers are i64. No size or offset ferry sees comes near 2^63, so saturating is
/// only there to keep a corrupt value from wrapping into a negative one.
fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn unix_now() -> i64 {
    // Before 1970 only on a broken clock; 0 keeps the row valid.
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncates_on_char_boundaries() {
        assert_eq!(truncate_chars("héllo", 2), "hé");
        assert_eq!(truncate_chars("abc", 5), "abc");
        assert_eq!(
            truncate_chars(&"é".repeat(3000), 2000).chars().count(),
            2000
        );
    }
}
