//! The shape of the code, checked (issue 12): dependencies between the top-level modules of
//! `src/` point one way (no cycle), no file is over [`MAX_FILE_LINES`] lines and no function
//! outside tests over [`MAX_FN_LINES`], except those the README's Development section lists
//! with a reason. Test files (under `tests/`, and `tests.rs` or `tests/` under `src/`) have
//! the same file size limit (issue 23). No module re-exports another top-level module's
//! items (`pub use crate::…`), so each type is imported from its home (issue 23). Read from
//! the source text: a new cycle, a long function or an alias fails here, with the path that
//! makes it. Its children check that no two files of a module depend on each other in a circle
//! ([`circles`]), that the engines and the modules below them never import the plan
//! ([`layers`]), and that the README's and `lib.rs`'s layer diagrams are the layers the code
//! has ([`diagrams`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

mod circles;
mod diagrams;
mod layers;

const MAX_FILE_LINES: usize = 600;
const MAX_FN_LINES: usize = 80;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every `.rs` file under `src/`, with its path relative to `src/`.
fn sources() -> Vec<(String, String)> {
    rust_files("src")
}

/// Every `.rs` file under `dir` (relative to the package root), with its path relative to
/// `dir`, sorted.
fn rust_files(dir: &str) -> Vec<(String, String)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let base = root().join(dir);
    let mut files = Vec::new();
    walk(&base, &mut files);
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let rel = p.strip_prefix(&base).unwrap().display().to_string();
            (rel, std::fs::read_to_string(&p).unwrap())
        })
        .collect()
}

/// Is this file (or, from `mod tests`/`#[cfg(test)]` on, this part of it) test code?
fn is_test_file(rel: &str) -> bool {
    rel.starts_with("proptests/")
        || rel.ends_with("/tests.rs")
        || rel.ends_with("_tests.rs")
        || rel.contains("/tests/")
}

/// The text of a file up to its inline test module (a `#[cfg(test)]` module that opens a
/// block): the code that ships. A `#[cfg(test)] mod tests;` declaration near the top ships
/// the rest.
fn shipped(text: &str) -> &str {
    let inline = text.match_indices("#[cfg(test)]\n").find(|(i, _)| {
        let line = text[*i..].lines().nth(1).unwrap_or("").trim();
        let module = line.strip_prefix("pub ").unwrap_or(line);
        module.starts_with("mod ") && line.ends_with('{')
    });
    &text[..inline.map_or(text.len(), |(i, _)| i)]
}

/// [`shipped`] without comment lines: a doc link names a module without depending on it.
fn shipped_code(text: &str) -> String {
    shipped(text)
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The top-level module a file belongs to (`copy/select.rs` -> `copy`).
fn top(rel: &str) -> String {
    rel.split('/')
        .next()
        .unwrap()
        .trim_end_matches(".rs")
        .to_string()
}

/// Top-level module -> the top-level modules its shipped code names (`crate::X`).
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (rel, text) in sources() {
        let from = top(&rel);
        if is_test_file(&rel) || matches!(from.as_str(), "main" | "lib") {
            continue;
        }
        let code = shipped_code(&text);
        let mut rest = code.as_str();
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() && name != from {
                graph.entry(from.clone()).or_default().insert(name);
            }
        }
        graph.entry(from).or_default();
    }
    graph
}

