//! The floors of the registry module hold (issue 23, item 3): the transport floor imports
//! nothing from the layers above it, and `auth` nothing from the clients above it.

use std::path::{Path, PathBuf};

/// The shipped code of a source file: its `#[cfg(test)]` module and comment lines left out.
fn shipped(text: &str) -> String {
    let end = text.find("#[cfg(test)]\nmod ").unwrap_or(text.len());
    text[..end]
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The modules of `above` that `code` names, by path or in a `use crate::registry::{…}` group.
fn names_of(code: &str, prefixes: &[&str], above: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for module in above {
        for prefix in prefixes {
            let path = format!("{prefix}::{module}");
            let hit = code.match_indices(&path).any(|(i, _)| {
                let after = code[i + path.len()..].chars().next();
                !after.is_some_and(|c| c.is_alphanumeric() || c == '_')
            });
            if hit {
                found.push(path);
            }
        }
        let grouped = code.match_indices("crate::registry::{").any(|(i, m)| {
            let rest = &code[i + m.len()..];
            let group = &rest[..rest.find('}').unwrap_or(rest.len())];
            group
                .split(|c: char| c == ',' || c.is_whitespace())
                .any(|n| n == *module)
        });
        if grouped {
            found.push(format!("crate::registry::{{{module}}}"));
        }
    }
    found
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read source dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs")
            && path.file_name().is_some_and(|n| n != "tests.rs")
        {
            out.push(path);
        }
    }
    out
}

fn registry_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src/registry")
}

#[test]
fn the_transport_floor_imports_nothing_above_it() {
    let above = ["auth", "http", "hosted", "credential_source"];
    let prefixes = ["crate::registry", "super::super", "super::super::super"];
    let mut wrong = Vec::new();
    for path in rust_files(&registry_dir().join("transport")) {
        let code = shipped(&std::fs::read_to_string(&path).expect("read source"));
        for name in names_of(&code, &prefixes, &above) {
            wrong.push(format!("{}: {name}", path.display()));
        }
    }
    assert!(wrong.is_empty(), "transport points up: {wrong:#?}");
}

#[test]
fn auth_imports_no_client_above_it() {
    let path = registry_dir().join("auth.rs");
    let code = shipped(&std::fs::read_to_string(&path).expect("read auth.rs"));
    let wrong = names_of(&code, &["crate::registry", "super"], &["http", "hosted"]);
    assert!(wrong.is_empty(), "auth.rs points up: {wrong:?}");
}

#[test]
fn the_floor_checks_see_what_they_check() {
    // auth.rs before issue 23 read its body limits from the HTTP client.
    let before =
        "use super::error::RegistryError;\nuse super::http::{read_limited, MAX_ERROR_BODY};\n";
    assert_eq!(
        names_of(&shipped(before), &["super"], &["http", "hosted"]),
        ["super::http"]
    );
    let grouped = "use crate::registry::{hosted, BlobStream};\n// crate::registry::auth\n";
    assert_eq!(
        names_of(&shipped(grouped), &["crate::registry"], &["auth", "hosted"]),
        ["crate::registry::{hosted}"]
    );
    // A longer name is another module; a test module is not shipped code.
    let other = "use crate::registry::http_extra::X;\n#[cfg(test)]\nmod tests { use crate::registry::http; }";
    assert!(names_of(&shipped(other), &["crate::registry"], &["http"]).is_empty());
}
