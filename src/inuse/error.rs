//! Why an `[in_use]` source could not be read whole: the source as the plan names it (its
//! field and line, never its value), and the typed reason, with the cause in `#[source]`. A
//! leaf: the sources return these, nothing here calls them.

use std::path::PathBuf;

/// A source that could not be read whole (so retention deletes nothing).
#[derive(Debug, thiserror::Error)]
#[error("{source_name}")]
pub struct SourceError {
    /// The source as the plan names it (`in_use.kubernetes (plan line 12)`).
    pub source_name: String,
    #[source]
    pub reason: Reason,
}

/// Why, by kind of source.
#[derive(Debug, thiserror::Error)]
pub enum Reason {
    #[error(transparent)]
    Kube(#[from] KubeError),
    #[error(transparent)]
    Files(#[from] FilesError),
    #[error(transparent)]
    Git(#[from] GitError),
}

/// Why a Kubernetes cluster could not be reached or read. No message quotes the kubeconfig's
/// contents: a parse error of the `kube` crate can quote what it could not read (which may be
/// a token), so those keep only what went wrong (`what`), not that cause. Nor does one show
/// the kubeconfig's path, a value of the plan (the source's name says which one it is); the
/// path is kept as data.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("cannot read the kubeconfig")]
    ReadKubeconfig {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The kubeconfig, or the context it is read for, cannot be used.
    #[error("{what}")]
    Kubeconfig { path: PathBuf, what: &'static str },
    /// The pod's own configuration (`in_cluster = true`) as the `kube` crate reads it.
    #[error("in-cluster configuration")]
    InCluster {
        #[source]
        source: kube::config::InClusterError,
    },
    #[error("KUBERNETES_SERVICE_HOST is not set (not running in a pod?)")]
    NoServiceHost,
    #[error("KUBERNETES_SERVICE_HOST/PORT do not make a URL")]
    ServiceUrl {
        #[source]
        source: http::uri::InvalidUri,
    },
    /// The service account's CA bundle (`ca.crt` in its directory).
    #[error("cannot read {}", path.display())]
    ReadCa {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not a PEM certificate bundle", path.display())]
    CaNotPem {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("{}: no certificate in it", path.display())]
    NoCa { path: PathBuf },
    #[error("no client for the cluster")]
    Client {
        #[source]
        source: kube::Error,
    },
    /// The API server refused a list: `why` says what the account lacks, from its status.
    #[error("listing {plural}: {why}")]
    Refused { plural: String, why: String },
    /// A list that got no answer (the API unreachable, a broken answer).
    #[error("listing {plural}")]
    List {
        plural: String,
        #[source]
        source: kube::Error,
    },
}

/// Why the GitOps files could not be read whole. Never the pattern itself: the plan line
/// names it.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    #[error("the pattern is not valid: {reason}")]
    Pattern { reason: &'static str },
    #[error("{}", path.display())]
    Walk {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the pattern matches no file (protection fails closed: nothing is deleted)")]
    NoMatch,
    #[error("scanning stopped")]
    Stopped {
        #[source]
        source: tokio::task::JoinError,
    },
}

/// Why a git checkout's history could not be read whole. Never the checkout's path or a
/// pattern: the plan line names them.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("the checkout is not a directory")]
    NoCheckout,
    #[error("a `files` pattern is not valid: {reason}")]
    Pattern { reason: &'static str },
    #[error("cannot run git (is it installed?)")]
    Spawn {
        #[source]
        source: std::io::Error,
    },
    #[error("git {command} failed: {message}")]
    Failed { command: String, message: String },
    #[error(
        "files[{index}] matches no file at HEAD (protection fails closed: nothing is deleted)"
    )]
    NoMatch { index: usize },
    #[error(
        "a shallow clone with {have} commits, fewer than `revisions` asks (fetch more history)"
    )]
    Shallow { have: usize },
    #[error("reading stopped")]
    Stopped {
        #[source]
        source: tokio::task::JoinError,
    },
}
