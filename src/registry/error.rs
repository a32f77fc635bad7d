//! Errors of the registry layer. Each names the URL (or path), reference or digest that
//! failed and keeps the cause in `#[source]`, so users see a "caused by" chain.

use std::path::PathBuf;

use super::error_body::{code, hint, rendered, OciError, Service};
use crate::error::Hinted;

/// A registry or layout operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The server answered with an error status. Its body is kept decoded (`errors`); its
    /// hint ([`Hinted`]) follows from status, codes and `service`.
    #[error(
        "{method} {shown_url}: {status}{body}",
        shown_url = shown(.url),
        body = rendered(.errors)
    )]
    Status {
        method: String,
        url: String,
        status: u16,
        errors: Vec<OciError>,
        service: Service,
    },
    #[error("{method} {shown_url}: request failed", shown_url = shown(.url))]
    Transport {
        method: String,
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// The server's TLS certificate was refused. Not retried: it will not change by itself.
    /// Its hint ([`Hinted`]) points at `ca_file`.
    #[error("{method} {shown_url}: the TLS certificate of {host} is not trusted: {reason}", shown_url = shown(.url))]
    Certificate {
        method: String,
        url: String,
        host: String,
        reason: String,
    },
    /// The plan's `ca_file` for a registry could not be used.
    #[error("ca_file for {registry}: {reason}")]
    CaFile {
        registry: String,
        reason: super::reasons::CaFileError,
    },
    #[error("{shown_url}: digest mismatch: expected {expected}, the bytes hash to {actual}", shown_url = shown(.url))]
    DigestMismatch {
        url: String,
        expected: String,
        actual: String,
    },
    #[error("{shown_url}: size mismatch: the descriptor says {expected} bytes, got {actual}", shown_url = shown(.url))]
    SizeMismatch {
        url: String,
        expected: u64,
        actual: u64,
    },
    #[error("{shown_url}: invalid manifest: {reason}", shown_url = shown(.url))]
    InvalidManifest {
        url: String,
        reason: super::manifest::ManifestError,
    },
    #[error("{shown_url}: {reason}", shown_url = shown(.url))]
    Protocol { url: String, reason: String },
    /// A tag to be removed points at another manifest than the one it was to be removed from
    /// (it was pushed again since the decision): it is left alone.
    #[error("{shown_url}: tag {tag} now points at {actual}, not {expected}: it moved, so it is left alone", shown_url = shown(.url))]
    TagMoved {
        url: String,
        tag: String,
        expected: String,
        actual: String,
    },
    /// The look at a repository's tags right before one of its manifests was to be deleted
    /// failed (retention deletes nothing it could not look at again): not deleted.
    #[error("{shown_url}: not deleted: looking at the repository's tags again right before deleting failed", shown_url = shown(.url))]
    NotRechecked {
        url: String,
        #[source]
        source: Box<RegistryError>,
    },
    #[error("{what} not found: {shown_url}", shown_url = shown(.url))]
    NotFound { what: String, url: String },
    /// The registry refused a deletion for a reason asking again will not change (see
    /// [`Refusal`]); `message` is its own words, `id` the id of what it would not delete (a
    /// GHCR package version).
    #[error("DELETE {shown_url}: refused: {message}", shown_url = shown(.url))]
    Refused {
        url: String,
        refusal: Refusal,
        message: String,
        id: Option<String>,
    },
    #[error("authentication at {shown_url} failed: {reason}", shown_url = shown(.url))]
    Auth { url: String, reason: String },
    #[error("credentials for {registry}: {reason}")]
    Credentials {
        registry: String,
        reason: super::reasons::CredentialsError,
    },
    /// Its hint ([`Hinted`]) says to list the repositories.
    #[error("{registry} has no repository catalog ({reason})")]
    NoCatalog { registry: String, reason: String },
    #[error("{shown_url}: no progress for {seconds} s", shown_url = shown(.url))]
    Stalled { url: String, seconds: u64 },
    /// The server answers too slowly to be anything but stuck or hostile (a slow-loris
    /// response): `detail` says what it managed in how long.
    #[error("{shown_url}: stalled: {detail}", shown_url = shown(.url))]
    TooSlow { url: String, detail: String },
    /// The source of a blob failed while its bytes were being uploaded.
    #[error("the source of the upload failed")]
    SourceFailed {
        #[source]
        source: Box<RegistryError>,
    },
    /// The run is stopping: the upload stopped after a confirmed chunk, its session and hash
    /// in the checkpoint for the next run to continue.
    #[error("upload parked at byte {offset} of {size} (the run is stopping)")]
    Parked { offset: u64, size: u64 },
    /// A repository name, tag or digest that does not follow the distribution grammar (a
    /// registry listed it, or it was about to become part of a URL or a layout path): ferry
    /// builds no URL or path from it. The message shows the name escaped and cut short.
    #[error(transparent)]
    InvalidName(#[from] crate::reference::names::NameError),
    /// A layout path that would lead outside the directory the plan named.
    #[error("{path}: not under {root}: {reason}", path = path.display(), root = root.display())]
    OutsideRoot {
        path: PathBuf,
        root: PathBuf,
        reason: String,
    },
    /// An `oci:` target that is a directory of other files: a layout is written only into a
    /// missing or empty directory or an existing layout.
    #[error("oci:{path}: a directory of other files, not an OCI image layout (no oci-layout file): it holds {found:?}; ferry writes a layout only into a missing or empty directory or an existing layout", path = path.display())]
    NotALayout { path: PathBuf, found: String },
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Why a registry will not delete something, whoever asks and however often: these are
/// planned for, not failures to retry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The last tagged version of a GHCR package (GitHub deletes it only with the package).
    LastVersion,
    /// A version of a public GHCR package with more than 5,000 downloads (only GitHub support
    /// can delete it).
    Downloads,
}

/// What usually causes an error and what to do about it, shown after the whole chain.
impl Hinted for RegistryError {
    fn hint(&self) -> Option<String> {
        match self {
            RegistryError::Status {
                method,
                status,
                errors,
                service,
                ..
            } => hint(method, *status, errors, service),
            RegistryError::Certificate { host, .. } => Some(format!("if {host} uses a private certificate authority, give its certificate (PEM) as `ca_file = \"…\"` under [registry.\"{host}\"] in the plan; `insecure = true` there turns verification off")),
            RegistryError::NoCatalog { .. } => Some(
                "list the repositories explicitly in the plan instead of a wildcard".to_string(),
            ),
            _ => None,
        }
    }
}

impl RegistryError {
    /// What the registry refused for good, when it did.
    pub fn refusal(&self) -> Option<Refusal> {
        match self {
            RegistryError::Refused { refusal, .. } => Some(*refusal),
            _ => None,
        }
    }

    /// Bytes that were not the blob's (a wrong digest or size), wherever they came from.
    pub fn is_mismatch(&self) -> bool {
        match self {
            RegistryError::DigestMismatch { .. } | RegistryError::SizeMismatch { .. } => true,
            RegistryError::SourceFailed { source } => source.is_mismatch(),
            _ => false,
        }
    }

    /// Did the registry say the thing does not exist (404 or MANIFEST/BLOB/NAME_UNKNOWN)?
    pub fn is_not_found(&self) -> bool {
        match self {
            RegistryError::NotFound { .. } => true,
            RegistryError::Status { status, .. } => {
                *status == 404
                    || [
                        code::MANIFEST_UNKNOWN,
                        code::BLOB_UNKNOWN,
                        code::NAME_UNKNOWN,
                    ]
                    .iter()
                    .any(|c| self.has_code(c))
            }
            _ => false,
        }
    }

    /// The HTTP status of an error answer.
    pub fn http_status(&self) -> Option<u16> {
        match self {
            RegistryError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The OCI error codes of an error answer, in the order the body gave them.
    pub fn codes(&self) -> impl Iterator<Item = &str> {
        let errors: &[OciError] = match self {
            RegistryError::Status { errors, .. } => errors,
            _ => &[],
        };
        errors.iter().filter_map(|e| e.code.as_deref())
    }

    /// The first OCI error code of an error answer (`MANIFEST_UNKNOWN`, `DENIED`, …).
    pub fn code(&self) -> Option<&str> {
        self.codes().next()
    }

    pub fn has_code(&self, code: &str) -> bool {
        self.codes().any(|c| c == code)
    }

    /// Did the server answer with one of `codes` or, where its body gave no code, with one of
    /// `statuses` (the fallback for registries that answer with a bare status)?
    pub fn has_code_or_status(&self, codes: &[&str], statuses: &[u16]) -> bool {
        match (self.code(), self.http_status()) {
            (Some(_), _) => codes.iter().any(|c| self.has_code(c)),
            (None, Some(status)) => statuses.contains(&status),
            (None, None) => false,
        }
    }

    /// A request that got no answer; a refused server certificate becomes
    /// [`RegistryError::Certificate`], which names the host and says what to do.
    pub fn transport(method: impl ToString, url: impl ToString, source: reqwest::Error) -> Self {
        let url = url.to_string();
        if let Some(reason) = super::reasons::certificate_problem(&source) {
            let host = url::Url::parse(&url)
                .ok()
                .and_then(|u| {
                    let host = u.host_str()?.to_string();
                    Some(match u.port() {
                        Some(p) => format!("{host}:{p}"),
                        None => host,
                    })
                })
                .unwrap_or_else(|| url.clone());
            return RegistryError::Certificate {
                method: method.to_string(),
                url,
                host,
                reason,
            };
        }
        RegistryError::Transport {
            method: method.to_string(),
            url,
            // reqwest names the URL it last reached, which after a redirect can be a
            // presigned storage URL (`X-Amz-Signature=…`): a credential. The message already
            // names the URL ferry asked for.
            source: source.without_url(),
        }
    }

    /// The tag `tag` (at `url`) points at `actual`, not at `expected` (see
    /// [`RegistryError::TagMoved`]).
    pub fn tag_moved(
        url: impl ToString,
        tag: &str,
        expected: &crate::reference::Digest,
        actual: &crate::reference::Digest,
    ) -> Self {
        RegistryError::TagMoved {
            url: url.to_string(),
            tag: tag.to_string(),
            expected: expected.to_string(),
            actual: actual.to_string(),
        }
    }

    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        RegistryError::Io {
            path: path.into(),
            source,
        }
    }
}

pub type Result<T, E = RegistryError> = std::result::Result<T, E>;

/// Query parameters whose values are safe to show: paging, upload and mount parameters,
/// token scopes, referrers filters. Every other value is masked, since storage hosts and CDNs
/// put signatures and credentials in query strings (`X-Amz-Signature`, `sig`, `token`…).
const SHOWN_PARAMS: &[&str] = &[
    "n",
    "last",
    "digest",
    "mount",
    "from",
    "scope",
    "service",
    "artifactType",
    "page",
    "per_page",
    "page_size",
    "package_type",
];

/// A URL as messages show it: the values of query parameters other than `SHOWN_PARAMS`
/// masked. Whatever does not parse as a URL (a path, a reference) is shown as it is.
pub fn shown(url: &str) -> String {
    let Ok(mut parsed) = url::Url::parse(url) else {
        return url.to_string();
    };
    if parsed.query().is_none() {
        return url.to_string();
    }
    let pairs: Vec<(String, String)> = parsed
        .query_pairs()
        .map(|(k, v)| {
            let v = if SHOWN_PARAMS.contains(&k.as_ref()) {
                v.into_owned()
            } else {
                "…".to_string()
            };
            (k.into_owned(), v)
        })
        .collect();
    parsed.query_pairs_mut().clear().extend_pairs(pairs);
    parsed.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_mask_query_values_that_may_be_credentials() {
        let url = "https://s3.test/blob?X-Amz-Credential=AKIA1&X-Amz-Signature=canary&n=100&digest=sha256%3Aab";
        let shown_url = shown(url);
        assert!(
            !shown_url.contains("canary") && !shown_url.contains("AKIA1"),
            "{shown_url}"
        );
        assert!(
            shown_url.contains("n=100") && shown_url.contains("digest=sha256%3Aab"),
            "{shown_url}"
        );
        assert_eq!(
            shown("https://r.test/v2/a/tags/list"),
            "https://r.test/v2/a/tags/list"
        );
        assert_eq!(shown("oci:./layout"), "oci:./layout");
        let e = RegistryError::Status {
            method: "GET".into(),
            url: url.into(),
            status: 403,
            errors: Vec::new(),
            service: Service::GitHubApi,
        };
        assert!(!e.to_string().contains("canary"), "{e}");
    }

    #[test]
    fn decisions_follow_the_codes_and_the_status_where_there_are_none() {
        let answer = |status, body: &[u8]| RegistryError::Status {
            method: "PUT".into(),
            url: "https://r.test/v2/a/manifests/v1".into(),
            status,
            errors: OciError::decode(body),
            service: Service::Registry {
                name: "r.test".into(),
                credentials: true,
            },
        };
        let refused = [code::MANIFEST_BLOB_UNKNOWN, code::MANIFEST_INVALID];
        let missing = answer(
            400,
            br#"{"errors":[{"code":"MANIFEST_BLOB_UNKNOWN","message":"blob unknown to registry"}]}"#,
        );
        assert_eq!(missing.code(), Some(code::MANIFEST_BLOB_UNKNOWN));
        assert!(missing.has_code_or_status(&refused, &[400]));
        // A code says more than the status: a 400 for another reason is not one of these.
        let size = answer(400, br#"{"errors":[{"code":"SIZE_INVALID"}]}"#);
        assert!(!size.has_code_or_status(&refused, &[400]));
        // No code: the status decides.
        let bare = answer(422, b"");
        assert!(bare.has_code_or_status(&refused, &[400, 422]));
        assert!(!bare.has_code_or_status(&refused, &[400]));
        assert_eq!(
            bare.to_string(),
            "PUT https://r.test/v2/a/manifests/v1: 422"
        );
        assert!(answer(400, br#"{"errors":[{"code":"MANIFEST_UNKNOWN"}]}"#).is_not_found());
        assert!(!size.is_not_found());
        assert_eq!(
            missing.to_string(),
            "PUT https://r.test/v2/a/manifests/v1: 400: MANIFEST_BLOB_UNKNOWN: blob unknown to registry"
        );
    }

    #[tokio::test]
    async fn a_transport_error_names_the_requested_url_not_a_presigned_one() {
        // A port nothing listens on: reqwest fails, naming the URL it tried.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let presigned =
            format!("http://127.0.0.1:{port}/blob?X-Amz-Signature=canary-signature-value");
        let err = reqwest::get(&presigned).await.unwrap_err();
        assert!(err.to_string().contains("canary-signature-value"));
        let e = RegistryError::transport("GET", "http://registry.test/v2/a/blobs/sha256:x", err);
        let mut chain = e.to_string();
        let mut cur = std::error::Error::source(&e);
        while let Some(s) = cur {
            chain.push_str(&s.to_string());
            cur = s.source();
        }
        assert!(!chain.contains("canary-signature-value"), "{chain}");
        assert!(chain.contains("registry.test"), "{chain}");
    }
}
