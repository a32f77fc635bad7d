//! The organisation-scale benchmark (issue 24): 100 repositories × 1,000 tags over 1,000
//! manifests (ten small images per repository, a hundred tags on each), one wildcard rule,
//! CNCF distribution on loopback. Tags are cheap: each repository's ten images are pushed
//! once over HTTP, then the other tags are written straight into the registry's storage
//! directory (a tag is two `link` files there), so the corpus is built in seconds. Tags are
//! named `build-NNNN`, which no `immutable_tags` pattern matches: every one is mutable, the
//! costly case for a no-op.
//!
//! Each phase is a process of its own under GNU time: `ferry run` cold, the no-op run,
//! `--recheck`, `ferry plan` (text and JSON), `ferry verify`, `ferry status` and `ferry report
//! merge`; printed with wall time, peak RSS and the requests each registry's access log shows.
//! After the no-op, the floor: the same `HEAD`s from a bare client, with the registry's CPU.
//! `FERRY_BENCH_TAGS` sets the number of tags (default 100,000; a multiple of 1,000);
//! `FERRY_BENCH_NOOP_ONLY` stops after the floor.
//! Ignored in the normal suite; `bench/compare-skopeo.sh scale` runs it in release mode.

use std::path::Path;
use std::time::Instant;

use futures::StreamExt;

use crate::bench::timed;
use crate::bench_many::measure::{mark, since, Measured};
use crate::common::*;
use crate::harness::*;

const REPOS: usize = 100;
/// Images pushed per repository; every tag points at one of them.
const IMAGES: usize = 10;
const PUSHERS: usize = 16;

pub(crate) fn repo_name(r: usize) -> String {
    format!("org/svc-{r:03}")
}

pub(crate) fn tag_name(t: usize) -> String {
    format!("build-{t:05}")
}

/// What the corpus holds: repositories, tags per repository, and each repository's manifest
/// digests (tag `t` points at `digests[t % IMAGES]`).
pub(crate) struct Corpus {
    pub(crate) repos: usize,
    pub(crate) tags_per_repo: usize,
    pub(crate) digests: Vec<Vec<String>>,
}

impl Corpus {
    pub(crate) fn tags(&self) -> usize {
        self.repos * self.tags_per_repo
    }
}

/// Ten small single-platform images per repository (a shared base layer and one of its own),
/// pushed with their first ten tags; then every other tag written into the storage directory.
pub(crate) async fn populate(reg: &Registry, repos: usize, tags_per_repo: usize) -> Corpus {
    assert!(
        tags_per_repo >= IMAGES,
        "at least {IMAGES} tags per repository"
    );
    let base = layer(7_000_000, 2048);
    let images: Vec<Vec<Image>> = (0..repos)
        .map(|r| {
            (0..IMAGES)
                .map(|i| {
                    let own = layer(8_000_000 + (r * IMAGES + i) as u64, 512);
                    let label = format!("{}-{i}", repo_name(r));
                    image(&[base.clone(), own], "linux", "amd64", Format::Oci, &label)
                })
                .collect()
        })
        .collect();
    futures::stream::iter(images.iter().enumerate())
        .for_each_concurrent(PUSHERS, |(r, imgs)| async move {
            let pusher = reg.pusher();
            for (i, img) in imgs.iter().enumerate() {
                pusher.push(&repo_name(r), &tag_name(i), img).await;
            }
        })
        .await;
    let digests: Vec<Vec<String>> = images
        .iter()
        .map(|imgs| imgs.iter().map(|i| i.digest.clone()).collect())
        .collect();
    let root = reg.storage_dir().join("docker/registry/v2/repositories");
    for (r, ds) in digests.iter().enumerate() {
        let tags = root.join(repo_name(r)).join("_manifests/tags");
        for t in IMAGES..tags_per_repo {
            write_tag(&tags.join(tag_name(t)), &ds[t % IMAGES]);
        }
    }
    Corpus {
        repos,
        tags_per_repo,
        digests,
    }
}

/// A tag as distribution stores it: `current/link` and `index/sha256/<hex>/link`, each
/// holding the manifest's digest.
pub(crate) fn write_tag(dir: &Path, digest: &str) {
    let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
    let index = dir.join("index/sha256").join(hex);
    let current = dir.join("current");
    for d in [&index, &current] {
        std::fs::create_dir_all(d).unwrap_or_else(|e| panic!("{}: {e}", d.display()));
        std::fs::write(d.join("link"), digest).unwrap();
    }
}

/// A plan copying every repository of the corpus from `src` to `dst`.
pub(crate) fn scale_plan(dir: &Path, src: &Registry, dst: &Registry) -> std::path::PathBuf {
    copy_plan(
        dir,
        &[&src.addr, &dst.addr],
        "",
        &format!("{}/org/*", src.addr),
        &format!("{}/org/*", dst.addr),
    )
}

/// One phase: a ferry command under GNU time, with what it asked of both registries.
async fn phase(
    name: &str,
    args: &[&str],
    state: &Path,
    (src, dst): (&Registry, &Registry),
) -> (Measured, String) {
    let (s0, t0) = (mark(src).await, mark(dst).await);
    let cpu0 = (children_cpu(), src.cpu_seconds(), dst.cpu_seconds());
    // `FERRY_BENCH_BIN`: another build (or a wrapper that profiles one phase).
    let bin = std::env::var("FERRY_BENCH_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_ferry").to_string());
    let (secs, rss, out, _) = timed(&bin, args, state).await;
    let m = Measured {
        secs,
        rss_mib: rss / 1024,
        stalled: [0.0; 3],
        source: since(src, s0, &format!("scale {name} source")).await,
        target: since(dst, t0, &format!("scale {name} target")).await,
    };
    println!(
        "RESULT [scale] {name:<16} {:>8.2} s  peak RSS {:>4} MiB  requests: source {:>7}, target {:>7}",
        m.secs,
        m.rss_mib,
        m.source.total(),
        m.target.total()
    );
    let cpu = (
        children_cpu() - cpu0.0,
        src.cpu_seconds() - cpu0.1,
        dst.cpu_seconds() - cpu0.2,
    );
    println!(
        "  CPU: ferry {:.1} s, source registry {:.1} s, target registry {:.1} s ({} cores)",
        cpu.0,
        cpu.1,
        cpu.2,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    for (side, t) in [("source", &m.source), ("target", &m.target)] {
        if t.total() > 0 {
            println!("  {side}:\n{}", t.breakdown());
        }
    }
    (m, out)
}

