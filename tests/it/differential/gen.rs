//! Random plans over a world: copy rules with filters and options, retention rules, and the
//! case a seed makes.

use super::*;

/// What changes between the two rounds, as other tools or people would change it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Between {
    Nothing,
    /// A tag taken away at a target.
    TargetTagRemoved,
    /// A source repository pushed again with one tag moved to another image.
    SourceTagMoved,
    /// The plan edited: the second round runs another plan over the same world and
    /// checkpoint, a third the first plan again.
    PlanChanged,
}

/// One generated case.
pub(super) struct Case {
    pub(super) world: World,
    pub(super) plan: String,
    pub(super) between: Between,
    /// `--recheck` in the second round.
    pub(super) recheck: bool,
}

/// The `tags = { … }` of a rule: one or two of the filter kinds.
pub(super) fn tag_filter(g: &mut Gen) -> String {
    let kinds: [&[&str]; 4] = [
        &[
            r"include = ['^\d+\.\d+\.\d+$']",
            r"include = ['^v?\d', '^latest$']",
        ],
        &["exclude = ['^pr-']", "exclude = ['-rc', '^main$']"],
        &["semver = '>=1.1'", "semver = '^1'"],
        &["newest = 1", "newest = 2"],
    ];
    let mut chosen: Vec<&str> = Vec::new();
    for kind in kinds {
        if g.percent(35) {
            chosen.push(*g.pick(kind));
        }
    }
    if chosen.is_empty() {
        let kind = kinds[g.below(kinds.len())];
        chosen.push(*g.pick(kind));
    }
    format!("tags = {{ {} }}", chosen.join(", "))
}

/// Platforms and referrers settings of a rule.
pub(super) fn rule_options(g: &mut Gen, sparse_allowed: bool) -> Vec<String> {
    let mut out = Vec::new();
    if g.percent(25) {
        out.push(
            g.pick(&[
                "platforms = ['linux/amd64']",
                "platforms = ['linux/arm64']",
                "platforms = ['linux/amd64', 'linux/s390x']",
            ])
            .to_string(),
        );
        let sparse = sparse_allowed && g.percent(40);
        out.push(format!(
            "platform_mode = '{}'",
            if sparse { "sparse" } else { "rewrite" }
        ));
    }
    match g.below(10) {
        0..=2 => out.push("referrers = false".into()),
        3 | 4 => out.push(format!(
            "referrers = {{ artifact_types = [{}] }}",
            g.pick(&[
                format!("'{COSIGN_SIMPLESIGNING}'"),
                format!("'{IN_TOTO}', '{SPDX}'"),
                format!("'{SPDX}'"),
                format!("'{DSSE_ENVELOPE}', '{COSIGN_SIMPLESIGNING}'"),
            ])
        )),
        _ => {}
    }
    out
}

pub(super) fn copy_rule(from: &str, to: &str, lines: &[String]) -> String {
    format!(
        "\n[[copy]]\nfrom = \"{from}\"\nto = \"{to}\"\n{}",
        lines.iter().map(|l| format!("{l}\n")).collect::<String>()
    )
}

