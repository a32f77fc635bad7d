//! A tiny Docker-style bearer-token server (the flow `docker login` and every
//! registry client speak), so tests can exercise token auth end to end against
//! a real `docker-registry` without any external identity provider.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;
use serde_json::json;

/// Lifetime of every token, in seconds. Long enough that no test ever sees
/// one expire, short enough to look like a real server.
const EXPIRES_IN: u64 = 300;

/// One request the token server saw, for assertions about how a client
/// authenticates (which scopes it asked for, whether it sent credentials).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRequest {
    /// The user name presented (Basic auth or form `username`), even if the
    /// password was wrong; `None` for anonymous requests.
    pub user: Option<String>,
    pub service: String,
    /// Every scope requested, in request order (repeated `scope` params and
    /// space-separated scope lists are both flattened).
    pub scopes: Vec<String>,
    pub authorization_header_present: bool,
    /// "GET" or "POST".
    pub method: String,
    /// The status the token server answered with (200, 400 or 401).
    pub status: u16,
}

impl TokenRequest {
    /// Sorted, deduplicated actions requested for repository `name` across
    /// all scopes. Sorted because registries build scope strings from Go
    /// maps, so `pull,push` and `push,pull` both occur.
    pub fn actions_for(&self, name: &str) -> Vec<String> {
        let mut actions: Vec<String> = self
            .scopes
            .iter()
            .filter_map(|scope| scope.strip_prefix("repository:"))
            .filter_map(|rest| rest.rsplit_once(':'))
            .filter(|(n, _)| *n == name)
            .flat_map(|(_, a)| a.split(',').map(str::to_string).collect::<Vec<_>>())
            .filter(|a| !a.is_empty())
            .collect();
        actions.sort();
        actions.dedup();
        actions
    }
}

/// Per-server state shared with the axum handlers.
struct Inner {
    users: HashMap<String, String>,
    service: String,
    issuer: String,
    key: EncodingKey,
    /// base64-standard DER of the self-signed certificate for `key`;
    /// distribution 2.8 verifies tokens by this x5c chain against its
    /// `rootcertbundle`.
    x5c: String,
    requests: Mutex<Vec<TokenRequest>>,
    /// Actions no token grants, whoever asks (a user who may push but not delete).
    withheld: Mutex<Vec<String>>,
    /// Every token signed, for tests that search output for leaked tokens.
    issued: Mutex<Vec<String>>,
    jti: AtomicU64,
}

pub struct TokenServer {
    /// `http://127.0.0.1:PORT/token`.
    pub realm: String,
    pub service: String,
    pub issuer: String,
    /// PEM certificate the registry must trust (`auth.token.rootcertbundle`).
    pub rootcertbundle: PathBuf,
    inner: Arc<Inner>,
    task: tokio::task::JoinHandle<()>,
    // Keeps the certificate file alive as long as the server.
    _dir: tempfile::TempDir,
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TokenServer {
    /// Starts the server on 127.0.0.1 (ephemeral port) on the current tokio
    /// runtime. `users` are the (name, password) pairs accepted by Basic
    /// auth and the OAuth2 password grant.
    pub async fn start(users: &[(&str, &str)]) -> Arc<TokenServer> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .expect("generate P-256 token signing key");
        let mut params = rcgen::CertificateParams::new(vec!["ferry-test-token".to_string()])
            .expect("build token certificate params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "ferry-test-token");
        let cert = params
            .self_signed(&key)
            .expect("self-sign token certificate");

        let dir = tempfile::TempDir::new().expect("create token server temp dir");
        let rootcertbundle = dir.path().join("token-root.pem");
        std::fs::write(&rootcertbundle, cert.pem()).expect("write token rootcertbundle");

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind token server listener");
        let addr = listener.local_addr().expect("token server local addr");

        let service = "ferry-test-registry".to_string();
        let issuer = "ferry-test-token-issuer".to_string();
        let inner = Arc::new(Inner {
            users: users
                .iter()
                .map(|(u, p)| (u.to_string(), p.to_string()))
                .collect(),
            service: service.clone(),
            issuer: issuer.clone(),
            key: EncodingKey::from_ec_pem(key.serialize_pem().as_bytes())
                .expect("load token signing key into jsonwebtoken"),
            x5c: base64::engine::general_purpose::STANDARD.encode(cert.der()),
            requests: Mutex::new(Vec::new()),
            withheld: Mutex::new(Vec::new()),
            issued: Mutex::new(Vec::new()),
            jti: AtomicU64::new(0),
        });

        let app = Router::new()
            .route("/token", get(token_get).post(token_post))
            .with_state(inner.clone());
        let task = tokio::spawn(async move {
            // Only ends when the task is aborted (server dropped) or the
            // runtime shuts down at the end of the test.
            axum::serve(listener, app)
                .await
                .expect("token server crashed");
        });

        Arc::new(TokenServer {
            realm: format!("http://{addr}/token"),
            service,
            issuer,
            rootcertbundle,
            inner,
            task,
            _dir: dir,
        })
    }

    /// Every token request seen so far, oldest first.
    pub fn requests(&self) -> Vec<TokenRequest> {
        self.inner
            .requests
            .lock()
            .expect("token request log poisoned")
            .clone()
    }

    /// Every token this server has signed (handed out or minted), oldest first.
    pub fn issued_tokens(&self) -> Vec<String> {
        self.inner
            .issued
            .lock()
            .expect("token log poisoned")
            .clone()
    }

    /// Forgets the recorded requests, e.g. after fixtures were set up.
    pub fn clear_requests(&self) {
        self.inner
            .requests
            .lock()
            .expect("token request log poisoned")
            .clear();
    }

    /// From now on no token grants `action` (`delete`, say): the registry answers a request
    /// that needs it as it does a user without that permission (401, insufficient scope).
    pub fn withhold(&self, action: &str) {
        self.inner
            .withheld
            .lock()
            .expect("withheld actions poisoned")
            .push(action.to_string());
    }

    /// A valid token granting every action in `scopes`, minted without a
    /// request so the test's own fixture pushes do not show up in
    /// [`TokenServer::requests`].
    pub fn mint(&self, scopes: &[&str]) -> String {
        let scopes: Vec<String> = scopes.iter().map(|s| s.to_string()).collect();
        self.inner.sign("fixture-pusher", &scopes, true)
    }
}

impl Inner {
    fn record(&self, req: TokenRequest) {
        self.requests
            .lock()
            .expect("token request log poisoned")
            .push(req);
    }

