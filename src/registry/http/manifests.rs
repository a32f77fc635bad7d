//! Manifests: HEAD (what a tag or digest resolves to), GET (verified against the reference
//! or the registry's digest, bounded in size), PUT (the registry's reported digest checked)
//! and DELETE by digest (and a DELETE of a digest no manifest has, to ask whether deletes
//! are allowed); and a tag removed by pushing a placeholder under it and deleting
//! that ([`placeholder`]).

use bytes::Bytes;
use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{Method, Response, StatusCode};
use url::Url;

use super::client::HttpRegistry;
use super::send::Body;
use crate::reference::Digest;
use crate::registry::auth::Scope;
use crate::registry::capabilities::RecordStyle;
use crate::registry::error::{RegistryError, Result};
use crate::registry::manifest::{self, ManifestError, MAX_MANIFEST_SIZE};
use crate::registry::transport::body::read_limited;
use crate::registry::transport::wire::{check_reported_digest, verify_manifest_digest};
use crate::registry::{placeholder, Manifest, ManifestHead, Pushed, Registry};

/// The operations, each tried once; the `Registry` implementation wraps them in retries.
impl HttpRegistry {
    pub(super) async fn head_manifest_once(
        &self,
        repo: &str,
        reference: &str,
    ) -> Result<Option<ManifestHead>> {
        let url = self.manifest_url(repo, reference).await?;
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_static(manifest::ACCEPT));
        let (resp, permit) = self
            .send(Method::HEAD, &url, &Scope::pull(repo), headers, Body::Empty)
            .await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !resp.status().is_success() {
            return Err(self.status_error(&Method::HEAD, &url, resp).await);
        }
        let digest = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(Digest::parse);
        let media_type = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        drop(permit);
        match digest {
            Some(digest) => Ok(Some(ManifestHead { digest, media_type })),
            // Without the header the only way to know the digest is to read the manifest.
            None => {
                let m = self.get_manifest(repo, reference).await?;
                Ok(Some(ManifestHead {
                    digest: m.digest,
                    media_type: Some(m.media_type),
                }))
            }
        }
    }

    pub(super) async fn get_manifest_once(&self, repo: &str, reference: &str) -> Result<Manifest> {
        let url = self.manifest_url(repo, reference).await?;
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_static(manifest::ACCEPT));
        let (resp, _permit) = self
            .send(Method::GET, &url, &Scope::pull(repo), headers, Body::Empty)
            .await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Err(RegistryError::NotFound {
                what: format!("manifest {}/{repo}:{reference}", self.name),
                url: url.to_string(),
            });
        }
        if !resp.status().is_success() {
            return Err(self.status_error(&Method::GET, &url, resp).await);
        }
        let served_type = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let header_digest = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        if resp.content_length().unwrap_or(0) > MAX_MANIFEST_SIZE {
            return Err(RegistryError::InvalidManifest {
                url: url.to_string(),
                reason: ManifestError::OverLimit,
            });
        }
        let bytes = self.read_manifest_sized(resp, &url).await?.ok_or_else(|| {
            RegistryError::InvalidManifest {
                url: url.to_string(),
                reason: ManifestError::OverLimit,
            }
        })?;
        let digest = verify_manifest_digest(&url, &bytes, reference, header_digest.as_deref())?;
        let media_type =
            manifest::media_type_of(&bytes, served_type.as_deref()).ok_or_else(|| {
                RegistryError::InvalidManifest {
                    url: url.to_string(),
                    reason: ManifestError::NoMediaType {
                        besides: "the Content-Type header",
                    },
                }
            })?;
        Ok(Manifest {
            media_type,
            bytes,
            digest,
        })
    }

    pub(super) async fn put_manifest_once(
        &self,
        repo: &str,
        reference: &str,
        m: &Manifest,
    ) -> Result<Pushed> {
        let url = self.manifest_url(repo, reference).await?;
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_str(&m.media_type).map_err(|_| RegistryError::InvalidManifest {
                url: url.to_string(),
                reason: ManifestError::MediaTypeHeader {
                    media_type: m.media_type.clone(),
                },
            })?,
        );
        let (resp, _permit) = self
            .send(
                Method::PUT,
                &url,
                &Scope::push(repo),
                headers,
                Body::Bytes(m.bytes.clone()),
            )
            .await?;
        if resp.status() != StatusCode::CREATED && !resp.status().is_success() {
            return Err(self.status_error(&Method::PUT, &url, resp).await);
        }
        check_reported_digest(&url, &resp, &m.digest)?;
        Ok(Pushed {
            subject_indexed: resp.headers().contains_key("oci-subject"),
        })
    }

    pub(super) async fn delete_manifest_once(&self, repo: &str, digest: &Digest) -> Result<()> {
        let (url, (resp, _permit)) = self.send_delete(repo, digest).await?;
        match resp.status() {
            s if s.is_success() => Ok(()),
            // Already gone: the decision holds.
            StatusCode::NOT_FOUND => Ok(()),
            _ => Err(self.status_error(&Method::DELETE, &url, resp).await),
        }
    }

    /// Ask whether `repo` may be deleted from without deleting anything: a DELETE of the
    /// all-zero digest, which no manifest has. CNCF distribution answers 404 where deletes are
    /// enabled and permitted, 405 UNSUPPORTED where they are disabled, 401 or 403 where the
    /// credentials may not delete; the error answer is returned as it came.
    pub(super) async fn probe_delete_once(&self, repo: &str) -> Result<String> {
        let nothing = Digest::parse(&format!("sha256:{}", "0".repeat(64))).expect("a digest");
        let (url, (resp, _permit)) = self.send_delete(repo, &nothing).await?;
        match resp.status() {
            StatusCode::NOT_FOUND => Ok(
                "deletes are enabled (a delete of a manifest that does not exist answered 404)"
                    .into(),
            ),
            s if s.is_success() => Ok(format!(
                "deletes are enabled (a delete of a manifest that does not exist answered {})",
                s.as_u16()
            )),
            _ => Err(self.status_error(&Method::DELETE, &url, resp).await),
        }
    }

    /// One `DELETE` of manifest `digest` in `repo`: its URL, and the answer (with the
    /// connection permit, held while its body is read).
    async fn send_delete(&self, repo: &str, digest: &Digest) -> Result<(Url, super::send::Answer)> {
        let url = self.manifest_url(repo, digest.as_str()).await?;
        let answer = self
            .send(
                Method::DELETE,
                &url,
                &Scope::delete(repo),
                HeaderMap::new(),
                Body::Empty,
            )
            .await?;
        Ok((url, answer))
    }

    /// Does `tag` of `repo` still point at `digest`? `false` when the tag is gone;
    /// [`RegistryError::TagMoved`] when it points at another manifest now.
    pub(super) async fn tag_is_at(&self, repo: &str, tag: &str, digest: &Digest) -> Result<bool> {
        match self.head_manifest(repo, tag).await? {
            None => Ok(false),
            Some(h) if h.digest != *digest => {
                let url = self.manifest_url(repo, tag).await?;
                Err(RegistryError::tag_moved(url, tag, digest, &h.digest))
            }
            Some(_) => Ok(true),
        }
    }

    /// Remove `tag` (checked to point at `digest`, the manifest it is removed from) the
    /// [`placeholder`] way: move it onto a throw-away manifest, then delete that by digest
    /// (through the hosted API where the registry has one: GHCR deletes its package version).
    /// Returns the deleted placeholder's id where the registry has one. Where the hosted API
    /// can tell beforehand that deleting will be refused (GHCR's token scopes), nothing is
    /// pushed: a placeholder that cannot be deleted would hold the tag.
    ///
    /// The PUT is what takes the tag, so the last look at it goes right before, back to back:
    /// both places in the rate budget are taken first, and a tag moved or gone by then is
    /// left alone. A push over the tag after the PUT moves it off the placeholder, whose
    /// deletion then takes nothing else.
    pub(super) async fn untag_by_placeholder(
        &self,
        repo: &str,
        tag: &str,
        digest: &Digest,
    ) -> Result<Option<String>> {
        if let Some(v) = &self.hosted {
            v.check_delete(repo).await?;
        }
        self.ensure_empty_config(repo).await?;
        let throwaway = placeholder::manifest(tag);
        let turns = self.throttle.reserve(2).await;
        let moved = turns
            .spend(async {
                if !self.tag_is_at(repo, tag, digest).await? {
                    return Ok(false);
                }
                self.put_manifest(repo, tag, &throwaway).await.map(|_| true)
            })
            .await?;
        if !moved {
            return Ok(None);
        }
        let id = self.delete_manifest(repo, &throwaway.digest).await?;
        if id.is_none() && self.capabilities().record_style == RecordStyle::Versions {
            // A registry of package versions answers with the id of what it deleted: without
            // one, the version was not found, and the placeholder still holds the tag.
            return Err(RegistryError::Protocol {
                url: self.manifest_url(repo, throwaway.digest.as_str()).await?.to_string(),
                reason: format!(
                    "the placeholder pushed to remove tag {tag} is not among the package's versions, so it was not deleted and holds the tag; delete it by digest"
                ),
            });
        }
        Ok(id)
    }

    /// Upload the placeholder's `{}` config unless `repo` has it: distribution refuses an
    /// image manifest whose config it does not hold.
    async fn ensure_empty_config(&self, repo: &str) -> Result<()> {
        placeholder::upload_empty_config(self, repo).await
    }

    /// A manifest-sized body (a manifest, a referrers page), or `None` when it is over the
    /// limit. Stops reading one byte past it: an endless body costs 4 MiB, no more.
    pub(super) async fn read_manifest_sized(
        &self,
        resp: Response,
        url: &Url,
    ) -> Result<Option<Bytes>> {
        let bytes = read_limited(
            resp,
            &Method::GET,
            url,
            MAX_MANIFEST_SIZE as usize,
            self.stall,
        )
        .await?;
        Ok((bytes.len() as u64 <= MAX_MANIFEST_SIZE).then_some(bytes))
    }
}
