//! Rules of one plan that would fight each other on every run, refused when the plan is read
//! (so `ferry check` says so, exit 2) wherever the plan alone shows it:
//!
//! - two `[[copy]]` rules that write one target tag from different sources (or with
//!   different platform choices): each run would overwrite the other's image;
//! - a `[[retain]]` policy that deletes what a `[[copy]]` rule brings: the copy takes every
//!   tag of a repository (or more than the policy's `keep_newest`) into a repository the
//!   policy keeps only the newest N of, by nothing else.
//!
//! Where it depends on what the registries hold (which tags a pattern matches, which images
//! are newest), the run finds it instead: the engine compares the second writer of a tag with
//! the first (the same digest is a duplicate, another a conflict, refused) and retention
//! keeps (and reports) what a copy of the same plan writes. Pure: no I/O.

use std::path::Path;

use super::errors::PlanError;
use crate::copy::copy_rule::CopyRule;
use crate::reference::Selector;
use crate::retention::retain_rule::RetainPolicy;

/// The one target tag a rule writes, when the plan alone says it.
fn single_target_tag(rule: &CopyRule) -> Option<&str> {
    match (&rule.from.selector, &rule.to.selector) {
        (_, Selector::Tag(t)) => Some(t),
        (Selector::Tag(t), Selector::AllTags) => Some(t),
        _ => None,
    }
}

/// What a rule reads, for telling two writers of one tag apart.
fn source_of(rule: &CopyRule) -> String {
    let platforms = rule
        .platforms
        .as_ref()
        .map(|p| p.to_string())
        .unwrap_or_default();
    format!("{:?} {platforms}", rule.from)
}

/// At most how many tags a rule writes into one target repository (`None`: no bound).
fn most_tags(rule: &CopyRule) -> Option<usize> {
    match rule.from.selector {
        Selector::Tag(_) => Some(1),
        // Untagged at the target unless it names a tag.
        Selector::Digest(_) => Some(usize::from(matches!(rule.to.selector, Selector::Tag(_)))),
        Selector::AllTags | Selector::Wildcard => rule.tags.newest,
    }
}

fn conflict(path: &Path, (line, column): (usize, usize), message: String) -> PlanError {
    PlanError::Conflict {
        path: path.to_path_buf(),
        line,
        column,
        message,
    }
}

