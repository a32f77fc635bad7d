//! Plan errors, and the translation of toml's and serde's messages into ones that name the
//! field and what it expects in the user's words.
//!
//! The rule this module keeps: every string a user wrote may be a secret, so no value from
//! the plan is ever part of an error (numbers and booleans excepted). Errors carry the file,
//! line and column, the field (keys are names, not secrets) and a reason written here. toml's
//! own rendering shows the offending source line and serde's messages quote the value
//! (`invalid type: string "…", expected i64`), so neither is passed on: the message's kind is
//! read, the field is found from the error's position in a spanned parse of the document, and
//! what the field expects comes from the schema below.

use super::schema::{expected, fields};
pub(super) use super::schema::{
    Bounds, CONCURRENCY, KEEP_NEWEST, MAX_CONNECTIONS, MAX_DELETIONS, NEWEST, RATE, RETAIN_RUNS,
    RETRIES,
};
use std::path::{Path, PathBuf};

/// A plan file that could not be read or is not valid. Never holds a string value from the
/// plan: the position, the field and a reason are enough to find and fix it.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("cannot read plan {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A byte sequence that is not UTF-8, at the position of its first byte.
    #[error("{path}:{line}:{column}: not UTF-8 text (byte 0x{byte:02X}); save the plan as UTF-8")]
    NotUtf8 {
        path: PathBuf,
        line: usize,
        column: usize,
        byte: u8,
    },
    /// TOML syntax, a value of the wrong type, an unknown or missing field: a message written
    /// here (never toml's excerpt of the line), at the position toml points to (1-based; the
    /// column counts characters).
    #[error("{path}:{line}:{column}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    /// A field whose value is refused. `value` is shown only for numbers: any string may be
    /// a secret.
    #[error("{path}:{line}:{column}: {field}{}: {reason}", .value.map(|n| format!(" = {n}")).unwrap_or_default())]
    Invalid {
        path: PathBuf,
        line: usize,
        column: usize,
        field: String,
        value: Option<i64>,
        reason: String,
    },
    /// Neither `[[copy]]` nor `[[retain]]`: a plan that would do nothing is refused, since it
    /// is almost always a rule lost to an edit or a misspelt table name. At the end of the file,
    /// where a rule would go.
    #[error("{path}:{line}:{column}: the plan has no [[copy]] or [[retain]] rule: nothing to do")]
    NoRules {
        path: PathBuf,
        line: usize,
        column: usize,
    },
    /// Two rules that would fight over the same images on every run (see
    /// [`super::conflicts`]), at the later rule.
    #[error("{path}:{line}:{column}: {message}")]
    Conflict {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
}

impl PlanError {
    /// Line and column (1-based) of the error in the plan, when it has one.
    pub fn position(&self) -> Option<(usize, usize)> {
        match self {
            PlanError::Read { .. } => None,
            PlanError::NotUtf8 { line, column, .. }
            | PlanError::Parse { line, column, .. }
            | PlanError::Invalid { line, column, .. }
            | PlanError::NoRules { line, column, .. }
            | PlanError::Conflict { line, column, .. } => Some((*line, *column)),
        }
    }
}

/// 1-based line and column (in characters) of a byte offset into `text`; an offset inside a
/// character counts as that character.
pub(super) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let before = &text[..end];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = before.matches('\n').count() + 1;
    (line, before[line_start..].chars().count() + 1)
}

/// The plan's text, or the position of its first byte that is not UTF-8.
pub(super) fn decode(path: &Path, bytes: Vec<u8>) -> Result<String, PlanError> {
    String::from_utf8(bytes).map_err(|e| {
        let valid = e.utf8_error().valid_up_to();
        let bytes = e.as_bytes();
        let text = std::str::from_utf8(&bytes[..valid]).expect("valid up to here");
        let (line, column) = line_col(text, valid);
        PlanError::NotUtf8 {
            path: path.to_path_buf(),
            line,
            column,
            byte: bytes[valid],
        }
    })
}

