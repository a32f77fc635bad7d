//! Issue 24, "below the floor where the registry allows it": where a registry lists tags with
//! digests, the engine's per-tag questions are answered from one listing per repository, over
//! [`MemoryRegistry`] (which lists 100 tags a page when its capabilities say it lists them).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::copy::item::{Endpoint, Item, ItemKey};
use crate::copy::journal::{Journal, Recorded};
use crate::copy::outcome::Outcome;
use crate::copy::reporter::Silent;
use crate::copy::Engine;
use crate::reference::Digest;
use crate::registry::capabilities::Capabilities;
use crate::registry::memory::MemoryRegistry;
use crate::registry::Registry;

const REPO: &str = "team/app";

/// What earlier runs recorded, every record fresh or none.
#[derive(Default)]
struct Records {
    fresh: bool,
    done: Mutex<HashMap<ItemKey, Digest>>,
}

impl Journal for Records {
    fn recorded(&self, item: &Item) -> Option<Recorded> {
        let done = self.done.lock().unwrap();
        done.get(&item.key()).map(|d| Recorded {
            digest: d.clone(),
            rewritten: None,
            fresh: self.fresh,
        })
    }

    fn item_finished(&self, item: &Item, outcome: &Outcome) {
        if let Some((digest, _)) = outcome.placed() {
            let mut done = self.done.lock().unwrap();
            done.insert(item.key(), digest.clone());
        }
    }
}

fn listing() -> Capabilities {
    Capabilities {
        lists_tag_digests: true,
        ..Capabilities::default()
    }
}

/// A source of `tags` tags over two images (and a target), listing tags with digests where
/// asked.
async fn world(
    tags: usize,
    src_lists: bool,
    dst_lists: bool,
) -> (Arc<MemoryRegistry>, Arc<MemoryRegistry>) {
    let caps = |lists: bool| match lists {
        true => listing(),
        false => Capabilities::default(),
    };
    let src = MemoryRegistry::new("src.test").with_capabilities(caps(src_lists));
    src.push_image(REPO, "t0", &[b"base", b"a"], "linux/amd64");
    src.push_image(REPO, "t1", &[b"base", b"b"], "linux/amd64");
    let two = [
        src.get_manifest(REPO, "t0").await.unwrap(),
        src.get_manifest(REPO, "t1").await.unwrap(),
    ];
    for n in 2..tags {
        let m = &two[n % 2];
        src.add_manifest(REPO, &format!("t{n}"), &m.media_type, &m.bytes);
    }
    let dst = MemoryRegistry::new("dst.test").with_capabilities(caps(dst_lists));
    (Arc::new(src), Arc::new(dst))
}

/// One item per source tag of `tags`, copied under its own name.
fn items_of(src: &Arc<MemoryRegistry>, dst: &Arc<MemoryRegistry>, tags: &[String]) -> Vec<Item> {
    tags.iter()
        .map(|t| Item {
            source: Endpoint {
                registry: src.clone() as Arc<dyn Registry>,
                repo: REPO.into(),
            },
            source_ref: t.clone(),
            target: Endpoint {
                registry: dst.clone() as Arc<dyn Registry>,
                repo: "mirror/app".into(),
            },
            target_tag: Some(t.clone()),
            subject: None,
            platforms: None,
            rule: 1,
            after: None,
            seen: None,
            read: None,
            contest: None,
        })
        .collect()
}

/// Copy `items` with `journal`: the outcomes' names, counted.
async fn run(items: &[Item], journal: &Arc<Records>) -> HashMap<&'static str, usize> {
    let engine = Engine::new(Arc::new(Silent), 8).with_journal(journal.clone());
    let (outcomes, _) = engine.copy_all(items).await;
    let mut counted = HashMap::new();
    for o in outcomes {
        let name = match o.expect("not interrupted") {
            Outcome::Copied { .. } => "copied",
            Outcome::Present { .. } => "present",
            Outcome::Unchanged { .. } => "unchanged",
            Outcome::Skipped { .. } => "skipped",
            Outcome::Failed { error } => panic!("{error}"),
        };
        *counted.entry(name).or_default() += 1;
    }
    counted
}

fn all_tags(reg: &MemoryRegistry) -> Vec<String> {
    reg.tags(REPO).into_keys().collect()
}

fn calls(reg: &MemoryRegistry, kind: &str) -> usize {
    reg.calls().get(kind).copied().unwrap_or(0)
}

