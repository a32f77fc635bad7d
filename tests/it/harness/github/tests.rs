use super::*;

const ALL: &[&str] = &["read:packages", "write:packages", "delete:packages"];

fn digest(n: u32) -> String {
    format!("sha256:{n:064x}")
}

async fn fake_with(n: u32, public: bool, downloads: u64) -> (GitHubFake, Vec<u64>) {
    let gh = GitHubFake::start(&[
        ("tok-admin", "octo", ALL),
        ("tok-read", "reader", &["read:packages"]),
        ("tok-none", "nobody", &["repo"]),
    ])
    .await;
    let digests: Vec<String> = (0..n).map(digest).collect();
    let created: Vec<String> = (0..n)
        .map(|i| format!("2026-01-{:02}T00:00:00Z", i + 1))
        .collect();
    let rows: Vec<(&str, &str, &[&str], u64)> = (0..n as usize)
        .map(|i| {
            (
                digests[i].as_str(),
                created[i].as_str(),
                &["v"][..],
                downloads,
            )
        })
        .collect();
    let ids = gh.add_package(Some("acme"), "team/app", public, &rows);
    (gh, ids)
}

async fn call(
    method: reqwest::Method,
    url: &str,
    token: Option<&str>,
) -> (reqwest::StatusCode, reqwest::header::HeaderMap, Value) {
    let mut req = reqwest::Client::new().request(method, url);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let resp = req.send().await.expect("request github fake");
    let status = resp.status();
    let headers = resp.headers().clone();
    let text = resp.text().await.expect("body");
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).expect("json body")
    };
    (status, headers, body)
}

fn header(h: &reqwest::header::HeaderMap, k: &str) -> String {
    h.get(k)
        .map(|v| v.to_str().expect("ascii header").to_string())
        .unwrap_or_default()
}

fn next_link(h: &reqwest::header::HeaderMap) -> Option<String> {
    header(h, "link").split(", ").find_map(|part| {
        part.strip_suffix("; rel=\"next\"")
            .map(|u| u.trim_start_matches('<').trim_end_matches('>').to_string())
    })
}

fn ids_of(body: &Value) -> Vec<u64> {
    body.as_array()
        .expect("array")
        .iter()
        .map(|v| v["id"].as_u64().expect("id"))
        .collect()
}

#[tokio::test]
async fn pages_with_link_headers_newest_first() {
    let (gh, ids) = fake_with(7, false, 0).await;
    let mut url = Some(format!(
        "{}/orgs/acme/packages/container/team%2Fapp/versions?per_page=3",
        gh.url
    ));
    let mut pages = Vec::new();
    while let Some(u) = url {
        assert!(u.starts_with(&gh.url), "{u}");
        let (status, h, body) = call(reqwest::Method::GET, &u, Some("tok-admin")).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(header(&h, "x-oauth-scopes"), ALL.join(", "));
        assert_eq!(header(&h, "x-ratelimit-limit"), "5000");
        assert_eq!(header(&h, "x-ratelimit-resource"), "core");
        if pages.is_empty() {
            assert!(
                header(&h, "link").contains("page=3>; rel=\"last\""),
                "{h:?}"
            );
            let first = &body[0];
            assert_eq!(first["name"], digest(6));
            assert_eq!(first["metadata"]["package_type"], "container");
            assert_eq!(first["metadata"]["container"]["tags"], json!(["v"]));
            assert!(first["url"].as_str().unwrap().ends_with(&format!(
                "/orgs/acme/packages/container/team%2Fapp/versions/{}",
                ids[6]
            )));
        }
        pages.push(ids_of(&body));
        url = next_link(&h);
    }
    assert_eq!(
        pages.iter().map(Vec::len).collect::<Vec<_>>(),
        vec![3, 3, 1]
    );
    let mut all: Vec<u64> = pages.concat();
    let mut want = ids.clone();
    want.reverse();
    assert_eq!(all, want, "newest first");
    all.sort();
    assert_eq!(all, ids);
    let log = gh.requests();
    assert_eq!(log.len(), 3);
    assert!(
        log[0].starts_with(
            "GET /orgs/acme/packages/container/team%2Fapp/versions?per_page=3 token=octo"
        ),
        "{log:?}"
    );
}

