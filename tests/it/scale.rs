//! Memory flat in the number of tags (issue 24): the same commands over 2,000 and over
//! 20,000 tags (an organisation of 20 and of 200 repositories of 100 tags, four images each
//! under many tags) differ in peak RSS by less than 8 MiB. What a run keeps per item is a
//! counter or a row in SQLite, and what it holds at once is a bounded number of
//! repositories' items, so ten times the tags is not ten times the memory. The registries are the in-process OCI registry: what is
//! measured is ferry, and 40,000 round trips to it take seconds (the organisation-scale
//! benchmark runs the same corpus against CNCF distribution).

use std::path::Path;

use crate::bench_scale::{repo_name, tag_name};
use crate::common::*;
use crate::harness::*;

/// Tags per repository.
const TAGS: usize = 100;
/// Images per repository; tag `t` points at image `t % IMAGES`.
const IMAGES: usize = 4;
/// The most peak RSS may grow from 2,000 to 20,000 tags.
const FLAT_KIB: u64 = 8 * 1024;

/// `ferry ARGS` run to its end: its exit code, its own peak RSS in KiB, and what it printed.
///
/// The peak comes from GNU time, which forks ferry from its own small process. `wait4`'s
/// `ru_maxrss` of a child of this test would not do: at `exec` Linux keeps the high-water
/// mark of the memory the child was forked with, so a child of this process (whose in-process
/// registries hold every tag) starts at this process' peak, and would measure the test.
fn peak_rss(args: &[&str], state: &Path, dir: &Path) -> (i32, u64, String) {
    let out = std::process::Command::new("/usr/bin/time")
        .args(["-f", "RSS %M", env!("CARGO_BIN_EXE_ferry")])
        .args(args)
        .env("FERRY_STATE", state)
        .env("HOME", dir)
        .output()
        .expect("run /usr/bin/time (Debian package `time`)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let rss = stderr
        .lines()
        .rfind(|l| l.starts_with("RSS "))
        .and_then(|l| l[4..].trim().parse().ok())
        .unwrap_or_else(|| panic!("no RSS line from /usr/bin/time:\n{stderr}"));
    let printed = format!("{}{stderr}", String::from_utf8_lossy(&out.stdout));
    (out.status.code().unwrap_or(-1), rss, printed)
}

/// Repositories of `TAGS` tags over `IMAGES` small images each, `tags` tags in all.
async fn populate(reg: &OciRegistry, tags: usize) {
    let pusher = reg.pusher();
    let base = layer(7_100_000, 1024);
    for r in 0..tags / TAGS {
        let repo = repo_name(r);
        let mut digests = Vec::new();
        for i in 0..IMAGES {
            let own = layer(7_200_000 + (r * IMAGES + i) as u64, 256);
            let img = image(
                &[base.clone(), own],
                "linux",
                "amd64",
                Format::Oci,
                &format!("{repo}-{i}"),
            );
            pusher.push(&repo, &tag_name(i), &img).await;
            digests.push(img.digest);
        }
        for t in IMAGES..TAGS {
            reg.tag(&repo, &tag_name(t), &digests[t % IMAGES]);
        }
    }
}

/// Peak RSS (KiB) of a cold `ferry run` and of the no-op run after it, over `tags` tags.
async fn measured(tags: usize) -> (u64, u64) {
    let src = OciRegistry::start(OciOptions::default()).await;
    let dst = OciRegistry::start(OciOptions::default()).await;
    populate(&src, tags).await;
    let dir = tempfile::tempdir().unwrap();
    let plan = copy_plan(
        dir.path(),
        &[src.addr(), dst.addr()],
        "",
        &format!("{}/org/*", src.addr()),
        &format!("{}/org/*", dst.addr()),
    );
    let state = dir.path().join("ferry.db");
    let report = dir.path().join("report.json");
    let args: Vec<String> = ["run", "--progress", "none", "--report"]
        .into_iter()
        .map(String::from)
        .chain([report, plan].map(|p| p.display().to_string()))
        .collect();
    let (d, s) = (dir.path().to_path_buf(), state);
    let run = move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        peak_rss(&args, &s, &d)
    };
    let (code, cold, out) = tokio::task::spawn_blocking(run.clone()).await.unwrap();
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("{tags} images copied")), "{out}");
    let (code, noop, out) = tokio::task::spawn_blocking(run).await.unwrap();
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("{tags} unchanged")), "{out}");
    (cold, noop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peak_memory_does_not_grow_with_the_number_of_tags() {
    let (cold_small, noop_small) = measured(2_000).await;
    let (cold_large, noop_large) = measured(20_000).await;
    println!(
        "peak RSS, 2,000 / 20,000 tags: cold {} / {} MiB, no-op {} / {} MiB",
        cold_small / 1024,
        cold_large / 1024,
        noop_small / 1024,
        noop_large / 1024
    );
    for (what, small, large) in [
        ("cold run", cold_small, cold_large),
        ("no-op run", noop_small, noop_large),
    ] {
        assert!(
            large.saturating_sub(small) < FLAT_KIB,
            "{what}: peak RSS {} KiB at 2,000 tags, {} KiB at 20,000: it grows with the tags",
            small,
            large
        );
    }
}
