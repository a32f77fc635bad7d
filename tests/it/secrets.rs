//! The canary test: the whole CLI, at its most verbose, with every kind of secret ferry
//! handles (a registry password sent as Basic auth over HTTPS/HTTP2, a password read from a
//! `password_file` and exchanged for bearer tokens, a docker-config identity token), through
//! every command, with and without
//! failures; then everything it printed and every file it wrote is searched for the secrets
//! in plain text and in base64.

use std::path::{Path, PathBuf};

use base64::Engine as _;

use crate::common::*;
use crate::harness::*;

const PASSWORD: &str = "Kanarie-pw-5e1f0c9a7b3d";
/// A wrong password is still somebody's secret (often a neighbour of the right one).
const WRONG: &str = "Kanarie-wrong-8d2b6a40c3e1";
/// The docker-config identity token is `refresh-<user>` at the harness token server.
const IDENTITY_USER: &str = "kanarieidentity";

/// Every string that reveals `secret`: the text itself, and what it looks like inside base64
/// (standard and URL-safe) at each of the three alignments it can have in a longer encoded
/// string, such as `user:secret` in a Basic header or a JSON blob.
fn needles(secret: &str) -> Vec<String> {
    let mut out = vec![secret.to_string()];
    for engine in [
        base64::engine::general_purpose::STANDARD,
        base64::engine::general_purpose::URL_SAFE,
    ] {
        for k in 0..3 {
            let mut bytes = vec![b':'; k];
            bytes.extend_from_slice(secret.as_bytes());
            let enc = engine.encode(&bytes);
            // Only the 4-character groups made of secret bytes alone are the same wherever
            // the secret sits: drop the group holding the prefix, and the last one.
            let start = if k == 0 { 0 } else { 4 };
            out.push(enc[start..enc.len() - 4].to_string());
        }
    }
    out
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

async fn run_ferry(args: &[&str], env: &[(&str, &str)], home: &Path) -> Run {
    let out = tokio::time::timeout(
        std::time::Duration::from_secs(120),
        ferry_command(args, env, home).output(),
    )
    .await
    .expect("ferry finished within 2 minutes")
    .expect("ferry runs");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_in_anything_ferry_prints_or_writes() {
    // The source: Basic auth over HTTPS (HTTP/2), trusted through ca_file.
    let ca = TestCa::new();
    let src = Registry::start_tls(
        Auth::Htpasswd {
            user: "alice".into(),
            password: PASSWORD.into(),
        },
        &ca,
    )
    .await;
    // Two targets behind one token server: one with a password exchanged for tokens, one
    // with a docker-config identity token (OAuth2 refresh token).
    let tokens = TokenServer::start(&[("bob", PASSWORD), (IDENTITY_USER, PASSWORD)]).await;
    let dst = Registry::start_with(Auth::Token(tokens.clone())).await;
    let mirror = Registry::start_with(Auth::Token(tokens.clone())).await;
    for (i, tag) in ["v1.0.0", "v2.0.0", "v0.9.0"].iter().enumerate() {
        let img = image(
            &[layer(60 + i as u64, 32 * 1024)],
            "linux",
            "amd64",
            Format::Oci,
            tag,
        );
        src.pusher().push("secure/app", tag, &img).await;
    }

    let work = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    // The docker config holds the identity token: ours, not ferry's, so outside the dirs
    // searched.
    let docker_config = tempfile::tempdir().unwrap();
    std::fs::write(
        docker_config.path().join("config.json"),
        format!(
            r#"{{"auths":{{"{}":{{"identitytoken":"refresh-{IDENTITY_USER}"}}}}}}"#,
            mirror.addr
        ),
    )
    .unwrap();
    // The target's password is read from a file (issue 23, item 4): ours too, outside the
    // dirs searched.
    let password_file = docker_config.path().join("dst-password");
    let state = work.path().join("state/ferry.db");
    let p = plan(
        work.path(),
        &format!(
            r#"version = 1
[registry."{s}"]
ca_file = {ca:?}
auth = {{ username = "alice", password_env = "SRC_PW" }}
[registry."{d}"]
insecure = true
auth = {{ username = "bob", password_file = {pw:?} }}
[registry."{m}"]
insecure = true
retries = 0

[[copy]]
from = "{s}/secure/app"
to = "{d}/copied/app"
tags = {{ include = ['^v[12]\.'] }}

[[copy]]
from = "{s}/secure/app:v1.0.0"
to = "{m}/mirror/app"

[[retain]]
repository = "{s}/secure/app"
delete_tags = ['^v0\.']
"#,
            s = src.addr,
            d = dst.addr,
            m = mirror.addr,
            ca = ca.pem.to_str().unwrap(),
            pw = password_file.to_str().unwrap(),
        ),
    );
    let p = p.to_str().unwrap();
    let state_s = state.to_str().unwrap();
    let config_s = docker_config.path().to_str().unwrap();
    let out = |name: &str| work.path().join(name).to_str().unwrap().to_string();

    let mut runs: Vec<(String, Run)> = Vec::new();
    for (fmt, label) in [("text", "text"), ("json", "json")] {
        for (password, good) in [(PASSWORD, true), (WRONG, false)] {
            std::fs::write(&password_file, format!("{password}\n")).unwrap();
            let env = [
                ("SRC_PW", password),
                ("RUST_LOG", "trace"),
                ("FERRY_STATE", state_s),
                ("DOCKER_CONFIG", config_s),
            ];
            let tag = format!("{label}-{}", if good { "ok" } else { "wrong" });
            let (report, metrics) = (
                out(&format!("report-{tag}.json")),
                out(&format!("{tag}.prom")),
            );
            let base = ["-vv", "--log-format", fmt];
            let commands: Vec<(Vec<&str>, i32)> = vec![
                (
                    vec![
                        "run",
                        "--progress",
                        "plain",
                        "--report",
                        &report,
                        "--metrics",
                        &metrics,
                        p,
                    ],
                    if good { 0 } else { 1 },
                ),
                (vec!["plan", p], if good { 0 } else { 1 }),
                (vec!["check", "--online", p], if good { 0 } else { 3 }),
                (vec!["status", p], 0),
                (vec!["status", "--output", "json", p], 0),
            ];
            for (args, code) in commands {
                let all: Vec<&str> = base.iter().copied().chain(args.iter().copied()).collect();
                let run = run_ferry(&all, &env, home.path()).await;
                let name = format!("ferry {} ({tag})", args[0]);
                assert_eq!(
                    run.code, code,
                    "{name}: exit code\n--- stdout\n{}\n--- stderr\n{}",
                    run.stdout, run.stderr
                );
                runs.push((name, run));
            }
        }
    }

    // The secrets really were used, so their absence below means something.
    let issued = tokens.issued_tokens();
    assert!(
        tokens
            .requests()
            .iter()
            .any(|r| r.user.as_deref() == Some("bob") && r.status == 200),
        "the password was exchanged for tokens"
    );
    assert!(
        tokens
            .requests()
            .iter()
            .any(|r| r.method == "POST" && r.user.as_deref() == Some(IDENTITY_USER)),
        "the identity token was used"
    );
    assert!(
        tokens.requests().iter().any(|r| r.status == 401),
        "the wrong password was tried"
    );
    let (wrong_run, failing) = runs
        .iter()
        .find(|(n, _)| n == "ferry run (text-wrong)")
        .unwrap();
    assert!(
        failing.stderr.contains("401"),
        "{wrong_run} failed on credentials: {}",
        failing.stderr
    );

    let mut secrets: Vec<String> = Vec::new();
    for s in [PASSWORD, WRONG] {
        secrets.extend(needles(s));
        for user in ["alice", "bob"] {
            secrets.extend(needles(&format!("{user}:{s}")));
        }
    }
    secrets.extend(needles(&format!("refresh-{IDENTITY_USER}")));
    for t in &issued {
        secrets.push(t.clone());
        // A JWT's signature part is unique to it (header and claims look alike).
        secrets.push(t.rsplit('.').next().unwrap().to_string());
    }

    let mut files = Vec::new();
    files_under(work.path(), &mut files);
    files_under(home.path(), &mut files);
    let names: Vec<String> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for expected in [
        "ferry.db",
        "ferry.db.lock",
        "report-text-ok.json",
        "json-wrong.prom",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} in {names:?}"
        );
    }
    let mut places: Vec<(String, Vec<u8>)> = runs
        .iter()
        .flat_map(|(name, run)| {
            [
                (format!("{name} stdout"), run.stdout.clone().into_bytes()),
                (format!("{name} stderr"), run.stderr.clone().into_bytes()),
            ]
        })
        .collect();
    for f in &files {
        places.push((f.display().to_string(), std::fs::read(f).unwrap()));
    }
    let total: usize = places.iter().map(|(_, b)| b.len()).sum();
    assert!(total > 100_000, "trace logs were written ({total} bytes)");
    for (place, bytes) in &places {
        // Lossy is fine: every needle is ASCII, and invalid bytes only become U+FFFD.
        let text = String::from_utf8_lossy(bytes);
        for secret in &secrets {
            if let Some(at) = text.find(secret.as_str()) {
                // Context around the find, on char boundaries (the text is lossy UTF-8).
                let before: String = text[..at].chars().rev().take(200).collect();
                let before: String = before.chars().rev().collect();
                let after: String = text[at..].chars().take(secret.len() + 200).collect();
                panic!("a secret ({secret}) is in {place}:\n…{before}{after}…");
            }
        }
    }
}

