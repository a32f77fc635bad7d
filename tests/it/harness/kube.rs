//! An in-process fake of the Kubernetes API server, enough for ferry's in-use protection:
//! the read side of Pods, Deployments, StatefulSets, DaemonSets, ReplicaSets,
//! ControllerRevisions, Jobs and CronJobs (and Namespaces), written from the Kubernetes API
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
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Kind {
    Pod,
    Deployment,
    StatefulSet,
    DaemonSet,
    ReplicaSet,
    ControllerRevision,
    Job,
    CronJob,
}

impl Kind {
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
        }
    }

    /// The API group: "" (core), "apps" or "batch".
    pub fn group(self) -> &'static str {
        match self {
            Kind::Pod => "",
            Kind::Deployment
            | Kind::StatefulSet
            | Kind::DaemonSet
            | Kind::ReplicaSet
            | Kind::ControllerRevision => "apps",
            Kind::Job | Kind::CronJob => "batch",
        }
    }

    /// `apiVersion`: "v1", "apps/v1" or "batch/v1".
    pub fn api_version(self) -> &'static str {
        match self.group() {
            "" => "v1",
            "apps" => "apps/v1",
            _ => "batch/v1",
        }
    }

    /// The collection's path, cluster-wide or in `namespace`.
    pub fn path(self, namespace: Option<&str>) -> String {
        let base = match self.group() {
            "" => "/api/v1".to_string(),
            g => format!("/apis/{g}/v1"),
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
        }
    }

    fn short_names(self) -> &'static [&'static str] {
        match self {
            Kind::Pod => &["po"],
            Kind::Deployment => &["deploy"],
            Kind::StatefulSet => &["sts"],
            Kind::DaemonSet => &["ds"],
            Kind::ReplicaSet => &["rs"],
            Kind::ControllerRevision | Kind::Job => &[],
            Kind::CronJob => &["cj"],
        }
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

/// How the connection authenticated by its client certificate.
#[derive(Clone, Debug)]
enum PeerCert {
    NotPresented,
    Valid(String),
    Invalid(String),
}

#[derive(Clone, Debug)]
struct ConnInfo {
    cert: PeerCert,
}

impl Connected<axum::serve::IncomingStream<'_, KubeListener>> for ConnInfo {
    fn connect_info(stream: axum::serve::IncomingStream<'_, KubeListener>) -> Self {
        stream.remote_addr().clone()
    }
}

type Conn = Either<TcpStream, TlsStream<TcpStream>>;

/// Hands axum connections whose TLS handshake (if any) is already done, so one slow
/// handshake holds up no one else.
struct KubeListener {
    rx: tokio::sync::mpsc::Receiver<(Conn, ConnInfo)>,
}

impl axum::serve::Listener for KubeListener {
    type Io = Conn;
    type Addr = ConnInfo;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(c) => c,
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(ConnInfo {
            cert: PeerCert::NotPresented,
        })
    }
}

/// kube-apiserver's `ClientAuth: tls.RequestClientCert`: ask for a certificate, take
/// whatever comes (the possession proof is still checked), judge it after the handshake.
#[derive(Debug)]
struct RequestClientCert {
    inner: Arc<dyn ClientCertVerifier>,
}

