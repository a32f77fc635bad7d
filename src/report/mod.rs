//! What people see while a run goes on. The engine reports events through [`Reporter`]; the
//! implementations here print plain timestamped lines (logs, CronJobs), draw indicatif bars
//! (a terminal), or stay silent. Nothing here decides control flow or exit codes.

pub mod budget_parked;
pub mod files;
pub mod hints;
pub mod json_stream;
pub mod markdown;
pub mod metrics;
pub mod report_stream;

use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use indicatif::{HumanBytes, MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::copy::{Item, Outcome};
use crate::registry::transport::throttle::Event;

use crate::copy::Reporter;

/// One line explaining a registry event.
pub fn event_line(event: &Event) -> String {
    match event {
        Event::Waiting {
            registry,
            duration,
            reason,
        } => format!(
            "waiting {} s for {registry}: {reason}",
            duration.as_secs().max(1)
        ),
        Event::Retrying {
            registry,
            what,
            attempt,
            delay,
            error,
        } => format!(
            "retrying {what} at {registry} in {:.1} s (attempt {}): {error}",
            delay.as_secs_f64(),
            attempt + 1
        ),
    }
}

/// One log line as `--log-format json` writes it (the shape tracing-subscriber's JSON uses).
pub fn json_line(level: &str, message: &str) -> String {
    serde_json::json!({
        "timestamp": timestamp(SystemTime::now()),
        "level": level,
        "fields": {"message": message},
    })
    .to_string()
}

/// One line describing an item's outcome, for logs and bars alike.
pub fn outcome_line(item: &Item, outcome: &Outcome) -> String {
    match outcome {
        Outcome::Copied { digest, stats } => {
            let mut line = format!(
                "copied  {item} ({}, {} transferred",
                digest.short(),
                HumanBytes(stats.bytes)
            );
            if stats.mounted > 0 {
                line.push_str(&format!(", {} mounted", plural(stats.mounted, "blob")));
            }
            if stats.existing > 0 {
                line.push_str(&format!(
                    ", {} already there",
                    plural(stats.existing, "blob")
                ));
            }
            if !stats.foreign.is_empty() {
                line.push_str(&format!(
                    ", {} not copied",
                    plural(stats.foreign.len(), "non-distributable layer")
                ));
            }
            match stats.left_out {
                0 => {}
                1 => line.push_str(", 1 index child left out by `platforms`"),
                n => line.push_str(&format!(", {n} index children left out by `platforms`")),
            }
            line.push(')');
            if let Some(new) = &stats.rewritten {
                line.push_str(&format!("; rewritten: {digest} → {new}"));
            }
            line.push_str(&changes(digest, stats));
            line
        }
        Outcome::Present { digest, rewritten } => format!(
            "present {item} ({}{})",
            digest.short(),
            rewritten
                .as_ref()
                .map(|new| format!(", rewritten to {}", new.short()))
                .unwrap_or_default()
        ),
        Outcome::Unchanged { digest, .. } => {
            format!(
                "done    {item} ({}, recorded by an earlier run)",
                digest.short()
            )
        }
        Outcome::Skipped { reason } => format!("skipped {item}: {reason}"),
        Outcome::Failed { error } => {
            format!("FAILED  {item}: {}", hints::chain(error.as_ref()))
        }
    }
}

/// One line saying what `ferry verify` found of an item (the engine's audit reports what a run
/// would copy as `Copied`): complete, incomplete (what is missing), missing, outdated, or why
/// it could not be checked.
pub fn audit_line(item: &Item, outcome: &Outcome) -> String {
    match outcome {
        Outcome::Present { digest, .. } | Outcome::Unchanged { digest, .. } => {
            format!("complete   {item} ({})", digest.short())
        }
        Outcome::Copied { digest, stats } if !stats.gaps.is_empty() => {
            let gaps: Vec<String> = stats.gaps.iter().map(ToString::to_string).collect();
            format!(
                "INCOMPLETE {item} ({}): {}",
                digest.short(),
                gaps.join(", ")
            )
        }
        Outcome::Copied { digest, stats } => match (&stats.replaced, &stats.updated) {
            (Some(had), _) => format!(
                "OUTDATED   {item}: the target has {}, the source {}",
                had.short(),
                digest.short()
            ),
            (None, Some(old)) => format!(
                "MISSING    {item} ({}; recorded as {} before the source moved)",
                digest.short(),
                old.short()
            ),
            (None, None) => format!("MISSING    {item} ({})", digest.short()),
        },
        Outcome::Skipped { reason } => format!("skipped    {item}: {reason}"),
        Outcome::Failed { error } => {
            format!(
                "FAILED     {item}: not checked: {}",
                hints::chain(error.as_ref())
            )
        }
    }
}

/// What a copy changed at the target beyond adding an image: `; updated: old → new` (the
/// source moved since the last run), `; replaced sha256:…` (the target tag pointed elsewhere),
/// `; put back: …` (what the target lacked of an image it held).
pub fn changes(digest: &crate::reference::Digest, stats: &crate::copy::ImageStats) -> String {
    let mut out = String::new();
    if let Some(old) = &stats.updated {
        out.push_str(&format!("; updated: {old} → {digest}"));
    }
    if let Some(other) = stats
        .replaced
        .as_ref()
        .filter(|r| Some(*r) != stats.updated.as_ref())
    {
        out.push_str(&format!("; the target had {other}"));
    }
    if !stats.gaps.is_empty() {
        let gaps: Vec<String> = stats.gaps.iter().map(ToString::to_string).collect();
        out.push_str(&format!("; put back: {}", gaps.join(", ")));
    }
    out
}

/// `1 blob`, `3 blobs`.
pub fn plural(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// RFC 3339 UTC time with seconds, without pulling in a date crate.
pub fn timestamp(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}Z")
}

/// Plain, timestamped, one line per event: for logs and CronJobs. No control characters.
pub struct PlainReporter {
    out: Mutex<Box<dyn Write + Send>>,
    /// One JSON object per line (`--log-format json`) instead of text.
    json: bool,
    progress: Mutex<Progress>,
    every: Duration,
    /// Items are findings of `ferry verify` ([`audit_line`]), not copies.
    audit: bool,
}

/// Counts for the periodic progress line of a log.
struct Progress {
    selected: usize,
    finished: usize,
    bytes: u64,
    started: std::time::Instant,
    last_line: std::time::Instant,
}

/// A log gets a progress line at most this often (and only while there is progress).
pub const PROGRESS_EVERY: Duration = Duration::from_secs(30);

impl PlainReporter {
    pub fn stderr() -> Self {
        Self::to_writer(Box::new(std::io::stderr()), false, PROGRESS_EVERY)
    }

    /// Lines to any writer, with a progress line at most every `every`.
    pub fn to_writer(out: Box<dyn Write + Send>, json: bool, every: Duration) -> Self {
        let now = std::time::Instant::now();
        PlainReporter {
            out: Mutex::new(out),
            json,
            every,
            audit: false,
            progress: Mutex::new(Progress {
                selected: 0,
                finished: 0,
                bytes: 0,
                started: now,
                last_line: now,
            }),
        }
    }

    /// Every PROGRESS_EVERY, one line: images done of selected, bytes and rate.
    fn maybe_progress(&self) {
        let line = {
            let mut p = self.progress.lock().expect("progress");
            if p.last_line.elapsed() < self.every {
                return;
            }
            p.last_line = std::time::Instant::now();
            let secs = p.started.elapsed().as_secs_f64().max(0.001);
            format!(
                "progress: {}/{} images, {} at {}/s",
                p.finished,
                p.selected,
                HumanBytes(p.bytes),
                HumanBytes((p.bytes as f64 / secs) as u64)
            )
        };
        self.line(&line);
    }

    /// Say what `ferry verify` found of each item ([`audit_line`]).
    pub fn audit(mut self) -> Self {
        self.audit = true;
        self
    }

    /// JSON lines, as `tracing-subscriber`'s JSON format writes them.
    pub fn stderr_json() -> Self {
        Self::to_writer(Box::new(std::io::stderr()), true, PROGRESS_EVERY)
    }

    fn line(&self, text: &str) {
        let mut out = self.out.lock().expect("reporter output");
        let _ = if self.json {
            writeln!(out, "{}", json_line("INFO", text))
        } else {
            writeln!(out, "{} {text}", timestamp(SystemTime::now()))
        };
    }
}

impl Reporter for PlainReporter {
    fn items_selected(&self, count: usize) {
        let total = {
            let mut progress = self.progress.lock().expect("progress");
            progress.selected += count;
            progress.selected
        };
        // Repositories are selected one after another while the first ones copy.
        match total == count {
            true => self.line(&format!("{count} images selected")),
            false => self.line(&format!("{count} more images selected ({total} in all)")),
        }
    }
    fn item_finished(&self, item: &Item, outcome: &Outcome) {
        self.progress.lock().expect("progress").finished += 1;
        match self.audit {
            true => self.line(&audit_line(item, outcome)),
            false => self.line(&outcome_line(item, outcome)),
        }
        self.maybe_progress();
    }
    fn bytes_transferred(&self, bytes: u64) {
        self.progress.lock().expect("progress").bytes += bytes;
        self.maybe_progress();
    }
    fn note(&self, message: &str) {
        self.line(message);
    }
    fn registry_event(&self, event: &Event) {
        self.line(&event_line(event));
    }
}

/// indicatif bars on a terminal: images done/total, and bytes with rate.
pub struct BarReporter {
    multi: MultiProgress,
    images: ProgressBar,
    bytes: ProgressBar,
    /// Items are findings of `ferry verify`: every one that is not complete gets a line.
    audit: bool,
    /// The images bar is drawn from the first selection on: before it, it would be a full
    /// bar at 0/0 (indicatif draws a bar of length 0 as complete).
    shown: std::sync::Once,
}

impl BarReporter {
    pub fn new() -> Self {
        Self::with_target(ProgressDrawTarget::stderr())
    }

    /// The bars, drawn to `target`.
    fn with_target(target: ProgressDrawTarget) -> Self {
        let multi = MultiProgress::with_draw_target(target);
        let images = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::hidden());
        images.set_style(
            ProgressStyle::with_template("{prefix:>8} [{bar:30}] {pos}/{len} {wide_msg}")
                .expect("static template")
                .progress_chars("=> "),
        );
        images.set_prefix("images");
        let bytes = multi.add(ProgressBar::new_spinner());
        bytes.set_style(
            ProgressStyle::with_template("{prefix:>8} {bytes} at {bytes_per_sec}, {elapsed}")
                .expect("static template"),
        );
        bytes.set_prefix("bytes");
        bytes.enable_steady_tick(Duration::from_millis(250));
        BarReporter {
            multi,
            images,
            bytes,
            audit: false,
            shown: std::sync::Once::new(),
        }
    }

    /// Say what `ferry verify` found of each item that is not complete ([`audit_line`]).
    pub fn audit(mut self) -> Self {
        self.audit = true;
        self
    }

    /// A line above the bars (they are redrawn below it).
    fn println(&self, line: String) {
        let _ = self.multi.println(line);
    }
}