/// Issue 24: a no-op of 250 mutable tags costs one listing at the source instead of 250
/// HEADs, and a tag moved there is still found and copied, alone.
#[tokio::test]
async fn a_no_op_asks_the_listing_not_each_tag_and_still_finds_a_moved_one() {
    let (src, dst) = world(250, true, false).await;
    let items = items_of(&src, &dst, &all_tags(&src));
    let journal = Arc::new(Records::default());
    assert_eq!(run(&items, &journal).await["copied"], 250);

    let journal = Arc::new(Records {
        fresh: true,
        done: Mutex::new(std::mem::take(&mut *journal.done.lock().unwrap())),
    });
    let (heads, listings) = (calls(&src, "head_manifest"), calls(&src, "tag_digests"));
    assert_eq!(run(&items, &journal).await["unchanged"], 250);
    assert_eq!(calls(&src, "head_manifest"), heads, "no HEAD per tag");
    assert_eq!(calls(&src, "tag_digests"), listings + 1, "one listing");

    // t7 re-pushed at the source: the next no-op copies it, and only it.
    let moved = src.push_image(REPO, "t7", &[b"base", b"rebuilt"], "linux/amd64");
    let done = run(&items, &journal).await;
    assert_eq!((done["copied"], done["unchanged"]), (1, 249), "{done:?}");
    assert_eq!(dst.tags("mirror/app")["t7"], moved);
    assert_eq!(calls(&src, "head_manifest"), heads);
}

/// Issue 24: a recheck (no record fresh) asks neither side per tag where both list: the
/// target's tags come from its listing, each manifest is looked at once.
#[tokio::test]
async fn a_recheck_lists_both_sides_and_looks_at_each_manifest_once() {
    let (src, dst) = world(300, true, true).await;
    let items = items_of(&src, &dst, &all_tags(&src));
    let journal = Arc::new(Records::default());
    run(&items, &journal).await;
    let before = (src.calls(), dst.calls());
    let done = run(&items, &journal).await;
    assert_eq!(done["present"], 300, "{done:?}");
    let per_tag =
        |reg: &MemoryRegistry, kind: &str, was: &std::collections::BTreeMap<&str, usize>| {
            calls(reg, kind) - was.get(kind).copied().unwrap_or(0)
        };
    for kind in ["head_manifest", "get_manifest", "tag_digests"] {
        let (s, d) = (
            per_tag(&src, kind, &before.0),
            per_tag(&dst, kind, &before.1),
        );
        match kind {
            "tag_digests" => assert_eq!((s, d), (1, 1), "{kind}"),
            // Two manifests, each read once (at the target) for the whole check.
            _ => assert!(s + d <= 2, "{kind}: {s} at the source, {d} at the target"),
        }
    }
}

/// Issue 24: where the listing fails, or would cost more than it saves, each tag is asked
/// as before, with the same outcomes.
#[tokio::test]
async fn without_a_usable_listing_each_tag_is_asked() {
    let (src, dst) = world(250, true, false).await;
    let items = items_of(&src, &dst, &all_tags(&src));
    let journal = Arc::new(Records::default());
    run(&items, &journal).await;
    let journal = Arc::new(Records {
        fresh: true,
        done: Mutex::new(std::mem::take(&mut *journal.done.lock().unwrap())),
    });
    src.fail_tag_listings();
    let heads = calls(&src, "head_manifest");
    assert_eq!(run(&items, &journal).await["unchanged"], 250);
    assert_eq!(calls(&src, "head_manifest"), heads + 250);

    // One tag of a repository: a listing could not save a request.
    let (src, dst) = world(1000, true, false).await;
    let journal = Arc::new(Records::default());
    run(&items_of(&src, &dst, &["t3".to_string()]), &journal).await;
    assert_eq!(calls(&src, "tag_digests"), 0);
    // 18 tags of 1,000: the listing's ten pages would not save half the requests. Asked for
    // at most nine, the registry says no (from its first page), and each tag is read.
    let some: Vec<String> = (10..28).map(|n| format!("t{n}")).collect();
    let gets = calls(&src, "get_manifest");
    let done = run(&items_of(&src, &dst, &some), &journal).await;
    assert_eq!(done["copied"], 18);
    assert_eq!(calls(&src, "tag_digests"), 1);
    assert!(calls(&src, "get_manifest") >= gets + 18, "read per tag");
}
