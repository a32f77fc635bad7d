//! The many-small-images benchmark (issue 16, "fewest round trips per image"): 100
//! repositories, 1,600 tags, 4,706 unique blobs of a few KiB, where what a copy costs is round
//! trips, not bytes. Side by side on fresh empty targets, one tool after another: ferry cold,
//! then ferry again as a no-op (five times), then `skopeo sync --all` cold. With
//! `FERRY_BENCH_BIN_BEFORE` (the build before a change) both builds copy the corpus twice
//! each and run their no-ops, interleaved. Prints wall times and what each run asked of the
//! source and of the target, counted from the registries' access logs by method and resource,
//! against the bounds. Its own module (as `bench_interrupt`) because it shares no
//! corpus with `bench`. Ignored in the normal suite; `bench/compare-skopeo.sh many` runs it in
//! release mode.

use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

use futures::StreamExt;

use crate::bench::{skopeo_sync_args, timed};
use crate::common::*;
use crate::harness::*;

pub(crate) mod measure;

#[allow(unused_imports)]
use measure::*;

const REPOS: usize = 100;
/// Single-platform releases per repository (`v1.0.0` …), each with a config and two layers
/// of its own over two shared base layers.
const RELEASES: u64 = 13;
/// Base layers: the first in every image, one of the others in each repository's.
const BASES: u64 = 6;
const KIB: usize = 1024;
/// Repositories pushed at once while building the fixture.
const PUSHERS: usize = 16;
/// Manifests read at once while verifying a copy.
const READERS: usize = 16;
/// No-op runs of each build, on the target its first cold copy filled (the median is
/// reported).
const NOOP_RUNS: usize = 5;

/// The bounds on an empty target: requests per unique blob and per manifest.
const TARGET_PER_BLOB: f64 = 1.15;
const TARGET_PER_MANIFEST: f64 = 1.0;
const SOURCE_PER_BLOB: f64 = 1.0;
const SOURCE_PER_MANIFEST: f64 = 1.1;

/// What the fixture holds.
pub(crate) struct Corpus {
    /// (repository, tag, manifest digest) of every tag.
    pub(crate) tags: Vec<(String, String, String)>,
    /// Unique blob digests.
    blobs: usize,
    /// (repository, blob) pairs: a shared base layer counts once per repository holding it.
    placements: usize,
    /// (repository, manifest digest) pairs, index children included.
    manifests: usize,
    bytes: usize,
    pub(crate) repos: Vec<String>,
}

fn repo_name(r: usize) -> String {
    format!("org/app-{r:03}")
}

/// One repository's tags: 13 releases, a two-platform Docker manifest list (`multi`), and
/// cosign signature tags for the list and for the last release.
fn repo_images(r: usize, bases: &[Blob]) -> Vec<(String, Image)> {
    let repo = repo_name(r);
    let seed = |k: u64| 1_000_000 + r as u64 * 100 + k;
    let base = &bases[0];
    let flavour = &bases[1 + r % (bases.len() - 1)];
    let mut images: Vec<(String, Image)> = (0..RELEASES)
        .map(|v| {
            let layers = [
                base.clone(),
                flavour.clone(),
                layer(seed(2 * v), 2 * KIB),
                layer(seed(2 * v + 1), 4 * KIB),
            ];
            let label = format!("{repo}-v1.{v}.0");
            let img = image(&layers, "linux", "amd64", Format::Oci, &label);
            (format!("v1.{v}.0"), img)
        })
        .collect();
    let platforms = ["amd64", "arm64"]
        .iter()
        .zip(50..)
        .map(|(arch, k)| {
            let layers = [base.clone(), layer(seed(k), 3 * KIB)];
            image(
                &layers,
                "linux",
                arch,
                Format::Docker,
                &format!("{repo}-{arch}"),
            )
        })
        .collect();
    let multi = index(platforms, Format::Docker);
    let release_sig = cosign_signature(&images[images.len() - 1].1, &repo);
    let multi_sig = cosign_signature(&multi, &repo);
    images.push(("multi".into(), multi));
    images.push(release_sig);
    images.push(multi_sig);
    images
}

/// Build the corpus and push it to `reg`, [`PUSHERS`] repositories at a time.
pub(crate) async fn populate_many(reg: &Registry) -> Corpus {
    let bases: Vec<Blob> = (0..BASES).map(|i| layer(900_000 + i, 8 * KIB)).collect();
    let repos: Vec<(String, Vec<(String, Image)>)> = (0..REPOS)
        .map(|r| (repo_name(r), repo_images(r, &bases)))
        .collect();
    let (mut blobs, mut placements, mut manifests) =
        (HashSet::new(), HashSet::new(), HashSet::new());
    let (mut tags, mut bytes) = (Vec::new(), 0);
    for (repo, images) in &repos {
        for (tag, img) in images {
            for b in img.all_blobs() {
                if blobs.insert(b.digest.clone()) {
                    bytes += b.bytes.len();
                }
                placements.insert((repo.clone(), b.digest.clone()));
            }
            manifests.insert((repo.clone(), img.digest.clone()));
            for c in &img.children {
                manifests.insert((repo.clone(), c.digest.clone()));
            }
            tags.push((repo.clone(), tag.clone(), img.digest.clone()));
        }
    }
    futures::stream::iter(&repos)
        .for_each_concurrent(PUSHERS, |(repo, images)| async move {
            let pusher = reg.pusher();
            for (tag, img) in images {
                pusher.push(repo, tag, img).await;
            }
        })
        .await;
    Corpus {
        tags,
        blobs: blobs.len(),
        placements: placements.len(),
        manifests: manifests.len(),
        bytes,
        repos: repos.into_iter().map(|(r, _)| r).collect(),
    }
}

