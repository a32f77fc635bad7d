//! GitOps files: image references in manifests and Helm values (`deploy/**/*.yaml`), found
//! as text: any `host/repository:tag` or `…@sha256:<hex>` string, with the file and line that
//! names it. A pattern that matches no file, or a file that cannot be read, fails the source:
//! a renamed directory must not silently protect nothing.

use std::sync::LazyLock;

use async_trait::async_trait;
use regex::Regex;

use super::error::{FilesError, Reason, SourceError};
use super::sources::FilePattern;
use super::uses::{Source, Use};

/// `registry/repo[:tag][@sha256:…]` with at least one `/` and a tag or a digest. Checked
/// again (and normalised) by [`super::Target::of`].
static IMAGE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?x)
        [a-zA-Z0-9][a-zA-Z0-9._-]*(?::[0-9]{1,5})?      # host or first component
        (?:/[a-z0-9][a-z0-9._-]*)+                       # path
        (?:
            :[A-Za-z0-9_][A-Za-z0-9._-]{0,127}(?:@sha256:[a-f0-9]{64})?
          | @sha256:[a-f0-9]{64}
        )",
    )
    .expect("static regex")
});

/// Files matching the plan's patterns, relative to the working directory.
pub struct FileSource {
    patterns: Vec<FilePattern>,
}

impl FileSource {
    pub fn new(patterns: Vec<FilePattern>) -> FileSource {
        FileSource { patterns }
    }
}

#[async_trait]
impl Source for FileSource {
    async fn uses(&self) -> Result<Vec<Use>, SourceError> {
        let patterns = self.patterns.clone();
        tokio::task::spawn_blocking(move || scan(&patterns))
            .await
            .unwrap_or_else(|source| {
                Err(SourceError {
                    source_name: "in_use.files".into(),
                    reason: Reason::Files(FilesError::Stopped { source }),
                })
            })
    }
}

/// The image references in `text`, each with its line number (from 1).
pub(super) fn references(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .flat_map(|(n, line)| IMAGE.find_iter(line).map(move |m| (n + 1, m.as_str())))
}

fn scan(patterns: &[FilePattern]) -> Result<Vec<Use>, SourceError> {
    let mut out = Vec::new();
    for p in patterns {
        // Never the pattern itself in a message: the line of the plan names it.
        let name = format!("in_use.files (plan line {})", p.line);
        let fail = |reason: FilesError| SourceError {
            source_name: name.clone(),
            reason: Reason::Files(reason),
        };
        let paths =
            glob::glob(&p.pattern).map_err(|e| fail(FilesError::Pattern { reason: e.msg }))?;
        let mut matched = 0;
        for entry in paths {
            let path = entry.map_err(|e| {
                fail(FilesError::Walk {
                    path: e.path().to_path_buf(),
                    source: e.into(),
                })
            })?;
            if !path.is_file() {
                continue;
            }
            matched += 1;
            let text = std::fs::read(&path).map_err(|source| {
                fail(FilesError::Read {
                    path: path.clone(),
                    source,
                })
            })?;
            for (n, image) in references(&String::from_utf8_lossy(&text)) {
                out.push(Use {
                    image: image.to_string(),
                    by: format!("referenced in {}:{n}", path.display()),
                });
            }
        }
        if matched == 0 {
            return Err(fail(FilesError::NoMatch));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_found_with_their_line() {
        let dir = tempfile::tempdir().unwrap();
        let d = "a".repeat(64);
        std::fs::create_dir_all(dir.path().join("deploy/api")).unwrap();
        std::fs::write(
            dir.path().join("deploy/api/deploy.yaml"),
            format!(
                "spec:\n  containers:\n    - image: ghcr.io/org/api:v1.2.0\n    - image: \"docker.io/library/nginx@sha256:{d}\"\n# not: version 1.2, a/b\n"
            ),
        )
        .unwrap();
        let pattern = format!("{}/deploy/**/*.yaml", dir.path().display());
        let uses = scan(&[FilePattern { pattern, line: 3 }]).unwrap();
        let found: Vec<(&str, String)> = uses
            .iter()
            .map(|u| {
                (
                    u.image.as_str(),
                    u.by.rsplit(':').next().unwrap().to_string(),
                )
            })
            .collect();
        assert_eq!(
            found,
            vec![
                ("ghcr.io/org/api:v1.2.0", "3".to_string()),
                (
                    &*format!("docker.io/library/nginx@sha256:{d}"),
                    "4".to_string()
                ),
            ]
        );
    }

    #[test]
    fn a_pattern_that_matches_nothing_fails_the_source() {
        let dir = tempfile::tempdir().unwrap();
        let pattern = format!("{}/nothing/*.yaml", dir.path().display());
        let e = scan(&[FilePattern { pattern, line: 7 }]).unwrap_err();
        let e = crate::error::chain(&e);
        assert!(e.starts_with("in_use.files (plan line 7): "), "{e}");
        assert!(e.contains("matches no file"), "{e}");
    }
}
