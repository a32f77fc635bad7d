//! `--shard INDEX/COUNT`: a stable, disjoint share of the repositories for one pod of a
//! Kubernetes Indexed Job. A repository belongs to shard `fnv1a(source repository) % COUNT`,
//! so every shard computes the same partition without talking to the others.

use std::fmt;
use std::path::{Path, PathBuf};

/// One shard of COUNT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// Why `--shard`/`--shards` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    #[error("--shard {given:?}: {why}")]
    Flag { given: String, why: &'static str },
    #[error(
        "--shards needs JOB_COMPLETION_INDEX (set in each pod of a Kubernetes Indexed Job) or --shard INDEX/COUNT"
    )]
    NoIndex,
    #[error("JOB_COMPLETION_INDEX={0:?} is not a number")]
    IndexNotANumber(String),
    #[error("shard {0}: INDEX must be below COUNT, and COUNT at least 1")]
    OutOfRange(Shard),
}

/// FNV-1a, 64 bits: stable across builds and platforms (unlike std's hasher).
fn fnv1a(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

impl Shard {
    /// `--shard 2/8`, or `--shards 8` with the index from `JOB_COMPLETION_INDEX` (set by
    /// Kubernetes in each pod of an Indexed Job).
    pub fn resolve(shard: Option<&str>, shards: Option<u32>) -> Result<Option<Shard>, ShardError> {
        let parsed = match (shard, shards) {
            (Some(s), _) => {
                let bad = |why| ShardError::Flag {
                    given: s.to_string(),
                    why,
                };
                let (i, c) = s
                    .split_once('/')
                    .ok_or_else(|| bad("write INDEX/COUNT, as in 2/8"))?;
                let index = i.trim().parse().map_err(|_| bad("INDEX is not a number"))?;
                let count = c.trim().parse().map_err(|_| bad("COUNT is not a number"))?;
                Shard { index, count }
            }
            (None, Some(count)) => {
                let env = std::env::var("JOB_COMPLETION_INDEX").map_err(|_| ShardError::NoIndex)?;
                let index = env
                    .trim()
                    .parse()
                    .map_err(|_| ShardError::IndexNotANumber(env.clone()))?;
                Shard { index, count }
            }
            (None, None) => return Ok(None),
        };
        if parsed.count == 0 || parsed.index >= parsed.count {
            return Err(ShardError::OutOfRange(parsed));
        }
        Ok(Some(parsed))
    }

    /// Does this shard own the repository (`registry/repo`, as the source names it)?
    pub fn owns(&self, repository: &str) -> bool {
        fnv1a(repository) % u64::from(self.count) == u64::from(self.index)
    }

    /// Each shard keeps its own checkpoint: `state/ferry.db` -> `state/ferry.shard-2-of-8.db`.
    pub fn state_path(&self, path: &Path) -> PathBuf {
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "ferry".into());
        let ext = path
            .extension()
            .map(|e| format!(".{}", e.to_string_lossy()))
            .unwrap_or_default();
        path.with_file_name(format!(
            "{stem}.shard-{}-of-{}{ext}",
            self.index, self.count
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_partition_exactly() {
        let repos: Vec<String> = (0..500)
            .map(|i| format!("docker.io/org/repo-{i}"))
            .collect();
        for count in [1, 2, 3, 8] {
            let mut owners = vec![0usize; repos.len()];
            for index in 0..count {
                let s = Shard { index, count };
                for (i, r) in repos.iter().enumerate() {
                    if s.owns(r) {
                        owners[i] += 1;
                    }
                }
            }
            assert!(owners.iter().all(|&n| n == 1), "count {count}");
        }
        // Stable: the partition never changes between builds.
        assert_eq!(fnv1a("docker.io/org/repo-0"), 0x6d3b_faae_737a_47d4);
    }

    #[test]
    fn parsing_and_paths() {
        assert_eq!(
            Shard::resolve(Some("2/8"), None).unwrap(),
            Some(Shard { index: 2, count: 8 })
        );
        assert!(Shard::resolve(Some("8/8"), None).is_err());
        assert!(Shard::resolve(Some("x"), None).is_err());
        assert_eq!(Shard::resolve(None, None).unwrap(), None);
        let s = Shard { index: 2, count: 8 };
        assert_eq!(
            s.state_path(Path::new("state/ferry.db")),
            PathBuf::from("state/ferry.shard-2-of-8.db")
        );
    }
}
