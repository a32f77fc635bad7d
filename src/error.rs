//! Error chains for people: every cause of an error on one line, then the hints found along
//! the chain, each once, last. A leaf: errors are rendered here, decided on where they arise.
//!
//! A hint ("what usually causes this, and what to do") is data beside an error, never part of
//! its `Display`, so that a cause that follows an error is not read after its hint. An error
//! type with hints implements [`Hinted`]. The chain is a list of `dyn Error`s, and stable Rust
//! cannot ask a `dyn Error` whether its type implements a trait; and this leaf cannot name the
//! hinted types, which live in modules above it. So the walk takes the finders ([`HintOf`],
//! one per hinted type, made by [`hint_of`]) from the caller: `report::hints` lists them, in
//! the one place that knows every hinted type.

/// `error: cause: cause`, the whole chain on one line, without hints.
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

/// An error that can say what usually causes it and what to do about it.
pub trait Hinted {
    /// The hint, when there is one for this error.
    fn hint(&self) -> Option<String>;
}

/// The hint of one link of a chain, when the link is of a type it knows.
pub type HintOf = fn(&(dyn std::error::Error + 'static)) -> Option<String>;

/// The hint of `e` when it is a `T`, or a `Box<T>` (what thiserror's `#[source]` on a boxed
/// error hands out).
pub fn hint_of<T: Hinted + std::error::Error + 'static>(
    e: &(dyn std::error::Error + 'static),
) -> Option<String> {
    e.downcast_ref::<T>()
        .or_else(|| e.downcast_ref::<Box<T>>().map(|b| &**b))
        .and_then(Hinted::hint)
}

/// Every hint found along the chain of `e` by `finders`, outermost first, each once.
pub fn hints(e: &(dyn std::error::Error + 'static), finders: &[HintOf]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut cur = Some(e);
    while let Some(link) = cur {
        for hint in finders.iter().filter_map(|find| find(link)) {
            if !out.contains(&hint) {
                out.push(hint);
            }
        }
        cur = link.source();
    }
    out
}

/// One `\n  hint: …` line per hint (see [`hints`]); nothing when there is none.
pub fn hint_lines(e: &(dyn std::error::Error + 'static), finders: &[HintOf]) -> String {
    hints(e, finders)
        .iter()
        .map(|h| format!("\n  hint: {h}"))
        .collect()
}

/// The chain (see [`chain`]), then its hint lines (see [`hint_lines`]).
pub fn with_hints(e: &(dyn std::error::Error + 'static), finders: &[HintOf]) -> String {
    chain(e) + &hint_lines(e, finders)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("connection reset")]
    struct Reset;

    /// A hinted error with a cause of its own.
    #[derive(Debug, thiserror::Error)]
    #[error("GET https://r.test/v2/a/tags/list: 401")]
    struct Refused(#[source] Reset);

    impl Hinted for Refused {
        fn hint(&self) -> Option<String> {
            Some("r.test refused the configured credentials".into())
        }
    }

    #[derive(Debug, thiserror::Error)]
    #[error("listing a/*")]
    struct Listing(#[source] Box<Refused>);

    #[derive(Debug, thiserror::Error)]
    #[error("the run stopped")]
    struct Outer(#[source] Listing);

    // Issue 23, item 5: a hint is shown after the whole chain, causes included, not where its
    // error sits in it.
    #[test]
    fn the_chain_comes_first_and_its_hints_last_each_once() {
        let finders: &[HintOf] = &[hint_of::<Refused>];
        let e = Outer(Listing(Box::new(Refused(Reset))));
        assert_eq!(
            with_hints(&e, finders),
            "the run stopped: listing a/*: GET https://r.test/v2/a/tags/list: 401: connection reset\n  hint: r.test refused the configured credentials"
        );
        assert_eq!(
            chain(&e),
            "the run stopped: listing a/*: GET https://r.test/v2/a/tags/list: 401: connection reset"
        );
        // Without a finder for its type, no hint.
        assert!(hints(&e, &[]).is_empty());
        // The same hint twice along a chain is shown once.
        let twice: &[HintOf] = &[hint_of::<Refused>, hint_of::<Refused>];
        assert_eq!(hints(&e, twice).len(), 1);
    }
}