/// The floor of a no-op: the same one `HEAD` per tag the no-op sends, from a bare client in
/// this process (16 at a time, ferry's connections per registry, keep-alive), with nothing
/// else done per tag: what the registry itself needs. Wall time, and the registry's CPU.
async fn floor(src: &Registry, c: &Corpus) {
    let client = reqwest::Client::new();
    let accept = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";
    let urls = (0..c.repos).flat_map(|r| {
        (0..c.tags_per_repo)
            .map(move |t| format!("{}/v2/{}/manifests/{}", src.url, repo_name(r), tag_name(t)))
    });
    let (cpu0, started) = (src.cpu_seconds(), Instant::now());
    let ok = futures::stream::iter(urls)
        .map(|url| {
            let client = &client;
            async move {
                let r = client.head(url).header("Accept", accept).send().await;
                r.is_ok_and(|r| r.status().is_success())
            }
        })
        .buffer_unordered(16)
        .filter(|ok| std::future::ready(*ok))
        .count()
        .await;
    assert_eq!(ok, c.tags(), "every HEAD answered 200");
    println!(
        "RESULT [scale] floor: {} HEADs from a bare client {:>8.2} s  source registry CPU {:.1} s",
        c.tags(),
        started.elapsed().as_secs_f64(),
        src.cpu_seconds() - cpu0
    );
}

/// CPU seconds (user and system) of this process' children waited for so far: each phase's
/// GNU time and the ferry it ran.
fn children_cpu() -> f64 {
    // SAFETY: rusage is plain data the kernel fills in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// The first and the last tag of every repository at `dst` have the source's digest.
async fn spot_check(dst: &Registry, c: &Corpus) {
    let pusher = dst.pusher();
    for (r, digests) in c.digests.iter().enumerate() {
        for t in [0, c.tags_per_repo - 1] {
            let (repo, tag) = (repo_name(r), tag_name(t));
            let (_, _, d) = pusher
                .manifest(&repo, &tag)
                .await
                .unwrap_or_else(|| panic!("{repo}:{tag} missing at the target"));
            assert_eq!(d, digests[t % IMAGES], "{repo}:{tag}");
        }
    }
}

fn summary_line<'a>(out: &'a str, starts: &str) -> &'a str {
    out.lines()
        .find(|l| l.contains(starts))
        .unwrap_or("(no summary line)")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "builds 100,000 tags and runs every ferry command over them; run by bench/compare-skopeo.sh scale"]
async fn bench_scale() {
    let tags: usize = std::env::var("FERRY_BENCH_TAGS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let (src, dst) = (Registry::start().await, Registry::start().await);
    let started = Instant::now();
    let c = populate(&src, REPOS, tags / REPOS).await;
    println!(
        "fixture: {} repositories × {} tags = {} tags over {} manifests, built in {:.1} s",
        c.repos,
        c.tags_per_repo,
        c.tags(),
        c.repos * IMAGES,
        started.elapsed().as_secs_f64()
    );
    let dir = tempfile::tempdir().unwrap();
    let plan = scale_plan(dir.path(), &src, &dst);
    let plan = plan.to_str().unwrap();
    let state = dir.path().join("ferry.db");
    let report = dir.path().join("report.json");
    let report = report.to_str().unwrap();
    let regs = (&src, &dst);
    let run = ["run", "--progress", "none", "--report", report, plan];
    let (_, out) = phase("run cold", &run, &state, regs).await;
    let copied = format!("{} images copied", c.tags());
    assert!(out.contains(&copied), "{out}");
    spot_check(&dst, &c).await;
    println!("  {}", summary_line(&out, "images copied"));
    let (_, out) = phase("run no-op", &run, &state, regs).await;
    println!("  {}", summary_line(&out, "images copied"));
    floor(&src, &c).await;
    if std::env::var("FERRY_BENCH_NOOP_ONLY").is_ok() {
        return;
    }
    let recheck = [
        "run",
        "--progress",
        "none",
        "--recheck",
        "--report",
        report,
        plan,
    ];
    let (_, out) = phase("run --recheck", &recheck, &state, regs).await;
    println!("  {}", summary_line(&out, "images copied"));
    phase("plan", &["plan", plan], &state, regs).await;
    let plan_json = ["plan", "--output", "json", plan];
    phase("plan json", &plan_json, &state, regs).await;
    phase("verify", &["verify", plan], &state, regs).await;
    phase("status", &["status", plan], &state, regs).await;
    let merged = dir.path().join("merged.json");
    let merge = [
        "report",
        "merge",
        "--output",
        merged.to_str().unwrap(),
        report,
        report,
    ];
    phase("report merge", &merge, &state, regs).await;
    let size = std::fs::metadata(&state).map_or(0, |m| m.len());
    println!(
        "RESULT [scale] checkpoint {:.1} MiB ({} bytes per tag), report {:.1} MiB",
        size as f64 / 1048576.0,
        size / c.tags() as u64,
        std::fs::metadata(report).map_or(0, |m| m.len()) as f64 / 1048576.0
    );
}