/// A cycle in `graph`, as the path that closes it, if there is one.
fn cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == n) {
            let mut c = path[i..].to_vec();
            c.push(n.to_string());
            return Some(c);
        }
        if done.contains(n) {
            return None;
        }
        path.push(n.to_string());
        for next in graph.get(n).into_iter().flatten() {
            if let Some(c) = visit(next, graph, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(n.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|n| visit(n, graph, &mut Vec::new(), &mut done))
}

/// The exceptions the README's Development section lists: rows `| `PATH` | … |` or
/// `| `PATH::function` | … |` of its size-exceptions table.
fn exceptions() -> BTreeSet<String> {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let Some(start) = readme.find("<!-- size exceptions -->") else {
        return BTreeSet::new();
    };
    readme[start..]
        .lines()
        .skip(1)
        .take_while(|l| !l.starts_with("<!--"))
        .filter_map(|l| {
            let cell = l.strip_prefix("| `")?;
            Some(cell[..cell.find('`')?].to_string())
        })
        .collect()
}

/// (name, first line, line count) of every function in `code`, by brace matching outside
/// strings, chars and comments.
fn functions(code: &str) -> Vec<(String, usize, usize)> {
    let lines: Vec<&str> = code.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let l = lines[i].trim_start();
        // Visibility (`pub`, `pub(crate)`, …), then qualifiers, then `fn`.
        let mut rest = l;
        if let Some(r) = rest.strip_prefix("pub") {
            rest = match r.strip_prefix('(') {
                Some(r) => r.split_once(") ").map_or("", |(_, r)| r),
                None => r.trim_start(),
            };
        }
        for q in ["const ", "async ", "unsafe "] {
            rest = rest.strip_prefix(q).unwrap_or(rest);
        }
        if !rest.starts_with("fn ") {
            i += 1;
            continue;
        }
        let name: String = l[l.find("fn ").unwrap() + 3..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        // From the signature to the brace that closes the body (none: a trait declaration).
        let mut depth = 0i64;
        let mut opened = false;
        let mut end = None;
        'scan: for (j, line) in lines.iter().enumerate().skip(i) {
            let mut chars = line.chars().peekable();
            let mut in_str = false;
            while let Some(c) = chars.next() {
                match c {
                    '\\' if in_str => {
                        chars.next();
                    }
                    '"' => in_str = !in_str,
                    '/' if !in_str && chars.peek() == Some(&'/') => break,
                    '\'' if !in_str => {
                        // A char literal such as '{' (a lifetime has no closing quote close by).
                        let rest: String = chars.clone().take(3).collect();
                        if rest.len() >= 2 && rest.chars().nth(1) == Some('\'') {
                            chars.next();
                            chars.next();
                        }
                    }
                    '{' if !in_str => {
                        depth += 1;
                        opened = true;
                    }
                    '}' if !in_str => {
                        depth -= 1;
                        if opened && depth == 0 {
                            end = Some(j);
                            break 'scan;
                        }
                    }
                    ';' if !in_str && !opened => break 'scan,
                    _ => {}
                }
            }
        }
        match end {
            Some(e) => {
                out.push((name, i + 1, e - i + 1));
                i += 1;
            }
            None => i += 1,
        }
    }
    out
}

#[test]
fn no_cycle_between_top_level_modules() {
    let graph = imports();
    if let Some(c) = cycle(&graph) {
        panic!(
            "a dependency cycle between top-level modules: {}\n(the graph: {graph:#?})",
            c.join(" -> ")
        );
    }
    // The layers the README draws: the leaves depend on nothing of ferry.
    for leaf in ["reference", "error"] {
        assert!(
            graph.get(leaf).is_none_or(BTreeSet::is_empty),
            "{leaf} is a leaf, but uses {:?}",
            graph[leaf]
        );
    }
}

#[test]
fn files_and_functions_stay_short() {
    let allowed = exceptions();
    let mut over = Vec::new();
    for (rel, text) in sources() {
        let lines = text.lines().count();
        if lines > MAX_FILE_LINES && !allowed.contains(&rel) {
            over.push(format!("{rel}: {lines} lines (at most {MAX_FILE_LINES})"));
        }
        if is_test_file(&rel) {
            continue;
        }
        for (name, line, n) in functions(shipped(&text)) {
            let id = format!("{rel}::{name}");
            if n > MAX_FN_LINES && !allowed.contains(&id) {
                over.push(format!(
                    "{rel}:{line}: fn {name}: {n} lines (at most {MAX_FN_LINES})"
                ));
            }
        }
    }
    assert!(
        over.is_empty(),
        "split these, or list them with a reason in the README (Development, size \
         exceptions):\n{}",
        over.join("\n")
    );
}

