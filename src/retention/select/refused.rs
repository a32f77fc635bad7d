//! Phase 5b: what the registry will not delete stays, with everything it reaches, once the
//! rule and the walk have decided ([`Refusals`]): what it refused for good before, then, where
//! it refuses to delete a package's last tagged version and nothing tagged is kept, the newest
//! ranked image.

use crate::retention::decisions::{Action, Image};
use crate::retention::refusals::{refused_reason, Refusals, LAST_VERSION};

/// Keep what `refusals` says the registry will not delete, among `images` (with their `tags`,
/// `ranked` newest first) as `decided` so far. True when something was kept: what it reaches
/// must then be protected again.
pub(super) fn keep(
    images: &[Image],
    tags: &[Vec<String>],
    ranked: &[usize],
    decided: &mut [Option<(Action, String)>],
    refusals: &Refusals,
) -> bool {
    let mut kept = false;
    for (i, d) in decided.iter_mut().enumerate() {
        let refused = refusals.refused.get(&images[i].digest);
        if let (Some((Action::Delete, _)), Some(r)) = (&d, refused) {
            *d = Some((Action::Keep, refused_reason(r)));
            kept = true;
        }
    }
    let tagged_kept = (0..decided.len())
        .any(|i| !tags[i].is_empty() && matches!(decided[i], Some((Action::Keep, _))));
    if refusals.last_tagged && !tagged_kept {
        if let Some(&newest) = ranked.first() {
            decided[newest] = Some((Action::Keep, LAST_VERSION.to_string()));
            kept = true;
        }
    }
    kept
}
