//! Issue 23, item 4: credentials as a source, not a value. A target registry whose password
//! changes while a copy runs, the new password written where the plan's `auth` points (a
//! `password_file`, a mounted docker config swapped in as a Kubernetes Secret is): the run
//! reads it again after the refusal and finishes, every item copied, nothing sent twice.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::http::Method;

use crate::common::*;
use crate::harness::*;

const USER: &str = "rotor";
const OLD: &str = "Kanarie-old-6b1d93e0";
const NEW: &str = "Kanarie-new-0f7a52c4";

/// A docker config with Basic credentials for `host`.
fn docker_config(host: &str, password: &str) -> String {
    use base64::Engine;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{password}"));
    format!(r#"{{"auths":{{"{host}":{{"auth":"{basic}"}}}}}}"#)
}

/// A Kubernetes Secret volume's layout: `config.json -> ..data/config.json`, `..data ->
/// ..VERSION/`. `publish` writes version `version` and swaps `..data` to it by renaming a new
/// symlink over it, as the kubelet does: the path stays, the file behind it changes.
fn publish(dir: &Path, version: &str, text: &str) {
    use std::os::unix::fs::symlink;
    let versioned = dir.join(version);
    std::fs::create_dir(&versioned).unwrap();
    std::fs::write(versioned.join("config.json"), text).unwrap();
    symlink(version, dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    if !dir.join("config.json").exists() {
        symlink("..data/config.json", dir.join("config.json")).unwrap();
    }
}

/// Copy three images from an open registry to one with htpasswd behind a proxy. The proxy
/// changes the target's password when the first blob upload reaches it (before passing that
/// request on, so it is refused) and `rotate` writes the new one where the plan's `auth` reads
/// it. `auth` gives the plan's `auth` for the target host it is given (writing the first
/// password where it points); `rotate` is given the same host.
async fn copy_across_a_rotation(
    auth: impl FnOnce(&str) -> String,
    rotate: impl Fn(&str) + Send + Sync + 'static,
) {
    let src = Registry::start().await;
    let dst = Arc::new(
        Registry::start_with(Auth::Htpasswd {
            user: USER.into(),
            password: OLD.into(),
        })
        .await,
    );
    let mut images = Vec::new();
    for i in 0..3u64 {
        let tag = format!("v{i}");
        let img = image(
            &[layer(230 + i, 48 * 1024), layer(240 + i, 24 * 1024)],
            "linux",
            "amd64",
            Format::Oci,
            &tag,
        );
        src.pusher().push("team/app", &tag, &img).await;
        images.push((tag, img));
    }
    let rotated = Arc::new(Mutex::new(false));
    // The proxy's address, known once it runs: the host the plan names the target by.
    let host = Arc::new(std::sync::OnceLock::<String>::new());
    let hook: Hook = {
        let (dst, rotated, host) = (dst.clone(), rotated.clone(), host.clone());
        Arc::new(move |method, uri, _| {
            // Under the lock: a request the proxy sees after this one meets the new password.
            let mut done = rotated.lock().unwrap();
            if !*done && *method == Method::POST && uri.contains("/blobs/uploads/") {
                dst.set_password(NEW);
                rotate(host.get().expect("the proxy's address"));
                *done = true;
            }
            Action::Forward
        })
    };
    let proxy = Proxy::start(&dst.url, hook).await;
    host.set(proxy.addr.clone()).unwrap();
    let auth = auth(&proxy.addr);
    let dir = tempfile::tempdir().unwrap();
    let p = plan(
        dir.path(),
        &format!(
            "version = 1\n{}[registry.\"{d}\"]\ninsecure = true\nauth = {auth}\n\n[[copy]]\nfrom = \"{s}/team/app\"\nto = \"{d}/team/app\"\n",
            insecure(&[&src]),
            s = src.addr,
            d = proxy.addr,
        ),
    );
    let started = std::time::Instant::now();
    let (run, report) = run_reported(&p, &["-v"]).await;
    run.assert_code(0);
    assert!(*rotated.lock().unwrap(), "the password changed mid-run");
    assert!(started.elapsed().as_secs() < 30, "{:?}", started.elapsed());

    let totals = &report["totals"];
    assert_eq!(totals["copied"], 3, "{totals}");
    assert_eq!(totals["failed"], 0, "{report}");
    let blobs: u64 = images
        .iter()
        .flat_map(|(_, img)| img.all_blobs())
        .map(|b| b.bytes.len() as u64)
        .sum();
    let manifests: u64 = images.iter().map(|(_, i)| i.bytes.len() as u64).sum();
    assert_eq!(totals["bytes"], blobs, "each blob copied once: {totals}");
    for (tag, img) in &images {
        assert_copied(&dst, "team/app", tag, img).await;
    }

    // The old password was refused after the change, and no upload's stream was (no PATCH or
    // PUT refused): each blob's upload finished once, and the bytes that reached the target
    // are each blob and manifest once, besides the single-request upload below.
    dst.sync_log().await;
    let requests = dst.requests();
    let refused: Vec<_> = requests.iter().filter(|r| r.status == 401).collect();
    assert!(
        refused.iter().any(|r| r.method == "POST"),
        "the first upload met the new password: {refused:?}"
    );
    assert!(
        refused
            .iter()
            .all(|r| matches!(r.method.as_str(), "POST" | "HEAD" | "GET")),
        "{refused:?}"
    );
    // distribution answers the one single-request upload ferry tries (a small blob with its
    // bytes) with a session, and gets those bytes again through it: documented, and the same
    // without a rotation. That request may race the change (sent with the old password just
    // before ferry read the new one): refused, it goes once more with its bytes. Nothing else
    // with a body is sent twice.
    let probes: Vec<u64> = proxy
        .seen()
        .iter()
        .filter(|r| r.method == "POST" && r.uri.contains("digest="))
        .map(|r| {
            let mut all = images.iter().flat_map(|(_, i)| i.all_blobs());
            let blob = all.find(|b| r.uri.contains(&b.digest[7..])).unwrap();
            blob.bytes.len() as u64
        })
        .collect();
    let refused_probes = refused.iter().filter(|r| r.uri.contains("digest=")).count();
    assert_eq!(probes.len(), 1 + refused_probes, "{probes:?} {refused:?}");
    assert!(refused_probes <= 1, "{refused:?}");
    let probed: u64 = probes.iter().sum();
    assert_eq!(proxy.bytes_in(), blobs + manifests + probed);
    let finished = requests
        .iter()
        .filter(|r| r.method == "PUT" && r.uri.contains("/blobs/uploads/") && r.status == 201)
        .count();
    let unique = images.iter().flat_map(|(_, i)| i.all_blobs()).count();
    assert_eq!(finished, unique, "{requests:?}");
    for out in [&run.stdout, &run.stderr] {
        assert!(!out.contains("Kanarie"), "a password leaked:\n{out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_file_rewritten_mid_run_is_read_again() {
    let secrets = tempfile::tempdir().unwrap();
    let file: PathBuf = secrets.path().join("password");
    std::fs::write(&file, format!("{OLD}\n")).unwrap();
    let auth = format!("{{ username = \"{USER}\", password_file = {file:?} }}");
    // Rewritten in place, as `echo NEW > FILE` does (same inode, new length and time).
    let rotate = move |_: &str| std::fs::write(&file, format!("{NEW}\n")).unwrap();
    copy_across_a_rotation(|_| auth, rotate).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mounted_docker_config_swapped_mid_run_is_read_again() {
    let secrets = tempfile::tempdir().unwrap();
    let mount = secrets.path().to_path_buf();
    let first = mount.clone();
    let auth = move |host: &str| {
        publish(&first, "..v1", &docker_config(host, OLD));
        format!("{{ config = {:?} }}", first.join("config.json"))
    };
    let rotate = move |host: &str| publish(&mount, "..v2", &docker_config(host, NEW));
    copy_across_a_rotation(auth, rotate).await;
}

/// A `password_file` that is not there stops the run before any work (exit 3), naming the
/// registry and the field, never the path (a plan value).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_password_file_stops_the_run_naming_the_field() {
    let src = Registry::start().await;
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("Kanarie-path/password");
    let p = plan(
        dir.path(),
        &format!(
            "version = 1\n[registry.\"{s}\"]\ninsecure = true\nauth = {{ username = \"{USER}\", password_file = {missing:?} }}\n\n[[copy]]\nfrom = \"{s}/team/app\"\nto = \"{s}/other/app\"\n",
            s = src.addr,
        ),
    );
    let run = ferry(&["run", p.to_str().unwrap()], &[]).await;
    run.assert_code(3);
    assert!(
        run.stderr
            .contains(&format!("credentials for {}", src.addr))
            && run.stderr.contains("`auth.password_file`"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("Kanarie"), "{}", run.stderr);
}
