//! Issue 25, part 4: the Image Updater's settings as ferry reads them, and its next pick.

use super::*;

fn tags(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn tracked(constraint: Option<&str>, strategy: Strategy) -> Tracked {
    Tracked {
        image: "ghcr.io/org/api".into(),
        constraint: constraint.map(str::to_string),
        strategy,
        allow: None,
        ignore: Vec::new(),
        app: "argocd/api".into(),
    }
}

fn picked(t: &Tracked, list: &[&str]) -> Vec<String> {
    pick(t, &tags(list)).into_iter().map(|(t, _)| t).collect()
}

#[test]
fn annotations_are_read_per_alias() {
    let mut a = BTreeMap::new();
    a.insert(
        format!("{ANNOTATION}/image-list"),
        "api=ghcr.io/org/api:1.x, web=127.0.0.1:5000/org/web, nginx".to_string(),
    );
    a.insert(format!("{ANNOTATION}/api.update-strategy"), "semver".into());
    a.insert(
        format!("{ANNOTATION}/api.allow-tags"),
        r"regexp:^v[0-9]+\.[0-9]+\.[0-9]+$".into(),
    );
    a.insert(format!("{ANNOTATION}/web.update-strategy"), "name".into());
    a.insert(
        format!("{ANNOTATION}/web.ignore-tags"),
        "latest, dev-*".into(),
    );
    let t = from_annotations("argocd/shop", &a);
    assert_eq!(t.len(), 3);
    assert_eq!(t[0].image, "ghcr.io/org/api");
    assert_eq!(t[0].constraint.as_deref(), Some("1.x"));
    assert_eq!(t[0].strategy, Strategy::Semver);
    assert_eq!(t[0].allow.as_deref(), Some(r"^v[0-9]+\.[0-9]+\.[0-9]+$"));
    assert_eq!(t[1].image, "127.0.0.1:5000/org/web");
    assert_eq!(t[1].constraint, None);
    assert_eq!(t[1].strategy, Strategy::Alphabetical);
    assert_eq!(t[1].ignore, vec!["latest", "dev-*"]);
    assert_eq!(t[2].image, "nginx");
    assert_eq!(t[2].strategy, Strategy::Semver);
    assert!(t.iter().all(|t| t.app == "argocd/shop"));
    assert!(from_annotations("argocd/x", &BTreeMap::new()).is_empty());
}

#[test]
fn semver_picks_the_highest_version_the_constraint_allows() {
    let all = [
        "v1.1.0",
        "v1.2.0",
        "v1.10.1",
        "v2.0.0",
        "v1.11.0-rc1",
        "latest",
        "1.9",
    ];
    let t = tracked(Some("1.x"), Strategy::Semver);
    assert_eq!(picked(&t, &all), vec!["v1.10.1"]);
    let t = tracked(Some("~1.2"), Strategy::Semver);
    assert_eq!(picked(&t, &all), vec!["v1.2.0"]);
    // A bare version is that version's range (Masterminds), not a caret range.
    let t = tracked(Some("1.1"), Strategy::Semver);
    assert_eq!(picked(&t, &all), vec!["v1.1.0"]);
    let t = tracked(Some(">=1.2 <2.0 || >=3"), Strategy::Semver);
    assert_eq!(picked(&t, &all), vec!["v1.10.1"]);
    let t = tracked(None, Strategy::Semver);
    assert_eq!(picked(&t, &all), vec!["v2.0.0"]);
    let t = tracked(Some("3.x"), Strategy::Semver);
    assert!(picked(&t, &all).is_empty());
    assert_eq!(
        pick(&tracked(Some("1.x"), Strategy::Semver), &tags(&all))[0].1,
        "next ArgoCD Image Updater pick for argocd/api"
    );
}

#[test]
fn filters_and_other_strategies() {
    let all = ["v1.0.0", "v1.5.0", "v1.6.0-debug", "v1.7.0", "main", "zeta"];
    let mut t = tracked(None, Strategy::Semver);
    t.allow = Some(r"^v[0-9]+\.[0-9]+\.[0-9]+$".into());
    t.ignore = vec!["v1.7.*".into()];
    assert_eq!(picked(&t, &all), vec!["v1.5.0"]);

    let t = tracked(None, Strategy::Alphabetical);
    assert_eq!(picked(&t, &all), vec!["zeta"]);

    let t = tracked(Some("main"), Strategy::Digest);
    assert_eq!(picked(&t, &all), vec!["main"]);

    // newest-build needs creation dates: every allowed tag is kept, and the reason says so.
    let mut t = tracked(None, Strategy::NewestBuild);
    t.allow = Some("^v".into());
    let kept = pick(&t, &tags(&all));
    assert_eq!(kept.len(), 4);
    assert!(
        kept[0].1.contains("newest-build cannot be evaluated"),
        "{}",
        kept[0].1
    );

    // Settings the updater cannot use keep every tag.
    let mut t = tracked(None, Strategy::Semver);
    t.allow = Some("(".into());
    assert_eq!(pick(&t, &tags(&all)).len(), all.len());
}

#[test]
fn tags_read_as_loose_versions() {
    assert_eq!(loose_version("v1.2.3"), Version::parse("1.2.3").ok());
    assert_eq!(loose_version("1.2"), Version::parse("1.2.0").ok());
    assert_eq!(loose_version("2"), Version::parse("2.0.0").ok());
    assert_eq!(
        loose_version("1.2.3-rc.1"),
        Version::parse("1.2.3-rc.1").ok()
    );
    for bad in ["latest", "v", "1.2.3.4", "1..2", "sha-abc"] {
        assert_eq!(loose_version(bad), None, "{bad}");
    }
    assert_eq!(
        split_constraint("ghcr.io/org/api"),
        ("ghcr.io/org/api", None)
    );
    assert_eq!(
        split_constraint("h:5000/org/api:~1.2"),
        ("h:5000/org/api", Some("~1.2".to_string()))
    );
}
