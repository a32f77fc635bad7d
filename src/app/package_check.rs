//! Target packages whose visibility is not what their consumers expect (issue 25, part 3).
//! GHCR makes a new package private, and GitHub has no API that changes it: after a
//! migration, consumers fail to pull until someone finds the package's settings page. So
//! `ferry run`, after copying into a registry whose API tells a package's visibility (GHCR),
//! reads it for each package it copied into, compares it with what is expected (the rule's
//! `visibility`, else what the source's API says of the source: Docker Hub's `is_private`,
//! a GHCR source's visibility; else nothing is checked), and lists each package that
//! differs with its settings page and whether its image carries `org.opencontainers.image.
//! source` (the label that links a package to a repository). `ferry check --online` says the
//! same before the run ([`before_run`]). Warnings only: neither changes an exit code.
//!
//! Everything goes through the [`Registry`] trait; no request is built here.

use std::collections::BTreeMap;
use std::sync::Mutex;

use futures::{StreamExt, TryStreamExt};

use crate::copy::item::{Endpoint, Item};
use crate::copy::outcome::Outcome;
use crate::execute::label::copy_label;
use crate::plan::Plan;
use crate::registry::manifest::{self, Parsed, MAX_MANIFEST_SIZE};
use crate::registry::visibility::{RepoVisibility, Visibility};
use crate::registry::{Registry, RegistryError};
use crate::report::files::ReportPackage;
use crate::report::hints::chain as error_chain;

/// The label (or manifest annotation) that links a GHCR package to a repository.
pub const SOURCE_LABEL: &str = "org.opencontainers.image.source";

/// Packages checked at once: each is a request or two to a hosted API.
const CHECKS_IN_FLIGHT: usize = 4;

/// A package a run copied into: the first image it copied there, and from where.
#[derive(Clone)]
pub struct Written {
    pub source: Endpoint,
    pub target: Endpoint,
    /// The copy rule's number.
    pub rule: usize,
    /// A tag (or digest) of an image the run put there.
    pub reference: String,
}

/// The packages a run copies into, one per target repository, as items finish.
#[derive(Default)]
pub struct Packages(Mutex<BTreeMap<(String, String), Written>>);

impl Packages {
    /// Remember `item`'s target when it was copied (a package the run found as it should
    /// be is the user's as it was).
    pub fn note(&self, item: &Item, outcome: Option<&Outcome>) {
        let Some(Outcome::Copied { digest, .. }) = outcome else {
            return;
        };
        let key = (
            item.target.registry.name().to_string(),
            item.target.repo.clone(),
        );
        let mut packages = self.0.lock().expect("packages");
        packages.entry(key).or_insert_with(|| Written {
            source: item.source.clone(),
            target: item.target.clone(),
            rule: item.rule,
            reference: item
                .target_tag
                .clone()
                .unwrap_or_else(|| digest.to_string()),
        });
    }

    /// Every package noted, in order.
    pub fn take(&self) -> Vec<Written> {
        std::mem::take(&mut *self.0.lock().expect("packages"))
            .into_values()
            .collect()
    }
}

/// A package that needs a person.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attention {
    /// `ghcr.io/myorg/app`.
    pub package: String,
    /// What the API says; `None`: it could not be read (`error` says why).
    pub found: Option<RepoVisibility>,
    /// What it should be, and why.
    pub expected: Option<(Visibility, String)>,
    /// Does the image read carry [`SOURCE_LABEL`]? `None`: it could not be read.
    pub source_label: Option<bool>,
    pub error: Option<String>,
}

impl Attention {
    /// The run's warning line.
    pub fn line(&self) -> String {
        let Some(found) = &self.found else {
            let why = self.error.as_deref().unwrap_or("the API did not say");
            return format!("package {}: visibility unknown: {why}", self.package);
        };
        let mut line = format!("package {} is {}", self.package, found.visibility);
        if let Some((v, why)) = &self.expected {
            line.push_str(&format!(", expected {v} ({why})"));
        }
        if let Some(url) = &found.settings {
            line.push_str(&format!(
                ": change it at {url} (GitHub has no API that does)"
            ));
        }
        line.push_str(match self.source_label {
            Some(true) => "; its image carries org.opencontainers.image.source",
            Some(false) => "; its image lacks the org.opencontainers.image.source label, which links a package to a repository (and its permissions)",
            None => "",
        });
        line
    }

    /// The report's row.
    pub fn row(&self) -> ReportPackage {
        ReportPackage {
            package: self.package.clone(),
            visibility: self.found.as_ref().map(|f| f.visibility.to_string()),
            expected: self.expected.as_ref().map(|(v, _)| v.to_string()),
            expected_from: self.expected.as_ref().map(|(_, why)| why.clone()),
            settings: self.found.as_ref().and_then(|f| f.settings.clone()),
            source_label: self.source_label,
            error: self.error.clone(),
        }
    }
}