/// The requests ferry's JSON report counts at `host` (0 if it has none).
fn reported_requests(report: &std::path::Path, host: &str) -> u64 {
    let text = std::fs::read_to_string(report).expect("ferry wrote its report");
    let doc: serde_json::Value = serde_json::from_str(&text).expect("report is JSON");
    doc["registries"][host]["requests"].as_u64().unwrap_or(0)
}

/// Every tag at `dst` has the source's digest.
async fn verify(dst: &Registry, c: &Corpus) {
    let pusher = dst.pusher();
    let pusher = &pusher;
    futures::stream::iter(&c.tags)
        .for_each_concurrent(READERS, |(repo, tag, digest)| async move {
            let (_, _, d) = pusher
                .manifest(repo, tag)
                .await
                .unwrap_or_else(|| panic!("{repo}:{tag} missing at the target"));
            assert_eq!(&d, digest, "{repo}:{tag}");
        })
        .await;
}

/// `skopeo sync --all` of every repository into a fresh registry, cold.
async fn skopeo_cold(src: &Registry, c: &Corpus) -> Measured {
    let dst = Registry::start().await;
    let dir = tempfile::tempdir().unwrap();
    // skopeo's blob-location cache would remember blobs of an earlier target on this port.
    let _ = std::fs::remove_file(SKOPEO_CACHE);
    let dest = format!("{}/org", dst.addr);
    let args = skopeo_sync_args(dir.path(), &src.addr, &c.repos, &dest);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let state = dir.path().join("unused.db");
    measure("skopeo cold", "skopeo", &args, &state, (src, &dst))
        .await
        .0
}

