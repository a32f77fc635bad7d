//! Registry authentication: the `WWW-Authenticate` challenge (Bearer realm/service/scope, or
//! Basic), the token flow, and a token cache keyed by scope (repository + actions). The
//! credential comes from a [`CredentialSource`] asked at each use, and read again when the
//! registry or its token service refuses it (a rotated password, a renewed Secret).
//!
//! The challenge parser is written by hand: no maintained crate covers the registry dialect
//! (several challenges in one header, quoted values with commas inside, unquoted values).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tokio::sync::Mutex;
use url::Url;

use super::credential_source::CredentialSource;
use super::credentials::Credential;
use super::error::RegistryError;
use super::transport::body::{read_limited, MAX_ERROR_BODY, MAX_TOKEN_ANSWER};

/// Progress a token service's answer must make (see [`super::transport::body::MIN_PROGRESS`]): the
/// client's read timeout is the plan's `stall_timeout`; this bounds a dribbling answer.
const ANSWER_STALL: Duration = super::config::DEFAULT_STALL_TIMEOUT;

/// Tokens are renewed this long before the expiry the server gave, so a long upload that
/// started with a fresh token does not cross the expiry mid-way through a chained request.
const EXPIRY_MARGIN: Duration = Duration::from_secs(20);

/// docker's default token lifetime when the server does not say.
const DEFAULT_TOKEN_LIFETIME: u64 = 60;

/// A parsed `WWW-Authenticate` challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

/// Parse auth-params of one or more challenges; returns the Bearer one if present (it is
/// what registries prefer), else Basic.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let mut challenges = Vec::new();
    let mut rest = header.trim();
    while !rest.is_empty() {
        let (scheme, after) = match rest.find(' ') {
            Some(i) => (&rest[..i], rest[i + 1..].trim_start()),
            None => (rest, ""),
        };
        let mut params = HashMap::new();
        let mut tail = after;
        loop {
            let t = tail.trim_start_matches([' ', ',']);
            let Some(eq) = t.find('=') else {
                tail = t;
                break;
            };
            let key = t[..eq].trim();
            if key.contains(' ') {
                // The next challenge's scheme starts here.
                tail = t;
                break;
            }
            let v = &t[eq + 1..];
            let (value, remaining) = if let Some(q) = v.strip_prefix('"') {
                let mut out = String::new();
                let mut chars = q.char_indices();
                let mut end = q.len();
                while let Some((i, c)) = chars.next() {
                    match c {
                        '\\' => {
                            if let Some((_, n)) = chars.next() {
                                out.push(n);
                            }
                        }
                        '"' => {
                            end = i + 1;
                            break;
                        }
                        c => out.push(c),
                    }
                }
                (out, &q[end.min(q.len())..])
            } else {
                let end = v.find(',').unwrap_or(v.len());
                (v[..end].trim().to_string(), &v[end..])
            };
            params.insert(key.to_ascii_lowercase(), value);
            tail = remaining;
            if tail.trim().is_empty() {
                tail = "";
                break;
            }
        }
        match scheme.to_ascii_lowercase().as_str() {
            "bearer" => {
                if let Some(realm) = params.remove("realm") {
                    challenges.push(Challenge::Bearer {
                        realm,
                        service: params.remove("service"),
                    });
                }
            }
            "basic" => challenges.push(Challenge::Basic),
            _ => {}
        }
        if tail == rest {
            break;
        }
        rest = tail.trim_start_matches([' ', ',']);
    }
    challenges
        .iter()
        .find(|c| matches!(c, Challenge::Bearer { .. }))
        .or(challenges.first())
        .cloned()
}

/// The access a request needs, as token scopes (`repository:NAME:pull,push`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Scope(Vec<String>);

impl Scope {
    pub fn pull(repo: &str) -> Scope {
        Scope(vec![format!("repository:{repo}:pull")])
    }
    pub fn push(repo: &str) -> Scope {
        Scope(vec![format!("repository:{repo}:pull,push")])
    }
    /// Delete in `repo` (distribution's token scope for DELETE).
    pub fn delete(repo: &str) -> Scope {
        Scope(vec![format!("repository:{repo}:delete")])
    }
    /// Push to `repo` and pull from `from`, for a cross-repository mount.
    pub fn mount(repo: &str, from: &str) -> Scope {
        Scope(vec![
            format!("repository:{repo}:pull,push"),
            format!("repository:{from}:pull"),
        ])
    }
    pub fn catalog() -> Scope {
        Scope(vec!["registry:catalog:*".to_string()])
    }
    fn key(&self) -> String {
        self.0.join(" ")
    }
}