impl ClientCertVerifier for RequestClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
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

    /// The user requests authenticate as (what 403 messages name).
    pub fn user(&self) -> &'static str {
        match self.inner.auth {
            KubeAuth::ClientCert => KUBE_CLIENT_CERT_USER,
            _ => KUBE_SERVICE_ACCOUNT_USER,
        }
    }

    /// PEM of the CA that signed the server certificate (HTTPS modes).
    pub fn ca_pem(&self) -> String {
        let (server_ca, _) = self
            .cas
            .as_ref()
            .expect("KubeAuth::None serves plain HTTP: there is no CA");
        server_ca.cert_pem()
    }

    /// PEM cert and key of a client certificate the server accepts (ClientCert mode; in
    /// Token mode the server does not ask for one).
    pub fn client_cert_pem(&self) -> (String, String) {
        self.client_cert
            .clone()
            .expect("KubeAuth::None serves plain HTTP: there is no client certificate")
    }

    /// A client certificate (PEM cert, key) from a CA the server does not trust.
    pub fn foreign_client_cert_pem(&self) -> (String, String) {
        TestCa::new().client_cert_pem(KUBE_CLIENT_CERT_USER, Some("ferry"))
    }

    /// A reqwest client that trusts the server and carries the mode's credentials.
    pub fn client(&self) -> reqwest::Client {
        let mut b = self.client_builder();
        match &self.inner.auth {
            KubeAuth::None => {}
            KubeAuth::Token(t) => {
                let mut h = HeaderMap::new();
                h.insert(
                    header::AUTHORIZATION,
                    HeaderValue::from_str(&format!("Bearer {t}")).expect("token header"),
                );
                b = b.default_headers(h);
            }
            KubeAuth::ClientCert => {
                let (c, k) = self.client_cert_pem();
                b = b.identity(
                    reqwest::Identity::from_pem(format!("{c}{k}").as_bytes())
                        .expect("client identity"),
                );
            }
        }
        b.build().expect("fake kube client")
    }

    /// A reqwest client that trusts the server and carries no credentials.
    pub fn client_without_credentials(&self) -> reqwest::Client {
        self.client_builder().build().expect("fake kube client")
    }

    fn client_builder(&self) -> reqwest::ClientBuilder {
        let b = reqwest::Client::builder();
        match &self.cas {
            Some((server_ca, _)) => b.tls_built_in_root_certs(false).add_root_certificate(
                reqwest::Certificate::from_pem(server_ca.cert_pem().as_bytes()).expect("CA"),
            ),
            None => b,
        }
    }

    /// Add an object (full JSON as the API returns it). Replaces an object of the same
    /// namespace and name, as an update would; the object gets a new `resourceVersion`, and
    /// `uid` and `creationTimestamp` if it has none. The namespace is created if needed.
    pub fn add(&self, kind: Kind, object: serde_json::Value) {
        let mut object = object;
        let o = object
            .as_object_mut()
            .unwrap_or_else(|| panic!("a {} must be a JSON object", kind.name()));
        for (field, want) in [("kind", kind.name()), ("apiVersion", kind.api_version())] {
            match o.get(field).and_then(Value::as_str) {
                None => {
                    o.insert(field.into(), json!(want));
                }
                Some(got) => assert_eq!(got, want, "{field} of an object added as {kind:?}"),
            }
        }
        let meta = o
            .entry("metadata")
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .expect("metadata is an object");
        let name = meta
            .get("name")
            .and_then(Value::as_str)
            .expect("metadata.name")
            .to_string();
        let ns = meta
            .get("namespace")
            .and_then(Value::as_str)
            .expect("metadata.namespace")
            .to_string();
        meta.entry("uid")
            .or_insert_with(|| json!(uid(kind.name(), &ns, &name)));
        meta.entry("creationTimestamp")
            .or_insert_with(|| json!(KUBE_CREATED));

        let mut data = self.inner.data.lock().expect("kube data");
        if data.latest(Res::Namespaces, &ns).is_none() {
            data.put(Res::Namespaces, ns.clone(), Some(namespace(&ns)));
        }
        data.put(Res::Kind(kind), format!("{ns}/{name}"), Some(object));
    }

    /// Delete an object; false if there was none.
    pub fn remove(&self, kind: Kind, namespace: &str, name: &str) -> bool {
        let key = format!("{namespace}/{name}");
        let mut data = self.inner.data.lock().expect("kube data");
        if data.latest(Res::Kind(kind), &key).is_none() {
            return false;
        }
        data.put(Res::Kind(kind), key, None);
        true
    }

    /// Make every list (and get) of `kind` answer 403 with a real `Status` object.
    pub fn forbid(&self, kind: Kind) {
        self.set_access(Res::Kind(kind), |_| Access::Nowhere);
    }

    /// Only cluster-wide requests for `kind` are refused: the caller's grants are per
    /// namespace (RoleBindings), so listing in a namespace still works.
    pub fn forbid_cluster_scope(&self, kind: Kind) {
        self.set_access(Res::Kind(kind), |a| match a {
            Access::Everywhere => Access::NamespacesExcept(BTreeSet::new()),
            other => other,
        });
    }

    /// Requests for `kind` in `namespace` are refused, and therefore (RBAC only grants)
    /// cluster-wide ones too; other namespaces still work.
    pub fn forbid_in_namespace(&self, kind: Kind, namespace: &str) {
        let ns = namespace.to_string();
        self.set_access(Res::Kind(kind), move |a| match a {
            Access::Everywhere => Access::NamespacesExcept(BTreeSet::from([ns])),
            Access::NamespacesExcept(mut except) => {
                except.insert(ns);
                Access::NamespacesExcept(except)
            }
            Access::Nowhere => Access::Nowhere,
        });
    }

    /// Listing (and getting) namespaces answers 403.
    pub fn forbid_namespace_list(&self) {
        self.set_access(Res::Namespaces, |_| Access::Nowhere);
    }

    /// Undo `forbid*` for `kind`.
    pub fn allow(&self, kind: Kind) {
        self.set_access(Res::Kind(kind), |_| Access::Everywhere);
    }

    fn set_access(&self, res: Res, f: impl FnOnce(Access) -> Access) {
        let mut data = self.inner.data.lock().expect("kube data");
        let now = data.access(res);
        data.access.insert(res, f(now));
    }

    /// Every request answers 401 Status (`"reason":"Unauthorized","message":"Unauthorized"`),
    /// as when the credentials were revoked.
    pub fn unauthorized(&self) {
        self.inner.data.lock().expect("kube data").unauthorized = true;
    }

    /// Undo `unauthorized`.
    pub fn authorized(&self) {
        self.inner.data.lock().expect("kube data").unauthorized = false;
    }

    /// Continue tokens issued so far stop working (etcd compacted past their resource
    /// version): a request with one answers 410 `Expired` carrying, in `metadata.continue`,
    /// a token that continues the list inconsistently (at the latest resource version).
    pub fn expire_continue_tokens(&self) {
        let mut data = self.inner.data.lock().expect("kube data");
        data.rv += 1;
        data.compacted = data.rv;
    }

    /// Expire the continue tokens issued so far when the `n`th request that carries one
    /// arrives (1-based), once: a list read in pages meets a 410 in the middle. Each call
    /// adds one such moment.
    pub fn expire_at_continue(&self, n: usize) {
        self.inner.expire_at.lock().expect("expire at").push(n);
    }

    /// The latest resource version.
    pub fn resource_version(&self) -> u64 {
        self.inner.data.lock().expect("kube data").rv
    }

    /// Every request seen: (method, path with query, whether an Authorization header was
    /// present).
    pub fn requests(&self) -> Vec<(String, String, bool)> {
        self.inner.requests.lock().expect("kube requests").clone()
    }

    /// Write a kubeconfig at `path` pointing at this server: the cluster (server URL and, for
    /// HTTPS, `certificate-authority-data`), a user matching the auth mode (token, or
    /// client-certificate-data + client-key-data; none for `KubeAuth::None`), a context named
    /// `context` and `current-context` set to it.
    pub fn write_kubeconfig(&self, path: &std::path::Path, context: &str) {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
        // JSON strings are YAML double-quoted scalars: any name is safe.
        let q = |s: &str| serde_json::to_string(s).expect("quote");
        let mut y = String::from("apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n");
        if self.cas.is_some() {
            y += &format!("    certificate-authority-data: {}\n", b64(&self.ca_pem()));
        }
        y += &format!("    server: {}\n  name: fake-kube\n", q(&self.url));
        y += "contexts:\n- context:\n    cluster: fake-kube\n";
        if self.inner.auth != KubeAuth::None {
            y += "    user: ferry\n";
        }
        y += &format!("  name: {}\ncurrent-context: {}\n", q(context), q(context));
        y += "preferences: {}\n";
        match &self.inner.auth {
            KubeAuth::None => y += "users: []\n",
            KubeAuth::Token(t) => {
                y += &format!("users:\n- name: ferry\n  user:\n    token: {}\n", q(t));
            }
            KubeAuth::ClientCert => {
                let (c, k) = self.client_cert_pem();
                y += &format!(
                    "users:\n- name: ferry\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\n",
                    b64(&c),
                    b64(&k)
                );
            }
        }
        std::fs::write(path, y).expect("write kubeconfig");
    }
}

