//! Markdown for review (issue 26, first item): `ferry plan --output markdown` against real
//! registries (copies, retention's deletions, a prune, an in-use keep), its summary checked
//! against `--output json` of the same plan; `ferry report show`; and the renderer itself on
//! hostile names (read back by a CommonMark parser with GitHub's tables) and on 20,000
//! deletions, which stay under GitHub's 65,536 characters with every one named.

use std::collections::BTreeSet;

use ferry::report::markdown::{self, cell, code, html_code, text, Block, Doc, Line};
use pulldown_cmark::{Event, Options, Parser, Tag};
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::common::*;
use crate::harness::*;

fn events(md: &str) -> Vec<Event<'_>> {
    Parser::new_ext(md, Options::ENABLE_TABLES).collect()
}

const HOSTILE: &[&str] = &[
    "<img src=x onerror=alert(1)>",
    "| a | b |",
    "`",
    "a``b",
    "[x](http://evil)",
    "![x](http://evil/x.png)",
    "**bold** _it_ ~~s~~",
    "&lt;script&gt;",
    "back\\slash",
    "line\nbreak",
    "<details><summary>x</summary>",
    "@org/team",
];

/// Issue 26, "Done when" 1: a hostile name is shown as it is, never read as Markdown or
/// HTML: in a code span, a table cell, a `<summary>` and plain text alike.
#[test]
fn hostile_names_are_shown_never_read() {
    for h in HOSTILE {
        let names = vec![h.to_string()];
        let head = format!(
            "| Rule | n |\n|:--|--:|\n| {} | 1 |\n\n{}\n\n",
            cell(h),
            text(h)
        );
        let doc = Doc {
            head,
            blocks: vec![Block {
                summary: html_code(h),
                lines: vec![Line {
                    action: "delete",
                    digest: Some("sha256:0123456789abcdef"),
                    names: &names,
                    arrow: false,
                    reason: h,
                }],
            }],
            left_out: 0,
            whole: "ferry plan --output json",
        };
        let md = markdown::render(&doc);
        let shown = h.replace('\n', "\\n");
        let mut codes = Vec::new();
        let mut texts = String::new();
        let (mut cells, mut strong) = (0, 0);
        for e in events(&md) {
            match e {
                Event::Start(Tag::Link { .. } | Tag::Image { .. }) => panic!("{h:?}: a link\n{md}"),
                Event::Start(Tag::Emphasis) => panic!("{h:?}: emphasis\n{md}"),
                Event::Start(Tag::Strong) => strong += 1,
                Event::InlineHtml(x) => panic!("{h:?}: inline HTML {x:?}\n{md}"),
                Event::Html(x) => {
                    // Only the block's own elements; the name is in entities.
                    let bare = x
                        .replace("<details>", "")
                        .replace("</details>", "")
                        .replace("<summary>", "")
                        .replace("</summary>", "")
                        .replace("<code>", "")
                        .replace("</code>", "");
                    assert!(!bare.contains('<') && !bare.contains('>'), "{h:?}: {x:?}");
                }
                Event::Code(c) => codes.push(c.to_string()),
                Event::Text(t) => texts.push_str(&t),
                Event::Start(Tag::TableCell) => cells += 1,
                _ => {}
            }
        }
        // The header's two cells and the row's two: a `|` opened no cell.
        assert_eq!(cells, 4, "{h:?}\n{md}");
        // In the table and in the line: the name itself.
        assert_eq!(
            codes.iter().filter(|c| **c == shown).count(),
            2,
            "{h:?}: {codes:?}\n{md}"
        );
        // Only the action is strong.
        assert_eq!(strong, 1, "{h:?}\n{md}");
        // As text (the head's and the line's reason), with a word joiner after an `@`, so
        // that it mentions nobody.
        assert!(!texts.contains("@org"), "a mention: {texts:?}");
        let texts = texts.replace('\u{2060}', "");
        assert_eq!(texts.matches(&shown).count(), 2, "{h:?}: {texts:?}\n{md}");
    }
    // A name inside a code span is shown whole whatever its backticks.
    assert_eq!(code("a`b"), "`` a`b ``");
}

