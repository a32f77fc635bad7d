//! What selection may spend: reads in flight at once, and bytes of manifests held for the
//! copy. Shared by wildcard listing (`mod.rs`) and the referrer search.

/// How many repositories' tag lists are read at once while resolving a wildcard (and how many
/// manifests the referrer search reads at once).
pub(super) const LIST_CONCURRENCY: usize = 8;

/// How many bytes of manifests selection may hold for the copy (read whole where a cold copy
/// would read them anyway): some 30,000 typical manifests. Beyond it, digests only.
pub(super) const READ_BUDGET: usize = 64 * 1024 * 1024;
