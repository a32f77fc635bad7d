//! Running the real `ferry` binary, writing plans, and the image sets the copy, retention and
//! restore tests share.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::harness::*;

/// What one `ferry` invocation did.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// The summary line (the last line on stdout).
    pub fn summary(&self) -> &str {
        self.stdout.lines().last().unwrap_or("")
    }
    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code, code,
            "exit code\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

/// The ferry binary with a clean credential environment (a fresh HOME, no DOCKER_CONFIG),
/// so the developer's own docker login never leaks into a test, and a checkpoint of the
/// test's own: beside the plan (a per-test temporary directory) unless the test names one.
pub fn ferry_command(args: &[&str], env: &[(&str, &str)], home: &Path) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_ferry"));
    cmd.args(args)
        .env("HOME", home)
        .env_remove("DOCKER_CONFIG")
        .env_remove("REGISTRY_AUTH_FILE")
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("RUST_LOG")
        .kill_on_drop(true);
    let state = args
        .iter()
        .rev()
        .find(|a| a.ends_with(".toml"))
        .map(|p| Path::new(p).with_file_name("ferry.db"))
        .unwrap_or_else(|| home.join("ferry.db"));
    cmd.env("FERRY_STATE", state);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// Run ferry to the end (5 minutes at most).
pub async fn ferry(args: &[&str], env: &[(&str, &str)]) -> Run {
    let home = tempfile::tempdir().expect("temp HOME");
    let out = tokio::time::timeout(
        std::time::Duration::from_secs(300),
        ferry_command(args, env, home.path()).output(),
    )
    .await
    .expect("ferry finished within 5 minutes")
    .expect("ferry binary runs");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Write a plan into `dir` and return its path.
pub fn plan(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("plan.toml");
    std::fs::write(&path, text).expect("write plan");
    path
}

/// A plan copying `from` to `to`, where each of `hosts` is marked insecure and gets
/// `settings` (more lines of its `[registry."HOST"]` section).
pub fn copy_plan(dir: &Path, hosts: &[&str], settings: &str, from: &str, to: &str) -> PathBuf {
    let mut text = String::from("version = 1\n");
    for h in hosts {
        text.push_str(&format!(
            "[registry.\"{h}\"]\ninsecure = true\n{settings}\n"
        ));
    }
    text.push_str(&format!("[[copy]]\nfrom = \"{from}\"\nto = \"{to}\"\n"));
    plan(dir, &text)
}

/// `ferry run` of [`copy_plan`] (`hosts`, `settings`, one rule from `from` to `to`) written
/// in a temporary directory of its own: the set-up of the tests that copy through a proxy
/// (faults, hostile).
pub async fn run_copy(hosts: &[&str], settings: &str, from: &str, to: &str) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let p = copy_plan(dir.path(), hosts, settings, from, to);
    ferry(&["run", p.to_str().unwrap()], &[]).await
}

/// `[registry."ADDR"] insecure = true` for each registry (they speak plain HTTP).
pub fn insecure(regs: &[&Registry]) -> String {
    regs.iter()
        .map(|r| format!("[registry.\"{}\"]\ninsecure = true\n", r.addr))
        .collect()
}

/// A plan's text: the insecure sections of `regs`, a blank line, then `rules` (see
/// [`copy_section`]) a blank line apart. With two registries, the first rule's `from` is on
/// line 8.
pub fn plan_text(regs: &[&Registry], rules: &[String]) -> String {
    format!("version = 1\n{}\n{}", insecure(regs), rules.join("\n"))
}

/// A `[[copy]]` section: its `from`, its `to`, then `more` (whole lines of its own).
pub fn copy_section(from: &str, to: &str, more: &str) -> String {
    format!("[[copy]]\nfrom = \"{from}\"\nto = \"{to}\"\n{more}")
}

/// JSON that must parse; the text is shown where it does not.
pub fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("{e}: {s}"))
}

/// `ferry run --progress plain --report R EXTRA… PLAN`, R being `report.json` beside the plan:
/// the run, and its report.
pub async fn run_reported(plan: &Path, extra: &[&str]) -> (Run, Value) {
    run_reported_with(plan, extra, &[]).await
}

/// [`run_reported`] with `env` set for ferry.
pub async fn run_reported_with(plan: &Path, extra: &[&str], env: &[(&str, &str)]) -> (Run, Value) {
    let report = plan.with_file_name("report.json");
    let mut args = vec![
        "run",
        "--progress",
        "plain",
        "--report",
        report.to_str().unwrap(),
    ];
    args.extend(extra);
    args.push(plan.to_str().unwrap());
    let run = ferry(&args, env).await;
    let body = std::fs::read_to_string(&report).unwrap_or_else(|_| panic!("{}", run.stderr));
    (run, json(&body))
}

