//! An in-process fake of the Kubernetes API server, enough for ferry's in-use protection:
//! the read side of Pods, Deployments, StatefulSets, DaemonSets, ReplicaSets,
//! ControllerRevisions, Jobs and CronJobs (and Namespaces), and of ArgoCD's Applications and
//! the Image Updater's ImageUpdaters (custom resources under `/apis/{group}/v1alpha1`, as if
//! their CRDs were installed), written from the Kubernetes API
//! reference and the "API concepts" page, and where those are silent, from what
//! kube-apiserver does:
//!
//! * Collections cluster-wide (`GET /api/v1/pods`, `/apis/apps/v1/deployments`, …) and in a
//!   namespace (`/api/v1/namespaces/{ns}/pods`, …) answer a `<Kind>List` whose items carry no
//!   `kind`/`apiVersion` (the server omits them in lists; only a single-object GET has them),
//!   in etcd key order (`<namespace>/<name>` compared as bytes).
//! * Chunking: `limit` and `continue`. A page that is not the last has `metadata.continue` and
//!   `metadata.remainingItemCount`. Every page of one list is read at the resource version of
//!   the first (objects added or removed meanwhile do not show up). The token has the shape
//!   kube-apiserver gives it (base64url of `{"v":"meta.k8s.io/v1","rv":N,"start":"<key>\0"}`)
//!   and is checked the same way: a bad one is 400 `invalid continue token: continue key is
//!   not valid…`; once compacted (`expire_continue_tokens`), 410 `Expired` with the
//!   "inconsistent continue" token in `metadata.continue` (resource version -1: the rest of
//!   the list at the latest version); `resourceVersion` other than "" or "0" beside `continue`
//!   is 400.
//! * `resourceVersion` / `resourceVersionMatch` as the API concepts page tabulates them
//!   (unset or "0": latest; N: not older than N, or exactly N with `limit` or `Exact`; too old
//!   is 410, newer than the server is 504 `Too large resource version`).
//! * Authentication: `KubeAuth::Token` wants `Authorization: Bearer <token>`; `ClientCert`
//!   asks for a client certificate in the handshake but, like kube-apiserver
//!   (`tls.RequestClientCert`), does not refuse the connection without one: an absent, or
//!   untrusted, certificate makes every request 401. `None` is `kubectl proxy` (plain HTTP).
//! * Authorization is modelled on RBAC, which only adds permissions: the caller may get and
//!   list the eight kinds and namespaces everywhere unless told otherwise (`forbid`,
//!   `forbid_cluster_scope`, `forbid_in_namespace`, `forbid_namespace_list`); a refusal is a
//!   403 `Status` worded as kube-apiserver words it (`deployments.apps is forbidden: User "…"
//!   cannot list resource "deployments" in API group "apps" at the cluster scope`).
//!   `SelfSubjectAccessReview` answers from the same rules: `get`, `list` and `watch` of
//!   those resources where not forbidden, and `get` of the discovery paths, are allowed;
//!   any other verb, resource or subresource is not (the caller holds no other grant).
//! * `GET /version`, `/api`, `/apis`, `/api/v1`, `/apis/{group}`, `/apis/{group}/v1`
//!   (legacy, non-aggregated discovery documents); anything else is 404 `Status` "the server
//!   could not find the requested resource"; other methods on known paths are 405.
//!
//! Not modelled (refused loudly with 400 rather than answered wrongly): `watch`,
//! `labelSelector`, `fieldSelector`. Writes other than `SelfSubjectAccessReview` are 405.
//! Protobuf and Table content types are not offered (answers are always JSON).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use base64::Engine;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::{json, Map, Value};
use sha2::Digest;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_util::either::Either;

use super::tls::TestCa;

mod argo;
mod conn;
mod control;
mod list;
mod objects;
mod serve;

#[allow(unused_imports)]
pub use argo::*;
#[allow(unused_imports)]
pub use conn::*;
#[allow(unused_imports)]
pub use control::*;
#[allow(unused_imports)]
pub use list::*;
#[allow(unused_imports)]
pub use objects::*;
#[allow(unused_imports)]
pub use serve::*;

