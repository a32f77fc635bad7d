//! Where an OCI layout may be written: a missing or empty directory, or a layout. ferry never
//! scatters `blobs/`, `index.json` and `oci-layout` among someone's own files (a target such as
//! `oci:/home/me/projects`): a directory of other files is refused before anything is written
//! there, by the run, by `ferry plan` (through the overlay) and by `ferry check --online`.

use std::ffi::OsStr;
use std::io;
use std::path::Path;

use crate::registry::error::{RegistryError, Result};

/// How deep below a target directory layouts are looked for (nested layouts, as a wildcard
/// target makes for repositories `team/api` and `team/api/worker`).
const MAX_DEPTH: usize = 6;

/// May a layout be written at `repo`? Yes when the directory is missing, is an OCI image
/// layout (it has an `oci-layout` file), or holds nothing but directories of that kind
/// (empty ones, nested layouts) and a layout writer's own temporary files; a directory of
/// other files is refused, naming the first one found.
pub fn check(repo: &str) -> Result<()> {
    let dir = Path::new(repo);
    match foreign(dir, MAX_DEPTH) {
        Ok(None) => Ok(()),
        Ok(Some(found)) => Err(RegistryError::NotALayout {
            path: dir.to_path_buf(),
            found,
        }),
        Err(e) => Err(RegistryError::io(dir, e)),
    }
}

/// The first entry of `dir` (a path relative to it) that no layout writer put there, or
/// `None`.
fn foreign(dir: &Path, depth: usize) -> io::Result<Option<String>> {
    let entries = match std::fs::read_dir(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        r => r?,
    };
    let layout = || dir.join("oci-layout").is_file();
    if layout() {
        return Ok(None);
    }
    for e in entries {
        let e = e?;
        let name = e.file_name();
        // Not followed: a link may lead anywhere, so it is someone's.
        let is_dir = match e.file_type() {
            Ok(t) => t.is_dir(),
            // Gone since it was listed: a writer's temporary file.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let found = if is_dir && depth > 0 {
            foreign(&e.path(), depth - 1)?
                .map(|below| format!("{}/{below}", name.to_string_lossy()))
        } else if is_dir || !temporary(&name) {
            Some(name.to_string_lossy().into_owned())
        } else {
            None
        };
        // A writer beside this one may have made it a layout since: its `oci-layout` comes
        // before any file it writes there, so asked again, it tells.
        if found.is_some() {
            return Ok(found.filter(|_| !layout()));
        }
    }
    Ok(None)
}

/// What a layout writer leaves while it creates a layout's first files (`.oci-layout.…tmp`,
/// `.index.json.…tmp`): a writer beside this one, or one interrupted.
fn temporary(name: &OsStr) -> bool {
    let name = name.to_string_lossy();
    name.ends_with(".tmp") && (name.starts_with(".oci-layout.") || name.starts_with(".index.json."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_empty_layouts_and_nested_layouts_may_be_written_other_files_not() {
        let root = tempfile::tempdir().unwrap();
        let at = |rel: &str| root.path().join(rel).display().to_string();
        assert!(check(&at("missing")).is_ok());
        std::fs::create_dir_all(root.path().join("empty/blobs")).unwrap();
        assert!(check(&at("empty")).is_ok());
        std::fs::write(root.path().join("empty/.oci-layout.1.0.tmp"), b"").unwrap();
        assert!(check(&at("empty")).is_ok(), "a writer's temporary file");
        std::fs::create_dir_all(root.path().join("layout/blobs/sha256")).unwrap();
        std::fs::write(root.path().join("layout/oci-layout"), b"{}").unwrap();
        std::fs::write(root.path().join("layout/blobs/sha256/ab"), b"x").unwrap();
        std::fs::write(root.path().join("layout/README"), b"x").unwrap();
        assert!(
            check(&at("layout")).is_ok(),
            "a layout, whatever else it holds"
        );
        std::fs::create_dir_all(root.path().join("parent/child")).unwrap();
        std::fs::write(root.path().join("parent/child/oci-layout"), b"{}").unwrap();
        assert!(
            check(&at("parent")).is_ok(),
            "a directory of nested layouts"
        );

        std::fs::create_dir_all(root.path().join("mine/src")).unwrap();
        std::fs::write(root.path().join("mine/src/main.rs"), b"").unwrap();
        match check(&at("mine")) {
            Err(RegistryError::NotALayout { found, .. }) => assert_eq!(found, "src/main.rs"),
            other => panic!("{other:?}"),
        }
        std::fs::create_dir_all(root.path().join("bare")).unwrap();
        std::fs::write(root.path().join("bare/index.json"), b"{}").unwrap();
        assert!(
            check(&at("bare")).is_err(),
            "an index.json without oci-layout is someone's file"
        );
    }
}
