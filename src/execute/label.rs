//! How the run names a rule or an empty selection to people: `copy #2 (plans/prod.toml:14)`,
//! the way they find it in their file. Shared by the stages, the prune scopes and `ferry check`.

use crate::copy::select;
use crate::plan::Plan;

/// `copy #2 (plans/prod.toml:14)`: a rule as people find it in their file; one target of a
/// fan-out is named with it, `copy #2 -> registry.dr.example/myorg/* (plans/prod.toml:14)`.
pub fn copy_label(plan: &Plan, number: usize) -> String {
    match plan.copies.get(number.wrapping_sub(1)) {
        Some(rule) => format!("{} ({}:{})", rule.name(), plan.path.display(), rule.line),
        None => format!("copy #{number}"),
    }
}

/// `retain #1 (plans/prod.toml:30)`.
pub fn retain_label(plan: &Plan, number: usize) -> String {
    match plan.retains.get(number.wrapping_sub(1)) {
        Some(rule) => format!("retain #{number} ({}:{})", plan.path.display(), rule.line),
        None => format!("retain #{number}"),
    }
}

/// `copy #2 (plans/x.toml:9): 0 repositories match docker.io/tema/*`.
pub fn empty_line(plan: &Plan, e: &select::Empty) -> String {
    format!("{}: {}", copy_label(plan, e.rule), e.what)
}
