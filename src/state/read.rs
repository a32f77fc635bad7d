//! Reading the checkpoint back: the snapshot a run starts from (also read without the owner,
//! by `ferry plan`), and one run's summary for `ferry status`.

use std::collections::BTreeMap;

use rusqlite::types::Type;
use rusqlite::{Connection, OptionalExtension, Row};

use super::records::{
    BlobState, DeletionRecord, ItemState, ItemStatus, RefusalState, RunId, RunSummary, RunTotals,
    Snapshot, UploadState,
};

pub(super) fn snapshot(conn: &Connection) -> rusqlite::Result<Snapshot> {
    let mut snapshot = Snapshot::default();
    // A file read without migrating it (`ferry plan` writes nothing) may predate version 3.
    let version: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    let mut stmt = conn.prepare_cached(if version >= 3 {
        "SELECT target_registry, target_repo, target_ref, source, source_ref, source_digest,
                status, attempts, last_error, target_digest, verified_at
         FROM items"
    } else {
        "SELECT target_registry, target_repo, target_ref, source, source_ref, source_digest,
                status, attempts, last_error, NULL, NULL
         FROM items"
    })?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        snapshot.items.insert(
            (row.get(0)?, row.get(1)?, row.get(2)?),
            ItemState {
                source: row.get(3)?,
                source_ref: row.get(4)?,
                source_digest: row.get(5)?,
                status: status_at(row, 6)?,
                attempts: u32::try_from(row.get::<_, i64>(7)?).unwrap_or(u32::MAX),
                last_error: row.get(8)?,
                target_digest: row.get(9)?,
                verified_at: row.get(10)?,
            },
        );
    }

    let mut stmt = conn.prepare_cached("SELECT registry, digest, repo, size FROM blobs")?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        snapshot.blobs.insert(
            (row.get(0)?, row.get(1)?),
            BlobState {
                repo: row.get(2)?,
                size: to_u64(row.get(3)?),
            },
        );
    }

    let mut stmt = conn.prepare_cached(
        "SELECT registry, repo, digest, url, offset, hash_state, size, source FROM uploads",
    )?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        snapshot.uploads.insert(
            (row.get(0)?, row.get(1)?, row.get(2)?),
            UploadState {
                url: row.get(3)?,
                offset: to_u64(row.get(4)?),
                hash_state: row.get(5)?,
                size: to_u64(row.get(6)?),
                source: row.get(7)?,
            },
        );
    }

    let mut stmt = conn.prepare_cached("SELECT registry, repo, tag, digest FROM tags")?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        snapshot
            .tags
            .insert((row.get(0)?, row.get(1)?, row.get(2)?), row.get(3)?);
    }

    // A file read without migrating it may predate version 6.
    if version >= 6 {
        let mut stmt = conn.prepare_cached("SELECT registry, repo, tag, since FROM missing")?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            snapshot
                .missing
                .insert((row.get(0)?, row.get(1)?, row.get(2)?), row.get(3)?);
        }
    }
    snapshot.refusals = refusals(conn, version)?;
    Ok(snapshot)
}

/// What registries refused for good to delete: none in a file read without migrating it that
/// predates version 8.
fn refusals(
    conn: &Connection,
    version: i64,
) -> rusqlite::Result<std::collections::HashMap<(String, String, String), RefusalState>> {
    let mut out = std::collections::HashMap::new();
    if version < 8 {
        return Ok(out);
    }
    let mut stmt = conn.prepare_cached(
        "SELECT registry, repo, digest, version_id, reason, first_at, last_at FROM refusals",
    )?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        out.insert(
            (row.get(0)?, row.get(1)?, row.get(2)?),
            RefusalState {
                version_id: row.get(3)?,
                reason: row.get(4)?,
                first_at: row.get(5)?,
                last_at: row.get(6)?,
            },
        );
    }
    Ok(out)
}

pub(super) fn run_summary(
    conn: &Connection,
    run: Option<RunId>,
) -> rusqlite::Result<Option<RunSummary>> {
    let Some(mut summary) = run_row(conn, run)? else {
        return Ok(None);
    };
    summary.deletions = deletions(conn, summary.id)?;
    let mut stmt =
        conn.prepare_cached("SELECT status, COUNT(*) FROM items WHERE run = ?1 GROUP BY status")?;
    let mut rows = stmt.query([summary.id])?;
    while let Some(row) = rows.next()? {
        summary
            .items_by_status
            .insert(row.get(0)?, to_u64(row.get(1)?));
    }
    summary.failures = failures(conn, summary.id)?;
    Ok(Some(summary))
}

/// When the last run that succeeded ended (unix seconds); `None` when none did.
pub(super) fn last_success(conn: &Connection) -> rusqlite::Result<Option<i64>> {
    conn.prepare_cached("SELECT MAX(ended_at) FROM runs WHERE status = 'succeeded'")?
        .query_row([], |row| row.get(0))
}