/// The user a bearer token (and `kubectl proxy`'s own credentials) authenticate as.
pub const KUBE_SERVICE_ACCOUNT_USER: &str = "system:serviceaccount:ferry:ferry";
/// The common name of the fake's client certificate: the user it authenticates as.
pub const KUBE_CLIENT_CERT_USER: &str = "ferry";
/// `metadata.creationTimestamp` of objects that do not set one.
pub const KUBE_CREATED: &str = "2024-05-01T10:00:00Z";
/// The server's version (`GET /version`).
pub const KUBE_GIT_VERSION: &str = "v1.31.4";

const CONTINUE_EXPIRED_INCONSISTENT: &str = "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.";
const LIST_EXPIRED: &str = "The resourceVersion for the provided list is too old.";
const NOT_FOUND: &str = "the server could not find the requested resource";
const NOT_ALLOWED: &str = "the server does not allow this method on the requested resource";

/// How clients authenticate to the fake.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KubeAuth {
    /// `kubectl proxy`: plain HTTP, no credentials required.
    None,
    /// HTTPS; requests must carry `Authorization: Bearer <token>`.
    Token(String),
    /// HTTPS; the client must present a certificate signed by the fake's client CA (mTLS).
    /// As kube-apiserver does, the handshake itself does not require one: without a trusted
    /// certificate every request answers 401.
    ClientCert,
}

/// The kinds ferry reads.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub enum Kind {
    Pod,
    Deployment,
    StatefulSet,
    DaemonSet,
    ReplicaSet,
    ControllerRevision,
    Job,
    CronJob,
    /// ArgoCD's `Application` (`argoproj.io/v1alpha1`), a custom resource.
    Application,
    /// Image Updater v1.x's `ImageUpdater` (`argocd-image-updater.argoproj.io/v1alpha1`).
    ImageUpdater,
}

impl Kind {
    /// The custom resources of ArgoCD and its Image Updater, served as if their CRDs were
    /// installed (not in `ALL`: the built-in kinds).
    pub const ARGO: [Kind; 2] = [Kind::Application, Kind::ImageUpdater];

    pub const ALL: [Kind; 8] = [
        Kind::Pod,
        Kind::Deployment,
        Kind::StatefulSet,
        Kind::DaemonSet,
        Kind::ReplicaSet,
        Kind::ControllerRevision,
        Kind::Job,
        Kind::CronJob,
    ];

