//! Unit tests of [`super`].

use super::*;

#[test]
fn one_spelling_per_layout_path() {
    for (a, b) in [
        ("./out/a", "out/a"),
        ("out//a/", "out/a"),
        ("./././out/./a", "out/a"),
        ("out/././a/.", "out/a"),
        ("/abs/x/", "/abs/x"),
        ("/", "/"),
        ("../up", "../up"),
    ] {
        assert_eq!(crate::reference::names::canonical_layout_path(a), b, "{a}");
    }
}

#[test]
fn a_mapped_layout_path_stays_under_its_root() {
    let dir = tempfile::tempdir().unwrap();
    let root = format!("{}/out/", dir.path().display());
    assert_eq!(
        join_under(&root, "ok").unwrap(),
        format!("{}/out/ok", dir.path().display())
    );
    assert_eq!(
        join_under(&root, "team/app").unwrap(),
        format!("{root}team/app")
    );
    // Without the trailing `/`, and relative to the working directory.
    assert_eq!(join_under("out", "a").unwrap(), "out/a");
    assert_eq!(join_under("", "a/b").unwrap(), "a/b");
    assert_eq!(join_under("../up/", "a").unwrap(), "../up/a");
    for escape in [
        "../escaped",
        "../../escaped",
        "ok/../../escaped",
        "/etc",
        "//etc",
        "./x",
        "a/./b",
        "a//b",
        "",
        ".",
        "..",
        "a\\..\\..\\b",
        "x\u{1b}[2J",
    ] {
        let e = join_under(&root, escape).unwrap_err();
        assert!(
            matches!(e, RegistryError::InvalidName(_)),
            "{escape:?}: {e}"
        );
    }
    // Nothing was created, inside the root or out of it.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[cfg(unix)]
#[test]
fn a_mapped_layout_path_through_a_symbolic_link_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (root, elsewhere) = (dir.path().join("out"), dir.path().join("elsewhere"));
    std::fs::create_dir_all(root.join("team")).unwrap();
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, root.join("team/app")).unwrap();
    std::os::unix::fs::symlink(&elsewhere, root.join("link")).unwrap();
    let root = format!("{}/", root.display());
    for through in ["team/app", "team/app/x", "link", "link/deeper/still"] {
        match join_under(&root, through) {
            Err(RegistryError::OutsideRoot { reason, .. }) => {
                assert!(reason.contains("symbolic link"), "{through}: {reason}")
            }
            other => panic!("{through}: {other:?}"),
        }
    }
    assert_eq!(
        join_under(&root, "team/web").unwrap(),
        format!("{root}team/web")
    );
    // The root itself is the plan's: a link there is followed.
    let linked_root = dir.path().join("linked-root");
    std::os::unix::fs::symlink(&elsewhere, &linked_root).unwrap();
    assert!(join_under(&format!("{}/", linked_root.display()), "ok").is_ok());
}

#[tokio::test]
async fn names_from_an_index_json_never_become_tags_or_paths() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("layout").display().to_string();
    let reg = LayoutRegistry::new();
    let m = Manifest {
        media_type: manifest::OCI_MANIFEST.into(),
        bytes: Bytes::from_static(b"{}"),
        digest: Digest::sha256_of(b"{}"),
    };
    for bad in ["../x", "bad\ntag", ".hidden", "sha256:../../etc"] {
        assert!(
            matches!(
                reg.put_manifest(&repo, bad, &m).await,
                Err(RegistryError::InvalidName(_))
            ),
            "{bad:?}"
        );
        assert!(matches!(
            reg.get_manifest(&repo, bad).await,
            Err(RegistryError::InvalidName(_))
        ));
        assert!(matches!(
            reg.head_manifest(&repo, bad).await,
            Err(RegistryError::InvalidName(_))
        ));
    }
    assert!(!Path::new(&repo).exists(), "nothing was written");
}

#[tokio::test]
async fn creating_a_layout_file_never_replaces_one_that_appeared_meanwhile() {
    let dir = tempfile::tempdir().unwrap();
    let index = dir.path().join("index.json");
    create_if_missing(&index, b"first").await.unwrap();
    // Another copy checked "missing" before the first one wrote: its write must lose.
    create_if_missing(&index, b"blank").await.unwrap();
    assert_eq!(std::fs::read(&index).unwrap(), b"first");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers, vec![std::ffi::OsString::from("index.json")]);
}

#[tokio::test]
async fn deleting_a_tag_keeps_the_manifest_and_its_other_tags() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("layout").display().to_string();
    let reg = LayoutRegistry::new();
    let manifest = |body: &'static str| Manifest {
        media_type: manifest::OCI_MANIFEST.into(),
        bytes: Bytes::from_static(body.as_bytes()),
        digest: Digest::sha256_of(body.as_bytes()),
    };
    let (one, two) = (
        manifest(r#"{"mediaType":"application/vnd.oci.image.manifest.v1+json","n":1}"#),
        manifest(r#"{"mediaType":"application/vnd.oci.image.manifest.v1+json","n":2}"#),
    );
    for (tag, m) in [("a", &one), ("b", &one), ("c", &two)] {
        reg.put_manifest(&repo, tag, m).await.unwrap();
    }
    assert_eq!(reg.delete_tag(&repo, "b", &one.digest).await.unwrap(), None);
    assert_eq!(reg.list_tags(&repo).await.unwrap(), ["a", "c"]);
    assert!(reg.head_manifest(&repo, "b").await.unwrap().is_none());
    let a = reg.head_manifest(&repo, "a").await.unwrap().unwrap();
    assert_eq!(a.digest, one.digest);
    assert_eq!(
        reg.get_manifest(&repo, one.digest.as_str())
            .await
            .unwrap()
            .bytes,
        one.bytes
    );
    // Gone already, or never a layout: nothing to do.
    assert_eq!(reg.delete_tag(&repo, "b", &one.digest).await.unwrap(), None);
    let nowhere = dir.path().join("nowhere").display().to_string();
    assert_eq!(
        reg.delete_tag(&nowhere, "b", &one.digest).await.unwrap(),
        None
    );
    assert!(!Path::new(&nowhere).exists());
    // A tag that points elsewhere is left alone, and the index untouched.
    let index = std::fs::read(Path::new(&repo).join("index.json")).unwrap();
    match reg.delete_tag(&repo, "c", &one.digest).await {
        Err(RegistryError::TagMoved { tag, actual, .. }) => {
            assert_eq!((tag.as_str(), actual), ("c", two.digest.to_string()));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        std::fs::read(Path::new(&repo).join("index.json")).unwrap(),
        index
    );
    assert!(matches!(
        reg.delete_tag(&repo, "../x", &one.digest).await,
        Err(RegistryError::InvalidName(_))
    ));
}
