//! A GitOps repository's recent history as a source of images in use: the files matching
//! the plan's patterns in each of the last N commits of a local checkout, read through the
//! git CLI (`git log`, `git ls-tree`, `git cat-file`), so an ArgoCD rollback to any of those
//! commits finds its images. References are found as in GitOps files ([`super::gitops`]).
//! Fails closed: not a repository, git missing, a pattern that matches nothing at HEAD, or a
//! shallow clone holding fewer commits than asked.

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;

use async_trait::async_trait;

use super::error::{GitError, Reason, SourceError};
use super::gitops::references;
use super::sources::GitSource;
use super::uses::{Source, Use};

/// One `[in_use].git` entry.
pub struct History {
    settings: GitSource,
}

impl History {
    pub fn new(settings: GitSource) -> History {
        History { settings }
    }
}

#[async_trait]
impl Source for History {
    async fn uses(&self) -> Result<Vec<Use>, SourceError> {
        let settings = self.settings.clone();
        let name = format!("in_use.git (plan line {})", settings.line);
        let fail = |reason: GitError| SourceError {
            source_name: name.clone(),
            reason: Reason::Git(reason),
        };
        tokio::task::spawn_blocking(move || read(&settings))
            .await
            .unwrap_or_else(|source| Err(GitError::Stopped { source }))
            .map_err(fail)
    }
}

/// Every reference in the matching files of the last `revisions` commits, newest first; a
/// file's content seen at a newer commit is not read again.
fn read(s: &GitSource) -> Result<Vec<Use>, GitError> {
    if !s.path.is_dir() {
        return Err(GitError::NoCheckout);
    }
    let options = glob::MatchOptions {
        require_literal_separator: true,
        ..glob::MatchOptions::default()
    };
    let patterns = (s.files.iter())
        .map(|p| glob::Pattern::new(p).map_err(|e| GitError::Pattern { reason: e.msg }))
        .collect::<Result<Vec<_>, _>>()?;
    let log = git(
        &s.path,
        &["log", &format!("-n{}", s.revisions), "--format=%H"],
    )?;
    let commits: Vec<&str> = log.lines().filter(|l| !l.is_empty()).collect();
    if commits.len() < s.revisions
        && git(&s.path, &["rev-parse", "--is-shallow-repository"])?.trim() == "true"
    {
        return Err(GitError::Shallow {
            have: commits.len(),
        });
    }
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (age, commit) in commits.iter().enumerate() {
        let tree = git(&s.path, &["ls-tree", "-r", "-z", commit])?;
        let mut matched = vec![false; patterns.len()];
        for entry in tree.split('\0').filter(|e| !e.is_empty()) {
            // `<mode> blob <oid>\t<path>`
            let Some((meta, path)) = entry.split_once('\t') else {
                continue;
            };
            let mut meta = meta.split(' ');
            let (Some("blob"), Some(oid)) = (meta.nth(1), meta.next()) else {
                continue;
            };
            let hits: Vec<usize> = (0..patterns.len())
                .filter(|&i| patterns[i].matches_with(path, options))
                .collect();
            if hits.is_empty() {
                continue;
            }
            hits.iter().for_each(|&i| matched[i] = true);
            if !seen.insert(oid.to_string()) {
                continue;
            }
            let text = git(&s.path, &["cat-file", "blob", oid])?;
            let at = at(commit, age);
            for (_, image) in references(&text) {
                out.push(Use {
                    image: image.to_string(),
                    by: format!("referenced in {path} at {at}"),
                });
            }
        }
        if age == 0 {
            if let Some(i) = matched.iter().position(|m| !m) {
                return Err(GitError::NoMatch { index: i });
            }
        }
    }
    Ok(out)
}

/// `a1b2c3d (HEAD)`, `a1b2c3d, 1 commit ago`, `a1b2c3d, 3 commits ago`.
fn at(commit: &str, age: usize) -> String {
    let short = &commit[..commit.len().min(7)];
    match age {
        0 => format!("{short} (HEAD)"),
        1 => format!("{short}, 1 commit ago"),
        n => format!("{short}, {n} commits ago"),
    }
}

/// `git -C dir ARGS`' standard output, or why not.
fn git(dir: &Path, args: &[&str]) -> Result<String, GitError> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .map_err(|source| GitError::Spawn { source })?;
    if !out.status.success() {
        // git's message may quote the checkout's path (a plan value): the first line only,
        // with the path taken out.
        let stderr = String::from_utf8_lossy(&out.stderr);
        let first = stderr.lines().next().unwrap_or_default();
        let shown = first.replace(&*dir.to_string_lossy(), "<path>");
        return Err(GitError::Failed {
            command: args.first().copied().unwrap_or_default().to_string(),
            message: shown,
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_say_how_old_the_commit_is() {
        let c = "a1b2c3d4e5f6";
        assert_eq!(at(c, 0), "a1b2c3d (HEAD)");
        assert_eq!(at(c, 1), "a1b2c3d, 1 commit ago");
        assert_eq!(at(c, 3), "a1b2c3d, 3 commits ago");
    }

    #[test]
    fn a_directory_that_is_no_repository_fails_closed() {
        let dir = tempfile::tempdir().unwrap();
        let s = GitSource {
            path: dir.path().to_path_buf(),
            files: vec!["*.yaml".into()],
            revisions: 3,
            line: 4,
        };
        let e = read(&s).unwrap_err();
        assert!(matches!(e, GitError::Failed { .. }), "{e:?}");
        assert!(
            !e.to_string().contains(&*dir.path().to_string_lossy()),
            "{e}"
        );
        let s = GitSource {
            path: dir.path().join("missing"),
            ..s
        };
        assert!(matches!(read(&s).unwrap_err(), GitError::NoCheckout));
    }
}
