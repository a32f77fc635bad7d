//! `ferry plan` against `ferry run`, in-process: the same generated plans executed over
//! overlays of in-memory registries (what `plan` does) and over the registries themselves
//! (what `run` does), compared outcome for outcome and deletion for deletion. The suite's
//! `tests/it/differential/` does the same through the binary, on layouts and a real
//! registry; this one runs thousands of cases in a second.

use std::collections::HashMap;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::sink::{ItemSink, FAILURES_KEPT};
use super::{execute, overlays, Context, Execution};
use crate::copy::select::Registries;
use crate::copy::{Item, Outcome, Silent};
use crate::plan::Plan;
use crate::reference::Digest;
use crate::reference::Location;
use crate::registry::memory::MemoryRegistry;
use crate::registry::Registry;
use crate::retention::deletions::{Copied, Ledger};

/// splitmix64: a seeded stream of numbers, so a failing case is replayed by its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

const TAGS: &[&str] = &["1.0.0", "1.1.0", "2.0.0", "latest", "pr-1", "pr-2"];
const REPOS: &[&str] = &["team/a", "team/b", "other/c"];

/// Images in a repository of `reg`: single-platform ones and indexes, some signed.
fn fill(reg: &MemoryRegistry, repo: &str, rng: &mut Rng, salt: &str) {
    for tag in TAGS {
        if !rng.chance(60) {
            continue;
        }
        let layer = format!("{repo} {tag} {salt} {}", rng.below(3));
        let digest = if rng.chance(40) {
            let amd = reg.push_image(repo, "", &[b"base", layer.as_bytes()], "linux/amd64");
            let arm = reg.push_image(
                repo,
                "",
                &[b"base", b"arm", layer.as_bytes()],
                "linux/arm64",
            );
            reg.push_index(repo, tag, &[(&amd, "linux/amd64"), (&arm, "linux/arm64")])
        } else {
            reg.push_image(repo, tag, &[b"base", layer.as_bytes()], "linux/amd64")
        };
        if rng.chance(30) {
            reg.push_signature(repo, &digest);
        }
    }
}

/// A plan over `src.test` and `dst.test`: copy rules, and sometimes retention.
fn plan_text(rng: &mut Rng) -> String {
    let mut text = String::from("version = 1\n");
    for _ in 0..1 + rng.below(3) {
        let repo = rng.pick(REPOS);
        let (from, to) = match rng.below(4) {
            0 => ("src.test/team/*".to_string(), "dst.test/team/*".to_string()),
            1 => (
                format!("src.test/{repo}:{}", rng.pick(TAGS)),
                format!("dst.test/{repo}"),
            ),
            _ => (format!("src.test/{repo}"), format!("dst.test/{repo}")),
        };
        text.push_str(&format!("[[copy]]\nfrom = \"{from}\"\nto = \"{to}\"\n"));
        if !from.contains(':') && rng.chance(40) {
            text.push_str(rng.pick::<&str>(&[
                "tags = { include = ['^1\\.'] }\n",
                "tags = { exclude = ['^pr-'] }\n",
                "tags = { newest = 1 }\n",
            ]));
        }
        if rng.chance(20) {
            text.push_str("platforms = [\"linux/amd64\"]\nplatform_mode = \"rewrite\"\n");
        }
        if rng.chance(15) {
            text.push_str("referrers = false\n");
        }
        if !from.contains(':') && rng.chance(40) {
            text.push_str(rng.pick::<&str>(&["prune = true\n", "prune = { max_deletions = 2 }\n"]));
        }
    }
    for _ in 0..rng.below(3) {
        let repo = rng.pick(REPOS);
        let side = rng.pick(&["src.test", "dst.test"]);
        text.push_str(&format!("[[retain]]\nrepository = \"{side}/{repo}\"\n"));
        text.push_str(rng.pick::<&str>(&[
            "keep_tags = ['^1\\.']\n",
            "delete_tags = ['^pr-']\n",
            "keep_newest = 1\ndelete_tags = ['^pr-', '^latest$']\n",
            "keep_tags = ['^latest$']\nuntagged = true\n",
        ]));
        if rng.chance(20) {
            text.push_str("max_deletions = 1\n");
        }
    }
    text
}

/// What an earlier run recorded copying into `dst` (for pruning): most of what it holds,
/// from the source repository of the same name; some of it since pushed over.
fn ledger(dst: &MemoryRegistry, seed: u64) -> Ledger {
    let mut rng = Rng(seed ^ 0x1ed9e5);
    let mut ledger = Ledger::default();
    for repo in REPOS {
        for (tag, digest) in dst.tags(repo) {
            if !rng.chance(70) {
                continue;
            }
            let digest = if rng.chance(15) {
                Digest::parse(&format!("sha256:{}", "e".repeat(64))).unwrap()
            } else {
                digest
            };
            ledger
                .copied
                .entry(("dst.test".to_string(), repo.to_string()))
                .or_default()
                .insert(
                    tag,
                    Copied {
                        source: format!("src.test/{repo}"),
                        digest,
                    },
                );
        }
    }
    ledger
}

