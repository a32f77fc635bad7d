//! `[in_use]`: where the references of images that run, or are about to, come from. Every
//! `[[retain]]` of the plan keeps what they name (see `crate::inuse`).
//!
//! ```toml
//! [in_use]
//! kubernetes = [
//!   { in_cluster = true },
//!   { kubeconfig = "~/.kube/config", context = "prod-eu", namespaces = ["prod"] },
//! ]
//! files = ["deploy/**/*.yaml", "charts/*/values.yaml"]
//! argocd = [{ kubeconfig = "~/.kube/config", context = "prod-eu", namespace = "argocd" }]
//! git = [{ path = "gitops-repo", files = ["apps/**/*.yaml"], revisions = 20 }]
//! aliases = { "mirror.internal/hub" = "docker.io" }
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::Deserialize;
use toml::Spanned;

use super::errors::PlanError;
use super::schema::REVISIONS;
use super::spans::Ctx;
use crate::inuse::sources::{ArgoSource, FilePattern, GitSource, InUse, KubeConfig, KubeSource};
use crate::reference::names;

/// Where the images that run, or are about to, are found: every `[[retain]]` of the plan
/// keeps what these sources name, and everything it reaches.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "InUse")]
pub(super) struct RawInUse {
    /// Kubernetes clusters whose pods' images are in use: `{ in_cluster = true }` or `{
    /// kubeconfig = "PATH", context = "NAME", namespaces = ["…"] }`.
    #[serde(default)]
    #[schemars(with = "Vec<RawKube>")]
    kubernetes: Vec<Spanned<RawKube>>,
    /// Glob patterns of files (GitOps manifests, Helm values) whose image references are in
    /// use (`"deploy/**/*.yaml"`).
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    files: Vec<Spanned<String>>,
    /// Other names of a retained registry: a pull-through mirror's prefix (`"mirror.internal/hub"`)
    /// to the registry host it stands for (`"docker.io"`).
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, String>")]
    aliases: BTreeMap<Spanned<String>, Spanned<String>>,
    /// ArgoCD installations whose Applications' images are in use, with the tag ArgoCD Image
    /// Updater would pick next for each image it tracks: `{ in_cluster = true }` or `{
    /// kubeconfig = "PATH", context = "NAME", namespace = "argocd" }`.
    #[serde(default)]
    #[schemars(with = "Vec<RawArgo>")]
    argocd: Vec<Spanned<RawArgo>>,
    /// Local git checkouts whose files referenced images in any of their last commits, so that
    /// a rollback finds its images: `{ path = "gitops-repo", files = ["apps/**/*.yaml"],
    /// revisions = 20 }`.
    #[serde(default)]
    #[schemars(with = "Vec<RawGit>")]
    git: Vec<Spanned<RawGit>>,
}

/// One ArgoCD installation to read Applications (and ImageUpdaters) from.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "ArgoCd")]
struct RawArgo {
    /// Use the pod's service account (ferry running in the cluster, as a CronJob).
    #[schemars(with = "Option<bool>")]
    in_cluster: Option<Spanned<bool>>,
    /// A kubeconfig file (`~/` is the home directory).
    #[schemars(with = "Option<String>")]
    kubeconfig: Option<Spanned<String>>,
    /// The kubeconfig context to use (default: its current context).
    #[schemars(with = "Option<String>")]
    context: Option<Spanned<String>>,
    /// The namespace ArgoCD runs in (default `argocd`).
    #[schemars(with = "Option<String>")]
    namespace: Option<Spanned<String>>,
}

/// One local git checkout whose history names images in use.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Git")]
struct RawGit {
    /// The checkout's directory (`~/` is the home directory).
    #[schemars(with = "String")]
    path: Spanned<String>,
    /// Glob patterns of files in the repository (`"apps/**/*.yaml"`); each must match a file
    /// at HEAD.
    #[schemars(with = "Vec<String>")]
    files: Vec<Spanned<String>>,
    /// How many commits back, HEAD included (default `20`).
    #[schemars(
        with = "Option<i64>",
        range(min = REVISIONS.min, max = REVISIONS.max)
    )]
    revisions: Option<Spanned<i64>>,
}

/// One Kubernetes cluster to read running images from.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Kubernetes")]
struct RawKube {
    /// Use the pod's service account (ferry running in the cluster, as a CronJob).
    #[schemars(with = "Option<bool>")]
    in_cluster: Option<Spanned<bool>>,
    /// A kubeconfig file (`~/` is the home directory).
    #[schemars(with = "Option<String>")]
    kubeconfig: Option<Spanned<String>>,
    /// The kubeconfig context to use (default: its current context).
    #[schemars(with = "Option<String>")]
    context: Option<Spanned<String>>,
    /// Only these namespaces (default: all).
    #[schemars(with = "Option<Vec<String>>")]
    namespaces: Option<Vec<Spanned<String>>>,
}