impl Default for BarReporter {
    fn default() -> Self {
        Self::new()
    }
}

impl Reporter for BarReporter {
    fn items_selected(&self, count: usize) {
        self.shown.call_once(|| {
            self.multi.insert(0, self.images.clone());
            // Drawn on its own from now on, not only when an image finishes.
            self.images.enable_steady_tick(Duration::from_millis(250));
        });
        self.images.inc_length(count as u64);
    }
    fn item_started(&self, item: &Item) {
        self.images.set_message(item.source_display());
    }
    fn item_finished(&self, item: &Item, outcome: &Outcome) {
        self.images.inc(1);
        match (self.audit, outcome) {
            (true, Outcome::Present { .. } | Outcome::Unchanged { .. }) => {}
            (true, _) => self.println(audit_line(item, outcome)),
            (false, Outcome::Failed { .. } | Outcome::Skipped { .. }) => {
                self.println(outcome_line(item, outcome))
            }
            (false, _) => {}
        }
    }
    fn bytes_transferred(&self, bytes: u64) {
        self.bytes.inc(bytes);
    }
    fn note(&self, message: &str) {
        self.println(message.to_string());
    }
    fn registry_event(&self, event: &Event) {
        self.println(event_line(event));
    }
    fn finish(&self) {
        self.images.finish_and_clear();
        self.bytes.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer the test can read back.
    #[derive(Clone, Default)]
    struct Buffer(std::sync::Arc<Mutex<Vec<u8>>>);
    impl Write for Buffer {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn logs_get_periodic_progress_lines_without_control_characters() {
        let buf = Buffer::default();
        let r = PlainReporter::to_writer(Box::new(buf.clone()), false, Duration::ZERO);
        r.items_selected(4);
        r.items_selected(3);
        r.bytes_transferred(2048);
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].ends_with(" 4 images selected"), "{text}");
        assert!(
            lines[1].ends_with(" 3 more images selected (7 in all)"),
            "{text}"
        );
        assert!(
            lines[2].contains(" progress: 0/7 images, 2.00 KiB at "),
            "{text}"
        );
        assert!(lines.iter().all(|l| l.chars().all(|c| !c.is_control())));
        // Not more often than asked.
        let quiet = PlainReporter::to_writer(Box::new(Buffer::default()), false, PROGRESS_EVERY);
        quiet.bytes_transferred(1);
        assert!(quiet.progress.lock().unwrap().last_line.elapsed() < PROGRESS_EVERY);
    }

