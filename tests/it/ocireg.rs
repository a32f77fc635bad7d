//! Proves the in-memory OCI v1.1 registry fake against skopeo and the spec's edge cases,
//! so tests built on it can be trusted to be about ferry.

use reqwest::header::{CONTENT_TYPE, LINK, LOCATION};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::harness::*;

const SBOM: &str = "application/vnd.example.sbom.v1";
const SIG_CONFIG: &str = "application/vnd.example.signature.config.v1+json";

fn header(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .map(|v| v.to_str().expect("ASCII header").to_string())
}

/// The URL inside `Link: <url>; rel="next"`.
fn next_link(resp: &reqwest::Response) -> Option<String> {
    let link = header(resp, LINK.as_str())?;
    assert!(link.ends_with("rel=\"next\""), "{link}");
    Some(link[link.find('<')? + 1..link.find('>')?].to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_pushes_and_reads_back_nested_names() {
    let reg = OciRegistry::start(OciOptions {
        tags_page_size: 2,
        ..OciOptions::default()
    })
    .await;
    let shared = layer(11, 40 * 1024);
    let amd = image(
        &[shared.clone(), layer(12, 8 * 1024)],
        "linux",
        "amd64",
        Format::Oci,
        "amd",
    );
    let arm = image(
        &[shared, layer(13, 8 * 1024)],
        "linux",
        "arm64",
        Format::Oci,
        "arm",
    );
    let multi = index(vec![amd.clone(), arm], Format::Oci);
    let dir = tempfile::TempDir::new().expect("temp dir");
    write_oci_layout(dir.path(), &[("v1", &multi), ("single", &amd)]);

    for (tag, img) in [("v1", &multi), ("single", &amd)] {
        let out = tokio::process::Command::new("skopeo")
            .args([
                "copy",
                "--all",
                "--preserve-digests",
                "--dest-tls-verify=false",
            ])
            .arg(format!("oci:{}:{tag}", dir.path().display()))
            .arg(format!("docker://{}/org/app/sub:{tag}", reg.host()))
            .output()
            .await
            .expect("run skopeo");
        assert!(
            out.status.success(),
            "skopeo copy {tag}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (media_type, bytes) = reg.manifest("org/app/sub", tag).expect("pushed");
        assert_eq!(
            (media_type.as_str(), &bytes),
            (img.media_type.as_str(), &img.bytes)
        );
        let raw =
            skopeo_inspect_raw(&format!("docker://{}/org/app/sub:{tag}", reg.addr()), None).await;
        assert_eq!(raw, img.bytes, "{tag} via skopeo");
    }
    for blob in multi.all_blobs() {
        assert_eq!(
            reg.blob("org/app/sub", &blob.digest).as_ref(),
            Some(&blob.bytes)
        );
    }
    // skopeo uploads by POST, PATCH, PUT.
    assert!(reg.count_requests("PATCH", "/v2/org/app/sub/blobs/uploads/") > 0);
    // The platform manifests skopeo reads by digest.
    let raw = skopeo_inspect_raw(
        &format!("docker://{}/org/app/sub@{}", reg.addr(), amd.digest),
        None,
    )
    .await;
    assert_eq!(raw, amd.bytes);

    // Tag paging: three tags, pages of two, linked by `last`.
    reg.pusher().push("org/app/sub", "a0", &amd).await;
    let client = reqwest::Client::new();
    let resp = client
        .get(format!("{}/v2/org/app/sub/tags/list", reg.url()))
        .send()
        .await
        .expect("tags");
    let next = next_link(&resp).expect("a second page");
    assert_eq!(next, "/v2/org/app/sub/tags/list?n=2&last=single");
    let body: Value = resp.json().await.expect("json");
    assert_eq!(
        body,
        json!({"name": "org/app/sub", "tags": ["a0", "single"]})
    );
    let resp = client
        .get(format!("{}{next}", reg.url()))
        .send()
        .await
        .expect("tags 2");
    assert_eq!(next_link(&resp), None);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["tags"], json!(["v1"]));
    assert_eq!(reg.tags("org/app/sub"), ["a0", "single", "v1"]);
    assert_eq!(
        reg.pusher().tags("org/app/sub").await,
        ["a0", "single", "v1"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_mounts_and_manifest_checks_follow_the_spec() {
    let reg = OciRegistry::start(OciOptions::default()).await;
    let p = reg.pusher();
    let data: Vec<u8> = (0..20u8).collect();
    let digest = sha256_digest(&data);

    // Chunked: POST, two PATCHes (one out of order), status, a wrong digest, then the
    // closing PUT with the last chunk.
    let resp = p
        .send(Method::POST, "/v2/a/b/blobs/uploads/", &[], None)
        .await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert_eq!(header(&resp, "range").as_deref(), Some("0-0"));
    let location = header(&resp, LOCATION.as_str()).expect("Location");
    assert!(location.starts_with("/v2/a/b/blobs/uploads/"), "{location}");
    let resp = p
        .send(
            Method::PATCH,
            &location,
            &[("content-range", "0-9")],
            Some(data[..10].to_vec()),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert_eq!(header(&resp, "range").as_deref(), Some("0-9"));
    let location = header(&resp, LOCATION.as_str()).expect("Location");
    let resp = p
        .send(
            Method::PATCH,
            &location,
            &[("content-range", "5-9")],
            Some(data[5..10].to_vec()),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    let resp = p.send(Method::GET, &location, &[], None).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&resp, "range").as_deref(), Some("0-9"));
    let wrong = format!("{location}?digest={}", sha256_digest(b"other"));
    // A refused close leaves the session as it was: its chunk is not kept.
    let resp = p
        .send(
            Method::PUT,
            &wrong,
            &[("content-range", "10-19")],
            Some(data[10..].to_vec()),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let body: Value = resp.json().await.expect("error json");
    assert_eq!(body["errors"][0]["code"], "DIGEST_INVALID");
    let close = format!("{location}?digest={digest}");
    let resp = p
        .send(
            Method::PUT,
            &close,
            &[("content-range", "10-19")],
            Some(data[10..].to_vec()),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(header(&resp, "docker-content-digest"), Some(digest.clone()));
    assert_eq!(reg.open_uploads(), 0);
    let resp = p
        .send(Method::HEAD, &format!("/v2/a/b/blobs/{digest}"), &[], None)
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header(&resp, "content-length").as_deref(), Some("20"));
    assert_eq!(header(&resp, "docker-content-digest"), Some(digest.clone()));

    // Single-POST monolithic upload, then mounts: 201 from a repository that has the
    // blob, an upload session (202) from one that does not.
    let other = b"monolithic".to_vec();
    let other_digest = sha256_digest(&other);
    let resp = p
        .send(
            Method::POST,
            &format!("/v2/c/blobs/uploads/?digest={other_digest}"),
            &[],
            Some(other),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let mount = |from: &str| format!("/v2/d/blobs/uploads/?mount={digest}&from={from}");
    let resp = p.send(Method::POST, &mount("c"), &[], None).await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let session = header(&resp, LOCATION.as_str()).expect("Location");
    assert_eq!(
        p.send(Method::DELETE, &session, &[], None).await.status(),
        StatusCode::NO_CONTENT
    );
    let resp = p.send(Method::POST, &mount("a/b"), &[], None).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(reg.blob("d", &digest), Some(data));

    // A manifest whose layers are missing is refused; an index whose children are missing
    // is accepted unless refuse_sparse_index.
    let img = image(&[layer(21, 1024)], "linux", "amd64", Format::Oci, "x");
    let put = |repo: &str, reference: &str, m: &Image| {
        let (path, media_type, bytes) = (
            format!("/v2/{repo}/manifests/{reference}"),
            m.media_type.clone(),
            m.bytes.clone(),
        );
        let p = &p;
        async move {
            p.send(
                Method::PUT,
                &path,
                &[(CONTENT_TYPE.as_str(), &media_type)],
                Some(bytes),
            )
            .await
        }
    };
    let resp = put("e", "x", &img).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let body: Value = resp.json().await.expect("error json");
    assert_eq!(body["errors"].as_array().map(Vec::len), Some(2), "{body}");
    assert_eq!(body["errors"][0]["code"], "MANIFEST_BLOB_UNKNOWN");
    let sparse = index(vec![img.clone()], Format::Oci);
    let resp = put("e", "multi", &sparse).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(
        header(&resp, "docker-content-digest"),
        Some(sparse.digest.clone())
    );
    assert_eq!(
        reg.manifest("e", &sparse.digest),
        Some((sparse.media_type.clone(), sparse.bytes.clone()))
    );

    let strict = OciRegistry::start(OciOptions {
        refuse_sparse_index: true,
        ..OciOptions::default()
    })
    .await;
    let resp = strict
        .pusher()
        .send(
            Method::PUT,
            "/v2/e/manifests/multi",
            &[(CONTENT_TYPE.as_str(), &sparse.media_type)],
            Some(sparse.bytes.clone()),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let body: Value = resp.json().await.expect("error json");
    assert_eq!(body["errors"][0]["code"], "MANIFEST_BLOB_UNKNOWN");
    assert_eq!(body["errors"][0]["detail"]["digest"], img.digest.as_str());
    strict.pusher().push("e", "multi", &sparse).await;

    let resp = p
        .send(Method::HEAD, "/v2/e/manifests/multi", &[], None)
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        header(&resp, "content-length"),
        Some(sparse.bytes.len().to_string())
    );
    assert_eq!(
        header(&resp, "content-type"),
        Some(sparse.media_type.clone())
    );

    // Deleting by digest takes the tags with it.
    let resp = p
        .send(
            Method::DELETE,
            &format!("/v2/e/manifests/{}", sparse.digest),
            &[],
            None,
        )
        .await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert_eq!(reg.manifest("e", "multi"), None);
    assert!(reg.tags("e").is_empty());
}

/// An artifact manifest with `subject`: empty config (or `config_type`), one layer,
/// `artifactType` when given, an annotation naming it.
async fn push_referrer(
    reg: &OciRegistry,
    repo: &str,
    subject: &Image,
    artifact_type: Option<&str>,
    config_type: &str,
    label: &str,
) -> (String, reqwest::Response) {
    let p = reg.pusher();
    let config = Blob {
        digest: sha256_digest(b"{}"),
        media_type: config_type.to_string(),
        bytes: b"{}".to_vec(),
    };
    let payload = format!("payload {label}").into_bytes();
    let layer = Blob {
        digest: sha256_digest(&payload),
        media_type: "application/octet-stream".to_string(),
        bytes: payload,
    };
    p.push_blob(repo, &config).await;
    p.push_blob(repo, &layer).await;
    let mut manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config.descriptor(),
        "layers": [layer.descriptor()],
        "subject": subject.descriptor(),
        "annotations": {"org.example.label": label},
    });
    if let Some(t) = artifact_type {
        manifest["artifactType"] = json!(t);
    }
    let bytes = serde_json::to_vec(&manifest).expect("manifest json");
    let digest = sha256_digest(&bytes);
    let resp = p
        .send(
            Method::PUT,
            &format!("/v2/{repo}/manifests/{digest}"),
            &[(CONTENT_TYPE.as_str(), OCI_MANIFEST)],
            Some(bytes),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::CREATED, "push referrer {label}");
    (digest, resp)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn referrers_api_lists_filters_pages_and_switches_off() {
    let reg = OciRegistry::start(OciOptions {
        referrers_page_size: 2,
        ..OciOptions::default()
    })
    .await;
    let subject = image(&[layer(31, 1024)], "linux", "amd64", Format::Oci, "subject");
    reg.pusher().push("org/app", "v1", &subject).await;
    let mut digests = Vec::new();
    for (artifact_type, config_type, label) in [
        (Some(SBOM), "application/vnd.oci.empty.v1+json", "sbom-1"),
        (None, SIG_CONFIG, "sig"),
        (Some(SBOM), "application/vnd.oci.empty.v1+json", "sbom-2"),
    ] {
        let (digest, resp) =
            push_referrer(&reg, "org/app", &subject, artifact_type, config_type, label).await;
        assert_eq!(header(&resp, "oci-subject"), Some(subject.digest.clone()));
        digests.push((digest, artifact_type.unwrap_or(SIG_CONFIG), label));
    }
    digests.sort();

    // The whole list, in pages of two.
    let client = reqwest::Client::new();
    let first = format!("/v2/org/app/referrers/{}", subject.digest);
    let mut listed = Vec::new();
    let mut next = Some(first.clone());
    let mut pages = 0;
    while let Some(path) = next.take() {
        let resp = client
            .get(format!("{}{path}", reg.url()))
            .send()
            .await
            .expect("referrers");
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(header(&resp, "content-type").as_deref(), Some(OCI_INDEX));
        assert_eq!(header(&resp, "oci-filters-applied"), None);
        next = next_link(&resp);
        if let Some(n) = &next {
            assert!(n.starts_with(&format!("{first}?last=")), "{n}");
        }
        let body: Value = resp.json().await.expect("index json");
        assert_eq!(body["schemaVersion"], 2);
        assert_eq!(body["mediaType"], OCI_INDEX);
        listed.extend(body["manifests"].as_array().expect("manifests").clone());
        pages += 1;
    }
    assert_eq!(pages, 2);
    let expected: Vec<Value> = digests
        .iter()
        .map(|(d, t, label)| {
            let bytes = reg.manifest("org/app", d).expect("stored").1;
            json!({"mediaType": OCI_MANIFEST, "digest": d, "size": bytes.len(), "artifactType": t,
                   "annotations": {"org.example.label": label}})
        })
        .collect();
    assert_eq!(listed, expected);
    assert_eq!(reg.referrers("org/app", &subject.digest), expected);

    // Filtered: both SBOMs on one page of two, with the header saying the filter applied.
    let resp = client
        .get(format!("{}{first}", reg.url()))
        .query(&[("artifactType", SBOM)])
        .send()
        .await
        .expect("filtered");
    assert_eq!(
        header(&resp, "oci-filters-applied").as_deref(),
        Some("artifactType")
    );
    assert_eq!(next_link(&resp), None);
    let body: Value = resp.json().await.expect("index json");
    let sboms: Vec<&Value> = expected
        .iter()
        .filter(|d| d["artifactType"] == SBOM)
        .collect();
    assert_eq!(
        body["manifests"]
            .as_array()
            .map(|m| m.iter().collect::<Vec<_>>()),
        Some(sboms)
    );

    // An unknown subject (and an unknown repository) is an empty index, not a 404.
    for path in [
        format!("/v2/org/app/referrers/{}", sha256_digest(b"nothing")),
        format!("/v2/no/such/referrers/{}", subject.digest),
    ] {
        let resp = client
            .get(format!("{}{path}", reg.url()))
            .send()
            .await
            .expect("empty");
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        let body: Value = resp.json().await.expect("index json");
        assert_eq!(body["manifests"], json!([]), "{path}");
    }
    let resp = client
        .get(format!("{}/v2/org/app/referrers/sha256:nothex", reg.url()))
        .send()
        .await
        .expect("bad digest");
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);

    // Without the API: 404 on the route and no OCI-Subject, yet the manifest is stored.
    let old = OciRegistry::start(OciOptions {
        referrers_api: false,
        ..OciOptions::default()
    })
    .await;
    old.pusher().push("org/app", "v1", &subject).await;
    let (digest, resp) = push_referrer(
        &old,
        "org/app",
        &subject,
        Some(SBOM),
        "application/vnd.oci.empty.v1+json",
        "x",
    )
    .await;
    assert_eq!(header(&resp, "oci-subject"), None);
    assert!(old.manifest("org/app", &digest).is_some());
    let resp = client
        .get(format!("{}{first}", old.url()))
        .send()
        .await
        .expect("no api");
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(old.count_requests("GET", "/referrers/"), 1);
    // Switched on later, it lists what was pushed before.
    old.set_referrers_api(true);
    let resp = client
        .get(format!("{}{first}", old.url()))
        .send()
        .await
        .expect("api");
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.expect("index json");
    assert_eq!(body["manifests"][0]["digest"], digest.as_str());
}
