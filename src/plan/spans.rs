//! The validation context every part of the plan shares: the file and its text, to turn a
//! span into `file:line:column`, and the field checks (numbers in bounds, durations) that
//! several tables use. A leaf of `plan`: it imports none of its siblings but `errors`.

use std::path::Path;
use std::time::Duration;

use toml::Spanned;

use super::errors::{self, PlanError};

/// Validation context: the file and its text, to turn spans into line and column.
pub(super) struct Ctx<'a> {
    pub(super) path: &'a Path,
    pub(super) text: &'a str,
}

impl Ctx<'_> {
    /// 1-based line and column (in characters, as editors count) of a byte offset.
    pub(super) fn line_col(&self, offset: usize) -> (usize, usize) {
        errors::line_col(self.text, offset)
    }

    /// A refused value: its field and why, never the value itself (it may be a secret).
    pub(super) fn invalid(
        &self,
        span: std::ops::Range<usize>,
        field: &str,
        reason: impl Into<String>,
    ) -> PlanError {
        self.refused(span, field, None, reason.into())
    }

    /// A refused number, which is shown: numbers are not secrets, and `= 0` says it all.
    pub(super) fn invalid_number(
        &self,
        span: std::ops::Range<usize>,
        field: &str,
        value: i64,
        reason: impl Into<String>,
    ) -> PlanError {
        self.refused(span, field, Some(value), reason.into())
    }

    fn refused(
        &self,
        span: std::ops::Range<usize>,
        field: &str,
        value: Option<i64>,
        reason: String,
    ) -> PlanError {
        let (line, column) = self.line_col(span.start);
        PlanError::Invalid {
            path: self.path.to_path_buf(),
            line,
            column,
            field: field.to_string(),
            value,
            reason,
        }
    }
}

/// An integer within its bounds.
pub(super) fn int_in(
    ctx: &Ctx,
    v: &Spanned<i64>,
    field: &str,
    b: errors::Bounds,
) -> Result<usize, PlanError> {
    let n = *v.get_ref();
    if n < b.min || n > b.max {
        return Err(ctx.invalid_number(
            v.span(),
            field,
            n,
            format!("must be between {} and {}", b.min, b.max),
        ));
    }
    Ok(n as usize)
}

/// A humantime duration (`90s`, `2m`, `1h 30m`), at least one second.
pub(super) fn duration(ctx: &Ctx, v: &Spanned<String>, field: &str) -> Result<Duration, PlanError> {
    let d = any_duration(ctx, v, field)?;
    if d < Duration::from_secs(1) {
        return Err(ctx.invalid(v.span(), field, "must be at least 1s"));
    }
    Ok(d)
}

/// A humantime duration, zero (`"0s"`) included: for a field where zero turns something off.
pub(super) fn any_duration(
    ctx: &Ctx,
    v: &Spanned<String>,
    field: &str,
) -> Result<Duration, PlanError> {
    humantime::parse_duration(v.get_ref()).map_err(|e| {
        ctx.invalid(
            v.span(),
            field,
            format!(
                "not a duration like \"90s\" or \"2m\": {}",
                errors::duration_reason(v.get_ref(), &e)
            ),
        )
    })
}
