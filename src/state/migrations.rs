//! The schema as an append-only list of migrations, keyed on `PRAGMA user_version`.
//!
//! A file at version N has had exactly the first N entries of [`MIGRATIONS`] applied. Never edit
//! or reorder an entry that has shipped: files in the field already ran it. Change the schema by
//! appending a new entry.

use rusqlite::{Connection, TransactionBehavior};

/// Every migration, oldest first. Entry `i` takes a file from version `i` to version `i + 1`.
///
/// No `CHECK`s on the text enums: the owner thread is the only writer and writes them from
/// Rust enums, so a check would only cost time on the hot path; reads reject unknown values.
pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: the first schema.
    "CREATE TABLE runs (
         id               INTEGER PRIMARY KEY,
         plan_path        TEXT NOT NULL,
         plan_fingerprint TEXT NOT NULL,
         started_at       INTEGER NOT NULL,
         ended_at         INTEGER,
         status           TEXT NOT NULL,
         copied           INTEGER NOT NULL DEFAULT 0,
         present          INTEGER NOT NULL DEFAULT 0,
         failed           INTEGER NOT NULL DEFAULT 0,
         skipped          INTEGER NOT NULL DEFAULT 0,
         bytes            INTEGER NOT NULL DEFAULT 0
     );
     CREATE TABLE items (
         target_registry TEXT NOT NULL,
         target_repo     TEXT NOT NULL,
         target_ref      TEXT NOT NULL,
         run             INTEGER NOT NULL REFERENCES runs(id),
         source          TEXT NOT NULL,
         source_ref      TEXT NOT NULL,
         source_digest   TEXT,
         status          TEXT NOT NULL,
         attempts        INTEGER NOT NULL,
         last_error      TEXT,
         bytes           INTEGER NOT NULL,
         updated_at      INTEGER NOT NULL,
         PRIMARY KEY (target_registry, target_repo, target_ref)
     );
     -- run_summary counts and lists one run's items.
     CREATE INDEX items_run ON items(run, status);
     CREATE TABLE blobs (
         registry   TEXT NOT NULL,
         digest     TEXT NOT NULL,
         size       INTEGER NOT NULL,
         repo       TEXT NOT NULL,
         updated_at INTEGER NOT NULL,
         PRIMARY KEY (registry, digest)
     );
     CREATE TABLE uploads (
         registry   TEXT NOT NULL,
         repo       TEXT NOT NULL,
         digest     TEXT NOT NULL,
         url        TEXT NOT NULL,
         offset     INTEGER NOT NULL,
         updated_at INTEGER NOT NULL,
         PRIMARY KEY (registry, repo, digest)
     );
     CREATE TABLE tags (
         registry TEXT NOT NULL,
         repo     TEXT NOT NULL,
         tag      TEXT NOT NULL,
         digest   TEXT NOT NULL,
         seen_at  INTEGER NOT NULL,
         PRIMARY KEY (registry, repo, tag)
     );",
    // 2: retention's audit trail.
    "CREATE TABLE deletions (
         id         INTEGER PRIMARY KEY,
         run        INTEGER NOT NULL REFERENCES runs(id),
         registry   TEXT NOT NULL,
         repo       TEXT NOT NULL,
         digest     TEXT NOT NULL,
         tags       TEXT NOT NULL,
         reason     TEXT NOT NULL,
         version_id TEXT,
         deleted_at INTEGER NOT NULL
     );
     CREATE INDEX deletions_run ON deletions(run);
     ALTER TABLE runs ADD COLUMN deleted INTEGER NOT NULL DEFAULT 0;",
    // 3: what an item put at its target (a rewritten index has its own digest) and when that
    // was last confirmed there, so a record is trusted only for `recheck_after`.
    "ALTER TABLE items ADD COLUMN target_digest TEXT;
     ALTER TABLE items ADD COLUMN verified_at INTEGER;",
    // 4: each count by its name. `runs.skipped` held the items an interruption kept from
    // finishing: it becomes `interrupted`, and `skipped` counts what it says, referrers not
    // carried on purpose (0 for runs before this version, which did not count them).
    "ALTER TABLE runs RENAME COLUMN skipped TO interrupted;
     ALTER TABLE runs ADD COLUMN skipped INTEGER NOT NULL DEFAULT 0;",
    // 5: a parked upload continues without reading its first bytes again: the SHA-256 state
    // of the bytes the session holds (an encoded `Midstate`; NULL for rows older than this,
    // which start over), the blob's size and where its bytes come from, for `ferry status`.
    "ALTER TABLE uploads ADD COLUMN hash_state TEXT;
     ALTER TABLE uploads ADD COLUMN size INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE uploads ADD COLUMN source TEXT NOT NULL DEFAULT '';",
    // 6: pruning. A tag a `prune` rule copied and no longer selects is deleted only once it
    // has been missing for the rule's `older_than`: when it was first found missing.
    "CREATE TABLE missing (
         registry TEXT NOT NULL,
         repo     TEXT NOT NULL,
         tag      TEXT NOT NULL,
         since    INTEGER NOT NULL,
         PRIMARY KEY (registry, repo, tag)
     );",
    // 7: each count by its name, again. `unchanged` counts the items trusted from the
    // checkpoint without asking the target, which `present` counted too before (older rows
    // keep them there: they cannot be told apart). `pruned` counts pruning's deletions, which
    // `deleted` counted too since version 6: the deletions table tells them apart (a prune
    // reason begins `prune:`, retention's `delete:`), so older rows are split by it.
    "ALTER TABLE runs ADD COLUMN unchanged INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE runs ADD COLUMN pruned INTEGER NOT NULL DEFAULT 0;
     UPDATE runs SET pruned = (SELECT COUNT(*) FROM deletions
                               WHERE deletions.run = runs.id AND deletions.reason LIKE 'prune:%');
     UPDATE runs SET deleted = MAX(0, deleted - pruned);",
    // 8: deletion that can be undone, and refusals that are not tried again. A deletion keeps
    // what `ferry restore` needs to put it back: the manifest's media type and exact bytes (a
    // GHCR package version is restored by its `version_id` instead), and when a restore put it
    // back (NULL: not restored; a second restore skips it). A deletion the registry refuses for
    // good (GHCR: a public version with more than 5,000 downloads) is remembered in
    // `refusals`, with the registry's reason, so the next run reports it instead of asking
    // again.
    "ALTER TABLE deletions ADD COLUMN media_type TEXT;
     ALTER TABLE deletions ADD COLUMN manifest BLOB;
     ALTER TABLE deletions ADD COLUMN restored_at INTEGER;
     CREATE TABLE refusals (
         registry   TEXT NOT NULL,
         repo       TEXT NOT NULL,
         digest     TEXT NOT NULL,
         version_id TEXT,
         reason     TEXT NOT NULL,
         first_at   INTEGER NOT NULL,
         last_at    INTEGER NOT NULL,
         PRIMARY KEY (registry, repo, digest)
     );",
    // 9: an index for every query a run, `ferry status` and the pruning of old runs make, so
    // none of them reads a whole table of 100,000 items. What answers each:
    // - an item by its target (lookup, upsert, forget): items' primary key; whether a target
    //   repository holds any item: the same key's prefix;
    // - a run's items by status (status's counts, its failures) and which runs items still
    //   name (pruning keeps those): `items_run` (run, status), of version 1;
    // - a blob by digest at a registry: blobs' primary key; whether a target repository holds
    //   any recorded blob: `blobs_repo` (new);
    // - an upload session, and whether a repository has one: uploads' primary key and prefix;
    // - a source tag's digest, a missing tag, a repository's refusals: the primary keys of
    //   `tags`, `missing` and `refusals` (by prefix for a repository's refusals);
    // - a run's deletions, the last run with any, deletions of pruned runs: `deletions_run`,
    //   of version 2; a restored deletion: its id;
    // - the last run that succeeded: `runs_status` (status, ended_at) (new); the latest
    //   runs: runs' id.
    // Not indexed on purpose: the parked uploads (a handful of rows) and pruning's ledger
    // (every copied item, read once when a plan prunes).
    "CREATE INDEX blobs_repo ON blobs(registry, repo);
     CREATE INDEX runs_status ON runs(status, ended_at);",
];

/// The schema version this build writes and understands.
pub(crate) const SUPPORTED: i64 = MIGRATIONS.len() as i64;

/// What [`migrate`] found that it must not touch.
#[derive(Debug)]
pub(crate) enum MigrateError {
    Sqlite(rusqlite::Error),
    /// The file was written by a newer ferry; the version it has.
    Newer(i64),
}

impl From<rusqlite::Error> for MigrateError {
    fn from(e: rusqlite::Error) -> Self {
        MigrateError::Sqlite(e)
    }
}

/// Brings the file up to [`SUPPORTED`]. Each step runs in its own transaction together with its
/// `user_version` bump (the header write is transactional), so a crash leaves the file at a
/// whole version and the next open resumes from there.
pub(crate) fn migrate(conn: &mut Connection) -> Result<(), MigrateError> {
    let found: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if found > SUPPORTED {
        return Err(MigrateError::Newer(found));
    }
    // A negative user_version is not one we wrote; treating it as 0 would run CREATE TABLE on a
    // foreign file and fail there with a clearer SQLite message than anything we could invent.
    let start = usize::try_from(found).unwrap_or(0);
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(start) {
        // IMMEDIATE: take the write lock up front rather than upgrading mid-migration.
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}