/// One step of a path into the document.
#[derive(Clone, Debug, PartialEq)]
enum Seg {
    Key(String),
    Index(usize),
}

/// A key as TOML writes it: bare when it can be, quoted otherwise.
pub(super) fn toml_key(k: &str) -> String {
    let bare = !k.is_empty()
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if bare {
        k.to_string()
    } else {
        format!("{k:?}")
    }
}

/// `registry."ghcr.io".rate_limit.burst`: the keys, positions in arrays left out.
fn dotted(path: &[Seg]) -> String {
    let keys: Vec<String> = path
        .iter()
        .filter_map(|s| match s {
            Seg::Key(k) => Some(toml_key(k)),
            Seg::Index(_) => None,
        })
        .collect();
    keys.join(".")
}

/// The path's shape for [`expected`] and [`fields`]: `registry.*.auth`, `copy.tags`,
/// `immutable_tags[]`.
fn shape(path: &[Seg]) -> String {
    let mut out = String::new();
    for (i, seg) in path.iter().enumerate() {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                let host = i == 1 && path.first() == Some(&Seg::Key("registry".into()));
                out.push_str(if host { "*" } else { k });
            }
            // An entry of `copy`/`retain` is a table of its own, not a list entry.
            Seg::Index(_)
                if i == 1 && matches!(&path[0], Seg::Key(k) if k == "copy" || k == "retain") => {}
            Seg::Index(_) => out.push_str("[]"),
        }
    }
    out
}

/// How a table is named in messages: as the header that opens it (`[registry."ghcr.io"]`,
/// `[[copy]]`, `[copy.tags]`, as TOML allows writing any table).
fn table_name(path: &[Seg]) -> String {
    match path {
        [] => "the top level".into(),
        [Seg::Key(k), Seg::Index(_)] => format!("[[{}]]", toml_key(k)),
        _ => format!("[{}]", dotted(path)),
    }
}

/// A place in the document: an item (a table, an array of tables or a value), an entry of an
/// array of tables, or a value inside an inline table or array.
#[derive(Clone, Copy)]
enum Node<'a> {
    Item(&'a toml_edit::Item),
    Table(&'a toml_edit::Table),
    Value(&'a toml_edit::Value),
}

impl<'a> Node<'a> {
    fn span(self) -> Option<std::ops::Range<usize>> {
        match self {
            Node::Item(i) => i.span(),
            Node::Table(t) => t.span(),
            Node::Value(v) => v.span(),
        }
    }

    /// What the user wrote where a value was expected, in their words.
    fn kind(self) -> &'static str {
        use toml_edit::{Item, Value};
        let value = match self {
            Node::Item(Item::None) => return "nothing",
            Node::Item(Item::Table(_)) | Node::Table(_) => return "a table",
            Node::Item(Item::ArrayOfTables(_)) => return "an array of tables",
            Node::Item(Item::Value(v)) | Node::Value(v) => v,
        };
        match value {
            Value::String(_) => "a string",
            Value::Integer(_) => "an integer",
            Value::Float(_) => "a decimal number",
            Value::Boolean(_) => "a boolean",
            Value::Datetime(_) => "a date or time",
            Value::Array(_) => "a list",
            Value::InlineTable(_) => "a table",
        }
    }

    /// The key/value entries when this is a table of any kind.
    fn entries(self) -> Vec<(&'a toml_edit::Key, Node<'a>)> {
        use toml_edit::{Item, Value};
        match self {
            Node::Item(Item::Table(t)) | Node::Table(t) => t
                .iter()
                .filter_map(|(k, _)| t.get_key_value(k))
                .map(|(k, item)| (k, Node::Item(item)))
                .collect(),
            Node::Item(Item::Value(Value::InlineTable(t))) | Node::Value(Value::InlineTable(t)) => {
                t.iter()
                    .filter_map(|(k, _)| t.get_key_value(k))
                    .map(|(k, item)| (k, Node::Item(item)))
                    .collect()
            }
            _ => Vec::new(),
        }
    }

    /// The entries when this is a list of any kind.
    fn elements(self) -> Vec<Node<'a>> {
        use toml_edit::{Item, Value};
        match self {
            Node::Item(Item::ArrayOfTables(a)) => a.iter().map(Node::Table).collect(),
            Node::Item(Item::Value(Value::Array(a))) | Node::Value(Value::Array(a)) => {
                a.iter().map(Node::Value).collect()
            }
            _ => Vec::new(),
        }
    }

    /// The node one step down `seg`.
    fn child(self, seg: &Seg) -> Option<Node<'a>> {
        match seg {
            Seg::Key(k) => self
                .entries()
                .into_iter()
                .find(|(key, _)| key.get() == k)
                .map(|(_, n)| n),
            Seg::Index(i) => self.elements().get(*i).copied(),
        }
    }
}

