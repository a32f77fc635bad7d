//! Checks for the names a registry hands ferry: repository names, tags and digests from
//! catalogs, tag lists, the Docker Hub and GitHub APIs, referrers lists and indexes, and the
//! directory names a layout walk finds. None of them is trusted: a catalog that lists
//! `org/../../escaped` would otherwise become the URL `/v2/escaped/…` (URL parsing normalises
//! the `..` away) and the layout `/data/escaped`, outside the directory the plan named.
//!
//! Each check accepts exactly what the distribution grammar accepts and, for a name it
//! refuses, says which rule the name breaks. A refused name is printed escaped and cut short
//! ([`NameError`]'s `Display`): it came from the registry, which must not be able to put
//! terminal escapes or megabytes into ferry's output.
//!
//! This module is a leaf: no I/O, nothing of the rest of ferry.

use std::fmt;
use std::sync::LazyLock;

use regex::Regex;

/// The longest repository name the distribution spec allows.
pub const MAX_REPOSITORY: usize = 255;

/// The longest tag the distribution spec allows.
pub const MAX_TAG: usize = 128;

/// How many characters of a refused name an error shows.
const SHOWN_CHARS: usize = 64;

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`, anchored.
static REPOSITORY: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$",
    )
    .expect("static regex")
});
/// One path component of a repository name.
static COMPONENT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*$").expect("static regex"));
/// `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`, checked byte by byte: a no-op checks a tag or a
/// digest several times for each of its requests, and a regex search costs ten times this.
fn is_tag(name: &str) -> bool {
    let b = name.as_bytes();
    let tail = |c: &u8| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-');
    (1..=MAX_TAG).contains(&b.len())
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b[1..].iter().all(tail)
}

/// The digests ferry can verify: sha256 and sha512, lowercase hex of their exact length.
pub fn is_digest(name: &str) -> bool {
    let hex = |h: &str| h.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'));
    match name.split_once(':') {
        Some(("sha256", h)) => h.len() == 64 && hex(h),
        Some(("sha512", h)) => h.len() == 128 && hex(h),
        _ => false,
    }
}

/// What kind of name was checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Repository,
    Tag,
    Digest,
    /// A directory path below a layout root (what a wildcard over layouts maps).
    LayoutPath,
}

impl Kind {
    fn noun(self) -> &'static str {
        match self {
            Kind::Repository => "repository",
            Kind::Tag => "tag",
            Kind::Digest => "digest",
            Kind::LayoutPath => "layout path",
        }
    }

    fn valid(self) -> &'static str {
        match self {
            Kind::Repository => "a valid repository name",
            Kind::Tag => "a valid tag",
            Kind::Digest => "a digest ferry can verify",
            Kind::LayoutPath => "a relative path below the layout root",
        }
    }
}

/// Which rule a refused name breaks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Broken {
    Empty,
    /// Longer than the grammar allows (`max` bytes).
    TooLong {
        max: usize,
    },
    /// A character this kind of name never holds (an uppercase letter in a repository name,
    /// a space, a control character, anything outside ASCII).
    Character(char),
    /// An empty path component: a leading, trailing or doubled `/`.
    EmptyComponent,
    /// A `.` or `..` path component: a step through the file system, not a name.
    DotComponent,
    /// A repository path component that starts or ends with a separator, or separators
    /// other than `.`, `_`, `__` or a run of `-` between two alphanumerics.
    Separator(String),
    /// A tag that starts with `.` or `-`.
    TagStart(char),
    /// A digest that is not `sha256:…` or `sha512:…`.
    Algorithm,
    /// Refused by the grammar for a reason the checks above do not name (none is known: the
    /// property tests look for one; a message beats a panic on input a registry sent).
    Grammar,
    /// A digest whose encoded part is not `hex` lowercase hex digits.
    Encoded {
        algorithm: &'static str,
        hex: usize,
    },
}

impl fmt::Display for Broken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Broken::Empty => f.write_str("it is empty"),
            Broken::TooLong { max } => write!(f, "longer than {max} characters"),
            Broken::Character(c) => write!(f, "{} is not allowed in it", quoted_char(*c)),
            Broken::EmptyComponent => f.write_str("an empty path component (a leading, trailing or doubled `/`)"),
            Broken::DotComponent => {
                f.write_str("a `.` or `..` path component, which would step outside its place")
            }
            Broken::Separator(component) => write!(
                f,
                "component {} starts or ends with a separator or joins with one other than `.`, `_`, `__` or `-`",
                shown(component)
            ),
            Broken::TagStart(c) => write!(f, "a tag cannot start with {}", quoted_char(*c)),
            Broken::Algorithm => {
                f.write_str("not sha256:<64 hex digits> or sha512:<128 hex digits>")
            }
            Broken::Grammar => f.write_str("it does not follow the distribution grammar"),
            Broken::Encoded { algorithm, hex } => {
                write!(f, "a {algorithm} digest is {hex} lowercase hex digits")
            }
        }
    }
}

/// A name that fails its check. The name is kept cut short; `Display` shows it escaped.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{} {} is not {} ({broken})", kind.noun(), shown_with_length(name, *len), kind.valid())]
pub struct NameError {
    pub kind: Kind,
    /// The name, its first characters only when it was long.
    pub name: String,
    /// The name's length in bytes.
    pub len: usize,
    pub broken: Broken,
}

impl NameError {
    fn new(kind: Kind, name: &str, broken: Broken) -> NameError {
        NameError {
            kind,
            name: name.chars().take(SHOWN_CHARS + 1).collect(),
            len: name.len(),
            broken,
        }
    }
}

/// A name as messages show it: in double quotes, with everything but printable ASCII
/// escaped (`\n`, `\u{1b}`), cut after its first characters.
pub fn shown(name: &str) -> String {
    let mut out = String::with_capacity(name.len().min(SHOWN_CHARS) + 2);
    out.push('"');
    for c in name.chars().take(SHOWN_CHARS) {
        push_escaped(&mut out, c, Some('"'));
    }
    out.push('"');
    if name.chars().nth(SHOWN_CHARS).is_some() {
        out.push('…');
    }
    out
}

/// Text a registry had a hand in (a parser's message quoting a value), safe to print: anything
/// but printable ASCII escaped as in [`shown`], cut after `max` characters.
pub fn printable(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max));
    for c in text.chars().take(max) {
        push_escaped(&mut out, c, None);
    }
    if text.chars().nth(max).is_some() {
        out.push('…');
    }
    out
}

fn shown_with_length(name: &str, len: usize) -> String {
    let short = shown(name);
    if name.chars().nth(SHOWN_CHARS).is_some() {
        format!("{short} ({len} bytes)")
    } else {
        short
    }
}

fn quoted_char(c: char) -> String {
    let mut out = String::from("'");
    push_escaped(&mut out, c, Some('\''));
    out.push('\'');
    out
}

fn push_escaped(out: &mut String, c: char, quote: Option<char>) {
    match c {
        '\\' => out.push_str("\\\\"),
        c if Some(c) == quote => {
            out.push('\\');
            out.push(c);
        }
        ' '..='~' => out.push(c),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        c => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
    }
}

/// A repository name (`org/team/app`) per the distribution grammar, at most 255 bytes.
pub fn repository(name: &str) -> Result<(), NameError> {
    if REPOSITORY.is_match(name) && name.len() <= MAX_REPOSITORY {
        return Ok(());
    }
    let refuse = |broken| Err(NameError::new(Kind::Repository, name, broken));
    if name.is_empty() {
        return refuse(Broken::Empty);
    }
    if let Some(c) = name
        .chars()
        .find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '.' | '_' | '-' | '/'))
    {
        return refuse(Broken::Character(c));
    }
    // Components before length: that a name steps out with `..` matters more than its size.
    for component in name.split('/') {
        match component {
            "" => return refuse(Broken::EmptyComponent),
            "." | ".." => return refuse(Broken::DotComponent),
            c if !COMPONENT.is_match(c) => return refuse(Broken::Separator(c.to_string())),
            _ => {}
        }
    }
    if name.len() > MAX_REPOSITORY {
        return refuse(Broken::TooLong {
            max: MAX_REPOSITORY,
        });
    }
    debug_assert!(false, "undiagnosed repository name {name:?}");
    refuse(Broken::Grammar)
}

/// A tag: `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
pub fn tag(name: &str) -> Result<(), NameError> {
    if is_tag(name) {
        return Ok(());
    }
    let refuse = |broken| Err(NameError::new(Kind::Tag, name, broken));
    if name.is_empty() {
        return refuse(Broken::Empty);
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return refuse(Broken::Character(c));
    }
    if let Some(c @ ('.' | '-')) = name.chars().next() {
        return refuse(Broken::TagStart(c));
    }
    if name.len() > MAX_TAG {
        return refuse(Broken::TooLong { max: MAX_TAG });
    }
    debug_assert!(false, "undiagnosed tag {name:?}");
    refuse(Broken::Grammar)
}