/// ferry cold into the in-process OCI registry, which takes a whole blob in one POST (CNCF
/// distribution 2.8 does not): the target's requests as ferry's report counts them, against
/// the bound. Its time is not comparable with the others (another server).
async fn single_post_cold(src: &Registry, c: &Corpus) {
    let dst = OciRegistry::start(OciOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let p = copy_plan(
        dir.path(),
        &[&src.addr, dst.addr()],
        "",
        &format!("{}/org/*", src.addr),
        &format!("{}/org/*", dst.addr()),
    );
    let report = dir.path().join("report.json");
    let args = [
        "run",
        "--progress",
        "none",
        "--report",
        report.to_str().unwrap(),
        p.to_str().unwrap(),
    ];
    let state = dir.path().join("ferry.db");
    let (secs, _, out, _) = timed(env!("CARGO_BIN_EXE_ferry"), &args, &state).await;
    println!(
        "[many] ferry cold into a single-POST registry: {secs:.2} s: {}",
        out.trim()
    );
    for (repo, tag, digest) in &c.tags {
        let (_, bytes) = dst
            .manifest(repo, tag)
            .unwrap_or_else(|| panic!("{repo}:{tag} missing at the target"));
        assert_eq!(&sha256_digest(&bytes), digest, "{repo}:{tag}");
    }
    let text = std::fs::read_to_string(&report).expect("ferry wrote its report");
    let doc: serde_json::Value = serde_json::from_str(&text).expect("report is JSON");
    let row = &doc["registries"][dst.addr()];
    let kinds = row["by_kind"].as_object().expect("by_kind");
    let of = |pred: &dyn Fn(&str) -> bool| -> u64 {
        kinds
            .iter()
            .filter(|(k, _)| pred(k))
            .map(|(_, n)| n.as_u64().unwrap_or(0))
            .sum()
    };
    let total = of(&|_| true);
    let blobs = of(&|k| k.ends_with(" blob") || k.ends_with(" upload"));
    let manifests = of(&|k| k.ends_with(" manifest"));
    let (b, m) = (c.blobs as f64, c.manifests as f64);
    let bound = TARGET_PER_BLOB * b + TARGET_PER_MANIFEST * m;
    println!(
        "RESULT [many single-POST target] {total} requests = {:.3}/blob + {:.3}/manifest + {} other; \
         issue bound {TARGET_PER_BLOB}/blob + {TARGET_PER_MANIFEST}/manifest = {bound:.0}: {}; single_post_upload = {}; {kinds:?}",
        blobs as f64 / b,
        manifests as f64 / m,
        total - blobs - manifests,
        if total as f64 <= bound { "met" } else { "NOT met" },
        row["single_post_upload"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "pushes 1,600 small images and copies them two to five times; run by bench/compare-skopeo.sh"]
async fn bench_many() {
    let src = Registry::start().await;
    let started = Instant::now();
    let c = populate_many(&src).await;
    println!(
        "fixture: {} repositories, {} tags, {} manifests, {} unique blobs ({} blob placements), {:.1} MB, pushed in {:.1} s",
        c.repos.len(),
        c.tags.len(),
        c.manifests,
        c.blobs,
        c.placements,
        c.bytes as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    assert!(c.repos.len() >= 100 && c.tags.len() >= 1500 && c.blobs >= 4500);

    // The build under test; with a second build, each copies twice in the order A B B A, so
    // that what drifts during the benchmark (the machine's other work, disk writeback of the
    // previous target, caches) falls on both alike. `FERRY_BENCH_ORDER=before-first` starts
    // with the second build.
    let here = ("ferry", env!("CARGO_BIN_EXE_ferry").to_string());
    let order = match std::env::var("FERRY_BENCH_BIN_BEFORE") {
        Err(_) => vec![here],
        Ok(before) => {
            let before = ("ferry-before", before);
            let (a, b) = match std::env::var("FERRY_BENCH_ORDER").as_deref() {
                Ok("before-first") => (before, here),
                _ => (here, before),
            };
            vec![a.clone(), b.clone(), b, a]
        }
    };
    let mut colds: Vec<(&str, Measured)> = Vec::new();
    // The first target each build filled, for the no-op runs.
    let mut kept: Vec<Filled> = Vec::new();
    for (label, bin) in order {
        let (filled, cold) = Filled::cold(label, &bin, &src, &c).await;
        // Requests do not vary from run to run of one build: the breakdown once is enough.
        let first = !colds.iter().any(|(l, _)| *l == label);
        cold.print(&format!("{label} cold"), &c, first);
        colds.push((label, cold));
        if first {
            kept.push(filled);
        }
    }
    // A no-op run takes about half a second: several, interleaved between the builds.
    let mut noops: Vec<Vec<Measured>> = kept.iter().map(|_| Vec::new()).collect();
    for n in 0..NOOP_RUNS {
        for (filled, runs) in kept.iter().zip(&mut noops) {
            runs.push(filled.noop(n, &src, &c).await);
        }
    }
    let noops: Vec<(&str, Vec<Measured>)> = kept
        .iter()
        .zip(noops)
        .map(|(f, mut runs)| {
            runs.sort_by(|a, b| a.secs.total_cmp(&b.secs));
            runs[NOOP_RUNS / 2].print(&format!("{} no-op (median)", f.label), &c, true);
            (f.label, runs)
        })
        .collect();
    drop(kept);
    let skopeo = skopeo_cold(&src, &c).await;
    skopeo.print("skopeo cold", &c, true);
    single_post_cold(&src, &c).await;

    let times = |ms: &[&Measured]| {
        ms.iter()
            .map(|m| format!("{:.2}", m.secs))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mean = |ms: &[&Measured]| ms.iter().map(|m| m.secs).sum::<f64>() / ms.len() as f64;
    let cold_of = |l: &str| -> Vec<&Measured> {
        colds
            .iter()
            .filter(|(x, _)| *x == l)
            .map(|(_, m)| m)
            .collect()
    };
    let noop_of = |l: &str| -> Vec<&Measured> {
        noops
            .iter()
            .filter(|(x, _)| *x == l)
            .flat_map(|(_, ms)| ms.iter())
            .collect()
    };
    for label in ["ferry", "ferry-before"] {
        let (cold, noop) = (cold_of(label), noop_of(label));
        if cold.is_empty() {
            continue;
        }
        println!(
            "RESULT [many {label}] cold {} s (skopeo {:.2} s: {:.2}x on the mean); no-op {} s (sorted; median {:.2}); \
             requests cold: source {} target {}; no-op: source {} target {}; skopeo cold: source {} target {}",
            times(&cold),
            skopeo.secs,
            mean(&cold) / skopeo.secs,
            times(&noop),
            noop[NOOP_RUNS / 2].secs,
            cold[0].source.total(),
            cold[0].target.total(),
            noop[0].source.total(),
            noop[0].target.total(),
            skopeo.source.total(),
            skopeo.target.total(),
        );
    }
    let (after, before) = (cold_of("ferry"), cold_of("ferry-before"));
    if !before.is_empty() {
        let (after_noop, before_noop) = (noop_of("ferry"), noop_of("ferry-before"));
        println!(
            "RESULT [many] after/before: cold {:.2}x on the means, no-op {:.2}x on the medians",
            mean(&after) / mean(&before),
            after_noop[NOOP_RUNS / 2].secs / before_noop[NOOP_RUNS / 2].secs,
        );
    }
    assert!(colds.iter().all(|(_, cold)| cold.secs < skopeo.secs));
}

/// skopeo's blob-location cache: it would remember blobs of an earlier target on one port.
pub(crate) const SKOPEO_CACHE: &str = "/var/lib/containers/cache/blob-info-cache-v1.boltdb";
