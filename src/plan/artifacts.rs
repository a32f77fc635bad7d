//! What travels with an image beyond its tag: its referrers (`referrers = …`) and which of
//! its platforms (`platforms = …`, `platform_mode = …`).

use std::fmt;

use toml::Spanned;

use super::{Ctx, PlanError};

/// Which referrers (signatures, attestations, SBOMs) travel with the images a rule copies.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Referrers {
    /// `referrers = false`: none, and the referrer tags are not copied as ordinary tags either.
    None,
    /// `referrers = true` (the default): every one, whatever its type.
    #[default]
    All,
    /// `referrers = { artifact_types = [...] }`: those of these artifact types.
    Only(Vec<String>),
}

impl Referrers {
    pub fn enabled(&self) -> bool {
        !matches!(self, Referrers::None)
    }

    /// Does a referrer of these types (its artifact type, and for cosign's tag-scheme
    /// artifacts its first layer's media type) travel?
    pub fn admits<S: AsRef<str>>(&self, kinds: &[S]) -> bool {
        match self {
            Referrers::None => false,
            Referrers::All => true,
            Referrers::Only(types) => kinds.iter().any(|k| types.iter().any(|t| t == k.as_ref())),
        }
    }

    /// Does the type filter need each referrer's own manifest to decide (a tag-scheme
    /// referrer has no descriptor telling its type)?
    pub fn filters(&self) -> bool {
        matches!(self, Referrers::Only(_))
    }

    /// The one artifact type to ask a referrers API for, when there is exactly one.
    pub fn api_filter(&self) -> Option<&str> {
        match self {
            Referrers::Only(types) if types.len() == 1 => Some(&types[0]),
            _ => None,
        }
    }
}

/// `os/architecture[/variant]`, as `docker --platform` and the index's `platform` say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    /// When absent, any variant matches (`linux/arm64` matches `linux/arm64/v8`).
    pub variant: Option<String>,
}

/// What a platform must look like.
#[derive(Debug, thiserror::Error)]
#[error("a platform is `os/architecture` or `os/architecture/variant`, like `linux/amd64` or `linux/arm/v7`")]
pub struct PlatformSyntax;

impl Platform {
    pub fn parse(s: &str) -> Result<Platform, PlatformSyntax> {
        let parts: Vec<&str> = s.split('/').collect();
        let ok = |p: &str| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
        };
        match parts.as_slice() {
            [os, arch] if ok(os) && ok(arch) => Ok(Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: None,
            }),
            [os, arch, variant] if ok(os) && ok(arch) && ok(variant) => Ok(Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: Some(variant.to_string()),
            }),
            _ => Err(PlatformSyntax),
        }
    }

    /// Does an index child's platform (`linux/arm64/v8`, as the manifest module writes it)
    /// match?
    pub fn matches(&self, child: &str) -> bool {
        let mut parts = child.split('/');
        let (os, arch, variant) = (parts.next(), parts.next(), parts.next());
        os == Some(self.os.as_str())
            && arch == Some(self.architecture.as_str())
            && match &self.variant {
                None => true,
                Some(v) => variant == Some(v.as_str()),
            }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// How an index is copied when only some of its platforms are wanted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlatformMode {
    /// The original index, unchanged (its digest kept), with only the chosen children copied.
    Sparse,
    /// A new index listing only the chosen children: a new digest, reported.
    Rewrite,
}

impl fmt::Display for PlatformMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PlatformMode::Sparse => "sparse",
            PlatformMode::Rewrite => "rewrite",
        })
    }
}

/// `platforms = [...]` with its `platform_mode`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Platforms {
    pub wanted: Vec<Platform>,
    pub mode: PlatformMode,
}

impl Platforms {
    /// Is an index child with this platform wanted? A child without a platform (an
    /// attestation manifest, say) is decided by the caller.
    pub fn wants(&self, platform: &str) -> bool {
        self.wanted.iter().any(|p| p.matches(platform))
    }
}

impl fmt::Display for Platforms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list: Vec<String> = self.wanted.iter().map(|p| p.to_string()).collect();
        write!(f, "{} ({})", list.join(","), self.mode)
    }
}

