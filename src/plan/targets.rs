//! A copy rule's `to`: one target (`to = "ghcr.io/myorg/*"`) or a list of them (`to =
//! ["ghcr.io/myorg/*", "registry.dr.example/myorg/*"]`, a fan-out: one read of the source for
//! every target). This file reads the field as written and names each target for messages
//! (`copy.to`, or `copy.to[K]` for the K-th of a list); `validate` checks each target as a
//! reference. A leaf of `plan`: it imports only `spans` and `errors`.

use std::fmt;

use schemars::JsonSchema;
use serde::de::{Deserializer, SeqAccess, Visitor};
use serde::Deserialize;
use toml::Spanned;

use super::errors::PlanError;
use super::spans::Ctx;

/// `to` as written: one reference, or a list of them, each with its span.
pub(super) enum RawTo {
    One(String),
    Many(Vec<Spanned<String>>),
}

// By hand, not `#[serde(untagged)]`: an untagged enum buffers the value and loses the span
// of each element of a list, which messages point at.
impl<'de> Deserialize<'de> for RawTo {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<RawTo, D::Error> {
        struct OneOrMany;
        impl<'de> Visitor<'de> for OneOrMany {
            type Value = RawTo;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an image reference or a list of them")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawTo, E> {
                Ok(RawTo::One(v.to_string()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawTo, A::Error> {
                let mut out = Vec::new();
                while let Some(target) = seq.next_element::<Spanned<String>>()? {
                    out.push(target);
                }
                Ok(RawTo::Many(out))
            }
        }
        d.deserialize_any(OneOrMany)
    }
}

// `to`: one target, or several (a fan-out).
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)] // described, never built: `RawTo` reads the value
pub(super) enum ToShape {
    /// One target.
    One(String),
    /// Several targets, each read from one read of the source (a fan-out).
    Many(#[schemars(length(min = 1), extend("uniqueItems" = true))] Vec<String>),
}

/// Each target of `to` with its span and the field that names it in messages: `copy.to` for
/// one, `copy.to[K]` (1-based) for the K-th of a list. A list is not empty.
pub(super) fn list(
    ctx: &Ctx,
    to: &Spanned<RawTo>,
) -> Result<Vec<(Spanned<String>, String)>, PlanError> {
    match to.get_ref() {
        RawTo::One(s) => Ok(vec![(
            Spanned::new(to.span(), s.clone()),
            "copy.to".to_string(),
        )]),
        RawTo::Many(list) if list.is_empty() => Err(ctx.invalid(
            to.span(),
            "copy.to",
            "an empty list names no target: give at least one",
        )),
        RawTo::Many(list) => Ok(list
            .iter()
            .enumerate()
            .map(|(k, s)| (s.clone(), format!("copy.to[{}]", k + 1)))
            .collect()),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::plan::Plan;

    const CANARY: &str = "CANARY-7f3a9c";

    fn parse(to: &str) -> Result<Plan, String> {
        let text = format!("version = 1\n[[copy]]\nfrom = \"r.io/a/*\"\nto = {to}\nprune = true\n\n[[copy]]\nfrom = \"r.io/x/y\"\nto = \"r.io/z/y\"\n");
        Plan::from_str(Path::new("p.toml"), &text).map_err(|e| e.to_string())
    }

    /// Issue 25, part 1: a list of targets is one rule per target, numbered in plan order,
    /// each named with its target; the block after it keeps its `copy #N`.
    #[test]
    fn a_list_of_targets_is_one_rule_per_target() {
        let plan = parse("[\"r.io/b/*\", \"dr.example/b/*\"]").unwrap();
        let names: Vec<(usize, usize, String)> = plan
            .copies
            .iter()
            .map(|c| (c.number, c.block, c.name()))
            .collect();
        assert_eq!(
            names,
            [
                (1, 1, "copy #1 -> r.io/b/*".to_string()),
                (2, 1, "copy #1 -> dr.example/b/*".to_string()),
                (3, 2, "copy #2".to_string()),
            ]
        );
        assert_eq!(plan.copies[1].fanout, Some((2, 2)));
        // Each pair prunes its own target.
        assert!(plan.prune(1).is_some() && plan.prune(2).is_some() && plan.prune(3).is_none());
        // One target, written as a string or as a list of one: one rule, as before.
        for one in ["\"r.io/b/*\"", "[\"r.io/b/*\"]"] {
            let plan = parse(one).unwrap();
            assert_eq!(plan.copies.len(), 2);
            assert_eq!(
                (plan.copies[1].number, plan.copies[1].name().as_str()),
                (2, "copy #2")
            );
            assert_eq!(plan.copies[0].fanout, None);
        }
    }

    /// Issue 25, part 1: each target is checked as `to` is, named `copy.to[K]`, never shown;
    /// an empty list and a target named twice are refused.
    #[test]
    fn each_target_is_checked_and_never_shown() {
        let c = CANARY;
        let cases = [
            ("[]".to_string(), "p.toml:4:6: copy.to: an empty list"),
            (
                format!("[\"r.io/b/*\", \"r.io/{c}\"]"),
                "p.toml:4:19: copy.to[2]: ",
            ),
            (
                format!("[\"r.io/b/*\", \"{c}:x/*\"]"),
                "p.toml:4:19: copy.to[2]: ",
            ),
            (
                "[\"r.io/b/*\", \"dr.example/b/*\", \"r.io/b/*\"]".to_string(),
                "p.toml:4:37: copy.to[3]: names the same target as copy.to[1]",
            ),
            ("[\"r.io/b/*\", 7]".to_string(), "p.toml:4:"),
            (
                "7".to_string(),
                "p.toml:4:6: copy.to: expected an image reference (a string), or a list of them",
            ),
        ];
        for (to, start) in cases {
            let e = parse(&to).expect_err(&to);
            assert!(e.starts_with(start), "{to}: {e}");
            assert!(!e.contains("CANARY") && !e.contains("r.io/b"), "{to}: {e}");
        }
    }
}
