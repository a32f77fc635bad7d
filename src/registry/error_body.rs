//! What an error answer says, kept as data: the registry's `{"errors":[…]}` body decoded into
//! [`OciError`]s, the [`Service`] that answered, and the OCI error codes retries and callers
//! decide on. Hints follow from status, code and service ([`hint`]), never stored as text, and
//! are shown after the error's whole chain (`crate::error`).

use serde::Deserialize;

/// The error codes of the OCI distribution spec (and Docker's `TOOMANYREQUESTS`) that ferry
/// decides on.
pub mod code {
    pub const BLOB_UNKNOWN: &str = "BLOB_UNKNOWN";
    pub const BLOB_UPLOAD_INVALID: &str = "BLOB_UPLOAD_INVALID";
    pub const BLOB_UPLOAD_UNKNOWN: &str = "BLOB_UPLOAD_UNKNOWN";
    pub const DENIED: &str = "DENIED";
    pub const DIGEST_INVALID: &str = "DIGEST_INVALID";
    pub const MANIFEST_BLOB_UNKNOWN: &str = "MANIFEST_BLOB_UNKNOWN";
    pub const MANIFEST_INVALID: &str = "MANIFEST_INVALID";
    pub const MANIFEST_UNKNOWN: &str = "MANIFEST_UNKNOWN";
    pub const NAME_INVALID: &str = "NAME_INVALID";
    pub const NAME_UNKNOWN: &str = "NAME_UNKNOWN";
    pub const SIZE_INVALID: &str = "SIZE_INVALID";
    pub const TOOMANYREQUESTS: &str = "TOOMANYREQUESTS";
    pub const UNAUTHORIZED: &str = "UNAUTHORIZED";
    pub const UNSUPPORTED: &str = "UNSUPPORTED";
}

/// One entry of an error body. From a registry: `{"code", "message", "detail"}`. From a REST
/// API's `{"message"}`/`{"detail"}` body, or a short plain-text body: the text as `message`,
/// without a code.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OciError {
    pub code: Option<String>,
    pub message: Option<String>,
    /// What the registry adds (any JSON); kept, not shown.
    pub detail: Option<serde_json::Value>,
}

impl OciError {
    /// The entries of an error body; none when it says nothing readable (empty, HTML, binary,
    /// or too long to be a message).
    pub fn decode(body: &[u8]) -> Vec<OciError> {
        #[derive(Deserialize)]
        struct Envelope {
            errors: Vec<Entry>,
        }
        #[derive(Deserialize)]
        struct Entry {
            code: Option<String>,
            message: Option<String>,
            detail: Option<serde_json::Value>,
        }
        if let Ok(env) = serde_json::from_slice::<Envelope>(body) {
            let errors: Vec<OciError> = env
                .errors
                .into_iter()
                .map(|e| OciError {
                    code: e.code,
                    message: e.message.filter(|m| !m.is_empty()),
                    detail: e.detail,
                })
                .filter(|e| e.code.is_some() || e.message.is_some())
                .collect();
            if !errors.is_empty() {
                return errors;
            }
        }
        Self::plain(body).into_iter().collect()
    }

    /// Docker Hub's and GitHub's REST APIs answer `{"message": …}` or `{"detail": …}`; other
    /// servers a line of text.
    fn plain(body: &[u8]) -> Option<OciError> {
        #[derive(Deserialize)]
        struct Plain {
            message: Option<String>,
            detail: Option<String>,
        }
        let text = |m: String| OciError {
            message: Some(m),
            ..OciError::default()
        };
        if let Ok(Plain { message, detail }) = serde_json::from_slice::<Plain>(body) {
            if let Some(m) = message.or(detail).filter(|m| !m.is_empty()) {
                return Some(text(m));
            }
        }
        let body = String::from_utf8_lossy(body);
        let body = body.trim();
        let readable = !body.is_empty()
            && body.len() <= 200
            && !body.contains('<')
            && body.chars().all(|c| !c.is_control());
        readable.then(|| text(body.to_string()))
    }
}

impl std::fmt::Display for OciError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.code, &self.message) {
            (Some(c), Some(m)) => write!(f, "{c}: {m}"),
            (Some(c), None) => f.write_str(c),
            (None, Some(m)) => f.write_str(m),
            (None, None) => Ok(()),
        }
    }
}

/// `": CODE: message; CODE: message"`, or nothing when there is nothing to say.
pub fn rendered(errors: &[OciError]) -> String {
    if errors.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = errors.iter().map(ToString::to_string).collect();
    format!(": {}", parts.join("; "))
}

/// An error body as messages show it (see [`rendered`]).
pub fn decode_error_body(body: &[u8]) -> String {
    rendered(&OciError::decode(body))
}

