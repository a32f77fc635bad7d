//! ArgoCD Image Updater: which images it tracks for an Application, read from its v0.x
//! annotations (`argocd-image-updater.argoproj.io/image-list` and the per-alias settings) or
//! a v1.x `ImageUpdater` resource, and the tag it would choose now among a repository's tags
//! ([`pick`]), so retention never deletes what the next sync deploys. No I/O: the source
//! reads the settings, the run lists the tags.
//!
//! Where the updater's choice cannot be worked out from tags alone (`newest-build` needs
//! creation dates) or its settings cannot be read, every tag the allow/ignore filters admit
//! is kept, and the reason says so (fail safe).

use std::collections::BTreeMap;

use semver::{Version, VersionReq};

/// The annotations' prefix.
pub const ANNOTATION: &str = "argocd-image-updater.argoproj.io";

/// One image the updater tracks for one Application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tracked {
    /// The image without tag or constraint (`ghcr.io/org/api`).
    pub image: String,
    /// The version constraint (`1.x`, `~1.2`), or the tag followed with `digest`.
    pub constraint: Option<String>,
    pub strategy: Strategy,
    /// `allow-tags` / `allowTags`: a regular expression (the `regexp:` prefix removed).
    pub allow: Option<String>,
    /// `ignore-tags` / `ignoreTags`: glob patterns.
    pub ignore: Vec<String>,
    /// The Application, `namespace/name`.
    pub app: String,
}

/// `update-strategy`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// The highest version matching the constraint (the default).
    Semver,
    /// The tag pushed last (`newest-build`, formerly `latest`): needs creation dates.
    NewestBuild,
    /// The last tag in lexical order (`alphabetical`, formerly `name`).
    Alphabetical,
    /// The newest digest of one mutable tag (the constraint names it).
    Digest,
    /// A strategy this version of ferry does not know (kept as written, for the reason).
    Unknown(String),
}

impl Strategy {
    pub fn parse(s: &str) -> Strategy {
        match s.trim() {
            "" | "semver" => Strategy::Semver,
            "newest-build" | "latest" => Strategy::NewestBuild,
            "alphabetical" | "name" => Strategy::Alphabetical,
            "digest" => Strategy::Digest,
            other => Strategy::Unknown(other.to_string()),
        }
    }
}

/// The images an Application's v0.x annotations track (none without `image-list`).
pub fn from_annotations(app: &str, annotations: &BTreeMap<String, String>) -> Vec<Tracked> {
    let Some(list) = annotations.get(&format!("{ANNOTATION}/image-list")) else {
        return Vec::new();
    };
    let setting = |alias: &str, key: &str| {
        annotations
            .get(&format!("{ANNOTATION}/{alias}.{key}"))
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    };
    let mut out = Vec::new();
    for spec in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (alias, image) = match spec.split_once('=') {
            Some((alias, image)) => (Some(alias.trim()), image.trim()),
            None => (None, spec),
        };
        let (image, constraint) = split_constraint(image);
        let get = |key: &str| alias.and_then(|a| setting(a, key));
        out.push(Tracked {
            image: image.to_string(),
            constraint,
            strategy: Strategy::parse(&get("update-strategy").unwrap_or_default()),
            allow: get("allow-tags").map(|a| allow_pattern(&a)),
            ignore: get("ignore-tags")
                .map(|i| split_list(&i))
                .unwrap_or_default(),
            app: app.to_string(),
        });
    }
    out
}

/// `regexp:RE` -> `RE`; `any` (every tag) -> `.*`.
pub fn allow_pattern(s: &str) -> String {
    let s = s.trim();
    match s.strip_prefix("regexp:") {
        Some(re) => re.to_string(),
        None if s == "any" => ".*".to_string(),
        None => s.to_string(),
    }
}

/// `a, b,c` -> `[a, b, c]`.
pub fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect()
}

/// `host:5000/org/app:1.x` -> (`host:5000/org/app`, `1.x`): a port's colon comes before
/// the last `/`.
pub fn split_constraint(image: &str) -> (&str, Option<String>) {
    let last = image.rfind('/').map_or(0, |i| i + 1);
    match image[last..].find(':') {
        Some(i) => {
            let c = image[last + i + 1..].trim();
            (&image[..last + i], (!c.is_empty()).then(|| c.to_string()))
        }
        None => (image, None),
    }
}