/// Two registries filled from `seed`, and their map for the plan.
fn world(seed: u64) -> (Registries, Arc<MemoryRegistry>) {
    let mut rng = Rng(seed);
    let src = Arc::new(MemoryRegistry::new("src.test"));
    let dst = Arc::new(MemoryRegistry::new("dst.test"));
    for repo in REPOS {
        fill(&src, repo, &mut rng, "source");
        if rng.chance(30) {
            // What a target already holds: the same images, or others.
            let salt = rng_salt(&mut rng);
            fill(&dst, repo, &mut rng, salt);
        }
    }
    let mut registries: Registries = HashMap::new();
    registries.insert(
        Location::Registry("src.test".into()),
        src as Arc<dyn Registry>,
    );
    registries.insert(
        Location::Registry("dst.test".into()),
        dst.clone() as Arc<dyn Registry>,
    );
    (registries, dst)
}

fn rng_salt(rng: &mut Rng) -> &'static str {
    if rng.chance(50) {
        "source"
    } else {
        "other"
    }
}

/// A checkpoint that remembers nothing new, for copies and deletions alike, and knows what
/// an earlier run copied (`Ledger`).
struct Forgetful(Ledger);
impl crate::copy::Journal for Forgetful {}
impl crate::retention::Journal for Forgetful {
    fn ledger(&self) -> Ledger {
        self.0.clone()
    }
}

/// Every item the execution handed over, with its outcome.
#[derive(Default)]
struct Collect(std::sync::Mutex<Vec<(Item, Option<Outcome>)>>);

impl ItemSink for Collect {
    fn finished(&self, item: &Item, outcome: Option<&Outcome>) {
        let mut items = self.0.lock().unwrap();
        items.push((item.clone(), outcome.cloned()));
    }
}

/// An execution, and every item it handed over.
type Executed = (Execution, Vec<(Item, Option<Outcome>)>);

async fn run(plan: &Plan, registries: &Registries, ledger: &Ledger) -> Executed {
    let items = Collect::default();
    let cx = Context {
        registries,
        journal: Arc::new(Forgetful(ledger.clone())),
        reporter: Arc::new(Silent),
        concurrency: 4,
        stop: CancellationToken::new(),
        abort: CancellationToken::new(),
        owns: &|_| true,
        spool: None,
        audit: None,
        lease: super::leasing::Leasing::Off,
        sink: &items,
        budget: None,
    };
    let e = execute(plan, &cx).await;
    (e, items.0.into_inner().unwrap())
}

