//! Signatures, attestations and SBOMs travel with their images, in both schemes (cosign's
//! tags; OCI 1.1 `subject` referrers, through the referrers API or the `sha256-<hex>`
//! fallback index), and platform subsets copy honestly (`sparse` keeps the digest,
//! `rewrite` reports the new one).

use std::collections::BTreeMap;

use serde_json::Value;

use crate::common::*;
use crate::harness::*;

/// What the source repository of the referrer tests holds.
struct Signed {
    idx: Image,
    old: Image,
    /// Cosign tag-scheme artifacts of `idx` (and one of its child, one of its SBOM).
    tags: Vec<(String, Image)>,
    /// The signature of `old`, which must not travel with `idx`.
    old_sig: (String, Image),
    /// OCI 1.1 referrers of `idx` (an in-toto attestation, an SPDX SBOM), and a signature of
    /// that SBOM.
    att: Image,
    sbom: Image,
    sbom_sig: Image,
}

const COSIGN_SIG: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";

/// Push the referrer fixtures into `repo` through `pusher`; without a referrers API the
/// OCI 1.1 referrers are listed under `sha256-<hex>` fallback tags, as oras and cosign do.
async fn push_signed(pusher: &Pusher, repo: &str, fallback_tags: bool) -> Signed {
    let amd = image(
        &[layer(601, 2048)],
        "linux",
        "amd64",
        Format::Oci,
        "ref-amd",
    );
    let arm = image(
        &[layer(602, 2048)],
        "linux",
        "arm64",
        Format::Oci,
        "ref-arm",
    );
    let idx = index(vec![amd, arm.clone()], Format::Oci);
    let old = image(
        &[layer(603, 2048)],
        "linux",
        "amd64",
        Format::Oci,
        "ref-old",
    );
    pusher.push(repo, "v1", &idx).await;
    pusher.push(repo, "v0", &old).await;

    let sbom_tag = cosign_sbom(&idx);
    let tags = vec![
        cosign_signature(&idx, repo),
        cosign_attestation(&idx, repo),
        cosign_signature(&arm, repo),
        cosign_signature(&sbom_tag.1, repo),
        sbom_tag,
    ];
    for (tag, img) in &tags {
        pusher.push(repo, tag, img).await;
    }
    let old_sig = cosign_signature(&old, repo);
    pusher.push(repo, &old_sig.0, &old_sig.1).await;

    let att = oci_attestation(&idx, repo);
    let sbom = oci_referrer(&idx, SPDX, b"{\"spdxVersion\":\"SPDX-2.3\"}");
    let sbom_sig = oci_referrer(&sbom, COSIGN_SIG, b"signature of the sbom");
    if fallback_tags {
        push_listed(pusher, repo, &idx, &[&att, &sbom]).await;
        push_listed(pusher, repo, &sbom, &[&sbom_sig]).await;
    } else {
        for r in [&att, &sbom, &sbom_sig] {
            pusher.push(repo, &r.digest, r).await;
        }
    }
    Signed {
        idx,
        old,
        tags,
        old_sig,
        att,
        sbom,
        sbom_sig,
    }
}

/// Push OCI 1.1 referrers of `subject` by digest and list them under its `sha256-<hex>`
/// fallback tag, as a client pushing to a registry without the referrers API does.
async fn push_listed(pusher: &Pusher, repo: &str, subject: &Image, referrers: &[&Image]) {
    for r in referrers {
        pusher.push(repo, &r.digest, r).await;
    }
    pusher
        .push(
            repo,
            &format!("sha256-{}", hex_of(&subject.digest)),
            &fallback_index(referrers),
        )
        .await;
}

