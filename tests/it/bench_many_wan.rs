//! The many-small-images corpus of `bench_many` over an emulated 40 ms / 200 Mbit/s link
//! (issue 16): ferry cold and no-op over the whole corpus, with how long only discovery ran
//! before the first blob went out, and ferry beside skopeo on the first repositories. Run by
//! `bench/compare-skopeo.sh many-wan`; the figures are in docs/benchmarks.md.

use crate::bench::{skopeo_sync_args, timed};
use crate::bench_many::{populate_many, Corpus, SKOPEO_CACHE};
use crate::common::*;
use crate::harness::*;

/// A round trip of 40 ms and 200 Mbit/s per connection, as the issue measures.
const WAN: Shaping = Shaping {
    round_trip: std::time::Duration::from_millis(40),
    bytes_per_second: 25_000_000,
};

/// How many repositories skopeo copies over the emulated WAN: one image at a time, some 20
/// requests each, it would take about half an hour for the whole corpus.
const WAN_SKOPEO_REPOS: usize = 10;

/// ferry copying `repos` (a wildcard when `None`) from `src` (a proxy) into an empty
/// registry behind a proxy of its own, cold and then as a no-op: (cold, no-op) seconds, and
/// how long the target saw no blob request after ferry's first request at the source (the
/// stretch where only discovery ran).
async fn ferry_wan(src_wan: &Proxy, c: &Corpus, repos: Option<usize>) -> [f64; 3] {
    let dst = Registry::start().await;
    let dst_wan = Proxy::wan(&dst.url, WAN).await;
    let dir = tempfile::tempdir().unwrap();
    let from = |r: &str| format!("{}/{r}", src_wan.addr);
    let to = |r: &str| format!("{}/{r}", dst_wan.addr);
    let mut text = format!(
        "version = 1\n[registry.\"{}\"]\ninsecure = true\n[registry.\"{}\"]\ninsecure = true\n",
        src_wan.addr, dst_wan.addr
    );
    match repos {
        None => text.push_str(&format!(
            "[[copy]]\nfrom = \"{}\"\nto = \"{}\"\n",
            from("org/*"),
            to("org/*")
        )),
        Some(n) => {
            for r in &c.repos[..n] {
                text.push_str(&format!(
                    "[[copy]]\nfrom = \"{}\"\nto = \"{}\"\n",
                    from(r),
                    to(r)
                ));
            }
        }
    }
    let p = plan(dir.path(), &text);
    let state = dir.path().join("ferry.db");
    let args = ["run", "--progress", "none", p.to_str().unwrap()];
    let bin = env!("CARGO_BIN_EXE_ferry");
    let seen_before = src_wan.seen().len();
    let (cold, _, out, _) = timed(bin, &args, &state).await;
    let wanted: Vec<&(String, String, String)> = c
        .tags
        .iter()
        .filter(|(r, _, _)| repos.is_none_or(|n| c.repos[..n].contains(r)))
        .collect();
    let copied = format!(
        "{} images copied, 0 already present, 0 failed",
        wanted.len()
    );
    assert!(out.contains(&copied), "{out}");
    for (repo, tag, digest) in wanted {
        let (_, _, d) = dst.pusher().manifest(repo, tag).await.expect("copied");
        assert_eq!(&d, digest, "{repo}:{tag}");
    }
    let first_source = src_wan.seen()[seen_before].at;
    let first_blob = dst_wan
        .seen()
        .iter()
        .filter(|s| s.uri.contains("/blobs/"))
        .map(|s| s.at)
        .min()
        .expect("blobs were sent");
    let (noop, _, out, _) = timed(bin, &args, &state).await;
    assert!(out.contains("0 images copied"), "{out}");
    [cold, noop, (first_blob - first_source).as_secs_f64()]
}

/// `skopeo sync --all` of the first `n` repositories from `src` (a proxy) into an empty
/// registry behind a proxy of its own, then again (skopeo's no-op): seconds of each.
async fn skopeo_wan(src_wan: &Proxy, c: &Corpus, n: usize) -> [f64; 2] {
    let dst = Registry::start().await;
    let dst_wan = Proxy::wan(&dst.url, WAN).await;
    let dir = tempfile::tempdir().unwrap();
    let _ = std::fs::remove_file(SKOPEO_CACHE);
    let dest = format!("{}/org", dst_wan.addr);
    let args = skopeo_sync_args(dir.path(), &src_wan.addr, &c.repos[..n], &dest);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let state = dir.path().join("unused.db");
    let cold = timed("skopeo", &args, &state).await.0;
    let again = timed("skopeo", &args, &state).await.0;
    [cold, again]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "pushes 1,600 small images and copies them over an emulated 40 ms link; run by bench/compare-skopeo.sh many-wan"]
async fn bench_many_wan() {
    let src = Registry::start().await;
    let c = populate_many(&src).await;
    let src_wan = Proxy::wan(&src.url, WAN).await;
    let n = WAN_SKOPEO_REPOS;
    let slice_tags = c
        .tags
        .iter()
        .filter(|(r, _, _)| c.repos[..n].contains(r))
        .count();
    let [cold, noop, idle] = ferry_wan(&src_wan, &c, None).await;
    println!(
        "[many-wan] ferry, {} repositories / {} tags: cold {cold:.2} s (first blob at the target {idle:.2} s after the first request at the source), no-op {noop:.2} s",
        c.repos.len(),
        c.tags.len()
    );
    let [slice_cold, slice_noop, slice_idle] = ferry_wan(&src_wan, &c, Some(n)).await;
    let [skopeo, skopeo_again] = skopeo_wan(&src_wan, &c, n).await;
    println!(
        "[many-wan] the first {n} repositories / {slice_tags} tags: ferry cold {slice_cold:.2} s (first blob after {slice_idle:.2} s), no-op {slice_noop:.2} s; skopeo cold {skopeo:.2} s, again {skopeo_again:.2} s"
    );
    println!(
        "RESULT [many-wan] 40 ms / 200 Mbit/s: ferry cold {cold:.2} s, no-op {noop:.2} s over {} tags; on {slice_tags} tags ferry cold {slice_cold:.2} s vs skopeo {skopeo:.2} s ({:.2}x), no-op {slice_noop:.2} s vs skopeo's second run {skopeo_again:.2} s",
        c.tags.len(),
        slice_cold / skopeo
    );
}