/// Every tag named by the code spans of `md`, with `pr-{1..3,5}` read as pr-1, pr-2, pr-3,
/// pr-5.
fn named(md: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for e in events(md) {
        let Event::Code(c) = e else { continue };
        match c.split_once('{') {
            Some((prefix, rest)) => {
                for part in rest.trim_end_matches('}').split(',') {
                    let (a, b) = part.split_once("..").unwrap_or((part, part));
                    let (a, b): (u64, u64) = (a.parse().unwrap(), b.parse().unwrap());
                    out.extend((a..=b).map(|n| format!("{prefix}{n}")));
                }
            }
            None => {
                out.insert(c.to_string());
            }
        }
    }
    out
}

/// Synthetic decisions: `build-N` for N in `range`, a few untagged or with a second tag,
/// deleted where `deleted(N)` says.
struct Decisions {
    digests: Vec<String>,
    tags: Vec<Vec<String>>,
    reasons: Vec<String>,
    deleted: Vec<bool>,
}

impl Decisions {
    fn new(n: u64, deleted: impl FnMut(u64) -> bool) -> Decisions {
        Decisions {
            digests: (0..n)
                .map(|i| {
                    format!(
                        "sha256:{:016x}{i:048x}",
                        i.wrapping_mul(0x9E37_79B9_7F4A_7C15)
                    )
                })
                .collect(),
            tags: (0..n)
                .map(|i| match i % 1000 {
                    0 => vec![],
                    2 => vec![format!("build-{i}"), format!("sha-{i:x}a")],
                    _ => vec![format!("build-{i}")],
                })
                .collect(),
            reasons: (0..n).map(|i| format!("delete: {i} days old")).collect(),
            deleted: (0..n).map(deleted).collect(),
        }
    }

    fn lines(&self, range: std::ops::Range<usize>) -> Vec<Line<'_>> {
        range
            .map(|i| Line {
                action: if self.deleted[i] { "delete" } else { "keep" },
                digest: Some(&self.digests[i]),
                names: &self.tags[i],
                arrow: false,
                reason: &self.reasons[i],
            })
            .collect()
    }
}

fn doc<'a>(blocks: Vec<Block<'a>>) -> Doc<'a> {
    Doc {
        head: "### ferry plan `p.toml`\n\n".to_string(),
        blocks,
        left_out: 0,
        whole: "ferry plan --output json",
    }
}

/// Issue 26, "Done when" 1: a plan of 20,000 deletions (and 10,000 kept images) stays under
/// 65,536 characters, and still names every deletion; what was cut is said.
#[test]
fn twenty_thousand_deletions_fit_a_comment_and_each_is_named() {
    // The oldest 20,000 builds go, but for a few an `[in_use]` keeps.
    let kept = |i: u64| i % 997 == 5;
    let mut count = 0;
    let d = Decisions::new(30_000, |i| {
        let delete = count < 20_000 && !kept(i);
        count += usize::from(delete);
        delete
    });
    let block = |repository: &str, range| Block {
        summary: html_code(repository),
        lines: d.lines(range),
    };
    let md = markdown::render(&doc(vec![
        block("reg.example/org/app", 0..15_000),
        block("reg.example/org/web", 15_000..30_000),
    ]));
    assert!(
        md.chars().count() < markdown::LIMIT,
        "{} characters",
        md.chars().count()
    );
    let named = named(&md);
    let deleted = (0..30_000).filter(|i| d.deleted[*i]);
    assert_eq!(deleted.clone().count(), 20_000);
    for i in deleted {
        match d.tags[i].as_slice() {
            [] => assert!(
                named.contains(&d.digests[i][..19]),
                "{} not named",
                d.digests[i]
            ),
            tags => assert!(tags.iter().all(|t| named.contains(t)), "{tags:?} not named"),
        }
    }
    for i in (0..30_000).filter(|i| !d.deleted[*i]) {
        assert!(
            d.tags[i].iter().all(|t| !named.contains(t)),
            "kept {:?} named",
            d.tags[i]
        );
    }
    let cut =
        "10,000 lines of kept or copied images left out; the whole: `ferry plan --output json`";
    assert!(md.contains(cut), "{}", &md[md.len() - 500..]);
}