/// A digest ferry can verify: `sha256:` and 64 lowercase hex digits, or `sha512:` and 128.
/// Other algorithms the OCI spec registers are refused too: ferry could not check the bytes.
pub fn digest(name: &str) -> Result<(), NameError> {
    if is_digest(name) {
        return Ok(());
    }
    let refuse = |broken| Err(NameError::new(Kind::Digest, name, broken));
    if name.is_empty() {
        return refuse(Broken::Empty);
    }
    let (algorithm, hex) = match name.split_once(':') {
        Some(("sha256", _)) => ("sha256", 64),
        Some(("sha512", _)) => ("sha512", 128),
        _ => return refuse(Broken::Algorithm),
    };
    refuse(Broken::Encoded { algorithm, hex })
}

/// What a manifest is asked for by: a digest (it holds a `:`, which no tag does) or a tag.
pub fn reference(name: &str) -> Result<(), NameError> {
    if name.contains(':') {
        digest(name)
    } else {
        tag(name)
    }
}

/// One spelling of a layout path for keys (`./out/a/`, `out//a` and `out/a` are one
/// directory): the plan parses every layout path to it, so that the checkpoint, stages, conflicts,
/// retention's pins and `ferry plan`'s overlay all meet on one key.
pub fn canonical_layout_path(repo: &str) -> String {
    let parts: Vec<&str> = repo
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    match repo.starts_with('/') {
        true => format!("/{}", parts.join("/")),
        false => parts.join("/"),
    }
}

