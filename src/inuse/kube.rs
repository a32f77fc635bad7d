//! A Kubernetes cluster as a source of images in use, through the `kube` crate (kubeconfig,
//! in-cluster config, exec credential plugins, TLS): every container, init container and
//! ephemeral container of every Pod (by the digest it runs and by its spec), and the pod
//! templates of Deployments, StatefulSets, DaemonSets, Jobs and CronJobs (what starts next),
//! ReplicaSets and ControllerRevisions (what a rollback returns to). Lists are read in pages
//! of 500 (`limit`/`continue`); a continue token that expired restarts that list once. Any
//! list that cannot be read whole (401, 403 on one kind, the API unreachable) fails the
//! source: protection fails closed.

use std::path::PathBuf;

use async_trait::async_trait;
use k8s_openapi::api::apps::v1::{
    ControllerRevision, DaemonSet, Deployment, ReplicaSet, StatefulSet,
};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Pod, PodSpec};
use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config, Resource};
use serde::de::DeserializeOwned;

use super::error::{KubeError, Reason, SourceError};
use super::sources::{KubeConfig, KubeSource as Settings};
use super::uses::{Source, Use};

/// Objects per list page.
const PAGE: u32 = 500;

/// Where the service account's token and CA are in a pod; `FERRY_SERVICE_ACCOUNT_DIR`
/// points elsewhere (tests, unusual mounts).
const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// One cluster of `[in_use].kubernetes`.
pub struct KubeSource {
    settings: Settings,
}

impl KubeSource {
    pub fn new(settings: Settings) -> KubeSource {
        KubeSource { settings }
    }

    fn fail(&self, reason: KubeError) -> SourceError {
        SourceError {
            source_name: format!("in_use.kubernetes (plan line {})", self.settings.line),
            reason: Reason::Kube(reason),
        }
    }

    /// A client for the cluster, and the cluster as people know it, for reasons (never for
    /// errors: it may be a plan value): the context's name, the one the plan gives or else
    /// the kubeconfig's `current-context` (a name, nothing of its credentials), or
    /// `in-cluster` for the pod's own cluster (a pod cannot learn the name people give it).
    async fn client(&self) -> Result<(Client, String), SourceError> {
        connect(&self.settings.config)
            .await
            .map_err(|e| self.fail(e))
    }

    /// `K` cluster-wide, or in each namespace asked for.
    fn apis<K>(&self, client: &Client) -> Vec<Api<K>>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>,
    {
        if self.settings.namespaces.is_empty() {
            vec![Api::all(client.clone())]
        } else {
            self.settings
                .namespaces
                .iter()
                .map(|ns| Api::namespaced(client.clone(), ns))
                .collect()
        }
    }

    /// Every object of `K` in the namespaces asked for, page by page, each turned into uses
    /// as it comes (a page is dropped before the next is read).
    async fn list<K>(
        &self,
        (client, cluster): (&Client, &str),
        out: &mut Vec<Use>,
        uses_of: impl Fn(&K, &str) -> Vec<Use>,
    ) -> Result<(), SourceError>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
    {
        for api in self.apis::<K>(client) {
            let uses = list_paged(&api, |obj: K| uses_of(&obj, cluster)).await;
            out.extend(uses.map_err(|e| self.fail(explain::<K>(e)))?);
        }
        Ok(())
    }
}

