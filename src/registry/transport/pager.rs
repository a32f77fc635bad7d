//! One walk for every paged listing: catalog, tags, referrers and the GitHub API (paged by
//! `Link: <…>; rel="next"`), Docker Hub's API (a `next` URL in the body). Each listing sends
//! its own requests; the [`Pager`] decides where the next page is and whether it may be read,
//! with one rule everywhere.

use reqwest::header::{self, HeaderMap};
use url::{Origin, Url};

use crate::registry::error::{RegistryError, Result};

/// More pages than this means a server that loops its links.
pub const MAX_PAGES: usize = 10_000;

/// Where a paged listing stands. The rule: a listing stays on the origin (scheme, host, port)
/// of its first page, since the request's credentials would follow a link elsewhere; a link to
/// another host is refused, naming it, and so is a page that names itself or a listing longer
/// than [`MAX_PAGES`] (a loop). A refused listing fails whole: retention must not judge a
/// repository from part of its tags or versions.
///
/// ```text
/// let mut pager = Pager::new(first);
/// while let Some(url) = pager.next_page()? {
///     let resp = send(&url).await?;
///     pager.follow_link(&url, resp.headers())?;
///     items.extend(parse(resp).await?);
/// }
/// ```
#[derive(Debug)]
pub struct Pager {
    origin: Origin,
    next: Option<Url>,
    pages: usize,
}

impl Pager {
    pub fn new(first: Url) -> Pager {
        Pager {
            origin: first.origin(),
            next: Some(first),
            pages: 0,
        }
    }

    /// The page to read next; `None` once the listing has ended.
    pub fn next_page(&mut self) -> Result<Option<Url>> {
        let Some(url) = self.next.take() else {
            return Ok(None);
        };
        if self.pages >= MAX_PAGES {
            return Err(RegistryError::Protocol {
                url: url.to_string(),
                reason: format!("more than {MAX_PAGES} pages: the server's paging loops"),
            });
        }
        self.pages += 1;
        Ok(Some(url))
    }

    /// Pages handed out so far (1 while the first is read).
    pub fn pages(&self) -> usize {
        self.pages
    }

    /// The page at `url` names `next` as the one after it (`None`: the listing ends there).
    pub fn follow(&mut self, url: &Url, next: Option<Url>) -> Result<()> {
        let refuse = |reason: String| {
            Err(RegistryError::Protocol {
                url: url.to_string(),
                reason,
            })
        };
        match next {
            None => Ok(()),
            Some(n) if n.origin() != self.origin => {
                refuse(format!("refusing to follow a link to another host: {n}"))
            }
            Some(n) if &n == url => {
                refuse("the page names itself as the next one: the server's paging loops".into())
            }
            Some(n) => {
                self.next = Some(n);
                Ok(())
            }
        }
    }

    /// [`Pager::follow`] the `rel="next"` link of the page's headers.
    pub fn follow_link(&mut self, url: &Url, headers: &HeaderMap) -> Result<()> {
        self.follow(url, next_link(headers, url))
    }
}

/// The `rel="next"` target of a `Link` header, resolved against the request URL; only an
/// http(s) URL (`<a:>` resolves to the URL `a:`, which no client can fetch). Whether it may
/// be followed (its host) is the caller's decision.
pub fn next_link(headers: &HeaderMap, url: &Url) -> Option<Url> {
    link(headers, url, "next")
}

/// How many pages a listing paged by `Link` has, where its page names the last one
/// (`rel="last"`, with a `page` parameter, as the GitHub API does): the long listing a caller
/// would not read whole is known from its first page.
pub fn last_page(headers: &HeaderMap, url: &Url) -> Option<usize> {
    let last = link(headers, url, "last")?;
    let page = last.query_pairs().find(|(k, _)| k == "page")?.1;
    page.parse().ok()
}

/// The `rel` target of a `Link` header, as [`next_link`] reads `next`.
fn link(headers: &HeaderMap, url: &Url, rel: &str) -> Option<Url> {
    let quoted = format!("rel=\"{rel}\"");
    let bare = format!("rel={rel}");
    for value in headers.get_all(header::LINK) {
        let Ok(value) = value.to_str() else { continue };
        for part in value.split(',') {
            let mut pieces = part.split(';');
            let target = pieces.next()?.trim();
            let is_rel = pieces.any(|p| {
                let p = p.trim().replace(' ', "");
                p == quoted || p == bare
            });
            if is_rel {
                let target = target.strip_prefix('<')?.strip_suffix('>')?;
                return url
                    .join(target)
                    .ok()
                    .filter(|u| matches!(u.scheme(), "http" | "https"));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn follows_link_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            header::LINK,
            HeaderValue::from_static("</v2/_catalog?last=b&n=2>; rel=\"next\""),
        );
        let url = Url::parse("http://127.0.0.1:5000/v2/_catalog?n=2").unwrap();
        assert_eq!(
            next_link(&h, &url).unwrap().as_str(),
            "http://127.0.0.1:5000/v2/_catalog?last=b&n=2"
        );
        assert_eq!(next_link(&HeaderMap::new(), &url), None);
        let mut h = HeaderMap::new();
        h.insert(header::LINK, HeaderValue::from_static("<x>; rel=\"prev\""));
        assert_eq!(next_link(&h, &url), None);
    }

    /// Issue 24: a GitHub listing's first page says how many pages it has.
    #[test]
    fn the_last_link_tells_how_many_pages() {
        let url = Url::parse("https://api.test/orgs/o/packages/container/p/versions").unwrap();
        let mut h = HeaderMap::new();
        h.insert(
            header::LINK,
            HeaderValue::from_static(
                "<https://api.test/x?per_page=100&page=2>; rel=\"next\", <https://api.test/x?per_page=100&page=51>; rel=\"last\"",
            ),
        );
        assert_eq!(last_page(&h, &url), Some(51));
        assert_eq!(
            next_link(&h, &url).unwrap().as_str(),
            "https://api.test/x?per_page=100&page=2"
        );
        // The last page names no last one; nor does a listing of one page.
        let mut h = HeaderMap::new();
        h.insert(
            header::LINK,
            HeaderValue::from_static("<https://api.test/x?page=50>; rel=\"prev\""),
        );
        assert_eq!(last_page(&h, &url), None);
        assert_eq!(last_page(&HeaderMap::new(), &url), None);
    }

    #[test]
    fn one_rule_for_where_a_listing_leads() {
        let u = |s: &str| Url::parse(s).unwrap();
        let first = u("https://r.test/v2/_catalog?n=2");
        let mut p = Pager::new(first.clone());
        assert_eq!(p.next_page().unwrap(), Some(first.clone()));
        p.follow(&first, Some(u("https://r.test/v2/_catalog?last=b&n=2")))
            .unwrap();
        let second = p.next_page().unwrap().unwrap();
        assert_eq!(p.pages(), 2);
        // Another host, or another port or scheme of the same host: refused, named.
        for elsewhere in [
            "https://evil.test/v2/_catalog?last=c",
            "https://r.test:8443/v2/_catalog?last=c",
            "http://r.test/v2/_catalog?last=c",
        ] {
            let e = p
                .follow(&second, Some(u(elsewhere)))
                .unwrap_err()
                .to_string();
            assert!(e.contains("another host") && e.contains(elsewhere), "{e}");
        }
        // A page that names itself loops.
        let e = p.follow(&second, Some(second.clone())).unwrap_err();
        assert!(e.to_string().contains("loops"), "{e}");
        p.follow(&second, None).unwrap();
        assert_eq!(p.next_page().unwrap(), None);
    }
}