/// `Debug` is derived: every secret in here is a `SecretString`, which prints `[REDACTED]`.
#[derive(Debug)]
struct CachedToken {
    token: SecretString,
    expires: Instant,
}

#[derive(Debug, Deserialize)]
struct TokenResponse {
    token: Option<SecretString>,
    access_token: Option<SecretString>,
    expires_in: Option<u64>,
}

/// The header to send a refused request again with. `fresh`: the credential was read again
/// after the refusal and is not the one refused, which earns the request one more try.
pub struct Retry {
    pub header: SecretString,
    pub fresh: bool,
}

/// A token service's answer: a token, or a refusal with its status.
enum TokenAnswer {
    Token(CachedToken),
    Refused(reqwest::StatusCode, RegistryError),
}

/// Per-registry authentication state: what the registry asked for and the tokens it gave.
/// Its `Debug` shows the challenge and the cached scopes, never a credential or a token.
#[derive(Debug)]
pub struct Authenticator {
    host: String,
    source: Arc<dyn CredentialSource>,
    /// Plain-HTTP token realms are accepted only for registries the plan marks insecure.
    insecure: bool,
    challenge: std::sync::RwLock<Option<Challenge>>,
    tokens: Mutex<HashMap<String, CachedToken>>,
}

impl Authenticator {
    pub fn new(host: &str, source: Arc<dyn CredentialSource>, insecure: bool) -> Self {
        Authenticator {
            host: host.to_string(),
            source,
            insecure,
            challenge: std::sync::RwLock::new(None),
            tokens: Mutex::new(HashMap::new()),
        }
    }

    fn known_challenge(&self) -> Option<Challenge> {
        self.challenge.read().expect("challenge lock").clone()
    }

    /// The `Authorization` value to send with a request needing `scope`, when the registry's
    /// challenge is known: a cached or fresh token, or Basic credentials.
    pub async fn header(
        &self,
        client: &reqwest::Client,
        scope: &Scope,
    ) -> Result<Option<SecretString>, RegistryError> {
        match self.known_challenge() {
            None => Ok(None),
            Some(Challenge::Basic) => Ok(self.source.current().basic_header()),
            Some(Challenge::Bearer { realm, service }) => {
                let mut tokens = self.tokens.lock().await;
                if let Some(t) = tokens.get(&scope.key()) {
                    if t.expires > Instant::now() {
                        return Ok(Some(bearer(&t.token)));
                    }
                }
                // Fetching under the lock keeps a burst of requests from asking for the same
                // token many times over.
                let fresh = self
                    .fetch_token(client, &realm, service.as_deref(), scope)
                    .await?;
                let header = bearer(&fresh.token);
                tokens.insert(scope.key(), fresh);
                Ok(Some(header))
            }
        }
    }

    /// After a 401: learn the challenge, drop the cached token for this scope, read the
    /// credential source again when the request carried credentials, and return the header to
    /// retry with, or `None` when there is nothing better to try. `only_fresh`: the request
    /// was already sent again once, so only a credential that changed on the re-read is worth
    /// a try (a token fetched from an unchanged credential is not).
    pub async fn unauthorized(
        &self,
        client: &reqwest::Client,
        www_authenticate: Option<&str>,
        scope: &Scope,
        sent: Option<&SecretString>,
        only_fresh: bool,
    ) -> Result<Option<Retry>, RegistryError> {
        let Some(challenge) = www_authenticate.and_then(parse_challenge) else {
            return Ok(None);
        };
        if only_fresh && !matches!(challenge, Challenge::Basic) {
            // A token comes from the token service, which re-reads the source itself when it
            // refuses: a second 401 with a fresh token is the answer.
            return Ok(None);
        }
        let changed = self.known_challenge().as_ref() != Some(&challenge);
        *self.challenge.write().expect("challenge lock") = Some(challenge.clone());
        self.tokens.lock().await.remove(&scope.key());
        if sent.is_some() {
            // What was refused may have been rotated since it was read.
            self.reread().await?;
        }
        if matches!(challenge, Challenge::Basic) {
            let Some(header) = self.source.current().basic_header() else {
                return Ok(None);
            };
            let same = sent.is_some_and(|s| s.expose_secret() == header.expose_secret());
            if same && !changed {
                return Ok(None);
            }
            let fresh = sent.is_some() && !same;
            return Ok(Some(Retry { header, fresh }));
        }
        let header = self.header(client, scope).await?;
        Ok(header.map(|header| Retry {
            header,
            fresh: false,
        }))
    }