    /// The `kind` of one object (`Pod`).
    pub fn name(self) -> &'static str {
        match self {
            Kind::Pod => "Pod",
            Kind::Deployment => "Deployment",
            Kind::StatefulSet => "StatefulSet",
            Kind::DaemonSet => "DaemonSet",
            Kind::ReplicaSet => "ReplicaSet",
            Kind::ControllerRevision => "ControllerRevision",
            Kind::Job => "Job",
            Kind::CronJob => "CronJob",
            Kind::Application => "Application",
            Kind::ImageUpdater => "ImageUpdater",
        }
    }

    /// The resource (plural, lower case) in paths and RBAC rules (`pods`).
    pub fn resource(self) -> &'static str {
        match self {
            Kind::Pod => "pods",
            Kind::Deployment => "deployments",
            Kind::StatefulSet => "statefulsets",
            Kind::DaemonSet => "daemonsets",
            Kind::ReplicaSet => "replicasets",
            Kind::ControllerRevision => "controllerrevisions",
            Kind::Job => "jobs",
            Kind::CronJob => "cronjobs",
            Kind::Application => "applications",
            Kind::ImageUpdater => "imageupdaters",
        }
    }

    /// The API group: "" (core), "apps", "batch", or a custom resource's.
    pub fn group(self) -> &'static str {
        match self {
            Kind::Pod => "",
            Kind::Deployment
            | Kind::StatefulSet
            | Kind::DaemonSet
            | Kind::ReplicaSet
            | Kind::ControllerRevision => "apps",
            Kind::Job | Kind::CronJob => "batch",
            Kind::Application => "argoproj.io",
            Kind::ImageUpdater => "argocd-image-updater.argoproj.io",
        }
    }

    /// `apiVersion`: "v1", "apps/v1", "batch/v1" or a custom resource's.
    pub fn api_version(self) -> &'static str {
        match self {
            Kind::Application => "argoproj.io/v1alpha1",
            Kind::ImageUpdater => "argocd-image-updater.argoproj.io/v1alpha1",
            _ => match self.group() {
                "" => "v1",
                "apps" => "apps/v1",
                _ => "batch/v1",
            },
        }
    }

    /// The collection's path, cluster-wide or in `namespace`.
    pub fn path(self, namespace: Option<&str>) -> String {
        let base = match self.group() {
            "" => "/api/v1".to_string(),
            g => format!("/apis/{g}/{}", group_version(g)),
        };
        match namespace {
            Some(ns) => format!("{base}/namespaces/{ns}/{}", self.resource()),
            None => format!("{base}/{}", self.resource()),
        }
    }

    fn singular(self) -> &'static str {
        match self {
            Kind::Pod => "pod",
            Kind::Deployment => "deployment",
            Kind::StatefulSet => "statefulset",
            Kind::DaemonSet => "daemonset",
            Kind::ReplicaSet => "replicaset",
            Kind::ControllerRevision => "controllerrevision",
            Kind::Job => "job",
            Kind::CronJob => "cronjob",
            Kind::Application => "application",
            Kind::ImageUpdater => "imageupdater",
        }
    }

    fn short_names(self) -> &'static [&'static str] {
        match self {
            Kind::Pod => &["po"],
            Kind::Deployment => &["deploy"],
            Kind::StatefulSet => &["sts"],
            Kind::DaemonSet => &["ds"],
            Kind::ReplicaSet => &["rs"],
            Kind::ControllerRevision | Kind::Job | Kind::ImageUpdater => &[],
            Kind::CronJob => &["cj"],
            Kind::Application => &["app", "apps"],
        }
    }
}

/// The version a group serves (`v1`; `v1alpha1` for the ArgoCD custom resources).
pub(super) fn group_version(group: &str) -> &'static str {
    match group {
        "argoproj.io" | "argocd-image-updater.argoproj.io" => "v1alpha1",
        _ => "v1",
    }
}

/// What the store holds: one of the kinds, or namespaces (cluster-scoped).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Res {
    Kind(Kind),
    Namespaces,
}

impl Res {
    fn from_path(group: &str, resource: &str) -> Option<Res> {
        if group.is_empty() && resource == "namespaces" {
            return Some(Res::Namespaces);
        }
        Kind::ALL
            .into_iter()
            .chain(Kind::ARGO)
            .find(|k| k.group() == group && k.resource() == resource)
            .map(Res::Kind)
    }

    fn resource(self) -> &'static str {
        match self {
            Res::Kind(k) => k.resource(),
            Res::Namespaces => "namespaces",
        }
    }

    fn group(self) -> &'static str {
        match self {
            Res::Kind(k) => k.group(),
            Res::Namespaces => "",
        }
    }

    fn kind(self) -> &'static str {
        match self {
            Res::Kind(k) => k.name(),
            Res::Namespaces => "Namespace",
        }
    }

    fn api_version(self) -> &'static str {
        match self {
            Res::Kind(k) => k.api_version(),
            Res::Namespaces => "v1",
        }
    }

    fn namespaced(self) -> bool {
        matches!(self, Res::Kind(_))
    }

    /// `group.resource` as kube-apiserver prints a GroupResource (`deployments.apps`, `pods`).
    fn qualified(self) -> String {
        match self.group() {
            "" => self.resource().to_string(),
            g => format!("{}.{g}", self.resource()),
        }
    }

    /// `details` of a Status about this resource.
    fn details(self, name: Option<&str>) -> Value {
        let mut d = Map::new();
        if let Some(n) = name {
            d.insert("name".into(), json!(n));
        }
        if !self.group().is_empty() {
            d.insert("group".into(), json!(self.group()));
        }
        d.insert("kind".into(), json!(self.resource()));
        Value::Object(d)
    }
}