async fn assert_same_manifest(reg: &Registry, repo: &str, reference: &str, img: &Image) {
    let (_, bytes, digest) = reg
        .pusher()
        .manifest(repo, reference)
        .await
        .unwrap_or_else(|| panic!("{repo}:{reference} missing"));
    assert_eq!(digest, img.digest, "{repo}:{reference}");
    assert_eq!(
        bytes, img.bytes,
        "{repo}:{reference} bytes (subject intact)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signatures_attestations_and_sboms_travel_in_both_schemes_and_fallback_indexes_merge() {
    let (src, dst) = (Registry::start().await, Registry::start().await);
    let s = push_signed(&src.pusher(), "team/app", true).await;
    // The target already lists a referrer of v1 under its fallback tag (another tool put it
    // there): it must still be listed afterwards.
    let other = oci_referrer(&s.idx, "application/vnd.example.other+json", b"other");
    push_listed(&dst.pusher(), "mirror/app", &s.idx, &[&other]).await;

    let dir = tempfile::tempdir().unwrap();
    let p = plan(
        dir.path(),
        &format!(
            "version = 1\n{}\n[[copy]]\nfrom = \"{}/team/app\"\nto = \"{}/mirror/app\"\ntags = {{ include = ['^v1$'] }}\n",
            insecure(&[&src, &dst]),
            src.addr,
            dst.addr
        ),
    );
    let p = p.to_str().unwrap();
    let run = ferry(&["run", "--progress", "plain", p], &[]).await;
    run.assert_code(0);
    // v1, five cosign tags, three OCI referrers.
    assert!(
        run.summary()
            .starts_with("ferry: 9 images copied, 0 already present, 0 failed"),
        "{}\n{}",
        run.summary(),
        run.stderr
    );

    assert_copied(&dst, "mirror/app", "v1", &s.idx).await;
    for (tag, img) in &s.tags {
        assert_copied(&dst, "mirror/app", tag, img).await;
    }
    for r in [&s.att, &s.sbom, &s.sbom_sig] {
        assert_same_manifest(&dst, "mirror/app", &r.digest, r).await;
    }
    let tags = dst.pusher().tags("mirror/app").await;
    assert!(!tags.contains(&"v0".to_string()), "{tags:?}");
    assert!(
        !tags.contains(&s.old_sig.0),
        "the signature of v0 stays behind"
    );
    assert!(dst
        .pusher()
        .manifest("mirror/app", &s.old.digest)
        .await
        .is_none());

    // The target has no referrers API: ferry listed the referrers under their subjects'
    // fallback tags, keeping the entry that was there.
    // The entry that was there stays first; ours follow in the order the copies finished.
    let mut entries = fallback_entries(&dst, "mirror/app", &s.idx).await;
    assert_eq!(entries.first(), Some(&other.digest), "{entries:?}");
    entries[1..].sort();
    let mut ours = [s.att.digest.clone(), s.sbom.digest.clone()];
    ours.sort();
    assert_eq!(entries[1..], ours[..]);
    assert_eq!(
        fallback_entries(&dst, "mirror/app", &s.sbom).await,
        vec![s.sbom_sig.digest.clone()]
    );
    // A second implementation reads the attestation back byte for byte.
    let (att_tag, att) = &s.tags[1];
    let raw =
        skopeo_inspect_raw(&format!("docker://{}/mirror/app:{att_tag}", dst.addr), None).await;
    assert_eq!(&raw, &att.bytes);

    // Again: nothing to copy, and the fallback index is not rewritten.
    let (_, _, before) = dst
        .pusher()
        .manifest("mirror/app", &format!("sha256-{}", hex_of(&s.idx.digest)))
        .await
        .unwrap();
    let again = ferry(&["run", "--progress", "plain", p], &[]).await;
    again.assert_code(0);
    assert!(
        again.summary().starts_with(
            "ferry: 0 images copied, 0 already present, 9 unchanged (trusted from the checkpoint)"
        ),
        "{}",
        again.summary()
    );
    let (_, _, after) = dst
        .pusher()
        .manifest("mirror/app", &format!("sha256-{}", hex_of(&s.idx.digest)))
        .await
        .unwrap();
    assert_eq!(before, after);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn artifact_types_limit_what_travels() {
    let (src, dst) = (Registry::start().await, Registry::start().await);
    let s = push_signed(&src.pusher(), "team/app", true).await;
    let dir = tempfile::tempdir().unwrap();
    let p = plan(
        dir.path(),
        &format!(
            "version = 1\n{}\n[[copy]]\nfrom = \"{}/team/app:v1\"\nto = \"{}/attested/app\"\nreferrers = {{ artifact_types = ['{DSSE_ENVELOPE}', '{IN_TOTO}'] }}\n",
            insecure(&[&src, &dst]),
            src.addr,
            dst.addr
        ),
    );
    let run = ferry(&["run", "--progress", "plain", p.to_str().unwrap()], &[]).await;
    run.assert_code(0);
    let tags = dst.pusher().tags("attested/app").await;
    let (att_tag, att) = &s.tags[1];
    assert_copied(&dst, "attested/app", att_tag, att).await;
    assert_same_manifest(&dst, "attested/app", &s.att.digest, &s.att).await;
    let idx_fallback = format!("sha256-{}", hex_of(&s.idx.digest));
    let mut expected = vec!["v1".to_string(), att_tag.clone(), idx_fallback];
    expected.sort();
    assert_eq!(tags, expected, "only the attestations travelled");
    assert!(dst
        .pusher()
        .manifest("attested/app", &s.sbom.digest)
        .await
        .is_none());
    assert_eq!(
        fallback_entries(&dst, "attested/app", &s.idx).await,
        vec![s.att.digest.clone()]
    );

    // `referrers = false`: the image alone, no referrer tag either.
    let p = plan(
        dir.path(),
        &format!(
            "version = 1\n{}\n[[copy]]\nfrom = \"{}/team/app\"\nto = \"{}/bare/app\"\nreferrers = false\n",
            insecure(&[&src, &dst]),
            src.addr,
            dst.addr
        ),
    );
    ferry(&["run", "--progress", "plain", p.to_str().unwrap()], &[])
        .await
        .assert_code(0);
    assert_eq!(
        dst.pusher().tags("bare/app").await,
        vec!["v0".to_string(), "v1".to_string()]
    );
}

/// A three-platform index with a signed arm64 child and a signed index.
async fn push_multi(pusher: &Pusher, repo: &str) -> (Image, Vec<Image>, Image, Image) {
    let children = vec![
        image(&[layer(611, 2048)], "linux", "amd64", Format::Oci, "p-amd"),
        image(&[layer(612, 2048)], "linux", "arm64", Format::Oci, "p-arm"),
        image(
            &[layer(613, 2048)],
            "linux",
            "s390x",
            Format::Oci,
            "p-s390x",
        ),
    ];
    let idx = index(children.clone(), Format::Oci);
    pusher.push(repo, "multi", &idx).await;
    let (tag, idx_sig) = cosign_signature(&idx, repo);
    pusher.push(repo, &tag, &idx_sig).await;
    let child_sig = oci_referrer(&children[1], COSIGN_SIG, b"arm64 signature");
    push_listed(pusher, repo, &children[1], &[&child_sig]).await;
    (idx, children, idx_sig, child_sig)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn platform_subsets_rewrite_with_the_new_digest_reported_or_stay_sparse() {
    let (src, dst) = (Registry::start().await, Registry::start().await);
    let (idx, children, idx_sig, child_sig) = push_multi(&src.pusher(), "team/multi").await;
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    let p = plan(
        dir.path(),
        &format!(
            "version = 1\n{regs}\n\
             [[copy]]\nfrom = \"{s}/team/multi:multi\"\nto = \"{d}/rewritten/multi\"\nplatforms = ['linux/amd64', 'linux/arm64']\nplatform_mode = 'rewrite'\n\n\
             [[copy]]\nfrom = \"{s}/team/multi:multi\"\nto = \"{d}/sparse/multi\"\nplatforms = ['linux/arm64']\nplatform_mode = 'sparse'\n\n\
             [[copy]]\nfrom = \"{s}/team/multi:multi\"\nto = \"oci:{l}\"\nplatforms = ['linux/arm64']\nplatform_mode = 'sparse'\n",
            regs = insecure(&[&src, &dst]),
            s = src.addr,
            d = dst.addr,
            l = layout.display()
        ),
    );
    let p = p.to_str().unwrap();

    let preview = ferry(&["plan", p], &[]).await;
    preview.assert_code(0);
    assert!(
        preview
            .stdout
            .contains(&format!("rewritten: {} → sha256:", idx.digest)),
        "{}",
        preview.stdout
    );

    let report = dir.path().join("report.json");
    let run = ferry(
        &[
            "run",
            "--progress",
            "plain",
            "--report",
            report.to_str().unwrap(),
            p,
        ],
        &[],
    )
    .await;
    let out = format!("{}{}", run.stdout, run.stderr);

    // rewrite: a new index of the two chosen children, its digest reported.
    let (_, bytes, new_digest) = dst
        .pusher()
        .manifest("rewritten/multi", "multi")
        .await
        .unwrap();
    assert_ne!(new_digest, idx.digest);
    assert_eq!(sha256_digest(&bytes), new_digest);
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    let listed: Vec<&str> = v["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["digest"].as_str().unwrap())
        .collect();
    assert_eq!(
        listed,
        vec![children[0].digest.as_str(), children[1].digest.as_str()]
    );
    assert!(
        out.contains(&format!("rewritten: {} → {new_digest}", idx.digest)),
        "{out}"
    );
    let report: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let row = report["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| {
            i["target"]
                .as_str()
                .unwrap()
                .ends_with("rewritten/multi:multi")
        })
        .expect("a report row for the rewritten index");
    assert_eq!(
        row["rewritten"].as_str(),
        Some(format!("{} → {new_digest}", idx.digest).as_str())
    );
    assert!(dst
        .pusher()
        .manifest("rewritten/multi", &children[2].digest)
        .await
        .is_none());
    // The arm64 child keeps its digest, so its signature travels; the index's own
    // signature names a digest the target does not have, and the output says why.
    assert_same_manifest(&dst, "rewritten/multi", &child_sig.digest, &child_sig).await;
    assert!(!dst
        .pusher()
        .tags("rewritten/multi")
        .await
        .contains(&format!("sha256-{}.sig", hex_of(&idx.digest))));
    let _ = idx_sig;
    let not_carried = format!(
        "referrer of rewritten index not carried: {} → {new_digest}",
        idx.digest
    );
    assert!(out.contains(&not_carried), "{out}");
    // `ferry plan` said the same, item for item.
    assert!(preview.stdout.contains(&not_carried), "{}", preview.stdout);

    // sparse: distribution refuses an index whose children are missing, and says so.
    assert!(
        out.contains("the target refuses an index whose children are missing"),
        "{out}"
    );
    assert!(dst
        .pusher()
        .manifest("sparse/multi", "multi")
        .await
        .is_none());

    // sparse into an OCI layout: the original index, same digest, one child's content.
    let index_json: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let entry = index_json["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == "multi")
        .expect("multi in the layout");
    assert_eq!(entry["digest"], idx.digest.as_str());
    let blob = |d: &str| layout.join("blobs/sha256").join(hex_of(d));
    assert!(blob(&children[1].digest).is_file());
    assert!(!blob(&children[0].digest).exists() && !blob(&children[2].digest).exists());

    // One failure (the refused sparse index): exit 1, the rest done.
    run.assert_code(1);

    // Again: the rewritten index is found present (the same platforms give the same digest).
    let again = ferry(&["run", "--progress", "plain", p], &[]).await;
    let out = format!("{}{}", again.stdout, again.stderr);
    assert!(
        out.contains("present") || out.contains("recorded by an earlier run"),
        "{out}"
    );
    assert!(!out.contains("copied  "), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_referrers_with_their_subject_and_keeps_those_of_kept_images() {
    let reg = Registry::start().await;
    let s = push_signed(&reg.pusher(), "team/app", true).await;
    // v0 gets OCI referrers too, listed under its fallback tag.
    let old_att = oci_attestation(&s.old, "team/app");
    push_listed(&reg.pusher(), "team/app", &s.old, &[&old_att]).await;
    let dir = tempfile::tempdir().unwrap();
    let p = plan(
        dir.path(),
        &format!(
            "version = 1\n{}\n[[retain]]\nrepository = \"{}/team/app\"\ndelete_tags = ['^v0$']\n",
            insecure(&[&reg]),
            reg.addr
        ),
    );
    let run = ferry(&["run", "--progress", "plain", p.to_str().unwrap()], &[]).await;
    run.assert_code(0);
    let p2 = reg.pusher();
    // v0, its signature, its fallback index and the attestation it lists: gone.
    assert!(p2.manifest("team/app", &s.old.digest).await.is_none());
    assert!(p2.manifest("team/app", &s.old_sig.1.digest).await.is_none());
    assert!(p2.manifest("team/app", &old_att.digest).await.is_none());
    // v1 whole: its tags, fallback indexes and OCI referrers.
    assert_same_manifest(&reg, "team/app", "v1", &s.idx).await;
    for (tag, img) in &s.tags {
        assert_same_manifest(&reg, "team/app", tag, img).await;
    }
    for r in [&s.att, &s.sbom, &s.sbom_sig] {
        assert_same_manifest(&reg, "team/app", &r.digest, r).await;
    }
    assert_eq!(
        fallback_entries(&reg, "team/app", &s.idx).await,
        vec![s.att.digest.clone(), s.sbom.digest.clone()]
    );
}

fn insecure_hosts(hosts: &[&str]) -> String {
    hosts
        .iter()
        .map(|h| format!("[registry.\"{h}\"]\ninsecure = true\n"))
        .collect()
}

fn referrer_digests(reg: &OciRegistry, repo: &str, subject: &Image) -> Vec<String> {
    let mut d: Vec<String> = reg
        .referrers(repo, &subject.digest)
        .iter()
        .map(|r| r["digest"].as_str().unwrap().to_string())
        .collect();
    d.sort();
    d
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_referrers_api_path_finds_untagged_referrers_and_targets_get_them_their_way() {
    // A source with the referrers API, one referrer per page so paging is followed.
    let src = OciRegistry::start(OciOptions {
        referrers_page_size: 1,
        ..OciOptions::default()
    })
    .await;
    let s = push_signed(&src.pusher(), "team/app", false).await;
    let arm = s.idx.children[1].clone();
    let arm_sig = oci_referrer(&arm, COSIGN_SIG, b"arm64 signature");
    src.pusher()
        .push("team/app", &arm_sig.digest, &arm_sig)
        .await;
    let api_target = OciRegistry::start(OciOptions::default()).await;
    let dist_target = Registry::start().await;

    let dir = tempfile::tempdir().unwrap();
    let p = plan(
        dir.path(),
        &format!(
            "version = 1\n{}{}\n[[copy]]\nfrom = \"{s}/team/app:v1\"\nto = \"{a}/mirror/app\"\n\n[[copy]]\nfrom = \"{s}/team/app:v1\"\nto = \"{d}/mirror/app\"\n",
            insecure_hosts(&[src.addr(), api_target.addr()]),
            insecure(&[&dist_target]),
            s = src.addr(),
            a = api_target.addr(),
            d = dist_target.addr,
        ),
    );
    let p = p.to_str().unwrap();

    // The plan lists the referrers the API found, by digest.
    let preview = ferry(&["plan", p], &[]).await;
    preview.assert_code(0);
    for r in [&s.att, &s.sbom, &s.sbom_sig, &arm_sig] {
        assert!(preview.stdout.contains(&r.digest), "{}", preview.stdout);
    }
    assert!(
        preview
            .stdout
            .contains(&format!("refers to {}", &s.idx.digest[..19])),
        "{}",
        preview.stdout
    );

    let run = ferry(&["run", "--progress", "plain", p], &[]).await;
    run.assert_code(0);
    // Per target: v1, the five cosign tags, and four OCI referrers.
    assert!(
        run.summary()
            .starts_with("ferry: 20 images copied, 0 already present, 0 failed"),
        "{}\n{}",
        run.summary(),
        run.stderr
    );
    assert!(
        src.count_requests("GET", "/referrers/") > 4,
        "paged referrers requests: {:?}",
        src.requests()
    );

    // The target with the API indexed the subjects itself: no fallback tags there.
    for r in [&s.att, &s.sbom, &s.sbom_sig, &arm_sig] {
        let (_, bytes) = api_target.manifest("mirror/app", &r.digest).unwrap();
        assert_eq!(bytes, r.bytes, "subject intact");
    }
    assert_eq!(
        referrer_digests(&api_target, "mirror/app", &s.idx),
        sorted(vec![s.att.digest.clone(), s.sbom.digest.clone()])
    );
    assert_eq!(
        referrer_digests(&api_target, "mirror/app", &s.sbom),
        vec![s.sbom_sig.digest.clone()]
    );
    assert_eq!(
        referrer_digests(&api_target, "mirror/app", &arm),
        vec![arm_sig.digest.clone()]
    );
    assert!(
        !api_target
            .tags("mirror/app")
            .iter()
            .any(|t| !t.contains('.') && t.starts_with("sha256-")),
        "{:?}",
        api_target.tags("mirror/app")
    );

    // Distribution 2.8 has no API: the fallback tags list them.
    assert_eq!(
        sorted(fallback_entries(&dist_target, "mirror/app", &s.idx).await),
        sorted(vec![s.att.digest.clone(), s.sbom.digest.clone()])
    );
    assert_eq!(
        fallback_entries(&dist_target, "mirror/app", &s.sbom).await,
        vec![s.sbom_sig.digest.clone()]
    );
    assert_eq!(
        fallback_entries(&dist_target, "mirror/app", &arm).await,
        vec![arm_sig.digest.clone()]
    );
    assert_same_manifest(&dist_target, "mirror/app", &s.sbom_sig.digest, &s.sbom_sig).await;

    // A single artifact type is asked of the API as a filter.
    let p = plan(
        dir.path(),
        &format!(
            "version = 1\n{}\n[[copy]]\nfrom = \"{s}/team/app:v1\"\nto = \"{a}/attested/app\"\nreferrers = {{ artifact_types = ['{IN_TOTO}'] }}\n",
            insecure_hosts(&[src.addr(), api_target.addr()]),
            s = src.addr(),
            a = api_target.addr(),
        ),
    );
    src.clear_requests();
    ferry(&["run", "--progress", "plain", p.to_str().unwrap()], &[])
        .await
        .assert_code(0);
    assert!(
        src.requests().iter().any(|r| r.contains("/referrers/")
            && r.contains("artifactType=application%2Fvnd.in-toto%2Bjson")),
        "{:?}",
        src.requests()
    );
    assert_eq!(
        referrer_digests(&api_target, "attested/app", &s.idx),
        vec![s.att.digest.clone()]
    );
    assert!(api_target
        .manifest("attested/app", &s.sbom.digest)
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sparse_index_keeps_its_digest_where_the_registry_accepts_it() {
    let src = Registry::start().await;
    let dst = OciRegistry::start(OciOptions::default()).await;
    let (idx, children, idx_sig, _) = push_multi(&src.pusher(), "team/multi").await;
    let dir = tempfile::tempdir().unwrap();
    let p = plan(
        dir.path(),
        &format!(
            "version = 1\n{}{}\n[[copy]]\nfrom = \"{}/team/multi:multi\"\nto = \"{}/sparse/multi\"\nplatforms = ['linux/arm64']\nplatform_mode = 'sparse'\n",
            insecure(&[&src]),
            insecure_hosts(&[dst.addr()]),
            src.addr,
            dst.addr()
        ),
    );
    let run = ferry(&["run", "--progress", "plain", p.to_str().unwrap()], &[]).await;
    run.assert_code(0);
    let (_, bytes) = dst.manifest("sparse/multi", "multi").unwrap();
    assert_eq!(bytes, idx.bytes, "the original index, digest preserved");
    assert!(dst.manifest("sparse/multi", &children[1].digest).is_some());
    assert!(dst.manifest("sparse/multi", &children[0].digest).is_none());
    assert!(dst.manifest("sparse/multi", &children[2].digest).is_none());
    // The index's signature still names it: it travels.
    let (_, sig) = dst
        .manifest(
            "sparse/multi",
            &format!("sha256-{}.sig", hex_of(&idx.digest)),
        )
        .unwrap();
    assert_eq!(sig, idx_sig.bytes);
    let out = format!("{}{}", run.stdout, run.stderr);
    assert!(
        out.contains("2 index children left out by `platforms`"),
        "{out}"
    );
    assert!(!out.contains("rewritten"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_through_the_referrers_api_deletes_untagged_referrers_with_their_subject() {
    let reg = OciRegistry::start(OciOptions::default()).await;
    let s = push_signed(&reg.pusher(), "team/app", false).await;
    let old_att = oci_attestation(&s.old, "team/app");
    reg.pusher()
        .push("team/app", &old_att.digest, &old_att)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let p = plan(
        dir.path(),
        &format!(
            "version = 1\n{}\n[[retain]]\nrepository = \"{}/team/app\"\ndelete_tags = ['^v0$']\n",
            insecure_hosts(&[reg.addr()]),
            reg.addr()
        ),
    );
    let preview = ferry(&["plan", p.to_str().unwrap()], &[]).await;
    preview.assert_code(0);
    let deletes: Vec<&str> = preview
        .stdout
        .lines()
        .filter(|l| l.trim_start().starts_with("delete "))
        .collect();
    assert_eq!(
        deletes.len(),
        3,
        "v0, its signature, its attestation:\n{}",
        preview.stdout
    );
    assert!(
        preview.stdout.contains(&old_att.digest[..19]),
        "{}",
        preview.stdout
    );

    ferry(&["run", "--progress", "plain", p.to_str().unwrap()], &[])
        .await
        .assert_code(0);
    assert!(reg.manifest("team/app", &s.old.digest).is_none());
    assert!(reg.manifest("team/app", &old_att.digest).is_none());
    assert!(reg.manifest("team/app", &s.old_sig.1.digest).is_none());
    for r in [&s.idx, &s.att, &s.sbom, &s.sbom_sig] {
        assert!(
            reg.manifest("team/app", &r.digest).is_some(),
            "{} kept",
            r.digest
        );
    }
    assert_eq!(
        referrer_digests(&reg, "team/app", &s.idx),
        sorted(vec![s.att.digest.clone(), s.sbom.digest.clone()])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_referrer_already_at_the_target_but_missing_from_its_fallback_index_gets_listed() {
    // As a run killed between pushing a referrer and listing it would leave things.
    let src = OciRegistry::start(OciOptions::default()).await;
    let dst = Registry::start().await;
    let s = push_signed(&src.pusher(), "team/app", false).await;
    dst.pusher().push("mirror/app", &s.att.digest, &s.att).await;
    let dir = tempfile::tempdir().unwrap();
    let p = plan(
        dir.path(),
        &format!(
            "version = 1\n{}{}\n[[copy]]\nfrom = \"{}/team/app:v1\"\nto = \"{}/mirror/app\"\nreferrers = {{ artifact_types = ['{IN_TOTO}'] }}\n",
            insecure_hosts(&[src.addr()]),
            insecure(&[&dst]),
            src.addr(),
            dst.addr
        ),
    );
    let run = ferry(&["run", "--progress", "plain", p.to_str().unwrap()], &[]).await;
    run.assert_code(0);
    // The referrer is not whole at the target until its subject's fallback index lists it
    // (issue 21): it counts as copied, and the line says what was put back.
    assert!(
        run.summary()
            .starts_with("ferry: 2 images copied, 0 already present"),
        "{}",
        run.summary()
    );
    assert!(
        run.stderr.contains(&format!(
            "put back: not listed in the fallback index sha256-{} of its subject",
            hex_of(&s.idx.digest)
        )),
        "{}",
        run.stderr
    );
    assert_eq!(
        fallback_entries(&dst, "mirror/app", &s.idx).await,
        vec![s.att.digest.clone()]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_read_to_find_its_signatures_is_not_asked_again_by_the_copy() {
    // `latest` is mutable (never trusted without asking) and signed: finding its signature
    // reads it (whole on a cold copy, its digest after), and the copy uses that answer
    // instead of asking again.
    let (src, dst) = (Registry::start().await, Registry::start().await);
    let img = image(&[layer(900, 4096)], "linux", "amd64", Format::Oci, "signed");
    let (sig_tag, sig) = cosign_signature(&img, "team/app");
    let p = src.pusher();
    p.push("team/app", "latest", &img).await;
    p.push("team/app", &sig_tag, &sig).await;
    let dir = tempfile::tempdir().unwrap();
    let plan = copy_plan(
        dir.path(),
        &[&src.addr, &dst.addr],
        "",
        &format!("{}/team/app", src.addr),
        &format!("{}/team/app", dst.addr),
    );
    let state = dir.path().join("state.db");
    let args = [
        "run",
        plan.to_str().unwrap(),
        "--state",
        state.to_str().unwrap(),
    ];
    ferry(&args, &[]).await.assert_code(0);
    src.sync_log().await;
    // Cold: each tag is read once, whole, by selection; the copy uses that body.
    for tag in ["latest", sig_tag.as_str()] {
        let path = format!("/v2/team/app/manifests/{tag}");
        let asked = (
            src.count_requests("HEAD", &path),
            src.count_requests("GET", &path),
        );
        assert_eq!(asked, (0, 1), "{tag}: (HEADs, GETs) on a cold copy");
    }
    let before = src.count_requests("HEAD", "/v2/team/app/manifests/latest");
    let again = ferry(&args, &[]).await;
    again.assert_code(0);
    assert!(again.stdout.contains("0 images copied"), "{}", again.stdout);
    src.sync_log().await;
    let heads = src.count_requests("HEAD", "/v2/team/app/manifests/latest") - before;
    assert_eq!(
        heads, 1,
        "one HEAD of latest per run: selection's, reused by the copy"
    );
    assert_copied(&dst, "team/app", &sig_tag, &sig).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_is_asked_once_whether_it_has_a_referrers_api() {
    // Twelve repositories listed eight at a time: one probe, the others wait for its answer.
    let (src, dst) = (Registry::start().await, Registry::start().await);
    for r in 0..12u64 {
        let img = image(
            &[layer(950 + r, 2048)],
            "linux",
            "amd64",
            Format::Oci,
            "probe",
        );
        src.pusher().push(&format!("probe/r{r}"), "v1", &img).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let plan = copy_plan(
        dir.path(),
        &[&src.addr, &dst.addr],
        "",
        &format!("{}/probe/*", src.addr),
        &format!("{}/probe/*", dst.addr),
    );
    ferry(&["run", plan.to_str().unwrap()], &[])
        .await
        .assert_code(0);
    src.sync_log().await;
    let probes = src.count_requests("GET", &format!("/referrers/sha256:{}", "0".repeat(64)));
    assert_eq!(probes, 1, "one referrers-API probe per registry");
}

/// Issue 21, item 6: `platform_mode = "sparse"` into a registry makes the index uncertain in
/// `ferry plan` (the target may refuse it; CNCF distribution does), and with it every
/// referrer that waits for it (the index's signature by tag, the child's referrer by
/// digest), each naming what it depends on; the run then skips exactly those. Referrers of
/// an index the plan is sure of stay certain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn referrers_of_an_uncertain_sparse_index_are_uncertain_too() {
    let (src, dst) = (Registry::start().await, Registry::start().await);
    push_multi(&src.pusher(), "team/multi").await;
    let dir = tempfile::tempdir().unwrap();
    let p = plan(
        dir.path(),
        &format!(
            "version = 1\n{regs}\n\
             [[copy]]\nfrom = \"{s}/team/multi:multi\"\nto = \"{d}/rewritten/multi\"\nplatforms = ['linux/amd64', 'linux/arm64']\nplatform_mode = 'rewrite'\n\n\
             [[copy]]\nfrom = \"{s}/team/multi:multi\"\nto = \"{d}/sparse/multi\"\nplatforms = ['linux/arm64']\nplatform_mode = 'sparse'\n",
            regs = insecure(&[&src, &dst]),
            s = src.addr,
            d = dst.addr,
        ),
    );
    let p = p.to_str().unwrap();
    let index = format!("{}/sparse/multi:multi", dst.addr);
    let depends = format!("depends on {index}, which the target may refuse; only the run can tell");

    let shown = ferry(&["plan", "--output", "json", p], &[]).await;
    shown.assert_code(0);
    let v: Value = serde_json::from_str(&shown.stdout).unwrap();
    let copies = v["copies"].as_array().unwrap();
    let sparse = format!("{}/sparse/", dst.addr);
    let mut dependents = Vec::new();
    for c in copies {
        let target = c["target"].as_str().unwrap();
        let uncertain = c["uncertain"].as_str();
        if target == index {
            assert!(
                uncertain.is_some_and(|u| u.starts_with("the target may refuse")),
                "{c}"
            );
        } else if target.starts_with(&sparse) {
            assert_eq!(uncertain, Some(depends.as_str()), "{c}");
            dependents.push(target.to_string());
        } else {
            assert!(c["uncertain"].is_null(), "{c}");
        }
    }
    // The index's cosign signature and the arm64 child's OCI referrer.
    assert_eq!(dependents.len(), 2, "{v}");
    let text = ferry(&["plan", p], &[]).await;
    assert_eq!(
        text.stdout.matches(&format!("({depends})")).count(),
        2,
        "{}",
        text.stdout
    );

    // The run: the index is refused, and what depends on it is not copied; the rest goes as
    // the plan said.
    let planned: BTreeMap<&str, &str> = copies
        .iter()
        .map(|c| (c["target"].as_str().unwrap(), c["action"].as_str().unwrap()))
        .collect();
    let report = dir.path().join("report.json");
    let run = ferry(&["run", "--report", report.to_str().unwrap(), p], &[]).await;
    run.assert_code(1);
    let r: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    for i in r["items"].as_array().unwrap() {
        let target = i["target"].as_str().unwrap();
        let want = match (target, planned[target]) {
            (t, _) if t == index => "failed",
            (t, _) if dependents.iter().any(|d| d == t) => "skipped",
            (_, "copy") => "copied",
            (_, "skip") => "skipped",
            (_, other) => panic!("{target}: planned {other}"),
        };
        assert_eq!(i["action"], want, "{i}");
    }
}
