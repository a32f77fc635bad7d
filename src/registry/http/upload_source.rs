//! The source side of an upload: its bytes from the first one, verified as they flow, and its
//! failures kept as the source's ([`RegistryError::SourceFailed`]), so that the retry policy
//! charges them to the registry they are read from, not to the target.

use std::sync::{Arc, Mutex};

use futures::TryStreamExt;

use crate::reference::Midstate;
use crate::registry::error::{RegistryError, Result};
use crate::registry::verifying::VerifyingStream;
use crate::registry::{BlobStream, BlobUpload};

/// The whole blob from its first byte, verified as it flows (the digest and size it must
/// have end the stream with an error otherwise).
pub(super) async fn whole_blob(up: &BlobUpload<'_>) -> Result<BlobStream> {
    let data = up
        .source
        .open(&Midstate::new())
        .await
        .map_err(source_failed)?;
    let data = VerifyingStream::new(data, source_url(up), up.digest.clone(), up.size);
    Ok(Box::pin(data))
}

/// Where an upload's bytes were read from, for errors about them.
pub(super) fn source_url(up: &BlobUpload<'_>) -> String {
    up.source
        .url()
        .unwrap_or_else(|| format!("the source of {}", up.digest))
}

pub(super) fn source_failed(e: RegistryError) -> RegistryError {
    match e {
        e @ RegistryError::SourceFailed { .. } => e,
        e => RegistryError::SourceFailed {
            source: Box::new(e),
        },
    }
}

/// Keeps a source stream's error aside: when the source fails mid-upload the target's
/// complaint (a reset, a 400) is not the cause, and the retry policy must know it was the
/// source.
pub(super) type FailureSlot = Arc<Mutex<Option<RegistryError>>>;

pub(super) fn guarded(data: BlobStream) -> (BlobStream, FailureSlot) {
    let slot: FailureSlot = Arc::default();
    let keep = slot.clone();
    let stream = data.map_err(move |e| {
        let note = RegistryError::Protocol {
            url: "blob source".into(),
            reason: format!("upload aborted: {e}"),
        };
        *keep.lock().expect("failure slot") = Some(e);
        note
    });
    (Box::pin(stream), slot)
}
