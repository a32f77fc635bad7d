//! The sources of images in use that the engine reads: clusters, GitOps files, ArgoCD
//! instances, git checkouts, and the aliases that map a mirror's names back to the registry
//! they stand for. The plan layer builds these from its `[in_use]` table.

use std::path::PathBuf;

/// Where the references of images in use come from (a plan's `[in_use]`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InUse {
    pub kubernetes: Vec<KubeSource>,
    /// Glob patterns, relative to the working directory.
    pub files: Vec<FilePattern>,
    /// Name prefix (a mirror's `host[/path]`) -> the registry host it stands for.
    pub aliases: Vec<(String, String)>,
    /// ArgoCD instances: their Applications and Image Updater settings.
    pub argocd: Vec<ArgoSource>,
    /// Git checkouts whose recent history is read.
    pub git: Vec<GitSource>,
}

impl InUse {
    pub fn is_empty(&self) -> bool {
        self.kubernetes.is_empty()
            && self.files.is_empty()
            && self.argocd.is_empty()
            && self.git.is_empty()
    }
}

/// One cluster to ask.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KubeSource {
    pub config: KubeConfig,
    /// Only these namespaces (empty: all).
    pub namespaces: Vec<String>,
    /// Where it is written, for messages (`plan.toml:12`).
    pub line: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KubeConfig {
    /// The pod's service account (the CronJob case).
    InCluster,
    /// A kubeconfig file (`~` is the home directory) and one of its contexts (none: its
    /// current context).
    File {
        path: PathBuf,
        context: Option<String>,
    },
}

/// One `files` pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FilePattern {
    pub pattern: String,
    pub line: usize,
}

/// One ArgoCD instance to ask (its Applications and `ImageUpdater` resources live in one
/// namespace, `argocd` by default).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArgoSource {
    pub config: KubeConfig,
    pub namespace: String,
    pub line: usize,
}

/// One git checkout: the files matching `files` in each of its last `revisions` commits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GitSource {
    /// The checkout's directory, relative to the working directory.
    pub path: PathBuf,
    /// Glob patterns of paths inside the repository (`apps/**/*.yaml`).
    pub files: Vec<String>,
    pub revisions: usize,
    pub line: usize,
}