/// Past the budget with fewer deletions: each keeps its own line, reason and short digest.
#[test]
fn past_the_budget_deletions_keep_their_lines_and_reasons() {
    let d = Decisions::new(3_700, |i| i < 700);
    let md = markdown::render(&doc(vec![Block {
        summary: html_code("reg.example/org/app"),
        lines: d.lines(0..3_700),
    }]));
    assert!(
        md.chars().count() <= markdown::BUDGET,
        "{}",
        md.chars().count()
    );
    assert_eq!(md.matches("- **delete** `sha256:").count(), 700, "{md}");
    let second = format!(
        "- **delete** `{}` `build-3`: delete\\: 3 days old",
        &d.digests[3][..19]
    );
    assert!(md.contains(&second), "{md}");
    assert!(
        md.contains("3,000 lines of kept or copied images left out"),
        "{md}"
    );
    // Small enough, everything, with whole digests.
    let md = markdown::render(&doc(vec![Block {
        summary: html_code("reg.example/org/app"),
        lines: d.lines(690..710),
    }]));
    assert_eq!(
        md.matches(&format!("`{}`", d.digests[700])).count(),
        1,
        "{md}"
    );
    assert!(!md.contains("left out"), "{md}");
}

/// Delete `repo@digest` at the registry, as an operator would.
async fn delete(reg: &Registry, repo: &str, digest: &str) {
    let path = format!("/v2/{repo}/manifests/{digest}");
    let resp = reg.pusher().send(Method::DELETE, &path, &[], None).await;
    assert_eq!(
        resp.status(),
        StatusCode::ACCEPTED,
        "DELETE {repo}@{digest}"
    );
}

fn single(seed: u64, label: &str) -> Image {
    image(
        &[layer(seed, 3000 + seed as usize)],
        "linux",
        "amd64",
        Format::Oci,
        label,
    )
}

/// The cells of the summary's `**total**` row.
fn total_row(md: &str) -> Vec<String> {
    let row = md
        .lines()
        .find(|l| l.starts_with("| **total** |"))
        .expect(md);
    row.trim_matches('|')
        .split(" | ")
        .map(|c| c.trim().to_string())
        .collect()
}

