//! How a rule judges an image on its own: a tagged top-level image by its tags, rank and
//! age; an untagged one by `untagged` and its age.

use std::time::{Duration, SystemTime};

use crate::retention::decisions::{Action, Image};
use crate::retention::retain_rule::RetainRule;

pub(super) const DAY: u64 = 86_400;

/// A tagged top-level image: the first keep rule that holds, else delete.
pub(super) fn judge_tagged(
    img: &Image,
    tags: &[String],
    rank: usize,
    ranked: usize,
    rule: &RetainRule,
    now: SystemTime,
) -> (Action, String) {
    for t in tags {
        if let Some(re) = rule.keep_tags.iter().find(|re| re.is_match(t)) {
            return (
                Action::Keep,
                format!("kept: tag {t} matches {}", re.as_str()),
            );
        }
    }
    if rank < rule.keep_newest {
        return (
            Action::Keep,
            format!("kept: newest {} of {ranked}", rank + 1),
        );
    }
    if !rule.delete_tags.is_empty() {
        if let Some(t) = tags
            .iter()
            .find(|t| !rule.delete_tags.iter().any(|re| re.is_match(t)))
        {
            return (
                Action::Keep,
                format!("kept: tag {t} matches no delete_tags pattern"),
            );
        }
    }
    let age = img.created.map(|c| age_of(c, now));
    if let Some(older_than) = rule.older_than {
        match age {
            None => return (Action::Keep, "kept: age unknown".to_string()),
            Some(age) if age < older_than => {
                return (
                    Action::Keep,
                    format!(
                        "kept: {} days old, younger than {}",
                        age.as_secs() / DAY,
                        format_rule(older_than)
                    ),
                )
            }
            Some(_) => {}
        }
    }
    let mut parts = Vec::new();
    if let Some(re) = tags
        .first()
        .and_then(|t| rule.delete_tags.iter().find(|re| re.is_match(t)))
    {
        parts.push(format!("matches {}", re.as_str()));
    }
    if let Some(age) = age {
        parts.push(format!("{} days old", age.as_secs() / DAY));
    }
    if parts.is_empty() {
        parts.push("not kept by any rule".to_string());
    }
    (Action::Delete, format!("delete: {}", parts.join(", ")))
}

/// An untagged manifest nothing in the inventory reaches. One younger than `untagged_grace`
/// may be a push in progress (children before their index, a manifest before its tag), and
/// so may one whose age is unknown: both are kept while the grace is not zero.
pub(super) fn judge_untagged(img: &Image, rule: &RetainRule, now: SystemTime) -> (Action, String) {
    if !rule.untagged {
        return (
            Action::Keep,
            "kept: untagged (untagged = false)".to_string(),
        );
    }
    let age = img.created.map(|c| age_of(c, now));
    if let Some(why) = in_grace(age, rule.untagged_grace) {
        return (Action::Keep, why);
    }
    match (rule.older_than, age) {
        (Some(_), None) => (Action::Keep, "kept: untagged, age unknown".to_string()),
        (Some(older_than), Some(age)) if age < older_than => (
            Action::Keep,
            format!(
                "kept: untagged, {} days old, younger than {}",
                age.as_secs() / DAY,
                format_rule(older_than)
            ),
        ),
        (_, Some(age)) => (
            Action::Delete,
            format!("delete: untagged, {} days old", age.as_secs() / DAY),
        ),
        (None, None) => (Action::Delete, "delete: untagged".to_string()),
    }
}

/// Why an untagged manifest of age `age` may be a push in progress and is kept: younger than
/// `grace`, or of unknown age (`None` when `grace` is zero, or it is older).
fn in_grace(age: Option<Duration>, grace: Duration) -> Option<String> {
    let grace_is = format!("untagged_grace = {}", format_rule(grace));
    match age {
        _ if grace.is_zero() => None,
        None => Some(format!(
            "kept: untagged, age unknown, may be a push in progress ({grace_is})"
        )),
        Some(age) if age < grace => Some(format!(
            "kept: untagged, {} old, may be a push in progress ({grace_is})",
            ago(age)
        )),
        Some(_) => None,
    }
}

/// `12 minutes`, `3 hours`: how long, in the largest whole unit (at least a second).
fn ago(d: Duration) -> String {
    let s = d.as_secs();
    let (n, unit) = match s {
        0..60 => (s, "second"),
        60..3600 => (s / 60, "minute"),
        3600..DAY => (s / 3600, "hour"),
        _ => (s / DAY, "day"),
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

/// How long ago `created` was; zero for a time in the future (clock skew).
fn age_of(created: SystemTime, now: SystemTime) -> Duration {
    now.duration_since(created).unwrap_or(Duration::ZERO)
}

/// A duration as people write it in a plan: whole days (`30d`), else whole hours (`36h`),
/// else whole minutes (`90m`), else seconds; zero is `0s`.
pub(crate) fn format_rule(d: Duration) -> String {
    let s = d.as_secs();
    if s == 0 {
        "0s".to_string()
    } else if s.is_multiple_of(DAY) {
        format!("{}d", s / DAY)
    } else if s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}