/// Test code follows the same file size rule as the code it tests (issue 23, item 6): every
/// file under `tests/` (the integration binary, its harness and fakes) and every unit-test
/// file under `src/` (`tests.rs`, `tests/*.rs`; [`files_and_functions_stay_short`] reads all
/// of `src/` already). Function sizes in tests are not checked.
#[test]
fn test_files_stay_short() {
    let allowed = exceptions();
    let mut over = Vec::new();
    let tests = rust_files("tests")
        .into_iter()
        .map(|(rel, text)| (format!("tests/{rel}"), text));
    let unit = sources()
        .into_iter()
        .filter(|(rel, _)| is_test_file(rel))
        .map(|(rel, text)| (format!("src/{rel}"), text));
    for (rel, text) in tests.chain(unit) {
        let lines = text.lines().count();
        // A unit-test file under src/ may be listed as the other check names it (from src/).
        let listed = allowed.contains(&rel)
            || rel
                .strip_prefix("src/")
                .is_some_and(|r| allowed.contains(r));
        if lines > MAX_FILE_LINES && !listed {
            over.push(format!("{rel}: {lines} lines (at most {MAX_FILE_LINES})"));
        }
    }
    assert!(
        over.is_empty(),
        "split these test files by topic (a fake by resource, as the client is), or list \
         them with a reason in the README (Development, size exceptions):\n{}",
        over.join("\n")
    );
}

#[test]
fn the_checks_see_what_they_check() {
    let code = "fn a() {\n    let s = \"}\";\n    let c = '{';\n    // }\n}\npub async fn b(\n    x: u8,\n) -> u8 {\n    x\n}\ntrait T { fn c(&self); }\n    pub(super) async fn d() {}\n";
    assert_eq!(
        functions(code),
        vec![
            ("a".to_string(), 1, 5),
            ("b".to_string(), 6, 5),
            ("d".to_string(), 12, 1)
        ]
    );
    let g: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec![]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.into_iter().map(str::to_string).collect()))
    .collect();
    assert_eq!(
        cycle(&g),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
}

/// The module path of a file under `src/` (`copy/select/mod.rs` and `copy/select.rs` ->
/// `["copy", "select"]`; `lib.rs` and `main.rs` -> the crate root, `[]`).
fn module_path(rel: &str) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .trim_end_matches(".rs")
        .split('/')
        .map(str::to_string)
        .collect();
    if parts.last().is_some_and(|p| p == "mod") || matches!(rel, "lib.rs" | "main.rs") {
        parts.pop();
    }
    parts
}

/// The cross-module re-exports in a file's shipped code (issue 23, item 5): a `pub use` (of
/// any visibility) whose path, written from `crate::` or climbing with `super::` out of the
/// file's top-level module, names another top-level module. Each entry is `rel: statement`.
/// Re-exports of the module's own parts (`pub use self::x::Y`, `pub use x::Y`) are fine.
fn cross_module_reexports(rel: &str, text: &str) -> Vec<String> {
    let here = module_path(rel);
    let own = here.first().cloned().unwrap_or_default();
    let code = shipped_code(text);
    let mut out = Vec::new();
    let mut rest = code.as_str();
    while let Some(i) = rest.find("pub") {
        let at_start = rest[..i].chars().last().is_none_or(char::is_whitespace);
        rest = &rest[i + "pub".len()..];
        let after_vis = if let Some(r) = rest.strip_prefix('(') {
            r.find(')').map_or("", |j| &r[j + 1..])
        } else {
            rest
        };
        let Some(tree) = after_vis.trim_start().strip_prefix("use ") else {
            continue;
        };
        if !at_start {
            continue;
        }
        let words: Vec<&str> = tree[..tree.find(';').unwrap_or(tree.len())]
            .split_whitespace()
            .collect();
        let stmt = words.join(" ");
        // Resolve the path's start to a module path from the crate root.
        let path: String = words.concat();
        let mut segs: Vec<&str> = path.split("::").collect();
        let base: Vec<String> = match segs.first() {
            Some(&"crate") => {
                segs.remove(0);
                Vec::new()
            }
            Some(&"super") => {
                let mut b = here.clone();
                while segs.first() == Some(&"super") {
                    segs.remove(0);
                    b.pop();
                }
                b
            }
            _ => continue,
        };
        if !base.is_empty() {
            continue; // still inside the file's own top-level module
        }
        // `crate::{a::X, b::Y}` names several top-level modules.
        let tail = segs.join("::");
        let names: Vec<String> = match tail.strip_prefix('{') {
            Some(inner) => {
                let mut depth = 0;
                let mut items = vec![String::new()];
                for c in inner.trim_end_matches('}').chars() {
                    match c {
                        '{' => depth += 1,
                        '}' => depth -= 1,
                        ',' if depth == 0 => {
                            items.push(String::new());
                            continue;
                        }
                        _ => {}
                    }
                    items.last_mut().unwrap().push(c);
                }
                items
            }
            None => vec![tail.clone()],
        };
        for name in names {
            let first = name.split("::").next().unwrap_or("").to_string();
            if !first.is_empty() && first != "self" && first != own {
                out.push(format!("{rel}: pub use {stmt}"));
                break;
            }
        }
    }
    out
}

