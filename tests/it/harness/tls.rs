//! A throw-away certificate authority for registries that serve HTTPS on loopback: the CA
//! certificate as a PEM file (what a plan's `ca_file` names), server certificates for
//! 127.0.0.1 signed by it, and a client that trusts it for the harness's own requests.

use std::path::{Path, PathBuf};

pub struct TestCa {
    /// The CA certificate, PEM.
    pub pem: PathBuf,
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
    _dir: tempfile::TempDir,
}

impl TestCa {
    pub fn new() -> TestCa {
        let key = rcgen::KeyPair::generate().expect("generate CA key");
        let mut params =
            rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA certificate params");
        // A name of its own: certificate paths are built by issuer name, so two test CAs
        // with one name would look like a bad signature rather than an unknown issuer.
        static SERIAL: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        params.distinguished_name.push(
            rcgen::DnType::CommonName,
            format!("ferry test CA {} {n}", std::process::id()),
        );
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).expect("self-sign the CA");
        let dir = tempfile::TempDir::new().expect("CA temp dir");
        let pem = dir.path().join("ca.pem");
        std::fs::write(&pem, cert.pem()).expect("write CA certificate");
        TestCa {
            pem,
            cert,
            key,
            _dir: dir,
        }
    }

    /// A server certificate for `127.0.0.1` and `localhost` signed by this CA, written into
    /// `dir` as `server.crt` and `server.key` (PEM); returns their paths.
    pub fn server_cert(&self, dir: &Path) -> (PathBuf, PathBuf) {
        let (cert, key) = self.server_cert_pem();
        let (crt_path, key_path) = (dir.join("server.crt"), dir.join("server.key"));
        std::fs::write(&crt_path, cert).expect("write server certificate");
        std::fs::write(&key_path, key).expect("write server key");
        (crt_path, key_path)
    }

    /// The CA certificate, PEM text.
    pub fn cert_pem(&self) -> String {
        self.cert.pem()
    }

    /// A server certificate for `127.0.0.1` and `localhost` signed by this CA: (certificate,
    /// PKCS#8 key), PEM.
    pub fn server_cert_pem(&self) -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("generate server key");
        let mut params =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
                .expect("server certificate params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "127.0.0.1");
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("sign the server certificate");
        (cert.pem(), key.serialize_pem())
    }

    /// A client certificate signed by this CA with subject `CN=<common_name>` and, if given,
    /// `O=<organization>` (what Kubernetes' x509 authenticator reads as the user name and a
    /// group): (certificate, PKCS#8 key), PEM.
    pub fn client_cert_pem(
        &self,
        common_name: &str,
        organization: Option<&str>,
    ) -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("generate client key");
        let mut params =
            rcgen::CertificateParams::new(Vec::<String>::new()).expect("client certificate params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, common_name);
        if let Some(o) = organization {
            params
                .distinguished_name
                .push(rcgen::DnType::OrganizationName, o);
        }
        params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("sign the client certificate");
        (cert.pem(), key.serialize_pem())
    }

    /// A client that trusts this CA (and nothing else).
    pub fn client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(
                reqwest::Certificate::from_pem(self.cert.pem().as_bytes()).expect("CA as root"),
            )
            .build()
            .expect("client trusting the test CA")
    }
}

impl Default for TestCa {
    fn default() -> Self {
        TestCa::new()
    }
}