/// What an execution did, comparably: (target, action, digest) per item; (repository,
/// digest) per deletion; the number of failures.
type Summary = (
    Vec<(String, &'static str, Option<Digest>)>,
    Vec<(String, Digest)>,
    usize,
);

fn summary(plan: &Plan, e: &Execution, items: &[(Item, Option<Outcome>)]) -> Summary {
    let mut items: Vec<_> = items
        .iter()
        .map(|(item, o)| {
            let action = match o {
                Some(Outcome::Copied { .. }) => "copied",
                Some(Outcome::Present { .. }) => "present",
                Some(Outcome::Unchanged { .. }) => "unchanged",
                Some(Outcome::Skipped { .. }) => "skipped",
                Some(Outcome::Failed { .. }) => "failed",
                None => "interrupted",
            };
            let digest = o.as_ref().and_then(Outcome::placed).map(|(d, _)| d.clone());
            (item.target_display(), action, digest)
        })
        .collect();
    items.sort();
    let mut deletions: Vec<_> = e
        .retained
        .iter()
        .flat_map(|r| {
            r.deletions
                .iter()
                .filter(|d| d.result.is_ok())
                .map(|d| (r.plan.repository.clone(), d.decision.digest.clone()))
        })
        .collect();
    for p in &e.pruned {
        for r in &p.repos {
            for d in r.done.iter().filter(|d| d.result.is_ok()) {
                let what = format!("{} prune {}", r.repository, d.decision.tags.join(","));
                deletions.push((what, d.decision.digest.clone()));
            }
        }
    }
    deletions.sort();
    (items, deletions, e.failures(plan).len())
}

#[tokio::test]
async fn plan_and_run_agree_over_memory_registries() {
    let cases: u64 = std::env::var("FERRY_MEMORY_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(300);
    let (mut compared, mut refused, mut deleted, mut copied, mut pruned) = (0, 0, 0, 0, 0);
    for seed in 0..cases {
        let text = plan_text(&mut Rng(seed ^ 0x5eed));
        let Ok(plan) = Plan::from_str(std::path::Path::new("p.toml"), &text) else {
            refused += 1;
            continue;
        };
        let (registries, dst) = world(seed);
        let ledger = ledger(&dst, seed);
        let (simulated, _) = overlays(&registries, &plan);
        let (planned, planned_items) = run(&plan, &simulated, &ledger).await;
        let planned = summary(&plan, &planned, &planned_items);
        let (done, items) = run(&plan, &registries, &ledger).await;
        let ran = summary(&plan, &done, &items);
        assert_eq!(planned, ran, "seed {seed}: plan and run differ\n{text}");
        // What the run calls copied, present or unchanged is at its target.
        for (item, o) in &items {
            let Some((digest, rewritten)) = o.as_ref().and_then(Outcome::placed) else {
                continue;
            };
            let at = rewritten.unwrap_or(digest);
            match &item.target_tag {
                Some(tag) => assert_eq!(
                    dst.tags(&item.target.repo).get(tag),
                    Some(at),
                    "seed {seed}: {item}\n{text}"
                ),
                None => assert!(
                    dst.has_manifest(&item.target.repo, at),
                    "seed {seed}: {item}"
                ),
            }
        }
        // Pruning removed only tags an earlier run recorded writing, as it wrote them.
        for p in &done.pruned {
            for r in &p.repos {
                let copied = &ledger.copied.get(&("dst.test".to_string(), r.repo.clone()));
                for d in r.done.iter().filter(|d| d.result.is_ok()) {
                    for tag in &d.decision.tags {
                        let ours = copied.and_then(|c| c.get(tag));
                        assert_eq!(
                            ours.map(|c| &c.digest),
                            Some(&d.decision.digest),
                            "seed {seed}: pruned {tag}, not ours\n{text}"
                        );
                    }
                }
            }
        }
        pruned += done
            .pruned
            .iter()
            .flat_map(|p| &p.repos)
            .map(|r| r.done.len())
            .sum::<usize>();
        compared += 1;
        deleted += ran.1.len();
        copied += ran.0.iter().filter(|(_, a, _)| *a == "copied").count();
    }
    // The generator makes what it is meant to.
    assert!(refused * 5 < cases, "{refused} of {cases} plans refused");
    assert!(
        compared > 0 && deleted > 0 && copied > 0 && pruned > 0,
        "{compared} {deleted} {copied} {pruned}"
    );
}

/// Issue 24, "memory independent of the number of tags": a run where every item fails keeps
/// the first failure lines and counts the rest, so what it holds stays bounded too.
#[tokio::test]
async fn failed_items_beyond_the_first_thousand_are_counted_not_kept() {
    let src = Arc::new(MemoryRegistry::new("src.test"));
    let dst = Arc::new(MemoryRegistry::new("dst.test"));
    // One manifest naming a layer the source lacks, under 1,200 tags: every copy fails.
    let config = src.add_blob("team/a", b"{}");
    let body = format!(
        r#"{{"schemaVersion":2,"mediaType":"{m}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":2}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{gone}","size":4}}]}}"#,
        m = crate::registry::manifest::OCI_MANIFEST,
        gone = Digest::sha256_of(b"gone"),
    );
    for n in 0..1200 {
        let tag = format!("t{n}");
        src.add_manifest(
            "team/a",
            &tag,
            crate::registry::manifest::OCI_MANIFEST,
            body.as_bytes(),
        );
    }
    let mut registries: Registries = HashMap::new();
    registries.insert(
        Location::Registry("src.test".into()),
        src as Arc<dyn Registry>,
    );
    registries.insert(
        Location::Registry("dst.test".into()),
        dst as Arc<dyn Registry>,
    );
    let text = "version = 1\n[[copy]]\nfrom = \"src.test/team/a\"\nto = \"dst.test/team/a\"\n";
    let plan = Plan::from_str(std::path::Path::new("p.toml"), text).unwrap();
    let (e, items) = run(&plan, &registries, &Ledger::default()).await;
    assert_eq!(e.totals.failed, 1200);
    let failures = e.failures(&plan);
    assert_eq!(failures.len(), FAILURES_KEPT, "{:?}", failures.last());
    assert_eq!(e.unlisted_failures, 200);
    // Every item went to the sink, failed, with its error.
    assert_eq!(items.len(), 1200);
    assert!(items
        .iter()
        .all(|(_, o)| matches!(o, Some(Outcome::Failed { .. }))));
}
