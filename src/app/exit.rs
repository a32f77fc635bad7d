//! Exit codes, documented in `--help` and the README; `exit_code` in the parent maps an
//! error to one.

pub const OK: u8 = 0;
pub const PARTIAL: u8 = 1;
pub const INVALID: u8 = 2;
pub const CREDENTIALS: u8 = 3;
/// A registry's pull budget (Docker Hub) ran out: the images not started are parked for the
/// next run, and nothing failed (`EX_TEMPFAIL`: try again later).
pub const BUDGET: u8 = 75;