/// A plan over `world`: 1–3 copy rules, 0–2 retention policies.
pub(super) fn random_plan(
    g: &mut Gen,
    seed: u64,
    place: &Place<'_>,
    state: &Path,
    world: &World,
) -> String {
    let (pool, sources, shape) = (&world.pool, world.sources(), place.shape());
    let mut plan = format!("version = 1\nstate = \"{}\"\n", state.display());
    if g.percent(20) {
        // Items one at a time: an order-dependent difference shows up differently.
        plan.push_str(&format!("concurrency = {}\n", g.range(1, 2)));
    }
    if g.percent(20) {
        // Which records a re-run trusts without asking: none, or only `v` tags.
        let trusted: [&str; 2] = ["immutable_tags = []\n", "immutable_tags = ['^v']\n"];
        let line = *g.pick(&trusted);
        plan.push_str(line);
    }
    if let Place::Registries {
        sources, targets, ..
    } = place
    {
        plan.push_str(&insecure(&[sources, targets]));
    }
    // Target repositories the copies write (`dst/a`), for promotions and retention.
    let mut written: Vec<String> = Vec::new();
    // `allow_empty` on some rules that select many tags, drawn apart from `g` so that every
    // seed's world and rules stay what they were before the field existed. A rule that
    // selects nothing without it fails (issue 21, item 5), in the plan as in the run.
    let mut lenient = Gen::new(seed ^ 0xa110_e397);
    for number in 1..=g.range(1, 3) {
        let source = g.pick(&sources).clone();
        let src = place.reference(&format!("src/{source}"));
        let repo = world.repo(&format!("src/{source}"));
        let dst = format!("dst/{source}");
        let mut lines = Vec::new();
        let kind = if written.is_empty() {
            g.below(8)
        } else {
            g.below(10)
        };
        let (from, to) = match kind {
            0 | 1 => {
                if g.percent(50) {
                    lines.push(tag_filter(g));
                }
                written.push(dst.clone());
                (src, place.reference(&dst))
            }
            2 | 3 => {
                if g.percent(40) {
                    lines.push(tag_filter(g));
                }
                let (from_area, to_area) = if g.percent(80) {
                    ("src/", "dst/")
                } else {
                    ("src/team/", "dst/team/")
                };
                for s in &sources {
                    let name = format!("src/{s}");
                    if let Some(rest) = name.strip_prefix(from_area) {
                        written.push(format!("{to_area}{rest}"));
                    }
                }
                (place.wildcard(from_area), place.wildcard(to_area))
            }
            4 | 5 => {
                // Now and then a tag the repository does not have: an error both ways.
                let tag = if g.percent(90) {
                    g.pick(&repo.tags).0.clone()
                } else {
                    g.pick(&TAGS).to_string()
                };
                written.push(dst.clone());
                let to = match g.percent(40) {
                    true => format!("{}:stable", place.reference(&dst)),
                    false => place.reference(&dst),
                };
                (format!("{src}:{tag}"), to)
            }
            6 | 7 => {
                let image = &pool[g.pick(&repo.tags).1].image;
                let digest = match g.below(10) {
                    0 => sha256_digest(format!("nowhere {seed}").as_bytes()),
                    1 | 2 if shape.lone_children && !image.children.is_empty() => {
                        g.pick(&image.children).digest.clone()
                    }
                    _ => image.digest.clone(),
                };
                written.push(dst.clone());
                (
                    format!("{src}@{digest}"),
                    // A tag per rule: two digests pinned under one tag are refused.
                    format!("{}:pinned-{number}", place.reference(&dst)),
                )
            }
            _ if g.percent(20) && written.iter().any(|w| w.starts_with("dst/")) => {
                // A staged promotion of everything an earlier rule writes.
                if g.percent(50) {
                    lines.push(tag_filter(g));
                }
                for w in written.clone() {
                    if let Some(rest) = w.strip_prefix("dst/") {
                        written.push(format!("prod/{rest}"));
                    }
                }
                (place.wildcard("dst/"), place.wildcard("prod/"))
            }
            _ => {
                // A staged promotion of one repository or tag an earlier rule writes.
                let from_repo = g.pick(&written).clone();
                let prod = from_repo.replacen("dst/", "prod/", 1);
                let from = place.reference(&from_repo);
                let whole = g.percent(50);
                if whole && g.percent(60) {
                    lines.push(tag_filter(g));
                }
                written.push(prod.clone());
                if whole {
                    (from, place.reference(&prod))
                } else {
                    let tag = g.pick(&TAGS);
                    (
                        format!("{from}:{tag}"),
                        format!("{}:stable", place.reference(&prod)),
                    )
                }
            }
        };
        lines.extend(rule_options(g, shape.sparse));
        let one_image = from.contains('@')
            || from
                .rsplit('/')
                .next()
                .is_some_and(|last| last.contains(':'));
        if !one_image && lenient.percent(30) {
            lines.push("allow_empty = true".into());
        }
        let (from, to) = (place.respell(g, &from), place.respell(g, &to));
        plan.push_str(&copy_rule(&from, &to, &lines));
    }

    let retains = match g.below(20) {
        0..=8 => 0,
        9..=16 => 1,
        _ => 2,
    };
    for _ in 0..retains {
        let repository = match g.below(20) {
            0..=10 if !written.is_empty() => place.reference(g.pick(&written).as_str()),
            0..=13 => place.wildcard("dst/"),
            14..=16 => place.reference(&format!("src/{}", g.pick(&sources))),
            17 | 18 => place.wildcard("src/"),
            _ => place.wildcard("prod/"),
        };
        let repository = place.respell(g, &repository);
        let mut lines = vec![format!("repository = \"{repository}\"")];
        if g.percent(50) {
            lines.push(format!("keep_newest = {}", g.range(1, 2)));
        }
        let keep = g.percent(40);
        let delete = g.percent(40);
        // A policy that keeps by count alone is refused on a copy's target (`ferry check`
        // sees it deletes what the copy brings): keep that rare, so most plans run.
        let (keep, delete) = match (keep, delete) {
            (false, false) if g.percent(85) => (g.percent(50), true),
            kd => kd,
        };
        if keep {
            lines.push(
                g.pick(&[
                    "keep_tags = ['^latest$']",
                    r"keep_tags = ['^v?\d+\.\d+\.\d+$']",
                    "keep_tags = ['^stable$', '^pinned-']",
                ])
                .to_string(),
            );
        }
        if delete {
            lines.push(
                g.pick(&[
                    r"delete_tags = ['^pr-\d+$']",
                    "delete_tags = ['^pr-', '^main$']",
                    "delete_tags = ['-rc']",
                ])
                .to_string(),
            );
        }
        if g.percent(30) {
            lines.push("untagged = true".into());
        }
        if g.percent(20) {
            lines.push(format!("max_deletions = {}", g.range(1, 3)));
        }
        plan.push_str(&format!("\n[[retain]]\n{}\n", lines.join("\n")));
    }

    plan
}