// ---------------------------------------------------------------------------------------
// Object builders.

/// A deterministic uid shaped like the server's (a v4 UUID).
fn uid(kind: &str, ns: &str, name: &str) -> String {
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

fn namespace(name: &str) -> Value {
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
fn is_latest(image: &str) -> bool {
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
fn container_spec(name: &str, image: &str) -> Value {
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
enum Role {
    Init,
    Regular,
    Ephemeral,
}

/// One entry of `status.*containerStatuses`. An empty `image_id` is a container whose
/// image is not pulled yet: waiting, not ready, no container ID.
fn container_status(ns: &str, pod: &str, role: Role, c: (&str, &str, &str)) -> Value {
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
fn template(labels: Value, images: &[(&str, &str)], restart_policy: &str) -> Value {
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

// ---------------------------------------------------------------------------------------
// Answers.

fn respond(inner: &Inner, code: StatusCode, body: Vec<u8>) -> Response {
    let n = inner.audit.fetch_add(1, Ordering::Relaxed);
    let audit = format!("{:08x}-0000-4000-8000-{:012x}", std::process::id(), n);
    let mut r = (code, body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, private"),
    );
    h.insert("audit-id", HeaderValue::from_str(&audit).expect("audit id"));
    r
}

fn json_response(inner: &Inner, code: StatusCode, body: &Value) -> Response {
    respond(inner, code, serde_json::to_vec(body).expect("serialize"))
}

/// A failure `Status` (meta/v1) as kube-apiserver writes it.
fn status_value(code: StatusCode, reason: &str, message: &str, details: Option<Value>) -> Value {
    let mut s = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code.as_u16(),
    });
    if let Some(d) = details {
        s["details"] = d;
    }
    s
}

fn status(
    inner: &Inner,
    code: StatusCode,
    reason: &str,
    message: &str,
    details: Option<Value>,
) -> Response {
    json_response(inner, code, &status_value(code, reason, message, details))
}

fn bad_request(inner: &Inner, message: &str) -> Response {
    status(inner, StatusCode::BAD_REQUEST, "BadRequest", message, None)
}

fn not_found(inner: &Inner) -> Response {
    status(
        inner,
        StatusCode::NOT_FOUND,
        "NotFound",
        NOT_FOUND,
        Some(json!({})),
    )
}

fn method_not_allowed(inner: &Inner) -> Response {
    status(
        inner,
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        NOT_ALLOWED,
        Some(json!({})),
    )
}

fn forbidden(
    inner: &Inner,
    user: &str,
    verb: &str,
    res: Res,
    namespace: Option<&str>,
    name: Option<&str>,
) -> Response {
    let scope = match namespace {
        Some(ns) => format!("in the namespace {}", go_quote(ns)),
        None => "at the cluster scope".to_string(),
    };
    let why = format!(
        "User {} cannot {verb} resource {} in API group {} {scope}",
        go_quote(user),
        go_quote(res.resource()),
        go_quote(res.group()),
    );
    let message = match name {
        Some(n) => format!("{} {} is forbidden: {why}", res.qualified(), go_quote(n)),
        None => format!("{} is forbidden: {why}", res.qualified()),
    };
    status(
        inner,
        StatusCode::FORBIDDEN,
        "Forbidden",
        &message,
        Some(res.details(name)),
    )
}

/// Go's `%q` for the strings that occur here.
fn go_quote(s: &str) -> String {
    serde_json::to_string(s).expect("quote")
}

/// A list item: the object without `kind` and `apiVersion`, as the server writes items.
struct Item<'a>(&'a Value);

impl Serialize for Item<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Object(m) => {
                let fields = m
                    .iter()
                    .filter(|(k, _)| k.as_str() != "kind" && k.as_str() != "apiVersion");
                let mut map = s.serialize_map(None)?;
                for (k, v) in fields {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
            other => other.serialize(s),
        }
    }
}

struct Items<'a>(&'a [Arc<Value>]);

impl Serialize for Items<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for i in self.0 {
            seq.serialize_element(&Item(i))?;
        }
        seq.end()
    }
}

