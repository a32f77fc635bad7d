//! No circle between the files of a module (issue 23): inside every module directory, the
//! module's own file (`mod.rs`) and each child (a file, or a child directory taken as one
//! unit) may depend on each other one way only. A dependency is a path in shipped code that
//! names an item of another file: `crate::a::b::X`, `super::X`, `self::x::Y`, a use tree
//! (`super::{a::X, b::Y}`), or a child module by its bare name (`child::f()`). Each path is
//! resolved to the deepest file module it names, so an item re-exported by `mod.rs` counts as
//! `mod.rs`'s: import it from its home to depend on its home. Tests are not counted.

use std::collections::{BTreeMap, BTreeSet};

use super::{cycle, is_test_file, module_path, shipped_code, sources};

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The paths of a use tree or path expression starting at `s` (just after `root::`), each as
/// its segments: `a::{b::C, d}` gives `[a, b, C]` and `[a, d]`. Stops at the first character
/// that cannot continue a path.
fn tree_paths(s: &str) -> Vec<Vec<String>> {
    fn parse(chars: &[char], i: &mut usize, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
        let skip_ws = |i: &mut usize| {
            while *i < chars.len() && chars[*i].is_whitespace() {
                *i += 1;
            }
        };
        let mut path = prefix;
        loop {
            skip_ws(i);
            if *i < chars.len() && chars[*i] == '{' {
                *i += 1;
                loop {
                    parse(chars, i, path.clone(), out);
                    skip_ws(i);
                    match chars.get(*i) {
                        Some(',') => *i += 1,
                        Some('}') => {
                            *i += 1;
                            return;
                        }
                        _ => return,
                    }
                    skip_ws(i);
                    if chars.get(*i) == Some(&'}') {
                        *i += 1;
                        return;
                    }
                }
            }
            let start = *i;
            while *i < chars.len() && is_ident(chars[*i]) {
                *i += 1;
            }
            if *i == start {
                break; // `*`, or the end of the path
            }
            path.push(chars[start..*i].iter().collect());
            let rest: String = chars[*i..chars.len().min(*i + 3)].iter().collect();
            if rest.starts_with("::") {
                *i += 2;
            } else {
                break;
            }
        }
        if !path.is_empty() {
            out.push(path);
        }
    }
    let chars: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    parse(&chars, &mut 0, Vec::new(), &mut out);
    out
}

/// The module paths (from the crate root) that a file's code names, before resolution to
/// files: every `crate::`, `super::`, `self::` path and every `child::` path of a known
/// child module.
fn named_paths(rel: &str, code: &str, modules: &BTreeSet<Vec<String>>) -> Vec<Vec<String>> {
    let here = module_path(rel);
    let mut out = Vec::new();
    let mut i = 0;
    while i < code.len() {
        let Some(off) = code[i..].find("::") else {
            break;
        };
        let at = i + off;
        i = at + 2;
        // The identifier just before `::`, if it starts a path (not `a::b` continued).
        let word_start = code[..at]
            .char_indices()
            .rev()
            .take_while(|(_, c)| is_ident(*c))
            .last()
            .map_or(at, |(j, _)| j);
        let word = &code[word_start..at];
        let before = code[..word_start].chars().last();
        // A visibility (`pub(in crate::retention)`) says who may use an item, not what it uses.
        let visibility = code[..word_start].trim_end().ends_with("(in");
        if word.is_empty() || visibility || matches!(before, Some(':') | Some('$')) {
            continue;
        }
        let mut base: Vec<String> = match word {
            "crate" => Vec::new(),
            "self" => here.clone(),
            "super" => here[..here.len().saturating_sub(1)].to_vec(),
            child => {
                let mut p = here.clone();
                p.push(child.to_string());
                if !modules.contains(&p) {
                    continue;
                }
                here.clone()
            }
        };
        let mut rest = &code[i..];
        if !matches!(word, "crate" | "self" | "super") {
            rest = &code[word_start..];
        }
        // `super::super::x`
        while let Some(r) = rest.strip_prefix("super::") {
            base.pop();
            rest = r;
        }
        for path in tree_paths(rest) {
            let mut full = base.clone();
            full.extend(path.into_iter().filter(|s| s != "self"));
            out.push(full);
        }
    }
    out
}

