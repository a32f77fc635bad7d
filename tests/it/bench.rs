//! Side-by-side benchmarks with skopeo (and the "done when" checks of the copy engine):
//! 20 repositories, 120 tags, about 480 MB with shared base layers, multi-arch indexes and
//! signature tags, copied with a wildcard plan between two real registries. Ignored in the
//! normal suite (it moves half a gigabyte); `bench/compare-skopeo.sh` runs it in release mode
//! and prints the figures.

use std::time::Instant;

use std::time::Duration;

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
/// The arguments of `skopeo sync --all` of `repos` at `source` into `dest` (both plain
/// HTTP), its sync file written into `dir`.
pub fn skopeo_sync_args<'a>(
    dir: &std::path::Path,
    source: &str,
    repos: impl IntoIterator<Item = &'a String>,
    dest: &str,
) -> Vec<String> {
    let mut yaml = format!("{source}:\n  tls-verify: false\n  images:\n");
    for r in repos {
        yaml.push_str(&format!("    {r}: []\n"));
    }
    let sync = dir.join("sync.yml");
    std::fs::write(&sync, yaml).unwrap();
    let sync = sync.display().to_string();
    let fixed = [
        "sync",
        "--src",
        "yaml",
        "--dest",
        "docker",
        "--dest-tls-verify=false",
        "--all",
    ];
    fixed
        .into_iter()
        .map(String::from)
        .chain([sync, dest.to_string()])
        .collect()
}

