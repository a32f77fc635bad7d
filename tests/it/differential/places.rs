//! Where a case runs: OCI layouts in a temporary directory or real registries, and how each
//! place is seeded, read and spelled in a plan.

use super::*;

/// Where a case's repositories live. Repositories are named by area and path (`src/a`,
/// `dst/team/c`, `prod/b`): `src/` holds the sources, `dst/` and `prod/` the targets.
pub(super) enum Place<'a> {
    /// Directories of OCI layouts under `root`.
    Layouts { root: PathBuf },
    /// `src/` in one registry, the rest in the other, every repository under `prefix`.
    Registries {
        sources: &'a Registry,
        targets: &'a Registry,
        prefix: String,
    },
}

/// A reference as the report writes a target: a tag or a digest in a repository.
pub(super) struct Target<'t> {
    pub(super) repo: &'t str,
    pub(super) tag: Option<&'t str>,
    pub(super) digest: Option<&'t str>,
}

pub(super) fn split_target(target: &str) -> Target<'_> {
    if let Some((repo, digest)) = target.split_once('@') {
        return Target {
            repo,
            tag: None,
            digest: Some(digest),
        };
    }
    let (repo, tag) = target
        .rsplit_once(':')
        .unwrap_or_else(|| panic!("a tag in target {target}"));
    Target {
        repo,
        tag: Some(tag),
        digest: None,
    }
}

