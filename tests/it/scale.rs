//! Memory flat in the number of tags (issue 24): the same commands over 2,000 and over
//! 20,000 tags (10 repositories, ten images each under many tags) differ in peak RSS by less
//! than 8 MiB. What a run keeps per item is a counter or a row in SQLite, so ten times the
//! tags is not ten times the memory. The registries are the in-process OCI registry: what is
//! measured is ferry, and 40,000 round trips to it take seconds (the organisation-scale
//! benchmark runs the same corpus against CNCF distribution).

use std::path::Path;

use crate::bench_scale::{repo_name, tag_name};
use crate::common::*;
use crate::harness::*;

const REPOS: usize = 10;
/// Images per repository; tag `t` points at image `t % IMAGES`.
const IMAGES: usize = 10;
/// The most peak RSS may grow from 2,000 to 20,000 tags.
const FLAT_KIB: u64 = 8 * 1024;

/// `ferry ARGS` run to its end: its exit code, its own peak RSS in KiB (`wait4`'s rusage of
/// that one child), and what it printed.
fn peak_rss(args: &[&str], state: &Path, dir: &Path) -> (i32, u64, String) {
    let out_path = dir.join("out.txt");
    let out = std::fs::File::create(&out_path).unwrap();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(args)
        .env("FERRY_STATE", state)
        .env("HOME", dir)
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("start ferry");
    let pid = child.id() as libc::pid_t;
    let mut status: libc::c_int = 0;
    // SAFETY: rusage is plain data filled in by the kernel; pid is our own child, which
    // nothing else waits for (`child` is never waited on, only dropped).
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(waited, pid, "wait4: {}", std::io::Error::last_os_error());
    drop(child);
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    let printed = std::fs::read_to_string(&out_path).unwrap_or_default();
    (code, usage.ru_maxrss as u64, printed)
}

/// `REPOS` repositories of `IMAGES` small images each, under `tags` tags in all.
async fn populate(reg: &OciRegistry, tags: usize) {
    let pusher = reg.pusher();
    let base = layer(7_100_000, 1024);
    for r in 0..REPOS {
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
        for t in IMAGES..tags / REPOS {
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