pub(super) fn validate(ctx: &Ctx, raw: &RawInUse) -> Result<InUse, PlanError> {
    let kubernetes = raw
        .kubernetes
        .iter()
        .map(|k| kube_source(ctx, k))
        .collect::<Result<Vec<_>, _>>()?;
    let mut files = Vec::new();
    for f in &raw.files {
        glob::Pattern::new(f.get_ref()).map_err(|e| {
            ctx.invalid(
                f.span(),
                "in_use.files",
                format!("not a glob pattern: {}", e.msg),
            )
        })?;
        files.push(FilePattern {
            pattern: f.get_ref().clone(),
            line: ctx.line_col(f.span().start).0,
        });
    }
    let mut aliases = Vec::new();
    for (from, to) in &raw.aliases {
        let prefix = from.get_ref().trim_end_matches('/');
        let host = prefix.split('/').next().unwrap_or_default();
        if !crate::reference::is_valid_host(host)
            || prefix
                .split('/')
                .skip(1)
                .any(|p| names::repository(p).is_err())
        {
            return Err(ctx.invalid(
                from.span(),
                "in_use.aliases",
                "a key is a registry host with an optional path (`mirror.internal/hub`)",
            ));
        }
        if !crate::reference::is_valid_host(to.get_ref()) {
            return Err(ctx.invalid(
                to.span(),
                "in_use.aliases",
                "a value is the registry host the mirror stands for (`docker.io`)",
            ));
        }
        aliases.push((
            prefix.to_string(),
            crate::reference::normalize_host(to.get_ref()),
        ));
    }
    // The longest prefix is tried first.
    aliases.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(&b.0)));
    let argocd = raw
        .argocd
        .iter()
        .map(|a| argo_source(ctx, a))
        .collect::<Result<Vec<_>, _>>()?;
    let git = raw
        .git
        .iter()
        .map(|g| git_source(ctx, g))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(InUse {
        kubernetes,
        files,
        aliases,
        argocd,
        git,
    })
}

/// Revisions read when a `git` entry does not say (ArgoCD keeps 10 in its history).
const DEFAULT_REVISIONS: usize = 20;

fn argo_source(ctx: &Ctx, a: &Spanned<RawArgo>) -> Result<ArgoSource, PlanError> {
    let raw = a.get_ref();
    let as_kube = RawKube {
        in_cluster: raw.in_cluster.clone(),
        kubeconfig: raw.kubeconfig.clone(),
        context: raw.context.clone(),
        namespaces: None,
    };
    let spanned = Spanned::new(a.span(), as_kube);
    let config = kube_config(ctx, &spanned, "in_use.argocd")?;
    let namespace =
        match &raw.namespace {
            Some(ns) if !is_dns_label(ns.get_ref()) => return Err(ctx.invalid(
                ns.span(),
                "in_use.argocd.namespace",
                "a namespace name is a DNS label: lower-case letters, digits and '-', at most 63",
            )),
            Some(ns) => ns.get_ref().clone(),
            None => "argocd".to_string(),
        };
    Ok(ArgoSource {
        config,
        namespace,
        line: ctx.line_col(a.span().start).0,
    })
}

fn git_source(ctx: &Ctx, g: &Spanned<RawGit>) -> Result<GitSource, PlanError> {
    let raw = g.get_ref();
    if raw.files.is_empty() {
        return Err(ctx.invalid(
            g.span(),
            "in_use.git.files",
            "name at least one pattern of files in the repository (`apps/**/*.yaml`)",
        ));
    }
    let mut files = Vec::new();
    for f in &raw.files {
        glob::Pattern::new(f.get_ref()).map_err(|e| {
            ctx.invalid(
                f.span(),
                "in_use.git.files",
                format!("not a glob pattern: {}", e.msg),
            )
        })?;
        files.push(f.get_ref().clone());
    }
    let revisions = match &raw.revisions {
        Some(r) if !(REVISIONS.min..=REVISIONS.max).contains(r.get_ref()) => {
            return Err(ctx.invalid(
                r.span(),
                "in_use.git.revisions",
                "the number of commits to read, from 1 to 10000",
            ))
        }
        Some(r) => *r.get_ref() as usize,
        None => DEFAULT_REVISIONS,
    };
    Ok(GitSource {
        path: expand_home(raw.path.get_ref()),
        files,
        revisions,
        line: ctx.line_col(g.span().start).0,
    })
}

