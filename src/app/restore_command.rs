//! The `ferry restore` command line that undoes a run's deletions, as a run's closing lines,
//! its report and `ferry status` print it.

use std::path::Path;

use crate::state::RunId;

/// The command that undoes run `run`'s deletions, for the run's closing lines and report:
/// with `--state` when the run's checkpoint is not the plan's own (a flag, `FERRY_STATE`, or a
/// shard's).
pub fn undo_command(plan: &Path, state: Option<&Path>, run: RunId) -> String {
    let mut line = format!("ferry restore {} --run {run}", shell_word(plan));
    if let Some(state) = state {
        line.push_str(&format!(" --state {}", shell_word(state)));
    }
    line
}

/// A path as a shell word: as it is when it needs no quoting, else in single quotes.
fn shell_word(path: &Path) -> String {
    let s = path.display().to_string();
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-+:=@,".contains(c);
    match !s.is_empty() && s.chars().all(plain) {
        true => s,
        false => format!("'{}'", s.replace('\'', r"'\''")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_undo_command_quotes_what_a_shell_would_split() {
        assert_eq!(
            undo_command(Path::new("plans/prod.toml"), None, 42),
            "ferry restore plans/prod.toml --run 42"
        );
        assert_eq!(
            undo_command(
                Path::new("my plans/it's.toml"),
                Some(Path::new("/state/ferry-2-of-8.db")),
                7
            ),
            r"ferry restore 'my plans/it'\''s.toml' --run 7 --state /state/ferry-2-of-8.db"
        );
    }
}