/// Now and then (issue 21, item 3) a twin of a source repository, `src/twin`: its tags and
/// images (so its referrers too), as a Quay copy and a Hub copy of one image are, now and then
/// with one tag moved to another image (a real conflict) and with a referrer of its own in its
/// fallback indexes; and a last rule consolidating it into the source's `dst/` repository, whose
/// tags are then contested (duplicates where the images are the same). It draws from a
/// generator of its own, so the rest of each case stays what it was.
pub(super) fn consolidate(seed: u64, place: &Place<'_>, world: &mut World, plan: &mut String) {
    let mut g = Gen::new(seed ^ 0x0021_0003_0021_0003);
    if !g.percent(20) {
        return;
    }
    let twin_of = g.pick(&world.sources()).clone();
    let mut tags = world.repo(&format!("src/{twin_of}")).tags.clone();
    if g.percent(40) {
        let moved = g.below(tags.len());
        tags[moved].1 = (tags[moved].1 + 1) % world.pool.len();
    }
    world.repos.push(Repo {
        name: "src/twin".into(),
        tags,
        foreign: g.percent(50),
    });
    let mut lines = Vec::new();
    if g.percent(30) {
        lines.push(tag_filter(&mut g));
    }
    if g.percent(20) {
        lines.extend(rule_options(&mut g, place.shape().sparse));
    }
    let (from, to) = (
        place.reference("src/twin"),
        place.reference(&format!("dst/{twin_of}")),
    );
    plan.push_str(&copy_rule(&from, &to, &lines));
}

pub(super) fn generate(seed: u64, place: &Place<'_>, state: &Path) -> Case {
    let mut g = Gen::new(seed);
    let mut world = random_world(&mut g, seed, place.shape());
    let mut plan = random_plan(&mut g, seed, place, state, &world);
    consolidate(seed, place, &mut world, &mut plan);
    let between = match g.below(20) {
        0..=8 => Between::Nothing,
        9..=12 => Between::TargetTagRemoved,
        13..=16 => Between::SourceTagMoved,
        _ => Between::PlanChanged,
    };
    Case {
        world,
        plan,
        between,
        recheck: g.percent(25),
    }
}
