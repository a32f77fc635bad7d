//! Objects as the API server returns them: Pods with their container statuses, the workload
//! kinds with their templates, Namespaces; image references as the kubelet reports them.

use super::*;

/// A deterministic uid shaped like the server's (a v4 UUID).
pub(super) fn uid(kind: &str, ns: &str, name: &str) -> String {
    let h = hex::encode(sha2::Sha256::digest(format!("{kind}/{ns}/{name}")));
    format!(
        "{}-{}-4{}-a{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

pub(super) fn namespace(name: &str) -> Value {
    json!({
        "kind": "Namespace",
        "apiVersion": "v1",
        "metadata": {
            "name": name,
            "uid": uid("Namespace", "", name),
            "creationTimestamp": KUBE_CREATED,
            "labels": {"kubernetes.io/metadata.name": name},
        },
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"},
    })
}

/// Whether a reference has no tag and no digest, or the tag `latest`.
pub(super) fn is_latest(image: &str) -> bool {
    if image.contains('@') {
        return false;
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.rsplit_once(':') {
        Some((_, tag)) => tag == "latest",
        None => true,
    }
}

/// The reference as containerd and CRI-O report it in `status.containerStatuses[].image`:
/// fully qualified (`nginx:1.25` → `docker.io/library/nginx:1.25`), `:latest` made explicit.
pub fn normalize_image(image: &str) -> String {
    let (name, digest) = match image.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (image, None),
    };
    let (repo, tag) = match name.rsplit_once(':') {
        Some((r, t)) if !t.contains('/') => (r, Some(t)),
        _ => (name, None),
    };
    let (domain, path) = match repo.split_once('/') {
        Some((d, p)) if d.contains('.') || d.contains(':') || d == "localhost" => (d, p),
        _ => ("docker.io", repo),
    };
    let domain = if domain == "index.docker.io" {
        "docker.io"
    } else {
        domain
    };
    let path = if domain == "docker.io" && !path.contains('/') {
        format!("library/{path}")
    } else {
        path.to_string()
    };
    let mut out = format!("{domain}/{path}");
    match (tag, digest) {
        (Some(t), _) => {
            out.push(':');
            out.push_str(t);
        }
        (None, None) => out.push_str(":latest"),
        (None, Some(_)) => {}
    }
    if let Some(d) = digest {
        out.push('@');
        out.push_str(d);
    }
    out
}

/// A container in a pod or template spec, with the fields the server defaults.
pub(super) fn container_spec(name: &str, image: &str) -> Value {
    json!({
        "name": name,
        "image": image,
        "imagePullPolicy": if is_latest(image) { "Always" } else { "IfNotPresent" },
        "resources": {},
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
    })
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    Init,
    Regular,
    Ephemeral,
}

/// One entry of `status.*containerStatuses`. An empty `image_id` is a container whose
/// image is not pulled yet: waiting, not ready, no container ID.
pub(super) fn container_status(ns: &str, pod: &str, role: Role, c: (&str, &str, &str)) -> Value {
    let (name, image, image_id) = c;
    if image_id.is_empty() {
        let reason = if role == Role::Init {
            "PodInitializing"
        } else {
            "ContainerCreating"
        };
        let mut s = json!({
            "name": name,
            "image": image,
            "imageID": "",
            "ready": false,
            "restartCount": 0,
            "state": {"waiting": {"reason": reason}},
            "lastState": {},
        });
        if role != Role::Ephemeral {
            s["started"] = json!(false);
        }
        return s;
    }
    // Docker (dockershim, cri-dockerd) reports the image as written in the spec; CRI
    // runtimes report it normalized.
    let docker = image_id.starts_with("docker-pullable://") || image_id.starts_with("docker://");
    let runtime = if docker { "docker" } else { "containerd" };
    let container_id = format!(
        "{runtime}://{}",
        hex::encode(sha2::Sha256::digest(format!("{ns}/{pod}/{name}")))
    );
    let shown = if docker {
        image.to_string()
    } else {
        normalize_image(image)
    };
    let state = match role {
        Role::Init => json!({"terminated": {
            "containerID": container_id,
            "exitCode": 0,
            "reason": "Completed",
            "startedAt": KUBE_CREATED,
            "finishedAt": KUBE_CREATED,
        }}),
        _ => json!({"running": {"startedAt": KUBE_CREATED}}),
    };
    let mut s = json!({
        "name": name,
        "image": shown,
        "imageID": image_id,
        "containerID": container_id,
        "ready": role != Role::Ephemeral,
        "restartCount": 0,
        "state": state,
        "lastState": {},
    });
    match role {
        Role::Regular => s["started"] = json!(true),
        Role::Init => s["started"] = json!(false),
        Role::Ephemeral => {}
    }
    s
}

/// A running Pod: `spec.containers` and `status.containerStatuses` (name, image, imageID,
/// ready, …). A container's status imageID is e.g. `docker.io/library/nginx@sha256:…`
/// (containerd), `docker-pullable://nginx@sha256:…` (Docker), or "" if not pulled yet (the
/// pod is then Pending).
pub fn pod(ns: &str, name: &str, containers: &[(&str, &str, &str)]) -> Value {
    pod_with(ns, name, &[], containers, &[])
}

/// A Pod with init and ephemeral containers too (`spec.initContainers`,
/// `spec.ephemeralContainers`, `status.initContainerStatuses`,
/// `status.ephemeralContainerStatuses`); each (container name, spec image, status imageID).
pub fn pod_with(
    ns: &str,
    name: &str,
    init: &[(&str, &str, &str)],
    containers: &[(&str, &str, &str)],
    ephemeral: &[(&str, &str, &str)],
) -> Value {
    let specs = |cs: &[(&str, &str, &str)]| -> Vec<Value> {
        cs.iter().map(|(n, i, _)| container_spec(n, i)).collect()
    };
    let statuses = |role, cs: &[(&str, &str, &str)]| -> Vec<Value> {
        cs.iter()
            .map(|c| container_status(ns, name, role, *c))
            .collect()
    };
    let initialized = init.iter().all(|(_, _, id)| !id.is_empty());
    let ready = initialized && containers.iter().all(|(_, _, id)| !id.is_empty());
    let cond = |t: &str, ok: bool| {
        json!({
            "type": t,
            "status": if ok { "True" } else { "False" },
            "lastProbeTime": null,
            "lastTransitionTime": KUBE_CREATED,
        })
    };
    let mut spec = json!({
        "containers": specs(containers),
        "restartPolicy": "Always",
        "terminationGracePeriodSeconds": 30,
        "dnsPolicy": "ClusterFirst",
        "serviceAccountName": "default",
        "serviceAccount": "default",
        "nodeName": "fake-node-1",
        "securityContext": {},
        "schedulerName": "default-scheduler",
        "enableServiceLinks": true,
        "preemptionPolicy": "PreemptLowerPriority",
        "priority": 0,
    });
    let mut status = json!({
        "phase": if ready { "Running" } else { "Pending" },
        "conditions": [
            cond("PodReadyToStartContainers", true),
            cond("Initialized", initialized),
            cond("Ready", ready),
            cond("ContainersReady", ready),
            cond("PodScheduled", true),
        ],
        "hostIP": "10.0.0.1",
        "podIP": "10.244.0.10",
        "startTime": KUBE_CREATED,
        "containerStatuses": statuses(Role::Regular, containers),
        "qosClass": "BestEffort",
    });
    if !init.is_empty() {
        spec["initContainers"] = json!(specs(init));
        status["initContainerStatuses"] = json!(statuses(Role::Init, init));
    }
    if !ephemeral.is_empty() {
        spec["ephemeralContainers"] = json!(ephemeral
            .iter()
            .map(|(n, i, _)| {
                let mut c = container_spec(n, i);
                c["stdin"] = json!(true);
                c["tty"] = json!(true);
                if let Some((target, _, _)) = containers.first() {
                    c["targetContainerName"] = json!(target);
                }
                c
            })
            .collect::<Vec<_>>());
        status["ephemeralContainerStatuses"] = json!(statuses(Role::Ephemeral, ephemeral));
    }
    json!({
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {
            "name": name,
            "namespace": ns,
            "uid": uid("Pod", ns, name),
            "creationTimestamp": KUBE_CREATED,
            "labels": {"app": name},
        },
        "spec": spec,
        "status": status,
    })
}

/// A pod template (`spec.template` of workloads) as stored: the server leaves
/// `metadata.creationTimestamp: null` in it.
pub(super) fn template(labels: Value, images: &[(&str, &str)], restart_policy: &str) -> Value {
    json!({
        "metadata": {"creationTimestamp": null, "labels": labels},
        "spec": {
            "containers": images.iter().map(|(n, i)| container_spec(n, i)).collect::<Vec<_>>(),
            "restartPolicy": restart_policy,
            "terminationGracePeriodSeconds": 30,
            "dnsPolicy": "ClusterFirst",
            "securityContext": {},
            "schedulerName": "default-scheduler",
        },
    })
}

/// A workload with the given (container name, image) pairs: Deployment, StatefulSet,
/// DaemonSet, ReplicaSet and Job in `spec.template.spec.containers`; CronJob in
/// `spec.jobTemplate.spec.template.spec.containers`; ControllerRevision in `data`, the patch
/// StatefulSets and DaemonSets record (`{"spec":{"template":{"$patch":"replace",…}}}`).
/// `Kind::Pod` builds a running pod (status imageIDs left empty: not pulled yet).
pub fn workload(kind: Kind, ns: &str, name: &str, images: &[(&str, &str)]) -> Value {
    let labels = json!({"app": name});
    let selector = json!({"matchLabels": {"app": name}});
    let hash = &hex::encode(sha2::Sha256::digest(format!("{ns}/{name}")))[..10];
    let mut metadata = json!({
        "name": name,
        "namespace": ns,
        "uid": uid(kind.name(), ns, name),
        "creationTimestamp": KUBE_CREATED,
        "generation": 1,
        "labels": labels,
    });
    let (spec, status) = match kind {
        Kind::Pod => {
            let cs: Vec<(&str, &str, &str)> = images.iter().map(|(n, i)| (*n, *i, "")).collect();
            return pod(ns, name, &cs);
        }
        Kind::Application | Kind::ImageUpdater => {
            panic!("{kind:?} holds no pod template: build it with application() or image_updater()")
        }
        Kind::Deployment => {
            metadata["annotations"] = json!({"deployment.kubernetes.io/revision": "1"});
            (
                json!({
                    "replicas": 1,
                    "selector": selector,
                    "template": template(labels.clone(), images, "Always"),
                    "strategy": {
                        "type": "RollingUpdate",
                        "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"},
                    },
                    "revisionHistoryLimit": 10,
                    "progressDeadlineSeconds": 600,
                }),
                json!({
                    "observedGeneration": 1,
                    "replicas": 1,
                    "updatedReplicas": 1,
                    "readyReplicas": 1,
                    "availableReplicas": 1,
                }),
            )
        }
        Kind::StatefulSet => (
            json!({
                "replicas": 1,
                "selector": selector,
                "template": template(labels.clone(), images, "Always"),
                "serviceName": name,
                "podManagementPolicy": "OrderedReady",
                "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}},
                "revisionHistoryLimit": 10,
                "persistentVolumeClaimRetentionPolicy": {
                    "whenDeleted": "Retain",
                    "whenScaled": "Retain",
                },
            }),
            json!({
                "observedGeneration": 1,
                "replicas": 1,
                "readyReplicas": 1,
                "currentReplicas": 1,
                "updatedReplicas": 1,
                "availableReplicas": 1,
                "currentRevision": format!("{name}-{hash}"),
                "updateRevision": format!("{name}-{hash}"),
                "collisionCount": 0,
            }),
        ),
        Kind::DaemonSet => (
            json!({
                "selector": selector,
                "template": template(labels.clone(), images, "Always"),
                "updateStrategy": {
                    "type": "RollingUpdate",
                    "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0},
                },
                "revisionHistoryLimit": 10,
            }),
            json!({
                "observedGeneration": 1,
                "currentNumberScheduled": 1,
                "numberMisscheduled": 0,
                "desiredNumberScheduled": 1,
                "numberReady": 1,
                "updatedNumberScheduled": 1,
                "numberAvailable": 1,
            }),
        ),
        Kind::ReplicaSet => {
            metadata["annotations"] = json!({
                "deployment.kubernetes.io/desired-replicas": "1",
                "deployment.kubernetes.io/max-replicas": "2",
                "deployment.kubernetes.io/revision": "1",
            });
            (
                json!({
                    "replicas": 1,
                    "selector": selector,
                    "template": template(labels.clone(), images, "Always"),
                }),
                json!({
                    "observedGeneration": 1,
                    "replicas": 1,
                    "fullyLabeledReplicas": 1,
                    "readyReplicas": 1,
                    "availableReplicas": 1,
                }),
            )
        }
        Kind::ControllerRevision => {
            metadata
                .as_object_mut()
                .expect("metadata")
                .remove("generation");
            metadata["labels"] = json!({
                "app": name,
                "controller-revision-hash": hash,
                "controller.kubernetes.io/hash": hash,
            });
            let mut t = template(labels.clone(), images, "Always");
            let t = t.as_object_mut().expect("template");
            let mut patch = Map::new();
            patch.insert("$patch".into(), json!("replace"));
            patch.append(t);
            let object = json!({
                "kind": "ControllerRevision",
                "apiVersion": "apps/v1",
                "metadata": metadata,
                "data": {"spec": {"template": Value::Object(patch)}},
                "revision": 1,
            });
            return object;
        }
        Kind::Job => {
            let uid = uid("Job", ns, name);
            let job_labels = json!({
                "batch.kubernetes.io/controller-uid": uid,
                "batch.kubernetes.io/job-name": name,
                "controller-uid": uid,
                "job-name": name,
            });
            (
                json!({
                    "parallelism": 1,
                    "completions": 1,
                    "backoffLimit": 6,
                    "completionMode": "NonIndexed",
                    "suspend": false,
                    "manualSelector": false,
                    "podReplacementPolicy": "TerminatingOrFailed",
                    "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}},
                    "template": template(job_labels, images, "Never"),
                }),
                json!({
                    "startTime": KUBE_CREATED,
                    "active": 1,
                    "ready": 1,
                    "terminating": 0,
                    "uncountedTerminatedPods": {},
                }),
            )
        }
        Kind::CronJob => (
            json!({
                "schedule": "0 3 * * *",
                "concurrencyPolicy": "Allow",
                "suspend": false,
                "successfulJobsHistoryLimit": 3,
                "failedJobsHistoryLimit": 1,
                "jobTemplate": {
                    "metadata": {"creationTimestamp": null},
                    "spec": {
                        "backoffLimit": 6,
                        "template": template(json!({}), images, "OnFailure"),
                    },
                },
            }),
            json!({}),
        ),
    };
    json!({
        "kind": kind.name(),
        "apiVersion": kind.api_version(),
        "metadata": metadata,
        "spec": spec,
        "status": status,
    })
}