/// Refuse the conflicts the plan alone shows (see the module docs).
pub fn check(path: &Path, copies: &[CopyRule], retains: &[RetainPolicy]) -> Result<(), PlanError> {
    let at = |line: usize| format!("{}:{line}", path.display());
    for (i, b) in copies.iter().enumerate() {
        let Some(tag) = single_target_tag(b) else {
            continue;
        };
        for a in &copies[..i] {
            if single_target_tag(a) == Some(tag)
                && a.writes_into(&b.to)
                && b.writes_into(&a.to)
                && source_of(a) != source_of(b)
            {
                return Err(conflict(
                    path,
                    (b.line, b.column),
                    format!(
                        "{} and {} ({}) both write one tag of one target repository (the tag their `from` or `to` names), from different sources or platforms: every run would overwrite one with the other. Give one of them another target tag (`to = \"…:NEWTAG\"`), or keep one rule",
                        b.name(),
                        a.name(),
                        at(a.line)
                    ),
                ));
            }
        }
    }
    for r in retains {
        let rule = &r.rule;
        // Only a policy that keeps by count alone deletes, knowably, what a copy brings: a
        // tag pattern or an age makes it depend on the tags and images there, which the run
        // checks instead.
        if !rule.keep_tags.is_empty() || !rule.delete_tags.is_empty() || rule.older_than.is_some() {
            continue;
        }
        for c in copies {
            if !c.writes_into(&r.repository) {
                continue;
            }
            let brings = most_tags(c);
            if brings.is_some_and(|n| n <= rule.keep_newest) {
                continue;
            }
            let what = match brings {
                None => "every tag it selects (no `tags.newest`)".to_string(),
                Some(n) => format!("up to {n} tags"),
            };
            return Err(conflict(
                path,
                (r.line, r.column),
                format!(
                    "retain #{} deletes what {} ({}) brings on every run: the copy writes {what} into a repository this policy keeps only the newest {} of, so each run would copy again what the last one deleted. Copy only what the policy keeps (`tags = {{ newest = {} }}` on the copy), exclude those tags from the copy, or keep them in the policy (`keep_tags`)",
                    r.number,
                    c.name(),
                    at(c.line),
                    rule.keep_newest,
                    rule.keep_newest.max(1),
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::Plan;
    use std::path::Path;

    fn check(text: &str) -> Result<(), crate::plan::errors::PlanError> {
        Plan::from_str(Path::new("p.toml"), &format!("version = 1\n{text}")).map(|_| ())
    }

    #[test]
    fn copy_everything_then_keep_some_is_refused_with_the_way_out() {
        let e = check(
            "[[copy]]\nfrom = \"oci:src\"\nto = \"oci:W/mirror\"\n\n[[retain]]\nrepository = \"oci:W/mirror\"\nkeep_newest = 1\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("p.toml:7:14: retain #1"), "{e}");
        assert!(e.contains("copy #1 (p.toml:3)"), "{e}");
        assert!(e.contains("tags = { newest = 1 }"), "{e}");
        // The copy's own `newest` is the answer.
        check("[[copy]]\nfrom = \"oci:src\"\nto = \"oci:W/mirror\"\ntags = { newest = 1 }\n\n[[retain]]\nrepository = \"oci:./W/mirror\"\nkeep_newest = 1\n").unwrap();
        // A wildcard retention covering the target counts too.
        assert!(check("[[copy]]\nfrom = \"r.io/a/b\"\nto = \"r.io/org/b\"\n\n[[retain]]\nrepository = \"r.io/org/*\"\nkeep_newest = 5\n").is_err());
        // Patterns and ages depend on the registry: the run decides.
        check("[[copy]]\nfrom = \"oci:src\"\nto = \"oci:W/m\"\n\n[[retain]]\nrepository = \"oci:W/m\"\nkeep_newest = 1\ndelete_tags = ['^pr-']\n").unwrap();
        // Retention elsewhere is no conflict.
        check("[[copy]]\nfrom = \"oci:src\"\nto = \"oci:W/m\"\n\n[[retain]]\nrepository = \"oci:src\"\nkeep_newest = 1\n").unwrap();
    }

    #[test]
    fn two_sources_for_one_tag_are_refused() {
        let e = check(
            "[[copy]]\nfrom = \"oci:A:1.0.0\"\nto = \"oci:dst\"\n\n[[copy]]\nfrom = \"oci:C:1.0.0\"\nto = \"oci:dst\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("p.toml:7:8: copy #2"), "{e}");
        assert!(e.contains("copy #2 and copy #1 (p.toml:3)"), "{e}");
        // The tag is not repeated: any string of the plan may be a secret.
        assert!(!e.contains("1.0.0"), "{e}");
        // Renamed to one tag from two sources: refused too.
        assert!(check("[[copy]]\nfrom = \"r.io/a:x\"\nto = \"r.io/t:stable\"\n\n[[copy]]\nfrom = \"r.io/b:y\"\nto = \"r.io/t:stable\"\n").is_err());
        // The same source twice is a harmless duplicate; other tags are no conflict.
        check("[[copy]]\nfrom = \"oci:A:1.0.0\"\nto = \"oci:dst\"\n\n[[copy]]\nfrom = \"oci:A:1.0.0\"\nto = \"oci:dst\"\n").unwrap();
        check("[[copy]]\nfrom = \"oci:A:1.0.0\"\nto = \"oci:dst\"\n\n[[copy]]\nfrom = \"oci:C:2.0.0\"\nto = \"oci:dst\"\n").unwrap();
    }
}