/// Where in the document an error's position is.
struct Located {
    path: Vec<Seg>,
    /// On the key of the last step of `path` rather than on its value.
    on_key: bool,
}

fn contains(span: Option<std::ops::Range<usize>>, offset: usize) -> bool {
    span.is_some_and(|s| s.contains(&offset) || (s.is_empty() && s.start == offset))
}

/// The innermost key or value at `offset` inside `node` (at `path`), else `node` itself when
/// its span holds `offset`. Spans nest (a table's runs from its header to its last value), so
/// the deepest match is the place.
fn locate(node: Node<'_>, path: &[Seg], offset: usize) -> Option<Located> {
    let step = |seg: Seg| {
        let mut here = path.to_vec();
        here.push(seg);
        here
    };
    let inner = node
        .entries()
        .into_iter()
        .find_map(|(key, child)| {
            let here = step(Seg::Key(key.get().to_string()));
            if contains(key.span(), offset) {
                return Some(Located {
                    path: here,
                    on_key: true,
                });
            }
            locate(child, &here, offset)
        })
        .or_else(|| {
            node.elements()
                .into_iter()
                .enumerate()
                .find_map(|(i, child)| locate(child, &step(Seg::Index(i)), offset))
        });
    inner.or_else(|| {
        contains(node.span(), offset).then(|| Located {
            path: path.to_vec(),
            on_key: false,
        })
    })
}

/// A syntax error: toml's message names the construct and what it expected (`invalid
/// string`, `expected newline, #`) and, for duplicates, the key; never the text it read. Its
/// excerpt of the line is dropped.
pub(super) fn syntax_error(path: &Path, text: &str, e: &toml_edit::TomlError) -> PlanError {
    let (line, column) = line_col(text, e.span().map_or(0, |s| s.start));
    let message = e
        .message()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    PlanError::Parse {
        path: path.to_path_buf(),
        line,
        column,
        message: format!("TOML syntax: {message}"),
    }
}

