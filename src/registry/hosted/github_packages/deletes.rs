//! GitHub's terms for deleting package versions: the pace ferry keeps below its secondary
//! rate limit, and the answers that refuse a deletion for good.

use std::num::NonZeroU32;

use crate::registry::error::{Refusal, RegistryError};

/// Version DELETEs sent a minute at most, evenly spaced (one every 400 ms). GitHub's secondary
/// rate limit allows 900 points a minute per endpoint and counts a DELETE as 5 points: about
/// 180 deletions a minute. 150 leaves room for the same token's other requests (a listing, a
/// CI job's own cleanup) without running into it.
pub const DELETES_PER_MINUTE: NonZeroU32 = NonZeroU32::new(150).expect("non-zero");

/// Version DELETEs in flight at once. GitHub allows 100 concurrent requests; retention deletes
/// in order (parents before children), and the pace, not concurrency, sets the rate.
pub const DELETES_IN_FLIGHT: usize = 2;

/// A failed version DELETE (`id`) as ferry takes it: what GitHub refuses whoever asks and
/// however often becomes [`RegistryError::Refused`] with GitHub's own words; anything else
/// stays as answered.
///
/// GitHub answers the last tagged version of a package with 400 "You cannot delete the last
/// tagged version of a package. You must delete the package instead." (other package types
/// say "the last version"). A public version with more than 5,000 downloads is refused with
/// the endpoint's documented 403; the REST docs give no message, so the answer is known by
/// what it speaks of (downloads), which no permission or rate-limit answer does.
pub fn refused(e: RegistryError, id: u64) -> RegistryError {
    let RegistryError::Status {
        url,
        status,
        errors,
        ..
    } = &e
    else {
        return e;
    };
    let Some(message) = errors.iter().find_map(|e| e.message.clone()) else {
        return e;
    };
    let said = message.to_lowercase();
    let refusal = match status {
        400 | 403 | 422
            if said.contains("last tagged version")
                || said.contains("last version of a package") =>
        {
            Refusal::LastVersion
        }
        400 | 403 | 422 if said.contains("downloads") => Refusal::Downloads,
        _ => return e,
    };
    RegistryError::Refused {
        url: url.clone(),
        refusal,
        message,
        id: Some(id.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::error_body::{OciError, Service};

    fn answer(status: u16, body: &str) -> RegistryError {
        RegistryError::Status {
            method: "DELETE".into(),
            url: "https://api.github.com/orgs/o/packages/container/p/versions/7".into(),
            status,
            errors: OciError::decode(body.as_bytes()),
            service: Service::GitHubApi,
        }
    }

    #[test]
    fn refusals_for_good_are_told_apart_from_other_answers() {
        let last = r#"{"message":"You cannot delete the last tagged version of a package. You must delete the package instead."}"#;
        let e = refused(answer(400, last), 7);
        assert_eq!(e.refusal(), Some(Refusal::LastVersion));
        assert!(e.to_string().ends_with(
            "refused: You cannot delete the last tagged version of a package. You must delete the package instead."
        ), "{e}");
        let popular = r#"{"message":"If the package is public and the package version has more than 5,000 downloads, you cannot delete the package version. In this scenario, contact GitHub support for further assistance."}"#;
        let e = refused(answer(403, popular), 7);
        assert_eq!(e.refusal(), Some(Refusal::Downloads));
        assert!(matches!(&e, RegistryError::Refused { id: Some(id), .. } if id == "7"));
        // Permissions, rate limits and server errors are no refusal for good.
        for (status, body) in [
            (
                403,
                r#"{"message":"You must have admin permissions on the package and the read:packages and delete:packages scopes to delete a package version."}"#,
            ),
            (
                403,
                r#"{"message":"You have exceeded a secondary rate limit. Please wait a few minutes before you try again."}"#,
            ),
            (500, r#"{"message":"the last tagged version went missing"}"#),
            (403, ""),
        ] {
            assert_eq!(refused(answer(status, body), 7).refusal(), None, "{body}");
        }
    }
}
