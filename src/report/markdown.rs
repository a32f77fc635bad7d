//! Markdown for people who review on GitHub: a pull-request comment (`ferry plan --output
//! markdown`) or a CI job summary (`ferry report show --output markdown`). What is rendered
//! comes as data ([`Doc`]): a head that is never cut (the summary table, the failures), then
//! one collapsible `<details>` block per repository with each decision and its reason.
//!
//! GitHub refuses a comment over [`LIMIT`] characters. A document over [`BUDGET`] is rendered
//! again, smaller, in steps that never drop a deletion: first every deletion line alone
//! (digests shortened to 12 hex, the other lines left out and counted), then each
//! repository's deletions on one line, named by their tags (numbered runs grouped:
//! `pr-{1..20000}`) or, untagged, by their short digest. What was left out is said, with
//! the command that shows the whole.
//!
//! Every name that comes from a registry or a plan (repositories, tags, reasons, rule
//! labels) goes through [`code`], [`cell`], [`html_code`] or [`text`], so that it cannot
//! open a link, an image, a table cell, an HTML element or a mention.
//!
//! No I/O, and nothing kept but what the caller hands over: callers bound that (see theirs).

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// GitHub's limit on a comment's body, in characters.
pub const LIMIT: usize = 65_536;

/// What a document may take before it is rendered smaller: under [`LIMIT`], with room for a
/// line a CI job adds around it.
pub const BUDGET: usize = 60_000;

/// A document: the head, then a block per repository.
pub struct Doc<'a> {
    /// Markdown built with this module's escapes: never cut.
    pub head: String,
    pub blocks: Vec<Block<'a>>,
    /// Lines the caller did not keep (they could not have fit): said with the rest.
    pub left_out: usize,
    /// The command that shows the whole, `ferry plan --output json`.
    pub whole: &'a str,
}

/// One repository's decisions under a `<details>` summary.
pub struct Block<'a> {
    /// Built with [`html_code`] (it sits in HTML, where Markdown is not read).
    pub summary: String,
    pub lines: Vec<Line<'a>>,
}

/// One decision: `- **delete** `sha256:…` `v1`, `v2`: reason`.
pub struct Line<'a> {
    /// A word of ferry's own: copy, present, keep, delete, untag, failed…
    pub action: &'a str,
    pub digest: Option<&'a str>,
    /// Tags (joined by `, `), or a source and a target (joined by ` → `).
    pub names: &'a [String],
    pub arrow: bool,
    /// Registry or plan text, escaped.
    pub reason: &'a str,
}

impl Line<'_> {
    /// A deletion is never left out.
    pub fn deletes(&self) -> bool {
        matches!(self.action, "delete" | "untag")
    }
}

/// A line its owner keeps (see [`Kept`]).
pub struct OwnedLine {
    pub action: String,
    pub digest: Option<String>,
    pub names: Vec<String>,
    pub reason: String,
}

impl OwnedLine {
    /// It as a [`Line`]; `arrow`: its names are a source and a target.
    pub fn line(&self, arrow: bool) -> Line<'_> {
        Line {
            action: &self.action,
            digest: self.digest.as_deref(),
            names: &self.names,
            arrow,
            reason: &self.reason,
        }
    }
}

/// Lines that stream in (a plan's items, a report's), kept by repository while they fit the
/// budget. Past it none of them could be shown (the document then shows its deletions
/// alone, and these are never deletions), so all are dropped and counted: what is kept
/// stays under [`BUDGET`] characters, whatever the number of items.
#[derive(Default)]
pub struct Kept {
    by_repository: BTreeMap<String, Vec<OwnedLine>>,
    chars: usize,
    full: bool,
    /// Lines dropped, for [`Doc::left_out`].
    pub left_out: usize,
}

impl Kept {
    pub fn push(&mut self, repository: &str, line: OwnedLine) {
        if self.full {
            self.left_out += 1;
            return;
        }
        self.chars += line.names.iter().map(String::len).sum::<usize>() + line.reason.len() + 100;
        let lines = self
            .by_repository
            .entry(repository.to_string())
            .or_default();
        lines.push(line);
        if self.chars > BUDGET {
            self.full = true;
            self.left_out += self.by_repository.values().map(Vec::len).sum::<usize>();
            self.by_repository = BTreeMap::new();
        }
    }

