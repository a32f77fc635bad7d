//! The report's `pull_budget` rows: each registry whose pull budget (Docker Hub) ran out in
//! the run, parking its images not started (issue 25). Plain data.

use serde::{Deserialize, Serialize};

/// A registry whose pull budget ran out in the run.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ReportBudget {
    /// `docker.io`.
    pub registry: String,
    /// Pulls left, of `limit` per `window_seconds`, when it parked.
    pub remaining: u64,
    pub limit: u64,
    pub window_seconds: u64,
    /// When the whole budget is back at the latest (RFC 3339, UTC): a window after the run
    /// first saw it too small for what was left.
    pub resume_after: String,
    /// Images not started because of it (the `parked` items).
    pub parked: usize,
}
