//! What a source of images in use is ([`Source`]), what it finds ([`Use`]) and that it fails
//! with a [`SourceError`]. Each source implements the trait here.

use async_trait::async_trait;

use super::error::SourceError;

/// One image reference something uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Use {
    /// As written (`nginx:1.27`, `ghcr.io/org/api@sha256:…`).
    pub image: String,
    /// Who uses it, for people: `pod prod/api-7d9f8 (container api), cluster prod-eu`,
    /// `deploy/api.yaml:14`.
    pub by: String,
}

/// Somewhere references of images in use come from.
#[async_trait]
pub trait Source: Send + Sync {
    /// Every reference, or an error when any part could not be read (a partial answer
    /// protects too little).
    async fn uses(&self) -> Result<Vec<Use>, SourceError>;
}
