//! TLS against a real registry serving HTTPS on 127.0.0.1 with a certificate from a test CA:
//! verified by default (and refused, with a hint), trusted through `ca_file`, or not verified
//! at all with `insecure = true` (announced).

use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::*;
use crate::harness::*;

async fn seeded(ca: &TestCa) -> (Registry, Image) {
    let reg = Registry::start_tls(Auth::None, ca).await;
    let img = image(
        &[layer(31, 40 * 1024)],
        "linux",
        "amd64",
        Format::Oci,
        "tls",
    );
    reg.pusher().push("secure/app", "v1", &img).await;
    (reg, img)
}

/// A plan copying `secure/app:v1` from `src` to `dst`, with `settings` lines for both hosts.
fn tls_plan(dir: &Path, src: &Registry, dst: &Registry, settings: &str) -> String {
    let mut text = String::from("version = 1\n");
    for r in [src, dst] {
        text.push_str(&format!("[registry.\"{}\"]\n{settings}\n", r.addr));
    }
    text.push_str(&format!(
        "[[copy]]\nfrom = \"{}/secure/app:v1\"\nto = \"{}/copied/app\"\n",
        src.addr, dst.addr
    ));
    plan(dir, &text).to_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_ca_is_refused_by_default_with_a_hint_at_ca_file() {
    let ca = TestCa::new();
    let (src, _) = seeded(&ca).await;
    let dst = Registry::start_tls(Auth::None, &ca).await;
    let dir = tempfile::tempdir().unwrap();
    // `retries = 0` is not set: a refused certificate must not be retried anyway.
    let p = tls_plan(dir.path(), &src, &dst, "");

    let started = Instant::now();
    let run = ferry(&["run", "--progress", "none", &p], &[]).await;
    let elapsed = started.elapsed();
    run.assert_code(1);
    let expected = format!("the TLS certificate of {} is not trusted", src.addr);
    assert!(run.stderr.contains(&expected), "{}", run.stderr);
    assert!(
        run.stderr.contains("unknown certificate authority"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains(&format!(
            "`ca_file = \"…\"` under [registry.\"{}\"]",
            src.addr
        )),
        "{}",
        run.stderr
    );

    assert!(
        elapsed < Duration::from_secs(5),
        "a certificate problem is not retried ({elapsed:?})"
    );

    let check = ferry(&["check", "--online", &p], &[]).await;
    check.assert_code(3);
    assert!(check.stdout.contains(&expected), "{}", check.stdout);
    assert!(
        check.stdout.contains(&format!(
            "the TLS certificate of {} is not trusted",
            dst.addr
        )),
        "the push check names the target: {}",
        check.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ca_file_makes_the_registry_trusted_both_ways() {
    let ca = TestCa::new();
    let (src, img) = seeded(&ca).await;
    let dst = Registry::start_tls(Auth::None, &ca).await;
    let dir = tempfile::tempdir().unwrap();
    let p = tls_plan(
        dir.path(),
        &src,
        &dst,
        &format!("ca_file = {:?}", ca.pem.to_str().unwrap()),
    );
    ferry(&["check", "--online", &p], &[]).await.assert_code(0);
    let run = ferry(&["run", "--progress", "none", &p], &[]).await;
    run.assert_code(0);
    assert_copied(&dst, "copied/app", "v1", &img).await;
    assert!(!run.stderr.contains("insecure"), "{}", run.stderr);

    // Another CA's certificate is no substitute.
    let other = TestCa::new();
    let p = tls_plan(
        dir.path(),
        &src,
        &dst,
        &format!("ca_file = {:?}", other.pem.to_str().unwrap()),
    );
    let run = ferry(&["run", "--progress", "none", &p], &[]).await;
    run.assert_code(1);
    assert!(run.stderr.contains("is not trusted"), "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insecure_skips_verification_and_is_announced_first() {
    let ca = TestCa::new();
    let (src, img) = seeded(&ca).await;
    let dst = Registry::start_tls(Auth::None, &ca).await;
    let dir = tempfile::tempdir().unwrap();
    let p = tls_plan(dir.path(), &src, &dst, "insecure = true");
    let run = ferry(&["run", "--progress", "plain", &p], &[]).await;
    run.assert_code(0);
    assert_copied(&dst, "copied/app", "v1", &img).await;
    for r in [&src, &dst] {
        let announce = format!(
            "insecure = true for {}: its TLS certificate is not verified",
            r.addr
        );
        let at = run
            .stderr
            .find(&announce)
            .unwrap_or_else(|| panic!("no announcement for {}:\n{}", r.addr, run.stderr));
        let first_copy = run.stderr.find("copied").unwrap_or(usize::MAX);
        assert!(
            at < first_copy,
            "announced before any work:\n{}",
            run.stderr
        );
    }
    // JSON logs carry it too, as a WARN object.
    let run = ferry(&["--log-format", "json", "run", &p], &[]).await;
    run.assert_code(0);
    let line = run
        .stderr
        .lines()
        .find(|l| l.contains("insecure = true for"))
        .unwrap_or_else(|| panic!("{}", run.stderr));
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["level"], "WARN", "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_file_that_is_not_pem_is_a_plan_error() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let der = dir.path().join("ca.der");
    let pem = std::fs::read_to_string(&ca.pem).unwrap();
    // The same certificate in DER: what `openssl x509 -outform der` writes.
    use base64::Engine as _;
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    std::fs::write(
        &der,
        base64::engine::general_purpose::STANDARD
            .decode(body)
            .unwrap(),
    )
    .unwrap();
    let p = plan(
        dir.path(),
        &format!(
            "version = 1\n[registry.\"127.0.0.1:1\"]\nca_file = {:?}\n[[copy]]\nfrom = \"127.0.0.1:1/a/b\"\nto = \"oci:out\"\n",
            der.to_str().unwrap()
        ),
    );
    let p = p.to_str().unwrap();
    for args in [vec!["check", p], vec!["run", p]] {
        let run = ferry(&args, &[]).await;
        run.assert_code(2);
        // The path is the plan's value: not repeated (issue 11), the position says where.
        let expected =
            format!("{p}:3:11: registry.\"127.0.0.1:1\".ca_file: holds no PEM certificate");
        assert!(run.stderr.contains(&expected), "{}", run.stderr);
        assert!(
            !run.stderr.contains(der.to_str().unwrap()),
            "{}",
            run.stderr
        );
    }
}

/// The harness's certificates are what any client accepts: skopeo verifies them with the CA
/// in its `--cert-dir` and refuses them without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_verifies_the_test_registry_with_the_ca() {
    let ca = TestCa::new();
    let (src, img) = seeded(&ca).await;
    let certs = tempfile::tempdir().unwrap();
    std::fs::copy(&ca.pem, certs.path().join("ca.crt")).unwrap();
    let image_ref = format!("docker://{}/secure/app:v1", src.addr);
    let inspect = |cert_dir: Option<&Path>| {
        let mut cmd = tokio::process::Command::new("skopeo");
        cmd.args(["inspect", "--raw", "--retry-times", "0"]);
        if let Some(d) = cert_dir {
            cmd.arg("--cert-dir").arg(d);
        }
        cmd.arg(&image_ref).output()
    };
    let ok = inspect(Some(certs.path())).await.unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert_eq!(ok.stdout, img.bytes);
    let refused = inspect(None).await.unwrap();
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("certificate"), "{err}");
}
