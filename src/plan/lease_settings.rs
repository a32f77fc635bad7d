//! `lease = { repository = "…", expiry = "10m" }` in a `[registry."HOST"]` section: where the
//! run lease at that registry lives and how long it lasts ([`crate::registry::lease`]).

use std::time::Duration;

use toml::Spanned;

use super::errors::PlanError;
use super::raw::RawLease;
use super::spans::{duration, Ctx};
use crate::reference::{Reference, Selector};
use crate::registry::config::LeaseSettings;
use crate::registry::lease::{is_lease_repository, REPOSITORY_NAME};

/// A lease shorter than this would spend the run's requests on renewals.
const MIN_EXPIRY: Duration = Duration::from_secs(3);

/// `field` is `registry."HOST".lease`.
pub(super) fn validate(ctx: &Ctx, raw: &RawLease, field: &str) -> Result<LeaseSettings, PlanError> {
    let mut out = LeaseSettings::default();
    if let Some(r) = &raw.repository {
        let name = format!("{field}.repository");
        if !crate::reference::is_valid_repository(r.get_ref()) {
            return Err(ctx.invalid(
                r.span(),
                &name,
                "not a repository path (lowercase components joined by `/`)",
            ));
        }
        // Only a repository of this name is left out of every listing, so no wildcard rule
        // copies or judges the lease.
        if !is_lease_repository(r.get_ref()) {
            return Err(ctx.invalid(
                r.span(),
                &name,
                format!("must end in `{REPOSITORY_NAME}` (`NAMESPACE/{REPOSITORY_NAME}`): wildcard rules skip only repositories of that name"),
            ));
        }
        out.repository = Some(r.get_ref().clone());
    }
    if let Some(e) = &raw.expiry {
        let name = format!("{field}.expiry");
        out.expiry = duration(ctx, e, &name)?;
        if out.expiry < MIN_EXPIRY {
            return Err(ctx.invalid(e.span(), &name, "must be at least 3s"));
        }
    }
    Ok(out)
}

/// Refuse a rule's `field` that names a lease repository (`team/ferry-lease`, not the
/// namespace `ferry-lease/*`): leases are ferry's own, and a rule that copied, judged or
/// overwrote one would act on another run's lease.
pub(super) fn not_a_lease(
    ctx: &Ctx,
    v: &Spanned<String>,
    field: &str,
    r: &Reference,
) -> Result<(), PlanError> {
    if r.selector == Selector::Wildcard || !is_lease_repository(&r.repository) {
        return Ok(());
    }
    Err(ctx.invalid(
        v.span(),
        field,
        format!("holds ferry's run leases (every repository named `{REPOSITORY_NAME}` does): no rule copies from, to or retains in one"),
    ))
}