/// Where the caller may get and list a resource. RBAC only grants, so a namespace where
/// listing is refused means no cluster-wide grant either.
#[derive(Clone, Debug, Default)]
enum Access {
    #[default]
    Everywhere,
    /// Granted per namespace (RoleBindings), in every namespace but these.
    NamespacesExcept(BTreeSet<String>),
    Nowhere,
}

impl Access {
    /// `namespace`: None for a cluster-wide request.
    fn allows(&self, namespace: Option<&str>) -> bool {
        match (self, namespace) {
            (Access::Everywhere, _) => true,
            (Access::NamespacesExcept(except), Some(ns)) => !except.contains(ns),
            (Access::NamespacesExcept(_), None) | (Access::Nowhere, _) => false,
        }
    }
}

/// Every version of one object, oldest first: (resource version, object or deleted).
type History = Vec<(u64, Option<Arc<Value>>)>;

struct Data {
    /// The latest resource version (etcd's revision: one counter for everything).
    rv: u64,
    /// Reads at resource versions below this fail (etcd compaction).
    compacted: u64,
    unauthorized: bool,
    /// Custom resources whose CRD is not installed: their paths answer 404.
    uninstalled: BTreeSet<Kind>,
    objects: HashMap<Res, BTreeMap<String, History>>,
    access: HashMap<Res, Access>,
}

impl Data {
    fn access(&self, res: Res) -> Access {
        self.access.get(&res).cloned().unwrap_or_default()
    }

    fn put(&mut self, res: Res, key: String, object: Option<Value>) -> u64 {
        self.rv += 1;
        let rv = self.rv;
        let object = object.map(|mut o| {
            let meta = o
                .get_mut("metadata")
                .and_then(Value::as_object_mut)
                .expect("object metadata");
            meta.insert("resourceVersion".into(), json!(rv.to_string()));
            Arc::new(o)
        });
        self.objects
            .entry(res)
            .or_default()
            .entry(key)
            .or_default()
            .push((rv, object));
        rv
    }

    fn latest(&self, res: Res, key: &str) -> Option<Arc<Value>> {
        self.objects
            .get(&res)?
            .get(key)?
            .last()
            .and_then(|(_, o)| o.clone())
    }
}

struct Inner {
    auth: KubeAuth,
    /// `127.0.0.1:PORT`.
    host: String,
    data: Mutex<Data>,
    requests: Mutex<Vec<(String, String, bool)>>,
    audit: AtomicU64,
    /// Expire every continue token issued so far once the `n`th request with a `continue`
    /// parameter arrives, before it is answered (set by `expire_at_continue`).
    expire_at: Mutex<Vec<usize>>,
}