/// Issue 26, "Done when" 1: the Markdown plan of a plan with copies, deletions, a prune and
/// an in-use keep; its summary says what `--output json` of the same plan says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_markdown_plan_sums_what_the_json_plan_says() {
    let (src, dst) = (Registry::start().await, Registry::start().await);
    let p = src.pusher();
    p.push("org/a", "v1.0.0", &single(1, "a1")).await;
    p.push("org/a", "v1.0.1", &single(2, "a2")).await;
    p.push("team/api", "v1.0.2", &single(12, "api2")).await;
    let dir = tempfile::tempdir().unwrap();
    let deploy = dir.path().join("deploy");
    std::fs::create_dir_all(&deploy).unwrap();
    std::fs::write(
        deploy.join("api.yaml"),
        format!("containers:\n  - image: {}/team/api:v1.0.1\n", src.addr),
    )
    .unwrap();
    let plan = plan(
        dir.path(),
        &format!(
            "version = 1\n{}[[copy]]\nfrom = \"{s}/org/*\"\nto = \"{d}/mirror/*\"\nprune = {{ older_than = \"1s\" }}\n\n[[retain]]\nrepository = \"{s}/team/api\"\ndelete_tags = ['^v1\\.0\\.[01]$']\n\n[in_use]\nfiles = [\"{}/*.yaml\"]\n",
            insecure(&[&src, &dst]),
            deploy.display(),
            s = src.addr,
            d = dst.addr
        ),
    );
    let plan = plan.to_str().unwrap();
    let report = dir.path().join("report.json");
    let report = report.to_str().unwrap();
    ferry(&["run", plan], &[]).await.assert_code(0);
    // org/a:v1.0.0 leaves the source: noticed by the next run, pruned once older than 1 s.
    let (_, _, gone) = p.manifest("org/a", "v1.0.0").await.unwrap();
    delete(&src, "org/a", &gone).await;
    ferry(&["run", "--report", report, plan], &[])
        .await
        .assert_code(0);
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    p.push("org/a", "v1.0.2", &single(3, "a3")).await;
    p.push("team/api", "v1.0.0", &single(10, "api0")).await;
    p.push("team/api", "v1.0.1", &single(11, "api1")).await;

    let json = ferry(&["plan", plan, "--output", "json"], &[]).await;
    json.assert_code(0);
    let v: Value = serde_json::from_str(&json.stdout).unwrap();
    let md = ferry(&["plan", plan, "--output", "markdown"], &[]).await;
    md.assert_code(0);
    let md = md.stdout;
    let t = &v["totals"];
    let n = |k: &str| t[k].as_u64().unwrap_or(0);
    assert_eq!(
        (n("copy"), n("delete"), n("prune"), n("kept_in_use")),
        (1, 1, 1, 1),
        "{v:#}"
    );
    let bytes = indicatif::HumanBytes(n("bytes")).to_string();
    let expected = [
        "**total**".to_string(),
        n("copy").to_string(),
        bytes,
        (n("present") + n("unchanged")).to_string(),
        n("delete").to_string(),
        n("prune").to_string(),
        n("kept_in_use").to_string(),
        "0".to_string(),
    ];
    assert_eq!(total_row(&md), expected, "{md}");
    // Every deletion, retention's and the prune's, named with its whole digest.
    let mut deletions = Vec::new();
    for r in v["retention"].as_array().unwrap() {
        deletions.extend(
            r["decisions"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|d| d["action"] == "delete")
                .cloned(),
        );
    }
    for rule in v["prune"].as_array().unwrap() {
        for r in rule["repositories"].as_array().unwrap() {
            deletions.extend(
                r["decisions"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|d| d["action"] != "keep")
                    .cloned(),
            );
        }
    }
    assert_eq!(deletions.len(), 2, "{v:#}");
    for d in &deletions {
        let line = format!(
            "- **{}** `{}` `{}`",
            d["action"].as_str().unwrap(),
            d["digest"].as_str().unwrap(),
            d["tags"][0].as_str().unwrap()
        );
        assert!(md.contains(&line), "{line}\n{md}");
    }
    // A block per repository: retention's, the prune's, the copy's target (and the notes).
    let notes = usize::from(md.contains("<details><summary>notes: "));
    assert_eq!(md.matches("<details><summary>").count(), 3 + notes, "{md}");
    assert!(md.contains("- **keep** `"), "{md}");
    assert!(
        md.contains("referenced in"),
        "the in-use keep's reason: {md}"
    );
    let copy = format!(
        "`{s}/org/a:v1.0.2` → `{d}/mirror/a:v1.0.2`",
        s = src.addr,
        d = dst.addr
    );
    assert!(
        md.contains(&copy) && md.contains("- **copy** `sha256:"),
        "{copy}\n{md}"
    );

    // The last run's report, shown.
    let r: Value = serde_json::from_str(&std::fs::read_to_string(report).unwrap()).unwrap();
    let shown = ferry(&["report", "show", report], &[]).await;
    shown.assert_code(0);
    assert!(
        shown
            .stdout
            .contains(&format!("{} copied", r["totals"]["copied"])),
        "{}",
        shown.stdout
    );
    let as_is = ferry(&["report", "show", "--output", "json", report], &[]).await;
    assert_eq!(serde_json::from_str::<Value>(&as_is.stdout).unwrap(), r);
    let summary = ferry(&["report", "show", "--output", "markdown", report], &[]).await;
    summary.assert_code(0);
    assert!(
        summary.stdout.contains("| Outcome | Copied |"),
        "{}",
        summary.stdout
    );
    assert!(
        summary.stdout.contains("| `succeeded` |"),
        "{}",
        summary.stdout
    );
}

