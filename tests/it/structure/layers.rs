//! The engines sit below the plan (issue 23, item 1): `copy`, `retention`, `inuse` and the
//! modules under them (`registry`, `state`, `reference`) define the types they run on, and
//! `plan` builds those from the file. None of them names `crate::plan`, in shipped code or in
//! their unit tests (which build the engine types directly).

use super::sources;

/// The directories under `src/` that never name the plan.
const BELOW_THE_PLAN: [&str; 6] = [
    "copy",
    "retention",
    "inuse",
    "registry",
    "state",
    "reference",
];

/// The top-level names a path after `crate::` starts with: `plan` in `plan::Plan`, and each
/// item's first name in a group (`{plan::Plan, reference::Digest}`, over several lines too).
fn first_names(after: &str) -> Vec<String> {
    let name = |s: &str| -> String {
        s.trim_start()
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let Some(group) = after.strip_prefix('{') else {
        return vec![name(after)];
    };
    let (mut depth, mut names, mut start) = (0, Vec::new(), 0);
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => {
                names.push(name(&group[start..i]));
                break;
            }
            '}' => depth -= 1,
            ',' if depth == 0 => {
                names.push(name(&group[start..i]));
                start = i + 1;
            }
            _ => {}
        }
    }
    names
}

/// The lines of `text` (a file at `rel` under `src/`, shipped or test) whose code names
/// `crate::plan`, as `rel:line: text`; comments do not count.
fn plan_imports(rel: &str, text: &str) -> Vec<String> {
    let top = rel.split('/').next().unwrap_or("").trim_end_matches(".rs");
    if !BELOW_THE_PLAN.contains(&top) {
        return Vec::new();
    }
    // Code only, one line per line: what follows `//` is a comment (or a doc comment).
    let lines: Vec<&str> = text
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect();
    let code = lines.join("\n");
    let mut found = Vec::new();
    for (i, _) in code.match_indices("crate::") {
        if first_names(&code[i + "crate::".len()..])
            .iter()
            .any(|n| n == "plan")
        {
            let line = code[..i].matches('\n').count();
            found.push(format!(
                "{rel}:{}: {}",
                line + 1,
                text.lines().nth(line).unwrap_or("").trim()
            ));
        }
    }
    found.dedup();
    found
}

#[test]
fn engines_do_not_import_the_plan() {
    let found: Vec<String> = sources()
        .iter()
        .flat_map(|(rel, text)| plan_imports(rel, text))
        .collect();
    assert!(
        found.is_empty(),
        "the engines own their rule types and plan builds them; take these from the engine instead:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_plan_import_check_sees_what_it_checks() {
    let flagged = |rel: &str, code: &str| !plan_imports(rel, code).is_empty();
    // As they were written before issue 23 moved the types.
    assert!(flagged(
        "copy/select/mod.rs",
        "use crate::plan::CopyRule;\n"
    ));
    assert!(flagged(
        "retention/mod.rs",
        "    policy: &crate::plan::RetainPolicy,\n"
    ));
    assert!(flagged(
        "retention/select/tests.rs",
        "        untagged_grace: crate::plan::DEFAULT_UNTAGGED_GRACE,\n"
    ));
    assert!(flagged(
        "inuse/mod.rs",
        "use crate::{plan::InUse, reference::Digest};\n"
    ));
    assert!(flagged(
        "state/mod.rs",
        "use crate::{reference::Digest, plan::Plan};\n"
    ));
    assert!(flagged(
        "copy/tests.rs",
        "#[cfg(test)]\nmod tests {\n    use crate::plan::Plan;\n}\n"
    ));
    // Comments, modules that sit above the plan, and other names are not.
    assert!(!flagged(
        "copy/mod.rs",
        "//! Built by [`crate::plan::Plan`].\n"
    ));
    assert!(!flagged("copy/mod.rs", "let x = 1; // see crate::plan\n"));
    assert!(!flagged("execute/mod.rs", "use crate::plan::Plan;\n"));
    assert!(!flagged("app/check.rs", "use crate::plan::Plan;\n"));
    assert!(!flagged(
        "copy/mod.rs",
        "use crate::planner::X;\nuse crate::copy::plan::Y;\n"
    ));
    assert!(!flagged(
        "copy/mod.rs",
        "use crate::copy::{rule, plan::Y};\n"
    ));
    assert!(flagged(
        "copy/mod.rs",
        "use crate::{\n    copy::X,\n    plan::{Plan, PlanError},\n};\n"
    ));
}