fn kube_source(ctx: &Ctx, k: &Spanned<RawKube>) -> Result<KubeSource, PlanError> {
    let raw = k.get_ref();
    let config = kube_config(ctx, k, "in_use.kubernetes")?;
    let mut namespaces = Vec::new();
    for ns in raw.namespaces.iter().flatten() {
        if !is_dns_label(ns.get_ref()) {
            return Err(ctx.invalid(
                ns.span(),
                "in_use.kubernetes.namespaces",
                "a namespace name is a DNS label: lower-case letters, digits and '-', at most 63",
            ));
        }
        namespaces.push(ns.get_ref().clone());
    }
    Ok(KubeSource {
        config,
        namespaces,
        line: ctx.line_col(k.span().start).0,
    })
}

/// `{ in_cluster = true }` or `{ kubeconfig, context }`; `field` names the table for errors.
fn kube_config(
    ctx: &Ctx,
    k: &Spanned<RawKube>,
    field: &'static str,
) -> Result<KubeConfig, PlanError> {
    let raw = k.get_ref();
    Ok(match (&raw.in_cluster, &raw.kubeconfig) {
        (Some(b), None) if *b.get_ref() => {
            if let Some(c) = &raw.context {
                return Err(ctx.invalid(
                    c.span(),
                    &format!("{field}.context"),
                    "a context belongs to a kubeconfig; in_cluster uses the pod's service account",
                ));
            }
            KubeConfig::InCluster
        }
        (None, Some(path)) => KubeConfig::File {
            path: expand_home(path.get_ref()),
            context: raw.context.as_ref().map(|c| c.get_ref().clone()),
        },
        _ => {
            return Err(ctx.invalid(
                k.span(),
                field,
                "each entry is `{ in_cluster = true }` or `{ kubeconfig = \"PATH\" }` (with an optional `context`)",
            ))
        }
    })
}

/// `~/x` is `$HOME/x`.
fn expand_home(path: &str) -> PathBuf {
    match (path.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => PathBuf::from(path),
    }
}

/// RFC 1123 label, as Kubernetes names namespaces.
fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::inuse::sources::KubeConfig;
    use crate::plan::Plan;

    const BASE: &str = "version = 1\n[[retain]]\nrepository = \"r.io/a\"\nkeep_tags = ['x']\n";

    // Issue 25, part 4: `argocd` and `git` entries, their defaults, and errors that name the
    // field without echoing the value.
    #[test]
    fn argocd_and_git_sources_are_validated() {
        let text = format!(
            "{BASE}[in_use]\nargocd = [{{ in_cluster = true }}, {{ kubeconfig = \"/k\", context = \"c\", namespace = \"cd\" }}]\ngit = [{{ path = \"gitops-repo\", files = [\"apps/**/*.yaml\"] }}]\n"
        );
        let plan = Plan::from_str(Path::new("p.toml"), &text).unwrap();
        let (argocd, git) = (&plan.in_use.argocd, &plan.in_use.git);
        assert_eq!(argocd[0].config, KubeConfig::InCluster);
        assert_eq!(argocd[0].namespace, "argocd");
        assert_eq!(argocd[1].namespace, "cd");
        assert_eq!((argocd[0].line, git[0].line), (6, 7));
        assert_eq!(git[0].path, Path::new("gitops-repo"));
        assert_eq!(git[0].revisions, 20);
        assert!(!plan.in_use.is_empty());
        for (bad, says) in [
            (
                "argocd = [{ namespace = \"secret-ns\" }]",
                "in_use.argocd: each entry is",
            ),
            (
                "argocd = [{ in_cluster = true, namespace = \"Bad_NS\" }]",
                "in_use.argocd.namespace: a namespace name is a DNS label",
            ),
            (
                "git = [{ path = \"g\", files = [] }]",
                "in_use.git.files: name at least one pattern",
            ),
            (
                "git = [{ path = \"g\", files = [\"a/[\"] }]",
                "in_use.git.files: not a glob pattern",
            ),
            (
                "git = [{ path = \"g\", files = [\"a\"], revisions = 0 }]",
                "in_use.git.revisions: the number of commits to read",
            ),
        ] {
            let e = Plan::from_str(Path::new("p.toml"), &format!("{BASE}[in_use]\n{bad}\n"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(says), "{bad}: {e}");
            assert!(!e.contains("secret-ns") && !e.contains("Bad_NS"), "{e}");
        }
    }
}
