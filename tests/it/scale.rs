//! The "done when" check of the copy engine, and the side-by-side benchmark with skopeo:
//! 20 repositories, 120 tags, about 480 MB with shared base layers, multi-arch indexes and
//! signature tags, copied with a wildcard plan between two real registries. Ignored in the
//! normal suite (it moves half a gigabyte); `bench/compare-skopeo.sh` runs it in release mode
//! and prints the figures.

use std::time::Instant;

use crate::common::*;
use crate::harness::*;

const REPOS: usize = 20;
const MB: usize = 1024 * 1024;

/// Push the scale fixture; returns (repo, tag, digest) for every tag and the blob count.
async fn populate_scale(reg: &Registry) -> (Vec<(String, String, String)>, usize, usize) {
    let bases: Vec<Blob> = (0..3).map(|i| layer(10_000 + i, 20 * MB)).collect();
    let pusher = reg.pusher();
    let mut tags = Vec::new();
    let mut blobs = std::collections::HashSet::new();
    let mut bytes = 0usize;
    for r in 0..REPOS {
        let repo = format!("org/service-{r:02}");
        let mut images = Vec::new();
        for v in 0..4u64 {
            let own = layer(20_000 + (r as u64) * 10 + v, 4 * MB);
            let img = image(
                &[
                    bases[0].clone(),
                    bases[1].clone(),
                    bases[(r % 2) + 1].clone(),
                    own,
                ],
                "linux",
                "amd64",
                Format::Oci,
                &format!("{repo}-v1.{v}.0"),
            );
            images.push((format!("v1.{v}.0"), img));
        }
        let plats = vec![
            image(
                &[bases[0].clone(), layer(30_000 + r as u64 * 2, 2 * MB)],
                "linux",
                "amd64",
                Format::Docker,
                &repo,
            ),
            image(
                &[bases[0].clone(), layer(30_001 + r as u64 * 2, 2 * MB)],
                "linux",
                "arm64",
                Format::Docker,
                &repo,
            ),
        ];
        let multi = index(plats, Format::Docker);
        let (sig_tag, sig) = cosign_signature(&multi, &repo);
        images.push(("multi".into(), multi));
        images.push((sig_tag, sig));
        for (tag, img) in &images {
            pusher.push(&repo, tag, img).await;
            for b in img.all_blobs() {
                if blobs.insert(b.digest.clone()) {
                    bytes += b.bytes.len();
                }
            }
            tags.push((repo.clone(), tag.clone(), img.digest.clone()));
        }
    }
    (tags, blobs.len(), bytes)
}

/// Run a command under GNU time; returns (seconds, max RSS in KiB, stdout, stderr).
async fn timed(
    program: &str,
    args: &[&str],
    state: &std::path::Path,
) -> (f64, u64, String, String) {
    let out = tokio::process::Command::new("/usr/bin/time")
        .env("FERRY_STATE", state)
        .arg("-f")
        .arg("TIME %e %M")
        .arg(program)
        .args(args)
        .env("HOME", std::env::temp_dir())
        .output()
        .await
        .expect("run /usr/bin/time (Debian package `time`)");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{program} {args:?} failed:\n{stdout}\n{stderr}"
    );
    let line = stderr
        .lines()
        .rfind(|l| l.starts_with("TIME "))
        .expect("time line");
    let mut parts = line.split_whitespace().skip(1);
    let secs: f64 = parts.next().unwrap().parse().unwrap();
    let rss: u64 = parts.next().unwrap().parse().unwrap();
    (secs, rss, stdout, stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "moves ~480 MB; run by bench/compare-skopeo.sh"]
async fn scale_wildcard_copy_and_skopeo_comparison() {
    let (src, dst, peer) = (
        Registry::start().await,
        Registry::start().await,
        Registry::start().await,
    );
    let started = Instant::now();
    let (tags, blob_count, bytes) = populate_scale(&src).await;
    println!(
        "fixture: {REPOS} repositories, {} tags, {blob_count} unique blobs, {:.0} MB, pushed in {:.1} s",
        tags.len(),
        bytes as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );

    let dir = tempfile::tempdir().unwrap();
    let p = plan(
        dir.path(),
        &format!(
            "version = 1\n{}\n[[copy]]\nfrom = \"{}/org/*\"\nto = \"{}/org/*\"\n",
            insecure(&[&src, &dst]),
            src.addr,
            dst.addr
        ),
    );
    let p = p.to_str().unwrap();
    let state = dir.path().join("ferry.db");
    let ferry_bin = env!("CARGO_BIN_EXE_ferry");
    let (t1, rss1, out1, _) = timed(ferry_bin, &["run", "--progress", "none", p], &state).await;
    println!(
        "ferry first run:  {t1:.2} s, max RSS {} MiB: {}",
        rss1 / 1024,
        out1.trim()
    );
    assert!(
        out1.starts_with(&format!(
            "ferry: {} images copied, 0 already present, 0 failed",
            tags.len()
        )),
        "{out1}"
    );

    // Every tag at the target with the source digest, every blob present.
    let pusher = dst.pusher();
    for (repo, tag, digest) in &tags {
        let (_, _, d) = pusher
            .manifest(repo, tag)
            .await
            .unwrap_or_else(|| panic!("{repo}:{tag}"));
        assert_eq!(&d, digest, "{repo}:{tag}");
    }

    dst.sync_log().await;
    let before = uploads(&dst);
    let (t2, _, out2, _) = timed(ferry_bin, &["run", "--progress", "none", p], &state).await;
    println!("ferry second run: {t2:.2} s: {}", out2.trim());
    assert!(
        out2.contains(&format!(
            "0 images copied, {} already present, 0 failed; 0 B transferred",
            tags.len()
        )),
        "{out2}"
    );
    dst.sync_log().await;
    assert_eq!(uploads(&dst), before, "the second run uploaded nothing");

    // skopeo sync, the same repositories, into a third registry.
    let _ = std::fs::remove_file("/var/lib/containers/cache/blob-info-cache-v1.boltdb");
    let mut yaml = format!("{}:\n  tls-verify: false\n  images:\n", src.addr);
    for r in 0..REPOS {
        yaml.push_str(&format!("    org/service-{r:02}: []\n"));
    }
    let sync = dir.path().join("sync.yml");
    std::fs::write(&sync, yaml).unwrap();
    let dest = format!("{}/org", peer.addr);
    let args = [
        "sync",
        "--src",
        "yaml",
        "--dest",
        "docker",
        "--dest-tls-verify=false",
        "--all",
        sync.to_str().unwrap(),
        dest.as_str(),
    ];
    let (s1, srss, _, _) = timed("skopeo", &args, &state).await;
    println!("skopeo first run: {s1:.2} s, max RSS {} MiB", srss / 1024);
    let (s2, _, _, _) = timed("skopeo", &args, &state).await;
    println!("skopeo second run: {s2:.2} s");
    println!(
        "RESULT first run: ferry {t1:.2} s, skopeo {s1:.2} s, ferry is {:.1}x faster; second run: ferry {t2:.2} s, skopeo {s2:.2} s, {:.1}x",
        s1 / t1,
        s2 / t2
    );
}
