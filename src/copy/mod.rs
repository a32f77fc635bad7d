//! The copy engine: copy one image (tag or digest) idempotently, and a bounded, run-wide
//! fan-out over many.
//!
//! Order matters for safety: blobs, then child manifests, then the parent manifest, so a
//! target never holds a manifest pointing at missing content. A tag already at the target with
//! the source digest is skipped without touching its blobs. Each unique blob crosses the wire
//! at most once per target registry per run: a second repository that needs it gets a
//! cross-repository mount. This module never builds URLs, never sleeps and never prints; it
//! talks to registries through [`Registry`](crate::registry::Registry) and to people through [`Reporter`].
//!
//! [`item`]: what an item is; [`engine`]: copying items; [`outcome`]: what became of them;
//! [`select`]: turning rules into items; [`journal`] and [`reporter`]: the traits through
//! which the checkpoint and people hear of it; [`spool`] and [`shared_read`]: blob bytes on
//! disk, for an upload rebuilt without the source and for the targets of a fan-out.

pub mod copy_rule;
pub mod engine;
pub mod item;
pub mod journal;
pub mod outcome;
pub mod platform;
pub mod reporter;
pub mod select;
pub mod shared_read;
pub mod spool;
pub mod tag_filter;

pub use engine::Engine;
pub use item::{After, Contest, Endpoint, Item, ItemKey};
pub use journal::{Journal, NoJournal, Recorded, Transfer};
pub use outcome::{not_carried, CopyError, Gap, ImageStats, Outcome, Part, Totals, TransferTotals};
pub use reporter::{Reporter, Silent};

#[cfg(test)]
mod hostile_tests;
#[cfg(test)]
mod tests;
