//! The lines a subcommand writes for people and log collectors: the text, or under
//! `--log-format json` a JSON object in the shape of tracing's JSON lines.

/// A line as `--log-format` asks: the text, or a JSON object (the shape of tracing's JSON
/// lines) for a log collector that reads every line ferry writes.
pub fn log_line(json: bool, level: &str, text: &str) -> String {
    match json {
        true => crate::report::json_line(level, text),
        false => text.to_string(),
    }
}

/// A closing line on stderr: text, or a JSON object under `--log-format json`.
pub fn emit(json: bool, level: &str, message: &str) {
    eprintln!("{}", log_line(json, level, message));
}
