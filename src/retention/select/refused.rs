//! Phase 5b: what the registry will not delete stays, with everything it reaches, once the
//! rule and the walk have decided ([`Refusals`]): what it refused for good before, then, where
//! it refuses to delete a package's last tagged version and nothing tagged is kept, the newest
//! ranked image.

use super::{protect, Action, Decided, Graph, Order};
use crate::retention::refusals::{refused_reason, Refusals, LAST_VERSION};

pub(super) fn keep(g: &Graph<'_>, o: &Order, decided: &mut Decided, refusals: &Refusals) {
    let mut kept = false;
    for (i, d) in decided.iter_mut().enumerate() {
        let refused = refusals.refused.get(&g.images[i].digest);
        if let (Some((Action::Delete, _)), Some(r)) = (&d, refused) {
            *d = Some((Action::Keep, refused_reason(r)));
            kept = true;
        }
    }
    let tagged_kept = (0..decided.len())
        .any(|i| !g.tags[i].is_empty() && matches!(decided[i], Some((Action::Keep, _))));
    if refusals.last_tagged && !tagged_kept {
        if let Some(&newest) = o.ranked.first() {
            decided[newest] = Some((Action::Keep, LAST_VERSION.to_string()));
            kept = true;
        }
    }
    if kept {
        protect(g, o, decided);
    }
}
