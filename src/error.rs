//! Error chains for people: every cause of an error on one line. A leaf: errors are rendered
//! here, decided on where they arise.

/// `error: cause: cause`, the whole chain on one line.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}