/// The tags to keep for `t` among `tags`, each with why.
pub fn pick(t: &Tracked, tags: &[String]) -> Vec<(String, String)> {
    let next = format!("next ArgoCD Image Updater pick for {}", t.app);
    let admitted = match admitted(t, tags) {
        Ok(a) => a,
        Err(why) => {
            // The updater cannot apply these settings either; keep everything, say why.
            let reason = format!("{next} ({why}; every tag kept)");
            return tags
                .iter()
                .map(|tag| (tag.clone(), reason.clone()))
                .collect();
        }
    };
    let chosen: Vec<&String> = match &t.strategy {
        Strategy::Semver => match semver_pick(t.constraint.as_deref(), &admitted) {
            Ok(chosen) => chosen,
            Err(why) => {
                let reason = format!("{next} ({why}; every allowed tag kept)");
                return admitted
                    .iter()
                    .map(|g| ((*g).clone(), reason.clone()))
                    .collect();
            }
        },
        Strategy::Alphabetical => admitted.iter().max().copied().into_iter().collect(),
        Strategy::Digest => {
            let tag = t.constraint.clone().unwrap_or_else(|| "latest".into());
            return vec![(tag, format!("{next} (digest of the tag it follows)"))];
        }
        Strategy::NewestBuild | Strategy::Unknown(_) => {
            let name = match &t.strategy {
                Strategy::Unknown(s) => format!("update strategy {s}"),
                _ => "newest-build".to_string(),
            };
            let reason = format!(
                "{next} ({name} cannot be evaluated from tags alone; every allowed tag kept)"
            );
            return admitted
                .iter()
                .map(|g| ((*g).clone(), reason.clone()))
                .collect();
        }
    };
    chosen
        .into_iter()
        .map(|g| (g.clone(), next.clone()))
        .collect()
}

/// The tags `allow` admits and `ignore` does not.
fn admitted<'a>(t: &Tracked, tags: &'a [String]) -> Result<Vec<&'a String>, String> {
    let allow = match &t.allow {
        Some(re) => Some(
            regex::Regex::new(re).map_err(|_| "allow-tags is not a valid regular expression")?,
        ),
        None => None,
    };
    let ignore = t
        .ignore
        .iter()
        .map(|g| glob::Pattern::new(g))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| "ignore-tags is not a valid glob pattern")?;
    Ok(tags
        .iter()
        .filter(|tag| allow.as_ref().is_none_or(|re| re.is_match(tag)))
        .filter(|tag| !ignore.iter().any(|g| g.matches(tag)))
        .collect())
}

/// The highest version among `tags` that meets `constraint` (any version without one; then
/// the highest release too, should the highest be a pre-release).
fn semver_pick<'a>(
    constraint: Option<&str>,
    tags: &[&'a String],
) -> Result<Vec<&'a String>, String> {
    let versions: Vec<(Version, &String)> = tags
        .iter()
        .filter_map(|t| loose_version(t).map(|v| (v, *t)))
        .collect();
    let Some(constraint) = constraint else {
        let top = versions.iter().max_by(|a, b| a.0.cmp(&b.0));
        let release = (versions.iter().filter(|v| v.0.pre.is_empty())).max_by(|a, b| a.0.cmp(&b.0));
        let mut out: Vec<&String> = top.into_iter().chain(release).map(|v| v.1).collect();
        out.dedup();
        return Ok(out);
    };
    let reqs = constraint_reqs(constraint)?;
    Ok(versions
        .iter()
        .filter(|(v, _)| reqs.iter().any(|r| r.matches(v)))
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|v| v.1)
        .into_iter()
        .collect())
}

/// A constraint as the updater (Masterminds semver) reads it: `||` between alternatives,
/// comparators separated by commas or spaces, a bare version (`1.2`) meaning exactly that
/// (`>=1.2.0, <1.3.0`), not a caret range as Cargo reads it.
pub fn constraint_reqs(constraint: &str) -> Result<Vec<VersionReq>, String> {
    let bad = || "the version constraint is not valid".to_string();
    let mut out = Vec::new();
    for alternative in constraint.split("||") {
        let mut parts = Vec::new();
        let mut pending_op: Option<&str> = None;
        for word in alternative.split([',', ' ']).filter(|w| !w.is_empty()) {
            if word.chars().all(|c| "<>=!~^".contains(c)) {
                pending_op = Some(word);
                continue;
            }
            let word = word.trim_start_matches('v');
            let mut part = format!("{}{word}", pending_op.take().unwrap_or_default());
            let starts_bare = part.starts_with(|c: char| c.is_ascii_digit());
            let wildcard = part.contains(['x', 'X', '*']);
            if starts_bare && !wildcard {
                part = format!("={part}");
            }
            parts.push(part.replace("=v", "="));
        }
        if parts.is_empty() {
            return Err(bad());
        }
        out.push(VersionReq::parse(&parts.join(", ")).map_err(|_| bad())?);
    }
    Ok(out)
}

/// A tag as a version the way the updater reads it: `v1.2.3`, `1.2` (`1.2.0`), `1`
/// (`1.0.0`), with an optional pre-release and build. `None` for anything else.
pub fn loose_version(tag: &str) -> Option<Version> {
    let s = tag.strip_prefix('v').unwrap_or(tag);
    let end = s.find(['-', '+']).unwrap_or(s.len());
    let (core, rest) = s.split_at(end);
    let numbers: Vec<&str> = core.split('.').collect();
    if numbers.is_empty()
        || numbers.len() > 3
        || numbers
            .iter()
            .any(|n| n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    let mut full = numbers.join(".");
    for _ in numbers.len()..3 {
        full.push_str(".0");
    }
    Version::parse(&format!("{full}{rest}")).ok()
}

#[cfg(test)]
mod tests;