/// One home per type (issue 23, item 5): no module re-exports another top-level module's
/// items, so a file's imports name its real dependencies.
#[test]
fn no_cross_module_reexports() {
    let found: Vec<String> = sources()
        .iter()
        .filter(|(rel, _)| !is_test_file(rel))
        .flat_map(|(rel, text)| cross_module_reexports(rel, text))
        .collect();
    assert!(
        found.is_empty(),
        "import these from their home module instead of re-exporting them:\n{}",
        found.join("\n")
    );
}

/// The shipped (non-test) files that share a file name, other than `mod.rs` and `error.rs`,
/// as `name: path, path`.
fn shared_file_names() -> Vec<String> {
    let mut by_name: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (rel, _) in sources() {
        let name = rel.rsplit('/').next().unwrap().to_string();
        if is_test_file(&rel) || matches!(name.as_str(), "mod.rs" | "error.rs") {
            continue;
        }
        by_name.entry(name).or_default().push(rel);
    }
    by_name
        .into_iter()
        .filter(|(_, files)| files.len() > 1)
        .map(|(name, files)| format!("{name}: {}", files.join(", ")))
        .collect()
}

/// One name, one meaning (issue 23, item 5): a file name is not reused for another concern.
#[test]
fn no_two_files_share_a_name() {
    let shared = shared_file_names();
    assert!(
        shared.is_empty(),
        "rename these so each name says what the file is:\n{}",
        shared.join("\n")
    );
}

#[test]
fn the_reexport_check_sees_what_it_checks() {
    let flagged = |rel: &str, code: &str| !cross_module_reexports(rel, code).is_empty();
    // The aliases issue 23 removed, as they were written.
    assert!(flagged(
        "plan/mod.rs",
        "pub use crate::reference::{self, Location, Reference};\n"
    ));
    assert!(flagged(
        "report/mod.rs",
        "pub use crate::error::chain as error_chain;\n"
    ));
    assert!(flagged(
        "registry/mod.rs",
        "pub use crate::reference::Midstate;\n"
    ));
    assert!(flagged(
        "registry/digest.rs",
        "use x;\npub use crate::reference::{Digest, Hasher};\n"
    ));
    assert!(flagged(
        "retention/mod.rs",
        "pub(crate) use crate::plan::RetainRule;\n"
    ));
    let late = "#[cfg(test)]\nmod tests;\n\npub use crate::plan::RetainRule;\n";
    assert!(flagged("retention/mod.rs", late));
    assert!(flagged("lib.rs", "pub use crate::plan::Plan;\n"));
    assert!(flagged(
        "copy/select/mod.rs",
        "pub use super::super::plan::CopyRule;\n"
    ));
    assert!(flagged(
        "app/mod.rs",
        "pub use crate::{app::X,\n    copy::Y};\n"
    ));
    // Re-exports of a module's own parts, private imports, comments and tests are not.
    assert!(!flagged(
        "registry/http/mod.rs",
        "pub use crate::registry::error_body::decode;\n"
    ));
    assert!(!flagged(
        "copy/mod.rs",
        "pub use reporter::{Reporter, Silent};\n"
    ));
    assert!(!flagged(
        "copy/select/mod.rs",
        "pub use super::journal::Journal;\n"
    ));
    assert!(!flagged("copy/mod.rs", "use crate::plan::Plan;\n"));
    assert!(!flagged("copy/mod.rs", "// pub use crate::plan::Plan;\n"));
    assert!(!flagged(
        "copy/mod.rs",
        "#[cfg(test)]\nmod tests {\n    pub use crate::plan::Plan;\n}\n"
    ));
}
