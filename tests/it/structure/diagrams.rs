//! The layer diagrams people read are the layers the code has (issue 23): the README's
//! Development diagram and the `lib.rs` module map each list every top-level module of `src/`
//! once, a row per layer from the top down, and each module uses only modules drawn in rows
//! below its own (modules on one row are siblings: neither uses the other).

use std::collections::{BTreeMap, BTreeSet};

use super::{imports, root};

/// The rows of a diagram: the lines of the first fenced block after `marker` in `text` whose
/// first word names a module (`app/`, `cli.rs`, `report/  state/`), each as its module names.
/// Lines that start with a space continue the row above and are skipped.
fn rows(text: &str, marker: &str) -> Vec<Vec<String>> {
    let start = text.find(marker).unwrap_or_else(|| panic!("no {marker:?}"));
    let block = &text[start..];
    let open = block.find("```").expect("a fenced diagram") + 3;
    let body = &block[open..];
    let body = &body[body.find('\n').unwrap() + 1..];
    let body = &body[..body.find("```").expect("the diagram's end")];
    body.lines()
        .map(|l| l.trim_start_matches("//!").strip_prefix(' ').unwrap_or(l))
        .filter(|l| !l.starts_with(' ') && !l.is_empty())
        .map(|l| {
            l.split_whitespace()
                .map(|w| w.trim_end_matches(','))
                .take_while(|w| w.ends_with('/') || w.ends_with(".rs"))
                .map(|w| w.trim_end_matches('/').trim_end_matches(".rs").to_string())
                .collect::<Vec<_>>()
        })
        .filter(|r| !r.is_empty())
        .collect()
}

/// What is wrong with a diagram's rows against the import graph: a module missing or drawn
/// twice, or an import that points sideways or up.
fn mismatches(rows: &[Vec<String>], graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let mut out = Vec::new();
    let mut row_of = BTreeMap::new();
    for (i, row) in rows.iter().enumerate() {
        for m in row {
            if row_of.insert(m.clone(), i).is_some() {
                out.push(format!("{m} is drawn twice"));
            }
        }
    }
    for (m, uses) in graph {
        let Some(&mine) = row_of.get(m) else {
            out.push(format!("{m} is not drawn"));
            continue;
        };
        for u in uses {
            match row_of.get(u) {
                Some(&theirs) if theirs > mine => {}
                Some(_) => out.push(format!("{m} uses {u}, drawn beside or above it")),
                None => out.push(format!("{m} uses {u}, which is not drawn")),
            }
        }
    }
    out
}

#[test]
fn the_diagrams_draw_the_layers_the_code_has() {
    let graph = imports();
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let lib = std::fs::read_to_string(root().join("src/lib.rs")).unwrap();
    for (name, rows) in [
        ("README.md", rows(&readme, "The layers, a row each")),
        ("src/lib.rs", rows(&lib, "# Layout")),
    ] {
        let wrong = mismatches(&rows, &graph);
        assert!(
            wrong.is_empty(),
            "{name}'s layer diagram does not match the code:\n{}\n(the graph: {graph:#?})",
            wrong.join("\n")
        );
    }
}

#[test]
fn the_diagram_check_sees_what_it_checks() {
    let text = "The layers, each depending on\n\n```\nmain.rs, cli.rs   parse\napp/              subcommands\n                  more words/\ncopy/  retention/ engines\nreference/  error.rs leaves\n```\n";
    let r = rows(text, "The layers");
    assert_eq!(
        r,
        vec![
            vec!["main", "cli"],
            vec!["app"],
            vec!["copy", "retention"],
            vec!["reference", "error"]
        ]
    );
    let graph = |edges: &[(&str, &[&str])]| -> BTreeMap<String, BTreeSet<String>> {
        edges
            .iter()
            .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
            .collect()
    };
    let good = graph(&[
        ("cli", &[]),
        ("app", &["copy", "error"]),
        ("copy", &["reference"]),
        ("retention", &[]),
        ("reference", &[]),
        ("error", &[]),
    ]);
    assert_eq!(mismatches(&r, &good), Vec::<String>::new());
    let bad = graph(&[
        ("copy", &["retention", "app"]),
        ("inuse", &[]),
        ("reference", &[]),
    ]);
    assert_eq!(
        mismatches(&r, &bad),
        vec![
            "copy uses app, drawn beside or above it",
            "copy uses retention, drawn beside or above it",
            "inuse is not drawn",
        ]
    );
}