pub(super) fn validate_referrers(
    ctx: &Ctx,
    raw: Option<&Spanned<toml::Value>>,
) -> Result<Referrers, PlanError> {
    let Some(raw) = raw else {
        return Ok(Referrers::All);
    };
    let bad = |reason: &str| ctx.invalid(raw.span(), "copy.referrers", reason);
    const SHAPE: &str = "expected `true`, `false` or `{ artifact_types = [\"…\"] }`";
    match raw.get_ref() {
        toml::Value::Boolean(true) => Ok(Referrers::All),
        toml::Value::Boolean(false) => Ok(Referrers::None),
        toml::Value::Table(t) => {
            if let Some(k) = t.keys().find(|k| *k != "artifact_types") {
                return Err(bad(&format!("unknown field `{k}`; {SHAPE}")));
            }
            let list = t
                .get("artifact_types")
                .and_then(|v| v.as_array())
                .ok_or_else(|| bad(SHAPE))?;
            if list.is_empty() {
                return Err(bad(
                    "`artifact_types` is empty: say `referrers = false` to carry none",
                ));
            }
            let mut types = Vec::new();
            for (i, v) in list.iter().enumerate() {
                let s = v
                    .as_str()
                    .ok_or_else(|| bad("artifact types are strings"))?;
                let media_type = s.split_once('/').is_some_and(|(a, b)| {
                    !a.is_empty() && !b.is_empty() && !s.contains(char::is_whitespace)
                });
                if !media_type {
                    return Err(bad(&format!(
                        "artifact type {} is not a media type (like `application/vnd.dev.cosign.simplesigning.v1+json`)",
                        i + 1
                    )));
                }
                if !types.iter().any(|t| t == s) {
                    types.push(s.to_string());
                }
            }
            Ok(Referrers::Only(types))
        }
        _ => Err(bad(SHAPE)),
    }
}

pub(super) fn validate_platforms(
    ctx: &Ctx,
    raw: Option<&Spanned<toml::Value>>,
    mode: Option<&Spanned<String>>,
) -> Result<Option<Platforms>, PlanError> {
    let wanted = match raw {
        None => None,
        Some(raw) => {
            let bad = |reason: String| ctx.invalid(raw.span(), "copy.platforms", reason);
            match raw.get_ref() {
                toml::Value::String(s) if s == "all" => None,
                toml::Value::Array(list) if !list.is_empty() => {
                    let mut wanted: Vec<Platform> = Vec::new();
                    for (i, v) in list.iter().enumerate() {
                        let s = v.as_str().ok_or_else(|| {
                            bad("platforms are strings like \"linux/amd64\"".into())
                        })?;
                        let n = i + 1;
                        let p =
                            Platform::parse(s).map_err(|e| bad(format!("platform {n}: {e}")))?;
                        if wanted.contains(&p) {
                            return Err(bad(format!("platform {n} repeats an earlier one")));
                        }
                        wanted.push(p);
                    }
                    Some(wanted)
                }
                _ => {
                    return Err(bad(
                        "expected \"all\" or a list like [\"linux/amd64\", \"linux/arm64\"]".into(),
                    ))
                }
            }
        }
    };
    match (wanted, mode) {
        (None, None) => Ok(None),
        (None, Some(m)) => Err(ctx.invalid(
            m.span(),
            "copy.platform_mode",
            "applies only with a `platforms` list; every platform is copied as is",
        )),
        (Some(_), None) => Err(ctx.invalid(
            raw.expect("a list was given").span(),
            "copy.platforms",
            "a platform list needs `platform_mode`: \"sparse\" keeps each index as is (same digest) with only these children, which some registries refuse; \"rewrite\" writes a new index of only these children (a new digest, reported)",
        )),
        (Some(wanted), Some(m)) => {
            let mode = match m.get_ref().as_str() {
                "sparse" => PlatformMode::Sparse,
                "rewrite" => PlatformMode::Rewrite,
                _ => {
                    return Err(ctx.invalid(
                        m.span(),
                        "copy.platform_mode",
                        "expected \"sparse\" or \"rewrite\"",
                    ))
                }
            };
            Ok(Some(Platforms { wanted, mode }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms_match_like_docker() {
        let p = Platform::parse("linux/arm64").unwrap();
        assert!(p.matches("linux/arm64/v8") && p.matches("linux/arm64"));
        assert!(!p.matches("linux/amd64") && !p.matches("windows/arm64"));
        let v7 = Platform::parse("linux/arm/v7").unwrap();
        assert!(v7.matches("linux/arm/v7") && !v7.matches("linux/arm/v6"));
        assert!(!v7.matches("linux/arm"));
        for bad in ["linux", "linux/", "/amd64", "a/b/c/d", "linux/amd 64"] {
            assert!(Platform::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(v7.to_string(), "linux/arm/v7");
    }

    #[test]
    fn referrer_filters() {
        let only = Referrers::Only(vec!["application/vnd.dsse.envelope.v1+json".into()]);
        assert!(only.admits(&["x/y", "application/vnd.dsse.envelope.v1+json"]));
        assert!(!only.admits(&["x/y"]));
        assert!(only.filters());
        assert_eq!(
            only.api_filter(),
            Some("application/vnd.dsse.envelope.v1+json")
        );
        assert!(Referrers::All.admits::<&str>(&[]));
        assert!(!Referrers::None.admits(&["x/y"]) && !Referrers::None.enabled());
    }
}
