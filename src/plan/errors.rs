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

/// An integer field's accepted range, named the same way in type errors ("an integer from 1
/// to 256") and range errors ("must be between 1 and 256").
#[derive(Clone, Copy, Debug)]
pub(super) struct Bounds {
    pub min: i64,
    pub max: i64,
}

impl Bounds {
    fn expected(self) -> String {
        format!("an integer from {} to {}", self.min, self.max)
    }
}

pub(super) const CONCURRENCY: Bounds = Bounds { min: 1, max: 256 };
pub(super) const MAX_CONNECTIONS: Bounds = Bounds { min: 1, max: 1024 };
pub(super) const RATE: Bounds = Bounds {
    min: 1,
    max: 100_000,
};
pub(super) const RETRIES: Bounds = Bounds { min: 0, max: 100 };
pub(super) const NEWEST: Bounds = Bounds {
    min: 1,
    max: 1_000_000,
};
pub(super) const KEEP_NEWEST: Bounds = Bounds {
    min: 0,
    max: 1_000_000,
};
pub(super) const MAX_DELETIONS: Bounds = Bounds {
    min: 0,
    max: 1_000_000_000,
};

const REGEXES: &str = "a list of regular expressions (strings)";
const REGEX: &str = "a regular expression (a string) in the list";

/// What a field expects, by its shape: keys joined by `.`, a registry host as `*`, array
/// positions left out, `[]` for an entry of a list.
fn expected(shape: &str) -> Option<String> {
    let bounds = |b: Bounds| Some(b.expected());
    let text = match shape {
        "version" => "the integer 1",
        "concurrency" => return bounds(CONCURRENCY),
        "state" => "a file path (a string)",
        "recheck_after" => "a duration like \"24h\" (a string)",
        "immutable_tags" => REGEXES,
        "immutable_tags[]" => REGEX,
        "registry" => "tables like [registry.\"HOST\"]",
        "registry.*" => "a table of settings for this registry host",
        "registry.*.auth" => "a table: { username = \"…\", password_env = \"VAR\" }, { config = \"PATH\" } or { anonymous = true }",
        "registry.*.auth.username" => "a user name (a string)",
        "registry.*.auth.password_env" => "the name of an environment variable (a string)",
        "registry.*.auth.config" | "registry.*.ca_file" => "a file path (a string)",
        "registry.*.auth.anonymous" | "registry.*.insecure" | "retain.untagged" => {
            "true or false"
        }
        "registry.*.endpoint" | "registry.*.api" => "a URL (a string)",
        "registry.*.flavor" => "\"distribution\", \"ghcr\" or \"dockerhub\"",
        "registry.*.max_connections" => return bounds(MAX_CONNECTIONS),
        "registry.*.rate_limit" => "a table: { requests_per_second = R, burst = B }",
        "registry.*.rate_limit.requests_per_second" | "registry.*.rate_limit.burst" => {
            return bounds(RATE)
        }
        "registry.*.retries" => return bounds(RETRIES),
        "registry.*.stall_timeout" => "a duration like \"90s\" or \"2m\" (a string)",
        "copy" => "[[copy]] tables",
        "copy.from" | "copy.to" => "an image reference (a string)",
        "copy.tags" => "a table: { include = […], exclude = […], semver = \"…\", newest = N }",
        "copy.tags.include" | "copy.tags.exclude" | "retain.keep_tags" | "retain.delete_tags" => {
            REGEXES
        }
        "copy.tags.include[]"
        | "copy.tags.exclude[]"
        | "retain.keep_tags[]"
        | "retain.delete_tags[]" => REGEX,
        "copy.tags.semver" => "a semver constraint like \">=1.2, <3\" (a string)",
        "copy.tags.newest" => return bounds(NEWEST),
        "copy.referrers" => "true, false or { artifact_types = [\"…\"] }",
        "copy.platforms" => "\"all\" or a list like [\"linux/amd64\", \"linux/arm64\"]",
        "copy.platform_mode" => "\"sparse\" or \"rewrite\"",
        "retain" => "[[retain]] tables",
        "retain.repository" => "a repository or a wildcard (a string)",
        "retain.keep_newest" => return bounds(KEEP_NEWEST),
        "retain.older_than" => "a duration like \"30d\" (a string)",
        "retain.max_deletions" => return bounds(MAX_DELETIONS),
        _ => return None,
    };
    Some(text.to_string())
}