#[derive(Serialize)]
struct ListBody<'a> {
    kind: String,
    #[serde(rename = "apiVersion")]
    api_version: &'static str,
    metadata: Value,
    items: Items<'a>,
}

/// kube-apiserver's continue token (k8s.io/apiserver storage): field order as Go writes it.
#[derive(Serialize, Deserialize, Default)]
struct ContinueToken {
    #[serde(default)]
    v: String,
    #[serde(default)]
    rv: i64,
    #[serde(default)]
    start: String,
}

fn encode_continue(start: &str, rv: i64) -> String {
    let t = ContinueToken {
        v: "meta.k8s.io/v1".into(),
        rv,
        start: start.into(),
    };
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(serde_json::to_vec(&t).expect("continue token"))
}

/// The start key (relative to the collection) and resource version of a token, or the
/// reason kube-apiserver gives for refusing it.
fn decode_continue(token: &str) -> Result<(String, i64), String> {
    const INVALID: &str = "continue key is not valid";
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|e| {
            let at = match e {
                base64::DecodeError::InvalidByte(i, _)
                | base64::DecodeError::InvalidLastSymbol(i, _) => i,
                base64::DecodeError::InvalidLength(n) => n,
                base64::DecodeError::InvalidPadding => token.len(),
            };
            format!("{INVALID}: illegal base64 data at input byte {at}")
        })?;
    let t: ContinueToken = serde_json::from_slice(&bytes).map_err(|e| format!("{INVALID}: {e}"))?;
    if t.v != "meta.k8s.io/v1" {
        return Err(format!(
            "{INVALID}: server does not recognize this encoded version {}",
            t.v
        ));
    }
    if t.rv == 0 {
        return Err(format!(
            "{INVALID}: incorrect encoded start resourceVersion (version meta.k8s.io/v1)"
        ));
    }
    if t.start.is_empty() {
        return Err(format!(
            "{INVALID}: encoded start key empty (version meta.k8s.io/v1)"
        ));
    }
    // path.Clean must leave "/" + start unchanged: no traversal out of the collection.
    let key = if t.start.starts_with('/') {
        t.start.clone()
    } else {
        format!("/{}", t.start)
    };
    let unclean = key.contains("//")
        || (key.len() > 1 && key.ends_with('/'))
        || key.split('/').any(|seg| seg == "." || seg == "..");
    if unclean {
        return Err(format!("{INVALID}: {}", t.start));
    }
    Ok((key[1..].to_string(), t.rv))
}

