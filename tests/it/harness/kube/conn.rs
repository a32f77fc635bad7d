//! The fake's connections: plain or TLS, with the client certificate asked for but not
//! required (as kube-apiserver does), and who a request comes from.

use super::*;

/// How the connection authenticated by its client certificate.
#[derive(Clone, Debug)]
pub(super) enum PeerCert {
    NotPresented,
    Valid(String),
    Invalid(String),
}

#[derive(Clone, Debug)]
pub(super) struct ConnInfo {
    pub(super) cert: PeerCert,
}

impl Connected<axum::serve::IncomingStream<'_, KubeListener>> for ConnInfo {
    fn connect_info(stream: axum::serve::IncomingStream<'_, KubeListener>) -> Self {
        stream.remote_addr().clone()
    }
}

pub(super) type Conn = Either<TcpStream, TlsStream<TcpStream>>;

/// Hands axum connections whose TLS handshake (if any) is already done, so one slow
/// handshake holds up no one else.
pub(super) struct KubeListener {
    pub(super) rx: tokio::sync::mpsc::Receiver<(Conn, ConnInfo)>,
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
pub(super) struct RequestClientCert {
    pub(super) inner: Arc<dyn ClientCertVerifier>,
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

/// Who the request is from, or the 401 answer.
pub(super) fn authenticate(
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