    /// A terminal that keeps what is written to it.
    #[derive(Debug, Clone, Default)]
    struct Screen(std::sync::Arc<Mutex<String>>);
    impl indicatif::TermLike for Screen {
        fn width(&self) -> u16 {
            100
        }
        fn move_cursor_up(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_down(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_right(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_left(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn write_line(&self, s: &str) -> std::io::Result<()> {
            self.write_str(&format!("{s}\n"))
        }
        fn write_str(&self, s: &str) -> std::io::Result<()> {
            self.0.lock().unwrap().push_str(s);
            Ok(())
        }
        fn clear_line(&self) -> std::io::Result<()> {
            Ok(())
        }
        fn flush(&self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Issue 21, "What was seen" 6: no full bar at 0/0 while nothing is selected yet (notes
    /// still get through), and the images bar from the first selection on.
    #[test]
    fn the_images_bar_waits_for_a_selection() {
        let screen = Screen::default();
        let bars =
            BarReporter::with_target(ProgressDrawTarget::term_like(Box::new(screen.clone())));
        let drawn = || {
            // The bytes spinner's tick redraws every bar.
            std::thread::sleep(Duration::from_millis(400));
            std::mem::take(&mut *screen.0.lock().unwrap())
        };
        bars.note("resolving the plan");
        let before = drawn();
        assert!(before.contains("resolving the plan"), "{before}");
        assert!(before.contains("bytes"), "{before}");
        assert!(
            !before.contains("images") && !before.contains("0/0"),
            "{before}"
        );
        bars.items_selected(3);
        let after = drawn();
        assert!(
            after.contains("images [") && after.contains("0/3"),
            "{after}"
        );
        bars.finish();
    }

    #[test]
    fn timestamps_are_rfc3339() {
        assert_eq!(timestamp(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_000_000);
        assert_eq!(timestamp(t), "2026-11-30T00:53:20Z");
    }
}