/// A report's failures come first in its Markdown and are never cut, though its 30,000
/// items are: they are counted and left out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_summary_lists_every_failure_first() {
    use ferry::report::files::{Report, ReportDeletion, ReportItem};
    let dir = tempfile::tempdir().unwrap();
    let mut report = Report::merged(
        "plans/p.toml".into(),
        "2026-01-01T00:00:00Z".into(),
        "2026-01-01T01:00:00Z".into(),
    );
    report.outcome = "partial".into();
    report.totals.failed = 300;
    report.totals.copied = 30_000;
    report.failures = (0..300)
        .map(|i| format!("reg.example/org/app:{i}: MANIFEST_UNKNOWN <b>{i}</b>"))
        .collect();
    report.items = (0..30_000)
        .map(|i| ReportItem {
            source: format!("src.example/org/app:{i}"),
            target: format!("reg.example/org/app:{i}"),
            digest: Some(format!("sha256:{i:064x}")),
            action: "copied".into(),
            bytes: 10,
            seconds: 0.0,
            error: None,
            hint: None,
            rewritten: None,
            updated: None,
            put_back: Vec::new(),
        })
        .collect();
    report.deletions = vec![ReportDeletion {
        repository: "reg.example/org/app".into(),
        digest: format!("sha256:{:064x}", 7),
        tags: vec!["pr-7".into()],
        reason: "delete: matches ^pr-".into(),
        version_id: None,
    }];
    let path = dir.path().join("report.json");
    std::fs::write(&path, serde_json::to_vec(&report).unwrap()).unwrap();
    let shown = ferry(
        &[
            "report",
            "show",
            "--output",
            "markdown",
            path.to_str().unwrap(),
        ],
        &[],
    )
    .await;
    shown.assert_code(0);
    let md = &shown.stdout;
    assert!(
        md.chars().count() < markdown::LIMIT,
        "{}",
        md.chars().count()
    );
    let failures = md.find("**Failures (300):**").expect(md);
    assert!(failures < md.find("<details>").unwrap(), "{md}");
    for i in 0..300 {
        assert!(
            md.contains(&format!("MANIFEST\\_UNKNOWN \\<b\\>{i}\\<\\/b\\>")),
            "failure {i}\n{md}"
        );
    }
    assert!(
        md.contains("- **delete** `sha256:000000000000` `pr-7`"),
        "{md}"
    );
    assert!(
        md.contains("30,000 lines of kept or copied images left out"),
        "{md}"
    );
    let text = ferry(&["report", "show", path.to_str().unwrap()], &[]).await;
    assert!(text.stdout.starts_with("report: plans/p.toml, 2026-01-01T00:00:00Z to 2026-01-01T01:00:00Z: partial\n30000 copied"), "{}", text.stdout);
}

/// Memory stays flat as items stream: past the budget no line is kept, each is counted.
#[test]
fn lines_past_the_budget_are_counted_not_kept() {
    use ferry::report::markdown::{Kept, OwnedLine};
    let mut kept = Kept::default();
    for i in 0..100_000 {
        let line = OwnedLine {
            action: "copy".into(),
            digest: Some(format!("sha256:{i:064x}")),
            names: vec![
                format!("a.example/org/app:{i}"),
                format!("b.example/org/app:{i}"),
            ],
            reason: String::new(),
        };
        kept.push(&format!("b.example/org/app{}", i % 7), line);
        if i == 10 {
            assert_eq!(kept.lines("b.example/org/app3").len(), 2);
        }
    }
    assert_eq!(kept.left_out, 100_000);
    assert!((0..7).all(|r| kept.lines(&format!("b.example/org/app{r}")).is_empty()));
}
