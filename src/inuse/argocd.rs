//! An ArgoCD instance as a source of images in use: every Application's
//! `status.summary.images` (what its live resources run), and what the Image Updater tracks
//! for each Application, from the v0.x annotations on the Applications and from the v1.x
//! `ImageUpdater` resources of the same namespace (read whatever `useAnnotations` says:
//! keeping more is safe). Lists are read in pages (`limit`/`continue`); an expired continue
//! token restarts the list once. Applications that cannot be listed whole fail the source
//! (protection fails closed); a cluster without the `ImageUpdater` resource type (404, the
//! v0.x updater or none) has no such resources.

use std::collections::BTreeMap;

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use kube::Client;
use serde_json::Value;

use super::error::{KubeError, Reason, SourceError};
use super::kube::{connect, explain_list, list_paged};
use super::sources::ArgoSource;
use super::updater::{self, Strategy, Tracked};
use super::uses::Use;

/// What an ArgoCD instance says: images its Applications run, and images the updater
/// tracks for them.
#[derive(Debug, Default)]
pub struct Found {
    pub uses: Vec<Use>,
    pub tracked: Vec<Tracked>,
}

/// One entry of `[in_use].argocd`.
pub struct ArgoCd {
    settings: ArgoSource,
}

impl ArgoCd {
    pub fn new(settings: ArgoSource) -> ArgoCd {
        ArgoCd { settings }
    }

    fn fail(&self, reason: KubeError) -> SourceError {
        SourceError {
            source_name: format!("in_use.argocd (plan line {})", self.settings.line),
            reason: Reason::Kube(reason),
        }
    }

    /// Every Application and `ImageUpdater`, read whole, or why not.
    pub async fn read(&self) -> Result<Found, SourceError> {
        let (client, _) = connect(&self.settings.config)
            .await
            .map_err(|e| self.fail(e))?;
        let ns = &self.settings.namespace;
        let apps = list(&client, ns, &applications(), false)
            .await
            .map_err(|e| self.fail(e))?;
        let updaters = list(&client, ns, &image_updaters(), true)
            .await
            .map_err(|e| self.fail(e))?;
        let mut found = Found::default();
        for app in &apps {
            let name = app_name(app);
            let images = app.data.pointer("/status/summary/images");
            for image in images.and_then(Value::as_array).into_iter().flatten() {
                if let Some(image) = image.as_str() {
                    found.uses.push(Use {
                        image: image.to_string(),
                        by: format!("in use by ArgoCD application {name}"),
                    });
                }
            }
            let annotations: BTreeMap<String, String> = app
                .metadata
                .annotations
                .clone()
                .unwrap_or_default()
                .into_iter()
                .collect();
            found
                .tracked
                .extend(updater::from_annotations(&name, &annotations));
        }
        for u in &updaters {
            found.tracked.extend(from_image_updater(&u.data, &apps));
        }
        Ok(found)
    }
}

fn applications() -> ApiResource {
    let gvk = GroupVersionKind::gvk("argoproj.io", "v1alpha1", "Application");
    ApiResource::from_gvk_with_plural(&gvk, "applications")
}

fn image_updaters() -> ApiResource {
    let gvk = GroupVersionKind::gvk(
        "argocd-image-updater.argoproj.io",
        "v1alpha1",
        "ImageUpdater",
    );
    ApiResource::from_gvk_with_plural(&gvk, "imageupdaters")
}

/// Every object of `resource` in `ns`, page by page; `missing_is_empty`: a 404 (the resource
/// type is not installed) is an empty list.
async fn list(
    client: &Client,
    ns: &str,
    resource: &ApiResource,
    missing_is_empty: bool,
) -> Result<Vec<DynamicObject>, KubeError> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, resource);
    match list_paged(&api, |obj| vec![obj]).await {
        Ok(found) => Ok(found),
        Err(kube::Error::Api(s)) if s.code == 404 && missing_is_empty => Ok(Vec::new()),
        Err(e) => Err(explain_list(&resource.plural, &resource.group, e)),
    }
}

/// `namespace/name`.
fn app_name(app: &DynamicObject) -> String {
    format!(
        "{}/{}",
        app.metadata.namespace.as_deref().unwrap_or("-"),
        app.metadata.name.as_deref().unwrap_or("-")
    )
}

/// The update settings in force at one level (`commonUpdateSettings`, or an image's own
/// fields), over those of the level above.
#[derive(Clone, Default)]
struct Settings {
    strategy: Option<String>,
    allow: Option<String>,
    ignore: Option<Vec<String>>,
}

impl Settings {
    fn over(&self, v: Option<&Value>) -> Settings {
        let Some(v) = v else {
            return self.clone();
        };
        let text = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        let ignore = v.get("ignoreTags").map(|i| match i {
            Value::String(s) => updater::split_list(s),
            other => (other.as_array().into_iter().flatten())
                .filter_map(|g| g.as_str().map(str::to_string))
                .collect(),
        });
        Settings {
            strategy: text("updateStrategy").or_else(|| self.strategy.clone()),
            allow: text("allowTags").or_else(|| self.allow.clone()),
            ignore: ignore.or_else(|| self.ignore.clone()),
        }
    }
}

/// The images a v1.x `ImageUpdater` tracks, for each Application of `apps` one of its
/// `applicationRefs` selects.
fn from_image_updater(u: &Value, apps: &[DynamicObject]) -> Vec<Tracked> {
    let spec = u.get("spec");
    let top = Settings::default().over(spec.and_then(|s| s.get("commonUpdateSettings")));
    let refs = spec.and_then(|s| s.get("applicationRefs"));
    let mut out = Vec::new();
    for r in refs.and_then(Value::as_array).into_iter().flatten() {
        let at_ref = top.over(r.get("commonUpdateSettings"));
        let pattern = r.get("namePattern").and_then(Value::as_str).unwrap_or("*");
        let Ok(pattern) = glob::Pattern::new(pattern) else {
            continue;
        };
        let selected = apps.iter().filter(|a| {
            pattern.matches(a.metadata.name.as_deref().unwrap_or_default())
                && labels_match(r.get("labelSelectors"), a)
        });
        for app in selected {
            for image in r
                .get("images")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let Some(name) = image.get("imageName").and_then(Value::as_str) else {
                    continue;
                };
                let s = at_ref
                    .over(image.get("commonUpdateSettings"))
                    .over(Some(image));
                let (image, constraint) = updater::split_constraint(name.trim());
                out.push(Tracked {
                    image: image.to_string(),
                    constraint,
                    strategy: Strategy::parse(s.strategy.as_deref().unwrap_or_default()),
                    allow: s.allow.map(|a| updater::allow_pattern(&a)),
                    ignore: s.ignore.unwrap_or_default(),
                    app: app_name(app),
                });
            }
        }
    }
    out
}

/// Whether `app` has every label of `matchLabels`. `matchExpressions` are not evaluated:
/// an Application they might exclude is taken as selected (keeping more is safe).
fn labels_match(selectors: Option<&Value>, app: &DynamicObject) -> bool {
    let Some(wanted) = selectors
        .and_then(|s| s.get("matchLabels"))
        .and_then(Value::as_object)
    else {
        return true;
    };
    let labels = app.metadata.labels.clone().unwrap_or_default();
    wanted.iter().all(|(k, v)| {
        v.as_str()
            .is_some_and(|v| labels.get(k).map(String::as_str) == Some(v))
    })
}