/// Every package `written` whose visibility differs from what is expected, or could not be
/// read; in order.
pub async fn after_run(plan: &Plan, written: Vec<Written>) -> Vec<Attention> {
    let checks = written
        .into_iter()
        .map(|w| async move { check_written(plan, &w).await });
    futures::stream::iter(checks)
        .buffered(CHECKS_IN_FLIGHT)
        .filter_map(|a| async move { a })
        .collect()
        .await
}

/// One package after the run: `None` when it is as expected, or when nothing says what it
/// should be, or its registry cannot tell.
async fn check_written(plan: &Plan, w: &Written) -> Option<Attention> {
    let package = w.target.display();
    let unknown = |e: RegistryError| Attention {
        package: package.clone(),
        found: None,
        expected: None,
        source_label: None,
        error: Some(error_chain(&e)),
    };
    let found = match w.target.registry.visibility(&w.target.repo).await {
        Ok(None) => return None,
        Ok(Some(found)) => found,
        Err(e) => return Some(unknown(e)),
    };
    let expected = match expected(plan, w.rule, &w.source).await {
        Ok(Some(e)) => e,
        Ok(None) => return None,
        Err(e) => return Some(unknown(e)),
    };
    if found.visibility == expected.0 {
        return None;
    }
    let reg = w.target.registry.as_ref();
    let source_label = carries_source_label(reg, &w.target.repo, &w.reference).await;
    Some(Attention {
        package,
        found: Some(found),
        expected: Some(expected),
        source_label: source_label.ok(),
        error: None,
    })
}

/// What a package copied by rule `rule` from `source` should be, and why: the rule's
/// `visibility`, else the source's where its registry tells it. `Ok(None)`: nothing says.
async fn expected(
    plan: &Plan,
    rule: usize,
    source: &Endpoint,
) -> Result<Option<(Visibility, String)>, RegistryError> {
    if let Some(v) = plan.visibility(rule) {
        let why = format!("{} says visibility = \"{v}\"", copy_label(plan, rule));
        return Ok(Some((v, why)));
    }
    let at = source.registry.visibility(&source.repo).await?;
    Ok(at.map(|s| {
        let why = format!("the source {} is {}", source.display(), s.visibility);
        (s.visibility, why)
    }))
}

/// Does the image `reference` of `repo` carry [`SOURCE_LABEL`], as a manifest annotation or
/// a label of its config? An index is asked of itself, then of its first platform's image.
pub async fn carries_source_label(
    reg: &dyn Registry,
    repo: &str,
    reference: &str,
) -> Result<bool, RegistryError> {
    let mut m = reg.get_manifest(repo, reference).await?;
    for _ in 0..manifest::MAX_INDEX_DEPTH {
        if annotated(&m.bytes) {
            return Ok(true);
        }
        let parsed = manifest::parse(&m.media_type, &m.bytes).map_err(|reason| {
            RegistryError::InvalidManifest {
                url: format!("{}/{repo}@{}", reg.name(), m.digest),
                reason,
            }
        })?;
        match parsed {
            Parsed::Index { children } => {
                // An attestation manifest (buildx's) names the image it is about.
                let Some(child) = children.iter().find(|c| c.about.is_none()) else {
                    return Ok(false);
                };
                m = reg.get_manifest(repo, child.digest.as_str()).await?;
            }
            Parsed::Image { config, .. } if config.size <= MAX_MANIFEST_SIZE => {
                let blob = reg.get_blob(repo, &config.digest, config.size).await?;
                let bytes: Vec<bytes::Bytes> = blob.try_collect().await?;
                return Ok(labelled(&bytes.concat()));
            }
            Parsed::Image { .. } => return Ok(false),
        }
    }
    Ok(false)
}

/// Does a manifest carry [`SOURCE_LABEL`] among its annotations?
fn annotated(manifest: &[u8]) -> bool {
    manifest::annotations_of(manifest).is_some_and(|a| a.contains_key(SOURCE_LABEL))
}

/// Does an image config carry [`SOURCE_LABEL`] among its labels (`config.Labels`)?
fn labelled(config: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(config)
        .ok()
        .and_then(|c| c.get("config")?.get("Labels")?.get(SOURCE_LABEL).cloned())
        .is_some()
}