    /// What is kept of `repository`.
    pub fn lines(&self, repository: &str) -> &[OwnedLine] {
        self.by_repository
            .get(repository)
            .map_or(&[], Vec::as_slice)
    }
}

/// How much of each block is rendered.
#[derive(Clone, Copy, PartialEq)]
enum Step {
    Whole,
    Deletions,
    Grouped,
}

/// The document, within [`BUDGET`] when its head and deletions allow it (neither is ever
/// cut; past [`LIMIT`] the document says so at its top).
pub fn render(doc: &Doc) -> String {
    if doc.left_out == 0 {
        let whole = render_at(doc, Step::Whole);
        if whole.chars().count() <= BUDGET {
            return whole;
        }
    }
    let deletions = render_at(doc, Step::Deletions);
    if deletions.chars().count() <= BUDGET {
        return deletions;
    }
    let grouped = render_at(doc, Step::Grouped);
    if grouped.chars().count() <= LIMIT {
        return grouped;
    }
    format!(
        "> **Too long for a GitHub comment** ({} characters): every failure and every deletion is named below, none left out.\n\n{grouped}",
        thousands(grouped.chars().count())
    )
}

fn render_at(doc: &Doc, step: Step) -> String {
    let mut out = doc.head.clone();
    let mut left_out = doc.left_out;
    for b in &doc.blocks {
        let deleting = b.lines.iter().filter(|l| l.deletes()).count();
        if step != Step::Whole {
            left_out += b.lines.len() - deleting;
            if deleting == 0 {
                continue;
            }
        }
        let _ = write!(out, "<details><summary>{}</summary>\n\n", b.summary);
        match step {
            Step::Whole => b.lines.iter().for_each(|l| line(&mut out, l, false)),
            Step::Deletions => {
                (b.lines.iter().filter(|l| l.deletes())).for_each(|l| line(&mut out, l, true))
            }
            Step::Grouped => grouped(&mut out, &b.lines),
        }
        out.push_str("\n</details>\n\n");
    }
    if left_out > 0 {
        let _ = writeln!(
            out,
            "… {} lines of kept or copied images left out; the whole: {}",
            thousands(left_out),
            code(doc.whole)
        );
    }
    if step == Step::Grouped {
        let _ = writeln!(
            out,
            "\nDeletions are grouped by repository without their reasons; `pr-{{1..3}}` names pr-1, pr-2 and pr-3."
        );
    }
    out
}

/// `- **delete** `sha256:…` `v1`, `v2`: reason`.
fn line(out: &mut String, l: &Line, short: bool) {
    let _ = write!(out, "- **{}**", l.action);
    if let Some(d) = l.digest {
        let _ = write!(out, " {}", code(if short { short_digest(d) } else { d }));
    }
    if l.names.is_empty() && l.digest.is_some() {
        out.push_str(" (untagged)");
    }
    let sep = if l.arrow { " → " } else { ", " };
    for (i, n) in l.names.iter().enumerate() {
        out.push_str(if i == 0 { " " } else { sep });
        out.push_str(&code(n));
    }
    if !l.reason.is_empty() {
        let _ = write!(out, ": {}", text(l.reason));
    }
    out.push('\n');
}

/// A repository's deletions on a line per action: tags grouped, untagged ones by digest.
fn grouped(out: &mut String, lines: &[Line]) {
    let mut by_action: BTreeMap<&str, (usize, Vec<&str>, Vec<&str>)> = BTreeMap::new();
    for l in lines.iter().filter(|l| l.deletes()) {
        let (n, tags, digests) = by_action.entry(l.action).or_default();
        *n += 1;
        match (l.names.is_empty(), l.digest) {
            (true, Some(d)) => digests.push(short_digest(d)),
            _ => tags.extend(l.names.iter().map(String::as_str)),
        }
    }
    for (action, (n, tags, digests)) in by_action {
        let _ = write!(out, "- **{action}** {}:", thousands(n));
        let names = runs(&tags)
            .into_iter()
            .chain(digests.iter().map(|d| d.to_string()));
        for (i, name) in names.enumerate() {
            out.push_str(if i == 0 { " " } else { ", " });
            out.push_str(&code(&name));
        }
        out.push('\n');
    }
}