/// Who the request is from, or the 401 answer.
fn authenticate(
    inner: &Inner,
    info: &ConnInfo,
    headers: &HeaderMap,
    unauthorized: bool,
) -> Result<String, Box<Response>> {
    let deny = || {
        Box::new(status(
            inner,
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "Unauthorized",
            None,
        ))
    };
    if unauthorized {
        return Err(deny());
    }
    match &inner.auth {
        KubeAuth::None => Ok(KUBE_SERVICE_ACCOUNT_USER.to_string()),
        KubeAuth::Token(want) => {
            // The bearer-token authenticator: scheme case-insensitive, one token.
            let presented = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| {
                    let mut parts = v.split_whitespace();
                    match (parts.next(), parts.next(), parts.next()) {
                        (Some(s), Some(t), None) if s.eq_ignore_ascii_case("bearer") => Some(t),
                        _ => None,
                    }
                });
            match presented {
                Some(t) if t == want => Ok(KUBE_SERVICE_ACCOUNT_USER.to_string()),
                _ => Err(deny()),
            }
        }
        KubeAuth::ClientCert => match &info.cert {
            PeerCert::Valid(user) => Ok(user.clone()),
            PeerCert::NotPresented | PeerCert::Invalid(_) => Err(deny()),
        },
    }
}

async fn handle(
    State(inner): State<Arc<Inner>>,
    ConnectInfo(info): ConnectInfo<ConnInfo>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path_and_query = uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| uri.path().to_string());
    let continued = {
        let mut requests = inner.requests.lock().expect("kube requests");
        requests.push((
            method.to_string(),
            path_and_query,
            headers.contains_key(header::AUTHORIZATION),
        ));
        requests
            .iter()
            .filter(|r| r.1.contains("continue="))
            .count()
    };
    {
        let mut at = inner.expire_at.lock().expect("expire at");
        if let Some(i) = at.iter().position(|&n| n == continued) {
            at.remove(i);
            let mut data = inner.data.lock().expect("kube data");
            data.rv += 1;
            data.compacted = data.rv;
        }
    }
    let unauthorized = inner.data.lock().expect("kube data").unauthorized;
    let user = match authenticate(&inner, &info, &headers, unauthorized) {
        Ok(u) => u,
        Err(r) => return *r,
    };
    let query: Vec<(String, String)> =
        url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let segs: Vec<&str> = uri.path().trim_start_matches('/').split('/').collect();
    let get = method == Method::GET;

    match segs.as_slice() {
        ["version"] if get => json_response(&inner, StatusCode::OK, &version()),
        ["api"] if get => json_response(
            &inner,
            StatusCode::OK,
            &json!({
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [
                    {"clientCIDR": "0.0.0.0/0", "serverAddress": inner.host},
                ],
            }),
        ),
        ["apis"] if get => json_response(
            &inner,
            StatusCode::OK,
            &json!({
                "kind": "APIGroupList",
                "apiVersion": "v1",
                "groups": GROUPS.iter().map(|g| api_group(g)).collect::<Vec<_>>(),
            }),
        ),
        ["apis", g] if get && GROUPS.contains(g) => {
            let mut doc = api_group(g);
            doc["kind"] = json!("APIGroup");
            doc["apiVersion"] = json!("v1");
            json_response(&inner, StatusCode::OK, &doc)
        }
        ["api", "v1"] if get => json_response(&inner, StatusCode::OK, &resource_list("")),
        ["apis", g, "v1"] if get && GROUPS.contains(g) => {
            json_response(&inner, StatusCode::OK, &resource_list(g))
        }
        ["apis", "authorization.k8s.io", "v1", "selfsubjectaccessreviews"] => {
            if method == Method::POST {
                access_review(&inner, &body)
            } else {
                method_not_allowed(&inner)
            }
        }
        // Namespaces (cluster-scoped): list and get.
        ["api", "v1", "namespaces"] => {
            collection(&inner, &method, &user, Res::Namespaces, None, &query)
        }
        ["api", "v1", "namespaces", name] => {
            object(&inner, &method, &user, Res::Namespaces, None, name)
        }
        ["api", "v1", r] => match Res::from_path("", r) {
            Some(res) => collection(&inner, &method, &user, res, None, &query),
            None => not_found(&inner),
        },
        ["api", "v1", "namespaces", ns, r] => match Res::from_path("", r) {
            Some(res) if res.namespaced() => {
                collection(&inner, &method, &user, res, Some(ns), &query)
            }
            _ => not_found(&inner),
        },
        ["api", "v1", "namespaces", ns, r, name] => match Res::from_path("", r) {
            Some(res) if res.namespaced() => object(&inner, &method, &user, res, Some(ns), name),
            _ => not_found(&inner),
        },
        ["apis", g, "v1", r] => match apis_res(g, r) {
            Some(res) => collection(&inner, &method, &user, res, None, &query),
            None => not_found(&inner),
        },
        ["apis", g, "v1", "namespaces", ns, r] => match apis_res(g, r) {
            Some(res) => collection(&inner, &method, &user, res, Some(ns), &query),
            None => not_found(&inner),
        },
        ["apis", g, "v1", "namespaces", ns, r, name] => match apis_res(g, r) {
            Some(res) => object(&inner, &method, &user, res, Some(ns), name),
            None => not_found(&inner),
        },
        ["version"] | ["api"] | ["apis"] | ["api", "v1"] => method_not_allowed(&inner),
        _ => not_found(&inner),
    }
}