/// File -> the files its shipped code depends on, over `files` (path relative to `src/`,
/// text). Test files are left out.
pub(super) fn file_graph(files: &[(String, String)]) -> BTreeMap<String, BTreeSet<String>> {
    let shipped: Vec<&(String, String)> =
        files.iter().filter(|(rel, _)| !is_test_file(rel)).collect();
    let by_module: BTreeMap<Vec<String>, String> = shipped
        .iter()
        .map(|(rel, _)| (module_path(rel), rel.clone()))
        .collect();
    let modules: BTreeSet<Vec<String>> = by_module.keys().cloned().collect();
    let mut graph = BTreeMap::new();
    for (rel, text) in shipped {
        let code = shipped_code(text);
        let mut to = BTreeSet::new();
        for path in named_paths(rel, &code, &modules) {
            let target = (0..=path.len())
                .rev()
                .find_map(|n| by_module.get(&path[..n]))
                .filter(|t| *t != rel);
            to.extend(target.cloned());
        }
        graph.insert(rel.clone(), to);
    }
    graph
}

/// Every circle between the files of one module, as `module: a -> b -> a` (`mod` for the
/// module's own file, a child directory by its name).
pub(super) fn circles(files: &[(String, String)]) -> Vec<String> {
    let graph = file_graph(files);
    let parents: BTreeSet<Vec<String>> = graph
        .keys()
        .flat_map(|rel| {
            let p = module_path(rel);
            (0..p.len()).map(move |n| p[..n].to_vec())
        })
        .collect();
    let mut found = Vec::new();
    for parent in parents {
        // The unit of a file inside `parent`: its child, or `mod` for parent's own file.
        let unit = |rel: &str| -> Option<String> {
            let p = module_path(rel);
            if !p.starts_with(&parent) {
                return None;
            }
            Some(p.get(parent.len()).cloned().unwrap_or_else(|| "mod".into()))
        };
        let mut units: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (from, tos) in &graph {
            let Some(a) = unit(from) else { continue };
            for to in tos {
                match unit(to) {
                    Some(b) if b != a => {
                        units.entry(a.clone()).or_default().insert(b);
                    }
                    _ => {}
                }
            }
        }
        if let Some(c) = cycle(&units) {
            let name = if parent.is_empty() {
                "(crate)".to_string()
            } else {
                parent.join("/")
            };
            found.push(format!("{name}: {}", c.join(" -> ")));
        }
    }
    found
}

#[test]
fn no_circle_between_files_in_a_module() {
    let found = circles(&sources());
    assert!(
        found.is_empty(),
        "files that depend on each other in a circle: move what they share into a leaf \
         file both import from its home:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_circle_check_sees_what_it_checks() {
    let files = |list: &[(&str, &str)]| -> Vec<(String, String)> {
        list.iter()
            .map(|(r, t)| (r.to_string(), t.to_string()))
            .collect()
    };
    // mod.rs calls its child, the child uses a type of mod.rs: a circle.
    let parent_child = files(&[
        (
            "copy/mod.rs",
            "mod engine;\npub struct Rule;\nfn f() { engine::run() }\n",
        ),
        ("copy/engine.rs", "use super::Rule;\npub fn run() {}\n"),
    ]);
    assert_eq!(
        circles(&parent_child),
        vec!["copy: engine -> mod -> engine"]
    );
    // Through a use tree and a child directory taken as one unit.
    let siblings = files(&[
        ("registry/mod.rs", "mod auth;\nmod http;\n"),
        (
            "registry/auth.rs",
            "use super::{error::E, http::client::send};\n",
        ),
        ("registry/http/mod.rs", "pub mod client;\n"),
        (
            "registry/http/client.rs",
            "use crate::registry::auth::Token;\n",
        ),
        ("registry/error.rs", "pub enum E {}\n"),
    ]);
    assert_eq!(circles(&siblings), vec!["registry: auth -> http -> auth"]);
    // One way only, comments, test modules and other top-level modules are not circles.
    let clean = files(&[
        ("copy/mod.rs", "mod engine;\nmod rule;\nfn f() { engine::run() }\n"),
        (
            "copy/engine.rs",
            "use super::rule::Rule;\n// use super::f;\npub fn run() {}\n#[cfg(test)]\nmod tests {\n    use super::super::f;\n}\n",
        ),
        (
            "copy/rule.rs",
            "pub struct Rule;\npub(in crate::copy) fn made() -> Rule { Rule }\n",
        ),
        ("copy/tests.rs", "use super::engine::run;\nuse super::f;\n"),
        ("plan/mod.rs", "use crate::copy::rule::Rule;\n"),
    ]);
    assert_eq!(circles(&clean), Vec::<String>::new());
    let g = file_graph(&clean);
    assert_eq!(g["copy/mod.rs"], ["copy/engine.rs".to_string()].into());
    assert_eq!(g["plan/mod.rs"], ["copy/rule.rs".to_string()].into());
    assert!(g["copy/rule.rs"].is_empty(), "a visibility is not a use");
}