/// A serde error while reading the `Raw*` types from a document that parsed: an unknown or
/// missing field, or a value of the wrong type. Only the kind of serde's message is read
/// (its text quotes the value); the field comes from the document at the error's position.
pub(super) fn schema_error(
    path: &Path,
    text: &str,
    doc: &toml_edit::ImDocument<&str>,
    e: &toml::de::Error,
) -> PlanError {
    let offset = e.span().map_or(0, |s| s.start);
    let (line, column) = line_col(text, offset);
    let root = Node::Table(doc.as_table());
    let found = locate(root, &[], offset).unwrap_or(Located {
        path: Vec::new(),
        on_key: false,
    });
    let serde = e.message();
    // On a key that its table does not have: an unknown field, whatever serde's words (a
    // dotted key under a spanned table gets "invalid type" instead).
    let unknown_key = found.on_key
        && match found.path.split_last() {
            Some((Seg::Key(k), table)) => {
                fields(&shape(table)).is_some_and(|f| !f.contains(&k.as_str()))
            }
            _ => false,
        };
    let message = if serde.starts_with("unknown field") || unknown_key {
        unknown_field(&found.path)
    } else if let Some(rest) = serde.strip_prefix("missing field `") {
        // serde names a field of our own struct here, never a key or value of the plan;
        // checked against the schema all the same, so only names ferry knows are repeated.
        let field = rest.split('`').next().unwrap_or_default();
        let table = match found.path.as_slice() {
            [] => "the plan".to_string(),
            p => table_name(p),
        };
        match fields(&shape(&found.path)).and_then(|f| f.iter().find(|k| **k == field)) {
            Some(known) => format!("{table}: missing field `{known}`"),
            None => format!("{table}: a required field is missing"),
        }
    } else {
        // A list where the schema has none (`[[copy.tags]]`): the field is the list's.
        let mut place = found.path;
        while expected(&shape(&place)).is_none() && matches!(place.last(), Some(Seg::Index(_))) {
            place.pop();
        }
        let field = match dotted(&place) {
            f if f.is_empty() => "the plan".to_string(),
            f => f,
        };
        let node = place.iter().try_fold(root, |n, seg| n.child(seg));
        match (expected(&shape(&place)), node) {
            (Some(w), Some(node)) => format!("{field}: expected {w}, found {}", node.kind()),
            (Some(w), None) => format!("{field}: expected {w}"),
            (None, Some(node)) => format!("{field}: {} is not valid here", node.kind()),
            (None, None) => format!("{field}: not valid here"),
        }
    };
    PlanError::Parse {
        path: path.to_path_buf(),
        line,
        column,
        message,
    }
}

/// `unknown field `password` in [registry."ghcr.io"]; expected one of …`: the key, which
/// table it is in and what that table takes. Never the value written after it.
fn unknown_field(path: &[Seg]) -> String {
    let (table, key) = match path.split_last() {
        Some((Seg::Key(k), table)) => (table, k.as_str()),
        _ => (path, "?"),
    };
    let mut message = format!(
        "unknown field `{}` in {}",
        key.escape_debug(),
        table_name(table)
    );
    if let Some(list) = fields(&shape(table)) {
        let list: Vec<String> = list.iter().map(|f| format!("`{f}`")).collect();
        message.push_str(&format!("; expected one of {}", list.join(", ")));
    }
    message
}

/// A semver error without the characters of the constraint: `unexpected character 'x'`
/// keeps the character only when it is an operator or separator, which no secret is made of.
pub(super) fn semver_reason(e: &semver::Error) -> String {
    let text = e.to_string().replace("exceeds u64::MAX", "is too large");
    let mut out = String::new();
    let mut rest = text.as_str();
    while let Some(start) = rest.find('\'') {
        let Some(len) = rest[start + 1..].find('\'') else {
            break;
        };
        let quoted = &rest[start + 1..start + 1 + len];
        let before = &rest[..start];
        if quoted.len() == 1 && "<>=^~*,.-+ |".contains(quoted) {
            out.push_str(&rest[..start + len + 2]);
        } else if let Some(b) = before.strip_suffix(" character ") {
            // "unexpected character 'x' while …" -> "unexpected character while …"
            out.push_str(b);
            out.push_str(" character");
        } else {
            out.push_str(before);
            out.push_str("another character");
        }
        rest = &rest[start + len + 2..];
    }
    out.push_str(rest);
    out
}

/// A humantime error in words, with a position instead of the unit it did not know.
pub(super) fn duration_reason(value: &str, e: &humantime::DurationError) -> String {
    use humantime::DurationError as E;
    let at = |byte: usize| {
        let mut end = byte.min(value.len());
        while !value.is_char_boundary(end) {
            end -= 1;
        }
        value[..end].chars().count() + 1
    };
    match e {
        E::InvalidCharacter(i) => format!(
            "a character that has no place in a duration at position {}",
            at(*i)
        ),
        E::NumberExpected(i) => format!("a number is expected at position {}", at(*i)),
        E::UnknownUnit { start, .. } => format!(
            "unknown unit at position {} (units: s, m, h, d, w, and their long names)",
            at(*start)
        ),
        E::NumberOverflow => "the number is too large".into(),
        E::Empty => "it is empty".into(),
    }
}

#[cfg(test)]
mod tests;
