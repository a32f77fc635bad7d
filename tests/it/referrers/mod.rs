//! Signatures, attestations and SBOMs travel with their images, in both schemes (cosign's
//! tags; OCI 1.1 `subject` referrers, through the referrers API or the `sha256-<hex>`
//! fallback index), and platform subsets copy honestly (`sparse` keeps the digest,
//! `rewrite` reports the new one).

use std::collections::BTreeMap;

use serde_json::Value;

use crate::common::*;
use crate::harness::*;

mod api;

#[allow(unused_imports)]
use api::*;

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
