//! Small pieces of the wire protocol: digest checks of manifests, upload session offsets.

use reqwest::Response;
use url::Url;

use crate::reference::Digest;
use crate::registry::error::{RegistryError, Result};
use crate::registry::manifest::ManifestError;

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
        if actual != expected {
            return Err(mismatch(&expected, actual));
        }
        // The bytes are the ones asked for; a registry that still reports another digest
        // for them is lying about something, and nothing it says is taken.
        if let Some(h) = header_digest {
            let reported = Digest::parse(h).ok_or_else(|| RegistryError::InvalidManifest {
                url: url.to_string(),
                reason: ManifestError::DigestHeader {
                    value: h.to_string(),
                },
            })?;
            let of_bytes = reported.recompute(bytes);
            if of_bytes != reported {
                return Err(RegistryError::DigestMismatch {
                    url: url.to_string(),
                    expected: format!("{reported} (Docker-Content-Digest)"),
                    actual: of_bytes.to_string(),
                });
            }
        }
        return Ok(expected);
    }
    match header_digest {
        Some(h) => {
            let expected = Digest::parse(h).ok_or_else(|| RegistryError::InvalidManifest {
                url: url.to_string(),
                reason: ManifestError::DigestHeader {
                    value: h.to_string(),
                },
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

/// The offset an upload session's `Range: 0-<last byte>` confirms. distribution also says
/// `0-0` for an empty session, and ferry records sessions only after whole chunks, so `0-0`
/// means 0. `None` for a header that is no such range (or one beyond any blob).
pub fn upload_offset(range: &str) -> Option<u64> {
    let (_, end) = range.trim().trim_start_matches("bytes=").split_once('-')?;
    match end.trim().parse::<u64>().ok()? {
        0 => Some(0),
        end => end.checked_add(1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_offsets() {
        assert_eq!(upload_offset("0-0"), Some(0));
        assert_eq!(upload_offset("0-1023"), Some(1024));
        assert_eq!(upload_offset("bytes=0-9"), Some(10));
        assert_eq!(upload_offset("0-18446744073709551615"), None);
        assert_eq!(upload_offset("junk"), None);
        assert_eq!(upload_offset("0-"), None);
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
        // Asked by digest, and the bytes match it: a Docker-Content-Digest that disagrees
        // with those bytes is still refused, a valid one of another algorithm is not.
        let other = Digest::sha256_of(b"other");
        let e = verify_manifest_digest(&url, b"{}", d.as_str(), Some(other.as_str())).unwrap_err();
        assert!(e.to_string().contains("Docker-Content-Digest"), "{e}");
        assert!(verify_manifest_digest(&url, b"{}", d.as_str(), Some("sha256:nope")).is_err());
        let sha512 = Digest::parse(&format!("sha512:{}", "0".repeat(128)))
            .unwrap()
            .recompute(b"{}");
        assert_eq!(
            verify_manifest_digest(&url, b"{}", d.as_str(), Some(sha512.as_str())).unwrap(),
            d
        );
        assert_eq!(
            verify_manifest_digest(&url, b"{}", "latest", None).unwrap(),
            d
        );
    }
}