/// A resource under `/apis/{group}/v1` (named groups only).
fn apis_res(group: &str, resource: &str) -> Option<Res> {
    Res::from_path(group, resource).filter(|_| !group.is_empty())
}

fn version() -> Value {
    json!({
        "major": "1",
        "minor": "31",
        "gitVersion": KUBE_GIT_VERSION,
        "gitCommit": "a78aa47129b8539636eb86a9d00e31b2720fe06b",
        "gitTreeState": "clean",
        "buildDate": "2024-12-10T11:38:19Z",
        "goVersion": "go1.22.9",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

const GROUPS: [&str; 3] = ["apps", "batch", "authorization.k8s.io"];

fn api_group(g: &str) -> Value {
    let gv = json!({"groupVersion": format!("{g}/v1"), "version": "v1"});
    json!({"name": g, "versions": [gv.clone()], "preferredVersion": gv})
}

fn resource_list(group: &str) -> Value {
    let verbs = json!([
        "create",
        "delete",
        "deletecollection",
        "get",
        "list",
        "patch",
        "update",
        "watch"
    ]);
    let mut resources: Vec<Value> = Kind::ALL
        .into_iter()
        .filter(|k| k.group() == group)
        .map(|k| {
            let mut r = json!({
                "name": k.resource(),
                "singularName": k.singular(),
                "namespaced": true,
                "kind": k.name(),
                "verbs": verbs,
            });
            if !k.short_names().is_empty() {
                r["shortNames"] = json!(k.short_names());
            }
            if k != Kind::ControllerRevision {
                r["categories"] = json!(["all"]);
            }
            r
        })
        .collect();
    let group_version = if group.is_empty() {
        "v1".to_string()
    } else {
        format!("{group}/v1")
    };
    match group {
        "" => resources.insert(
            0,
            json!({
                "name": "namespaces",
                "singularName": "namespace",
                "namespaced": false,
                "kind": "Namespace",
                "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
                "shortNames": ["ns"],
            }),
        ),
        "authorization.k8s.io" => resources.push(json!({
            "name": "selfsubjectaccessreviews",
            "singularName": "selfsubjectaccessreview",
            "namespaced": false,
            "kind": "SelfSubjectAccessReview",
            "verbs": ["create"],
        })),
        _ => {}
    }
    json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    })
}

/// `GET` of one object.
fn object(
    inner: &Inner,
    method: &Method,
    user: &str,
    res: Res,
    namespace: Option<&str>,
    name: &str,
) -> Response {
    if method != Method::GET {
        return method_not_allowed(inner);
    }
    let found = {
        let data = inner.data.lock().expect("kube data");
        if !data.access(res).allows(namespace) {
            drop(data);
            return forbidden(inner, user, "get", res, namespace, Some(name));
        }
        let key = match namespace {
            Some(ns) => format!("{ns}/{name}"),
            None => name.to_string(),
        };
        data.latest(res, &key)
    };
    match found {
        Some(o) => json_response(inner, StatusCode::OK, &o),
        None => status(
            inner,
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("{} {} not found", res.qualified(), go_quote(name)),
            Some(res.details(Some(name))),
        ),
    }
}

/// One page (or all) of a list, read under the lock; serialized outside it.
struct Page {
    items: Vec<Arc<Value>>,
    rv: u64,
    next: Option<(String, u64)>,
}

/// `GET` of a collection: a list.
fn collection(
    inner: &Inner,
    method: &Method,
    user: &str,
    res: Res,
    namespace: Option<&str>,
    query: &[(String, String)],
) -> Response {
    if method != Method::GET {
        return method_not_allowed(inner);
    }
    let param = |k: &str| {
        query
            .iter()
            .rev()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    };
    let verb = if matches!(param("watch"), "true" | "1") {
        "watch"
    } else {
        "list"
    };
    if !inner
        .data
        .lock()
        .expect("kube data")
        .access(res)
        .allows(namespace)
    {
        return forbidden(inner, user, verb, res, namespace, None);
    }
    if verb == "watch" {
        return bad_request(inner, "fake kube API server: watch is not implemented");
    }
    for sel in ["labelSelector", "fieldSelector"] {
        if !param(sel).is_empty() {
            return bad_request(
                inner,
                &format!("fake kube API server: {sel} is not implemented"),
            );
        }
    }
    let limit = match param("limit") {
        "" => 0,
        l => match l.parse::<i64>() {
            Ok(n) => n.max(0) as usize,
            Err(_) => {
                return bad_request(
                    inner,
                    &format!("strconv.ParseInt: parsing {}: invalid syntax", go_quote(l)),
                )
            }
        },
    };
    let (cont, rv_param, rv_match) = (
        param("continue"),
        param("resourceVersion"),
        param("resourceVersionMatch"),
    );
    let prefix = match namespace {
        Some(ns) => format!("{ns}/"),
        None => String::new(),
    };

    let page = {
        let data = inner.data.lock().expect("kube data");
        let (snapshot, start) = if !cont.is_empty() {
            let (start, token_rv) = match decode_continue(cont) {
                Ok(t) => t,
                Err(e) => {
                    drop(data);
                    return bad_request(inner, &format!("invalid continue token: {e}"));
                }
            };
            if !rv_param.is_empty() && rv_param != "0" {
                drop(data);
                return bad_request(
                    inner,
                    "specifying resource version is not allowed when using continue",
                );
            }
            let snapshot = if token_rv < 0 {
                data.rv
            } else if (token_rv as u64) < data.compacted {
                drop(data);
                let mut s = status_value(
                    StatusCode::GONE,
                    "Expired",
                    CONTINUE_EXPIRED_INCONSISTENT,
                    None,
                );
                s["metadata"] = json!({"continue": encode_continue(&start, -1)});
                return json_response(inner, StatusCode::GONE, &s);
            } else if token_rv as u64 > data.rv {
                drop(data);
                return status(
                    inner,
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "InternalError",
                    "etcdserver: mvcc: required revision is a future revision",
                    None,
                );
            } else {
                token_rv as u64
            };
            (snapshot, format!("{prefix}{start}"))
        } else {
            let invalid = |msg: String| {
                status(
                    inner,
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "Invalid",
                    &format!("ListOptions.meta.k8s.io \"\" is invalid: {msg}"),
                    None,
                )
            };
            match rv_match {
                "" | "Exact" | "NotOlderThan" => {}
                other => {
                    drop(data);
                    return invalid(format!(
                        "resourceVersionMatch: Unsupported value: {}: supported values: \"Exact\", \"NotOlderThan\"",
                        go_quote(other)
                    ));
                }
            }
            if !rv_match.is_empty() && rv_param.is_empty() {
                drop(data);
                return invalid(
                    "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided".into(),
                );
            }
            if rv_match == "Exact" && rv_param == "0" {
                drop(data);
                return invalid(
                    "resourceVersionMatch: Forbidden: resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"".into(),
                );
            }
            let snapshot = match rv_param {
                "" | "0" => data.rv,
                n => {
                    let Ok(n) = n.parse::<u64>() else {
                        drop(data);
                        return bad_request(
                            inner,
                            &format!("invalid resource version: resource version is not well formed: {n}"),
                        );
                    };
                    if n > data.rv {
                        let current = data.rv;
                        drop(data);
                        return status(
                            inner,
                            StatusCode::GATEWAY_TIMEOUT,
                            "Timeout",
                            &format!("Too large resource version: {n}, current: {current}"),
                            Some(json!({
                                "causes": [{
                                    "reason": "ResourceVersionTooLarge",
                                    "message": "Too large resource version",
                                }],
                                "retryAfterSeconds": 1,
                            })),
                        );
                    }
                    // With a limit (or Exact) a resource version is read exactly.
                    let exact = rv_match == "Exact" || (rv_match.is_empty() && limit > 0);
                    if !exact {
                        data.rv
                    } else if n < data.compacted {
                        drop(data);
                        return status(inner, StatusCode::GONE, "Expired", LIST_EXPIRED, None);
                    } else {
                        n
                    }
                }
            };
            (snapshot, prefix.clone())
        };

        let mut items = Vec::new();
        let mut next = None;
        let mut remaining = 0u64;
        if let Some(objects) = data.objects.get(&res) {
            let visible = objects
                .range(start..)
                .take_while(|(k, _)| k.starts_with(&prefix))
                .filter_map(|(k, hist)| {
                    hist.iter()
                        .rev()
                        .find(|(rv, _)| *rv <= snapshot)
                        .and_then(|(_, o)| o.as_ref())
                        .map(|o| (k, o))
                });
            for (k, o) in visible {
                if limit > 0 && items.len() == limit {
                    remaining += 1;
                    continue;
                }
                items.push(o.clone());
                if limit > 0 && items.len() == limit {
                    next = Some(format!("{}\u{0}", &k[prefix.len()..]));
                }
            }
        }
        Page {
            items,
            rv: snapshot,
            next: match next {
                Some(start) if remaining > 0 => Some((start, remaining)),
                _ => None,
            },
        }
    };

    let mut metadata = json!({"resourceVersion": page.rv.to_string()});
    if let Some((start, remaining)) = &page.next {
        metadata["continue"] = json!(encode_continue(start, page.rv as i64));
        metadata["remainingItemCount"] = json!(remaining);
    }
    let body = ListBody {
        kind: format!("{}List", res.kind()),
        api_version: res.api_version(),
        metadata,
        items: Items(&page.items),
    };
    respond(
        inner,
        StatusCode::OK,
        serde_json::to_vec(&body).expect("serialize list"),
    )
}

/// Non-resource paths every authenticated user may GET (system:discovery and
/// system:public-info-viewer).
fn public_path(path: &str) -> bool {
    const EXACT: [&str; 8] = [
        "/api",
        "/apis",
        "/healthz",
        "/livez",
        "/readyz",
        "/version",
        "/version/",
        "/openapi",
    ];
    EXACT.contains(&path)
        || ["/api/", "/apis/", "/openapi/"]
            .iter()
            .any(|p| path.starts_with(p))
}

/// `POST /apis/authorization.k8s.io/v1/selfsubjectaccessreviews`.
fn access_review(inner: &Inner, body: &[u8]) -> Response {
    let review: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => {
            return bad_request(
                inner,
                &format!("the object provided is unrecognized (must be of type SelfSubjectAccessReview): couldn't get version/kind; json parse error: {e}"),
            )
        }
    };
    let spec = review.get("spec").cloned().unwrap_or_else(|| json!({}));
    let resource = spec.get("resourceAttributes").filter(|v| v.is_object());
    let non_resource = spec.get("nonResourceAttributes").filter(|v| v.is_object());
    let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let allowed = match (resource, non_resource) {
        (Some(r), None) => {
            let res = Res::from_path(&s(r, "group"), &s(r, "resource"));
            let ns = s(r, "namespace");
            let verb = s(r, "verb");
            match res {
                Some(res) if s(r, "subresource").is_empty() => {
                    let scope = if ns.is_empty() || !res.namespaced() {
                        None
                    } else {
                        Some(ns.as_str())
                    };
                    ["get", "list", "watch"].contains(&verb.as_str())
                        && inner
                            .data
                            .lock()
                            .expect("kube data")
                            .access(res)
                            .allows(scope)
                }
                _ => false,
            }
        }
        (None, Some(n)) => s(n, "verb") == "get" && public_path(&s(n, "path")),
        _ => {
            return status(
                inner,
                StatusCode::UNPROCESSABLE_ENTITY,
                "Invalid",
                "SelfSubjectAccessReview.authorization.k8s.io \"\" is invalid: spec.resourceAttributes: Invalid value: \"null\": exactly one of nonResourceAttributes or resourceAttributes must be specified",
                Some(json!({
                    "group": "authorization.k8s.io",
                    "kind": "SelfSubjectAccessReview",
                    "causes": [{
                        "reason": "FieldValueInvalid",
                        "message": "Invalid value: \"null\": exactly one of nonResourceAttributes or resourceAttributes must be specified",
                        "field": "spec.resourceAttributes",
                    }],
                })),
            )
        }
    };
    let mut st = json!({"allowed": allowed});
    if allowed {
        st["reason"] = json!(
            "RBAC: allowed by ClusterRoleBinding \"ferry\" of ClusterRole \"ferry\" to ServiceAccount \"ferry/ferry\""
        );
    }
    json_response(
        inner,
        StatusCode::CREATED,
        &json!({
            "kind": "SelfSubjectAccessReview",
            "apiVersion": "authorization.k8s.io/v1",
            "metadata": {"creationTimestamp": null},
            "spec": spec,
            "status": st,
        }),
    )
}
