//! Referrers found through the OCI 1.1 referrers API: untagged referrers, sparse indexes,
//! retention, and how often a registry is asked.

use super::*;

pub(super) fn insecure_hosts(hosts: &[&str]) -> String {
    hosts
        .iter()
        .map(|h| format!("[registry.\"{h}\"]\ninsecure = true\n"))
        .collect()
}

pub(super) fn referrer_digests(reg: &OciRegistry, repo: &str, subject: &Image) -> Vec<String> {
    let mut d: Vec<String> = reg
        .referrers(repo, &subject.digest)
        .iter()
        .map(|r| r["digest"].as_str().unwrap().to_string())
        .collect();
    d.sort();
    d
}

pub(super) fn sorted(mut v: Vec<String>) -> Vec<String> {
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