/// Who gave an error answer: what its hint depends on besides status and code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Service {
    /// A registry's distribution API; `credentials`: whether any are configured for it.
    Registry { name: String, credentials: bool },
    /// Docker Hub's API (hub.docker.com), used with the registry's credentials.
    DockerHubApi { registry: String, credentials: bool },
    /// The GitHub Packages REST API.
    GitHubApi,
}

/// What usually causes this answer, when ferry knows.
pub fn hint(method: &str, status: u16, errors: &[OciError], service: &Service) -> Option<String> {
    let has = |c: &str| errors.iter().any(|e| e.code.as_deref() == Some(c));
    match service {
        Service::GitHubApi => match status {
            401 => Some("the GitHub API refused the token; GHCR needs a classic personal access token (fine-grained tokens do not work with GitHub Packages)".to_string()),
            403 => Some("listing needs read:packages, deleting needs delete:packages and admin rights on the package".to_string()),
            _ => None,
        },
        Service::Registry { name, credentials } => {
            let delete = method == "DELETE" && (status == 405 || has(code::UNSUPPORTED));
            match delete {
                true => Some(format!("{name} does not allow deletes; on CNCF distribution set storage.delete.enabled: true (GHCR and Docker Hub delete through their own APIs)")),
                false => registry_hint(name, *credentials, status, &has),
            }
        }
        Service::DockerHubApi {
            registry,
            credentials,
        } => registry_hint(registry, *credentials, status, &has),
    }
}

/// The hint for a registry's answer (and Docker Hub's API, which takes its credentials), by
/// code where it gave one that says more than the status.
fn registry_hint(
    name: &str,
    credentials: bool,
    status: u16,
    has: &dyn Fn(&str) -> bool,
) -> Option<String> {
    if status == 401 || has(code::UNAUTHORIZED) {
        return Some(match credentials {
            false => format!("{name} wants credentials and none are configured: add `auth` for it in the plan, or `docker login {name}`"),
            true => format!("{name} refused the configured credentials; check the user name and the token"),
        });
    }
    if status == 403 || has(code::DENIED) {
        return Some(match name {
            "ghcr.io" => "GHCR needs a classic personal access token with read:packages to pull, write:packages to push and delete:packages to delete".to_string(),
            _ => format!("the credentials for {name} lack permission here (pull at a source, pull and push at a target)"),
        });
    }
    if status == 429 || has(code::TOOMANYREQUESTS) {
        return Some("the registry is rate limiting these requests".to_string());
    }
    (status == 405).then(|| {
        "the registry does not allow this operation here (for deletes on distribution: storage.delete.enabled)".to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_registry_errors() {
        let denied = OciError::decode(
            br#"{"errors":[{"code":"DENIED","message":"requested access to the resource is denied","detail":{"x":1}}]}"#,
        );
        assert_eq!(denied[0].code.as_deref(), Some("DENIED"));
        assert_eq!(denied[0].detail, Some(serde_json::json!({"x": 1})));
        assert_eq!(
            rendered(&denied),
            ": DENIED: requested access to the resource is denied"
        );
        assert_eq!(decode_error_body(b"<html>nope</html>"), "");
        assert_eq!(
            decode_error_body(br#"{"message":"object not found","errinfo":{}}"#),
            ": object not found"
        );
        assert_eq!(
            decode_error_body(br#"{"detail":"Incorrect authentication credentials."}"#),
            ": Incorrect authentication credentials."
        );
        assert_eq!(decode_error_body(b"not found\n"), ": not found");
        assert_eq!(decode_error_body(b""), "");
        assert_eq!(
            decode_error_body(br#"{"errors":[{"code":"A"},{"message":"b"},{}]}"#),
            ": A; b"
        );
    }

    #[test]
    fn hints_follow_status_code_and_service() {
        let registry = |credentials| Service::Registry {
            name: "r.test".into(),
            credentials,
        };
        let denied = OciError::decode(br#"{"errors":[{"code":"DENIED"}]}"#);
        let hint = |m, s, e: &[OciError], r: &Service| hint(m, s, e, r).unwrap_or_default();
        assert!(hint("GET", 401, &[], &registry(false)).contains("none are configured"));
        assert!(hint("GET", 401, &[], &registry(true)).contains("refused the configured"));
        // A code says it where the status does not.
        assert!(hint("GET", 400, &denied, &registry(true)).contains("lack permission"));
        assert!(hint("DELETE", 405, &[], &registry(true)).contains("storage.delete.enabled: true"));
        assert!(hint("PUT", 405, &[], &registry(true)).contains("does not allow this operation"));
        assert!(hint("GET", 403, &[], &Service::GitHubApi).contains("delete:packages"));
        assert_eq!(hint("GET", 404, &[], &registry(true)), "");
        let hub = Service::DockerHubApi {
            registry: "docker.io".into(),
            credentials: true,
        };
        assert!(hint("DELETE", 429, &[], &hub).contains("rate limiting"));
    }
}