/// The `runs` row of `run` (`None`: the latest), without its items and deletions.
fn run_row(conn: &Connection, run: Option<RunId>) -> rusqlite::Result<Option<RunSummary>> {
    const COLUMNS: &str = "SELECT id, plan_path, plan_fingerprint, started_at, ended_at, status,
                                  copied, present, failed, skipped, interrupted, bytes,
                                  deleted, unchanged, pruned
                           FROM runs";
    let to_summary = |row: &Row<'_>| -> rusqlite::Result<RunSummary> {
        Ok(RunSummary {
            id: row.get(0)?,
            plan_path: row.get(1)?,
            plan_fingerprint: row.get(2)?,
            started_at: row.get(3)?,
            ended_at: row.get(4)?,
            status: row.get(5)?,
            totals: RunTotals {
                copied: to_u64(row.get(6)?),
                present: to_u64(row.get(7)?),
                failed: to_u64(row.get(8)?),
                skipped: to_u64(row.get(9)?),
                interrupted: to_u64(row.get(10)?),
                bytes: to_u64(row.get(11)?),
                deleted: to_u64(row.get(12)?),
                unchanged: to_u64(row.get(13)?),
                pruned: to_u64(row.get(14)?),
            },
            items_by_status: BTreeMap::new(),
            failures: Vec::new(),
            deletions: Vec::new(),
        })
    };
    match run {
        Some(id) => conn
            .prepare_cached(&format!("{COLUMNS} WHERE id = ?1"))?
            .query_row([id], to_summary),
        None => conn
            .prepare_cached(&format!("{COLUMNS} ORDER BY id DESC LIMIT 1"))?
            .query_row([], to_summary),
    }
    .optional()
}

/// A run's deletions as (`registry/repo@digest`, tags, reason), in deletion order.
fn deletions(conn: &Connection, run: RunId) -> rusqlite::Result<Vec<(String, String, String)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT registry, repo, digest, tags, reason FROM deletions WHERE run = ?1 ORDER BY id",
    )?;
    let mut rows = stmt.query([run])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        let (registry, repo, digest): (String, String, String) =
            (row.get(0)?, row.get(1)?, row.get(2)?);
        let at = if registry.ends_with(':') {
            format!("{registry}{repo}@{digest}")
        } else {
            format!("{registry}/{repo}@{digest}")
        };
        out.push((at, row.get(3)?, row.get(4)?));
    }
    Ok(out)
}

/// The deletions of `run` (`None`: the last run with any), in the order made.
pub(super) fn deletion_records(
    conn: &Connection,
    run: Option<RunId>,
) -> rusqlite::Result<Option<(RunId, Vec<DeletionRecord>)>> {
    let run: Option<RunId> = match run {
        Some(id) => Some(id),
        None => conn
            .prepare_cached("SELECT MAX(run) FROM deletions")?
            .query_row([], |row| row.get(0))?,
    };
    let Some(run) = run else { return Ok(None) };
    let mut stmt = conn.prepare_cached(
        "SELECT id, registry, repo, digest, tags, reason, version_id, media_type, manifest,
                restored_at
         FROM deletions WHERE run = ?1 ORDER BY id",
    )?;
    let mut rows = stmt.query([run])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        let tags: String = row.get(4)?;
        out.push(DeletionRecord {
            id: row.get(0)?,
            run,
            registry: row.get(1)?,
            repo: row.get(2)?,
            digest: row.get(3)?,
            // Written joined by ", " (`Write::Deletion`); a tag never holds a comma.
            tags: tags
                .split(", ")
                .filter(|t| !t.is_empty())
                .map(str::to_string)
                .collect(),
            reason: row.get(5)?,
            version_id: row.get(6)?,
            media_type: row.get(7)?,
            manifest: row.get(8)?,
            restored_at: row.get(9)?,
        });
    }
    Ok((!out.is_empty()).then_some((run, out)))
}

/// A run's failed items as (`source:ref -> target:ref`, last error), ordered by target.
fn failures(conn: &Connection, run: RunId) -> rusqlite::Result<Vec<(String, String)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT source, source_ref, target_registry, target_repo, target_ref, last_error
         FROM items WHERE run = ?1 AND status = 'failed'
         ORDER BY target_registry, target_repo, target_ref",
    )?;
    let mut rows = stmt.query([run])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        let source: String = row.get(0)?;
        let source_ref: String = row.get(1)?;
        let (registry, repo, target_ref): (String, String, String) =
            (row.get(2)?, row.get(3)?, row.get(4)?);
        let target = if registry.ends_with(':') {
            // `oci:` is a scheme, not a host: `oci:./out`, as the plan writes it.
            format!("{registry}{repo}")
        } else {
            format!("{registry}/{repo}")
        };
        out.push((
            format!(
                "{} -> {}",
                with_ref(&source, &source_ref),
                with_ref(&target, &target_ref)
            ),
            row.get::<_, Option<String>>(5)?.unwrap_or_default(),
        ));
    }
    Ok(out)
}

/// `repo:tag`, or `repo@digest`: tags cannot contain `:`, digests always do.
fn with_ref(repo: &str, reference: &str) -> String {
    if reference.contains(':') {
        format!("{repo}@{reference}")
    } else {
        format!("{repo}:{reference}")
    }
}

pub(super) fn status_at(row: &Row<'_>, idx: usize) -> rusqlite::Result<ItemStatus> {
    let text: String = row.get(idx)?;
    ItemStatus::parse(&text).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            idx,
            Type::Text,
            format!("unknown item status {text:?}").into(),
        )
    })
}

/// SQLite integers are i64; the owner saturates what it stores (`to_i64`), so a negative
/// value can only come from a hand-edited file.
pub(super) fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refs_use_at_for_digests() {
        assert_eq!(with_ref("r", "v1"), "r:v1");
        assert_eq!(with_ref("r", "sha256:ab"), "r@sha256:ab");
    }
}