/// Tags with their numbered runs grouped: `pr-1`, `pr-2`, `pr-3`, `v1` → `pr-{1..3}`, `v1`.
/// A number with a leading zero is left as it is (`pr-01` is not `pr-1`).
pub fn runs(tags: &[&str]) -> Vec<String> {
    let mut numbered: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    let mut out = Vec::new();
    for t in tags {
        let digits = t.len() - t.trim_end_matches(|c: char| c.is_ascii_digit()).len();
        let (prefix, number) = t.split_at(t.len() - digits);
        match number.parse::<u64>() {
            Ok(n) if !number.starts_with('0') || number == "0" => {
                numbered.entry(prefix).or_default().push(n)
            }
            _ => out.push(t.to_string()),
        }
    }
    for (prefix, mut numbers) in numbered {
        numbers.sort_unstable();
        numbers.dedup();
        if numbers.len() == 1 {
            out.push(format!("{prefix}{}", numbers[0]));
            continue;
        }
        let mut parts = Vec::new();
        let mut start = numbers[0];
        for w in numbers.windows(2) {
            if w[1] != w[0] + 1 {
                parts.push(span(start, w[0]));
                start = w[1];
            }
        }
        parts.push(span(start, numbers[numbers.len() - 1]));
        out.push(format!("{prefix}{{{}}}", parts.join(",")));
    }
    out
}

fn span(a: u64, b: u64) -> String {
    match a == b {
        true => a.to_string(),
        false => format!("{a}..{b}"),
    }
}

/// `sha256:` and the first 12 hex digits.
pub fn short_digest(d: &str) -> &str {
    match d.find(':') {
        Some(i) => &d[..(i + 13).min(d.len())],
        None => &d[..12.min(d.len())],
    }
}

/// `12,345`.
pub fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Control characters (a newline would end a list item or a table row) as `\n`, `\u{7}`.
fn visible(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '\n' => "\\n".to_string(),
            '\r' => "\\r".to_string(),
            '\t' => " ".to_string(),
            c if c.is_control() => c.escape_unicode().to_string(),
            c => c.to_string(),
        })
        .collect()
}

/// `s` as an inline code span: nothing inside is Markdown, HTML, a link or a mention. The
/// fence is longer than any run of backticks in `s`, and padded when `s` starts or ends
/// with one.
pub fn code(s: &str) -> String {
    let s = visible(s);
    if s.is_empty() {
        return "` `".to_string();
    }
    let mut longest = 0;
    let mut run = 0;
    for c in s.chars() {
        run = if c == '`' { run + 1 } else { 0 };
        longest = longest.max(run);
    }
    let fence = "`".repeat(longest + 1);
    // CommonMark strips one space each side when both are there.
    let pad = if longest > 0 { " " } else { "" };
    format!("{fence}{pad}{s}{pad}{fence}")
}

/// [`code`] for a table cell: a `|` would end the cell even in a code span, `\|` does not.
pub fn cell(s: &str) -> String {
    code(s).replace('|', "\\|")
}

/// `s` in `<code>` for HTML (a `<summary>`): see [`html`].
pub fn html_code(s: &str) -> String {
    format!("<code>{}</code>", html(s))
}

/// `s` for HTML (a `<summary>`): every character HTML or Markdown reads is an entity.
pub fn html(s: &str) -> String {
    let mut out = String::new();
    for c in visible(s).chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' | '`' | '*' | '_' | '[' | ']' | '\\' | '|' | '@' | '~' | '#' | '!' | '(' | ')' => {
                let _ = write!(out, "&#{};", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// `s` as plain text: every ASCII punctuation character backslash-escaped (CommonMark reads
/// each as itself), so `<img …>`, `[x](…)`, `*`, `|` and `` ` `` are shown, not read; an `@`
/// is followed by a word joiner so that it mentions nobody.
pub fn text(s: &str) -> String {
    let mut out = String::new();
    for c in visible(s).chars() {
        if c.is_ascii_punctuation() {
            out.push('\\');
        }
        out.push(c);
        if c == '@' {
            out.push('\u{2060}');
        }
    }
    out
}