pub async fn timed(
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

/// The figures of one side-by-side run.
struct Figures {
    ferry_cold: f64,
    ferry_rss_mib: u64,
    ferry_noop: f64,
    skopeo_cold: f64,
    skopeo_rss_mib: u64,
    skopeo_noop: f64,
}

/// Copy `org/*` from `source` (a host in plans) to `ferry_target` with ferry and to
/// `skopeo_target` with `skopeo sync --all`, cold and again as a no-op; check ferry's result
/// at `check` tag by tag.
async fn side_by_side(
    label: &str,
    source: &str,
    ferry_target: &str,
    skopeo_target: &str,
    check: &Registry,
    tags: &[(String, String, String)],
) -> Figures {
    let dir = tempfile::tempdir().unwrap();
    let p = plan(
        dir.path(),
        &format!(
            "version = 1\n[registry.\"{source}\"]\ninsecure = true\n[registry.\"{ferry_target}\"]\ninsecure = true\n[[copy]]\nfrom = \"{source}/org/*\"\nto = \"{ferry_target}/org/*\"\n"
        ),
    );
    let p = p.to_str().unwrap();
    let state = dir.path().join("ferry.db");
    let ferry_bin = env!("CARGO_BIN_EXE_ferry");
    let (t1, rss1, out1, _) = timed(ferry_bin, &["run", "--progress", "none", p], &state).await;
    println!(
        "[{label}] ferry cold:  {t1:.2} s, peak RSS {} MiB: {}",
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
    let pusher = check.pusher();
    for (repo, tag, digest) in tags {
        let (_, _, d) = pusher
            .manifest(repo, tag)
            .await
            .unwrap_or_else(|| panic!("{repo}:{tag}"));
        assert_eq!(&d, digest, "{repo}:{tag}");
    }
    check.sync_log().await;
    let before = uploads(check);
    let asked = check.requests().len();
    let (t2, _, out2, _) = timed(ferry_bin, &["run", "--progress", "none", p], &state).await;
    check.sync_log().await;
    println!(
        "[{label}] ferry no-op: {t2:.2} s, {} requests at the target: {}",
        check.requests().len() - asked,
        out2.trim()
    );
    assert!(
        out2.contains(&format!(
            "0 images copied, 0 already present, {} unchanged (trusted from the checkpoint), 0 failed; 0 B transferred",
            tags.len()
        )),
        "{out2}"
    );
    check.sync_log().await;
    assert_eq!(uploads(check), before, "the no-op run uploaded nothing");
    // The nightly run a day later: every record is older than `recheck_after`, so each tag is
    // read at its source once and checked at its target whole (issue 21): one HEAD per tag,
    // one GET per child manifest and one HEAD per blob, each once per repository.
    let stale = dir.path().join("stale.toml");
    std::fs::write(
        &stale,
        std::fs::read_to_string(p)
            .unwrap()
            .replace("version = 1\n", "version = 1\nrecheck_after = \"1s\"\n"),
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let asked = check.requests().len();
    let (t3, _, out3, _) = timed(
        ferry_bin,
        &["run", "--progress", "none", stale.to_str().unwrap()],
        &state,
    )
    .await;
    check.sync_log().await;
    println!(
        "[{label}] ferry no-op, records past recheck_after: {t3:.2} s, {} requests at the target: {}",
        check.requests().len() - asked,
        out3.trim()
    );

    // The audit (issue 21): every tag checked at its target whole, changing nothing; then
    // the same reading every blob.
    for deep in [false, true] {
        let mut args = vec!["verify", "--progress", "none", "--output", "json", p];
        if deep {
            args.insert(1, "--deep");
        }
        let (t, rss, out, _) = timed(ferry_bin, &args, &state).await;
        let v: serde_json::Value =
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
        assert_eq!(v["totals"]["complete"], tags.len(), "{}", v["totals"]);
        let per_image = |host: &str| {
            let r = &v["registries"][host];
            format!(
                "{} requests ({:.2} per image: {})",
                r["requests"],
                r["requests"].as_f64().unwrap_or(0.0) / tags.len() as f64,
                r["by_kind"]
            )
        };
        println!(
            "[{label}] ferry verify{}: {t:.2} s, peak RSS {} MiB; source {}; target {}",
            if deep { " --deep" } else { "" },
            rss / 1024,
            per_image(source),
            per_image(ferry_target)
        );
    }

    let _ = std::fs::remove_file("/var/lib/containers/cache/blob-info-cache-v1.boltdb");
    let mut repos: Vec<&String> = tags.iter().map(|(r, _, _)| r).collect();
    repos.dedup();
    let args = skopeo_sync_args(dir.path(), source, repos, &format!("{skopeo_target}/org"));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (s1, srss, _, _) = timed("skopeo", &args, &state).await;
    println!(
        "[{label}] skopeo cold:  {s1:.2} s, peak RSS {} MiB",
        srss / 1024
    );
    let (s2, _, _, _) = timed("skopeo", &args, &state).await;
    println!("[{label}] skopeo no-op: {s2:.2} s");
    println!(
        "RESULT [{label}] cold: ferry {t1:.2} s vs skopeo {s1:.2} s = {:.2}x; no-op: ferry {t2:.2} s vs skopeo {s2:.2} s = {:.2}x; peak RSS ferry {} MiB, skopeo {} MiB",
        t1 / s1,
        t2 / s2,
        rss1 / 1024,
        srss / 1024
    );
    Figures {
        ferry_cold: t1,
        ferry_rss_mib: rss1 / 1024,
        ferry_noop: t2,
        skopeo_cold: s1,
        skopeo_rss_mib: srss / 1024,
        skopeo_noop: s2,
    }
}

/// The "done when" corpus: 20 repositories, 120 tags, ~480 MB.
async fn corpus() -> (Registry, Vec<(String, String, String)>) {
    let src = Registry::start().await;
    let started = Instant::now();
    let (tags, blob_count, bytes) = populate_scale(&src).await;
    println!(
        "fixture: {REPOS} repositories, {} tags, {blob_count} unique blobs, {:.0} MB, pushed in {:.1} s",
        tags.len(),
        bytes as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    (src, tags)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "moves ~480 MB twice; run by bench/compare-skopeo.sh"]
async fn bench_loopback() {
    let (src, tags) = corpus().await;
    let (dst, peer) = (Registry::start().await, Registry::start().await);
    let f = side_by_side("loopback", &src.addr, &dst.addr, &peer.addr, &dst, &tags).await;
    assert!(f.ferry_cold < f.skopeo_cold && f.ferry_noop < f.skopeo_noop);
    let _ = (f.ferry_rss_mib, f.skopeo_rss_mib);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "moves ~480 MB twice over an emulated WAN; run by bench/compare-skopeo.sh"]
async fn bench_wan() {
    // ~40 ms per round trip, 12.5 MB/s (100 Mbit/s) per connection, both directions.
    let shaping = Shaping {
        round_trip: Duration::from_millis(40),
        bytes_per_second: 12_500_000,
    };
    let (src, tags) = corpus().await;
    let (dst, peer) = (Registry::start().await, Registry::start().await);
    let (src_wan, dst_wan, peer_wan) = (
        Proxy::wan(&src.url, shaping).await,
        Proxy::wan(&dst.url, shaping).await,
        Proxy::wan(&peer.url, shaping).await,
    );
    let f = side_by_side(
        "wan 40ms 100Mbit/s",
        &src_wan.addr,
        &dst_wan.addr,
        &peer_wan.addr,
        &dst,
        &tags,
    )
    .await;
    assert!(f.ferry_cold < f.skopeo_cold);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "builds and copies a 1 GiB layer; run by bench/compare-skopeo.sh"]
async fn bench_one_gib_layer_memory() {
    let (src, dst) = (Registry::start().await, Registry::start().await);
    let big = layer(77, 1024 * 1024 * 1024);
    let img = image(&[big], "linux", "amd64", Format::Oci, "gib");
    src.pusher().push("org/big", "1.0.0", &img).await;
    let tags = vec![(
        "org/big".to_string(),
        "1.0.0".to_string(),
        img.digest.clone(),
    )];
    drop(img);
    let peer = Registry::start().await;
    let f = side_by_side("1 GiB layer", &src.addr, &dst.addr, &peer.addr, &dst, &tags).await;
    assert!(
        f.ferry_rss_mib <= 64,
        "peak RSS {} MiB while copying a 1 GiB layer",
        f.ferry_rss_mib
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "copies ~480 MB with three SIGKILLs; run by bench/compare-skopeo.sh"]
async fn bench_kill_and_resume() {
    let (src, tags) = corpus().await;
    let dst = Registry::start().await;
    let target = Proxy::transparent(&dst.url).await;
    let source = Proxy::transparent(&src.url).await;
    let dir = tempfile::tempdir().unwrap();
    let p = copy_plan(
        dir.path(),
        &[&source.addr, &target.addr],
        "",
        &format!("{}/org/*", source.addr),
        &format!("{}/org/*", target.addr),
    );
    let p = p.to_str().unwrap();
    // Kill points by bytes: ~483 MB of unique blobs in the corpus.
    let clean = 483_000_000f64;
    let mut kills = 0;
    for fraction in [0.25, 0.5, 0.75] {
        if crate::resume::run_until_killed(p, &target, (clean * fraction) as u64).await {
            kills += 1;
        }
    }
    let run = ferry(&["run", p], &[]).await;
    run.assert_code(0);
    let pusher = dst.pusher();
    for (repo, tag, digest) in &tags {
        let (_, _, d) = pusher
            .manifest(repo, tag)
            .await
            .unwrap_or_else(|| panic!("{repo}:{tag}"));
        assert_eq!(&d, digest, "{repo}:{tag}");
    }
    // One clean run sends each unique blob once: sum their sizes from the source registry.
    let mut unique = std::collections::HashMap::new();
    for (repo, tag, _) in &tags {
        let (_, bytes, _) = src.pusher().manifest(repo, tag).await.unwrap();
        let doc: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let mut descs: Vec<serde_json::Value> =
            doc["layers"].as_array().cloned().unwrap_or_default();
        descs.extend(doc.get("config").cloned());
        for child in doc["manifests"].as_array().cloned().unwrap_or_default() {
            let (_, cb, _) = src
                .pusher()
                .manifest(repo, child["digest"].as_str().unwrap())
                .await
                .unwrap();
            let c: serde_json::Value = serde_json::from_slice(&cb).unwrap();
            descs.extend(c["layers"].as_array().cloned().unwrap_or_default());
            descs.extend(c.get("config").cloned());
        }
        for d in descs {
            unique.insert(
                d["digest"].as_str().unwrap().to_string(),
                d["size"].as_u64().unwrap(),
            );
        }
    }
    let total: u64 = unique.values().sum();
    let sent = target.bytes_in();
    let ratio = sent as f64 / total as f64;
    // What one clean run reads: every unique blob once, and the manifests.
    let manifests: u64 = source
        .seen()
        .iter()
        .filter(|r| r.uri.contains("/manifests/"))
        .count() as u64;
    let read = source.bytes_out();
    let read_ratio = read as f64 / total as f64;
    println!(
        "RESULT [kill x{kills}] unique blob bytes {total}, sent over {} runs {sent}: {ratio:.3}x a clean run; read from the source {read}: {read_ratio:.3}x ({manifests} manifest requests)",
        kills + 1
    );
    assert_eq!(kills, 3, "killed three times mid-copy");
    assert!(ratio <= 1.10, "{ratio:.3}x a clean run");
    assert!(read_ratio <= 1.05, "read {read_ratio:.3}x a clean run");
}