    /// Read the credential source again (a file read, a helper run: off the async threads).
    async fn reread(&self) -> Result<Credential, RegistryError> {
        let source = self.source.clone();
        tokio::task::spawn_blocking(move || source.refresh())
            .await
            .expect("reading the credential source does not panic")
    }

    /// A token for `scope` with the current credential; when the token service refuses it,
    /// the source is read again and, if that gives another credential, asked once more.
    async fn fetch_token(
        &self,
        client: &reqwest::Client,
        realm: &str,
        service: Option<&str>,
        scope: &Scope,
    ) -> Result<CachedToken, RegistryError> {
        let credential = self.source.current();
        let (status, refusal) = match self
            .ask_token(client, realm, service, scope, &credential)
            .await?
        {
            TokenAnswer::Token(t) => return Ok(t),
            TokenAnswer::Refused(status, e) => (status, e),
        };
        if !matches!(status.as_u16(), 401 | 403) {
            return Err(refusal);
        }
        let again = self.reread().await?;
        if again.same(&credential) {
            return Err(refusal);
        }
        match self
            .ask_token(client, realm, service, scope, &again)
            .await?
        {
            TokenAnswer::Token(t) => Ok(t),
            TokenAnswer::Refused(_, e) => Err(e),
        }
    }

    /// One token request with `credential`.
    async fn ask_token(
        &self,
        client: &reqwest::Client,
        realm: &str,
        service: Option<&str>,
        scope: &Scope,
        credential: &Credential,
    ) -> Result<TokenAnswer, RegistryError> {
        let url = self.realm_url(realm)?;
        let (method, request) =
            self.token_request(client, realm, &url, service, scope, credential)?;
        let resp =
            request
                .send()
                .await
                .map_err(|e| match super::reasons::certificate_problem(&e) {
                    Some(_) => RegistryError::transport("GET", realm, e),
                    None => auth_error(
                        realm,
                        format!("token request failed: {}", crate::error::chain(&e)),
                    ),
                })?;
        if !resp.status().is_success() {
            let status = resp.status();
            let refusal = self
                .refused(resp, &method, realm, &url, scope, credential)
                .await;
            return Ok(TokenAnswer::Refused(status, refusal));
        }
        let body = read_limited(resp, &method, &url, MAX_TOKEN_ANSWER, ANSWER_STALL)
            .await
            .map_err(|e| auth_error(realm, format!("reading the token answer failed: {e}")))?;
        token_from(realm, &body).map(TokenAnswer::Token)
    }

    /// The token realm, refused unless HTTPS (or plain HTTP for a registry marked insecure):
    /// the credentials travel there.
    fn realm_url(&self, realm: &str) -> Result<Url, RegistryError> {
        let url = Url::parse(realm)
            .map_err(|e| auth_error(realm, format!("the token realm is not a URL: {e}")))?;
        match url.scheme() {
            "https" => Ok(url),
            "http" if self.insecure => Ok(url),
            _ => Err(auth_error(
                realm,
                format!(
                    "{} asked for credentials at a non-HTTPS token realm; set `insecure = true` for it in the plan only if you trust this network",
                    self.host
                ),
            )),
        }
    }

    /// The token request for `scope`: an identity token is exchanged by POST (OAuth2
    /// refresh), anything else asks by GET, with Basic credentials when there are some.
    fn token_request(
        &self,
        client: &reqwest::Client,
        realm: &str,
        url: &Url,
        service: Option<&str>,
        scope: &Scope,
        credential: &Credential,
    ) -> Result<(Method, reqwest::RequestBuilder), RegistryError> {
        if let Credential::IdentityToken { token } = credential {
            let mut form = vec![
                ("grant_type", "refresh_token".to_string()),
                ("refresh_token", token.expose_secret().to_string()),
                ("client_id", "ferry".to_string()),
                ("scope", scope.key()),
            ];
            if let Some(s) = service {
                form.push(("service", s.to_string()));
            }
            return Ok((Method::POST, client.post(url.clone()).form(&form)));
        }
        let mut u = url.clone();
        {
            let mut q = u.query_pairs_mut();
            if let Some(s) = service {
                q.append_pair("service", s);
            }
            for s in &scope.0 {
                q.append_pair("scope", s);
            }
        }
        let mut r = client.get(u);
        if let Some(h) = credential.basic_header() {
            let mut value =
                reqwest::header::HeaderValue::from_str(h.expose_secret()).map_err(|_| {
                    auth_error(
                        realm,
                        "the credential contains characters not allowed in a header".into(),
                    )
                })?;
            // Never indexed by HTTP/2 header compression, shown as "Sensitive" by reqwest's
            // own Debug.
            value.set_sensitive(true);
            r = r.header(reqwest::header::AUTHORIZATION, value);
        }
        Ok((Method::GET, r))
    }

