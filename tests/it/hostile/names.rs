//! Hostile names in what registries and layouts list: catalogs that lead outside the target
//! directory, tags and digests outside the grammar.

use super::*;

/// Everything the run printed.
pub(super) fn output(run: &Run) -> String {
    format!("{}\n{}", run.stdout, run.stderr)
}

/// An answer of JSON made up by the proxy.
pub(super) fn json_answer(content_type: &str, body: serde_json::Value) -> Action {
    Action::Respond(
        StatusCode::OK,
        vec![("content-type", content_type.to_string())],
        body.to_string().into_bytes(),
    )
}

/// Every path under `dir`, relative to it.
pub(super) fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p.clone());
            }
            out.push(p.strip_prefix(dir).unwrap().to_path_buf());
        }
    }
    out
}

/// The tags of a layout's index.json, with their digests.
pub(super) fn layout_tags(layout: &std::path::Path) -> Vec<(String, String)> {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["annotations"]["org.opencontainers.image.ref.name"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
                m["digest"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_catalog_cannot_lead_a_copy_outside_its_target_directory() {
    let src = Registry::start().await;
    let ok = image(&[layer(90, 4096)], "linux", "amd64", Format::Oci, "ok");
    src.pusher().push("org/ok", "v1", &ok).await;
    // The catalog lists a repository whose name climbs out of `org/`, next to a real one, and
    // the registry serves an image under it (at the path URL normalisation makes of it,
    // `/escaped/…`), so a copy that followed the name would write a layout there.
    let proxy = Proxy::start(
        &src.url,
        Arc::new(|m, uri: &str, _| {
            if m == "GET" && uri.starts_with("/v2/_catalog") {
                json_answer(
                    "application/json",
                    serde_json::json!({"repositories": ["org/../../escaped", "org/ok"]}),
                )
            } else if let Some(i) = uri.find("escaped/") {
                Action::Rewrite(format!("/v2/org/ok/{}", &uri[i + "escaped/".len()..]))
            } else {
                Action::Forward
            }
        }),
    )
    .await;
    // `<work>/data/out/*` is the target; `org/../../escaped` mapped naively would be
    // `<work>/data/out/../../escaped`, that is `<work>/escaped`.
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("data/out");
    let (run, _) = bounded(run_copy(
        &[&proxy.addr],
        SETTINGS,
        &format!("{}/org/*", proxy.addr),
        &format!("oci:{}/*", out.display()),
    ))
    .await;
    for path in walk(work.path()) {
        assert!(
            path.starts_with("data/out") || path == std::path::Path::new("data"),
            "{} was created outside the target directory",
            path.display()
        );
    }
    run.assert_code(1);
    assert_eq!(
        layout_tags(&out.join("ok")),
        vec![("v1".to_string(), ok.digest.clone())]
    );
    // No request about it reached the registry, under its name or the normalised one.
    let asked: Vec<String> = proxy.seen().into_iter().map(|s| s.uri).collect();
    assert!(!asked.iter().any(|u| u.contains("escaped")), "{asked:#?}");
    assert!(asked.iter().any(|u| u.starts_with("/v2/org/ok/tags/list")));
    let expected = format!(
        "skipped a repository listed under {}/org/*: repository \"org/../../escaped\" is not a valid repository name (a `.` or `..` path component",
        proxy.addr
    );
    assert!(
        output(&run).contains(&expected),
        "{expected}\n{}",
        output(&run)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tags_in_a_tag_list_are_named_errors_and_the_good_ones_copy() {
    let (src, dst) = (Registry::start().await, Registry::start().await);
    let v1 = image(&[layer(91, 4096)], "linux", "amd64", Format::Oci, "v1");
    src.pusher().push("org/app", "v1", &v1).await;
    let long = "t".repeat(200);
    let listed = serde_json::json!({
        "name": "org/app",
        "tags": ["../x", "v1", long, "bad\ntag", "evil\u{1b}[2J", "-rm"],
    });
    let proxy = Proxy::start(
        &src.url,
        Arc::new(move |m, uri: &str, _| {
            if m == "GET" && uri.starts_with("/v2/org/app/tags/list") {
                json_answer("application/json", listed.clone())
            } else {
                Action::Forward
            }
        }),
    )
    .await;
    let (run, _) = bounded(run_copy(
        &[&proxy.addr, &dst.addr],
        SETTINGS,
        &format!("{}/org/app", proxy.addr),
        &format!("{}/org/app", dst.addr),
    ))
    .await;
    run.assert_code(1);
    assert_copied(&dst, "org/app", "v1", &v1).await;
    assert_eq!(dst.pusher().tags("org/app").await, vec!["v1".to_string()]);
    let all = output(&run);
    let of = format!("skipped a tag of {}/org/app: ", proxy.addr);
    for (shown, why) in [
        ("\"../x\"", "'/' is not allowed in it"),
        ("\"bad\\ntag\"", "'\\n' is not allowed in it"),
        ("\"evil\\u{1b}[2J\"", "'\\u{1b}' is not allowed in it"),
        ("\"-rm\"", "a tag cannot start with '-'"),
        (
            &format!("\"{}\"… (200 bytes)", "t".repeat(64)),
            "longer than 128 characters",
        ),
    ] {
        let expected = format!("{of}tag {shown} is not a valid tag ({why})");
        assert!(all.contains(&expected), "{expected}\n{all}");
    }
    // The registry's escape sequence never reached the terminal, nor the long tag whole.
    assert!(!all.contains('\u{1b}') && !all.contains(&long), "{all}");
    // Only the valid tag was asked about.
    for s in proxy.seen() {
        if s.uri.contains("/manifests/") {
            assert!(
                s.uri.ends_with("/manifests/v1") || s.uri.contains("/manifests/sha256:"),
                "{}",
                s.uri
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fallback_referrers_entry_with_a_malformed_digest_is_a_named_error() {
    let (src, dst) = (Registry::start().await, Registry::start().await);
    let app = image(&[layer(92, 4096)], "linux", "amd64", Format::Oci, "app");
    let sbom = oci_referrer(&app, SPDX, b"{\"spdxVersion\":\"SPDX-2.3\"}");
    let p = src.pusher();
    p.push("org/app", "v1", &app).await;
    p.push("org/app", &sbom.digest, &sbom).await;
    // The fallback tag lists the real referrer and two entries no one can verify.
    let fallback = format!("sha256-{}", hex_of(&app.digest));
    p.push("org/app", &fallback, &fallback_index(&[&sbom]))
        .await;
    let mut index: serde_json::Value =
        serde_json::from_slice(&fallback_index(&[&sbom]).bytes).unwrap();
    let entries = index["manifests"].as_array_mut().unwrap();
    entries.push(serde_json::json!({
        "mediaType": OCI_MANIFEST, "digest": "sha256:../../../etc/passwd", "size": 10,
        "artifactType": SPDX,
    }));
    entries.push(serde_json::json!({
        "mediaType": OCI_MANIFEST, "digest": format!("sha256:{}", "A".repeat(64)), "size": 10,
        "artifactType": SPDX,
    }));
    let path = format!("/v2/org/app/manifests/{fallback}");
    let proxy = Proxy::start(
        &src.url,
        Arc::new(move |m, uri: &str, _| {
            if m == "GET" && uri == path {
                json_answer(OCI_INDEX, index.clone())
            } else {
                Action::Forward
            }
        }),
    )
    .await;
    let (run, _) = bounded(run_copy(
        &[&proxy.addr, &dst.addr],
        SETTINGS,
        &format!("{}/org/app:v1", proxy.addr),
        &format!("{}/org/app", dst.addr),
    ))
    .await;
    run.assert_code(1);
    assert_copied(&dst, "org/app", "v1", &app).await;
    // The verifiable referrer travelled, by digest.
    let (_, bytes, _) = dst
        .pusher()
        .manifest("org/app", &sbom.digest)
        .await
        .expect("the referrer was copied");
    assert_eq!(bytes, sbom.bytes);
    let all = output(&run);
    for shown in [
        "\"sha256:../../../etc/passwd\"".to_string(),
        // Uppercase hex, and 71 bytes: shown cut short.
        format!("\"sha256:{}\"… (71 bytes)", "A".repeat(57)),
    ] {
        let expected = format!(
            "skipped a referrer of {}/org/app@{}: digest {shown} is not a digest ferry can verify (a sha256 digest is 64 lowercase hex digits)",
            proxy.addr, app.digest
        );
        assert!(all.contains(&expected), "{expected}\n{all}");
    }
    assert!(
        !proxy.seen().iter().any(|s| s.uri.contains("passwd")),
        "{:#?}",
        proxy.seen()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_leaves_a_repository_alone_when_its_tag_list_has_a_bad_tag() {
    let src = Registry::start().await;
    let p = src.pusher();
    let pr1 = image(&[layer(93, 2048)], "linux", "amd64", Format::Oci, "pr-1");
    let pr2 = image(&[layer(94, 2048)], "linux", "amd64", Format::Oci, "pr-2");
    p.push("team/app", "pr-1", &pr1).await;
    p.push("team/app", "pr-2", &pr2).await;
    // A tag ferry cannot ask about: where it points is unknown, so nothing may be judged.
    let proxy = Proxy::start(
        &src.url,
        Arc::new(|m, uri: &str, _| {
            if m == "GET" && uri.starts_with("/v2/team/app/tags/list") {
                json_answer(
                    "application/json",
                    serde_json::json!({"name": "team/app", "tags": ["pr-1", "pr-2", "keep me"]}),
                )
            } else {
                Action::Forward
            }
        }),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let plan = crate::common::plan(
        dir.path(),
        &format!(
            "version = 1\n[registry.\"{a}\"]\ninsecure = true\n{SETTINGS}\n[[retain]]\nrepository = \"{a}/team/app\"\ndelete_tags = ['^pr-\\d+$']\nolder_than = \"1d\"\n",
            a = proxy.addr
        ),
    );
    let (run, _) = run_bounded(&plan).await;
    run.assert_code(1);
    let all = output(&run);
    let expected = format!(
        "{}/team/app: not read, nothing there is deleted: tag \"keep me\" is not a valid tag (' ' is not allowed in it)",
        proxy.addr
    );
    assert!(all.contains(&expected), "{expected}\n{all}");
    for (tag, img) in [("pr-1", &pr1), ("pr-2", &pr2)] {
        assert!(
            src.pusher()
                .manifest("team/app", &img.digest)
                .await
                .is_some(),
            "{tag} was deleted"
        );
    }
    // Nothing deleted in team/app (the run lease, in team/ferry-lease, is the run's own).
    assert!(!proxy
        .seen()
        .iter()
        .any(|s| s.method == "DELETE" && !s.uri.contains("/ferry-lease/")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_tag_from_the_docker_hub_api_deletes_nothing() {
    // Retention on the Hub reads only its tag API. A tag there named `../pr-9` would make the
    // deletion `DELETE …/tags/../pr-9/`, which URL normalisation turns into another endpoint.
    let reg = Registry::start().await;
    let hub = HubFake::start(
        &[("myorg", "app", false)],
        &[("me", "dckr_pat_canary_5e1")],
        3,
        1000,
    )
    .await;
    let tag = |name: &str, c: char| HubTag {
        name: name.to_string(),
        digest: format!("sha256:{}", c.to_string().repeat(64)),
        last_pushed: "2024-01-01T00:00:00.000000Z".into(),
        platforms: Vec::new(),
    };
    hub.set_tags("myorg/app", vec![tag("pr-1", 'a'), tag("../pr-9", 'b')]);
    let dir = tempfile::tempdir().unwrap();
    let p = crate::common::plan(
        dir.path(),
        &format!(
            "version = 1\n[registry.\"docker.io\"]\nendpoint = \"{}\"\ninsecure = true\napi = \"{}\"\nauth = {{ username = \"me\", password_env = \"HUB_PAT\" }}\n[[retain]]\nrepository = \"docker.io/myorg/app\"\ndelete_tags = ['pr-']\nolder_than = \"1d\"\n",
            reg.url, hub.url
        ),
    );
    let run = ferry(
        &["run", p.to_str().unwrap()],
        &[("HUB_PAT", "dckr_pat_canary_5e1")],
    )
    .await;
    run.assert_code(1);
    let all = output(&run);
    let expected = "docker.io/myorg/app: not read, nothing there is deleted: tag \"../pr-9\" is not a valid tag ('/' is not allowed in it)";
    assert!(all.contains(expected), "{expected}\n{all}");
    let mut left = hub.tags("myorg/app");
    left.sort();
    assert_eq!(left, ["../pr-9", "pr-1"]);
    assert!(
        !hub.requests().iter().any(|r| r.starts_with("DELETE")),
        "{:#?}",
        hub.requests()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_layout_index_json_tag_outside_the_grammar_is_a_named_error() {
    // A layout's index.json is as untrusted as a registry's tag list.
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
    let v1 = image(&[layer(95, 2048)], "linux", "amd64", Format::Oci, "v1");
    let other = image(&[layer(96, 2048)], "linux", "amd64", Format::Oci, "other");
    write_oci_layout(&src, &[("v1", &v1), ("../x", &other), ("a b", &other)]);
    let p = crate::common::plan(
        dir.path(),
        &format!(
            "version = 1\n[[copy]]\nfrom = \"oci:{}\"\nto = \"oci:{}\"\n",
            src.display(),
            dst.display()
        ),
    );
    let (run, _) = run_bounded(&p).await;
    run.assert_code(1);
    assert_eq!(
        layout_tags(&dst),
        vec![("v1".to_string(), v1.digest.clone())]
    );
    let all = output(&run);
    for (shown, why) in [("\"../x\"", "'/'"), ("\"a b\"", "' '")] {
        let expected = format!(
            "skipped a tag of oci:{}: tag {shown} is not a valid tag ({why} is not allowed in it)",
            src.display()
        );
        assert!(all.contains(&expected), "{expected}\n{all}");
    }
}