#[tokio::test]
async fn user_packages_and_unknown_packages() {
    let gh = GitHubFake::start(&[("t", "octo", &["read:packages"])]).await;
    let d = digest(1);
    let ids = gh.add_package(
        None,
        "tools/cli",
        true,
        &[(&d, "2026-01-01T00:00:00Z", &["latest"], 1)],
    );
    let (status, h, body) = call(
        reqwest::Method::GET,
        &format!("{}/user/packages/container/tools%2Fcli/versions", gh.url),
        Some("t"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(ids_of(&body), ids);
    assert_eq!(header(&h, "link"), "");
    let (status, _, body) = call(
        reqwest::Method::GET,
        &format!(
            "{}/orgs/acme/packages/container/tools%2Fcli/versions",
            gh.url
        ),
        Some("t"),
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(body["message"], "Package not found.");
    let (status, h, body) =
        call(reqwest::Method::GET, &format!("{}/user", gh.url), Some("t")).await;
    assert_eq!(status, 200);
    assert_eq!(body["login"], "octo");
    assert_eq!(header(&h, "x-oauth-scopes"), "read:packages");
}

#[tokio::test]
async fn delete_moves_a_version_to_the_deleted_state_and_restore_brings_it_back() {
    let (gh, ids) = fake_with(3, true, 10).await;
    let base = format!(
        "{}/orgs/acme/packages/container/team%2Fapp/versions",
        gh.url
    );
    let (status, h, body) = call(
        reqwest::Method::DELETE,
        &format!("{base}/{}", ids[0]),
        Some("tok-admin"),
    )
    .await;
    assert_eq!(status, 204, "{body}");
    assert_eq!(body, Value::Null);
    assert!(!header(&h, "x-ratelimit-remaining").is_empty());
    let (_, _, active) = call(reqwest::Method::GET, &base, Some("tok-admin")).await;
    assert_eq!(ids_of(&active), vec![ids[2], ids[1]]);
    let (_, _, deleted) = call(
        reqwest::Method::GET,
        &format!("{base}?state=deleted"),
        Some("tok-admin"),
    )
    .await;
    assert_eq!(ids_of(&deleted), vec![ids[0]]);
    assert!(gh.versions(Some("acme"), "team/app", true)[0].deleted);
    assert_eq!(gh.versions(Some("acme"), "team/app", false).len(), 2);

    // Deleting it again, or an unknown id: 404.
    for id in [ids[0], 42] {
        let (status, _, body) = call(
            reqwest::Method::DELETE,
            &format!("{base}/{id}"),
            Some("tok-admin"),
        )
        .await;
        assert_eq!(status, 404);
        assert_eq!(body["message"], "Not Found");
    }

    let restore = format!("{base}/{}/restore", ids[0]);
    let (status, _, _) = call(reqwest::Method::POST, &restore, Some("tok-admin")).await;
    assert_eq!(status, 204);
    assert_eq!(gh.versions(Some("acme"), "team/app", false).len(), 3);
    let (status, _, _) = call(reqwest::Method::POST, &restore, Some("tok-admin")).await;
    assert_eq!(status, 404, "not deleted any more");

    // GitHub restores a version for 30 days after its deletion, and never an unknown id.
    let delete = format!("{base}/{}", ids[1]);
    let (status, _, _) = call(reqwest::Method::DELETE, &delete, Some("tok-admin")).await;
    assert_eq!(status, 204);
    let day = Duration::from_secs(86_400);
    gh.age_deletion(Some("acme"), "team/app", ids[1], 29 * day);
    let restore = format!("{base}/{}/restore", ids[1]);
    let (status, _, _) = call(reqwest::Method::POST, &restore, Some("tok-admin")).await;
    assert_eq!(status, 204, "29 days after");
    let (status, _, _) = call(reqwest::Method::DELETE, &delete, Some("tok-admin")).await;
    assert_eq!(status, 204);
    gh.age_deletion(Some("acme"), "team/app", ids[1], 31 * day);
    let (status, _, body) = call(reqwest::Method::POST, &restore, Some("tok-admin")).await;
    assert_eq!(status, 404, "31 days after");
    assert_eq!(body["message"], "Not Found");
    let unknown = format!("{base}/42/restore");
    let (status, _, _) = call(reqwest::Method::POST, &unknown, Some("tok-admin")).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn refuses_popular_public_versions_and_the_last_version() {
    let (gh, ids) = fake_with(2, true, 5001).await;
    let base = format!(
        "{}/orgs/acme/packages/container/team%2Fapp/versions",
        gh.url
    );
    let (status, _, body) = call(
        reqwest::Method::DELETE,
        &format!("{base}/{}", ids[0]),
        Some("tok-admin"),
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(body["message"], REFUSED_DOWNLOADS);
    assert!(body["documentation_url"].is_string());

    // The same downloads on a private package are fine, until one version is left.
    let d1 = digest(1);
    let d2 = digest(2);
    let ids = gh.add_package(
        Some("acme"),
        "private",
        false,
        &[
            (&d1, "2026-01-01T00:00:00Z", &[], 9000),
            (&d2, "2026-01-02T00:00:00Z", &["v2"], 9000),
        ],
    );
    let base = format!("{}/orgs/acme/packages/container/private/versions", gh.url);
    let (status, _, _) = call(
        reqwest::Method::DELETE,
        &format!("{base}/{}", ids[0]),
        Some("tok-admin"),
    )
    .await;
    assert_eq!(status, 204);
    let (status, _, body) = call(
        reqwest::Method::DELETE,
        &format!("{base}/{}", ids[1]),
        Some("tok-admin"),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["message"], REFUSED_LAST_TAGGED);
    assert_eq!(gh.versions(Some("acme"), "private", false).len(), 1);

    // The last tagged version is refused while untagged ones remain; they go.
    let (d3, d4, d5) = (digest(3), digest(4), digest(5));
    let ids = gh.add_package(
        Some("acme"),
        "tagged",
        false,
        &[
            (&d3, "2026-01-01T00:00:00Z", &["a"], 0),
            (&d4, "2026-01-02T00:00:00Z", &["b"], 0),
            (&d5, "2026-01-03T00:00:00Z", &[], 0),
        ],
    );
    let base = format!("{}/orgs/acme/packages/container/tagged/versions", gh.url);
    let statuses = [ids[0], ids[1], ids[2]].map(|id| {
        let url = format!("{base}/{id}");
        async move {
            call(reqwest::Method::DELETE, &url, Some("tok-admin"))
                .await
                .0
        }
    });
    let mut got = Vec::new();
    for s in statuses {
        got.push(s.await);
    }
    assert_eq!(got, [204, 400, 204]);
    let left = gh.versions(Some("acme"), "tagged", false);
    assert_eq!(
        (left.len(), left[0].tags.clone()),
        (1, vec!["b".to_string()])
    );
    let seen: Vec<(u64, u16)> = gh.deletes().iter().map(|d| (d.id, d.status)).collect();
    assert_eq!(
        &seen[seen.len() - 3..],
        [(ids[0], 204), (ids[1], 400), (ids[2], 204)]
    );
}

#[tokio::test]
async fn the_secondary_limit_is_a_sliding_window_answered_as_set() {
    let (gh, ids) = fake_with(5, false, 0).await;
    gh.set_secondary(
        2,
        Duration::from_millis(1500),
        StatusCode::TOO_MANY_REQUESTS,
    );
    let base = format!(
        "{}/orgs/acme/packages/container/team%2Fapp/versions",
        gh.url
    );
    let delete = |id: u64| {
        let url = format!("{base}/{id}");
        async move { call(reqwest::Method::DELETE, &url, Some("tok-admin")).await }
    };
    assert_eq!(delete(ids[0]).await.0, 204);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(delete(ids[1]).await.0, 204);
    let (status, h, _) = delete(ids[2]).await;
    assert_eq!(status, 429);
    assert_eq!(
        header(&h, "retry-after"),
        "1",
        "the first leaves the window in 0.7 s"
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    // The first left the window, the second is still in it.
    assert_eq!(delete(ids[2]).await.0, 204);
    assert_eq!(delete(ids[3]).await.0, 429);
}

#[tokio::test]
async fn credentials_and_scopes() {
    let (gh, ids) = fake_with(3, false, 0).await;
    let base = format!(
        "{}/orgs/acme/packages/container/team%2Fapp/versions",
        gh.url
    );
    for token in [None, Some("wrong")] {
        let (status, h, body) = call(reqwest::Method::GET, &base, token).await;
        assert_eq!(status, 401);
        assert_eq!(body["message"], "Bad credentials");
        assert_eq!(header(&h, "x-ratelimit-limit"), "5000");
    }
    // `token <t>` works as well as `Bearer <t>`.
    let resp = reqwest::Client::new()
        .get(&base)
        .header("authorization", "token tok-read")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    let (status, _, body) = call(reqwest::Method::GET, &base, Some("tok-none")).await;
    assert_eq!(status, 403);
    assert!(
        body["message"].as_str().unwrap().contains("read:packages"),
        "{body}"
    );
    let (status, h, body) = call(
        reqwest::Method::DELETE,
        &format!("{base}/{}", ids[0]),
        Some("tok-read"),
    )
    .await;
    assert_eq!(status, 403);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("delete:packages"),
        "{body}"
    );
    assert_eq!(header(&h, "x-oauth-scopes"), "read:packages");
    assert_eq!(gh.versions(Some("acme"), "team/app", false).len(), 3);
    let log = gh.requests();
    assert!(log[0].ends_with("token=none"), "{log:?}");
    assert!(
        log.last().unwrap().starts_with("DELETE ") && log.last().unwrap().ends_with("token=reader")
    );
}

#[tokio::test]
async fn secondary_delete_limit_then_primary_limit() {
    let (gh, ids) = fake_with(6, false, 0).await;
    gh.set_limits(1000, 2, Duration::from_secs(2));
    let base = format!(
        "{}/orgs/acme/packages/container/team%2Fapp/versions",
        gh.url
    );
    for id in &ids[..2] {
        let (status, _, _) = call(
            reqwest::Method::DELETE,
            &format!("{base}/{id}"),
            Some("tok-admin"),
        )
        .await;
        assert_eq!(status, 204);
    }
    let (status, h, body) = call(
        reqwest::Method::DELETE,
        &format!("{base}/{}", ids[2]),
        Some("tok-admin"),
    )
    .await;
    assert_eq!(status, 403);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("secondary rate limit"),
        "{body}"
    );
    let retry: u64 = header(&h, "retry-after").parse().expect("retry-after");
    assert!((1..=2).contains(&retry), "{retry}");
    assert_ne!(header(&h, "x-ratelimit-remaining"), "0");
    assert_eq!(gh.versions(Some("acme"), "team/app", false).len(), 4);
    tokio::time::sleep(Duration::from_secs(retry)).await;
    let (status, _, _) = call(
        reqwest::Method::DELETE,
        &format!("{base}/{}", ids[2]),
        Some("tok-admin"),
    )
    .await;
    assert_eq!(status, 204, "a new window");

    gh.set_limits(2, 100, Duration::from_secs(60));
    for _ in 0..2 {
        let (status, _, _) = call(reqwest::Method::GET, &base, Some("tok-admin")).await;
        assert_eq!(status, 200);
    }
    let (status, h, body) = call(reqwest::Method::GET, &base, Some("tok-admin")).await;
    assert_eq!(status, 403);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("API rate limit exceeded for user ID 1."),
        "{body}"
    );
    assert_eq!(header(&h, "x-ratelimit-remaining"), "0");
    assert_eq!(header(&h, "x-ratelimit-used"), "2");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let reset: u64 = header(&h, "x-ratelimit-reset").parse().unwrap();
    assert!(reset > now && reset <= now + 61, "{reset} vs {now}");
    // Budgets are per user: another token still gets through.
    let (status, _, _) = call(reqwest::Method::GET, &base, Some("tok-read")).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn lists_an_owners_container_packages() {
    let (gh, _) = fake_with(2, false, 0).await;
    let d = digest(9);
    gh.add_package(
        Some("acme"),
        "base",
        true,
        &[(&d, "2026-02-01T00:00:00Z", &["1"], 0)],
    );
    gh.add_package(
        None,
        "mine",
        false,
        &[(&d, "2026-02-01T00:00:00Z", &["1"], 0)],
    );
    let mut url = Some(format!(
        "{}/orgs/acme/packages?package_type=container&per_page=1",
        gh.url
    ));
    let mut names = Vec::new();
    while let Some(u) = url {
        let (status, h, body) = call(reqwest::Method::GET, &u, Some("tok-read")).await;
        assert_eq!(status, 200, "{body}");
        names.extend(body.as_array().unwrap().iter().map(|p| p["name"].clone()));
        url = next_link(&h);
    }
    assert_eq!(names, vec![json!("base"), json!("team/app")]);
    let (status, _, body) = call(
        reqwest::Method::GET,
        &format!("{}/user/packages?package_type=container", gh.url),
        Some("tok-admin"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body[0]["name"], "mine");
    assert_eq!(body[0]["visibility"], "private");
    assert_eq!(body[0]["version_count"], 1);
    let (status, _, body) = call(
        reqwest::Method::GET,
        &format!("{}/orgs/octo/packages?package_type=container", gh.url),
        Some("tok-admin"),
    )
    .await;
    assert_eq!(status, 404, "{body}");
}
