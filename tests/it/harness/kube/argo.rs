//! ArgoCD's custom resources as the API server returns them: an `Application` (its
//! `status.summary.images` as ArgoCD's controller fills it from the live resources, Image
//! Updater v0.x annotations), and an Image Updater v1.x `ImageUpdater`.

use super::*;

/// An Application in `ns` whose live resources run `images`, with `annotations` (Image
/// Updater v0.x settings among them).
pub fn application(ns: &str, name: &str, images: &[&str], annotations: &[(&str, &str)]) -> Value {
    let annotations: Map<String, Value> = annotations
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    json!({
        "kind": "Application",
        "apiVersion": "argoproj.io/v1alpha1",
        "metadata": {
            "name": name,
            "namespace": ns,
            "uid": uid("Application", ns, name),
            "creationTimestamp": KUBE_CREATED,
            "generation": 3,
            "annotations": annotations,
            "labels": {"team": "platform"},
            "finalizers": ["resources-finalizer.argocd.argoproj.io"],
        },
        "spec": {
            "project": "default",
            "source": {
                "repoURL": "https://github.com/org/gitops.git",
                "path": format!("apps/{name}"),
                "targetRevision": "HEAD",
            },
            "destination": {"server": "https://kubernetes.default.svc", "namespace": "prod"},
            "syncPolicy": {"automated": {"prune": true, "selfHeal": true}},
        },
        "status": {
            "summary": {"images": images},
            "sync": {
                "status": "Synced",
                "revision": "4f1c2a9d8e7b6a5c4d3e2f1a0b9c8d7e6f5a4b3c",
                "comparedTo": {
                    "source": {
                        "repoURL": "https://github.com/org/gitops.git",
                        "path": format!("apps/{name}"),
                        "targetRevision": "HEAD",
                    },
                    "destination": {"server": "https://kubernetes.default.svc", "namespace": "prod"},
                },
            },
            "health": {"status": "Healthy"},
            "reconciledAt": "2024-05-01T10:05:00Z",
            "sourceType": "Directory",
        },
    })
}

/// An Image Updater v1.x resource in `ns` with the given `spec` (`applicationRefs`, …).
pub fn image_updater(ns: &str, name: &str, spec: Value) -> Value {
    json!({
        "kind": "ImageUpdater",
        "apiVersion": "argocd-image-updater.argoproj.io/v1alpha1",
        "metadata": {
            "name": name,
            "namespace": ns,
            "uid": uid("ImageUpdater", ns, name),
            "creationTimestamp": KUBE_CREATED,
            "generation": 1,
        },
        "spec": spec,
        "status": {"conditions": []},
    })
}
