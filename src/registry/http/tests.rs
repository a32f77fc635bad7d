//! Unit tests of the HTTP client: no request is built from a name outside the grammar, and
//! redirects never step down to plain HTTP.

use super::client::{redirect_refusal, MAX_REDIRECTS};
use super::*;
use crate::reference::names;
use crate::registry::config::RegistrySettings;
use crate::registry::error::RegistryError;
use crate::registry::Registry;
use std::sync::Arc;
use url::Url;

/// A registry that counts the connections made to it and answers none of them.
async fn silent_registry() -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            drop(sock);
        }
    });
    (addr, count)
}

#[tokio::test]
async fn no_request_is_built_from_a_name_outside_the_grammar() {
    let (addr, connections) = silent_registry().await;
    let settings = RegistrySettings {
        auth: crate::registry::config::AuthSettings::Anonymous,
        endpoint: Some(Url::parse(&format!("http://{addr}")).unwrap()),
        insecure: true,
        retries: 0,
        ..RegistrySettings::default()
    };
    let reg = HttpRegistry::new(&addr, &settings, None).unwrap();
    let good = Digest::sha256_of(b"x");
    let refused = |r: Result<(), RegistryError>, what: &str| match r {
        Err(RegistryError::InvalidName(e)) => e,
        other => panic!("{what}: {other:?}"),
    };
    for repo in ["org/../../escaped", "/abs", "Org/app", "a b", "a\u{1b}[2J"] {
        let e = refused(reg.list_tags(repo).await.map(|_| ()), repo);
        assert_eq!(e.kind, names::Kind::Repository);
        refused(reg.head_manifest(repo, "v1").await.map(|_| ()), repo);
        refused(reg.get_manifest(repo, "v1").await.map(|_| ()), repo);
        refused(reg.blob_exists(repo, &good).await.map(|_| ()), repo);
        refused(reg.get_blob(repo, &good, 1).await.map(|_| ()), repo);
        refused(reg.referrers(repo, &good, None).await.map(|_| ()), repo);
        refused(reg.check_push(repo).await, repo);
        refused(reg.delete_manifest(repo, &good).await.map(|_| ()), repo);
        refused(reg.delete_tag(repo, "v1", &good).await.map(|_| ()), repo);
        refused(
            reg.mount_blob("org/ok", &good, repo).await.map(|_| ()),
            repo,
        );
        refused(
            reg.mount_blob(repo, &good, "org/ok").await.map(|_| ()),
            repo,
        );
    }
    for reference in ["../x", "..", "bad\ntag", "sha256:../../x", "-rm", ""] {
        let e = refused(
            reg.get_manifest("org/ok", reference).await.map(|_| ()),
            reference,
        );
        assert!(matches!(e.kind, names::Kind::Tag | names::Kind::Digest));
        refused(
            reg.head_manifest("org/ok", reference).await.map(|_| ()),
            reference,
        );
        refused(
            reg.delete_tag("org/ok", reference, &good).await.map(|_| ()),
            reference,
        );
    }
    // A digest is no tag to remove.
    let e = refused(
        reg.delete_tag("org/ok", good.as_str(), &good)
            .await
            .map(|_| ()),
        "a digest",
    );
    assert_eq!(e.kind, names::Kind::Tag);
    // Nothing above reached the registry.
    assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 0);
    // A valid name does (and fails there, which is not the point).
    assert!(reg.list_tags("org/ok").await.is_err());
    assert!(connections.load(std::sync::atomic::Ordering::SeqCst) > 0);
}

#[test]
fn redirects_never_step_down_to_plain_http_unless_insecure_and_loops_end() {
    let u = |s: &str| Url::parse(s).unwrap();
    let (tls, plain) = (
        u("https://registry.test/v2/a/blobs/sha256:x"),
        u("http://cdn.test/blob"),
    );
    let refusal = redirect_refusal(&tls, &plain, 1, false).unwrap();
    assert!(
        refusal.contains("http://cdn.test") && refusal.contains("insecure"),
        "{refusal}"
    );
    assert_eq!(redirect_refusal(&tls, &plain, 1, true), None);
    assert_eq!(
        redirect_refusal(&tls, &u("https://cdn.test/b"), 1, false),
        None
    );
    assert_eq!(redirect_refusal(&plain, &plain, 1, false), None);
    assert!(redirect_refusal(&tls, &tls, MAX_REDIRECTS + 1, true)
        .unwrap()
        .contains("redirect loop"));
}