/// A plan item's action (`ferry plan --output json`) in the run's words, as the report has it.
pub fn reported_action(plan_action: &str) -> &'static str {
    match plan_action {
        "copy" => "copied",
        "present" => "present",
        "unchanged" => "unchanged",
        "skip" => "skipped",
        "error" => "failed",
        other => panic!("plan action {other}"),
    }
}

/// (source, target, action in the run's words) of every item `ferry plan --output json`
/// lists, sorted. A rule that could not be resolved (no action) is no item.
pub fn planned_rows(plan: &Value) -> Vec<(String, String, String)> {
    let items = plan["copies"].as_array().unwrap().iter();
    let mut out: Vec<_> = items
        .filter(|c| c["action"].is_string())
        .map(|c| row(c, reported_action(c["action"].as_str().unwrap())))
        .collect();
    out.sort();
    out
}

/// (source, target, action) of every item of a report, sorted.
pub fn reported_rows(report: &Value) -> Vec<(String, String, String)> {
    let items = report["items"].as_array().unwrap().iter();
    let mut out: Vec<_> = items
        .map(|i| row(i, i["action"].as_str().unwrap()))
        .collect();
    out.sort();
    out
}

fn row(item: &Value, action: &str) -> (String, String, String) {
    (
        item["source"].as_str().unwrap().to_string(),
        item["target"].as_str().unwrap().to_string(),
        action.to_string(),
    )
}

/// The images of the copy tests, so assertions can name what was pushed.
pub struct Fixture {
    /// (repo, tag, image)
    pub tagged: Vec<(String, String, Image)>,
}

impl Fixture {
    pub fn tags_of(&self, repo: &str) -> Vec<String> {
        let mut t: Vec<String> = self
            .tagged
            .iter()
            .filter(|(r, _, _)| r == repo)
            .map(|(_, t, _)| t.clone())
            .collect();
        t.sort();
        t
    }
    pub fn image(&self, repo: &str, tag: &str) -> &Image {
        &self
            .tagged
            .iter()
            .find(|(r, t, _)| r == repo && t == tag)
            .unwrap_or_else(|| panic!("no fixture {repo}:{tag}"))
            .2
    }
}

/// Push a realistic set under `prefix`: semver tags sharing a base layer (OCI), a Docker
/// schema 2 repository sharing the same base, a multi-arch OCI index and Docker manifest list
/// with a cosign signature tag, and a Helm-chart-shaped artifact.
pub async fn populate(reg: &Registry, prefix: &str) -> Fixture {
    let pusher = reg.pusher();
    let base = layer(100, 300 * 1024);
    let mut tagged = Vec::new();

    let api = format!("{prefix}/api");
    for (i, tag) in ["v1.0.0", "v1.2.0", "v1.3.0-rc1", "v2.0.0", "main-abc1234"]
        .iter()
        .enumerate()
    {
        let img = image(
            &[base.clone(), layer(200 + i as u64, 20 * 1024)],
            "linux",
            "amd64",
            Format::Oci,
            &format!("api-{tag}"),
        );
        tagged.push((api.clone(), tag.to_string(), img));
    }
    // `latest` shares its digest with v2.0.0.
    let v2 = tagged[3].2.clone();
    tagged.push((api.clone(), "latest".into(), v2));

    let web = format!("{prefix}/web");
    let img = image(
        &[base.clone(), layer(300, 10 * 1024)],
        "linux",
        "amd64",
        Format::Docker,
        "web",
    );
    tagged.push((web, "1.0".into(), img));

    let multi = format!("{prefix}/multi");
    let plats = |format| {
        vec![
            image(
                &[base.clone(), layer(401, 8 * 1024)],
                "linux",
                "amd64",
                format,
                "multi",
            ),
            image(
                &[base.clone(), layer(402, 8 * 1024)],
                "linux",
                "arm64",
                format,
                "multi",
            ),
        ]
    };
    let oci_index = index(plats(Format::Oci), Format::Oci);
    let (sig_tag, sig) = cosign_signature(&oci_index, &multi);
    tagged.push((multi.clone(), "oci".into(), oci_index));
    tagged.push((multi.clone(), sig_tag, sig));
    tagged.push((
        multi,
        "docker".into(),
        index(plats(Format::Docker), Format::Docker),
    ));

    let chart = format!("{prefix}/chart");
    tagged.push((
        chart,
        "0.1.0".into(),
        artifact(
            "application/vnd.cncf.helm.config.v1+json",
            b"helm chart bytes",
        ),
    ));

    for (repo, tag, img) in &tagged {
        pusher.push(repo, tag, img).await;
    }
    Fixture { tagged }
}

