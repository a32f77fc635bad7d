//! Small pieces of the wire protocol: digest checks of manifests, `Link` paging, error
//! bodies, bounded body reads.

use bytes::{Bytes, BytesMut};
use futures::TryStreamExt;
use reqwest::header::{self, HeaderMap};
use reqwest::Response;
use serde::Deserialize;
use url::Url;

use crate::registry::digest::Digest;
use crate::registry::error::{RegistryError, Result};

/// Check a manifest's bytes against the digest it was asked by, or the one the registry
/// reported; returns the digest.
pub fn verify_manifest_digest(
    url: &Url,
    bytes: &[u8],
    reference: &str,
    header_digest: Option<&str>,
) -> Result<Digest> {
    let mismatch = |expected: &Digest, actual: Digest| RegistryError::DigestMismatch {
        url: url.to_string(),
        expected: expected.to_string(),
        actual: actual.to_string(),
    };
    if let Some(expected) = Digest::parse(reference) {
        let actual = expected.recompute(bytes);
        return if actual == expected {
            Ok(expected)
        } else {
            Err(mismatch(&expected, actual))
        };
    }
    match header_digest {
        Some(h) => {
            let expected = Digest::parse(h).ok_or_else(|| RegistryError::InvalidManifest {
                url: url.to_string(),
                reason: format!("Docker-Content-Digest {h:?} is not a valid digest"),
            })?;
            let actual = expected.recompute(bytes);
            if actual == expected {
                Ok(expected)
            } else {
                Err(mismatch(&expected, actual))
            }
        }
        None => Ok(Digest::sha256_of(bytes)),
    }
}

/// A registry that reports a different digest for what it stored has stored something else.
pub fn check_reported_digest(url: &Url, resp: &Response, expected: &Digest) -> Result<()> {
    let reported = resp
        .headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok());
    match reported {
        Some(r) if r != expected.as_str() => Err(RegistryError::DigestMismatch {
            url: url.to_string(),
            expected: expected.to_string(),
            actual: r.to_string(),
        }),
        _ => Ok(()),
    }
}

/// Read a response body up to `limit` bytes (one more byte tells the caller it was over).
pub async fn read_limited(
    resp: Response,
    limit: usize,
) -> std::result::Result<Bytes, reqwest::Error> {
    let mut out = BytesMut::new();
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.try_next().await? {
        let room = limit + 1 - out.len().min(limit + 1);
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if out.len() > limit {
            break;
        }
    }
    Ok(out.freeze())
}

/// The `rel="next"` target of a `Link` header, resolved against the request URL.
pub fn next_link(headers: &HeaderMap, url: &Url) -> Option<Url> {
    for value in headers.get_all(header::LINK) {
        let Ok(value) = value.to_str() else { continue };
        for part in value.split(',') {
            let mut pieces = part.split(';');
            let target = pieces.next()?.trim();
            let is_next = pieces.any(|p| {
                let p = p.trim().replace(' ', "");
                p == "rel=\"next\"" || p == "rel=next"
            });
            if is_next {
                let target = target.strip_prefix('<')?.strip_suffix('>')?;
                return url.join(target).ok();
            }
        }
    }
    None
}

/// `": CODE: message; CODE: message"` from a registry's `{"errors":[…]}` body, else a short
/// printable excerpt of the body, else nothing.
pub fn decode_error_body(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Envelope {
        errors: Vec<Entry>,
    }
    #[derive(Deserialize)]
    struct Entry {
        code: Option<String>,
        message: Option<String>,
    }
    if let Ok(env) = serde_json::from_slice::<Envelope>(body) {
        let parts: Vec<String> = env
            .errors
            .iter()
            .map(|e| match (&e.code, &e.message) {
                (Some(c), Some(m)) if !m.is_empty() => format!("{c}: {m}"),
                (Some(c), _) => c.clone(),
                (None, Some(m)) => m.clone(),
                (None, None) => String::new(),
            })
            .filter(|s| !s.is_empty())
            .collect();
        if !parts.is_empty() {
            return format!(": {}", parts.join("; "));
        }
    }
    // Docker Hub's and GitHub's REST APIs answer `{"message": …}` or `{"detail": …}`.
    #[derive(Deserialize)]
    struct Plain {
        message: Option<String>,
        detail: Option<String>,
    }
    if let Ok(Plain { message, detail }) = serde_json::from_slice::<Plain>(body) {
        if let Some(m) = message.or(detail).filter(|m| !m.is_empty()) {
            return format!(": {m}");
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if !text.is_empty()
        && text.len() <= 200
        && !text.contains('<')
        && text.chars().all(|c| !c.is_control())
    {
        return format!(": {text}");
    }
    String::new()
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn decodes_registry_errors() {
        assert_eq!(
            decode_error_body(br#"{"errors":[{"code":"DENIED","message":"requested access to the resource is denied"}]}"#),
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
    }

    #[test]
    fn follows_link_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            header::LINK,
            HeaderValue::from_static("</v2/_catalog?last=b&n=2>; rel=\"next\""),
        );
        let url = Url::parse("http://127.0.0.1:5000/v2/_catalog?n=2").unwrap();
        assert_eq!(
            next_link(&h, &url).unwrap().as_str(),
            "http://127.0.0.1:5000/v2/_catalog?last=b&n=2"
        );
        assert_eq!(next_link(&HeaderMap::new(), &url), None);
        let mut h = HeaderMap::new();
        h.insert(header::LINK, HeaderValue::from_static("<x>; rel=\"prev\""));
        assert_eq!(next_link(&h, &url), None);
    }

    #[test]
    fn manifest_digest_checks() {
        let url = Url::parse("http://r/v2/a/manifests/x").unwrap();
        let d = Digest::sha256_of(b"{}");
        assert_eq!(
            verify_manifest_digest(&url, b"{}", d.as_str(), None).unwrap(),
            d
        );
        assert!(verify_manifest_digest(&url, b"{ }", d.as_str(), None).is_err());
        assert!(verify_manifest_digest(&url, b"{ }", "latest", Some(d.as_str())).is_err());
        assert_eq!(
            verify_manifest_digest(&url, b"{}", "latest", None).unwrap(),
            d
        );
    }
}
