//! What selection may spend: reads in flight at once, and bytes of manifests held for the
//! copy. Shared by wildcard listing (`mod.rs`) and the referrer search.

/// How many repositories' tag lists are read at once while resolving a wildcard (and how many
/// manifests the referrer search reads at once).
pub(super) const LIST_CONCURRENCY: usize = 8;

/// How many bytes of manifests selection may hold for the copy per repository (read whole
/// where a cold copy would read them anyway): some 500 typical manifests, or 2,000 small
/// ones. Beyond it, digests only (the copy GETs the rest itself: one HEAD more per tag).
/// Per repository: with the parts copied at once bounded (`execute::PARTS_IN_FLIGHT`), what
/// a run holds is bounded whatever the number of repositories.
pub(super) const READ_BUDGET: usize = 1024 * 1024;