    /// Signs a JWT for `sub` granting the requested actions; anonymous
    /// callers (`full == false`) only get `pull`, like a public registry.
    fn sign(&self, sub: &str, scopes: &[String], full: bool) -> String {
        #[derive(Serialize)]
        struct Access {
            #[serde(rename = "type")]
            kind: String,
            name: String,
            actions: Vec<String>,
        }
        #[derive(Serialize)]
        struct Claims {
            iss: String,
            sub: String,
            aud: String,
            exp: u64,
            nbf: u64,
            iat: u64,
            jti: String,
            access: Vec<Access>,
        }

        let withheld = self
            .withheld
            .lock()
            .expect("withheld actions poisoned")
            .clone();
        let access = scopes
            .iter()
            .filter_map(|scope| {
                // type:name:actions, where only the name may (in theory)
                // contain ':' (e.g. a registry host with a port).
                let (kind, rest) = scope.split_once(':')?;
                let (name, actions) = rest.rsplit_once(':')?;
                let actions = actions
                    .split(',')
                    .filter(|a| !a.is_empty() && (full || *a == "pull"))
                    .filter(|a| !withheld.iter().any(|w| w == a))
                    .map(str::to_string)
                    .collect();
                Some(Access {
                    kind: kind.to_string(),
                    name: name.to_string(),
                    actions,
                })
            })
            .collect();

        let now = unix_now();
        let mut header = Header::new(Algorithm::ES256);
        header.x5c = Some(vec![self.x5c.clone()]);
        let claims = Claims {
            iss: self.issuer.clone(),
            sub: sub.to_string(),
            aud: self.service.clone(),
            exp: now + EXPIRES_IN,
            // Backdated a little so clock granularity never makes a fresh
            // token "not yet valid".
            nbf: now.saturating_sub(10),
            iat: now,
            jti: format!(
                "ferry-test-{}-{now}",
                self.jti.fetch_add(1, Ordering::Relaxed)
            ),
            access,
        };
        let token = jsonwebtoken::encode(&header, &claims, &self.key).expect("sign JWT");
        self.issued
            .lock()
            .expect("token log poisoned")
            .push(token.clone());
        token
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("system clock before 1970")
        .as_secs()
}

/// RFC 3339 UTC timestamp without pulling in a date crate.
fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Decodes `application/x-www-form-urlencoded` (query strings and POST
/// bodies) keeping repeated keys, which `scope` relies on.
fn parse_form(s: &str) -> Vec<(String, String)> {
    fn decode(s: &str) -> String {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() => {
                    let hex = |c: u8| (c as char).to_digit(16);
                    match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                        (Some(hi), Some(lo)) => {
                            out.push((hi * 16 + lo) as u8);
                            i += 2;
                        }
                        _ => out.push(b'%'),
                    }
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    s.split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn params_get<'a>(params: &'a [(String, String)], key: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn scopes_of(params: &[(String, String)]) -> Vec<String> {
    params
        .iter()
        .filter(|(k, _)| k == "scope")
        .flat_map(|(_, v)| v.split(' ').map(str::to_string).collect::<Vec<_>>())
        .filter(|s| !s.is_empty())
        .collect()
}

fn unauthorized(message: &str) -> Response {
    (
        StatusCode::UNAUTHORIZED,
        Json(json!({"errors": [{"code": "UNAUTHORIZED", "message": message}]})),
    )
        .into_response()
}

fn token_response(token: String, refresh_token: Option<String>) -> Response {
    let mut body = json!({
        "token": token,
        "access_token": token,
        "expires_in": EXPIRES_IN,
        "issued_at": rfc3339(unix_now()),
    });
    if let Some(refresh) = refresh_token {
        body["refresh_token"] = json!(refresh);
    }
    (StatusCode::OK, Json(body)).into_response()
}

/// `Authorization: Basic` credentials, if present and well-formed.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// The classic Docker token endpoint: GET with optional Basic auth.
async fn token_get(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let params = parse_form(query.as_deref().unwrap_or(""));
    let scopes = scopes_of(&params);
    let service = params_get(&params, "service").unwrap_or("").to_string();
    let auth_present = headers.contains_key(axum::http::header::AUTHORIZATION);
    let creds = basic_credentials(&headers);
    let mut record = TokenRequest {
        user: creds.as_ref().map(|(u, _)| u.clone()),
        service,
        scopes: scopes.clone(),
        authorization_header_present: auth_present,
        method: "GET".to_string(),
        status: 200,
    };

    let response = match (&creds, auth_present) {
        (Some((user, password)), _) if inner.users.get(user) == Some(password) => {
            let refresh = (params_get(&params, "offline_token") == Some("true"))
                .then(|| format!("refresh-{user}"));
            token_response(inner.sign(user, &scopes, true), refresh)
        }
        // An Authorization header we could not match (wrong password,
        // unknown user or unparseable) must not silently degrade to
        // anonymous access: clients rely on the 401 to report bad creds.
        (_, true) => {
            record.status = 401;
            unauthorized("invalid username or password")
        }
        (_, false) => token_response(inner.sign("", &scopes, false), None),
    };
    inner.record(record);
    response
}

/// Docker's OAuth2 variant: POST form with grant_type=password or
/// grant_type=refresh_token.
async fn token_post(State(inner): State<Arc<Inner>>, headers: HeaderMap, body: Bytes) -> Response {
    let params = parse_form(&String::from_utf8_lossy(&body));
    let scopes = scopes_of(&params);
    let grant_type = params_get(&params, "grant_type").unwrap_or("");
    let mut record = TokenRequest {
        user: params_get(&params, "username").map(str::to_string),
        service: params_get(&params, "service").unwrap_or("").to_string(),
        scopes: scopes.clone(),
        authorization_header_present: headers.contains_key(axum::http::header::AUTHORIZATION),
        method: "POST".to_string(),
        status: 200,
    };

    let response = match grant_type {
        "password" => {
            let user = params_get(&params, "username").unwrap_or("");
            let password = params_get(&params, "password").unwrap_or("");
            if inner.users.get(user).map(String::as_str) == Some(password) {
                token_response(
                    inner.sign(user, &scopes, true),
                    Some(format!("refresh-{user}")),
                )
            } else {
                record.status = 401;
                unauthorized("invalid username or password")
            }
        }
        "refresh_token" => {
            let refresh = params_get(&params, "refresh_token").unwrap_or("");
            match refresh.strip_prefix("refresh-") {
                Some(user) if inner.users.contains_key(user) => {
                    record.user = Some(user.to_string());
                    token_response(inner.sign(user, &scopes, true), None)
                }
                _ => {
                    record.status = 401;
                    unauthorized("invalid refresh token")
                }
            }
        }
        other => {
            record.status = 400;
            (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": "unsupported_grant_type", "error_description": other})),
            )
                .into_response()
        }
    };
    inner.record(record);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_798_761_599), "2026-12-31T23:59:59Z");
    }

    #[test]
    fn parses_repeated_and_encoded_form_params() {
        let params = parse_form(
            "service=reg&scope=repository%3Aa%2Fb%3Apull%2Cpush&scope=registry:catalog:*+repository:c:pull&x=%zz",
        );
        assert_eq!(
            scopes_of(&params),
            vec![
                "repository:a/b:pull,push",
                "registry:catalog:*",
                "repository:c:pull"
            ]
        );
        assert_eq!(params_get(&params, "service"), Some("reg"));
        assert_eq!(params_get(&params, "x"), Some("%zz"));
    }
}
