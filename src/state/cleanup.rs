//! Keeping a nightly job's checkpoint bounded: the rows of runs older than the last N are
//! deleted when a run ends, and the file is compacted when much of it is free.
//!
//! What grows with every run is the run's own rows: its `runs` row and its `deletions` (each
//! with the manifest it deleted, for `ferry restore`). Everything else is one row per thing
//! that exists (an item per target reference, a blob per digest at a registry, a tag per
//! source tag, a refusal per manifest), replaced in place, and the next run needs it.

use rusqlite::{params, Connection, OptionalExtension};

/// Free pages worth compacting: below this (1 MiB of 4 KiB pages) VACUUM costs more than it
/// gives back.
const VACUUM_MIN_FREE_PAGES: i64 = 256;

/// What [`State::prune_runs`](super::State::prune_runs) removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// `runs` rows deleted.
    pub runs: u64,
    /// `deletions` rows deleted (what `ferry restore` of those runs would have used).
    pub deletions: u64,
    /// The file was compacted (`VACUUM`) afterwards.
    pub vacuumed: bool,
}

/// Deletes the rows of every run older than the newest `keep`: their deletions, and their
/// `runs` row unless an item's latest record still names it (the item's record is what the
/// next run reads, so it stays, and with it the run it points to). Then compacts the file
/// when at least a quarter of it, and 1 MiB, is free.
pub(super) fn prune_runs(conn: &mut Connection, keep: u32) -> rusqlite::Result<Pruned> {
    let keep = i64::from(keep.max(1));
    let oldest_kept: Option<i64> = conn
        .prepare_cached("SELECT id FROM runs ORDER BY id DESC LIMIT 1 OFFSET ?1")?
        .query_row([keep - 1], |row| row.get(0))
        .optional()?;
    let Some(oldest_kept) = oldest_kept else {
        return Ok(Pruned::default());
    };
    let tx = conn.transaction()?;
    let deletions = tx
        .prepare_cached("DELETE FROM deletions WHERE run < ?1")?
        .execute(params![oldest_kept])?;
    // `items_run` (run, status) answers the NOT EXISTS per run.
    let runs = tx
        .prepare_cached(
            "DELETE FROM runs WHERE id < ?1
             AND NOT EXISTS (SELECT 1 FROM items WHERE items.run = runs.id)",
        )?
        .execute(params![oldest_kept])?;
    tx.commit()?;
    let mut pruned = Pruned {
        runs: runs as u64,
        deletions: deletions as u64,
        vacuumed: false,
    };
    if pruned.runs + pruned.deletions > 0 {
        pruned.vacuumed = vacuum_if_worth_it(conn)?;
    }
    Ok(pruned)
}

/// VACUUM when at least a quarter of the file, and [`VACUUM_MIN_FREE_PAGES`], is free. A
/// nightly job frees about what the next night writes, so SQLite reuses the pages and this
/// rarely runs; it is for the first clean-up of an old checkpoint, or a smaller `retain_runs`.
fn vacuum_if_worth_it(conn: &Connection) -> rusqlite::Result<bool> {
    let pages: i64 = conn.pragma_query_value(None, "page_count", |row| row.get(0))?;
    let free: i64 = conn.pragma_query_value(None, "freelist_count", |row| row.get(0))?;
    if free < VACUUM_MIN_FREE_PAGES || free * 4 < pages {
        return Ok(false);
    }
    conn.execute_batch("VACUUM")?;
    Ok(true)
}
