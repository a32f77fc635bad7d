//! The ArgoCD Image Updater's next picks, pinned: for each image it tracks in a repository
//! the plan can delete from, the repository's tags are listed (through the `Registry` trait,
//! as retention lists them) and the tag the updater would choose now is kept, so retention
//! never deletes what the next sync deploys. A listing that fails holds every deletion.

use std::collections::HashMap;

use crate::copy::select::Registries;
use crate::inuse::updater::{self, Tracked};
use crate::inuse::Target;
use crate::reference::Location;
use crate::report::hints::chain as error_chain;
use crate::retention::PinMap;

/// Pin each tracked image's next pick; the messages of listings that failed (then every
/// deletion must be held).
pub(super) async fn pin_next(
    registries: &Registries,
    pins: &mut PinMap,
    tracked: &[Tracked],
    aliases: &[(String, String)],
) -> Vec<String> {
    let mut listed: HashMap<(String, String), Vec<String>> = HashMap::new();
    let mut failures = Vec::new();
    for t in tracked {
        // Any tag will do: only the registry and repository are read.
        let Some(target) = Target::of(&format!("{}:latest", t.image), aliases) else {
            continue;
        };
        let Some(registry) = registries.get(&Location::Registry(target.registry.clone())) else {
            // Not a registry this plan deletes from.
            continue;
        };
        let key = (target.registry.clone(), target.repo.clone());
        if !listed.contains_key(&key) {
            match registry.list_tags(&target.repo).await {
                Ok(tags) => {
                    listed.insert(key.clone(), tags);
                }
                Err(e) => {
                    failures.push(format!(
                        "in use: the tags of {}/{} (for the ArgoCD Image Updater's next pick for {}): {}; nothing is deleted until they can be read",
                        target.registry,
                        target.repo,
                        t.app,
                        error_chain(&e)
                    ));
                    continue;
                }
            }
        }
        let p = pins.entry(&target.registry, &target.repo);
        for (tag, why) in updater::pick(t, &listed[&key]) {
            p.in_use.tags.entry(tag).or_insert(why);
        }
    }
    failures
}