/// A running fake API server; stops when dropped.
pub struct FakeKube {
    /// `http://127.0.0.1:PORT` (`KubeAuth::None`) or `https://127.0.0.1:PORT`.
    pub url: String,
    inner: Arc<Inner>,
    /// Server CA and client CA (HTTPS modes).
    cas: Option<(TestCa, TestCa)>,
    client_cert: Option<(String, String)>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl FakeKube {
    pub async fn start(auth: KubeAuth) -> FakeKube {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake kube API server");
        let addr: SocketAddr = listener.local_addr().expect("fake kube address");
        let https = auth != KubeAuth::None;
        let url = format!("{}://{addr}", if https { "https" } else { "http" });

        let mut cas = None;
        let mut client_cert = None;
        let mut tls = None;
        if https {
            let (server_ca, client_ca) = (TestCa::new(), TestCa::new());
            let (cert_pem, key_pem) = server_ca.server_cert_pem();
            let cert = CertificateDer::from_pem_slice(cert_pem.as_bytes()).expect("server cert");
            let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).expect("server key");
            let builder = rustls::ServerConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .expect("TLS versions");
            let (c_pem, c_key) = client_ca.client_cert_pem(KUBE_CLIENT_CERT_USER, Some("ferry"));
            let c_der = CertificateDer::from_pem_slice(c_pem.as_bytes())
                .expect("client cert")
                .to_vec();
            let (mut config, verifier) = if auth == KubeAuth::ClientCert {
                let mut roots = rustls::RootCertStore::empty();
                roots
                    .add(
                        CertificateDer::from_pem_slice(client_ca.cert_pem().as_bytes())
                            .expect("client CA"),
                    )
                    .expect("client CA as root");
                let inner =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                        .build()
                        .expect("client certificate verifier");
                let config = builder
                    .with_client_cert_verifier(Arc::new(RequestClientCert {
                        inner: inner.clone(),
                    }))
                    .with_single_cert(vec![cert], key)
                    .expect("server TLS config");
                (config, Some(inner))
            } else {
                let config = builder
                    .with_no_client_auth()
                    .with_single_cert(vec![cert], key)
                    .expect("server TLS config");
                (config, None)
            };
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            tls = Some((
                tokio_rustls::TlsAcceptor::from(Arc::new(config)),
                verifier,
                c_der,
            ));
            client_cert = Some((c_pem, c_key));
            cas = Some((server_ca, client_ca));
        }

        let inner = Arc::new(Inner {
            auth,
            host: addr.to_string(),
            data: Mutex::new(Data {
                rv: 1000,
                compacted: 0,
                unauthorized: false,
                uninstalled: BTreeSet::new(),
                objects: HashMap::new(),
                access: HashMap::new(),
            }),
            requests: Mutex::new(Vec::new()),
            expire_at: Mutex::new(Vec::new()),
            audit: AtomicU64::new(0),
        });

        let (tx, rx) = tokio::sync::mpsc::channel::<(Conn, ConnInfo)>(64);
        let accept = tokio::spawn(async move {
            loop {
                let tcp = match listener.accept().await {
                    Ok((tcp, _)) => tcp,
                    Err(_) => {
                        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                        continue;
                    }
                };
                let Some((acceptor, verifier, client_der)) = tls.clone() else {
                    let info = ConnInfo {
                        cert: PeerCert::NotPresented,
                    };
                    if tx.send((Either::Left(tcp), info)).await.is_err() {
                        return;
                    }
                    continue;
                };
                let tx = tx.clone();
                tokio::spawn(async move {
                    let handshake = tokio::time::timeout(
                        std::time::Duration::from_secs(10),
                        acceptor.accept(tcp),
                    );
                    let Ok(Ok(stream)) = handshake.await else {
                        return;
                    };
                    let cert = match (&verifier, stream.get_ref().1.peer_certificates()) {
                        (Some(v), Some([leaf, rest @ ..])) => {
                            match v.verify_client_cert(leaf, rest, UnixTime::now()) {
                                // Only the fake holds the client CA's key, so a trusted
                                // certificate is the one it issued.
                                Ok(_) if leaf.as_ref() == client_der.as_slice() => {
                                    PeerCert::Valid(KUBE_CLIENT_CERT_USER.to_string())
                                }
                                Ok(_) => PeerCert::Invalid("unknown certificate".into()),
                                Err(e) => PeerCert::Invalid(e.to_string()),
                            }
                        }
                        _ => PeerCert::NotPresented,
                    };
                    let _ = tx.send((Either::Right(stream), ConnInfo { cert })).await;
                });
            }
        });

        let app = Router::new()
            .fallback(handle)
            .with_state(inner.clone())
            .into_make_service_with_connect_info::<ConnInfo>();
        let serve = tokio::spawn(async move {
            let _ = axum::serve(KubeListener { rx }, app).await;
        });

        FakeKube {
            url,
            inner,
            cas,
            client_cert,
            tasks: vec![accept, serve],
        }
    }
}
