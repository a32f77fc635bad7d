//! The checkpoint a subcommand opens: where it is, and why it cannot be used.

use std::path::{Path, PathBuf};

use crate::plan::{Plan, DEFAULT_STATE};

/// The state file: `--state`, else the plan's `state`, else `state/ferry.db`.
pub fn state_path(flag: Option<&Path>, plan: Option<&Plan>) -> PathBuf {
    flag.map(Path::to_path_buf)
        .or_else(|| plan.and_then(|p| p.state.clone()))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE))
}

/// The checkpoint could not be opened or created: a path where no file can be (under
/// `/proc`, below a regular file), a directory in its place, no permission, a file that is
/// not SQLite, a newer schema, another run holding it. A configuration error (exit 2), told
/// apart from a write that fails once the run is under way (exit 1).
#[derive(Debug, thiserror::Error)]
pub enum StateUnusable {
    /// Says the path and the reason itself.
    #[error(transparent)]
    Open(#[from] crate::state::StateError),
    /// `ferry status` on a state file that does not exist.
    #[error("no state file at {}: nothing has run with it yet (ferry run creates it)", .0.display())]
    Missing(PathBuf),
}
