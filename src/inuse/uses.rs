//! What a source of images in use is ([`Source`]), what it finds ([`Use`]) and why it may
//! fail ([`SourceError`]). A leaf of `inuse`: each source implements the trait here.

use async_trait::async_trait;

/// One image reference something uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Use {
    /// As written (`nginx:1.27`, `ghcr.io/org/api@sha256:…`).
    pub image: String,
    /// Who uses it, for people: `pod prod/api-7d9f8 (container api), cluster prod-eu`,
    /// `deploy/api.yaml:14`.
    pub by: String,
}

/// Why a source could not be read whole.
#[derive(Debug, thiserror::Error)]
#[error("{source_name}: {reason}")]
pub struct SourceError {
    /// The source as the plan names it (`kubernetes context prod-eu (plan.toml:12)`).
    pub source_name: String,
    pub reason: String,
}

/// Somewhere references of images in use come from.
#[async_trait]
pub trait Source: Send + Sync {
    /// Every reference, or an error when any part could not be read (a partial answer
    /// protects too little).
    async fn uses(&self) -> Result<Vec<Use>, SourceError>;
}