    /// The token service's refusal, with what it said and whose credentials it refused.
    async fn refused(
        &self,
        resp: reqwest::Response,
        method: &Method,
        realm: &str,
        url: &Url,
        scope: &Scope,
        credential: &Credential,
    ) -> RegistryError {
        let status = resp.status();
        let body = read_limited(resp, method, url, MAX_ERROR_BODY, ANSWER_STALL)
            .await
            .unwrap_or_default();
        let detail = super::error_body::decode_error_body(&body);
        let who = if credential.is_anonymous() {
            "anonymous access"
        } else {
            "the configured credentials"
        };
        auth_error(
            realm,
            format!(
                "{status}{detail}: the token service refused {who} for {} (scope {})",
                self.host,
                scope.key()
            ),
        )
    }
}

/// Authentication at `url` (a token realm) failed for `reason`.
fn auth_error(url: &str, reason: String) -> RegistryError {
    RegistryError::Auth {
        url: url.to_string(),
        reason,
    }
}

/// The token of a token service's answer (from `realm`), valid until shortly before the
/// expiry it gives.
fn token_from(realm: &str, body: &[u8]) -> Result<CachedToken, RegistryError> {
    let parsed: TokenResponse = serde_json::from_slice(body).map_err(|e| {
        auth_error(
            realm,
            format!("the token answer is not JSON with a token: {e}"),
        )
    })?;
    let token = parsed
        .token
        .or(parsed.access_token)
        .filter(|t| !t.expose_secret().is_empty())
        .ok_or_else(|| auth_error(realm, "the token answer has no token".into()))?;
    let lifetime = Duration::from_secs(parsed.expires_in.unwrap_or(DEFAULT_TOKEN_LIFETIME));
    Ok(CachedToken {
        token,
        expires: Instant::now()
            + lifetime
                .saturating_sub(EXPIRY_MARGIN)
                .max(Duration::from_secs(1)),
    })
}

fn bearer(token: &SecretString) -> SecretString {
    SecretString::from(format!("Bearer {}", token.expose_secret()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_docker_hub_challenge() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull,push""#,
        );
        assert_eq!(
            c,
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into())
            })
        );
    }

    #[test]
    fn parses_basic_unquoted_and_multiple() {
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(
            parse_challenge("Basic realm=x, Bearer realm=https://t/token,service=s"),
            Some(Challenge::Bearer {
                realm: "https://t/token".into(),
                service: Some("s".into())
            })
        );
        assert_eq!(parse_challenge(""), None);
        assert_eq!(parse_challenge("Negotiate"), None);
        assert_eq!(parse_challenge("Bearer service=\"no realm\""), None);
        assert_eq!(
            parse_challenge("Bearer realm=\"unterminated"),
            Some(Challenge::Bearer {
                realm: "unterminated".into(),
                service: None
            })
        );
    }

    #[test]
    fn debug_never_shows_credentials_or_tokens() {
        let answer: TokenResponse = serde_json::from_str(
            r#"{"token":"tok-canary","access_token":"acc-canary","expires_in":60}"#,
        )
        .unwrap();
        let d = format!("{answer:?}");
        assert!(!d.contains("canary") && d.contains("expires_in"), "{d}");

        let credential = Credential::Basic {
            username: "u".into(),
            password: SecretString::from("pw-canary".to_string()),
        };
        let header = credential.basic_header().unwrap();
        assert!(!format!("{header:?}").contains("Basic"), "{header:?}");
        let source = Arc::new(crate::registry::credential_source::Fixed(credential));
        let auth = Authenticator::new("r.example", source, false);
        *auth.challenge.write().unwrap() = Some(Challenge::Bearer {
            realm: "https://auth.example/token".into(),
            service: None,
        });
        auth.tokens.try_lock().unwrap().insert(
            Scope::pull("a").key(),
            CachedToken {
                token: SecretString::from("tok-canary".to_string()),
                expires: Instant::now(),
            },
        );
        let d = format!("{auth:?}");
        assert!(!d.contains("canary"), "{d}");
        // Still useful for debugging: the challenge and the cached scopes show.
        assert!(
            d.contains("auth.example") && d.contains("repository:a:pull"),
            "{d}"
        );
    }

    #[test]
    fn scopes() {
        assert_eq!(
            Scope::mount("a", "b").key(),
            "repository:a:pull,push repository:b:pull"
        );
    }
}