/// The images the retention and restore scenes are made of, over one base layer: releases
/// v1.0.0 and v1.1.0 (a multi-arch index, signed), and PR builds pr-1, pr-2 (signed) and pr-4
/// (an index sharing its amd64 child with v1.1.0). Each scene adds its own and pushes them.
pub struct Releases {
    pub v100: Image,
    /// v1.1.0's amd64 child, which pr-4 shares.
    pub amd: Image,
    pub v110: Image,
    /// v1.1.0's cosign signature: (tag, image).
    pub v110_sig: (String, Image),
    pub pr1: Image,
    pub pr2: Image,
    /// pr-2's cosign signature: (tag, image).
    pub pr2_sig: (String, Image),
    /// pr-4's own arm64 child (untagged).
    pub pr4_arm: Image,
    pub pr4: Image,
}

/// A linux/amd64 image labelled `label`: the releases' base layer and one layer of its own
/// (`seed`).
pub fn release_image(label: &str, seed: u64, format: Format) -> Image {
    release_child(label, seed, "amd64", format)
}

fn release_child(label: &str, seed: u64, arch: &str, format: Format) -> Image {
    image(
        &[layer(1, 8 * 1024), layer(seed, 2048)],
        "linux",
        arch,
        format,
        label,
    )
}

/// [`Releases`], its signatures naming `signed_in` as their repository.
pub fn releases(signed_in: &str) -> Releases {
    let amd = release_child("v1.1.0", 11, "amd64", Format::Oci);
    let arm = release_child("v1.1.0", 12, "arm64", Format::Oci);
    let v110 = index(vec![amd.clone(), arm], Format::Oci);
    let pr2 = release_image("pr-2", 21, Format::Oci);
    let pr4_arm = release_child("pr-4", 23, "arm64", Format::Oci);
    Releases {
        v100: release_image("v1.0.0", 10, Format::Oci),
        v110_sig: cosign_signature(&v110, signed_in),
        pr4: index(vec![amd.clone(), pr4_arm.clone()], Format::Oci),
        amd,
        v110,
        pr1: release_image("pr-1", 20, Format::Oci),
        pr2_sig: cosign_signature(&pr2, signed_in),
        pr2,
        pr4_arm,
    }
}

/// Assert the target holds `repo:tag` with exactly the fixture's bytes and digest.
pub async fn assert_copied(dst: &Registry, repo: &str, tag: &str, img: &Image) {
    let (ct, bytes, digest) = dst
        .pusher()
        .manifest(repo, tag)
        .await
        .unwrap_or_else(|| panic!("{repo}:{tag} missing at the target"));
    assert_eq!(digest, img.digest, "{repo}:{tag} digest");
    assert_eq!(bytes, img.bytes, "{repo}:{tag} bytes");
    assert_eq!(ct, img.media_type, "{repo}:{tag} media type");
    for child in &img.children {
        let (_, cb, _) = dst
            .pusher()
            .manifest(repo, &child.digest)
            .await
            .unwrap_or_else(|| panic!("{repo}@{} (child) missing", child.digest));
        assert_eq!(cb, child.bytes);
        for b in child.all_blobs() {
            assert!(
                dst.pusher().blob_exists(repo, &b.digest).await,
                "{repo} blob {}",
                b.digest
            );
        }
    }
    for b in img.all_blobs() {
        assert!(
            dst.pusher().blob_exists(repo, &b.digest).await,
            "{repo} blob {}",
            b.digest
        );
    }
}

/// The digests the `sha256-<hex>` fallback referrers index of `subject` lists in `repo`, in
/// order (none where there is no such index).
pub async fn fallback_entries(reg: &Registry, repo: &str, subject: &Image) -> Vec<String> {
    let tag = format!("sha256-{}", hex_of(&subject.digest));
    let Some((ct, bytes, _)) = reg.pusher().manifest(repo, &tag).await else {
        return Vec::new();
    };
    assert_eq!(ct, OCI_INDEX, "{repo}:{tag} is an OCI index");
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    v["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["digest"].as_str().unwrap().to_string())
        .collect()
}

/// Blob bytes that left a registry: GETs of blobs answered 200.
pub fn blob_gets(reg: &Registry) -> usize {
    reg.requests()
        .iter()
        .filter(|r| {
            r.method == "GET" && r.uri.contains("/blobs/sha256:") && matches!(r.status, 200 | 206)
        })
        .count()
}

/// Upload sessions opened at a registry (not counting mounts).
pub fn uploads(reg: &Registry) -> usize {
    reg.requests()
        .iter()
        .filter(|r| {
            r.method == "POST" && r.uri.contains("/blobs/uploads/") && !r.uri.contains("mount=")
        })
        .count()
}

pub fn mounts(reg: &Registry) -> usize {
    reg.requests()
        .iter()
        .filter(|r| r.method == "POST" && r.uri.contains("mount=") && r.status == 201)
        .count()
}

/// Copy the directory tree `from` to `to`.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}