/// The fields a table accepts, by its shape (as in [`expected`]; `""` is the top level).
/// Kept equal to the `Raw*` types by a test.
pub(super) fn fields(shape: &str) -> Option<&'static [&'static str]> {
    Some(match shape {
        "" => &[
            "version",
            "concurrency",
            "state",
            "immutable_tags",
            "recheck_after",
            "registry",
            "copy",
            "retain",
        ],
        "registry.*" => &[
            "auth",
            "insecure",
            "ca_file",
            "endpoint",
            "api",
            "flavor",
            "max_connections",
            "rate_limit",
            "retries",
            "stall_timeout",
        ],
        "registry.*.auth" => &["username", "password_env", "config", "anonymous"],
        "registry.*.rate_limit" => &["requests_per_second", "burst"],
        "copy" => &[
            "from",
            "to",
            "tags",
            "referrers",
            "platforms",
            "platform_mode",
        ],
        "copy.tags" => &["include", "exclude", "semver", "newest"],
        "retain" => &[
            "repository",
            "keep_newest",
            "keep_tags",
            "delete_tags",
            "older_than",
            "untagged",
            "max_deletions",
        ],
        _ => return None,
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
mod tests {
    use super::super::Plan;
    use super::*;

    const CANARY: &str = "CANARY-7f3a9c";
    const RULE: &str = "[[copy]]\nfrom = \"r.io/a/b\"\nto = \"r.io/c/d\"\n";
    /// What a message in the user's words never says.
    const RUST: &[&str] = &[
        "i64",
        "u32",
        "usize",
        "struct",
        "Raw",
        "sequence",
        "map",
        "invalid type",
        "Spanned",
        "variant",
        "Option",
        "u64",
    ];

    fn err(text: &str) -> String {
        Plan::from_str(Path::new("p.toml"), text)
            .expect_err("the plan should be refused")
            .to_string()
    }

    /// Refused, at a position, without the canary.
    fn refused_quietly(text: &str) -> String {
        let e = err(text);
        assert!(
            !e.contains("CANARY"),
            "the canary leaked: {e}\n--- plan\n{text}"
        );
        assert!(
            regex::Regex::new(r"^p\.toml:\d+:\d+: ")
                .unwrap()
                .is_match(&e),
            "no position: {e}"
        );
        assert!(!e.contains('\n'), "one line: {e}");
        e
    }

    /// Plans with a secret-looking unknown field (and an innocent one) in every table.
    fn unknown_field_plans() -> Vec<(String, &'static str)> {
        let c = CANARY;
        let mut plans = Vec::new();
        for key in ["password", "token", "auth_token", "client_secret", "note"] {
            let v = format!("{key} = \"{c}\"");
            plans.extend([
                (format!("version = 1\n{v}\n{RULE}"), "the top level"),
                (
                    format!("version = 1\n{RULE}[registry.\"r.io\"]\n{v}\n"),
                    "[registry.\"r.io\"]",
                ),
                (
                    format!("version = 1\n{RULE}[registry.\"r.io\"]\nauth = {{ username = \"u\", password_env = \"V\", {v} }}\n"),
                    "[registry.\"r.io\".auth]",
                ),
                (
                    format!("version = 1\n{RULE}[registry.\"r.io\".auth]\n{v}\n"),
                    "[registry.\"r.io\".auth]",
                ),
                (
                    // A dotted key under a spanned table: serde says "invalid type" here.
                    format!("version = 1\n{RULE}[registry.\"r.io\"]\nauth.{v}\n"),
                    "[registry.\"r.io\".auth]",
                ),
                (
                    format!("version = 1\nregistry.\"r.io\".rate_limit.{v}\n{RULE}"),
                    "[registry.\"r.io\".rate_limit]",
                ),
                (
                    format!("version = 1\n{RULE}[registry.\"r.io\"]\nrate_limit = {{ requests_per_second = 1, {v} }}\n"),
                    "[registry.\"r.io\".rate_limit]",
                ),
                (format!("version = 1\n{RULE}{v}\n"), "[[copy]]"),
                (
                    format!("version = 1\n{RULE}tags = {{ include = ['^v'], {v} }}\n"),
                    "[copy.tags]",
                ),
                (
                    format!("version = 1\n{RULE}[copy.tags]\n{v}\n"),
                    "[copy.tags]",
                ),
                (
                    format!("version = 1\n[[retain]]\nrepository = \"r.io/a/b\"\n{v}\n"),
                    "[[retain]]",
                ),
            ]);
        }
        plans
    }

    #[test]
    fn unknown_fields_never_show_their_value() {
        for (text, table) in unknown_field_plans() {
            let e = refused_quietly(&text);
            assert!(
                e.contains("unknown field `")
                    && e.contains(&format!(" in {table}; expected one of `")),
                "{e}\n--- plan\n{text}"
            );
        }
        // The referrers table is read by ferry itself; same rule.
        let e = refused_quietly(&format!(
            "version = 1\n{RULE}referrers = {{ token = \"{CANARY}\" }}\n"
        ));
        assert!(e.contains("unknown field `token`"), "{e}");
    }

    /// Known fields holding a canary where it is not a valid value, or of the wrong type.
    #[test]
    fn refused_values_are_never_shown() {
        let c = CANARY;
        let registry = |line: String| format!("version = 1\n{RULE}[registry.\"r.io\"]\n{line}\n");
        let copy = |line: String| {
            format!("version = 1\n[[copy]]\nfrom = \"r.io/a/b\"\nto = \"r.io/c/d\"\n{line}\n")
        };
        let retain =
            |line: String| format!("version = 1\n[[retain]]\nrepository = \"r.io/a/b\"\n{line}\n");
        let plans = [
            format!("version = 1\n[[copy]]\nfrom = \"r.io/{c}\"\nto = \"r.io/c/d\"\n"),
            format!("version = 1\n[[copy]]\nfrom = \"{c}\"\nto = \"r.io/c/d\"\n"),
            format!("version = 1\n[[copy]]\nfrom = \"r.io/a/b\"\nto = \"r.io/c/d:{c}!\"\n"),
            format!("version = 1\n[[copy]]\nfrom = \"r.io/a/b@sha256:{c}\"\nto = \"r.io/c/d\"\n"),
            format!("version = 1\n[[copy]]\nfrom = \"{c}.io:x/a/b\"\nto = \"r.io/c/d\"\n"),
            format!("version = 1\n[[copy]]\nfrom = \"r.io/{c}/*\"\nto = \"r.io/c/*\"\n"),
            format!("version = 1\n[[copy]]\nfrom = \"r.io/a/*\"\nto = \"r.io/{c}\"\n"),
            format!("version = 1\n[[copy]]\nfrom = \"https://{c}\"\nto = \"r.io/c/d\"\n"),
            format!("version = 1\n[[copy]]\nfrom = \" {c}\"\nto = \"r.io/c/d\"\n"),
            format!("version = 1\nconcurrency = \"{c}\"\n{RULE}"),
            format!("version = \"{c}\"\n{RULE}"),
            format!("version = 1\nimmutable_tags = ['{c}(']\n{RULE}"),
            format!("version = 1\nimmutable_tags = \"{c}\"\n{RULE}"),
            format!("version = 1\nstate = [\"{c}\"]\n{RULE}"),
            format!("version = 1\n{RULE}[registry.\"r.io\"]\nauth = \"{c}\"\n"),
            registry(format!(
                "auth = {{ username = \"u\", password_env = [\"{c}\"] }}"
            )),
            registry(format!("auth = {{ username = \"{c}\", config = \"x\" }}")),
            registry(format!("auth = {{ anonymous = \"{c}\" }}")),
            registry(format!("insecure = \"{c}\"")),
            registry(format!("endpoint = \"{c}\"")),
            registry(format!("endpoint = \"https://user:{c}@r.io\"")),
            registry(format!("endpoint = \"ftp://{c}\"")),
            registry(format!("endpoint = \"http://{c}\"")),
            registry(format!("api = \"https://{c}:x\"")),
            registry(format!("ca_file = \"/nonexistent/{c}.pem\"")),
            registry(format!("flavor = \"{c}\"")),
            registry(format!("max_connections = \"{c}\"")),
            registry(format!("retries = \"{c}\"")),
            registry(format!("stall_timeout = \"{c}\"")),
            registry(format!("stall_timeout = \"5{c}\"")),
            registry(format!("stall_timeout = \"5 s {c}\"")),
            registry(format!("rate_limit = \"{c}\"")),
            registry(format!("rate_limit = {{ requests_per_second = \"{c}\" }}")),
            registry(format!(
                "rate_limit = {{ requests_per_second = 1, burst = \"{c}\" }}"
            )),
            copy(format!("tags = \"{c}\"")),
            copy(format!("tags = {{ include = ['{c}('] }}")),
            copy(format!("tags = {{ exclude = ['x', '{c}['] }}")),
            copy(format!("tags = {{ exclude = \"{c}\" }}")),
            copy(format!("tags = {{ semver = \"{c}\" }}")),
            copy(format!("tags = {{ semver = \">=1, {c}\" }}")),
            copy(format!("tags = {{ semver = \"1.{c}\" }}")),
            copy(format!("tags = {{ newest = \"{c}\" }}")),
            copy(format!("referrers = \"{c}\"")),
            copy(format!("referrers = {{ artifact_types = [\"{c}\"] }}")),
            copy(format!("referrers = {{ artifact_types = \"{c}\" }}")),
            copy(format!("platforms = \"{c}\"")),
            copy(format!(
                "platforms = [\"linux/{c}!\"]\nplatform_mode = \"sparse\""
            )),
            copy(format!(
                "platforms = [\"linux/{c}\", \"linux/{c}\"]\nplatform_mode = \"sparse\""
            )),
            copy(format!(
                "platforms = [\"linux/amd64\"]\nplatform_mode = \"{c}\""
            )),
            copy(format!("platform_mode = \"{c}\"")),
            format!("version = 1\n[[retain]]\nrepository = \"{c}\"\n"),
            format!("version = 1\n[[retain]]\nrepository = \"r.io/a:{c}\"\n"),
            retain(format!("keep_newest = \"{c}\"")),
            retain(format!("keep_tags = ['{c}(']")),
            retain(format!("delete_tags = ['{c}(']")),
            retain(format!("older_than = \"{c}\"")),
            retain(format!("older_than = \"30{c}\"")),
            retain(format!("untagged = \"{c}\"")),
            retain(format!("max_deletions = \"{c}\"")),
            // Syntax errors around a secret: an unclosed string, a bare word.
            format!("version = 1\npassword = \"{c}\n{RULE}"),
            format!("version = 1\ntoken = {c}\n{RULE}"),
            format!("version = 1\n{RULE}tags = {{ include = ['{c}' }}\n"),
            format!("version = 1\n\"{c}\" = = 1\n"),
        ];
        for text in plans {
            refused_quietly(&text);
        }
    }

    /// Every field of every table, given a value of the wrong type: the message names the
    /// field, what it expects in words (with its range), and what was found; nothing of Rust.
    #[test]
    fn type_errors_say_what_is_expected() {
        let c = CANARY;
        // A table where a string belongs, a string anywhere else.
        const STRINGS: &[&str] = &[
            "state",
            "recheck_after",
            "registry.*.auth.username",
            "registry.*.auth.password_env",
            "registry.*.auth.config",
            "registry.*.ca_file",
            "registry.*.endpoint",
            "registry.*.api",
            "registry.*.flavor",
            "registry.*.stall_timeout",
            "copy.from",
            "copy.to",
            "copy.platform_mode",
            "copy.tags.semver",
            "retain.repository",
            "retain.older_than",
        ];
        let wrong = |shape: &str| match STRINGS.contains(&shape) {
            true => format!("{{ x = \"{c}\" }}"),
            false => format!("\"{c}\""),
        };
        let mut checked = 0;
        for table in [
            "",
            "registry.*",
            "registry.*.auth",
            "registry.*.rate_limit",
            "copy",
            "copy.tags",
            "retain",
        ] {
            for field in fields(table).unwrap() {
                let shape = if table.is_empty() {
                    field.to_string()
                } else {
                    format!("{table}.{field}")
                };
                if [
                    "registry",
                    "copy",
                    "retain",
                    "copy.referrers",
                    "copy.platforms",
                ]
                .contains(&shape.as_str())
                {
                    continue; // tables of tables, and values ferry reads itself
                }
                let v = wrong(&shape);
                let text = match table {
                    "" if *field == "version" => format!("version = {v}\n{RULE}"),
                    "" => format!("version = 1\n{field} = {v}\n{RULE}"),
                    "registry.*" => format!("version = 1\n{RULE}[registry.\"r.io\"]\n{field} = {v}\n"),
                    "registry.*.auth" => format!("version = 1\n{RULE}[registry.\"r.io\".auth]\n{field} = {v}\n"),
                    "registry.*.rate_limit" if *field == "requests_per_second" => format!("version = 1\n{RULE}[registry.\"r.io\".rate_limit]\n{field} = {v}\n"),
                    "registry.*.rate_limit" => format!("version = 1\n{RULE}[registry.\"r.io\".rate_limit]\nrequests_per_second = 1\n{field} = {v}\n"),
                    "copy" if ["from", "to"].contains(field) => {
                        let (from, to) = if *field == "from" { (v.clone(), "\"r.io/c/d\"".into()) } else { ("\"r.io/a/b\"".into(), v.clone()) };
                        format!("version = 1\n[[copy]]\nfrom = {from}\nto = {to}\n")
                    }
                    "copy" => format!("version = 1\n{RULE}{field} = {v}\n"),
                    "copy.tags" => format!("version = 1\n{RULE}[copy.tags]\n{field} = {v}\n"),
                    "retain" if *field == "repository" => format!("version = 1\n[[retain]]\nrepository = {v}\n"),
                    "retain" => format!("version = 1\n[[retain]]\nrepository = \"r.io/a/b\"\n{field} = {v}\n"),
                    _ => unreachable!(),
                };
                let e = refused_quietly(&text);
                let wanted = expected(&shape).unwrap();
                assert!(
                    e.contains(&format!("{field}: expected {wanted}, found a")),
                    "{shape}: {e}\n--- plan\n{text}"
                );
                for word in RUST {
                    assert!(!e.contains(word), "{shape}: `{word}` in {e}");
                }
                checked += 1;
            }
        }
        assert!(checked >= 30, "{checked}");
        // Ranges are named where a field has one; lists say what each entry must be.
        let e = refused_quietly(&format!("version = 1\nconcurrency = \"eight\"\n{RULE}"));
        assert_eq!(
            e,
            "p.toml:2:15: concurrency: expected an integer from 1 to 256, found a string"
        );
        let e = refused_quietly(&format!("version = 1\nconcurrency = 2.5\n{RULE}"));
        assert!(e.ends_with("found a decimal number"), "{e}");
        let e = refused_quietly(&format!("version = 1\nimmutable_tags = ['^v', 3]\n{RULE}"));
        assert_eq!(e, "p.toml:2:25: immutable_tags: expected a regular expression (a string) in the list, found an integer");
        let e = refused_quietly(&format!(
            "version = 1\n{RULE}[registry.\"r.io\"]\nmax_connections = true\n"
        ));
        assert!(e.contains("registry.\"r.io\".max_connections: expected an integer from 1 to 1024, found a boolean"), "{e}");
        let e = refused_quietly(&format!(
            "version = 1\n{RULE}[registry.\"r.io\"]\nretries = -1\n"
        ));
        assert!(e.contains("retries = -1: must be between 0 and 100"), "{e}");
        let e = refused_quietly(&format!("version = 1\n{RULE}[[copy.tags]]\nnewest = 1\n"));
        assert!(e.contains("copy.tags: expected a table: {"), "{e}");
        assert!(e.ends_with("found an array of tables"), "{e}");
        let e = refused_quietly("version = 1\ncopy = 3\n");
        assert!(
            e.contains("copy: expected [[copy]] tables, found an integer"),
            "{e}"
        );
        let e = refused_quietly("version = 1\n[registry]\nx = 3\n");
        assert!(
            e.contains("registry.x: expected a table of settings"),
            "{e}"
        );
        let e = refused_quietly("version = 1\n[[copy]]\nfrom = \"r.io/a\"\n");
        assert_eq!(e, "p.toml:2:1: [[copy]]: missing field `to`");
        let e = refused_quietly(&format!(
            "version = 1\n{RULE}[registry.\"r.io\"]\nrate_limit = {{ burst = 2 }}\n"
        ));
        assert!(
            e.contains("[registry.\"r.io\".rate_limit]: missing field `requests_per_second`"),
            "{e}"
        );
    }

    /// The schema's field lists are the `Raw*` types' own: serde lists a table's fields when
    /// it refuses an unknown one.
    #[test]
    fn schema_fields_match_the_raw_types() {
        let cases = [
            ("", "version = 1\nzz = 1\n".to_string()),
            (
                "registry.*",
                "version = 1\n[registry.\"r.io\"]\nzz = 1\n".into(),
            ),
            (
                "registry.*.auth",
                "version = 1\n[registry.\"r.io\".auth]\nzz = 1\n".into(),
            ),
            (
                "registry.*.rate_limit",
                "version = 1\n[registry.\"r.io\".rate_limit]\nrequests_per_second = 1\nzz = 1\n"
                    .into(),
            ),
            ("copy", format!("version = 1\n{RULE}zz = 1\n")),
            (
                "copy.tags",
                format!("version = 1\n{RULE}[copy.tags]\nzz = 1\n"),
            ),
            (
                "retain",
                "version = 1\n[[retain]]\nrepository = \"r.io/a\"\nzz = 1\n".into(),
            ),
        ];
        for (shape, text) in cases {
            let serde = toml::from_str::<super::super::RawPlan>(&text)
                .err()
                .expect("refused")
                .message()
                .to_string();
            let list: Vec<String> = fields(shape)
                .unwrap()
                .iter()
                .map(|f| format!("`{f}`"))
                .collect();
            // serde's wording: "`a` or `b`" for two, "one of `a`, `b`, `c`" for more.
            let wanted = match list.as_slice() {
                [a, b] => format!("{a} or {b}"),
                _ => format!("one of {}", list.join(", ")),
            };
            assert_eq!(
                serde,
                format!("unknown field `zz`, expected {wanted}"),
                "{shape}"
            );
        }
    }

    #[test]
    fn not_utf8_gets_the_position_of_the_first_bad_byte() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.toml");
        std::fs::write(&path, b"version = 1\n# caf\xc3\xa9 \xff\xfe\n").unwrap();
        let e = Plan::load(&path).unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "{}:2:8: not UTF-8 text (byte 0xFF); save the plan as UTF-8",
                path.display()
            )
        );
        std::fs::write(&path, b"\xc3").unwrap();
        let e = Plan::load(&path).unwrap_err().to_string();
        assert!(
            e.ends_with("p.toml:1:1: not UTF-8 text (byte 0xC3); save the plan as UTF-8"),
            "{e}"
        );
    }

    #[test]
    fn a_plan_without_rules_is_refused() {
        let e = err("version = 1\n[registry.\"r.io\"]\ninsecure = true\n");
        assert_eq!(
            e,
            "p.toml:4:1: the plan has no [[copy]] or [[retain]] rule: nothing to do"
        );
        let e = err("version = 1");
        assert!(e.starts_with("p.toml:1:12: the plan has no"), "{e}");
        // Empty tables of rules are no rules either, and a misspelt one is an unknown field.
        let e = err("version = 1\ncopy = []\n");
        assert!(e.contains("has no [[copy]]"), "{e}");
        let e = err("version = 1\n[[copies]]\nfrom = \"a/b\"\n");
        assert!(e.contains("unknown field `copies` in the top level"), "{e}");
    }

    #[test]
    fn semver_and_duration_reasons_keep_only_operators() {
        let reason = |s: &str| semver_reason(&semver::VersionReq::parse(s).unwrap_err());
        assert_eq!(
            reason(">>1"),
            "unexpected character '>' while parsing major version number"
        );
        assert_eq!(
            reason("Secret"),
            "unexpected character while parsing major version number"
        );
        assert!(!reason("1.2.3.Q").contains('Q'), "{}", reason("1.2.3.Q"));
        assert!(!reason("=1 Q").contains('Q'), "{}", reason("=1 Q"));
        let reason = |s: &str| duration_reason(s, &humantime::parse_duration(s).unwrap_err());
        assert_eq!(
            reason("5Qx"),
            "unknown unit at position 2 (units: s, m, h, d, w, and their long names)"
        );
        assert_eq!(reason("Q"), "a number is expected at position 1");
        assert_eq!(reason(""), "it is empty");
    }
}
