//! The hints of an error chain: every error type that has hints ([`crate::error::Hinted`]) is
//! listed here once, so that each place that shows an error to people finds them all (see
//! `crate::error` for why the walk is handed this list).

use crate::error::{hint_of, HintOf};
use crate::registry::error::RegistryError;

/// A finder for every error type with hints.
pub const HINTED: &[HintOf] = &[hint_of::<RegistryError>];

/// `error: cause: cause`, then one `\n  hint: …` line per hint found along the chain.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    crate::error::with_hints(e, HINTED)
}

/// One `\n  hint: …` line per hint found along the chain of `e` (nothing when there is none),
/// for a message that goes on after the chain and ends before its hints.
pub fn lines(e: &(dyn std::error::Error + 'static)) -> String {
    crate::error::hint_lines(e, HINTED)
}

/// The hints found along the chain of `e`, outermost first, each once, one a line; `None`
/// when there is none (the JSON report's `hint` beside `error`).
pub fn joined(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let hints = crate::error::hints(e, HINTED);
    (!hints.is_empty()).then(|| hints.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::error_body::Service;

    fn refused() -> RegistryError {
        RegistryError::Status {
            method: "GET".into(),
            url: "https://r.test/v2/a/blobs/sha256:ab".into(),
            status: 401,
            errors: Vec::new(),
            service: Service::Registry {
                name: "r.test".into(),
                credentials: true,
            },
        }
    }

    // Issue 23, item 5: a registry's hint is data beside its error, shown after the chain.
    #[test]
    fn a_registry_error_shows_its_hint_after_the_chain_not_in_its_message() {
        let e = refused();
        assert_eq!(
            e.to_string(),
            "GET https://r.test/v2/a/blobs/sha256:ab: 401"
        );
        let wrapped = RegistryError::SourceFailed {
            source: Box::new(refused()),
        };
        assert_eq!(
            chain(&wrapped),
            "the source of the upload failed: GET https://r.test/v2/a/blobs/sha256:ab: 401\n  hint: r.test refused the configured credentials; check the user name and the token"
        );
        assert_eq!(
            joined(&wrapped).as_deref(),
            Some("r.test refused the configured credentials; check the user name and the token")
        );
        let bare = RegistryError::Stalled {
            url: "https://r.test/v2/".into(),
            seconds: 3,
        };
        assert_eq!(lines(&bare), "");
        assert_eq!(joined(&bare), None);
    }
}