/// A path below a layout root, as a wildcard over layouts maps it (`team/app` of
/// `oci:/data/out/*`): relative, every component a plain name (no `.` or `..`, nothing
/// empty) without control characters. Leaves the file system alone; see
/// `registry::layout::join_under` for the joined path.
pub fn layout_path(path: &str) -> Result<(), NameError> {
    let refuse = |broken| Err(NameError::new(Kind::LayoutPath, path, broken));
    if path.is_empty() {
        return refuse(Broken::Empty);
    }
    if let Some(c) = path.chars().find(|c| c.is_control() || *c == '\\') {
        // A backslash is a separator on Windows; control characters have no place in a
        // directory name ferry prints.
        return refuse(Broken::Character(c));
    }
    for component in path.split('/') {
        match component {
            "" => return refuse(Broken::EmptyComponent),
            "." | ".." => return refuse(Broken::DotComponent),
            _ => {}
        }
    }
    Ok(())
}

/// Split names a registry listed into those that pass `check` and an error for each one
/// that does not, so one bad name costs itself and not the listing.
pub fn sort_out(
    listed: Vec<String>,
    check: fn(&str) -> Result<(), NameError>,
) -> (Vec<String>, Vec<NameError>) {
    let mut good = Vec::with_capacity(listed.len());
    let mut bad = Vec::new();
    for name in listed {
        match check(&name) {
            Ok(()) => good.push(name),
            Err(e) => bad.push(e),
        }
    }
    (good, bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broken(r: Result<(), NameError>) -> Broken {
        r.expect_err("refused").broken
    }

    #[test]
    fn repositories() {
        for ok in [
            "a",
            "org/ok",
            "library/nginx",
            "a.b_c__d---e/f-g",
            "0/1/2",
            &"a".repeat(255),
        ] {
            assert_eq!(repository(ok), Ok(()), "{ok:?}");
        }
        assert_eq!(broken(repository("")), Broken::Empty);
        assert_eq!(
            broken(repository("org/../../escaped")),
            Broken::DotComponent
        );
        assert_eq!(broken(repository("./a")), Broken::DotComponent);
        assert_eq!(broken(repository("/abs")), Broken::EmptyComponent);
        assert_eq!(broken(repository("a/")), Broken::EmptyComponent);
        assert_eq!(broken(repository("a//b")), Broken::EmptyComponent);
        assert_eq!(broken(repository("Org/app")), Broken::Character('O'));
        assert_eq!(broken(repository("a b")), Broken::Character(' '));
        assert_eq!(
            broken(repository("a\u{1b}[2J")),
            Broken::Character('\u{1b}')
        );
        assert_eq!(
            broken(repository(&"a".repeat(256))),
            Broken::TooLong { max: 255 }
        );
        for sep in ["a/-b", "a/b.", "a/b..c", "a/b___c", "a/b._c", "a/_"] {
            assert!(
                matches!(broken(repository(sep)), Broken::Separator(_)),
                "{sep:?}"
            );
        }
    }

    #[test]
    fn tags() {
        for ok in ["v1", "_x", "1.27.3-alpine", "A_b.c-D", &"t".repeat(128)] {
            assert_eq!(tag(ok), Ok(()), "{ok:?}");
        }
        assert_eq!(broken(tag("")), Broken::Empty);
        assert_eq!(broken(tag("../x")), Broken::Character('/'));
        assert_eq!(broken(tag(".hidden")), Broken::TagStart('.'));
        assert_eq!(broken(tag("-rm")), Broken::TagStart('-'));
        assert_eq!(broken(tag("bad\ntag")), Broken::Character('\n'));
        assert_eq!(broken(tag(&"t".repeat(200))), Broken::TooLong { max: 128 });
        assert_eq!(broken(tag("v1:x")), Broken::Character(':'));
    }

    #[test]
    fn digests() {
        let hex = "0123456789abcdef".repeat(4);
        assert_eq!(digest(&format!("sha256:{hex}")), Ok(()));
        assert_eq!(digest(&format!("sha512:{hex}{hex}")), Ok(()));
        assert_eq!(broken(digest("")), Broken::Empty);
        assert_eq!(broken(digest("sha256")), Broken::Algorithm);
        assert_eq!(broken(digest(&format!("sha384:{hex}"))), Broken::Algorithm);
        assert_eq!(
            broken(digest(&format!("sha256:{}", hex.to_uppercase()))),
            Broken::Encoded {
                algorithm: "sha256",
                hex: 64
            }
        );
        assert_eq!(
            broken(digest("sha256:../../x")),
            Broken::Encoded {
                algorithm: "sha256",
                hex: 64
            }
        );
        assert_eq!(reference("v1"), Ok(()));
        assert_eq!(reference(&format!("sha256:{hex}")), Ok(()));
        assert_eq!(
            broken(reference("sha256:abc")).to_string(),
            "a sha256 digest is 64 lowercase hex digits"
        );
    }

    #[test]
    fn layout_paths() {
        for ok in ["a", "team/app", "with space/x", "é", "a.b/..c"] {
            assert_eq!(layout_path(ok), Ok(()), "{ok:?}");
        }
        assert_eq!(broken(layout_path("")), Broken::Empty);
        assert_eq!(broken(layout_path("../x")), Broken::DotComponent);
        assert_eq!(broken(layout_path("a/./b")), Broken::DotComponent);
        assert_eq!(broken(layout_path("/etc")), Broken::EmptyComponent);
        assert_eq!(broken(layout_path("a//b")), Broken::EmptyComponent);
        assert_eq!(broken(layout_path("a\\..\\b")), Broken::Character('\\'));
        assert_eq!(broken(layout_path("a\nb")), Broken::Character('\n'));
    }

    #[test]
    fn messages_name_the_name_escaped_and_short() {
        let e = repository("org/../../escaped").unwrap_err();
        assert_eq!(
            e.to_string(),
            "repository \"org/../../escaped\" is not a valid repository name (a `.` or `..` path component, which would step outside its place)"
        );
        let e = tag("bad\ntag\u{1b}[31m\"").unwrap_err();
        assert_eq!(
            e.to_string(),
            "tag \"bad\\ntag\\u{1b}[31m\\\"\" is not a valid tag ('\\n' is not allowed in it)"
        );
        let long = format!("{}\u{7}", "x".repeat(5_000_000));
        let e = tag(&long).unwrap_err();
        let shown = e.to_string();
        assert!(shown.len() < 300, "{shown}");
        assert!(
            shown.contains("…") && shown.contains("(5000001 bytes)"),
            "{shown}"
        );
        assert!(!shown.contains('\u{7}'), "{shown}");
        // What is kept of the name is bounded too.
        assert!(e.name.chars().count() <= SHOWN_CHARS + 1);
        assert_eq!(
            tag("x\u{202e}").unwrap_err().to_string(),
            "tag \"x\\u{202e}\" is not a valid tag ('\\u{202e}' is not allowed in it)"
        );
    }

    #[test]
    fn printable_text_escapes_and_cuts() {
        assert_eq!(printable("plain `text`: ok", 100), "plain `text`: ok");
        assert_eq!(printable("a\u{1b}[2Jb\n", 100), "a\\u{1b}[2Jb\\n");
        assert_eq!(printable("abcdef", 3), "abc…");
    }

    #[test]
    fn sorting_out_keeps_the_good_names_in_order() {
        let listed = ["org/ok", "org/../../escaped", "org/b", "Org/c"].map(String::from);
        let (good, bad) = sort_out(listed.to_vec(), repository);
        assert_eq!(good, ["org/ok", "org/b"]);
        assert_eq!(
            bad.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(),
            ["org/../../escaped", "Org/c"]
        );
    }
}