/// The digest `index.json` of the layout at `dir` lists for `tag`.
pub(super) fn layout_tag(dir: &Path, tag: &str) -> Option<String> {
    let index: Value = serde_json::from_slice(&std::fs::read(dir.join("index.json")).ok()?)
        .expect("index.json is JSON");
    index["manifests"]
        .as_array()?
        .iter()
        .find(|d| d["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .and_then(|d| d["digest"].as_str().map(str::to_string))
}

/// What the generator makes at a place.
#[derive(Clone, Copy)]
pub(super) struct Shape {
    /// `platform_mode = "sparse"`: a registry may refuse an index whose children are missing
    /// (CNCF distribution does), which the plan cannot know and says so (`uncertain`): the
    /// comparison would have nothing to compare.
    pub(super) sparse: bool,
    /// A child of an index tagged, or pinned by digest, on its own beside its index (it once
    /// made ferry PUT an index and its child at once: see
    /// `seeds_15_18_21_an_index_pushed_while_its_child_is_tagged_in_the_same_repository`).
    pub(super) lone_children: bool,
    /// One layout directory spelled two ways in one plan (`ROOT//dst/a`, `ROOT/./dst/a`),
    /// which ferry once took for two repositories (see `seed_11_…`, `seed_64_…`, `seed_61_…`).
    pub(super) respelled: bool,
}

impl Place<'_> {
    pub(super) fn is_registry(&self) -> bool {
        matches!(self, Place::Registries { .. })
    }

    pub(super) fn shape(&self) -> Shape {
        let layouts = !self.is_registry();
        Shape {
            sparse: layouts,
            lone_children: true,
            respelled: layouts,
        }
    }

    /// The plan's reference to a repository.
    pub(super) fn reference(&self, repo: &str) -> String {
        match self {
            Place::Layouts { root } => format!("oci:{}/{repo}", root.display()),
            Place::Registries {
                sources,
                targets,
                prefix,
            } => {
                let host = if repo.starts_with("src/") {
                    sources
                } else {
                    targets
                };
                format!("{}/{prefix}/{repo}", host.addr)
            }
        }
    }

    /// Now and then another spelling of the same layout directory (`ROOT/./dst/a`,
    /// `ROOT//dst/a`), as people write paths: one directory must stay one repository.
    pub(super) fn respell(&self, g: &mut Gen, reference: &str) -> String {
        let Place::Layouts { root } = self else {
            return reference.to_string();
        };
        if !self.shape().respelled {
            return reference.to_string();
        }
        let root = root.display().to_string();
        match g.below(20) {
            0 => reference.replacen(&format!("{root}/"), &format!("{root}/./"), 1),
            1 => reference.replacen(&format!("{root}/"), &format!("{root}//"), 1),
            _ => reference.to_string(),
        }
    }

    /// Every repository under `area` (`src/`, `dst/`), as a wildcard.
    pub(super) fn wildcard(&self, area: &str) -> String {
        format!("{}*", self.reference(area))
    }

    /// Write a repository: tagged images, and untagged ones (referrers a fallback index
    /// names) first, as a registry needs what an index lists before the index.
    pub(super) async fn write(&self, repo: &str, tagged: &[(String, Image)], untagged: &[Image]) {
        match self {
            Place::Layouts { root } => {
                let dir = root.join(repo);
                let refs: Vec<(&str, &Image)> =
                    tagged.iter().map(|(t, i)| (t.as_str(), i)).collect();
                write_oci_layout(&dir, &refs);
                for image in untagged {
                    write_layout_blobs(&dir, image);
                }
            }
            Place::Registries { .. } => {
                let (registry, path) = self.registry_repo(&self.reference(repo));
                let pusher = registry.pusher();
                for image in untagged {
                    pusher.push(&path, &image.digest, image).await;
                }
                for (tag, image) in tagged {
                    pusher.push(&path, tag, image).await;
                }
            }
        }
    }

    /// The registry and repository path of a registry reference's repository part.
    pub(super) fn registry_repo(&self, repo_ref: &str) -> (&Registry, String) {
        let Place::Registries {
            sources, targets, ..
        } = self
        else {
            unreachable!("a registry reference in a layout case: {repo_ref}")
        };
        let (host, path) = repo_ref.split_once('/').expect("HOST/REPO");
        let registry = [*sources, *targets]
            .into_iter()
            .find(|r| r.addr == host)
            .unwrap_or_else(|| panic!("no registry {host}"));
        (registry, path.to_string())
    }

    /// What is at a reported target: the digest its tag points at, or for a digest, the
    /// digest when its manifest is there.
    pub(super) async fn lookup(&self, target: &str) -> Option<String> {
        let t = split_target(target);
        match self {
            Place::Layouts { .. } => {
                let dir = Path::new(t.repo.strip_prefix("oci:").expect("an oci: target"));
                match (t.tag, t.digest) {
                    (Some(tag), _) => layout_tag(dir, tag),
                    (_, Some(digest)) => dir
                        .join("blobs/sha256")
                        .join(hex_of(digest))
                        .is_file()
                        .then(|| digest.to_string()),
                    _ => None,
                }
            }
            Place::Registries { .. } => {
                let (registry, path) = self.registry_repo(t.repo);
                let reference = t.tag.or(t.digest).expect("a tag or a digest");
                registry
                    .pusher()
                    .manifest(&path, reference)
                    .await
                    .map(|(_, _, digest)| digest)
            }
        }
    }

    /// The digests the fallback index of `subject` lists in the repository `repo_ref`.
    pub(super) async fn fallback_entries(&self, repo_ref: &str, subject: &str) -> Vec<String> {
        let tag = format!("sha256-{}", hex_of(subject));
        let bytes = match self {
            Place::Layouts { .. } => {
                let dir = Path::new(repo_ref.strip_prefix("oci:").expect("an oci: target"));
                layout_tag(dir, &tag)
                    .and_then(|d| std::fs::read(dir.join("blobs/sha256").join(hex_of(&d))).ok())
            }
            Place::Registries { .. } => {
                let (registry, path) = self.registry_repo(repo_ref);
                registry
                    .pusher()
                    .manifest(&path, &tag)
                    .await
                    .map(|(_, b, _)| b)
            }
        };
        let Some(bytes) = bytes else {
            return Vec::new();
        };
        let index: Value = serde_json::from_slice(&bytes).expect("a fallback index is JSON");
        index["manifests"]
            .as_array()
            .map(|m| {
                m.iter()
                    .filter_map(|d| d["digest"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Take a tag away at a target, as another tool would: from a layout's `index.json`; in
    /// a registry (which deletes manifests, not tags) with its manifest and every tag on it.
    pub(super) async fn remove(&self, target: &str, digest: &str) {
        let t = split_target(target);
        let tag = t.tag.expect("a tag target");
        match self {
            Place::Layouts { .. } => {
                let path = Path::new(t.repo.strip_prefix("oci:").expect("an oci: target"))
                    .join("index.json");
                let mut index: Value =
                    serde_json::from_slice(&std::fs::read(&path).expect("index.json"))
                        .expect("index.json is JSON");
                index["manifests"]
                    .as_array_mut()
                    .expect("manifests")
                    .retain(|d| d["annotations"]["org.opencontainers.image.ref.name"] != tag);
                std::fs::write(&path, serde_json::to_vec_pretty(&index).expect("json"))
                    .expect("write index.json");
            }
            Place::Registries { .. } => {
                let (registry, path) = self.registry_repo(t.repo);
                let resp = registry
                    .pusher()
                    .send(
                        Method::DELETE,
                        &format!("/v2/{path}/manifests/{digest}"),
                        &[],
                        None,
                    )
                    .await;
                assert_eq!(resp.status(), 202, "DELETE {target} ({digest})");
            }
        }
    }

    /// Take away a piece below one placed tag of `rows` at its target: a child manifest of an
    /// index, else a layer (or the config) of an image. `None` when no row has one.
    pub(super) async fn take_part(&self, g: &mut Gen, rows: &[Row]) -> Option<Part> {
        let placed: Vec<&Row> = rows
            .iter()
            .filter(|r| {
                ["copied", "present", "unchanged"].contains(&r.action.as_str())
                    && split_target(&r.target).tag.is_some()
            })
            .collect();
        if placed.is_empty() {
            return None;
        }
        let row = placed[g.below(placed.len())];
        let repo = split_target(&row.target).repo.to_string();
        let top = self.manifest(&repo, row.placed_digest()?).await?;
        let below: Vec<(String, bool)> = match top["manifests"].as_array() {
            Some(children) => children
                .iter()
                .filter_map(|c| Some((c["digest"].as_str()?.to_string(), true)))
                .collect(),
            None => top["layers"]
                .as_array()
                .into_iter()
                .flatten()
                .chain(std::iter::once(&top["config"]))
                .filter_map(|b| Some((b["digest"].as_str()?.to_string(), false)))
                .collect(),
        };
        let mut present = Vec::new();
        for (digest, manifest) in below {
            let part = Part {
                target: row.target.clone(),
                repo: repo.clone(),
                digest,
                manifest,
            };
            if self.has_part(&part).await {
                present.push(part);
            }
        }
        if present.is_empty() {
            return None;
        }
        let part = present.swap_remove(g.below(present.len()));
        match self {
            Place::Layouts { .. } => {
                let dir = Path::new(part.repo.strip_prefix("oci:").expect("an oci: target"));
                std::fs::remove_file(dir.join("blobs/sha256").join(hex_of(&part.digest)))
                    .expect("remove a layout blob");
            }
            Place::Registries { .. } => {
                let (registry, path) = self.registry_repo(&part.repo);
                let what = if part.manifest { "manifests" } else { "blobs" };
                let resp = registry
                    .pusher()
                    .send(
                        Method::DELETE,
                        &format!("/v2/{path}/{what}/{}", part.digest),
                        &[],
                        None,
                    )
                    .await;
                assert_eq!(resp.status(), 202, "DELETE {path} {what} {}", part.digest);
            }
        }
        Some(part)
    }

    /// A manifest at a target repository, by digest.
    pub(super) async fn manifest(&self, repo_ref: &str, digest: &str) -> Option<Value> {
        let bytes = match self {
            Place::Layouts { .. } => {
                let dir = Path::new(repo_ref.strip_prefix("oci:").expect("an oci: target"));
                std::fs::read(dir.join("blobs/sha256").join(hex_of(digest))).ok()?
            }
            Place::Registries { .. } => {
                let (registry, path) = self.registry_repo(repo_ref);
                registry.pusher().manifest(&path, digest).await?.1
            }
        };
        serde_json::from_slice(&bytes).ok()
    }

    /// Is the piece at its target repository?
    pub(super) async fn has_part(&self, part: &Part) -> bool {
        match self {
            Place::Layouts { .. } => {
                let dir = Path::new(part.repo.strip_prefix("oci:").expect("an oci: target"));
                dir.join("blobs/sha256")
                    .join(hex_of(&part.digest))
                    .is_file()
            }
            Place::Registries { .. } => {
                let (registry, path) = self.registry_repo(&part.repo);
                match part.manifest {
                    true => registry
                        .pusher()
                        .manifest(&path, &part.digest)
                        .await
                        .is_some(),
                    false => registry.pusher().blob_exists(&path, &part.digest).await,
                }
            }
        }
    }

    /// Did taking `removed` away take `target` (at `digest`) too? In a layout only that tag
    /// went; in a registry the manifest went, with every tag on it in that repository.
    pub(super) fn took_with(&self, removed: &Removed, target: &str, digest: &str) -> bool {
        if target == removed.target {
            return true;
        }
        // In a registry the manifest went, with its tags; a manifest or blob taken away from
        // a layout (a piece below a tag) takes a by-digest item of it along.
        let same_repo = split_target(target).repo == split_target(&removed.target).repo;
        let by_digest = split_target(target).digest.is_some();
        same_repo && digest == removed.digest && (self.is_registry() || by_digest)
    }

    /// Shorter messages: the temporary root or the registry addresses as names.
    pub(super) fn short(&self, text: &str) -> String {
        match self {
            Place::Layouts { root } => text.replace(&root.display().to_string(), "$ROOT"),
            Place::Registries {
                sources, targets, ..
            } => text
                .replace(&sources.addr, "$SRC_REGISTRY")
                .replace(&targets.addr, "$DST_REGISTRY"),
        }
    }
}