#[test]
fn needles_find_a_secret_inside_base64() {
    let e = base64::engine::general_purpose::STANDARD;
    for prefix in ["", "a", "ab", "alice:", "bob:", "{\"auth\":\"x"] {
        let encoded = e.encode(format!("{prefix}{PASSWORD}trailing"));
        assert!(
            needles(PASSWORD)
                .iter()
                .any(|n| encoded.contains(n.as_str())),
            "{prefix}"
        );
    }
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// Everything ferry writes is its owner's alone: the state directory it creates 0700, the
/// checkpoint and its lock 0600, the report and metrics 0600 even where a looser file stood;
/// and a state directory every user may write to is refused, not used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_are_private_and_a_world_writable_state_directory_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let (src, dst) = (Registry::start().await, Registry::start().await);
    let img = image(&[layer(70, 4096)], "linux", "amd64", Format::Oci, "perm");
    src.pusher().push("team/app", "v1", &img).await;
    let dir = tempfile::tempdir().unwrap();
    let p = copy_plan(
        dir.path(),
        &[&src.addr, &dst.addr],
        "",
        &format!("{}/team/app", src.addr),
        &format!("{}/team/app", dst.addr),
    );
    let p = p.to_str().unwrap();
    let state = dir.path().join("new/sub/ferry.db");
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let (report, metrics) = (out.join("report.json"), out.join("ferry.prom"));
    for f in [&report, &metrics] {
        std::fs::write(f, "old, readable by all").unwrap();
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    ferry(
        &[
            "run",
            "--state",
            state.to_str().unwrap(),
            "--report",
            report.to_str().unwrap(),
            "--metrics",
            metrics.to_str().unwrap(),
            p,
        ],
        &[],
    )
    .await
    .assert_code(0);
    assert_eq!(mode(&dir.path().join("new")), 0o700);
    assert_eq!(mode(&dir.path().join("new/sub")), 0o700);
    let mut written = Vec::new();
    files_under(&dir.path().join("new/sub"), &mut written);
    assert!(written.len() >= 2, "{written:?}");
    for f in written.iter().chain([&report, &metrics]) {
        assert_eq!(mode(f), 0o600, "{}", f.display());
    }
    assert!(std::fs::read_to_string(&report)
        .unwrap()
        .contains("\"outcome\""));

    // A shared, world-writable directory (as /tmp is) is refused by run and status alike.
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let loose = shared.join("ferry.db");
    for args in [
        vec!["run", "--state", loose.to_str().unwrap(), p],
        vec!["status", "--state", loose.to_str().unwrap()],
    ] {
        if args[0] == "status" {
            // status reads an existing file only: put one there, as another user might.
            std::fs::copy(&state, &loose).unwrap();
        }
        let run = ferry(&args, &[]).await;
        run.assert_code(2);
        assert!(
            run.stderr.contains(&format!(
                "its directory {} is writable by every user (mode 1777)",
                shared.display()
            )),
            "{}",
            run.stderr
        );
    }
    assert_eq!(mode(&shared), 0o1777, "left as the user set it");
}

/// Issue 11, item 5: a secret written in a plan never comes back in an error. A canary as the
/// value of an unknown field (secret-looking keys and an innocent one) in every table of the
/// plan, and as the value of known fields it is not valid for, through `check`, `plan` and
/// `run`, in text and JSON: refused (exit 2) at FILE:LINE:COLUMN, the canary nowhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_errors_never_echo_a_value_from_the_plan() {
    const SECRET: &str = "Kanarie-plan-3c9e1d7a";
    let rule = "[[copy]]\nfrom = \"r.example/a/b\"\nto = \"r.example/c/d\"\n";
    let mut plans: Vec<String> = Vec::new();
    for key in ["password", "token", "auth_token", "note"] {
        let v = format!("{key} = \"{SECRET}\"");
        plans.extend([
            format!("version = 1\n{v}\n{rule}"),
            format!("version = 1\n{rule}[registry.\"r.example\"]\n{v}\n"),
            format!("version = 1\n{rule}[registry.\"r.example\"]\nauth = {{ username = \"u\", password_env = \"V\", {v} }}\n"),
            format!("version = 1\n{rule}[registry.\"r.example\"]\nrate_limit = {{ requests_per_second = 5, {v} }}\n"),
            format!("version = 1\n{rule}{v}\n"),
            format!("version = 1\n{rule}tags = {{ include = ['^v'], {v} }}\n"),
            format!("version = 1\n[[retain]]\nrepository = \"r.example/a/b\"\n{v}\n"),
        ]);
    }
    let copy = |line: &str| {
        format!("version = 1\n[[copy]]\nfrom = \"r.example/a/b\"\nto = \"r.example/c/d\"\n{line}\n")
    };
    plans.extend([
        // Known fields, values they cannot take.
        format!("version = 1\n[[copy]]\nfrom = \"r.example/{SECRET}\"\nto = \"r.example/c/d\"\n"),
        format!("version = 1\n[[copy]]\nfrom = \"r.example/a/b\"\nto = \"r.example/c/d:{SECRET}!\"\n"),
        copy(&format!("tags = {{ include = ['{SECRET}('] }}")),
        copy(&format!("tags = {{ semver = \"{SECRET}\" }}")),
        copy(&format!("tags = {{ newest = \"{SECRET}\" }}")),
        copy(&format!("platforms = [\"linux/amd64\"]\nplatform_mode = \"{SECRET}\"")),
        copy(&format!("referrers = {{ artifact_types = [\"{SECRET}\"] }}")),
        format!("version = 1\n[[retain]]\nrepository = \"r.example/a/b\"\nolder_than = \"{SECRET}\"\n"),
        format!("version = 1\n[[retain]]\nrepository = \"r.example/a/b\"\nolder_than = \"30{SECRET}\"\n"),
        format!("version = 1\nconcurrency = \"{SECRET}\"\n{rule}"),
        format!("version = 1\n{rule}[registry.\"r.example\"]\nendpoint = \"https://u:{SECRET}@r.example\"\n"),
        format!("version = 1\n{rule}[registry.\"r.example\"]\nstall_timeout = \"{SECRET}\"\n"),
        format!("version = 1\n{rule}[registry.\"r.example\"]\nflavor = \"{SECRET}\"\n"),
        format!("version = 1\n{rule}[registry.\"r.example\"]\nca_file = \"/nonexistent/{SECRET}.pem\"\n"),
        // Syntax errors next to one.
        format!("version = 1\npassword = \"{SECRET}\n{rule}"),
        format!("version = 1\ntoken = {SECRET}\n{rule}"),
    ]);

    let dir = tempfile::tempdir().unwrap();
    let position = regex::Regex::new(r"plan\.toml:\d+:\d+: ").unwrap();
    for text in &plans {
        let p = plan(dir.path(), text);
        let p = p.to_str().unwrap();
        for cmd in ["check", "plan", "run"] {
            for json in [false, true] {
                let mut args = vec![cmd, p];
                if json {
                    args = vec!["--log-format", "json", cmd, p];
                }
                let run = ferry(&args, &[]).await;
                let all = format!("{}{}", run.stdout, run.stderr);
                assert!(
                    !all.contains(SECRET) && !all.contains("Kanarie"),
                    "{args:?} leaked the canary:\n{all}\n--- plan\n{text}"
                );
                run.assert_code(2);
                assert!(position.is_match(&run.stderr), "{args:?}: {}", run.stderr);
                if json {
                    for line in run.stderr.lines() {
                        serde_json::from_str::<serde_json::Value>(line)
                            .unwrap_or_else(|e| panic!("{args:?}: {e}: {line}"));
                    }
                }
            }
        }
    }
}