/// What `ferry check --online` says before the run: for each rule's target package whose
/// registry tells visibility, one that exists with another visibility than expected, one
/// that does not exist yet while it should not be private (GHCR will make it private), and
/// one whose visibility cannot be read. Wildcards are asked of every repository they list.
pub async fn before_run(plan: &Plan, registries: &crate::copy::select::Registries) -> Vec<String> {
    let mut pairs = Vec::new();
    for rule in &plan.copies {
        let (Some(src), Some(dst)) = (
            registries.get(&rule.from.location),
            registries.get(&rule.to.location),
        ) else {
            continue;
        };
        for (from, to) in repositories(rule, src.as_ref()).await {
            let source = Endpoint {
                registry: src.clone(),
                repo: from,
            };
            let target = Endpoint {
                registry: dst.clone(),
                repo: to,
            };
            pairs.push((rule.number, source, target));
        }
    }
    let checks = pairs
        .into_iter()
        .map(|(n, s, t)| async move { check_ahead(plan, n, &s, &t).await });
    futures::stream::iter(checks)
        .buffered(CHECKS_IN_FLIGHT)
        .filter_map(|a| async move { a })
        .collect()
        .await
}

/// The (source, target) repositories of a rule; a wildcard's as its source lists them now
/// (none when it cannot: the pull check says why).
async fn repositories(
    rule: &crate::copy::copy_rule::CopyRule,
    src: &dyn Registry,
) -> Vec<(String, String)> {
    use crate::reference::Selector;
    if rule.from.selector != Selector::Wildcard {
        return vec![(rule.from.repository.clone(), rule.to.repository.clone())];
    }
    let listed = src.list_repositories(&rule.from.repository).await;
    listed
        .unwrap_or_default()
        .into_iter()
        .filter_map(|r| {
            let to = crate::copy::select::wildcard_target(rule, &r).ok()?;
            Some((r, to))
        })
        .collect()
}

/// One target package before the run: what will need attention, if anything.
async fn check_ahead(
    plan: &Plan,
    rule: usize,
    source: &Endpoint,
    target: &Endpoint,
) -> Option<String> {
    let package = target.display();
    let found = match target.registry.visibility(&target.repo).await {
        Ok(None) => return None,
        Ok(Some(found)) => Ok(found),
        Err(e) if e.is_not_found() => Err(None),
        Err(e) => Err(Some(e)),
    };
    if let Err(Some(e)) = &found {
        return Some(format!(
            "package {package}: visibility unknown: {}",
            error_chain(e)
        ));
    }
    let (expected, why) = match expected(plan, rule, source).await {
        Ok(Some(e)) => e,
        Ok(None) => return None,
        Err(e) => {
            let e = error_chain(&e);
            return Some(format!(
                "package {package}: the visibility of its source {} is unknown: {e}",
                source.display()
            ));
        }
    };
    match found {
        Ok(f) if f.visibility == expected => None,
        Ok(f) => {
            let settings = f.settings.map(|u| format!(": change it at {u}"));
            Some(format!(
                "package {package} is {}, expected {expected} ({why}){}",
                f.visibility,
                settings.unwrap_or_default()
            ))
        }
        Err(_) if expected == Visibility::Private => None,
        Err(_) => Some(format!(
            "package {package} does not exist yet, and GHCR makes a new package private: expected {expected} ({why}); after the run, change it on its settings page (ferry run names it)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_source_label_is_read_from_labels_or_annotations() {
        let config = br#"{"config":{"Labels":{"org.opencontainers.image.source":"https://github.com/o/r"}}}"#;
        assert!(labelled(config));
        assert!(!labelled(br#"{"config":{"Labels":{"fixture":"x"}}}"#));
        assert!(!labelled(br#"{"config":{}}"#));
        let m = br#"{"schemaVersion":2,"annotations":{"org.opencontainers.image.source":"x"}}"#;
        assert!(annotated(m));
        assert!(!annotated(br#"{"schemaVersion":2}"#));
    }

    #[test]
    fn a_line_names_the_settings_page_and_the_missing_label() {
        let a = Attention {
            package: "ghcr.io/o/app".into(),
            found: Some(RepoVisibility {
                visibility: Visibility::Private,
                settings: Some("https://github.com/orgs/o/packages/container/app/settings".into()),
            }),
            expected: Some((
                Visibility::Public,
                "the source docker.io/o/app is public".into(),
            )),
            source_label: Some(false),
            error: None,
        };
        assert_eq!(
            a.line(),
            "package ghcr.io/o/app is private, expected public (the source docker.io/o/app is public): change it at https://github.com/orgs/o/packages/container/app/settings (GitHub has no API that does); its image lacks the org.opencontainers.image.source label, which links a package to a repository (and its permissions)"
        );
        let row = a.row();
        assert_eq!(row.visibility.as_deref(), Some("private"));
        assert_eq!(row.expected.as_deref(), Some("public"));
        assert_eq!(row.source_label, Some(false));
    }
}
