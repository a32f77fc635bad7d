//! What a test sets on the fake: objects, RBAC refusals, credentials, compaction of continue
//! tokens, and the kubeconfigs that point at it.

use super::*;

impl FakeKube {
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

    pub(super) fn client_builder(&self) -> reqwest::ClientBuilder {
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

    /// The CRD of a custom resource (`Kind::ARGO`) is not installed: its collections answer
    /// 404 `Status` "the server could not find the requested resource".
    pub fn uninstall(&self, kind: Kind) {
        assert!(Kind::ARGO.contains(&kind), "{kind:?} is built in");
        let mut data = self.inner.data.lock().expect("kube data");
        data.uninstalled.insert(kind);
    }

    /// Undo `forbid*` for `kind`.
    pub fn allow(&self, kind: Kind) {
        self.set_access(Res::Kind(kind), |_| Access::Everywhere);
    }

    pub(super) fn set_access(&self, res: Res, f: impl FnOnce(Access) -> Access) {
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