/// What `take` makes of every object `api` lists, page by page (`limit`/`continue`; a page
/// is dropped before the next is read). A continue token that expired (410) restarts the
/// list, once.
pub(super) async fn list_paged<K, T>(
    api: &Api<K>,
    take: impl Fn(K) -> Vec<T>,
) -> Result<Vec<T>, kube::Error>
where
    K: Clone + DeserializeOwned + std::fmt::Debug,
{
    let mut restarted = false;
    'list: loop {
        let mut found = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut params = ListParams::default().limit(PAGE);
            if let Some(t) = &token {
                params = params.continue_token(t);
            }
            match api.list(&params).await {
                Ok(page) => {
                    token = page.metadata.continue_.filter(|t| !t.is_empty());
                    found.extend(page.items.into_iter().flat_map(&take));
                    if token.is_none() {
                        return Ok(found);
                    }
                }
                Err(kube::Error::Api(s)) if s.code == 410 && !restarted => {
                    restarted = true;
                    continue 'list;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

impl KubeSource {
    /// `ferry check --online`: may the account list each kind? One list of one object per
    /// kind (in each namespace asked for): (what, Ok(detail) or Err(why)).
    pub async fn preflight(&self) -> Vec<(String, Result<String, Reason>)> {
        let client = match self.client().await {
            Ok((c, _)) => c,
            Err(SourceError {
                source_name,
                reason,
            }) => return vec![(source_name, Err(reason))],
        };
        let mut out = Vec::new();
        out.push(self.probe::<Pod>(&client).await);
        out.push(self.probe::<Deployment>(&client).await);
        out.push(self.probe::<StatefulSet>(&client).await);
        out.push(self.probe::<DaemonSet>(&client).await);
        out.push(self.probe::<ReplicaSet>(&client).await);
        out.push(self.probe::<ControllerRevision>(&client).await);
        out.push(self.probe::<Job>(&client).await);
        out.push(self.probe::<CronJob>(&client).await);
        out
    }

    async fn probe<K>(&self, client: &Client) -> (String, Result<String, Reason>)
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
    {
        let what = format!(
            "list {} (in_use.kubernetes, plan line {})",
            K::plural(&()),
            self.settings.line
        );
        let apis: Vec<Api<K>> = self.apis(client);
        for api in apis {
            if let Err(e) = api.list(&ListParams::default().limit(1)).await {
                return (what, Err(Reason::Kube(explain::<K>(e))));
            }
        }
        (what, Ok("allowed".to_string()))
    }
}

#[async_trait]
impl Source for KubeSource {
    async fn uses(&self) -> Result<Vec<Use>, SourceError> {
        let (client, cluster) = self.client().await?;
        let at = (&client, cluster.as_str());
        let mut out = Vec::new();
        self.list::<Pod>(at, &mut out, pod_uses).await?;
        self.list::<Deployment>(at, &mut out, templated).await?;
        self.list::<StatefulSet>(at, &mut out, templated).await?;
        self.list::<DaemonSet>(at, &mut out, templated).await?;
        self.list::<ReplicaSet>(at, &mut out, templated).await?;
        self.list::<Job>(at, &mut out, templated).await?;
        self.list::<CronJob>(at, &mut out, templated).await?;
        self.list::<ControllerRevision>(at, &mut out, revision_uses)
            .await?;
        Ok(out)
    }
}

/// A client for the cluster `config` names, and the cluster as people know it, for reasons
/// (never for errors: it may be a plan value): the context's name, the one the plan gives
/// or else the kubeconfig's `current-context` (a name, nothing of its credentials), or
/// `in-cluster` for the pod's own cluster (a pod cannot learn the name people give it).
pub(super) async fn connect(config: &KubeConfig) -> Result<(Client, String), KubeError> {
    let (config, cluster) = match config {
        KubeConfig::InCluster => (in_cluster()?, "in-cluster".to_string()),
        KubeConfig::File { path, context } => {
            let kubeconfig = Kubeconfig::read_from(path).map_err(|e| kubeconfig_error(path, e))?;
            let cluster = context
                .clone()
                .or_else(|| kubeconfig.current_context.clone())
                .unwrap_or_default();
            let options = KubeConfigOptions {
                context: context.clone(),
                ..KubeConfigOptions::default()
            };
            let config = Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .map_err(|e| kubeconfig_error(path, e))?;
            (config, cluster)
        }
    };
    let client = Client::try_from(config).map_err(|source| KubeError::Client { source })?;
    Ok((client, cluster))
}

/// What is wrong with the kubeconfig at `path`, without the values it holds (see
/// [`KubeError`]).
fn kubeconfig_error(path: &std::path::Path, e: kube::config::KubeconfigError) -> KubeError {
    use kube::config::KubeconfigError as K;
    let what = match e {
        K::ReadConfig(source, _) => {
            return KubeError::ReadKubeconfig {
                path: path.to_path_buf(),
                source,
            }
        }
        K::Parse(_) => "the kubeconfig is not valid YAML",
        K::CurrentContextNotSet => "the kubeconfig sets no current-context; name a `context`",
        K::LoadContext(_) => "the kubeconfig has no such context",
        K::LoadClusterOfContext(_) => "the kubeconfig has no cluster for that context",
        K::MissingClusterUrl => "the context's cluster has no server URL",
        K::ParseClusterUrl(_) => "the context's cluster server is not a URL",
        K::LoadCertificateAuthority(_) | K::ParseCertificates(_) => {
            "the cluster's certificate authority cannot be read"
        }
        K::LoadClientCertificate(_) => "the user's client certificate cannot be read",
        K::LoadClientKey(_) => "the user's client key cannot be read",
        _ => "the kubeconfig cannot be used",
    };
    KubeError::Kubeconfig {
        path: path.to_path_buf(),
        what,
    }
}

/// The in-cluster configuration: the API server from `KUBERNETES_SERVICE_HOST`/`_PORT`, the
/// service account's token and CA from its directory.
fn in_cluster() -> Result<Config, KubeError> {
    let dir = std::env::var_os("FERRY_SERVICE_ACCOUNT_DIR").map(PathBuf::from);
    let Some(dir) = dir.filter(|d| d.as_os_str() != SERVICE_ACCOUNT_DIR) else {
        return Config::incluster().map_err(|source| KubeError::InCluster { source });
    };
    let host = std::env::var("KUBERNETES_SERVICE_HOST").map_err(|_| KubeError::NoServiceHost)?;
    let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".into());
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host
    };
    let url: http::Uri = format!("https://{host}:{port}")
        .parse()
        .map_err(|source| KubeError::ServiceUrl { source })?;
    let ca = dir.join("ca.crt");
    let pem = std::fs::read(&ca).map_err(|source| KubeError::ReadCa {
        path: ca.clone(),
        source,
    })?;
    let certs = pem_certificates(&ca, &pem)?;
    let mut config = Config::new(url);
    config.root_cert = Some(certs);
    config.auth_info.token_file = Some(dir.join("token").display().to_string());
    Ok(config)
}

/// The DER certificates of the PEM bundle read from `path`.
fn pem_certificates(path: &std::path::Path, pem: &[u8]) -> Result<Vec<Vec<u8>>, KubeError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let certs = CertificateDer::pem_slice_iter(pem)
        .map(|c| c.map(|c| c.to_vec()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| KubeError::CaNotPem {
            path: path.to_path_buf(),
            source,
        })?;
    if certs.is_empty() {
        return Err(KubeError::NoCa {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// Why a list failed, naming the permission that is missing.
fn explain<K: Resource<DynamicType = ()>>(e: kube::Error) -> KubeError {
    explain_list(&K::plural(&()), &K::group(&()), e)
}

/// Why a list of `plural` (API group `group`, "" for core) failed.
pub(super) fn explain_list(plural: &str, group: &str, e: kube::Error) -> KubeError {
    let plural = plural.to_string();
    let group = if group.is_empty() { "core" } else { group };
    let why = match &e {
        kube::Error::Api(s) if s.code == 401 => {
            "401 Unauthorized: the cluster refused the credentials".to_string()
        }
        kube::Error::Api(s) if s.code == 403 => format!(
            "403 Forbidden: the account needs `list` on {plural} (API group {group}): {}",
            s.message
        ),
        kube::Error::Api(s) if s.code == 410 => {
            "the list changed too fast to be read whole (410 Expired twice)".to_string()
        }
        kube::Error::Api(s) => format!("{} {}: {}", s.code, s.reason, s.message),
        _ => return KubeError::List { plural, source: e },
    };
    KubeError::Refused { plural, why }
}

fn describe<K: Resource<DynamicType = ()>>(kind: &str, obj: &K) -> String {
    let meta = obj.meta();
    format!(
        "{kind} {}/{}",
        meta.namespace.as_deref().unwrap_or("-"),
        meta.name.as_deref().unwrap_or("-")
    )
}

/// A pod runs its images by the digests in its status and names them in its spec.
fn pod_uses(pod: &Pod, cluster: &str) -> Vec<Use> {
    let who = describe("pod", pod);
    let mut out = Vec::new();
    if let Some(spec) = &pod.spec {
        out.extend(spec_uses(&who, spec, cluster));
        for c in spec.ephemeral_containers.iter().flatten() {
            if let Some(image) = &c.image {
                out.push(Use {
                    image: image.clone(),
                    by: format!("in use by {who} (container {}), cluster {cluster}", c.name),
                });
            }
        }
    }
    if let Some(status) = &pod.status {
        let statuses = status
            .container_statuses
            .iter()
            .flatten()
            .chain(status.init_container_statuses.iter().flatten())
            .chain(status.ephemeral_container_statuses.iter().flatten());
        for s in statuses {
            if !s.image_id.is_empty() {
                out.push(Use {
                    image: s.image_id.clone(),
                    by: format!(
                        "in use by {who} (container {}, running), cluster {cluster}",
                        s.name
                    ),
                });
            }
        }
    }
    out
}

/// The containers and init containers of a pod spec.
fn spec_uses(who: &str, spec: &PodSpec, cluster: &str) -> Vec<Use> {
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .filter_map(|c| {
            c.image.as_ref().map(|image| Use {
                image: image.clone(),
                by: format!("in use by {who} (container {}), cluster {cluster}", c.name),
            })
        })
        .collect()
}

/// A kind whose objects hold a pod template: what starts next, or what a rollback returns to.
trait Templated: Resource<DynamicType = ()> {
    /// The kind as reasons name it (`deployment prod/api`).
    const LABEL: &'static str;
    fn pod_spec(&self) -> Option<&PodSpec>;
}

impl Templated for Deployment {
    const LABEL: &'static str = "deployment";
    fn pod_spec(&self) -> Option<&PodSpec> {
        self.spec.as_ref()?.template.spec.as_ref()
    }
}

impl Templated for StatefulSet {
    const LABEL: &'static str = "statefulset";
    fn pod_spec(&self) -> Option<&PodSpec> {
        self.spec.as_ref()?.template.spec.as_ref()
    }
}

impl Templated for DaemonSet {
    const LABEL: &'static str = "daemonset";
    fn pod_spec(&self) -> Option<&PodSpec> {
        self.spec.as_ref()?.template.spec.as_ref()
    }
}

impl Templated for ReplicaSet {
    const LABEL: &'static str = "replicaset";
    fn pod_spec(&self) -> Option<&PodSpec> {
        self.spec.as_ref()?.template.as_ref()?.spec.as_ref()
    }
}

impl Templated for Job {
    const LABEL: &'static str = "job";
    fn pod_spec(&self) -> Option<&PodSpec> {
        self.spec.as_ref()?.template.spec.as_ref()
    }
}

impl Templated for CronJob {
    const LABEL: &'static str = "cronjob";
    fn pod_spec(&self) -> Option<&PodSpec> {
        self.spec
            .as_ref()?
            .job_template
            .spec
            .as_ref()?
            .template
            .spec
            .as_ref()
    }
}

/// The containers of an object's pod template.
fn templated<K: Templated>(obj: &K, cluster: &str) -> Vec<Use> {
    obj.pod_spec()
        .map(|s| spec_uses(&describe(K::LABEL, obj), s, cluster))
        .unwrap_or_default()
}

/// A ControllerRevision keeps a StatefulSet's or DaemonSet's earlier pod template as a patch
/// (`data`): every `image` of a `containers` or `initContainers` list in it.
fn revision_uses(rev: &ControllerRevision, cluster: &str) -> Vec<Use> {
    let who = describe("controllerrevision", rev);
    let mut images = Vec::new();
    if let Some(data) = &rev.data {
        collect_images(&data.0, &mut images);
    }
    images
        .into_iter()
        .map(|(container, image)| Use {
            image,
            by: format!(
                "in use by {who} (container {container}, rollback history), cluster {cluster}"
            ),
        })
        .collect()
}

fn collect_images(v: &serde_json::Value, out: &mut Vec<(String, String)>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, child) in map {
                if k == "containers" || k == "initContainers" {
                    for c in child.as_array().into_iter().flatten() {
                        if let Some(image) = c.get("image").and_then(|i| i.as_str()) {
                            let name = c.get("name").and_then(|n| n.as_str()).unwrap_or("-");
                            out.push((name.to_string(), image.to_string()));
                        }
                    }
                } else {
                    collect_images(child, out);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|i| collect_images(i, out)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Issue 23, item 5: a kubeconfig that cannot be used is a typed error naming the file,
    // with the I/O cause kept, and never quoting what the file holds.
    #[test]
    fn kubeconfig_errors_never_show_its_path_or_quote_it() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        let e = kubeconfig_error(&missing, Kubeconfig::read_from(&missing).unwrap_err());
        assert!(matches!(e, KubeError::ReadKubeconfig { .. }), "{e:?}");
        let shown = crate::error::chain(&e);
        assert!(shown.starts_with("cannot read the kubeconfig: "), "{shown}");
        assert!(!shown.contains(&*missing.to_string_lossy()), "{shown}");

        let broken = dir.path().join("kubeconfig");
        std::fs::write(&broken, "users:\n- user: {token: [kube-canary-token\n").unwrap();
        let e = kubeconfig_error(&broken, Kubeconfig::read_from(&broken).unwrap_err());
        let shown = crate::error::chain(&e);
        assert_eq!(shown, "the kubeconfig is not valid YAML");

        let ca = dir.path().join("ca.crt");
        let e = pem_certificates(&ca, b"not pem").unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("{}: no certificate in it", ca.display())
        );
    }
}
